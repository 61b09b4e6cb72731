//! The order-routing half of the venue seam: what a live bot needs from a venue.
//!
//! A live bot holds an `Arc<dyn OrderRouter>` (one per venue, shared by every bot on it) and
//! never names the venue behind it. Requests are signed by a [`Signer`] the caller passes in (the
//! vault's `Sign`), so secrets never reach a connector. Errors come back classified
//! ([`RouteErrorKind`]), so the caller decides what to do from the class alone, whatever the
//! venue's own codes are.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rust_decimal::Decimal;

use crate::market::InstrumentMap;
use keel_core::bot::MarginType;
use keel_core::market::{Symbol, VenueId};
use keel_core::trading::Order;

/// Signs a request payload, answering `(api_key, signature)`: the vault's `Sign`, behind a
/// closure so connectors need no actor.
pub type Signer<'a> =
    &'a (dyn Fn(String) -> BoxFuture<'static, Result<(String, String), String>> + Send + Sync);

/// An order as the venue reports it (after a place, a query or a cancel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderReport {
    /// Our client order id (for a cancel, the venue may report the cancel's own).
    pub client_order_id: String,
    /// The venue's status word: `NEW`, `PARTIALLY_FILLED`, `FILLED`, `CANCELED`, `REJECTED`,
    /// `EXPIRED`, …
    pub status: String,
    /// Filled base quantity so far.
    pub executed_qty: Decimal,
    /// Filled quote amount so far.
    pub cum_quote: Decimal,
    /// Executions reported in this answer (a place may carry them; others usually do not).
    pub fills: Vec<OrderFill>,
}

/// One execution in an [`OrderReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFill {
    /// Price.
    pub price: Decimal,
    /// Quantity.
    pub qty: Decimal,
    /// Fee.
    pub fee: Decimal,
    /// The fee's asset.
    pub fee_asset: String,
}

/// One asset of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The asset (`USDT`).
    pub asset: String,
    /// Available to trade.
    pub free: Decimal,
    /// Held by open orders (or margin).
    pub locked: Decimal,
}

/// A derivatives position as the venue holds it ([`OrderRouter::positions`], and pushed by an
/// account stream as [`crate::account::AccountEvent::Position`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenuePosition {
    /// The symbol, in the venue's spelling (`BTCUSDT`).
    pub symbol: String,
    /// Signed base quantity: positive long, negative short, zero flat.
    pub qty: Decimal,
    /// Average entry price; zero when flat.
    pub entry_price: Decimal,
    /// The venue's mark price, when it reports one with the position.
    pub mark_price: Option<Decimal>,
    /// Where the venue would liquidate the position, when it reports one (none when flat, or
    /// when cross margin leaves none).
    pub liquidation_price: Option<Decimal>,
    /// Unrealised profit at the mark, in the margin asset.
    pub unrealized_pnl: Decimal,
    /// The symbol's leverage at the venue, when it reports it.
    pub leverage: Option<u32>,
    /// The symbol's margin type at the venue, when it reports it.
    pub margin_type: Option<MarginType>,
    /// When the venue last changed it, ms (0 when it does not say).
    pub updated_ms: u64,
}

/// A funding payment on a perpetual position: paid or received at a funding time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingPayment {
    /// The symbol, in the venue's spelling.
    pub symbol: String,
    /// The asset it was paid in (`USDT`).
    pub asset: String,
    /// Signed amount: positive received, negative paid.
    pub amount: Decimal,
    /// When it was paid, ms.
    pub time_ms: u64,
    /// The venue's id of the payment (Binance's `tranId`), so it is counted once.
    pub id: String,
}

/// What a failed request means for the order it concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteErrorKind {
    /// The venue refused the request: nothing changed there.
    Rejected,
    /// Nothing was sent (refused connection, a back-off the venue asked for): nothing changed,
    /// but the venue is not reachable as it should be.
    NotSent,
    /// Keel held the request back itself, to keep the account within the venue's limit on new
    /// orders (the shared order budget, [`crate::budget`]): nothing was sent, and it says
    /// nothing about the venue's health.
    Throttled,
    /// The order may or may not exist now (a timeout, a 5xx, an unreadable answer): query it
    /// before anything else; never send it again blind.
    UnknownOutcome,
    /// The venue does not know the order (a query of one it never received).
    NoSuchOrder,
    /// A cancel of an order that is not open there (filled, cancelled, or never arrived).
    NotOpen,
    /// Refused for its timestamp: nothing happened. The connector has already measured the
    /// clock and sent the request once more; this is the second refusal.
    ClockSkew,
}

/// A failed request: its class, and the venue's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// What it means.
    pub kind: RouteErrorKind,
    /// What happened, as the venue connector describes it.
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RouteError {}

/// A future a router answers with.
pub type RouteFuture<'a, T> = BoxFuture<'a, Result<T, RouteError>>;

/// What a live bot needs from a venue to trade on it.
///
/// The contract:
/// - The client order id (`order.client_order_id`) is the order's identity at the venue: a
///   query or cancel by it finds what a place sent, even when the place's answer was lost.
/// - A connector never retries a place by itself when the outcome may be anything but
///   "nothing happened": only the caller knows whether it is safe. It does classify every error
///   ([`RouteErrorKind`]) so the caller can.
/// - Signed requests carry the venue's time: the connector measures its clock before the first
///   one and keeps it measured, and a request refused for its timestamp (which the venue
///   checks before anything else) is measured for and sent once more, whatever it is; a second
///   refusal comes back as [`RouteErrorKind::ClockSkew`].
/// - [`place`](Self::place) sends a plain stop as the market order it becomes when triggered
///   (Keel emulates those); stop-limits, trailing stops, post-only limits and IOC/FOK limits are
///   sent as the venue's own order types, and a venue without one refuses the order
///   ([`RouteErrorKind::Rejected`]).
/// - Requests that need it are signed with the given [`Signer`]; the connector keeps no
///   secret. Rate limits the venue announces (weights, order counts, back-offs) are the
///   connector's business: a request it holds back answers [`RouteErrorKind::NotSent`].
/// - Before each request that creates orders the connector asks its
///   [`order_budget`](Self::order_budget) with the account's hashed key and the venue's
///   documented limits; an order the budget holds back is not sent and answers
///   [`RouteErrorKind::NotSent`].
pub trait OrderRouter: fmt::Debug + Send + Sync {
    /// Which venue this is.
    fn venue(&self) -> VenueId;

    /// Places `order` on `symbol`.
    fn place<'a>(
        &'a self,
        symbol: &'a Symbol,
        order: &'a Order,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport>;

    /// Cancels the order with our `client_order_id`.
    fn cancel<'a>(
        &'a self,
        symbol: &'a Symbol,
        client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport>;

    /// Looks up the order with our `client_order_id`.
    fn query<'a>(
        &'a self,
        symbol: &'a Symbol,
        client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport>;

    /// Measures the venue's clock now (the connector also does when it needs to).
    fn sync_clock(&self) -> RouteFuture<'_, ()>;

    /// The longest the venue may still accept a request after it was signed (Binance's
    /// configured `recvWindow`): until then, "no such order" may only mean "not arrived yet".
    fn accept_delay(&self) -> Duration;

    /// The account's balances.
    fn balances<'a>(&'a self, signer: Signer<'a>) -> RouteFuture<'a, Vec<Balance>>;

    /// Every tradable symbol's rules.
    fn instruments(&self) -> RouteFuture<'_, InstrumentMap>;

    /// Places a bracket's take-profit and stop-loss as the venue's own one-cancels-the-other
    /// order list named `list_client_order_id` (or, on a venue without such lists, as two
    /// reduce-only orders the list id names: Bybit's conditional orders), each leg under its
    /// own client order id, and reports both legs. Only venues whose registry entry has `native_brackets` implement it;
    /// the others refuse ([`RouteErrorKind::Rejected`]) and Keel emulates their brackets. The
    /// same contract as [`place`](Self::place): an unknown outcome is never sent again blind.
    fn place_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        legs: OrderListLegs<'a>,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        let _ = (symbol, legs, signer);
        Box::pin(async { Err(no_order_lists()) })
    }

    /// Cancels the order list `list_client_order_id` (both legs) and reports both legs, under
    /// their own client order ids. A list that is not open there is
    /// [`RouteErrorKind::NotOpen`].
    fn cancel_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        let _ = (symbol, list_client_order_id, signer);
        Box::pin(async { Err(no_order_lists()) })
    }

    /// Looks the order list `list_client_order_id` up and reports each of its legs, under their
    /// own client order ids ([`RouteErrorKind::NoSuchOrder`] when the venue never received it).
    fn query_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        let _ = (symbol, list_client_order_id, signer);
        Box::pin(async { Err(no_order_lists()) })
    }

    /// Sets `symbol`'s leverage and margin type at the venue, before a bot's first order (a
    /// venue whose registry entry has `leverage`). Idempotent: a setting that is already so is
    /// success. The others answer `Ok` without a request.
    fn prepare<'a>(
        &'a self,
        symbol: &'a Symbol,
        leverage: u32,
        margin_type: MarginType,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, ()> {
        let _ = (symbol, leverage, margin_type, signer);
        Box::pin(async { Ok(()) })
    }

    /// The account's open derivatives positions (none on a spot venue).
    fn positions<'a>(&'a self, signer: Signer<'a>) -> RouteFuture<'a, Vec<VenuePosition>> {
        let _ = signer;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Funding payments on `symbol` from `since_ms` on, oldest first (none on a spot venue).
    fn funding<'a>(
        &'a self,
        symbol: &'a Symbol,
        since_ms: u64,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<FundingPayment>> {
        let _ = (symbol, since_ms, signer);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Opens the account's stream of order and balance events, signed with `signer` (one per
    /// exchange account: the caller shares it between the account's bots). `None` where the
    /// venue (or its configuration) has none: the caller polls.
    fn account_stream(
        &self,
        signer: crate::account::OwnedSigner,
    ) -> Option<crate::account::AccountStream> {
        let _ = signer;
        None
    }

    /// Where the router asks before each new order ([`crate::budget`]): the runtime sets a
    /// shared budget there in cluster mode. `None` for a router that sends no orders of an
    /// exchange account (test doubles).
    fn order_budget(&self) -> Option<&crate::budget::BudgetSlot> {
        None
    }
}

/// The two legs of a native bracket ([`OrderRouter::place_list`]).
#[derive(Debug, Clone, Copy)]
pub struct OrderListLegs<'a> {
    /// The list's client id.
    pub list_client_order_id: &'a str,
    /// The take-profit limit.
    pub take_profit: &'a Order,
    /// The stop-loss stop.
    pub stop_loss: &'a Order,
}

/// What a venue without native order lists answers.
fn no_order_lists() -> RouteError {
    RouteError {
        kind: RouteErrorKind::Rejected,
        message: "this venue has no native order lists; brackets are emulated".to_owned(),
    }
}
