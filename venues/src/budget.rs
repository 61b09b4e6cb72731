//! The order budget: what a connector asks before it sends a new order to an exchange account.
//!
//! Exchanges limit how many new orders one account may send per window (Binance spot 100 per
//! 10 s; USD-M futures 300 per 10 s and 1200 per minute; Bybit per UID and second, 20 on spot and
//! 10 on USDT perpetuals by default). A connector on its own keeps to them by reading the
//! venue's counts off its answers (`X-MBX-ORDER-COUNT-10S`, `X-Bapi-Limit-Status`). Several Keel
//! nodes trading one account cannot: each sees the venue's count only after its own orders, so
//! together they can send past the limit before either learns of it.
//!
//! So before each new order a connector asks its [`OrderBudget`] with the account
//! ([`AccountKey`]: the venue and a hash of the API key, never the key), the venue's documented
//! limits ([`RateLimit`]), how many orders the request creates and the venue's time now. The
//! default, [`Unshared`], grants everything: a single node keeps to the limits by the venue's
//! counts, as before. In cluster mode the runtime hands every router the cluster's budget
//! (`keel_actors::cluster`), which counts the account's orders across nodes; an order it holds
//! back is [`Held`], which the connector answers as "throttled"
//! ([`crate::routing::RouteErrorKind::Throttled`]).
//!
//! The window arithmetic every shared budget needs lives here too, beside the limits it reads:
//! [`RateLimit::cap`] (how many orders a shared count lets through per window) and
//! [`RateLimit::windows`] (which windows an order sent now counts in).

use std::fmt;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use keel_core::market::VenueId;

/// One exchange account on one venue, as budgets know it: the venue and the first 16 bytes of
/// the SHA-256 of its API key, in hex. The key itself never leaves the connector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    venue: VenueId,
    account: String,
}

impl AccountKey {
    /// The account whose API key is `api_key` on `venue`.
    pub fn new(venue: VenueId, api_key: &str) -> Self {
        let digest = Sha256::digest(api_key.as_bytes());
        Self { venue, account: hex::encode(&digest[..16]) }
    }

    /// The venue.
    pub fn venue(&self) -> VenueId {
        self.venue
    }

    /// The hash of the API key: 32 hex digits.
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.venue.as_str(), self.account)
    }
}

/// A venue's documented limit on new orders per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The window, ms.
    pub window_ms: u64,
    /// Most new orders the venue takes per window.
    pub limit: u32,
    /// Whether the venue counts over a rolling window (any `window_ms` interval: Bybit) rather
    /// than over windows aligned to the epoch (Binance: a 10 s window starts every 10 s).
    pub rolling: bool,
}

impl RateLimit {
    /// A limit over windows aligned to the epoch.
    pub const fn aligned(window_ms: u64, limit: u32) -> Self {
        Self { window_ms, limit, rolling: false }
    }

    /// A limit over a rolling window.
    pub const fn rolling(window_ms: u64, limit: u32) -> Self {
        Self { window_ms, limit, rolling: true }
    }

    /// How many orders a shared count lets through per aligned window. Aligned limits keep a
    /// margin of a twentieth (at least one order: Binance spot 95 of 100), as the connectors'
    /// own checks stop short; a rolling limit gets half, because any rolling window overlaps
    /// two aligned ones (Bybit spot 10 of 20 per second).
    pub fn cap(&self) -> u32 {
        if self.rolling {
            (self.limit / 2).max(1)
        } else {
            self.limit.saturating_sub((self.limit / 20).max(1)).max(1)
        }
    }

    /// How far either side of "now" an order's time is uncertain, ms: the clocks of nodes and
    /// venue differ by a few ms once measured, and the order takes time to arrive. A tenth of
    /// the window, at most 250 ms.
    pub fn slack_ms(&self) -> u64 {
        (self.window_ms / 10).min(250)
    }

    /// The indices (`time / window_ms`) of the aligned windows an order sent at `now_ms` (the
    /// venue's time, known within `uncertainty_ms`) counts in: every window within
    /// [`slack_ms`](Self::slack_ms) plus the uncertainty of now. Near a boundary that is both
    /// windows, so the venue's count of either stays under the cap wherever the order lands.
    pub fn windows(&self, now_ms: u64, uncertainty_ms: u64) -> std::ops::RangeInclusive<u64> {
        let window = self.window_ms.max(1);
        let slack = self.slack_ms() + uncertainty_ms.min(window);
        let first = now_ms.saturating_sub(slack) / window;
        let last = now_ms.saturating_add(slack) / window;
        first..=last
    }

    /// How long from `now_ms` until window `index` has ended, ms.
    pub fn until_end(&self, index: u64, now_ms: u64) -> u64 {
        (index + 1).saturating_mul(self.window_ms).saturating_sub(now_ms)
    }
}

/// What a connector asks before sending.
#[derive(Debug, Clone, Copy)]
pub struct BudgetAsk<'a> {
    /// The account.
    pub account: &'a AccountKey,
    /// The venue's limits on the account's new orders.
    pub limits: &'a [RateLimit],
    /// How many new orders the request creates (an order list counts each of its orders).
    pub orders: u32,
    /// The venue's time now (local time corrected by the measured offset), ms.
    pub now_ms: u64,
    /// How far off `now_ms` may be: half the round trip that measured the offset, ms.
    pub uncertainty_ms: u64,
}

/// An order the budget held back: nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("held back by the account's shared order budget ({reason}); retry in {retry_in_ms} ms")]
pub struct Held {
    /// Which limit, in words (`95 new orders per 10000 ms window`).
    pub reason: String,
    /// How long until the window that held it back has passed, ms.
    pub retry_in_ms: u64,
}

/// A budget of new orders per account, shared by whoever holds it.
pub trait OrderBudget: fmt::Debug + Send + Sync {
    /// Takes `ask.orders` from every window of every limit, or holds the request back.
    fn take<'a>(&'a self, ask: BudgetAsk<'a>) -> BoxFuture<'a, Result<(), Held>>;
}

/// The single-node budget: grants everything (the connector's own reading of the venue's
/// counts is the limit, as it always was).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unshared;

impl OrderBudget for Unshared {
    fn take<'a>(&'a self, _ask: BudgetAsk<'a>) -> BoxFuture<'a, Result<(), Held>> {
        Box::pin(async { Ok(()) })
    }
}

/// Where a connector finds its budget: [`Unshared`] until one is set, once, at start-up.
#[derive(Debug, Default)]
pub struct BudgetSlot(OnceLock<Arc<dyn OrderBudget>>);

impl BudgetSlot {
    /// Uses `budget` from now on; false when one was set already (it stays).
    pub fn set(&self, budget: Arc<dyn OrderBudget>) -> bool {
        self.0.set(budget).is_ok()
    }

    /// Whether a shared budget was set.
    pub fn is_shared(&self) -> bool {
        self.0.get().is_some()
    }

    /// Asks the budget (at once `Ok` while none is set, or when `ask.orders` is 0).
    ///
    /// # Errors
    /// [`Held`]: the request must not be sent.
    pub async fn take(&self, ask: BudgetAsk<'_>) -> Result<(), Held> {
        match self.0.get() {
            Some(budget) if ask.orders > 0 => budget.take(ask).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_a_hash_of_the_key_never_the_key() {
        let key = AccountKey::new(VenueId::Binance, "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy");
        assert_eq!(key.account().len(), 32);
        assert!(!key.to_string().contains("vmPUZE"), "{key}");
        assert_eq!(
            key,
            AccountKey::new(VenueId::Binance, "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy")
        );
        assert_ne!(
            key,
            AccountKey::new(
                VenueId::BinanceFutures,
                "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy"
            )
        );
        assert_ne!(key.account(), AccountKey::new(VenueId::Binance, "other").account());
        assert!(key.to_string().starts_with("binance."), "{key}");
    }

    #[test]
    fn caps_keep_a_margin_and_rolling_limits_get_half() {
        assert_eq!(RateLimit::aligned(10_000, 100).cap(), 95);
        assert_eq!(RateLimit::aligned(10_000, 300).cap(), 285);
        assert_eq!(RateLimit::aligned(60_000, 1200).cap(), 1140);
        assert_eq!(RateLimit::aligned(1_000, 10).cap(), 9);
        assert_eq!(RateLimit::rolling(1_000, 20).cap(), 10);
        assert_eq!(RateLimit::rolling(1_000, 10).cap(), 5);
        assert_eq!(RateLimit::rolling(1_000, 1).cap(), 1);
    }

    #[test]
    fn an_order_near_a_boundary_counts_in_both_windows() {
        let limit = RateLimit::aligned(10_000, 100);
        assert_eq!(limit.slack_ms(), 250);
        assert_eq!(limit.windows(25_000, 0).collect::<Vec<_>>(), [2]);
        assert_eq!(limit.windows(29_800, 0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(limit.windows(30_100, 0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(limit.windows(30_300, 0).collect::<Vec<_>>(), [3]);
        // A clock measured over a slow round trip widens the edges by its uncertainty.
        assert_eq!(limit.windows(30_300, 100).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(limit.windows(25_000, 60_000).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(limit.until_end(2, 25_000), 5_000);
        let second = RateLimit::rolling(1_000, 20);
        assert_eq!(second.slack_ms(), 100);
        assert_eq!(second.windows(5_500, 0).collect::<Vec<_>>(), [5]);
        assert_eq!(second.windows(5_950, 0).collect::<Vec<_>>(), [5, 6]);
    }

    #[tokio::test]
    async fn an_empty_slot_grants_and_a_set_one_decides() {
        #[derive(Debug)]
        struct Never;
        impl OrderBudget for Never {
            fn take<'a>(&'a self, _ask: BudgetAsk<'a>) -> BoxFuture<'a, Result<(), Held>> {
                Box::pin(async { Err(Held { reason: "never".into(), retry_in_ms: 7 }) })
            }
        }
        let account = AccountKey::new(VenueId::Binance, "k");
        let limits = [RateLimit::aligned(10_000, 100)];
        let ask = BudgetAsk {
            account: &account,
            limits: &limits,
            orders: 1,
            now_ms: 1,
            uncertainty_ms: 0,
        };
        let slot = BudgetSlot::default();
        assert!(slot.take(ask).await.is_ok());
        assert!(!slot.is_shared());
        assert!(slot.set(Arc::new(Never)));
        assert!(!slot.set(Arc::new(Unshared)), "set once");
        let held = slot.take(ask).await.unwrap_err();
        assert_eq!(held.retry_in_ms, 7);
        assert!(held.to_string().contains("shared order budget"), "{held}");
        assert!(slot.take(BudgetAsk { orders: 0, ..ask }).await.is_ok(), "no new order, no ask");
    }
}
