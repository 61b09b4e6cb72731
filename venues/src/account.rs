//! The account half of the venue seam: what a venue pushes about one exchange account (order
//! executions and balances), as an [`AccountStream`] a router opens once per account.
//!
//! A live bot does not need a stream to trade: its router's queries tell it everything, only
//! later. An account stream makes that real time, and the runtime keeps polling as the fallback
//! while the stream is down ([`AccountEvent::Disconnected`]) and reconciles every open order when
//! it is back ([`AccountEvent::Connected`]), since nothing the venue sent meanwhile is replayed.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::sync::mpsc;

use crate::routing::{Balance, FundingPayment, OrderReport, VenuePosition};

/// Signs a payload for as long as the stream lives: the vault's `Sign`, owned (a stream task
/// outlives any one request), answering `(api_key, signature)`.
pub type OwnedSigner =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<(String, String), String>> + Send + Sync>;

/// How many events may wait for the runtime before the stream task waits too.
pub const ACCOUNT_EVENTS_BUFFER: usize = 1024;

/// What the venue said about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    /// Subscribed: events flow from now on. Whatever happened before (or while disconnected)
    /// was not pushed: reconcile open orders and read balances now.
    Connected,
    /// The stream is down (and reconnecting, with backoff): poll meanwhile.
    Disconnected(String),
    /// An order changed (placed, traded, canceled, expired, rejected).
    Order(OrderUpdate),
    /// The free and locked amounts of the listed assets, as they are now (Binance's
    /// `outboundAccountPosition`: the assets an event may have changed).
    Balances(Vec<Balance>),
    /// A deposit, withdrawal or transfer moved `delta` of `asset` in or out (Binance's
    /// `balanceUpdate`); the free amount changes by it.
    BalanceDelta {
        /// The asset.
        asset: String,
        /// Signed change.
        delta: Decimal,
    },
    /// A derivatives position changed (Binance futures' `ACCOUNT_UPDATE`, Bybit's `position`):
    /// its state as it is now.
    Position(VenuePosition),
    /// A funding payment was made or received on a perpetual position.
    Funding(FundingPayment),
}

/// One order's change, as the stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderUpdate {
    /// The symbol, in the venue's spelling (`BTCUSDT`).
    pub symbol: String,
    /// The order's state: our client order id (for a cancel, the canceled order's, not the
    /// cancel request's), status and cumulative execution, and the execution this update
    /// reports, if it reports one (with its commission).
    pub report: OrderReport,
    /// The venue's id of the trade this update reports, if it reports one.
    pub trade_id: Option<u64>,
    /// When the venue made the change, ms.
    pub event_ms: u64,
}

/// A running account stream: its events, and the task behind them (stopped when the
/// [`TaskGuard`] is dropped).
#[derive(Debug)]
pub struct AccountStream {
    /// What the venue pushes, in order.
    pub events: mpsc::Receiver<AccountEvent>,
    /// Stops the task when dropped.
    pub guard: TaskGuard,
}

/// Aborts its task when dropped.
#[derive(Debug)]
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
