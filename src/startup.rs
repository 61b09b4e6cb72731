//! Building and running the application: the runtime (store and actor tree, from
//! `keel_actors::runtime`), the façade's services, the HTTP server, graceful shutdown.
//!
//! `main` and the tests start Keel the same way: [`Application::build`] binds the port (0 picks a
//! free one) and [`Application::run_until_stopped`] serves until SIGTERM, SIGINT or a
//! [`StopHandle`], then shuts down in order.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use keel_actors::runtime::{self, Runtime};
use tokio::sync::Notify;

use crate::configuration::Settings;
use crate::http::{self, metrics::Recorder};
use crate::state::{AppState, Identity};

/// Everything from SIGTERM to exit must fit in this, with margin under the promised 10 s.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(9_500);
/// Share of the budget the actor tree gets to stop.
const ACTOR_STOP_DEADLINE: Duration = Duration::from_secs(2);
/// Share of the budget releasing the user leases gets (they expire by themselves after that).
const LEASE_RELEASE_DEADLINE: Duration = Duration::from_secs(1);
/// How long a connection whose response is sent may take to close before it is dropped.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often idle login-throttle keys are forgotten.
const THROTTLE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Applies per-connection limits and socket options as actix-web accepts each connection:
/// - the per-address connection cap (`protection.max_connections_per_ip`): a connection past it
///   is shut down at once and marked (a request it had already sent may still be read; the
///   protection middleware sees the mark and answers it nothing but a refusal), and one within
///   it holds its slot in the connection's data until the connection is gone;
/// - a capped kernel send buffer, so a client that stops reading backs up into its own bounded
///   WebSocket queue (where it is seen and cut off) within seconds instead of megabytes later;
/// - on Linux, `TCP_USER_TIMEOUT`, so the kernel drops a connection whose data has waited that
///   long on a peer that neither acknowledges nor reads. A client cut off for not reading still
///   has a socket blocked on its full buffers (its close frame waits behind them); without this
///   that socket, and the HTTP connection holding it, would stay for as long as the peer answers
///   window probes.
fn on_connect(
    protection: Arc<http::protect::Protection>,
    send_buffer_bytes: usize,
    user_timeout: Duration,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + Clone + 'static {
    move |connection, extensions| {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let socket = socket2::SockRef::from(stream);
        if let Ok(peer) = stream.peer_addr() {
            match protection.admit_connection(peer.ip()) {
                Ok(Some(slot)) => {
                    extensions.insert(slot);
                }
                Ok(None) => {}
                Err(()) => {
                    metrics::counter!("keel_http_connections_refused_total").increment(1);
                    extensions.insert(http::protect::Protection::refused_marker());
                    if let Err(err) = socket.shutdown(std::net::Shutdown::Both) {
                        tracing::debug!(error = %err, "could not shut a refused connection");
                    }
                    return;
                }
            }
        }
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
    /// The user-lease rounds and the forwarded-request responder, in cluster mode.
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        let secrets = crate::secrets::resolve(&settings)?;
        // Before the runtime: a node that cannot reach its system of record starts nothing.
        let record = match settings.cluster.record_config() {
            Some(config) => Some(
                keel_actors::pg::PgRecord::connect(&config)
                    .await
                    .map_err(|err| anyhow::anyhow!(err.detail()))
                    .context("connecting to the cluster's Postgres (cluster.postgres_url)")?,
            ),
            None => None,
        };
        // In cluster mode with Postgres: the user leases, built before the runtime so that the
        // bot supervisor follows them from its start (their rounds start once the node serves).
        let leases = match &record {
            Some(record) if settings.cluster.enabled => {
                Some(keel_actors::cluster::users::UserLeases::new(
                    record.clone(),
                    settings.cluster.node_id.clone(),
                    settings.cluster.advertise_url.clone(),
                ))
            }
            _ => None,
        };
        // Envelopes in Postgres open only with the cluster's master key: a node with another
        // refuses to start rather than fail every signature of the users it takes.
        if let Some(record) = &record
            && settings.cluster.enabled
        {
            keel_actors::vault::pg::PgVault::new(record.clone())
                .check_key(secrets.key_ring.current())
                .await
                .context("checking the vault master key against the cluster's")?;
        }
        let mut runtime_config = settings.runtime_config(secrets.key_ring)?;
        runtime_config.bots_in_postgres = match (&record, &leases) {
            (Some(record), Some(leases)) => Some(keel_actors::bot::supervisor::PgBots {
                repo: keel_actors::bot::pg::PgBotRepo::new(record.clone()),
                leases: leases.clone(),
                vault: keel_actors::vault::pg::PgVault::new(record.clone()),
            }),
            _ => None,
        };
        let runtime = Runtime::start(runtime_config).await.context("starting the runtime")?;
        let identity = Arc::new(
            Identity::build(&settings, &runtime.store, record.as_ref(), &secrets.jwt_secret)
                .await?,
        );
        // Weak: the task must not keep the store open after the server stops.
        let pruned = Arc::downgrade(&identity);
        let forwarding = leases.is_some();
        let protection = Arc::new(http::protect::Protection::new(&settings.protection, forwarding));
        let limiters = protection.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(THROTTLE_PRUNE_INTERVAL);
            loop {
                every.tick().await;
                let Some(identity) = pruned.upgrade() else { break };
                identity.prune().await;
                limiters.prune();
            }
        });
        let ws_limits = Arc::new(crate::ws::Limits::new(
            settings.ws.max_connections,
            settings.ws.max_per_user,
            settings.ws.max_unauthenticated,
        ));

        let address = settings.listen_address()?;
        let listener = TcpListener::bind(address)
            .with_context(|| format!("binding {address} (server.host, server.port)"))?;
        let local = listener.local_addr()?;
        let port = local.port();
        // In cluster mode with Postgres: user leases, and the requests other nodes forward to
        // this one, served through this listener (`http::forward`).
        let mut tasks = Vec::new();
        let (leases, user_events) = match (leases, &runtime.cluster) {
            (Some(leases), Some(cluster)) => {
                tasks.push(leases.start());
                let ip = match local.ip() {
                    ip if !ip.is_unspecified() => ip,
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                };
                let base = format!("http://{}", std::net::SocketAddr::new(ip, port));
                let responder = http::forward::responder(base)?;
                tasks.push(
                    cluster.serve_rpc(responder).await.context("serving forwarded requests")?,
                );
                // Bot lines go to the other nodes too, for their WebSockets (`ws::relay`).
                let user_events = cluster.user_events(runtime.sessions.clone());
                runtime.sessions.set_remote(Arc::new(user_events.clone()));
                (Some(leases), Some(user_events))
            }
            _ => (None, None),
        };

        let settings = Arc::new(settings);
        let Runtime {
            store,
            root,
            vault,
            feeds,
            bots,
            bots_view,
            sessions,
            sink,
            cluster,
            backtests,
            modules,
            user_limits,
            notifications,
            live,
        } = runtime;
        let state = AppState {
            store,
            root,
            settings: settings.clone(),
            identity,
            vault,
            feeds,
            bots,
            bots_view,
            sessions,
            ws_limits,
            protection,
            sink,
            cluster,
            record,
            leases,
            user_events,
            backtests,
            strategies: modules,
            user_limits,
            notifications,
            live,
        };
        let cors = settings.clone();
        let data = web::Data::new(state.clone());
        let recorder = web::Data::new(recorder);
        let ready_cache = web::Data::new(http::health::ReadyCache::default());
        let access_log = http::access_log::AccessLog::start(&settings.access_log)?;
        let access_log = web::Data::new(access_log);
        let (json, payload, path, query) = http::extractor_configs(settings.server.max_body_bytes);
        let shutdown_timeout = Duration::from_secs(settings.server.shutdown_timeout_secs);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(recorder.clone())
                .app_data(ready_cache.clone())
                .app_data(json.clone())
                .app_data(payload.clone())
                .app_data(path.clone())
                .app_data(query.clone())
                .app_data(access_log.clone())
                .wrap(from_fn(http::forward::middleware))
                .wrap(from_fn(http::protect::middleware))
                .wrap(http::cors(&cors))
                .wrap(from_fn(http::metrics::middleware))
                .wrap(from_fn(http::access_log::middleware))
                .wrap(from_fn(http::request::middleware))
                .configure(http::configure)
        })
        .on_connect(on_connect(
            state.protection.clone(),
            settings.server.socket_send_buffer_bytes,
            Duration::from_secs(settings.server.socket_user_timeout_secs),
        ))
        .disable_signals()
        // Live frames are small and must not wait for Nagle's algorithm (with delayed ACKs, up to
        // 40 ms on Linux): actix-web leaves the OS default (off) unless told.
        .tcp_nodelay(true)
        .shutdown_timeout(shutdown_timeout.as_secs())
        .client_request_timeout(Duration::from_millis(settings.server.header_timeout_ms))
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        .keep_alive(match settings.server.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
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
            tasks,
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
        let Self { server, state, stop, shutdown_timeout, mut signals, tasks, .. } = self;
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

        // 1. WebSocket clients are told the server is going away (1001, behind what is queued
        // for them), so their connections end now instead of holding up the drain until its
        // deadline resets them. Then stop accepting, drain in-flight requests (bounded by
        // server.shutdown_timeout_secs). The server future processes the stop command, so it
        // must be polled alongside.
        state.ws_limits.shut_down();
        let drain = futures_util::future::join(handle.stop(true), &mut server);
        if tokio::time::timeout(shutdown_timeout + Duration::from_millis(500), drain).await.is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; dropping them");
        }

        // 2. Stop the actor tree, children in reverse start order.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let actors = ACTOR_STOP_DEADLINE.min(remaining);
        match runtime::stop_tree(&state.root, actors).await {
            Ok(report) if report.stuck.is_empty() => {
                tracing::info!(stopped = ?report.stopped, "actors stopped");
            }
            Ok(report) => tracing::warn!(stuck = ?report.stuck, "some actors did not stop in time"),
            Err(err) => tracing::warn!(error = %err, "the actor tree did not answer shutdown"),
        }

        // 3. In cluster mode, give up this node's user leases (expired now) so other nodes take
        // its users at their next round instead of after the TTL; forward nothing more here.
        for task in &tasks {
            task.abort();
        }
        if let Some(leases) = &state.leases {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(LEASE_RELEASE_DEADLINE.min(remaining), leases.release_all())
                .await
            {
                Ok(Ok(released)) => tracing::info!(released, "user leases released"),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err.detail(), "user leases not released; they expire");
                }
                Err(_) => tracing::warn!("releasing the user leases took too long; they expire"),
            }
        }

        // 4. Make everything durable.
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(remaining, state.store.flush())
            .await
            .context("the final store flush did not finish in time")?
            .context("the final store flush failed")?;
        tracing::info!("Keel stopped");
        Ok(())
    }
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
