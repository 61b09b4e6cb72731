//! What the API asks of the bot supervisor: one query per bot operation, each answered with the
//! bot's definition or a [`BotError`].

use serde::Serialize;

use super::BotError;
use crate::bot::actor::{LiveView, OrderCancel, TradeCommand, TradeOutcome};
use crate::bot::indicators::IndicatorsView;
use crate::mailbox::Query;
use keel_core::bot::{BotId, BotRecord, Control, UserId};
use keel_core::market::VenueId;

macro_rules! query {
    ($name:ident => $answer:ty) => {
        impl Query for $name {
            type Answer = $answer;
        }
    };
}

/// Defines a new bot (`id` is assigned here).
#[derive(Debug, Clone)]
pub struct CreateBot(pub BotRecord);
query!(CreateBot => Result<BotRecord, BotError>);

/// Replaces an idle bot's definition.
#[derive(Debug, Clone)]
pub struct UpdateBot(pub BotRecord);
query!(UpdateBot => Result<BotRecord, BotError>);

/// Deletes an idle bot and its history.
#[derive(Debug, Clone, Copy)]
pub struct DeleteBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
}
query!(DeleteBot => Result<(), BotError>);

/// One bot's definition.
#[derive(Debug, Clone, Copy)]
pub struct GetBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
}
query!(GetBot => Result<BotRecord, BotError>);

/// The user's bots.
#[derive(Debug, Clone, Copy)]
pub struct ListBots {
    /// Owner.
    pub user_id: UserId,
}
query!(ListBots => Vec<BotRecord>);

/// Start, stop, pause or resume.
#[derive(Debug, Clone, Copy)]
pub struct ControlBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
    /// What to do.
    pub control: Control,
}
query!(ControlBot => Result<BotRecord, BotError>);

/// An owner's trading command for a running bot.
#[derive(Debug, Clone)]
pub struct ForBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
    /// The command.
    pub command: TradeCommand,
}
query!(ForBot => Result<TradeOutcome, BotError>);

/// A bot's definition and, when running, its live view.
#[derive(Debug, Clone, Copy)]
pub struct GetLiveBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
}
query!(GetLiveBot => Result<(BotRecord, Option<LiveView>), BotError>);

/// A bot's indicator series and their recent points.
#[derive(Debug, Clone, Copy)]
pub struct GetIndicators {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
    /// Points at or after this event time (ms).
    pub since: u64,
    /// Most points per series (the newest).
    pub limit: usize,
}
query!(GetIndicators => Result<IndicatorsView, BotError>);

/// Stops every bot of a user, canceling their orders, and optionally flattens them.
#[derive(Debug, Clone, Copy)]
pub struct KillSwitch {
    /// Owner.
    pub user_id: UserId,
    /// Close positions with market orders first.
    pub flatten: bool,
}
query!(KillSwitch => Result<KillReport, BotError>);

/// What the kill switch did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct KillReport {
    /// Bots stopped.
    pub bots_stopped: usize,
    /// Orders canceled (the venue confirmed it, or only Keel held them).
    pub orders_canceled: usize,
    /// Every open order of the stopped bots and what became of it: canceled, already closed,
    /// or a cancel that failed with the reason.
    pub orders: Vec<OrderCancel>,
    /// Bots that did not answer in time (their state is unchanged).
    pub failed: Vec<BotId>,
}

/// Stops and deletes every bot of a user whose account is being deleted: running bots cancel
/// their open orders first (a live bot's cancels are sent to the venue and answered before it
/// stops). From then on the user can create or start no bot. A bot that does not stop in time
/// keeps its definition and is reported in `failed` (and the user may create bots again, so
/// the deletion can be retried).
#[derive(Debug, Clone, Copy)]
pub struct RemoveUserBots {
    /// The account being deleted.
    pub user_id: UserId,
}
query!(RemoveUserBots => Result<RemovedBots, BotError>);

/// Replaces an owner's limits over all of their bots (`PUT /me/risk`), unless a running bot's
/// leverage is above the new `max_leverage`.
#[derive(Debug, Clone)]
pub struct SetUserRisk {
    /// Owner.
    pub user_id: UserId,
    /// The new limits, already validated.
    pub limits: keel_core::bot::user_risk::UserRiskLimits,
}
query!(SetUserRisk => Result<keel_core::bot::user_risk::UserRiskLimits, BotError>);

/// What removing an account's bots did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RemovedBots {
    /// Bots deleted, with their history.
    pub bots_deleted: usize,
    /// Open orders canceled on the way.
    pub orders_canceled: usize,
    /// Live orders whose cancel the venue refused or did not answer: they may still be working
    /// on the exchange, and the owner should cancel them there.
    pub cancel_failures: Vec<OpenOrderLeft>,
    /// Bots that did not stop in time (nothing of theirs was deleted).
    pub failed: Vec<BotId>,
}

/// A live order that may still be open at its venue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OpenOrderLeft {
    /// The bot that placed it.
    pub bot_id: BotId,
    /// Where.
    pub venue: VenueId,
    /// The instrument.
    pub symbol: String,
    /// Keel's order id within the bot.
    pub order_id: u64,
    /// The id the venue knows it by.
    pub client_order_id: String,
}
