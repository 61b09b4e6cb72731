//! User leases (cluster mode with `cluster.postgres_url`): which node acts for which user
//! (docs/CLUSTER.md, "User leases").
//!
//! Every node upserts its row in `keel_nodes` and heartbeats it every [`ROUND`]; a node is live
//! while its heartbeat is younger than [`LEASE_TTL`]. A user's lease (`keel_user_leases`) is
//! taken with one conditional statement that raises the epoch, only where the lease is free,
//! expired or already this node's; the holder renews it every [`RENEW_EVERY`]. Which live node
//! takes a free user is decided by rendezvous hashing of (user, node), so users spread evenly and
//! few move when a node joins. All times are Postgres's clock, never a node's.
//!
//! [`UserLeases::owner`] answers who acts for a user ([`Owner`]), and [`UserLeases::subscribe`]
//! tells of users gained and lost ([`Ownership`]), so the bot supervisor can start and stop a
//! user's bots. Nothing here runs on an actor thread: the rounds are a task of their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::pg::fence::Fence;
use crate::pg::{PgRecord, RecordError, from_db, to_db};

/// How long a user lease, and a node's heartbeat, lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a holder renews its user leases: a third of the TTL, so two renewals may fail
/// before a lease expires.
pub const RENEW_EVERY: Duration = Duration::from_millis(3_333);
/// How often a node heartbeats, reads the live nodes and takes the free users it wins.
pub const ROUND: Duration = Duration::from_secs(1);
/// How many changes of ownership a slow subscriber may fall behind by before it misses some.
const CHANGES_CAPACITY: usize = 1_024;

/// Who acts for a user, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node, under this fence.
    Mine(Fence),
    /// Another live node.
    Other {
        /// Its `cluster.node_id`.
        node_id: String,
        /// Its `cluster.advertise_url`.
        advertise_url: String,
    },
    /// Nobody holds the lease now (a new user before the next round, or a holder that died).
    Unknown,
}

/// A change in the users this node acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// This node took the user's lease: it may act for the user under the fence.
    Gained(Fence),
    /// This node no longer holds the lease it took under the fence (taken over, expired, or
    /// released at shutdown): it must stop acting for the user.
    Lost(Fence),
}

/// Nodes whose lease rounds are paused ([`pause_rounds`]); empty unless a test paused one.
static PAUSED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// For tests: pauses (or resumes) the lease rounds of the node `node_id` in this process, as a
/// stalled lease task would (no heartbeat, no renewal, no loss noticed) while the rest of the
/// node goes on believing it holds its users. Its leases expire and other nodes take them; its
/// writes for those users are then refused by their fence.
#[doc(hidden)]
pub fn pause_rounds(node_id: &str, paused: bool) {
    let mut nodes = PAUSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if paused {
        nodes.insert(node_id.to_owned());
    } else {
        nodes.remove(node_id);
    }
}

fn rounds_paused(node_id: &str) -> bool {
    PAUSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(node_id)
}

/// This node's user leases; cheap to clone.
#[derive(Clone)]
pub struct UserLeases(Arc<Inner>);

struct Inner {
    record: PgRecord,
    node_id: String,
    advertise_url: String,
    state: Mutex<State>,
    changes: broadcast::Sender<Ownership>,
}

#[derive(Default)]
struct State {
    /// The users this node holds, with the epoch it took each at.
    mine: BTreeMap<u64, i64>,
    /// Other nodes' users looked up since the last round.
    others: HashMap<u64, (String, String)>,
    /// The live nodes at the last round (id, advertise URL), this one included.
    live: Vec<(String, String)>,
    /// When the leases were last renewed.
    renewed: Option<Instant>,
    /// Set once the leases were released at shutdown: take nothing more.
    stopped: bool,
}

impl std::fmt::Debug for UserLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLeases").field("node_id", &self.0.node_id).finish_non_exhaustive()
    }
}

/// The rendezvous weight of `node` for `user`: the first 8 bytes of SHA-256 over both, the
/// same on every node and every build.
pub fn weight(user_id: u64, node_id: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(user_id.to_be_bytes());
    hash.update(node_id.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The node among `nodes` that should hold `user`'s lease: the highest weight (ties, which
/// SHA-256 makes unlikely, go to the lowest id).
pub fn winner<'a>(user_id: u64, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by(|a, b| weight(user_id, a).cmp(&weight(user_id, b)).then(b.cmp(a)))
}

impl UserLeases {
    /// The leases of node `node_id`, reachable by the other nodes at `advertise_url`. Nothing
    /// is sent to Postgres until [`UserLeases::round`] (or [`UserLeases::start`]).
    pub fn new(record: PgRecord, node_id: String, advertise_url: String) -> Self {
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        Self(Arc::new(Inner {
            record,
            node_id,
            advertise_url,
            state: Mutex::new(State::default()),
            changes,
        }))
    }

    /// Runs [`UserLeases::round`] every [`ROUND`] on a task of its own until the leases are
    /// released ([`UserLeases::release_all`]). A round that fails is logged and the next one
    /// tries again; a lease that could not be renewed in time is reported lost.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let leases = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ROUND);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if leases.lock().stopped {
                    break;
                }
                if rounds_paused(&leases.0.node_id) {
                    continue;
                }
                if let Err(err) = leases.round().await {
                    tracing::warn!(error = %err.detail(), "user lease round failed");
                    leases.drop_stale();
                }
            }
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.0.node_id
    }

    /// Tells of every user gained and lost from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Ownership> {
        self.0.changes.subscribe()
    }

    /// The users this node holds now, with their fences.
    pub fn owned(&self) -> Vec<Fence> {
        let state = self.lock();
        state.mine.iter().map(|(&user_id, &epoch)| self.fence(user_id, epoch)).collect()
    }

    /// Who acts for `user_id`: from this node's own leases and the round's cache, or else one
    /// read of the lease.
    ///
    /// # Errors
    /// Postgres failed or did not answer in time.
    pub async fn owner(&self, user_id: u64) -> Result<Owner, RecordError> {
        {
            let state = self.lock();
            if let Some(&epoch) = state.mine.get(&user_id) {
                return Ok(Owner::Mine(self.fence(user_id, epoch)));
            }
            if let Some((node_id, advertise_url)) = state.others.get(&user_id) {
                let (node_id, advertise_url) = (node_id.clone(), advertise_url.clone());
                return Ok(Owner::Other { node_id, advertise_url });
            }
        }
        let record = &self.0.record;
        let row = record
            .timed("leases.owner", async {
                let client = record.client().await?;
                Ok(client
                    .query_opt(
                        "SELECT l.holder, coalesce(n.advertise_url, '') FROM keel_user_leases l
                         LEFT JOIN keel_nodes n ON n.node_id = l.holder
                         WHERE l.user_id = $1 AND l.expires_at > clock_timestamp()",
                        &[&to_db(user_id)?],
                    )
                    .await?)
            })
            .await?;
        let Some(row) = row else { return Ok(Owner::Unknown) };
        let (node_id, advertise_url): (String, String) = (row.get(0), row.get(1));
        if node_id == self.0.node_id {
            // This node's by the row, but not taken in this process (a restart within the
            // TTL): the next round takes it again under a new epoch.
            return Ok(Owner::Unknown);
        }
        self.lock().others.insert(user_id, (node_id.clone(), advertise_url.clone()));
        Ok(Owner::Other { node_id, advertise_url })
    }

    /// Drops what the round's cache says of `user_id`'s owner (it did not answer), so the next
    /// [`UserLeases::owner`] reads the lease again.
    pub fn forget(&self, user_id: u64) {
        self.lock().others.remove(&user_id);
    }

    /// The live node that should hold `user_id` (the rendezvous winner at the last round).
    pub fn winner(&self, user_id: u64) -> Option<String> {
        let state = self.lock();
        winner(user_id, state.live.iter().map(|(id, _)| id.as_str())).map(str::to_owned)
    }

    /// Takes `user_id`'s lease if this node is the rendezvous winner among the live nodes and
    /// the lease is free; who owns the user afterwards.
    ///
    /// # Errors
    /// Postgres failed or did not answer in time.
    pub async fn take_if_winner(&self, user_id: u64) -> Result<Owner, RecordError> {
        let wins = {
            let state = self.lock();
            !state.stopped
                && winner(user_id, state.live.iter().map(|(id, _)| id.as_str()))
                    == Some(self.0.node_id.as_str())
        };
        if wins && let Some(epoch) = self.take(user_id).await? {
            return Ok(Owner::Mine(self.fence(user_id, epoch)));
        }
        self.owner(user_id).await
    }

    /// One round: heartbeat, read the live nodes, renew this node's leases when due, and take
    /// the free or expired users this node wins.
    ///
    /// # Errors
    /// Postgres failed or did not answer in time; what the round had done stays done.
    pub async fn round(&self) -> Result<(), RecordError> {
        let record = &self.0.record;
        let ttl = LEASE_TTL.as_secs_f64();
        let me = self.0.node_id.as_str();
        let live = record
            .timed("leases.heartbeat", async {
                let client = record.client().await?;
                client
                    .execute(
                        "INSERT INTO keel_nodes (node_id, advertise_url, heartbeat_at)
                         VALUES ($1, $2, clock_timestamp())
                         ON CONFLICT (node_id) DO UPDATE
                         SET advertise_url = $2, heartbeat_at = clock_timestamp()",
                        &[&me, &self.0.advertise_url],
                    )
                    .await?;
                let rows = client
                    .query(
                        "SELECT node_id, advertise_url FROM keel_nodes
                         WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1)
                         ORDER BY node_id",
                        &[&ttl],
                    )
                    .await?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<(String, String)>>())
            })
            .await?;
        let due = {
            let mut state = self.lock();
            state.live = live;
            state.others.clear();
            state.renewed.is_none_or(|at| at.elapsed() >= RENEW_EVERY)
        };
        if due {
            self.renew().await?;
        }
        let held: Vec<i64> = self.lock().mine.keys().filter_map(|&u| to_db(u).ok()).collect();
        // Free users, expired leases, and leases this node's row names but this process did
        // not take (a restart); with how long each has been expired.
        let candidates = record
            .timed("leases.candidates", async {
                let client = record.client().await?;
                let rows = client
                    .query(
                        "SELECT u.id, coalesce(extract(epoch FROM clock_timestamp() - l.expires_at), 0)::float8
                         FROM keel_users u LEFT JOIN keel_user_leases l ON l.user_id = u.id
                         WHERE (l.user_id IS NULL OR l.expires_at <= clock_timestamp() OR l.holder = $1)
                           AND NOT u.id = ANY($2)",
                        &[&me, &held],
                    )
                    .await?;
                rows.iter()
                    .map(|r| Ok((from_db(r.get(0))?, r.get::<_, f64>(1))))
                    .collect::<Result<Vec<(u64, f64)>, RecordError>>()
            })
            .await?;
        for (user_id, expired_for) in candidates {
            let take = {
                let state = self.lock();
                if state.stopped || state.mine.contains_key(&user_id) {
                    false
                } else {
                    // The winner among the live nodes takes the user; any node does once the
                    // lease has been expired a whole TTL (the winner is not taking it).
                    winner(user_id, state.live.iter().map(|(id, _)| id.as_str())) == Some(me)
                        || expired_for > ttl
                }
            };
            if take {
                self.take(user_id).await?;
            }
        }
        Ok(())
    }

    /// Takes `user_id`'s lease where it is free, expired or this node's, raising its epoch.
    /// The epoch taken at, or `None` when another node holds it.
    async fn take(&self, user_id: u64) -> Result<Option<i64>, RecordError> {
        let record = &self.0.record;
        let row = record
            .timed("leases.take", async {
                let client = record.client().await?;
                Ok(client
                    .query_opt(
                        "INSERT INTO keel_user_leases AS l (user_id, holder, epoch, expires_at)
                         VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))
                         ON CONFLICT (user_id) DO UPDATE
                         SET holder = excluded.holder, epoch = l.epoch + 1,
                             expires_at = excluded.expires_at
                         WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()
                         RETURNING l.epoch",
                        &[&to_db(user_id)?, &self.0.node_id, &LEASE_TTL.as_secs_f64()],
                    )
                    .await?)
            })
            .await;
        let row = match row {
            Ok(row) => row,
            // The user was deleted meanwhile (the lease's foreign key).
            Err(err)
                if err.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let Some(row) = row else { return Ok(None) };
        let epoch: i64 = row.get(0);
        let previous = {
            let mut state = self.lock();
            if state.stopped {
                None
            } else {
                state.others.remove(&user_id);
                Some(state.mine.insert(user_id, epoch))
            }
        };
        let Some(previous) = previous else { return Ok(None) };
        if let Some(old) = previous {
            self.lost(user_id, old);
        }
        metrics::counter!("keel_cluster_user_lease_takes_total").increment(1);
        self.set_gauge();
        tracing::info!(user_id, epoch, "user lease taken");
        let _ = self.0.changes.send(Ownership::Gained(self.fence(user_id, epoch)));
        Ok(Some(epoch))
    }

    /// Extends every lease this node holds at its epoch; those not extended are lost.
    async fn renew(&self) -> Result<(), RecordError> {
        let (users, epochs): (Vec<i64>, Vec<i64>) = {
            let state = self.lock();
            state.mine.iter().filter_map(|(&u, &e)| Some((to_db(u).ok()?, e))).unzip()
        };
        let started = Instant::now();
        let record = &self.0.record;
        let renewed = record
            .timed("leases.renew", async {
                let client = record.client().await?;
                let rows = client
                    .query(
                        "UPDATE keel_user_leases l
                         SET expires_at = clock_timestamp() + make_interval(secs => $4)
                         FROM unnest($1::bigint[], $2::bigint[]) AS m(user_id, epoch)
                         WHERE l.user_id = m.user_id AND l.epoch = m.epoch AND l.holder = $3
                         RETURNING l.user_id",
                        &[&users, &epochs, &self.0.node_id, &LEASE_TTL.as_secs_f64()],
                    )
                    .await?;
                rows.iter().map(|r| from_db(r.get(0))).collect::<Result<Vec<u64>, _>>()
            })
            .await?;
        let lost: Vec<(u64, i64)> = {
            let mut state = self.lock();
            state.renewed = Some(started);
            // Only what was asked for and is still held at the same epoch (a take may have
            // run meanwhile).
            let lost: Vec<(u64, i64)> = users
                .iter()
                .zip(&epochs)
                .filter_map(|(&u, &e)| Some((from_db(u).ok()?, e)))
                .filter(|(u, e)| !renewed.contains(u) && state.mine.get(u) == Some(e))
                .collect();
            for (user_id, _) in &lost {
                state.mine.remove(user_id);
            }
            lost
        };
        for (user_id, epoch) in lost {
            self.lost(user_id, epoch);
        }
        self.set_gauge();
        Ok(())
    }

    /// After a failed round: leases not renewed for a whole TTL may have been taken by now, so
    /// this node stops counting on them.
    fn drop_stale(&self) {
        let lost: Vec<(u64, i64)> = {
            let mut state = self.lock();
            if state.renewed.is_some_and(|at| at.elapsed() < LEASE_TTL) {
                return;
            }
            std::mem::take(&mut state.mine).into_iter().collect()
        };
        for (user_id, epoch) in lost {
            self.lost(user_id, epoch);
        }
        self.set_gauge();
    }

    /// Gives up every lease this node holds (graceful shutdown): each expires now, its epoch
    /// unchanged, so the other nodes take the users at their next round instead of waiting for
    /// the TTL. This node takes nothing afterwards.
    ///
    /// # Errors
    /// Postgres failed or did not answer in time: the leases then expire by themselves.
    pub async fn release_all(&self) -> Result<usize, RecordError> {
        let mine = {
            let mut state = self.lock();
            state.stopped = true;
            std::mem::take(&mut state.mine)
        };
        for (&user_id, &epoch) in &mine {
            self.lost(user_id, epoch);
        }
        self.set_gauge();
        let (users, epochs): (Vec<i64>, Vec<i64>) =
            mine.iter().filter_map(|(&u, &e)| Some((to_db(u).ok()?, e))).unzip();
        let record = &self.0.record;
        record
            .timed("leases.release", async {
                let client = record.client().await?;
                let released = client
                    .execute(
                        "UPDATE keel_user_leases l SET expires_at = clock_timestamp()
                         FROM unnest($1::bigint[], $2::bigint[]) AS m(user_id, epoch)
                         WHERE l.user_id = m.user_id AND l.epoch = m.epoch AND l.holder = $3",
                        &[&users, &epochs, &self.0.node_id],
                    )
                    .await?;
                // Gone from the live nodes at once, so nobody hands this node a user.
                client
                    .execute(
                        "UPDATE keel_nodes SET heartbeat_at = clock_timestamp() - make_interval(secs => $2)
                         WHERE node_id = $1",
                        &[&self.0.node_id, &LEASE_TTL.as_secs_f64()],
                    )
                    .await?;
                Ok(usize::try_from(released).unwrap_or(usize::MAX))
            })
            .await
    }

    fn lost(&self, user_id: u64, epoch: i64) {
        metrics::counter!("keel_cluster_user_lease_losses_total").increment(1);
        tracing::info!(user_id, epoch, "user lease lost");
        let _ = self.0.changes.send(Ownership::Lost(self.fence(user_id, epoch)));
    }

    fn fence(&self, user_id: u64, epoch: i64) -> Fence {
        Fence { user_id, node_id: self.0.node_id.clone(), epoch }
    }

    fn set_gauge(&self) {
        let owned = self.lock().mine.len();
        metrics::gauge!("keel_cluster_users_owned").set(owned as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod tests;
