//! The runtime: the store and the whole supervisor tree, built in one place from a
//! [`RuntimeConfig`], and stopped in one place.
//!
//! ```text
//! root ("root")
//! ├── vault          the only holder of plaintext secrets
//! ├── feeds          one FeedActor per enabled venue (a supervisor of its own)
//! ├── bots           BotSupervisor, one BotActor per running bot
//! ├── notifier       delivers owners' notifications from the outbox (sled, or Postgres)
//! └── pg_sink        only when a Postgres sink is configured; last to start, first to stop
//! ```
//!
//! Beside the tree: the session directory (users' live connections), the market recorder
//! thread, and the backtest worker pool. The binary turns its settings into a `RuntimeConfig`,
//! calls [`Runtime::start`], serves HTTP against the handles in [`Runtime`], and calls
//! [`Runtime::shutdown`] on the way out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use keel_core::market::VenueId;
use keel_venues::market::MarketConnector;
use keel_venues::routing::OrderRouter;
use rust_decimal::Decimal;

use crate::backtest::jobs::{Jobs, JobsConfig};
use crate::bot::pg::PgBotRepo;
use crate::bot::{BotRepo, BotsAddress, BotsConfig, BotsSpec, BotsView, DiskSpace, LiveVenues};
use crate::feed::{FeedAddress, FeedConfig, FeedSpec, ReplayConfig};
use crate::mailbox::{AskError, ask};
use crate::record::Recorder;
use crate::session::SessionDirectory;
use crate::sink::{Outbox, PgSinkConfig, PgSinkSpec, SinkHealth};
use crate::store::disk::DISK_CHECK_EVERY;
use crate::store::retention::{self, RetentionConfig};
use crate::store::stats::{self, STATS_EVERY};
use crate::store::{Store, StoreConfig, StoreError, WeakStore};
use crate::strategies::Modules;
use crate::supervisor::{
    ChildSpec, RestartPolicy, Shutdown, ShutdownReport, Supervisor, SupervisorSpec,
};
use crate::vault::{KeyRing, VaultAddress, VaultSpec};

/// Everything the runtime is built from. The binary fills it from its settings; nothing here
/// reads configuration files or the environment.
#[derive(Debug)]
pub struct RuntimeConfig {
    /// Where and how the store is opened.
    pub store: StoreConfig,
    /// The restart budget of every supervised child.
    pub policy: RestartPolicy,
    /// Mailbox capacities.
    pub mailboxes: Mailboxes,
    /// The vault's master keys (current and, during rotation, previous).
    pub key_ring: KeyRing,
    /// Most exchange credentials one user may store.
    pub max_credentials_per_user: usize,
    /// The market-data connector of every enabled venue (from the venue registry).
    pub markets: Vec<Arc<dyn MarketConnector>>,
    /// Cluster mode: the cluster this node joins (market data shared through NATS). `None`
    /// runs the node on its own.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The order router of every enabled venue that takes live orders.
    pub routers: BTreeMap<VenueId, Arc<dyn OrderRouter>>,
    /// How feeds keep and wait for market data.
    pub feeds: FeedTiming,
    /// A recording to replay instead of the `sim` venue's random walk.
    pub sim_replay: Option<ReplayConfig>,
    /// Recording of market data to daily files, when on.
    pub record: Option<RecordConfig>,
    /// How bots run.
    pub bots: BotLimits,
    /// The Postgres sink, when configured.
    pub sink: Option<PgSinkConfig>,
    /// Owners' notifications.
    pub notifications: crate::notify::NotifyConfig,
    /// The backtest worker pool.
    pub backtests: JobsConfig,
    /// How long history is kept.
    pub retention: RetentionConfig,
    /// The caps owners' WebAssembly strategy modules run under.
    pub wasm: keel_wasm::WasmConfig,
    /// Cluster mode with `postgres_url`: bots live in Postgres and run on the node holding their
    /// owner's lease (`None`: the node's own store only).
    pub bots_in_postgres: Option<crate::bot::supervisor::PgBots>,
}

/// Mailbox capacities of the tree's actors.
#[derive(Debug, Clone, Copy)]
pub struct Mailboxes {
    /// The root and feeds supervisors.
    pub supervisor: usize,
    /// The bot supervisor.
    pub bot_supervisor: usize,
    /// Each bot.
    pub bot: usize,
    /// Each feed.
    pub feed: usize,
    /// The vault.
    pub vault: usize,
    /// Each user's session.
    pub session: usize,
}

/// How feeds keep and wait for market data.
#[derive(Debug, Clone, Copy)]
pub struct FeedTiming {
    /// How long a symbol stays tracked after the last market request.
    pub warm_for: Duration,
    /// How long a market request waits for the first data.
    pub first_data_wait: Duration,
}

/// Where market data is recorded.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// The directory of the daily files.
    pub dir: PathBuf,
    /// Events that may wait for the writer thread; more are dropped and counted.
    pub queue: usize,
}

/// How bots run.
#[derive(Debug, Clone, Copy)]
pub struct BotLimits {
    /// Arbiter threads bots are spread over (at least 1).
    pub arbiters: usize,
    /// Most bots one user may define.
    pub max_per_user: usize,
    /// Paper slippage when there is no quote, in basis points.
    pub paper_slippage_bps: Decimal,
    /// Most exposure (quote) one user's bots may hold together; `None` for no limit.
    pub max_user_exposure: Option<Decimal>,
    /// Highest leverage any bot may be given, whatever its owner allows.
    pub max_leverage: u32,
    /// The circuit breaker of every venue account.
    pub breaker: crate::breaker::BreakerPolicy,
    /// Points kept per indicator series of each bot.
    pub indicator_points: usize,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store cannot be opened, migrated or read.
    #[error("opening the store at {path}")]
    Store {
        /// The store's directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The market recorder's directory cannot be used.
    #[error("starting the recorder in {dir}")]
    Recorder {
        /// The recording directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The backtest worker threads cannot be started.
    #[error("starting the backtest workers")]
    Backtests(#[source] std::io::Error),
    /// Cluster mode is on and the cluster cannot be joined.
    #[error("joining the cluster")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A blocking start-up task was lost (it panicked).
    #[error("a start-up task failed: {0}")]
    Task(String),
}

/// The running tree and the handles the façade reaches it by.
#[derive(Debug)]
pub struct Runtime {
    /// The database.
    pub store: Store,
    /// The root of the supervisor tree.
    pub root: Addr<Supervisor>,
    /// Where the (restartable) vault currently is.
    pub vault: VaultAddress,
    /// Each enabled venue's feed.
    pub feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
    /// Where the (restartable) bot supervisor currently is.
    pub bots: BotsAddress,
    /// Each owner's bot list, as the bot supervisor publishes it (read without a message).
    pub bots_view: BotsView,
    /// Users' sessions (live connections), which bots publish their events to.
    pub sessions: SessionDirectory,
    /// This node's cluster connection, in cluster mode.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The Postgres sink's state, when it is configured.
    pub sink: Option<SinkHealth>,
    /// Owners' notification channels and deliveries.
    pub notifications: crate::notify::Notifications,
    /// Backtest jobs and their worker pool.
    pub backtests: Jobs,
    /// Owners' strategy modules and the WebAssembly host.
    pub modules: Modules,
    /// Owners' own limits over all of their bots.
    pub user_limits: crate::bot::UserLimits,
    /// Each live venue's router and the accounts with a running live bot (their user data
    /// streams and balances).
    pub live: crate::account::LiveAccounts,
}

impl Runtime {
    /// Opens the store (on a blocking thread: sled reads its log) and starts the tree.
    ///
    /// Must run inside an actix `System`.
    ///
    /// # Errors
    /// The store cannot be opened or migrated, the recorder or the backtest workers cannot
    /// start, or the outbox cannot be read.
    pub async fn start(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let RuntimeConfig {
            store: store_config,
            policy,
            mailboxes,
            key_ring,
            max_credentials_per_user,
            markets,
            cluster,
            routers,
            feeds: timing,
            sim_replay,
            record,
            bots: limits,
            sink,
            notifications: notify_config,
            backtests,
            retention,
            wasm,
            bots_in_postgres,
        } = config;
        let path = store_config.path.clone();
        let store_error = |source| RuntimeError::Store { path: path.clone(), source };
        let store = blocking(move || Store::open(&store_config)).await?.map_err(store_error)?;

        let (vault_spec, vault) =
            VaultSpec::new(store.clone(), key_ring, max_credentials_per_user, mailboxes.vault);
        // With `postgres_url`: credentials are recorded in Postgres, the tree is the working copy.
        let vault_spec = vault_spec.with_record(bots_in_postgres.as_ref().map(|pg| {
            crate::vault::pg::VaultRecord { vault: pg.vault.clone(), leases: pg.leases.clone() }
        }));
        let recorder = match record {
            Some(RecordConfig { dir, queue }) => Some(
                Recorder::start(dir.clone(), queue)
                    .map_err(|source| RuntimeError::Recorder { dir, source })?,
            ),
            None => None,
        };
        let users_in_postgres = cluster.as_ref().is_some_and(|c| c.users_in_postgres);
        let cluster = match cluster {
            // Boxed: the connection set-up is a large future, not worth carrying in start-up's.
            Some(config) => Some(Box::pin(crate::cluster::Cluster::connect(config)).await?),
            None => None,
        };
        if let Some(cluster) = &cluster {
            share_order_budgets(cluster, &routers);
        }
        let feed_configs = markets
            .into_iter()
            .map(|market| FeedConfig {
                // `venues.sim.replay` stands in for the sim venue's simulation only (not for
                // the simulated perpetuals', which add mark prices a recording lacks).
                replay: sim_replay
                    .clone()
                    .filter(|_| market.venue() == keel_core::market::VenueId::Sim),
                market,
                warm_for: timing.warm_for,
                first_data_wait: timing.first_data_wait,
                recorder: recorder.clone(),
                mailbox: mailboxes.feed,
                cluster: cluster.clone(),
            })
            .collect();
        let (feeds_spec, feeds) = feeds(feed_configs, policy, mailboxes.supervisor);
        let feeds = Arc::new(feeds);
        let jobs_store = store.clone();
        let backtests =
            blocking(move || Jobs::open(backtests, jobs_store)).await?.map_err(store_error)?;
        let sessions = SessionDirectory::new(mailboxes.session);
        let modules = Modules::open(&store, wasm).map_err(store_error)?;
        let bots = BotsAddress::default();
        let bots_view = BotsView::default();
        let accounts = crate::account::Accounts::default();
        let book = Arc::new(crate::bot::exposure::ExposureBook::new(limits.max_user_exposure));
        let user_limits = if users_in_postgres {
            crate::bot::UserLimits::on_their_own(&store, book).map_err(store_error)?
        } else {
            let users = crate::identity::Users::new(store.clone()).map_err(store_error)?;
            crate::bot::UserLimits::new(users, book)
        };
        // The bot tables' upkeep (retention, figures) follows them when they are in Postgres.
        let pg_bots = bots_in_postgres.as_ref().map(|pg| pg.repo.clone());
        let bots_config = BotsConfig {
            policy,
            arbiters: limits.arbiters,
            max_bots_per_user: limits.max_per_user,
            paper_slippage_bps: limits.paper_slippage_bps,
            live: LiveVenues {
                vault: vault.clone(),
                routers: routers.clone(),
                breakers: crate::breaker::Breakers::new(limits.breaker),
                accounts: accounts.clone(),
            },
            user_limits: user_limits.clone(),
            max_leverage: limits.max_leverage,
            sessions: sessions.clone(),
            mailbox: mailboxes.bot_supervisor,
            bot_mailbox: mailboxes.bot,
            indicator_points: limits.indicator_points,
            view: bots_view.clone(),
            modules: Some(modules.clone()),
            postgres: bots_in_postgres,
        };
        let sink = postgres_sink(sink, &store).await?.map_err(store_error)?;
        let mut repo = BotRepo::new(&store).map_err(store_error)?;
        if let Some((_, _, outbox)) = &sink {
            repo = repo.with_outbox(outbox.clone());
        }
        let notify_store = store.clone();
        // With Postgres as the record, channels and deliveries are recorded there.
        let notify_record =
            bots_config.postgres.as_ref().map(|pg| crate::notify::pg::NotifyRecord {
                table: crate::notify::pg::PgNotify::new(pg.repo.record().clone()),
                leases: pg.leases.clone(),
            });
        let notifications =
            blocking(move || crate::notify::Notifications::open_in(&notify_store, notify_record))
                .await?
                .map_err(store_error)?;
        repo = repo.with_notifications(notifications.clone());
        let notifier = crate::notify::NotifierSpec::new(
            notifications.clone(),
            notify_config,
            vault.clone(),
            bots.clone(),
        );
        let bots_spec = BotsSpec::new(repo, feeds.clone(), bots_config, bots.clone());
        let mut root = Supervisor::new("root", policy)
            .with_mailbox(mailboxes.supervisor)
            .child(vault_spec)
            .child(feeds_spec)
            .child(bots_spec)
            .child(notifier);
        let mut sink_health = None;
        if let Some((spec, health, _)) = sink {
            // Last to start, first to stop: a batch cut short stays in the outbox.
            root = root.child(spec);
            sink_health = Some(health);
        }
        let root = root.start();
        watch_disk(store.downgrade(), bots.clone());
        publish_stats(store.downgrade(), retention.record_dir.clone(), pg_bots.clone());
        if retention.is_on() {
            sweep_history(store.downgrade(), retention, sink_health.is_some(), pg_bots);
        }
        Ok(Self {
            store,
            root,
            vault,
            feeds,
            bots,
            bots_view,
            sessions,
            cluster,
            sink: sink_health,
            backtests,
            modules,
            user_limits,
            notifications,
            live: crate::account::LiveAccounts { routers, accounts },
        })
    }
}

/// Hands every live router the cluster's order budget, so the new orders of one exchange
/// account stay within the venue's limits across nodes (docs/CLUSTER.md, "Order budgets").
fn share_order_budgets(
    cluster: &crate::cluster::Cluster,
    routers: &BTreeMap<VenueId, Arc<dyn OrderRouter>>,
) {
    for (venue, router) in routers {
        match router.order_budget() {
            Some(slot) => {
                if !slot.set(cluster.order_budget()) {
                    tracing::warn!(%venue, "the router's order budget was already set; kept");
                }
            }
            None => tracing::warn!(%venue, "this router takes no order budget: not shared"),
        }
    }
}

/// Reads the free space every [`DISK_CHECK_EVERY`] and tells the bot supervisor (when it is
/// there) where it stands, so bots pause while the disk is low and resume after.
/// Ends once the application has let the store go.
fn watch_disk(store: WeakStore, bots: BotsAddress) {
    actix::spawn(async move {
        let mut ticks = tokio::time::interval(DISK_CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(disk) = store.upgrade().map(|s| s.disk().clone()) else { return };
            let reading = disk.clone();
            // statvfs is one system call, but on a hung network file system it blocks.
            if tokio::task::spawn_blocking(move || reading.check()).await.is_err() {
                continue;
            }
            if let Some(addr) = bots.get() {
                // Full mailbox: the next reading sends it again.
                let _ = addr.try_send(DiskSpace { low: disk.is_low() });
            }
        }
    });
}

/// How long after start the store's figures first reach `/metrics`.
const FIRST_STATS_AFTER: Duration = Duration::from_secs(5);

/// Publishes the store's figures by kind on `/metrics` every [`STATS_EVERY`], on a blocking
/// thread: the first time from a read of every row, then from the store's tally
/// ([`stats::current`]). With the bots in Postgres, their tables' figures too, awaited on this
/// task (not an actor's thread), as `postgres_`-prefixed kinds ([`stats::POSTGRES_PREFIX`]).
/// Holds the store only while it runs: it ends once the application has let the store go.
fn publish_stats(store: WeakStore, record_dir: Option<PathBuf>, pg: Option<PgBotRepo>) {
    actix::spawn(async move {
        let start = tokio::time::Instant::now() + FIRST_STATS_AFTER;
        let mut ticks = tokio::time::interval_at(start, STATS_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(store) = store.upgrade() else { return };
            let dir = record_dir.clone();
            let done = tokio::task::spawn_blocking(move || {
                stats::current(&store, dir.as_deref(), keel_venues::now_us() / 1000)
            })
            .await;
            match done {
                Ok(Ok(figures)) => stats::publish(&figures),
                Ok(Err(err)) => tracing::warn!(error = %err, "reading the store's figures failed"),
                Err(err) => tracing::warn!(error = %err, "reading the store's figures panicked"),
            }
            if let Some(pg) = &pg {
                match pg.figures(keel_venues::now_us() / 1000).await {
                    Ok(kinds) => stats::publish_kinds(stats::POSTGRES_PREFIX, &kinds),
                    Err(err) => {
                        tracing::warn!(error = %err.detail(), "reading Postgres's figures failed");
                    }
                }
            }
        }
    });
}

/// How long after start the first retention sweep runs: start-up and relaunch go first.
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(60);

/// Runs a retention sweep every `config.every` on a blocking thread, then commits what it
/// removed. With the Postgres sink on, rows it has not copied yet are kept. With the bots in
/// Postgres, the same settings then prune their tables there ([`PgBotRepo::sweep`]: one node
/// at a time, in short batches, awaited on this task).
/// Holds the store only while it sweeps: it ends once the application has let the store go.
fn sweep_history(weak: WeakStore, config: RetentionConfig, sink_on: bool, pg: Option<PgBotRepo>) {
    let config = Arc::new(config);
    actix::spawn(async move {
        let start = tokio::time::Instant::now() + FIRST_SWEEP_AFTER;
        let mut ticks = tokio::time::interval_at(start, config.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(store) = weak.upgrade() else { return };
            let (sweeping, settings) = (store.clone(), config.clone());
            let done = tokio::task::spawn_blocking(move || {
                let floor = if sink_on { retention::sink_floor(&sweeping)? } else { None };
                retention::sweep(&sweeping, &settings, keel_venues::now_us() / 1000, floor)
            })
            .await;
            match done {
                Ok(Ok(report)) => {
                    if let Err(err) = store.commit().await {
                        tracing::warn!(error = %err, "committing a retention sweep failed");
                    } else if !report.removed.is_empty() || report.recordings_removed > 0 {
                        tracing::info!(?report, "retention sweep");
                    }
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "retention sweep failed"),
                Err(err) => tracing::warn!(error = %err, "retention sweep panicked"),
            }
            // Postgres's rows are not the store's: it is let go before they are swept.
            drop(store);
            if let Some(pg) = &pg {
                sweep_postgres(pg, &config).await;
            }
        }
    });
}

/// One retention sweep of the bot tables in Postgres, counted as the sled sweep's rows are
/// (`keel_retention_removed_total{kind}`), under the `postgres_`-prefixed kinds.
async fn sweep_postgres(pg: &PgBotRepo, config: &RetentionConfig) {
    match pg.sweep(config, keel_venues::now_us() / 1000).await {
        Ok(Some(pruned)) => {
            let kinds = [
                (crate::store::trees::ORDERS, pruned.orders),
                (crate::store::trees::FILLS, pruned.fills),
                (crate::store::trees::EVENTS, pruned.events),
            ];
            for (kind, removed) in kinds {
                let kind = format!("{}{kind}", stats::POSTGRES_PREFIX);
                metrics::counter!("keel_retention_removed_total", "kind" => kind)
                    .increment(removed);
            }
            if pruned != Default::default() {
                tracing::info!(?pruned, "retention sweep of Postgres");
            }
        }
        Ok(None) => tracing::debug!("retention sweep of Postgres: another node is sweeping"),
        Err(err) => tracing::warn!(error = %err.detail(), "retention sweep of Postgres failed"),
    }
}

/// Stops the tree under `root`, children in reverse start order, each within what is left of
/// `deadline`.
///
/// # Errors
/// The root supervisor did not answer in time.
pub async fn stop_tree(
    root: &Addr<Supervisor>,
    deadline: Duration,
) -> Result<ShutdownReport, AskError> {
    let answer_within = deadline + Duration::from_millis(200);
    ask(root, Shutdown { deadline }, answer_within, "root supervisor").await
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| RuntimeError::Task(e.to_string()))
}

/// The feeds supervisor with one feed per venue, and where each feed is.
fn feeds(
    configs: Vec<FeedConfig>,
    policy: RestartPolicy,
    mailbox: usize,
) -> (SupervisorSpec, BTreeMap<VenueId, FeedAddress>) {
    let slots: Vec<(FeedConfig, FeedAddress)> =
        configs.into_iter().map(|config| (config, FeedAddress::default())).collect();
    let addresses =
        slots.iter().map(|(config, slot)| (config.market.venue(), slot.clone())).collect();
    let spec = SupervisorSpec::new("feeds", policy, move || {
        slots
            .iter()
            .map(|(config, slot)| {
                Box::new(FeedSpec::new(config.clone(), slot.clone())) as Box<dyn ChildSpec>
            })
            .collect()
    })
    .with_mailbox(mailbox);
    (spec, addresses)
}

/// The Postgres sink's child spec, health and outbox when one is configured. Without one
/// nothing is queued for Postgres; rows left from a time it was on wait for it to be on again.
async fn postgres_sink(
    config: Option<PgSinkConfig>,
    store: &Store,
) -> Result<Result<Option<(PgSinkSpec, SinkHealth, Outbox)>, StoreError>, RuntimeError> {
    let store = store.clone();
    let Some(config) = config else {
        let leftover = match blocking(move || Outbox::holds_rows(&store)).await? {
            Ok(leftover) => leftover,
            Err(err) => return Ok(Err(err)),
        };
        if leftover {
            tracing::warn!(
                "the outbox holds rows from when the Postgres sink was on; \
                they stay until sink.postgres.url is set again"
            );
        }
        return Ok(Ok(None));
    };
    // Counting the backlog walks the outbox once.
    let outbox = match blocking(move || Outbox::open(&store)).await? {
        Ok(outbox) => outbox,
        Err(err) => return Ok(Err(err)),
    };
    tracing::info!(schema = %config.schema, backlog = outbox.backlog(), "Postgres sink on");
    let (spec, health) = PgSinkSpec::new(config, outbox.clone());
    Ok(Ok(Some((spec, health, outbox))))
}
