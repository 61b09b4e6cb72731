//! What a running bot is asked, and what it answers and tells: the owner's trading commands,
//! pause/resume, stop, the live view for the read endpoints, and its self-pause notice.

use actix::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::mailbox::Query;
use keel_core::bot::{BotId, BotStatus};
use keel_core::engine::CancelError;
use keel_core::trading::risk::RiskRejection;
use keel_core::trading::{Order, OrderRequest, Position};

/// Owner commands a running bot handles.
#[derive(Debug, Clone)]
pub enum TradeCommand {
    /// Place an order.
    Place(OrderRequest),
    /// Cancel one order.
    Cancel(u64),
    /// Flatten the position.
    ClosePosition,
    /// Cancel every open order.
    CancelAll,
}

/// What a [`TradeCommand`] did.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TradeOutcome {
    /// The order placed, canceled or used to close (boxed: the other answers are small).
    Order(Box<Order>),
    /// Nothing to do (closing a flat position).
    Nothing,
    /// How many orders were canceled.
    Canceled(usize),
}

/// Why a [`TradeCommand`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TradeError {
    /// Risk checks or the venue refused the order.
    #[error("{}: {}", .0.code, .0.reason)]
    Rejected(RiskRejection),
    /// The order is not open.
    #[error(transparent)]
    Cancel(#[from] CancelError),
    /// The change could not be stored; it did not happen.
    #[error("could not store the change")]
    Store,
}

impl Query for TradeCommand {
    type Answer = Result<TradeOutcome, TradeError>;
}

/// Pauses or resumes the strategy.
#[derive(Debug, Clone, Copy)]
pub struct SetPaused(pub bool);
impl Query for SetPaused {
    type Answer = ();
}

/// Stops the bot for good: cancels open orders, saves state, then stops the actor.
#[derive(Debug, Clone, Copy)]
pub struct StopBot {
    /// Also flatten the position first (kill switch).
    pub flatten: bool,
}
impl Query for StopBot {
    type Answer = Result<Vec<OrderCancel>, TradeError>;
}

/// What a stop (or the kill switch) did to one open order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderCancel {
    /// The bot.
    pub bot_id: BotId,
    /// The order.
    pub order_id: u64,
    /// Its client order id: its name at the venue.
    pub client_order_id: String,
    /// What happened.
    pub outcome: CancelOutcome,
    /// The venue's words, for an order already closed or a cancel that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// Canceled: by the venue's own answer to the cancel, or here for an order that only Keel
    /// held (paper orders, armed stops).
    Canceled,
    /// Not open at the venue any more (filled, canceled or expired before the cancel arrived,
    /// or never received): nothing to cancel.
    AlreadyClosed,
    /// The cancel did not go through (the venue refused, failed or did not answer), even
    /// after a few attempts: the order may still be working at the venue; it stays open in
    /// Keel, Keel keeps asking the venue to cancel it while the bot stays stopped, and it is
    /// reconciled with the venue when the bot next starts.
    CancelFailed,
}

/// What a running bot reports for the read endpoints.
#[derive(Debug, Clone)]
pub struct GetLive;
impl Query for GetLive {
    type Answer = LiveView;
}

/// Durable position and watermarks of a running bot.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    /// Position as of the last flush.
    pub position: Position,
    /// Mark price now, if known.
    pub mark_price: Option<Decimal>,
    /// Fills up to this id are durable.
    pub durable_fill_id: u64,
    /// Journal lines up to this id are durable.
    pub durable_event_id: u64,
    /// Whether the strategy is being called.
    pub status: BotStatus,
    /// A derivatives bot's position as the venue last reported it.
    pub venue_position: Option<keel_core::engine::VenuePositionView>,
}

/// The bot told its supervisor it paused itself.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BotPaused {
    /// The bot.
    pub bot_id: BotId,
    /// Why.
    pub reason: String,
}

/// The bot resumed by itself: its account's circuit breaker closed, and its owner had not
/// paused or stopped it meanwhile.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct BotResumed {
    /// The bot.
    pub bot_id: BotId,
}

/// The bot is running with its open orders reconciled: restored into its engine (paper), or
/// also checked with the venue (live). Sent once per incarnation; readiness waits for it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct BotReconciled {
    /// The bot.
    pub bot_id: BotId,
    /// Which incarnation of it.
    pub generation: u64,
}
