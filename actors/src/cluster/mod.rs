//! Cluster mode: several Keel nodes share one exchange connection per venue and symbol through
//! NATS JetStream, and each exchange account's order budget through NATS KV (docs/CLUSTER.md).
//!
//! [`Cluster::connect`] opens the node's NATS connection, the lease bucket (NATS KV, entries
//! expire after [`LEASE_TTL`]) and the market-data stream (`{name}.md.>`). A feed with a
//! cluster holds or follows each symbol it wants ([`crate::feed`]'s `cluster` module): the
//! holder connects to the exchange and publishes every normalised event; the others read the
//! stream instead of connecting. The order budget ([`budget`]) is what every live router asks
//! before a new order in cluster mode. With Postgres, [`users`] holds the user leases (which node
//! acts for which user), [`rpc`] carries requests forwarded to a user's owner and
//! [`user_events`] relays bots' journal lines to the nodes where their users' WebSockets are. Nothing here
//! blocks an actor thread: every NATS call runs in a spawned future (or in the router's own, for
//! the budget).

pub mod budget;
mod relay;
pub mod rpc;
pub mod user_events;
pub mod users;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
pub use budget::{BudgetConfig, ClusterBudget};
use keel_core::market::{EventKind, Symbol, VenueId};
pub use relay::{Follower, Received, RecentTrades, Relay, Seen, Verdict};

/// How long a lease lives without renewal: a dead holder's symbols are free after this.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often holders renew their leases and the others try to take the free ones.
pub const LEASE_EVERY: Duration = Duration::from_secs(1);
/// How long market events stay in the stream (only new events are read; this bounds storage).
const STREAM_MAX_AGE: Duration = Duration::from_secs(60);
/// The window in which JetStream drops a second message with the same id.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// Header: the revision of the lease the publisher held (changes when the holder changes).
pub(crate) const LEASE_HEADER: &str = "Keel-Lease";
/// Header: the event's number within its symbol and lease, from 1, without holes.
pub(crate) const SEQ_HEADER: &str = "Keel-Seq";

/// How this node joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster (the value of the leases it holds).
    pub node_id: String,
    /// The NATS server, `nats://host:port`.
    pub nats_url: String,
    /// The cluster's name: the prefix of its subjects, stream and bucket.
    pub name: String,
    /// How the exchange accounts' order budgets are shared.
    pub order_budget: BudgetConfig,
    /// Whether the users are in the cluster's Postgres (`cluster.postgres_url`): then owners'
    /// limits are kept in this node's store on their own (`bot::UserLimits::on_their_own`).
    pub users_in_postgres: bool,
}

/// The cluster connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS server could not be reached.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The lease bucket or the market-data stream could not be created or opened.
    #[error("setting up JetStream `{what}`: {message}")]
    JetStream {
        /// The bucket or stream.
        what: String,
        /// The server's or client's error.
        message: String,
    },
}

/// This node's handle on the cluster, cheap to clone (and small to carry across start-up).
#[derive(Clone)]
pub struct Cluster(std::sync::Arc<Inner>);

struct Inner {
    config: ClusterConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    leases: kv::Store,
    stream: stream::Stream,
    budget: std::sync::Arc<ClusterBudget>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("config", &self.0.config).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS and creates (or opens) the lease bucket and the market-data stream.
    ///
    /// # Errors
    /// NATS cannot be reached, or JetStream refuses the bucket or the stream.
    pub async fn connect(config: ClusterConfig) -> Result<Self, ClusterError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("keel-{}", config.node_id))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(config.nats_url.as_str());
        // With `retry_on_initial_connect` the client comes back at once and keeps trying; the
        // first JetStream call below fails (and start-up with it) if the server is not there.
        let client = client
            .await
            .map_err(|source| ClusterError::Connect { url: config.nats_url.clone(), source })?;
        let jetstream = jetstream::new(client.clone());
        let bucket = lease_bucket(&config.name);
        let leases = lease_store(&jetstream, &bucket)
            .await
            .map_err(|message| ClusterError::JetStream { what: bucket, message })?;
        let name = md_stream(&config.name);
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.md.>", config.name)],
                max_age: STREAM_MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .map_err(|err| ClusterError::JetStream { what: name, message: err.to_string() })?;
        let what = budget::bucket(&config.name);
        let budget =
            ClusterBudget::open(client.clone(), &jetstream, &config.name, config.order_budget)
                .await
                .map_err(|message| ClusterError::JetStream { what, message })?;
        let budget = std::sync::Arc::new(budget);
        tracing::info!(node = %config.node_id, cluster = %config.name, url = %config.nats_url, "joined the cluster");
        Ok(Self(std::sync::Arc::new(Inner { config, client, jetstream, leases, stream, budget })))
    }

    /// The exchange accounts' order budget, shared with the cluster's other nodes: what every
    /// live router asks before a new order in cluster mode.
    pub fn order_budget(&self) -> std::sync::Arc<dyn keel_venues::budget::OrderBudget> {
        self.0.budget.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.0.config.node_id
    }

    /// Whether the NATS connection is up now (for `/health/ready`).
    pub fn connected(&self) -> bool {
        let up = self.0.client.connection_state() == async_nats::connection::State::Connected;
        metrics::gauge!("keel_cluster_nats_connected").set(if up { 1.0 } else { 0.0 });
        up
    }

    /// The lease key of a venue's symbol.
    pub(crate) fn lease_key(venue: VenueId, symbol: &Symbol) -> String {
        format!("{}.{}", venue.as_str(), symbol.as_str())
    }

    /// The subject of one event: `{name}.md.{venue}.{symbol}.{kind}`.
    pub(crate) fn subject(&self, venue: VenueId, symbol: &Symbol, kind: &EventKind) -> String {
        format!("{}.{}", self.symbol_subject(venue, symbol), kind_token(kind))
    }

    /// Every subject of a venue's symbol: `{name}.md.{venue}.{symbol}.*`.
    fn symbol_subject(&self, venue: VenueId, symbol: &Symbol) -> String {
        format!("{}.md.{}.{}", self.0.config.name, venue.as_str(), symbol.as_str())
    }

    /// Tries to take the lease of `key` (it must be free). Its revision when taken.
    pub(crate) async fn acquire(self, key: String) -> Option<u64> {
        let value = self.0.config.node_id.clone().into();
        self.0.leases.create(&key, value).await.ok()
    }

    /// Renews the lease of `key` held at `revision`; `None` when another node holds it now (or
    /// it expired and was taken).
    pub(crate) async fn renew(self, key: String, revision: u64) -> Option<u64> {
        let value = self.0.config.node_id.clone().into();
        match self.0.leases.update(&key, value, revision).await {
            Ok(revision) => Some(revision),
            Err(err) => {
                tracing::warn!(%key, error = %err, "market-data lease lost");
                None
            }
        }
    }

    /// Gives up the lease of `key`, held at `revision`, so another node can take it at its next
    /// lease round instead of waiting for it to expire (graceful shutdown, a symbol no longer
    /// wanted). A delete checked against the revision: a lease another node holds by now is
    /// left alone. Whether it was released.
    pub(crate) async fn release(self, key: String, revision: u64) -> bool {
        let leases = &self.0.leases;
        let Err(first) = leases.delete_expect_revision(&key, Some(revision)).await else {
            return true;
        };
        // A renewal sent before this may have moved the revision on: if the entry is still this
        // node's, delete it at its revision (checked again, so a node taking it meanwhile wins).
        let mine = self.0.config.node_id.as_bytes();
        let current = match leases.entry(key.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put && entry.value == mine => {
                entry.revision
            }
            Ok(_) => return false, // gone, or another node's
            Err(err) => {
                tracing::warn!(%key, error = %err, first = %first, "market-data lease not released; it expires");
                return false;
            }
        };
        match leases.delete_expect_revision(&key, Some(current)).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%key, error = %err, "market-data lease not released; it expires");
                false
            }
        }
    }

    /// The relay of one venue: publishes what this node holds, in order.
    pub fn relay(&self, venue: VenueId) -> Relay {
        Relay::start(self.0.jetstream.clone(), venue)
    }

    /// Reads a venue's symbol from the stream (new events only), into `out`, until aborted.
    pub(crate) fn follow(
        &self,
        venue: VenueId,
        symbol: Symbol,
        out: tokio::sync::mpsc::Sender<Received>,
    ) -> Follower {
        let filter = format!("{}.*", self.symbol_subject(venue, &symbol));
        Follower::start(self.0.stream.clone(), filter, symbol, out)
    }
}

/// Creates (or opens) the lease bucket. Its stream is made here as the KV convention lays it
/// out (`KV_{bucket}` over `$KV.{bucket}.>`, one value per key, rollups allowed, deletes
/// denied, direct gets) rather than by the client's bucket creation, which first reads account
/// fields that NATS servers before 2.10 do not send.
async fn lease_store(jetstream: &jetstream::Context, bucket: &str) -> Result<kv::Store, String> {
    kv_bucket(jetstream, bucket, "Keel market-data leases: venue.symbol -> node id", LEASE_TTL)
        .await
}

/// Opens the KV bucket `bucket` (one value per key, in memory, each kept `max_age`), creating
/// its stream by hand when missing: NATS 2.9 lacks fields the client's own bucket creation reads.
pub(super) async fn kv_bucket(
    jetstream: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, String> {
    jetstream
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::Memory,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|err| err.to_string())?;
    jetstream.get_key_value(bucket).await.map_err(|err| err.to_string())
}

/// The bucket of a cluster's leases.
fn lease_bucket(name: &str) -> String {
    format!("{name}_md_leases")
}

/// The stream of a cluster's market data.
fn md_stream(name: &str) -> String {
    format!("{name}_md")
}

/// The last token of an event's subject.
fn kind_token(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Trade { .. } => "trade",
        EventKind::Quote { .. } => "quote",
        EventKind::Candle(_) => "candle",
        EventKind::Depth { .. } => "depth",
        EventKind::Liquidation { .. } => "liquidation",
        EventKind::MarkPrice { .. } => "mark_price",
        EventKind::Gap { .. } => "gap",
    }
}

/// Whether `name` can prefix subjects, a stream and a bucket: letters, digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
