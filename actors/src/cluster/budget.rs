//! Shared order budgets per exchange account (docs/CLUSTER.md, "Order budgets").
//!
//! Every node's routers ask [`ClusterBudget`] before a new order ([`keel_venues::budget`]). It
//! counts the account's orders per venue window in NATS KV (bucket `{name}_order_budget`, key
//! `{venue}.{account hash}.{window ms}.{window index}`, value the count as decimal text), raised
//! only by compare-and-set on the key's revision, so two nodes never both take the last
//! orders of a window. A node reserves `block` orders per round trip (1 by default: every order
//! one round trip, nothing reserved and left unused) and spends its reservation locally; it
//! remembers each key's last revision, so an uncontended reservation is one KV write.
//!
//! A call that takes longer than [`CALL_TIMEOUT`] holds its order back (NATS is slow, not gone:
//! the others may still be counting there). When NATS cannot be reached (the connection is down,
//! or a call fails) the node does not wait and does not go unlimited: for the next
//! [`DEGRADED_FOR`] it decides alone. In a window where it has reserved through NATS it spends
//! only what it reserved there (the other nodes may hold the rest of the cap); in a window it
//! never reserved in it grants at most `cap / fallback_nodes` orders. It adds what it sent alone to the
//! shared count once NATS answers again.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::future::BoxFuture;
use keel_venues::budget::{AccountKey, BudgetAsk, Held, OrderBudget, RateLimit};

/// The longest a budget call to NATS may take before the node decides alone.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a node decides alone after NATS failed it, before it tries NATS again.
pub const DEGRADED_FOR: Duration = Duration::from_secs(1);
/// How long a window's count stays in the bucket: twice the longest venue window (a minute).
const BUCKET_MAX_AGE: Duration = Duration::from_secs(120);
/// Compare-and-set attempts per reservation before the order is held back as contended.
const MAX_ATTEMPTS: usize = 16;

/// How the node shares its accounts' order budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Orders reserved per round trip to NATS (at most a tenth of a window's cap).
    pub block: u32,
    /// How many nodes' shares a window's cap is split into while NATS cannot be reached.
    pub fallback_nodes: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { block: 1, fallback_nodes: 2 }
    }
}

/// The cluster's order budget, as one node holds it.
pub struct ClusterBudget {
    kv: kv::Store,
    client: async_nats::Client,
    config: BudgetConfig,
    /// Each account's windows, behind a lock of its own: an account's asks wait for each
    /// other's round trips to NATS, never another account's.
    accounts: std::sync::Mutex<HashMap<AccountKey, Arc<tokio::sync::Mutex<State>>>>,
    /// Deciding alone until then (NATS failed a call).
    degraded_until: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ClusterBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBudget").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One account's window, as this node knows it.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// Orders this node has added to the shared count.
    reserved: u32,
    /// Orders this node has sent (more than `reserved` after deciding alone).
    used: u32,
    /// The key's last revision and count this node saw (0, 0: not created yet).
    seen: (u64, u32),
    /// Whether this node has reserved from the shared count in this window (since then the
    /// others may hold the rest of its cap).
    shared: bool,
}

/// One account's windows.
#[derive(Debug, Default)]
struct State {
    slots: HashMap<(AccountKey, u64, u64), Slot>,
}

/// What one compare-and-set reservation achieved.
struct Reserved {
    got: u32,
    seen: (u64, u32),
}

/// Why a reservation did not reach NATS (the node decides alone).
#[derive(Debug)]
struct Unreachable(String);

impl ClusterBudget {
    /// Creates (or opens) the bucket of cluster `name`'s order budgets.
    ///
    /// # Errors
    /// JetStream refuses the bucket's stream.
    pub(crate) async fn open(
        client: async_nats::Client,
        jetstream: &jetstream::Context,
        name: &str,
        config: BudgetConfig,
    ) -> Result<Self, String> {
        let bucket = bucket(name);
        let description = "Keel order budgets: venue.account.window_ms.index -> orders";
        let kv = super::kv_bucket(jetstream, &bucket, description, BUCKET_MAX_AGE).await?;
        Ok(Self {
            kv,
            client,
            config,
            accounts: std::sync::Mutex::default(),
            degraded_until: std::sync::Mutex::default(),
        })
    }

    /// Whether to ask NATS now: connected, and not within [`DEGRADED_FOR`] of a failure.
    fn reachable(&self, now: Instant) -> bool {
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        let degraded_until = *self.degraded_until.lock().unwrap_or_else(PoisonError::into_inner);
        connected && degraded_until.is_none_or(|until| now >= until)
    }

    /// The lock of `account`'s windows.
    fn account(&self, account: &AccountKey) -> Arc<tokio::sync::Mutex<State>> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts.entry(account.clone()).or_default().clone()
    }

    async fn decide(&self, ask: BudgetAsk<'_>) -> Result<(), Held> {
        let venue = ask.account.venue().as_str();
        let account = self.account(ask.account);
        let mut state = account.lock().await;
        prune(&mut state, ask.now_ms);
        let mut planned = Vec::new();
        for limit in ask.limits {
            for index in limit.windows(ask.now_ms, ask.uncertainty_ms) {
                let key = (ask.account.clone(), limit.window_ms, index);
                let mut slot = state.slots.get(&key).copied().unwrap_or_default();
                let needed = slot.used + ask.orders;
                if slot.reserved < needed && self.reachable(Instant::now()) {
                    let want = needed - slot.reserved;
                    let block = self.config.block.min((limit.cap() / 10).max(1)).max(want);
                    let name = kv_key(ask.account, limit.window_ms, index);
                    let reserve = reserve(&self.kv, &name, limit.cap(), want, block, slot.seen);
                    match tokio::time::timeout(CALL_TIMEOUT, reserve).await {
                        Ok(Ok(reserved)) => {
                            metrics::counter!("keel_cluster_budget_reservations_total", "venue" => venue)
                                .increment(1);
                            slot.reserved += reserved.got;
                            slot.seen = reserved.seen;
                            slot.shared = true;
                        }
                        Ok(Err(Unreachable(why))) => {
                            tracing::warn!(%venue, error = %why, "order budget not reached in NATS: deciding alone");
                            *self.degraded_until.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(Instant::now() + DEGRADED_FOR);
                        }
                        Err(_) => {
                            // Slow, not gone: the write may even have landed, and the others
                            // may be reaching NATS. Deciding alone could pass the cap; hold.
                            slot.shared = true;
                            state.slots.insert(key, slot);
                            metrics::counter!("keel_cluster_budget_held_total", "venue" => venue)
                                .increment(u64::from(ask.orders));
                            let ms = CALL_TIMEOUT.as_millis();
                            let reason =
                                format!("the shared count in NATS did not answer within {ms} ms");
                            return Err(Held {
                                reason,
                                retry_in_ms: u64::try_from(ms).unwrap_or(0),
                            });
                        }
                    }
                    state.slots.insert(key.clone(), slot);
                }
                let granted = if slot.reserved >= needed {
                    true
                } else if self.reachable(Instant::now()) {
                    false
                } else {
                    // Alone. In a window this node has shared through NATS, the others may hold
                    // the rest of the cap: only what it reserved. In a window it never shared,
                    // its fallback share.
                    metrics::counter!("keel_cluster_budget_local_total", "venue" => venue)
                        .increment(u64::from(ask.orders));
                    let alone = if slot.shared { slot.reserved } else { self.share(limit) };
                    needed <= alone
                };
                if !granted {
                    metrics::counter!("keel_cluster_budget_held_total", "venue" => venue)
                        .increment(u64::from(ask.orders));
                    return Err(self.held(limit, index, ask.now_ms));
                }
                planned.push(key);
            }
        }
        for key in planned {
            state.slots.entry(key).or_default().used += ask.orders;
        }
        Ok(())
    }

    /// A window's cap split between `fallback_nodes` nodes (at least one order).
    fn share(&self, limit: &RateLimit) -> u32 {
        (limit.cap() / self.config.fallback_nodes.max(1)).max(1)
    }

    fn held(&self, limit: &RateLimit, index: u64, now_ms: u64) -> Held {
        let reason = if self.reachable(Instant::now()) {
            format!(
                "{} new orders per {} ms window across the cluster",
                limit.cap(),
                limit.window_ms
            )
        } else {
            format!(
                "{} new orders per {} ms window on this node while NATS cannot be reached",
                self.share(limit),
                limit.window_ms
            )
        };
        Held { reason, retry_in_ms: limit.until_end(index, now_ms) }
    }
}

impl OrderBudget for ClusterBudget {
    fn take<'a>(&'a self, ask: BudgetAsk<'a>) -> BoxFuture<'a, Result<(), Held>> {
        Box::pin(self.decide(ask))
    }
}

/// Raises the count of `key` by `block` (fewer when the cap is nearer), by compare-and-set from
/// the revision last `seen`, reading the key again after each conflict. `got` may be less than
/// `want` (the window is nearly spent) or 0 (spent, or contended past [`MAX_ATTEMPTS`]).
async fn reserve(
    kv: &kv::Store,
    key: &str,
    cap: u32,
    want: u32,
    block: u32,
    seen: (u64, u32),
) -> Result<Reserved, Unreachable> {
    let (mut revision, mut count) = seen;
    for _ in 0..MAX_ATTEMPTS {
        let room = cap.saturating_sub(count);
        if room == 0 {
            return Ok(Reserved { got: 0, seen: (revision, count) });
        }
        let take = block.max(want).min(room);
        let value = (count + take).to_string().into();
        match kv.update(key, value, revision).await {
            Ok(written) => return Ok(Reserved { got: take, seen: (written, count + take) }),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                metrics::counter!("keel_cluster_budget_conflicts_total").increment(1);
                match kv.entry(key).await {
                    Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                        revision = entry.revision;
                        count = std::str::from_utf8(&entry.value)
                            .ok()
                            .and_then(|text| text.parse().ok())
                            // An unreadable count is taken as spent: never as room.
                            .unwrap_or(cap);
                    }
                    Ok(Some(entry)) => (revision, count) = (entry.revision, 0),
                    Ok(None) => (revision, count) = (0, 0),
                    Err(err) => return Err(Unreachable(err.to_string())),
                }
            }
            Err(err) => return Err(Unreachable(err.to_string())),
        }
    }
    Ok(Reserved { got: 0, seen: (revision, count) })
}

/// Forgets windows that ended more than a window ago.
fn prune(state: &mut State, now_ms: u64) {
    if state.slots.len() < 1024 {
        return;
    }
    state.slots.retain(|(_, window_ms, index), _| (index + 2).saturating_mul(*window_ms) > now_ms);
}

/// The KV key of an account's window.
fn kv_key(account: &AccountKey, window_ms: u64, index: u64) -> String {
    format!("{account}.{window_ms}.{index}")
}

/// The bucket of a cluster's order budgets.
pub(super) fn bucket(name: &str) -> String {
    format!("{name}_order_budget")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_venue_the_hashed_account_and_the_window() {
        let account = AccountKey::new(keel_core::market::VenueId::Binance, "secret-key");
        let key = kv_key(&account, 10_000, 176_000_000);
        assert!(key.starts_with("binance."), "{key}");
        assert!(key.ends_with(".10000.176000000"), "{key}");
        assert!(!key.contains("secret"), "{key}");
        assert_eq!(bucket("keel"), "keel_order_budget");
    }

    /// A budget of a fresh cluster on the NATS at `KEEL_TEST_NATS_URL` (`None`: skipped).
    async fn open(name: &str, config: BudgetConfig) -> Option<(ClusterBudget, async_nats::Client)> {
        let Ok(url) = std::env::var("KEEL_TEST_NATS_URL") else {
            eprintln!("cluster budget: skipped: KEEL_TEST_NATS_URL is not set");
            return None;
        };
        let client = async_nats::connect(url.as_str()).await.expect("NATS");
        let jetstream = jetstream::new(client.clone());
        let budget = ClusterBudget::open(client.clone(), &jetstream, name, config).await.unwrap();
        Some((budget, client))
    }

    /// Asks `budget` for one order at `now_ms` until it holds one back: how many it granted, and
    /// why it held.
    async fn take_all(budget: &ClusterBudget, account: &AccountKey, now_ms: u64) -> (u32, Held) {
        let limits = [RateLimit::aligned(10_000, 100)];
        let mut granted = 0;
        loop {
            let ask = BudgetAsk { account, limits: &limits, orders: 1, now_ms, uncertainty_ms: 0 };
            match budget.take(ask).await {
                Ok(()) => granted += 1,
                Err(held) => return (granted, held),
            }
            assert!(granted <= 100, "never held back");
        }
    }

    #[tokio::test]
    async fn two_nodes_share_one_cap_and_a_node_cut_off_from_nats_takes_only_its_share() {
        for block in [1, 10] {
            let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
            let config = BudgetConfig { block, fallback_nodes: 2 };
            let Some((a, _)) = open(&name, config).await else { return };
            let Some((b, b_client)) = open(&name, config).await else { return };
            let account = AccountKey::new(keel_core::market::VenueId::Binance, "key");
            // Mid-window (venue time is the ask's, so the test does not race the clock).
            let now = 176_000_000 * 10_000 + 5_000;
            let limits = [RateLimit::aligned(10_000, 100)];
            let ask = |now_ms| BudgetAsk {
                account: &account,
                limits: &limits,
                orders: 1,
                now_ms,
                uncertainty_ms: 0,
            };
            let mut granted = 0;
            for round in 0..60 {
                let node = if round % 2 == 0 { &a } else { &b };
                granted += u32::from(node.take(ask(now)).await.is_ok());
            }
            assert_eq!(granted, 60, "block {block}");
            let (more_a, held) = take_all(&a, &account, now).await;
            let (more_b, _) = take_all(&b, &account, now).await;
            assert_eq!(granted + more_a + more_b, 95, "block {block}: the cap, across both");
            assert!(held.reason.contains("across the cluster"), "{held:?}");
            assert_eq!(held.retry_in_ms, 5_000);
            // Another account's budget is its own.
            let other = AccountKey::new(keel_core::market::VenueId::Binance, "other key");
            assert_eq!(take_all(&a, &other, now).await.0, 95);

            // B reserves in the next window, then loses NATS. A drained client still says it is
            // connected and may pass a few more calls, so B is asked (for another account) until
            // one of its calls has failed: from then on it decides alone.
            let next = now + 10_000;
            for _ in 0..5 {
                b.take(ask(next)).await.unwrap();
            }
            b_client.drain().await.unwrap();
            let probe = AccountKey::new(keel_core::market::VenueId::Binance, "probe");
            let deadline = Instant::now() + Duration::from_secs(10);
            while b.reachable(Instant::now()) {
                assert!(Instant::now() < deadline, "a drained client's calls never failed");
                let ask = BudgetAsk {
                    account: &probe,
                    limits: &limits,
                    orders: 1,
                    now_ms: next,
                    uncertainty_ms: 0,
                };
                let _ = b.take(ask).await;
            }
            // In the window it shared, B spends only what it reserved there: the others may
            // hold the rest of the cap.
            let (rest, held) = take_all(&b, &account, next).await;
            let reserved = 5 + rest;
            // One order per round trip, or a block of at most a tenth of the cap (95).
            assert_eq!(reserved, if block == 1 { 5 } else { 9 }, "block {block}");
            assert!(held.reason.contains("while NATS cannot be reached"), "{held:?}");
            let key = kv_key(&account, 10_000, next / 10_000);
            let count = a.kv.get(&key).await.unwrap().expect("B's reservation is in NATS");
            assert_eq!(std::str::from_utf8(&count).unwrap(), reserved.to_string());
            // In a window it never shared, B grants its share of the cap, never unlimited.
            let started = Instant::now();
            let (alone, held) = take_all(&b, &account, next + 10_000).await;
            assert_eq!(alone, 47, "block {block}");
            assert!(held.reason.contains("while NATS cannot be reached"), "{held:?}");
            assert!(started.elapsed() < CALL_TIMEOUT * 4, "a node cut off does not wait on NATS");
        }
    }

    #[test]
    fn old_windows_are_forgotten_once_there_are_many() {
        let account = AccountKey::new(keel_core::market::VenueId::Binance, "k");
        let mut state = State::default();
        for index in 0..2000 {
            state.slots.insert((account.clone(), 10_000, index), Slot::default());
        }
        prune(&mut state, 1000 * 10_000);
        assert_eq!(state.slots.len(), 1001, "windows 999.. are kept");
    }
}
