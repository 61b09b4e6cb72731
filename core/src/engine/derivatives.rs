//! A live derivatives bot and its venue: funding payments booked into the bot's P&L once each,
//! and the venue's own view of the position ([`VenuePositionView`]), which the runtime compares
//! with the bot's book and adopts when they differ (a liquidation while Keel was down).

use std::collections::VecDeque;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{BotEngine, BotEventKind, Effects};
use crate::bot::MarginType;

/// How many venue funding ids a bot remembers to count each payment once. Binance and Bybit pay
/// funding every 8 hours (some symbols every 1 or 4): this is months of payments, and
/// [`FundingLedger::since_ms`] keeps a catch-up from asking older ones anyway.
pub const FUNDING_IDS_KEPT: usize = 512;

/// The venue's own view of a derivatives bot's position: journaled as `venue_position` when it
/// changes, and shown beside the bot's own book in `GET /bots/{id}/position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VenuePositionView {
    /// The symbol, in the venue's spelling.
    pub symbol: String,
    /// Signed base quantity at the venue: positive long, negative short, zero flat.
    pub qty: Decimal,
    /// Average entry price; zero when flat.
    pub entry_price: Decimal,
    /// The venue's mark price, when it reported one.
    pub mark_price: Option<Decimal>,
    /// Where the venue would liquidate the position; null when flat, or when it gave none
    /// (cross margin may leave none).
    pub liquidation_price: Option<Decimal>,
    /// Unrealised profit at the mark, in the margin asset, as the venue computes it.
    pub unrealized_pnl: Decimal,
    /// The symbol's leverage at the venue, when it reported it.
    pub leverage: Option<u32>,
    /// The symbol's margin type at the venue, when it reported it.
    pub margin_type: Option<MarginType>,
    /// When the venue last changed it, ms since the epoch (0 when it did not say).
    pub updated_ms: u64,
}

impl VenuePositionView {
    /// Whether `other` says something different (its time aside).
    pub fn differs(&self, other: &VenuePositionView) -> bool {
        let mut other = other.clone();
        other.updated_ms = self.updated_ms;
        *self != other
    }
}

/// Which venue funding payments a bot has booked: part of its durable state, written in the same
/// transaction as the booking, so a payment is counted once across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundingLedger {
    /// Payments from this time on (ms) are the bot's: when it first ran live, then the time of
    /// the latest payment booked. A catch-up asks the venue from here.
    #[serde(default)]
    pub since_ms: u64,
    /// The venue ids of the latest payments booked, oldest first (at most
    /// [`FUNDING_IDS_KEPT`]).
    #[serde(default)]
    pub ids: VecDeque<String>,
    /// Funding received minus paid so far, in the asset it was paid in.
    #[serde(default)]
    pub total: Decimal,
}

impl FundingLedger {
    /// Whether the payment `id` was booked.
    pub fn has(&self, id: &str) -> bool {
        self.ids.iter().any(|seen| seen == id)
    }

    fn remember(&mut self, id: String, time_ms: u64) {
        self.ids.push_back(id);
        while self.ids.len() > FUNDING_IDS_KEPT {
            self.ids.pop_front();
        }
        self.since_ms = self.since_ms.max(time_ms);
    }
}

/// What a funding line says besides its amount: the venue's payment id (live), or the rate and
/// mark it was valued at (paper).
#[derive(Debug, Clone, Default)]
pub(super) struct FundingBooking {
    pub(super) id: Option<String>,
    pub(super) rate: Option<Decimal>,
    pub(super) mark_price: Option<Decimal>,
}

impl BotEngine {
    /// Books a funding payment: `amount` of `asset` (positive received, negative paid) at `ts`,
    /// into the position's funding and quote balance, and journals a `funding` line.
    pub fn apply_funding(&mut self, amount: Decimal, asset: &str, ts: u64, fx: &mut Effects) {
        let at = self.now().max(ts);
        self.book_funding(amount, asset, at, FundingBooking::default(), fx);
    }

    /// Books the venue's funding payment `id` unless it was booked already (by id, across
    /// restarts: the ledger is part of the durable state). Answers whether it was booked now.
    pub fn apply_venue_funding(
        &mut self,
        id: &str,
        amount: Decimal,
        asset: &str,
        time_ms: u64,
        fx: &mut Effects,
    ) -> bool {
        if self.state.funding.has(id) {
            return false;
        }
        self.state.funding.remember(id.to_owned(), time_ms);
        let booking = FundingBooking { id: Some(id.to_owned()), ..FundingBooking::default() };
        // A payment caught up from the venue's history is journaled now, not back in time.
        let at = self.now().max(time_ms);
        self.book_funding(amount, asset, at, booking, fx);
        true
    }

    /// Books a funding payment (paper or the venue's) into the position's funding and quote
    /// balance, and journals it with the position after it.
    pub(super) fn book_funding(
        &mut self,
        amount: Decimal,
        asset: &str,
        ts: u64,
        booking: FundingBooking,
        fx: &mut Effects,
    ) {
        let position = &mut self.state.position;
        position.funding += amount;
        position.quote_balance += amount;
        self.state.funding.total += amount;
        let FundingBooking { id, rate, mark_price } = booking;
        let funding =
            BotEventKind::Funding { asset: asset.to_owned(), amount, id, rate, mark_price };
        self.log(ts, funding, fx);
        let position = self.state.position.clone();
        self.log(ts, BotEventKind::Position(position), fx);
    }

    /// The funding ledger: what was booked, and from when a catch-up asks.
    pub fn funding_ledger(&self) -> &FundingLedger {
        &self.state.funding
    }

    /// Starts counting the venue's funding payments at `now_ms` (a live derivatives bot's first
    /// run); a bot that has a ledger keeps it.
    pub fn start_funding_clock(&mut self, now_ms: u64) {
        if self.state.funding.since_ms == 0 {
            self.state.funding.since_ms = now_ms;
        }
    }

    /// Adopts the venue's quantity and entry price when they differ from the bot's book (the
    /// position was liquidated, or changed, while Keel did not hear of it): journals a warning
    /// saying what differed, and the position as it is now. The difference's profit is not
    /// known here and is not booked. Answers whether anything changed.
    pub fn adopt_venue_position(
        &mut self,
        qty: Decimal,
        entry_price: Decimal,
        ts: u64,
        fx: &mut Effects,
    ) -> bool {
        let position = &mut self.state.position;
        if position.qty == qty {
            return false;
        }
        let message = format!(
            "the venue's position is {qty} at {entry_price}, not the bot's {} at {}: the bot \
             adopts the venue's (its profit or loss is not booked; see the venue's history)",
            position.qty, position.avg_entry_price
        );
        position.qty = qty;
        position.avg_entry_price = if qty.is_zero() { Decimal::ZERO } else { entry_price };
        self.log(ts, BotEventKind::Log { level: "warn".into(), message }, fx);
        let position = self.state.position.clone();
        self.log(ts, BotEventKind::Position(position), fx);
        true
    }
}
