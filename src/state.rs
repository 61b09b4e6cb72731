//! What every handler can reach: [`AppState`], shared handles to the runtime and the façade's
//! own services, never mutable state. Built once by `startup`; handlers and extractors import it
//! from here, so nothing below start-up depends on start-up.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use anyhow::Context as _;
use keel_actors::bot::{BotSupervisor, BotsAddress, BotsView};
use keel_actors::feed::FeedAddress;
use keel_actors::identity::pg::{PgInvites, PgSessions, PgUsers};
use keel_actors::identity::{
    InviteStore, Invites, PasswordHasher, SessionStore, Sessions, UserStore, Users,
};
use keel_actors::pg::PgRecord;
use keel_actors::session::SessionDirectory;
use keel_actors::sink::SinkHealth;
use keel_actors::store::Store;
use keel_actors::supervisor::Supervisor;
use keel_actors::vault::{Vault, VaultAddress};
use keel_core::market::VenueId;

use crate::auth::{LoginThrottle, TokenIssuer};
use crate::configuration::Settings;
use crate::http::{self, ApiError};

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
    /// Each owner's bot list, published by the bot supervisor (`GET /bots` reads it directly).
    pub bots_view: BotsView,
    /// Users' sessions (live connections), which bots publish their events to.
    pub sessions: SessionDirectory,
    /// WebSocket connection counts and limits.
    pub ws_limits: Arc<crate::ws::Limits>,
    /// Rate limits, the in-flight cap, trusted proxies.
    pub protection: Arc<http::protect::Protection>,
    /// The Postgres sink's state, when it is configured.
    pub sink: Option<SinkHealth>,
    /// This node's cluster connection, in cluster mode.
    pub cluster: Option<keel_actors::cluster::Cluster>,
    /// The cluster's Postgres (the system of record), in cluster mode with `postgres_url`.
    pub record: Option<PgRecord>,
    /// This node's user leases (who owns which user), in cluster mode with `postgres_url`.
    pub leases: Option<keel_actors::cluster::users::UserLeases>,
    /// Bot lines relayed between nodes for WebSockets (`{name}.user.{user_id}`), in cluster
    /// mode with `postgres_url`.
    pub user_events: Option<keel_actors::cluster::user_events::UserEvents>,
    /// Backtest jobs and their worker pool.
    pub backtests: keel_actors::backtest::jobs::Jobs,
    /// Owners' strategy modules and the WebAssembly host.
    pub strategies: keel_actors::strategies::Modules,
    /// Owners' own limits over all of their bots (`/me/risk`).
    pub user_limits: keel_actors::bot::UserLimits,
    /// Owners' notification channels and deliveries.
    pub notifications: keel_actors::notify::Notifications,
    /// Live venues' routers and the accounts with a running live bot (balances).
    pub live: keel_actors::account::LiveAccounts,
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
    /// Cluster mode with `postgres_url`: the bot tables, which hold a bot's whole history (this
    /// node's store holds only what happened while it owned the bot's owner). Requests for a
    /// user's bots run on the owner (forwarding), whose flushes are what the watermarks count.
    pub fn bot_history(&self) -> Option<keel_actors::bot::pg::PgBotRepo> {
        self.leases.as_ref()?;
        self.record.clone().map(keel_actors::bot::pg::PgBotRepo::new)
    }

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
    /// User accounts (sled, or the cluster's Postgres).
    pub users: UserStore,
    /// Login sessions and refresh tokens (sled, or the cluster's Postgres).
    pub sessions: SessionStore,
    /// Argon2id off the worker threads.
    pub hasher: PasswordHasher,
    /// Login and registration throttling.
    pub throttle: LoginThrottle,
    /// Registration invites (sled, or the cluster's Postgres).
    pub invites: InviteStore,
    /// Session lifetime.
    pub refresh_ttl: Duration,
}

impl Identity {
    /// Forgets what has timed out: throttle keys whose budget refilled, revocations whose
    /// tokens have all expired. Called every minute.
    pub async fn prune(&self) {
        self.throttle.prune();
        if let Err(err) = self.sessions.prune_revocations().await {
            tracing::warn!(error = %err, "pruning the revocation list failed");
        }
    }

    /// The identity services over `store`, or over the cluster's Postgres when `record` is
    /// given, configured from `[auth]`.
    ///
    /// # Errors
    /// The store's trees cannot be opened, the revocation list cannot be read from Postgres,
    /// or the hashing pool cannot start.
    pub async fn build(
        settings: &Settings,
        store: &Store,
        record: Option<&PgRecord>,
        jwt_secret: &secrecy::SecretString,
    ) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let concurrency = match auth.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        let window = Duration::from_secs(auth.access_ttl_secs.saturating_add(auth.leeway_secs));
        let (users, sessions, invites) = match record {
            None => (
                UserStore::Sled(Users::new(store.clone())?),
                SessionStore::Sled(Sessions::new(store.clone())?.with_token_window(window)),
                InviteStore::Sled(Invites::new(store)?),
            ),
            Some(record) => {
                // Ids in Postgres start afresh: a user of this node's own store would share an
                // id (and so bots and credentials) with a different user there.
                if !Users::new(store.clone())?.is_empty() {
                    anyhow::bail!(
                        "cluster.postgres_url is set but this node's store holds users of its own; \
                         moving them to Postgres is not built yet: start the node on a fresh data \
                         directory (store.path), or unset cluster.postgres_url"
                    );
                }
                (
                    UserStore::Pg(PgUsers::new(record.clone())),
                    SessionStore::Pg(
                        PgSessions::open(record.clone(), window)
                            .await
                            .map_err(|err| anyhow::anyhow!(err.detail()))
                            .context("reading the session revocations from Postgres")?,
                    ),
                    InviteStore::Pg(PgInvites::new(record.clone())),
                )
            }
        };
        Ok(Self {
            tokens: TokenIssuer::new(auth, jwt_secret),
            users,
            sessions,
            hasher: PasswordHasher::new(concurrency, auth.hash_queue)?,
            throttle: LoginThrottle::new(
                auth.login_attempts_per_minute_per_account,
                auth.login_attempts_per_minute_per_ip,
            )
            .with_registrations(auth.registrations_per_hour_per_ip),
            invites,
            refresh_ttl: Duration::from_secs(auth.refresh_ttl_secs),
        })
    }
}
