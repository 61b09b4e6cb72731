//! Building and running the application: store, actor tree, HTTP server, graceful shutdown.
//!
//! `main` and the tests start Keel the same way: [`Application::build`] binds the port (0 picks a
//! free one) and [`Application::run_until_stopped`] serves until SIGTERM, SIGINT or a
//! [`StopHandle`], then shuts down in order.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use keel_actors::bot::{BotRepo, BotSupervisor, BotsAddress, BotsConfig, BotsSpec, LiveVenues};
use keel_actors::feed::{FeedAddress, FeedConfig, FeedSpec};
use keel_actors::identity::{PasswordHasher, Sessions, Users};
use keel_actors::mailbox::ask;
use keel_actors::session::SessionDirectory;
use keel_actors::sink::{Outbox, PgSinkSpec, SinkHealth};
use keel_actors::store::{Store, StoreConfig};
use keel_actors::supervisor::{ChildSpec, RestartPolicy, Shutdown, Supervisor, SupervisorSpec};
use keel_actors::vault::{Vault, VaultAddress, VaultSpec};
use keel_core::market::{Symbol, VenueId};
use tokio::sync::Notify;

use crate::auth::{LoginThrottle, TokenIssuer};
use crate::configuration::Settings;
use crate::http::{self, ApiError, metrics::Recorder};

/// Everything from SIGTERM to exit must fit in this, with margin under the promised 10 s.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(9_500);
/// Share of the budget the actor tree gets to stop.
const ACTOR_STOP_DEADLINE: Duration = Duration::from_secs(2);
/// How long the server waits for a client to send its request head.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often idle login-throttle keys are forgotten.
const THROTTLE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Applies per-connection socket options as actix-web accepts each connection:
/// - a capped kernel send buffer, so a client that stops reading backs up into its own bounded
///   WebSocket queue (where it is seen and cut off) within seconds instead of megabytes later;
/// - on Linux, `TCP_USER_TIMEOUT`, so the kernel drops a connection whose data has waited that
///   long on a peer that neither acknowledges nor reads. A client cut off for not reading still
///   has a socket blocked on its full buffers (its close frame waits behind them); without this
///   that socket, and the HTTP connection holding it, would stay for as long as the peer answers
///   window probes.
fn socket_options(
    send_buffer_bytes: usize,
    user_timeout: Duration,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + Clone + 'static {
    move |connection, _| {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let socket = socket2::SockRef::from(stream);
        if send_buffer_bytes != 0
            && let Err(err) = socket.set_send_buffer_size(send_buffer_bytes)
        {
            tracing::debug!(error = %err, "could not set the connection's send buffer");
        }
        #[cfg(target_os = "linux")]
        if !user_timeout.is_zero()
            && let Err(err) = socket.set_tcp_user_timeout(Some(user_timeout))
        {
            tracing::debug!(error = %err, "could not set the connection's user timeout");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = user_timeout;
    }
}

/// What every handler can reach: shared handles, never mutable state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The root of the supervisor tree.
    pub root: Addr<Supervisor>,
    /// The effective settings.
    pub settings: Arc<Settings>,
    /// Users, sessions, tokens.
    pub identity: Arc<Identity>,
    /// Where the (restartable) vault currently is.
    pub vault: VaultAddress,
    /// Each enabled venue's feed.
    pub feeds: Arc<std::collections::BTreeMap<VenueId, FeedAddress>>,
    /// Where the (restartable) bot supervisor currently is.
    pub bots: BotsAddress,
    /// Users' sessions (live connections), which bots publish their events to.
    pub sessions: SessionDirectory,
    /// WebSocket connection counts and limits.
    pub ws_limits: Arc<crate::ws::Limits>,
    /// Rate limits, the in-flight cap, trusted proxies.
    pub protection: Arc<http::protect::Protection>,
    /// The Postgres sink's state, when it is configured.
    pub sink: Option<SinkHealth>,
    /// Backtest jobs and their worker pool.
    pub backtests: keel_actors::backtest::jobs::Jobs,
}

impl AppState {
    /// The running vault.
    ///
    /// # Errors
    /// 503 while the vault is being restarted.
    pub fn vault(&self) -> Result<Addr<Vault>, ApiError> {
        self.vault
            .get()
            .filter(Addr::connected)
            .ok_or_else(|| ApiError::from(keel_actors::mailbox::AskError::Gone { actor: "vault" }))
    }
}

impl AppState {
    /// The running bot supervisor.
    ///
    /// # Errors
    /// 503 while it is being restarted.
    pub fn bots(&self) -> Result<Addr<BotSupervisor>, ApiError> {
        self.bots
            .get()
            .ok_or_else(|| ApiError::from(keel_actors::mailbox::AskError::Gone { actor: "bots" }))
    }
}

/// Identity services shared by the auth handlers and the `AuthUser` extractor.
#[derive(Debug)]
pub struct Identity {
    /// Signs and verifies access tokens.
    pub tokens: TokenIssuer,
    /// User accounts.
    pub users: Users,
    /// Login sessions and refresh tokens.
    pub sessions: Sessions,
    /// Argon2id off the worker threads.
    pub hasher: PasswordHasher,
    /// Login throttling.
    pub throttle: LoginThrottle,
    /// Session lifetime.
    pub refresh_ttl: Duration,
}

impl Identity {
    fn build(
        settings: &Settings,
        store: &Store,
        jwt_secret: &secrecy::SecretString,
    ) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let concurrency = match auth.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        Ok(Self {
            tokens: TokenIssuer::new(auth, jwt_secret),
            users: Users::new(store.clone())?,
            sessions: Sessions::new(store.clone())?,
            hasher: PasswordHasher::new(concurrency, auth.hash_queue)?,
            throttle: LoginThrottle::new(
                auth.login_attempts_per_minute_per_account,
                auth.login_attempts_per_minute_per_ip,
            ),
            refresh_ttl: Duration::from_secs(auth.refresh_ttl_secs),
        })
    }
}

/// Stops a running [`Application`] as SIGTERM would.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<Notify>);

impl StopHandle {
    /// Starts graceful shutdown.
    pub fn stop(&self) {
        self.0.notify_one();
    }
}

/// A built, bound, not yet serving Keel.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    stop: StopHandle,
    shutdown_timeout: Duration,
    signals: Signals,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the store, starts the actor tree and binds the HTTP listener.
    ///
    /// Must run inside an actix `System` (`actix_web::main`, `actix_web::test`).
    ///
    /// # Errors
    /// The store cannot be opened or migrated, the metrics recorder cannot be installed, or the
    /// address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let recorder = Recorder::install().context("installing the metrics recorder")?;
        let store_config = StoreConfig {
            path: settings.store.path.clone(),
            cache_capacity_bytes: settings.store.cache_capacity_mb * 1024 * 1024,
            background_flush: (settings.store.background_flush_ms > 0)
                .then(|| Duration::from_millis(settings.store.background_flush_ms)),
        };
        let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening the store at {}", settings.store.path.display()))?;

        let secrets = crate::secrets::resolve(&settings)?;
        let identity = Arc::new(Identity::build(&settings, &store, &secrets.jwt_secret)?);
        let throttle = identity.throttle.clone();
        let protection = Arc::new(http::protect::Protection::new(&settings.protection));
        let limiters = protection.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(THROTTLE_PRUNE_INTERVAL);
            loop {
                every.tick().await;
                throttle.prune();
                limiters.prune();
            }
        });

        let policy = RestartPolicy {
            max_restarts: settings.supervisor.max_restarts,
            period: Duration::from_secs(settings.supervisor.period_secs),
        };
        let mailboxes = &settings.mailboxes;
        let (vault_spec, vault) = VaultSpec::new(
            store.clone(),
            secrets.key_ring,
            settings.vault.max_credentials_per_user,
            mailboxes.vault,
        );
        let market_recorder = if settings.record.enabled {
            let dir = settings.record_dir();
            let started = keel_actors::record::Recorder::start(dir.clone(), settings.record.queue);
            Some(started.with_context(|| format!("starting the recorder in {}", dir.display()))?)
        } else {
            None
        };
        let (feeds_spec, feeds) = feeds(&settings, policy, market_recorder)?;
        let backtests = backtest_jobs(&settings).context("starting the backtest workers")?;
        let feeds = Arc::new(feeds);
        let bots = BotsAddress::default();
        let sessions = SessionDirectory::new(mailboxes.session);
        let ws_limits =
            Arc::new(crate::ws::Limits::new(settings.ws.max_connections, settings.ws.max_per_user));
        let bots_config = BotsConfig {
            policy,
            arbiters: match settings.bots.arbiters {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            max_bots_per_user: settings.bots.max_per_user,
            paper_slippage_bps: settings.bots.paper_slippage_bps,
            live: live_venues(&settings, vault.clone())?,
            max_user_exposure: Some(settings.bots.max_user_exposure).filter(|l| !l.is_zero()),
            sessions: sessions.clone(),
            mailbox: mailboxes.bot_supervisor,
            bot_mailbox: mailboxes.bot,
        };
        let sink = postgres_sink(&settings, &store).await?;
        let mut repo = BotRepo::new(&store)?;
        if let Some((_, _, outbox)) = &sink {
            repo = repo.with_outbox(outbox.clone());
        }
        let bots_spec = BotsSpec::new(repo, feeds.clone(), bots_config, bots.clone());
        let mut root = Supervisor::new("root", policy)
            .with_mailbox(mailboxes.supervisor)
            .child(vault_spec)
            .child(feeds_spec)
            .child(bots_spec);
        let mut sink_health = None;
        if let Some((spec, health, _)) = sink {
            // Last to start, first to stop: a batch cut short stays in the outbox.
            root = root.child(spec);
            sink_health = Some(health);
        }
        let root = root.start();

        let address = settings.listen_address()?;
        let listener = TcpListener::bind(address)
            .with_context(|| format!("binding {address} (server.host, server.port)"))?;
        let port = listener.local_addr()?.port();

        let settings = Arc::new(settings);
        let state = AppState {
            store,
            root,
            settings: settings.clone(),
            identity,
            vault,
            feeds,
            bots,
            sessions,
            ws_limits,
            protection,
            sink: sink_health,
            backtests,
        };
        let cors = settings.clone();
        let data = web::Data::new(state.clone());
        let recorder = web::Data::new(recorder);
        let (json, payload, path, query) = http::extractor_configs(settings.server.max_body_bytes);
        let shutdown_timeout = Duration::from_secs(settings.server.shutdown_timeout_secs);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(recorder.clone())
                .app_data(json.clone())
                .app_data(payload.clone())
                .app_data(path.clone())
                .app_data(query.clone())
                .wrap(from_fn(http::protect::middleware))
                .wrap(http::cors(&cors))
                .wrap(from_fn(http::metrics::middleware))
                .wrap(from_fn(http::request::middleware))
                .configure(http::configure)
        })
        .on_connect(socket_options(
            settings.server.socket_send_buffer_bytes,
            Duration::from_secs(settings.server.socket_user_timeout_secs),
        ))
        .disable_signals()
        // Live frames are small and must not wait for Nagle's algorithm (with delayed ACKs, up to
        // 40 ms on Linux): actix-web leaves the OS default (off) unless told.
        .tcp_nodelay(true)
        .shutdown_timeout(shutdown_timeout.as_secs())
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let signals = Signals::listen();
        tracing::info!(%address, port, environment = ?settings.environment,
            store = %settings.store.path.display(), "Keel is listening");
        Ok(Self {
            port,
            server: server.run(),
            state,
            stop: StopHandle::default(),
            shutdown_timeout,
            signals,
        })
    }

    /// The bound port (useful when the configured port was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that triggers graceful shutdown, as SIGTERM does.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until SIGTERM, SIGINT or [`StopHandle::stop`], then stops accepting connections,
    /// drains in-flight requests, stops the actors in reverse start order and flushes the store,
    /// all within 10 s.
    ///
    /// # Errors
    /// The server failed, or the final flush failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self { server, state, stop, shutdown_timeout, mut signals, .. } = self;
        let handle = server.handle();
        let mut server = std::pin::pin!(server);
        let reason = tokio::select! {
            result = &mut server => {
                result.context("the HTTP server stopped")?;
                "the HTTP server stopped"
            }
            reason = signals.recv() => reason,
            () = stop.0.notified() => "stop requested",
        };
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        tracing::info!(reason, "shutting down");

        // 1. Stop accepting, drain in-flight requests (bounded by server.shutdown_timeout_secs).
        // The server future processes the stop command, so it must be polled alongside.
        let drain = futures_util::future::join(handle.stop(true), &mut server);
        if tokio::time::timeout(shutdown_timeout + Duration::from_millis(500), drain).await.is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; dropping them");
        }

        // 2. Stop the actor tree, children in reverse start order.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let actors = ACTOR_STOP_DEADLINE.min(remaining);
        match ask(
            &state.root,
            Shutdown { deadline: actors },
            actors + Duration::from_millis(200),
            "root supervisor",
        )
        .await
        {
            Ok(report) if report.stuck.is_empty() => {
                tracing::info!(stopped = ?report.stopped, "actors stopped");
            }
            Ok(report) => tracing::warn!(stuck = ?report.stuck, "some actors did not stop in time"),
            Err(err) => tracing::warn!(error = %err, "the actor tree did not answer shutdown"),
        }

        // 3. Make everything durable.
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(remaining, state.store.flush())
            .await
            .context("the final store flush did not finish in time")?
            .context("the final store flush failed")?;
        tracing::info!("Keel stopped");
        Ok(())
    }
}

/// The Postgres sink's child spec, health and outbox when `sink.postgres.url` is set. Without
/// it nothing is queued for Postgres; rows left from a time it was on wait for it to be on again.
async fn postgres_sink(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<Option<(PgSinkSpec, SinkHealth, Outbox)>> {
    let store = store.clone();
    let Some(config) = settings.sink.postgres.sink_config() else {
        let leftover = tokio::task::spawn_blocking(move || Outbox::holds_rows(&store))
            .await
            .context("checking the outbox")??;
        if leftover {
            tracing::warn!(
                "the outbox holds rows from when the Postgres sink was on; \
                they stay until sink.postgres.url is set again"
            );
        }
        return Ok(None);
    };
    // Counting the backlog walks the outbox once.
    let outbox = tokio::task::spawn_blocking(move || Outbox::open(&store))
        .await
        .context("opening the outbox")??;
    tracing::info!(schema = %config.schema, backlog = outbox.backlog(), "Postgres sink on");
    let (spec, health) = PgSinkSpec::new(config, outbox.clone());
    Ok(Some((spec, health, outbox)))
}

/// What live bots trade through: the order router of every enabled venue that takes live
/// orders (the venue registry says which).
fn live_venues(settings: &Settings, vault: VaultAddress) -> anyhow::Result<LiveVenues> {
    Ok(LiveVenues { vault, routers: crate::venues::routers(settings)? })
}

/// The backtest worker pool from `[backtests]`.
fn backtest_jobs(settings: &Settings) -> std::io::Result<keel_actors::backtest::jobs::Jobs> {
    let bt = &settings.backtests;
    let workers = match bt.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    keel_actors::backtest::jobs::Jobs::start(keel_actors::backtest::jobs::JobsConfig {
        workers,
        queue: bt.queue,
        max_per_user: bt.max_per_user,
        keep_finished: bt.keep_finished,
    })
}

/// The feeds supervisor with one feed per enabled venue, and where each feed's address is.
fn feeds(
    settings: &Settings,
    policy: RestartPolicy,
    recorder: Option<keel_actors::record::Recorder>,
) -> anyhow::Result<(SupervisorSpec, std::collections::BTreeMap<VenueId, FeedAddress>)> {
    let configs: Vec<FeedConfig> = crate::venues::markets(settings)?
        .into_iter()
        .map(|market| FeedConfig {
            // A replay stands in for a simulation only.
            replay: market.simulator().and_then(|_| sim_replay(&settings.venues.sim)),
            market,
            warm_for: Duration::from_secs(settings.feed.warm_secs),
            first_data_wait: Duration::from_millis(settings.feed.first_data_wait_ms),
            recorder: recorder.clone(),
            mailbox: settings.mailboxes.feed,
        })
        .collect();
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
    .with_mailbox(settings.mailboxes.supervisor);
    Ok((spec, addresses))
}

/// The sim venue's replay, when `venues.sim.replay` names a file (CSV rows play on its first
/// symbol).
fn sim_replay(
    sim: &crate::configuration::SimVenueSettings,
) -> Option<keel_actors::feed::ReplayConfig> {
    if sim.replay.as_os_str().is_empty() {
        return None;
    }
    let symbol = sim.symbols.iter().find_map(|s| Symbol::parse(s))?;
    Some(keel_actors::feed::ReplayConfig {
        path: sim.replay.clone(),
        symbol,
        events_per_sec: sim.replay_events_per_sec,
    })
}

/// SIGTERM and SIGINT, listened for from [`Application::build`] on, so a signal that arrives
/// right after start-up is not lost to the default handler (which would kill the process).
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => {
                    tracing::error!("cannot listen for signals; stop Keel with SIGKILL");
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on SIGTERM or SIGINT, naming which.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        match &mut self.streams {
            Some((term, int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
