//! Cluster mode with `postgres_url`: the bots of the users whose lease this node holds, kept in
//! Postgres ([`PgBotRepo`]) and run here while the lease is this node's.
//!
//! - **Gained.** The supervisor subscribes to [`UserLeases`]. When this node takes a user's lease
//!   it reads the user's bots from Postgres (definitions, states, open orders), replaces the
//!   node's working copy of them in its own store with what it read, and starts those whose
//!   stored status is active (running or paused), as after a restart: a live bot reconciles its
//!   open orders with the venue, a paper bot resumes them in its engine.
//!   The user's strategy modules and notification channels are read with them and replace
//!   this node's working copies first, so a wasm bot finds its module.
//! - **Lost.** When the lease goes (taken over, expired, released at shutdown) the user's bots
//!   are stopped at once and send nothing more, not even cancels: the new owner runs them now.
//!   Their definitions leave this node's list, and the working copies of the user's modules and
//!   channels are dropped.
//! - **Writes.** Every definition write (create, edit, status change, delete) and every status
//!   line the supervisor journals goes to Postgres under the user's [`Fence`], in the order the
//!   supervisor made them (one task writes them one after the other), and is answered only
//!   once committed there. A bot actor writes its own flushes ([`PgBotLink`]).
//!
//! The node's own store keeps a working copy of the bots it runs (the engine is rebuilt from it
//! on a crash restart); Postgres is the record every node reads on taking a user.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{BotError, BotSupervisor};
use crate::bot::actor::Abandon;
use crate::bot::pg::{PgBotError, PgBotLink, PgBotRepo};
use crate::cluster::users::{Ownership, UserLeases};
use crate::notify::pg::PgNotify;
use crate::notify::{ChannelRecord, DeliveryRecord, Notifications};
use crate::pg::fence::Fence;
use crate::strategies::ModuleRecord;
use crate::strategies::pg::PgModules;
use crate::supervisor::ExitReason;
use crate::vault::pg::PgVault;
use crate::vault::{CredentialRecord, Credentials, VaultError};
use keel_core::bot::user_risk::UserRiskLimits;
use keel_core::bot::{BotId, BotRecord, UserId};
use keel_core::engine::{BotState, Effects};
use keel_core::trading::Order;

/// Bots in Postgres, and the user leases that say which of them this node runs.
#[derive(Debug, Clone)]
pub struct PgBots {
    /// The bot tables.
    pub repo: PgBotRepo,
    /// This node's user leases.
    pub leases: UserLeases,
    /// The owners' exchange credentials, loaded into the vault's working copy (this node's
    /// `credentials` tree) before a taken user's bots start.
    pub vault: PgVault,
}

/// One write of the supervisor to Postgres.
#[derive(Debug)]
pub(super) enum PgWrite {
    /// A new definition (Postgres gives it its id).
    Create(BotRecord),
    /// A definition as it is now.
    Put(BotRecord),
    /// A definition and every row of its bot.
    Delete(BotId),
    /// Journal lines the supervisor wrote for a bot without an actor, the state after them, and
    /// the notification deliveries they give.
    Journal(BotId, Effects, BotState, Vec<DeliveryRecord>),
    /// An owner's own limits over all of their bots (`PUT /me/risk`).
    Limits(UserId, UserRiskLimits),
}

/// A write, the fence it is made under, and where its outcome goes.
struct Queued {
    write: PgWrite,
    fence: Fence,
    done: oneshot::Sender<Result<Option<BotRecord>, PgBotError>>,
}

/// Writes that may wait for the writer task at once; one more is refused (503, retry) rather
/// than queued. The supervisor's writes are definition changes and status lines, each a
/// request or a bot's exit: at a few milliseconds per commit, 1024 is seconds of backlog, far
/// more than a healthy Postgres ever leaves waiting, and few enough that a stalled Postgres
/// (each write waits up to the call deadline) holds a bounded memory and answers the clients
/// past it at once instead of after minutes in the queue.
pub(super) const WRITE_QUEUE: usize = 1024;

/// The supervisor's Postgres side: the repo, the fences of the users it holds, the writer.
#[derive(Debug)]
pub(super) struct PgSide {
    pub(super) bots: PgBots,
    /// The owners' strategy modules (the record of this node's working copy).
    pub(super) modules: PgModules,
    /// The owners' notification channels.
    pub(super) channels: PgNotify,
    /// The users whose lease this node holds, with the fence it holds each under.
    pub(super) fences: HashMap<UserId, Fence>,
    /// How many times each user's limits were set here: limits read on taking a user are
    /// applied only if none was set since the read began (else they are read again).
    pub(super) limits_set: HashMap<UserId, u64>,
    /// The users taken but whose bots, credentials and limits are not loaded yet: a change of
    /// their limits waits for the load (`SetUserRisk`).
    pub(super) loading: HashSet<UserId>,
    writer: Writer,
}

/// The queue of the task that writes the supervisor's writes one after the other, in order.
#[derive(Debug, Clone)]
struct Writer(mpsc::Sender<Queued>);

impl Writer {
    /// Starts the task (on the current arbiter), with room for `capacity` waiting writes; it
    /// wakes `notify`'s deliverer after a flush that recorded deliveries.
    fn start(repo: PgBotRepo, notify: Option<Notifications>, capacity: usize) -> Self {
        let (writer, mut queue) = mpsc::channel::<Queued>(capacity);
        actix::spawn(async move {
            while let Some(Queued { write, fence, done }) = queue.recv().await {
                let fence = Some(&fence);
                let outcome = match write {
                    PgWrite::Create(record) => repo.create_bot(&record, fence).await.map(Some),
                    PgWrite::Put(record) => repo.put_bot(&record, fence).await.map(|_| None),
                    PgWrite::Delete(id) => repo.delete_bot(id, fence).await.map(|_| None),
                    PgWrite::Journal(id, fx, state, deliveries) => {
                        let calls = std::slice::from_ref(&fx);
                        let written = repo.persist_calls(id, calls, &state, &deliveries, fence);
                        let written = written.await.map(|()| None);
                        if let (Ok(_), false, Some(notify)) =
                            (&written, deliveries.is_empty(), &notify)
                        {
                            notify.wake();
                        }
                        written
                    }
                    PgWrite::Limits(user, limits) => {
                        repo.put_user_limits(user, &limits, fence).await.map(|()| None)
                    }
                };
                let _ = done.send(outcome);
            }
        });
        Self(writer)
    }

    /// Queues `write` under `fence` without waiting (the caller is the supervisor's actor
    /// thread): [`BotError::Record`] (503, retry) when the queue is full, [`BotError::Moving`]
    /// when the task is gone.
    fn queue(
        &self,
        write: PgWrite,
        fence: Fence,
    ) -> Result<oneshot::Receiver<Result<Option<BotRecord>, PgBotError>>, BotError> {
        let (done, outcome) = oneshot::channel();
        match self.0.try_send(Queued { write, fence, done }) {
            Ok(()) => Ok(outcome),
            Err(mpsc::error::TrySendError::Full(queued)) => {
                tracing::warn!(write = ?queued.write, "Postgres write queue full: refused");
                metrics::counter!("keel_pg_write_queue_full_total").increment(1);
                Err(BotError::Record)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BotError::Moving),
        }
    }
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").field("write", &self.write).finish_non_exhaustive()
    }
}

impl PgSide {
    /// Starts the writer task (on the current arbiter).
    pub(super) fn start(bots: PgBots, notify: Option<Notifications>) -> Self {
        let writer = Writer::start(bots.repo.clone(), notify, WRITE_QUEUE);
        let modules = PgModules::new(bots.repo.record().clone());
        let channels = PgNotify::new(bots.repo.record().clone());
        Self {
            bots,
            modules,
            channels,
            fences: HashMap::new(),
            limits_set: HashMap::new(),
            loading: HashSet::new(),
            writer,
        }
    }

    /// Queues `write` for `user_id`'s bots. Refused with [`BotError::Moving`] when this node does
    /// not hold the user's lease, with [`BotError::Record`] when [`WRITE_QUEUE`] writes wait
    /// already.
    pub(super) fn write(
        &self,
        user_id: UserId,
        write: PgWrite,
    ) -> Result<impl Future<Output = Result<Option<BotRecord>, BotError>> + 'static, BotError> {
        let fence = self.fences.get(&user_id).cloned().ok_or(BotError::Moving)?;
        let outcome = self.writer.queue(write, fence)?;
        Ok(async move {
            match outcome.await {
                Ok(Ok(record)) => Ok(record),
                Ok(Err(err)) => Err(BotError::from(err)),
                Err(_) => Err(BotError::Moving),
            }
        })
    }

    /// The link a bot actor of `user_id` writes its flushes through.
    pub(super) fn link(
        &self,
        user_id: UserId,
        notify: Option<crate::notify::Notifications>,
    ) -> Option<PgBotLink> {
        let fence = self.fences.get(&user_id)?.clone();
        Some(PgBotLink { repo: self.bots.repo.clone(), fence, notify })
    }
}

impl From<PgBotError> for BotError {
    fn from(err: PgBotError) -> Self {
        if err.is_fenced() {
            tracing::warn!(error = %err, "bot write fenced");
            BotError::Moving
        } else {
            tracing::error!(error = %err, "bot write to Postgres failed");
            BotError::Record
        }
    }
}

/// What a user has besides bots, as read from Postgres on taking the lease: exchange
/// credentials, own limits, strategy modules with their bytes, notification channels. All are in
/// the working copies before any of the user's bots starts.
type UserData =
    (Vec<CredentialRecord>, UserRiskLimits, Vec<(ModuleRecord, Vec<u8>)>, Vec<ChannelRecord>);

/// A user's bots and [`UserData`] as read from Postgres on taking the lease.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct UserBotsLoaded {
    fence: Fence,
    bots: Vec<(BotRecord, BotState, Vec<Order>)>,
    owned: UserData,
    /// The working copies' change counts when the read began.
    seen: (u64, u64),
}

/// How long after a failed read of a taken user's data it is read again.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

/// Read a taken user's data again (the last read failed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct ReloadUser(Fence);

/// A change of this node's leases, from the subscription.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct LeaseChange(Ownership);

impl BotSupervisor {
    /// Subscribes to the user leases and takes the users this node holds already (a restarted
    /// supervisor).
    pub(super) fn follow_leases(&mut self, ctx: &mut Context<Self>) {
        let Some(pg) = &self.pg else { return };
        let mut changes = pg.bots.leases.subscribe();
        let held = pg.bots.leases.owned();
        let addr = ctx.address();
        ctx.spawn(
            async move {
                for fence in held {
                    addr.do_send(LeaseChange(Ownership::Gained(fence)));
                }
                loop {
                    match changes.recv().await {
                        Ok(change) => addr.do_send(LeaseChange(change)),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::error!(missed, "bot supervisor missed lease changes");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            .into_actor(self),
        );
    }

    /// Reads `fence`'s user's bots and [`UserData`] from Postgres, then hands them to
    /// [`UserBotsLoaded`]. Without the credentials and limits no bot starts: a live bot must be
    /// able to sign at once (it reconciles its open orders with the venue), and every bot must
    /// be bound by its owner's limits.
    fn load_user(&mut self, fence: Fence, ctx: &mut Context<Self>) {
        let Some(pg) = &self.pg else { return };
        let (repo, vault) = (pg.bots.repo.clone(), pg.bots.vault.clone());
        let (modules, channels) = (pg.modules.clone(), pg.channels.clone());
        let user_id = fence.user_id;
        let seen = (vault.changes(user_id), pg.limits_set.get(&user_id).copied().unwrap_or(0));
        let addr = ctx.address();
        ctx.spawn(
            async move {
                let owner = async {
                    Ok::<_, crate::pg::RecordError>((
                        vault.of_user(user_id).await?,
                        repo.user_limits(user_id).await?,
                        modules.of_user(user_id).await?,
                        channels.channels_of(user_id).await?,
                    ))
                };
                let (credentials, limits, modules, channels) = match owner.await {
                    Ok(owner) => owner,
                    Err(err) => {
                        tracing::error!(user_id, error = %err, "the user's data not loaded");
                        actix::clock::sleep(RELOAD_AFTER).await;
                        addr.do_send(ReloadUser(fence));
                        return;
                    }
                };
                let mut loaded = Vec::new();
                let bots = match repo.bots_of(fence.user_id).await {
                    Ok(bots) => bots,
                    Err(err) => {
                        tracing::error!(user_id = fence.user_id, error = %err, "bots not loaded");
                        actix::clock::sleep(RELOAD_AFTER).await;
                        addr.do_send(ReloadUser(fence));
                        return;
                    }
                };
                for record in bots {
                    let read = async {
                        Ok::<_, crate::pg::RecordError>((
                            repo.state(record.id).await?,
                            repo.open_orders(record.id).await?,
                        ))
                    };
                    match read.await {
                        Ok((state, open)) => loaded.push((record, state, open)),
                        Err(err) => {
                            tracing::error!(bot_id = record.id, error = %err, "bot not loaded");
                        }
                    }
                }
                let owned = (credentials, limits, modules, channels);
                addr.do_send(UserBotsLoaded { fence, bots: loaded, owned, seen });
            }
            .into_actor(self),
        );
    }

    /// Stops a user's bots without sending anything more, and forgets them here.
    fn drop_user(&mut self, user_id: UserId) {
        let ids: Vec<BotId> =
            self.bots.values().filter(|b| b.user_id == user_id).map(|b| b.id).collect();
        for bot_id in ids {
            self.relaunch_gave_up(bot_id);
            if let Some(running) = self.running.remove(&bot_id) {
                running.addr.do_send(Abandon);
            }
            self.bots.remove(&bot_id);
            self.restarts.remove(&bot_id);
            self.busy.remove(&bot_id);
            self.indicators.remove(bot_id);
        }
        self.count_running();
        self.config.view.set(user_id, Vec::new());
        // The working copies of the user's modules and channels go too: the new owner loads
        // them from Postgres, and a later return here replaces them.
        if let Some(modules) = &self.config.modules
            && let Err(err) = modules.remove_user(user_id)
        {
            tracing::error!(user_id, error = %err, "strategy modules' working copy not dropped");
        }
        if let Some(notify) = self.repo.notifications()
            && let Err(err) = notify.channels().remove_user(user_id)
        {
            tracing::error!(user_id, error = %err, "notification channels' working copy not dropped");
        }
        // The user's credentials and limits go with the user: the new owner loads its own.
        self.config.user_limits.forget(user_id);
        let Some(vault) = self.pg.as_ref().map(|pg| pg.bots.vault.clone()) else { return };
        let dropped =
            self.credentials().and_then(|c| vault.change(user_id, || c.drop_user(user_id)));
        if let Err(err) = dropped {
            tracing::error!(user_id, error = %err, "credentials' working copy not dropped");
        }
    }

    /// Replaces the working copies of a user's modules and channels with what Postgres holds.
    fn keep_user_data(
        &self,
        user_id: UserId,
        modules: &[(ModuleRecord, Vec<u8>)],
        channels: &[ChannelRecord],
    ) {
        if let Some(working) = &self.config.modules
            && let Err(err) = working.replace_user(user_id, modules)
        {
            tracing::error!(user_id, error = %err, "strategy modules' working copy not stored");
        }
        if let Some(notify) = self.repo.notifications()
            && let Err(err) = notify.channels().replace_user(user_id, channels)
        {
            tracing::error!(user_id, error = %err, "notification channels' working copy not stored");
        }
    }

    /// The vault's working copy of the credentials (the node's `credentials` tree).
    fn credentials(&self) -> Result<Credentials, VaultError> {
        Ok(Credentials::new(self.repo.store().clone())?)
    }
}

impl BotSupervisor {
    /// Whether a bot exited because Postgres refused its flush under its owner's fence: then
    /// this node no longer holds the user's lease, whatever its lease task believes (a stalled
    /// round), and gives the user up as on `Lost`. The bot is not restarted.
    pub(super) fn fenced(&mut self, bot_id: BotId, reason: &ExitReason) -> bool {
        let ExitReason::Crashed(text) = reason else { return false };
        if text != PgBotError::FENCED_REASON {
            return false;
        }
        let Some(user_id) = self.bots.get(&bot_id).map(|b| b.user_id) else { return true };
        tracing::warn!(bot_id, user_id, "bot fenced: giving its owner's bots up");
        if let Some(pg) = &mut self.pg {
            pg.fences.remove(&user_id);
            pg.loading.remove(&user_id);
        }
        self.drop_user(user_id);
        true
    }
}

impl Handler<LeaseChange> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, LeaseChange(change): LeaseChange, ctx: &mut Context<Self>) {
        let Some(pg) = &mut self.pg else { return };
        match change {
            Ownership::Gained(fence) => {
                tracing::info!(user_id = fence.user_id, epoch = fence.epoch, "user's bots taken");
                pg.fences.insert(fence.user_id, fence.clone());
                pg.loading.insert(fence.user_id);
                self.load_user(fence, ctx);
            }
            Ownership::Lost(fence) => {
                // A loss under an older fence than the one held now is stale.
                if pg.fences.get(&fence.user_id).is_some_and(|held| held.epoch > fence.epoch) {
                    return;
                }
                tracing::info!(
                    user_id = fence.user_id,
                    epoch = fence.epoch,
                    "user's bots given up"
                );
                pg.fences.remove(&fence.user_id);
                pg.loading.remove(&fence.user_id);
                self.drop_user(fence.user_id);
            }
        }
    }
}

impl Handler<ReloadUser> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ReloadUser(fence): ReloadUser, ctx: &mut Context<Self>) {
        let current = self.pg.as_ref().and_then(|pg| pg.fences.get(&fence.user_id));
        if current == Some(&fence) && !self.stopping {
            self.load_user(fence, ctx);
        }
    }
}

impl Handler<UserBotsLoaded> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, loaded: UserBotsLoaded, ctx: &mut Context<Self>) {
        let UserBotsLoaded { fence, bots, owned, seen } = loaded;
        let (credentials, limits, modules, channels) = owned;
        let user_id = fence.user_id;
        // Lost (or taken again) while the read was under way: this read is not the user's now.
        let Some(pg) = self.pg.as_ref().filter(|pg| pg.fences.get(&user_id) == Some(&fence)) else {
            return;
        };
        if self.stopping {
            return;
        }
        // Limits set here since the read began: what was read may predate them; read again.
        if pg.limits_set.get(&user_id).copied().unwrap_or(0) != seen.1 {
            return self.load_user(fence, ctx);
        }
        // Before any bot starts: a live bot signs from the vault's working copy at once.
        let vault = pg.bots.vault.clone();
        let working = self
            .credentials()
            .and_then(|c| vault.replace_if_unchanged(&c, user_id, seen.0, &credentials));
        match working {
            Ok(true) => {}
            // An account added or removed since the read began: read again.
            Ok(false) => return self.load_user(fence, ctx),
            Err(err) => {
                tracing::error!(user_id, error = %err, "credentials' working copy not stored");
                ctx.notify_later(ReloadUser(fence), RELOAD_AFTER);
                return;
            }
        }
        if let Err(err) = self.config.user_limits.set(user_id, &limits) {
            tracing::error!(user_id, error = %err, "limits' working copy not stored");
            ctx.notify_later(ReloadUser(fence), RELOAD_AFTER);
            return;
        }
        if let Some(pg) = &mut self.pg {
            pg.loading.remove(&user_id);
        }
        // Before any bot starts: a wasm bot compiles its module from the working copy.
        self.keep_user_data(user_id, &modules, &channels);
        let mut active = Vec::new();
        for (record, state, open) in bots {
            // Created here since the lease came (what was read may predate it): kept as it is.
            if self.bots.contains_key(&record.id) {
                continue;
            }
            if let Err(err) = self.repo.replace_bot(&record, &state, &open) {
                tracing::error!(bot_id = record.id, error = %err, "bot's working copy not stored");
                continue;
            }
            if record.status.is_active() {
                active.push(record.id);
            }
            self.bots.insert(record.id, record);
        }
        self.publish_owner(user_id);
        for bot_id in active {
            if let Err(reason) =
                self.launch(bot_id, Some("its owner's lease came to this node".into()), false, ctx)
            {
                self.mark_failed(bot_id, reason, ctx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::pg::{PgRecord, RecordConfig};
    use crate::sink::PgTls;

    /// A repo on a Postgres that is not there (the pool connects lazily).
    fn nowhere() -> PgBotRepo {
        let url = SecretString::from("postgres://keel@127.0.0.1:1/keel".to_owned());
        PgBotRepo::new(PgRecord::new(&RecordConfig { url, tls: PgTls::Disable }).unwrap())
    }

    fn fence() -> Fence {
        Fence { user_id: 7, node_id: "a".into(), epoch: 1 }
    }

    #[actix_rt::test]
    async fn a_full_write_queue_refuses_at_once_and_takes_writes_again_once_drained() {
        let writer = Writer::start(nowhere(), None, 2);
        // Queued without yielding: the writer task has taken none of them yet.
        let first = writer.queue(PgWrite::Delete(1), fence()).expect("room");
        let second = writer.queue(PgWrite::Delete(2), fence()).expect("room");
        let refused = writer.queue(PgWrite::Delete(3), fence());
        assert!(matches!(refused, Err(BotError::Record)), "{refused:?}");
        // Both queued writes are answered (Postgres is not there: an error, not a hang) ...
        for queued in [first, second] {
            let outcome = queued.await.expect("answered");
            assert!(matches!(outcome, Err(PgBotError::Record(_))), "{outcome:?}");
        }
        // ... and the queue takes writes again.
        let again = writer.queue(PgWrite::Delete(4), fence()).expect("room again");
        assert!(again.await.expect("answered").is_err());
    }
}
