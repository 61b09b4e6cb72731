//! `BotSupervisor`: owns every bot's definition and lifecycle, and supervises the bot actors.
//!
//! All changes to bot definitions go through this one actor, so a start cannot race an edit or a
//! delete. Running bots are spread over a pool of arbiters (threads), so one slow or panicking bot
//! never stalls another. A bot actor that dies is restarted from the store; past the restart budget
//! the bot is marked `failed` with the reason, and its owner sees it.
//!
//! The supervisor's parts, each in its own file:
//! - [`messages`]: what the API asks of it;
//! - `definitions`: creating, editing, deleting and reading bot definitions;
//! - `control`: start, stop, pause and resume, owners' trading commands, the kill switch;
//! - `lifecycle`: launching bot actors, restarting them within their [`RestartWindow`], and
//!   marking them failed;
//! - `relaunch`: bringing back the bots that were running before a stop, for readiness;
//! - `storage`: pausing bots while the disk guard reports low space, resuming them after.
//! - `owner`: removing every bot of an account being deleted.
//! - `user_risk`: an owner's limits over all their bots, and the leverage a start must fit under.
//! - [`modules`]: deleting a strategy module no bot of its owner runs.
//!
//! After every change to a definition the owner's list is republished to the [`BotsView`]
//! (`BotsConfig::view`), which the API lists bots from without asking this actor.

mod cancel_chase;
mod control;
mod definitions;
mod lifecycle;
pub mod messages;
pub mod modules;
mod owner;
pub mod postgres;
mod relaunch;
mod storage;
mod user_risk;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

pub(crate) use self::lifecycle::engine_for;
pub use self::messages::{
    ControlBot, CreateBot, DeleteBot, ForBot, GetBot, GetIndicators, GetLiveBot, KillReport,
    KillSwitch, ListBots, OpenOrderLeft, RemoveUserBots, RemovedBots, SetUserRisk, UpdateBot,
};
pub use self::postgres::PgBots;
use self::relaunch::Relaunch;
pub use self::relaunch::{GetRelaunch, RelaunchReport};
pub use self::storage::{DISK_LOW_REASON, DiskSpace};
use super::actor::{BotActor, TradeError};
use super::indicators::IndicatorBook;
use super::repo::BotRepo;
use super::view::BotsView;
use crate::feed::FeedAddress;
use crate::mailbox::AskError;
use crate::store::StoreError;
use crate::supervisor::{
    AddressSlot, ChildHandle, ChildSpec, Lifeline, RestartPolicy, RestartWindow, StartError,
};
use keel_core::bot::{BotId, BotRecord, UserId};
use keel_core::market::VenueId;

/// How long the supervisor waits for a bot to answer a forwarded command.
const BOT_DEADLINE: Duration = Duration::from_secs(5);
/// How long the supervisor waits for a bot to carry out its owner's stop. Longer than a request
/// may take: the stop waits in the bot's mailbox behind market data (`mailboxes.bot`), which on a
/// starved machine takes longer than a request's 5 s. The bot stays busy meanwhile (another
/// change answers 409), so a client whose request timed out (504) retries and finds it stopped.
/// Giving up sooner would let a retry record the stop from the supervisor while the bot is still
/// journaling: two writers of one journal, whose lines could reach clients out of order.
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// How long shutdown waits for bots to save their state.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the bot supervisor's current address is published.
pub type BotsAddress = AddressSlot<BotSupervisor>;

/// Why a bot request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BotError {
    /// No such bot for this user (another user's bot is "not found" too).
    #[error("no bot {0} for this user")]
    NotFound(BotId),
    /// The bot's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A per-user limit was reached.
    #[error("{0}")]
    Limit(String),
    /// The request breaks a rule a field names (a leverage above its owner's limit at start).
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<keel_core::validation::FieldError>),
    /// The bot's command failed.
    #[error(transparent)]
    Trade(#[from] TradeError),
    /// The bot actor did not answer.
    #[error(transparent)]
    Unavailable(#[from] AskError),
    /// Storage failed; nothing changed.
    #[error("storage failed")]
    Store,
    /// Cluster mode with `postgres_url`: this node does not hold (or no longer holds) the
    /// owner's lease, so it may not change the owner's bots; retry (the request goes to the
    /// new owner).
    #[error("ownership is moving, retry")]
    Moving,
    /// Cluster mode with `postgres_url`: Postgres failed or did not answer in time.
    #[error("the system of record did not answer")]
    Record,
    /// The venue refused what a start needs (a derivatives bot's leverage or margin type), or
    /// could not be asked (`refused` false: retry later).
    #[error("{message}")]
    Venue {
        /// The venue answered no (rather than not answering).
        refused: bool,
        /// What it said.
        message: String,
    },
}

impl From<StoreError> for BotError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "bot storage failed");
        BotError::Store
    }
}

/// Settings of the bot supervisor.
#[derive(Debug, Clone)]
pub struct BotsConfig {
    /// Restart budget per bot.
    pub policy: RestartPolicy,
    /// Arbiter threads bots are spread over.
    pub arbiters: usize,
    /// Most bots one user may define.
    pub max_bots_per_user: usize,
    /// Paper slippage when there is no quote, in basis points.
    pub paper_slippage_bps: rust_decimal::Decimal,
    /// What live bots trade through.
    pub live: LiveVenues,
    /// Owners' own limits, and the exposure book (with `bots.max_user_exposure`) every bot
    /// publishes to.
    pub user_limits: super::user_limits::UserLimits,
    /// The operator's leverage ceiling for every bot (`bots.max_leverage`).
    pub max_leverage: u32,
    /// Where users' live connections are, for bot events.
    pub sessions: crate::session::SessionDirectory,
    /// Capacity of the supervisor's own mailbox: every bot request from the API passes it.
    pub mailbox: usize,
    /// Capacity of each bot's mailbox (market data and commands share it).
    pub bot_mailbox: usize,
    /// Points kept per indicator series.
    pub indicator_points: usize,
    /// Where each owner's bot list is published for the API.
    pub view: BotsView,
    /// Owners' strategy modules and the WebAssembly host wasm bots run on (none: no wasm bots).
    pub modules: Option<crate::strategies::Modules>,
    /// Cluster mode with `postgres_url`: bots live in Postgres and run on the node holding
    /// their owner's lease ([`postgres`]); `None`: the node's own store only.
    pub postgres: Option<PgBots>,
}

/// The venues live bots can trade on, and the vault that signs for them.
#[derive(Debug, Clone, Default)]
pub struct LiveVenues {
    /// The vault.
    pub vault: crate::vault::VaultAddress,
    /// One order router per venue that takes live orders (from the venue registry).
    pub routers: BTreeMap<VenueId, Arc<dyn keel_venues::routing::OrderRouter>>,
    /// The circuit breaker of each venue account.
    pub breakers: crate::breaker::Breakers,
    /// Each venue account's user data stream and balances.
    pub accounts: crate::account::Accounts,
}

#[derive(Debug)]
struct RunningBot {
    addr: Addr<BotActor>,
    generation: u64,
}

/// The bot supervisor.
pub struct BotSupervisor {
    repo: BotRepo,
    feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
    config: BotsConfig,
    bots: BTreeMap<BotId, BotRecord>,
    running: HashMap<BotId, RunningBot>,
    /// Each bot's restart budget; forgotten when the bot is started by hand or deleted.
    restarts: HashMap<BotId, RestartWindow>,
    /// Bots with a lifecycle change in flight; another change meanwhile is a conflict.
    busy: HashMap<BotId, ()>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    generation: u64,
    stopping: bool,
    /// Every bot's indicator series.
    indicators: IndicatorBook,
    /// Ties this supervisor to the root supervisor.
    lifeline: Option<Lifeline>,
    /// The bots that were running before the stop and are not back yet.
    relaunch: Relaunch,
    /// Users whose account is being deleted: no new bots, no starts.
    deleting: std::collections::HashSet<UserId>,
    /// Bots in Postgres (set as the actor starts, from `BotsConfig::postgres`).
    pg: Option<postgres::PgSide>,
}

impl std::fmt::Debug for BotSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotSupervisor")
            .field("bots", &self.bots.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl BotSupervisor {
    /// Loads every bot definition.
    ///
    /// # Errors
    /// The store could not be read.
    pub fn new(
        repo: BotRepo,
        feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
        config: BotsConfig,
    ) -> Result<Self, StoreError> {
        let mut bots: BTreeMap<BotId, BotRecord> =
            repo.all_bots()?.into_iter().map(|b| (b.id, b)).collect();
        if config.postgres.is_some() {
            // The working copies of an earlier run: the bots of the users this node takes are
            // read again from Postgres.
            for bot_id in std::mem::take(&mut bots).into_keys() {
                repo.delete_bot(bot_id)?;
            }
            // So are their strategy modules and notification channels.
            if let Some(modules) = &config.modules {
                modules.clear()?;
            }
            if let Some(notify) = repo.notifications() {
                notify.channels().clear()?;
            }
        }
        let mut owners: HashMap<UserId, Vec<BotRecord>> = HashMap::new();
        for bot in bots.values() {
            owners.entry(bot.user_id).or_default().push(bot.clone());
        }
        config.view.retain(|user| owners.contains_key(&user));
        for (user, records) in owners {
            config.view.set(user, records);
        }
        Ok(Self {
            indicators: IndicatorBook::new(config.indicator_points),
            repo,
            feeds,
            config,
            bots,
            running: HashMap::new(),
            restarts: HashMap::new(),
            busy: HashMap::new(),
            arbiters: Vec::new(),
            next_arbiter: 0,
            generation: 0,
            stopping: false,
            lifeline: None,
            relaunch: Relaunch::default(),
            deleting: std::collections::HashSet::new(),
            pg: None,
        })
    }

    /// Republishes one owner's list to the [`BotsView`].
    fn publish_owner(&self, user_id: UserId) {
        let records = self.bots.values().filter(|b| b.user_id == user_id).cloned().collect();
        self.config.view.set(user_id, records);
    }

    /// Refuses a change for a user whose account is being deleted.
    fn not_deleting(&self, user_id: UserId) -> Result<(), BotError> {
        if self.deleting.contains(&user_id) {
            return Err(BotError::Conflict("the account is being deleted".into()));
        }
        Ok(())
    }

    fn owned(&self, user_id: UserId, bot_id: BotId) -> Result<&BotRecord, BotError> {
        // With bots in Postgres, only the holder of the user's lease answers for their bots.
        if self.pg.as_ref().is_some_and(|pg| !pg.fences.contains_key(&user_id)) {
            return Err(BotError::Moving);
        }
        self.bots.get(&bot_id).filter(|b| b.user_id == user_id).ok_or(BotError::NotFound(bot_id))
    }

    fn not_busy(&self, bot_id: BotId) -> Result<(), BotError> {
        if self.busy.contains_key(&bot_id) {
            return Err(BotError::Conflict(format!(
                "bot {bot_id} has a change in progress; retry"
            )));
        }
        Ok(())
    }

    /// Saves a definition and answers once it is durable.
    fn save_then<R: 'static>(
        &mut self,
        record: BotRecord,
        ctx: &mut Context<Self>,
        reply: impl FnOnce(Result<BotRecord, BotError>) -> R + 'static,
    ) {
        let pg = match &self.pg {
            Some(pg) => match pg.write(record.user_id, postgres::PgWrite::Put(record.clone())) {
                Ok(write) => Some(write),
                Err(err) => {
                    reply(Err(err));
                    return;
                }
            },
            None => None,
        };
        if let Err(err) = self.repo.put_bot(&record) {
            reply(Err(err.into()));
            return;
        }
        let owner = record.user_id;
        self.bots.insert(record.id, record.clone());
        self.publish_owner(owner);
        let store = self.repo.store().clone();
        let written = async move {
            store.commit().await?;
            if let Some(write) = pg {
                write.await?;
            }
            Ok::<(), BotError>(())
        };
        ctx.spawn(written.into_actor(self).map(move |done, _, _| {
            reply(done.map(|()| record));
        }));
    }
}

impl BotSupervisor {
    /// Publishes `keel_bots_running`: bot actors alive now (running or paused).
    fn count_running(&self) {
        metrics::gauge!("keel_bots_running").set(self.running.len() as f64);
    }
}

fn now_ms() -> u64 {
    keel_venues::now_us() / 1000
}

/// Starts (and restarts) the bot supervisor under the root supervisor.
#[derive(Debug)]
pub struct BotsSpec {
    repo: BotRepo,
    feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
    config: BotsConfig,
    address: BotsAddress,
}

impl BotsSpec {
    /// A spec publishing the supervisor's address to `address`.
    pub fn new(
        repo: BotRepo,
        feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
        config: BotsConfig,
        address: BotsAddress,
    ) -> Self {
        Self { repo, feeds, config, address }
    }
}

impl ChildSpec for BotsSpec {
    fn name(&self) -> &str {
        "bots"
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let mut supervisor =
            BotSupervisor::new(self.repo.clone(), self.feeds.clone(), self.config.clone())
                .map_err(|e| StartError(format!("bots do not load: {e}")))?;
        supervisor.lifeline = Some(lifeline);
        let addr = supervisor.start();
        self.address.set(addr.clone());
        Ok(Box::new(addr))
    }
}
