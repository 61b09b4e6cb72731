//! What the engine reports: the [`Effects`] of one call (orders, fills, journal lines, a pause,
//! requests for a live venue), for the bot actor to persist in one transaction and publish, and
//! the journal line types ([`BotEvent`]) a bot's history is made of.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::strategy::IndicatorUpdate;
use crate::trading::{Fill, Order, Position};

/// One line of a bot's journal (`GET /bots/{id}/events`, and the owner's live channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BotEvent {
    /// Per-bot sequence number.
    pub id: u64,
    /// When, ms since the epoch.
    pub ts: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: BotEventKind,
}

/// What a journal line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum BotEventKind {
    /// An order was created or changed.
    Order(Order),
    /// A fill.
    Fill(Fill),
    /// The position after a fill.
    Position(Position),
    /// The lifecycle state changed.
    Status {
        /// New state.
        status: crate::bot::BotStatus,
        /// Why, when the runtime decided it.
        reason: Option<String>,
    },
    /// The circuit breaker of the bot's venue account changed state (`closed`, `open`,
    /// `half_open`): the strategy pauses while it is open and resumes when it closes, unless
    /// the owner paused or stopped the bot.
    Breaker {
        /// The venue.
        venue: String,
        /// The exchange account.
        account_id: u64,
        /// The new state.
        state: String,
        /// Why it opened.
        reason: Option<String>,
    },
    /// A funding payment on the bot's perpetual position: received when `amount` is positive,
    /// paid when negative (a long pays a positive rate). Counted in `Position.funding` and the
    /// quote balance.
    Funding {
        /// The asset it was paid in (the quote, `USDT`).
        asset: String,
        /// Signed amount, in `asset`.
        amount: Decimal,
        /// The venue's id of the payment (a live bot's; none for a paper payment).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The funding rate applied (paper funding; absent when the venue reported the payment).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<Decimal>,
        /// The mark price the payment was valued at (paper funding).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mark_price: Option<Decimal>,
    },
    /// The venue's view of the bot's derivatives position changed.
    VenuePosition(super::VenuePositionView),
    /// The paper venue liquidated the position: the mark crossed the liquidation price, open
    /// orders were canceled and the position closed at that price (the fill is journaled
    /// before this line).
    Liquidated {
        /// The position closed (signed, base).
        qty: Decimal,
        /// The liquidation price it closed at.
        price: Decimal,
        /// The mark price that crossed it.
        mark_price: Decimal,
        /// The clearance fee taken by the venue's insurance fund (what was left of the
        /// position's maintenance margin), in quote.
        clearance_fee: Decimal,
        /// `isolated` or `cross`.
        margin_type: crate::bot::MarginType,
    },
    /// Something the owner should read.
    Log {
        /// `info`, `warn` or `error`.
        level: String,
        /// The message.
        message: String,
    },
}

/// What one call changed, for the actor to persist (in one transaction) and publish.
#[derive(Debug, Default)]
pub struct Effects {
    /// Orders created or changed, latest version last.
    pub orders: Vec<Order>,
    /// New fills.
    pub fills: Vec<Fill>,
    /// New journal lines.
    pub events: Vec<BotEvent>,
    /// Set when the engine paused the strategy, with the reason.
    pub paused: Option<String>,
    /// Requests for a live venue, to send once the effects above are durable.
    pub outbound: Vec<Outbound>,
    /// Indicator values the strategy changed (not journal lines: kept in memory and streamed).
    pub indicators: Option<IndicatorUpdate>,
}

/// A request for a live venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Place this order (a triggered stop goes as a market order).
    Place(Order),
    /// Cancel this order.
    Cancel(Order),
    /// Ask what became of this order (its outcome is unknown).
    Query(Order),
    /// Place a bracket's two legs as the venue's own one-cancels-the-other order list (a
    /// native OCO), under the list id both legs carry in
    /// [`Order::venue_list`](crate::trading::Order::venue_list).
    PlaceList {
        /// The take-profit limit.
        take_profit: Box<Order>,
        /// The stop-loss stop.
        stop_loss: Box<Order>,
    },
}

impl Outbound {
    /// The orders the request concerns (both legs of an order list).
    pub fn orders(&self) -> Vec<&Order> {
        match self {
            Outbound::Place(o) | Outbound::Cancel(o) | Outbound::Query(o) => vec![o],
            Outbound::PlaceList { take_profit, stop_loss } => vec![&**take_profit, &**stop_loss],
        }
    }
}

impl Effects {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.fills.is_empty()
            && self.events.is_empty()
            && self.paused.is_none()
            && self.outbound.is_empty()
            && self.indicators.is_none()
    }

    /// Empties it for reuse.
    pub fn clear(&mut self) {
        self.orders.clear();
        self.fills.clear();
        self.events.clear();
        self.paused = None;
        self.outbound.clear();
        self.indicators = None;
    }
}
