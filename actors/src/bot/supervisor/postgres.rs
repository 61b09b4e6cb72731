//! Cluster mode with `postgres_url`: the bots of the users whose lease this node holds, kept in
//! Postgres ([`PgBotRepo`]) and run here while the lease is this node's.
//!
//! - **Gained.** The supervisor subscribes to [`UserLeases`]. When this node takes a user's lease
//!   it reads the user's bots from Postgres (definitions, states, open orders), replaces the
//!   node's working copy of them in its own store with what it read, and starts those whose
//!   stored status is active (running or paused), as after a restart: a live bot reconciles its
//!   open orders with the venue, a paper bot resumes them in its engine.
//! - **Lost.** When the lease goes (taken over, expired, released at shutdown) the user's bots
//!   are stopped at once and send nothing more, not even cancels: the new owner runs them now.
//!   Their definitions leave this node's list.
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
use crate::pg::fence::Fence;
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
    /// Journal lines the supervisor wrote for a bot without an actor, and the state after them.
    Journal(BotId, Effects, BotState),
    /// An owner's own limits over all of their bots (`PUT /me/risk`).
    Limits(UserId, UserRiskLimits),
}

/// A write, the fence it is made under, and where its outcome goes.
struct Queued {
    write: PgWrite,
    fence: Fence,
    done: oneshot::Sender<Result<Option<BotRecord>, PgBotError>>,
}

/// The supervisor's Postgres side: the repo, the fences of the users it holds, the writer.
#[derive(Debug)]
pub(super) struct PgSide {
    pub(super) bots: PgBots,
    /// The users whose lease this node holds, with the fence it holds each under.
    pub(super) fences: HashMap<UserId, Fence>,
    /// How many times each user's limits were set here: limits read on taking a user are
    /// applied only if none was set since the read began (else they are read again).
    pub(super) limits_set: HashMap<UserId, u64>,
    /// The users taken but whose bots, credentials and limits are not loaded yet: a change of
    /// their limits waits for the load (`SetUserRisk`).
    pub(super) loading: HashSet<UserId>,
    writer: mpsc::UnboundedSender<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").field("write", &self.write).finish_non_exhaustive()
    }
}

impl PgSide {
    /// Starts the writer task (on the current arbiter).
    pub(super) fn start(bots: PgBots) -> Self {
        let (writer, mut queue) = mpsc::unbounded_channel::<Queued>();
        let repo = bots.repo.clone();
        actix::spawn(async move {
            while let Some(Queued { write, fence, done }) = queue.recv().await {
                let fence = Some(&fence);
                let outcome = match write {
                    PgWrite::Create(record) => repo.create_bot(&record, fence).await.map(Some),
                    PgWrite::Put(record) => repo.put_bot(&record, fence).await.map(|_| None),
                    PgWrite::Delete(id) => repo.delete_bot(id, fence).await.map(|_| None),
                    PgWrite::Journal(id, fx, state) => {
                        repo.persist(id, &fx, &state, fence).await.map(|()| None)
                    }
                    PgWrite::Limits(user, limits) => {
                        repo.put_user_limits(user, &limits, fence).await.map(|()| None)
                    }
                };
                let _ = done.send(outcome);
            }
        });
        Self {
            bots,
            fences: HashMap::new(),
            limits_set: HashMap::new(),
            loading: HashSet::new(),
            writer,
        }
    }

    /// Queues `write` for `user_id`'s bots. Refused with [`BotError::Moving`] when this node does
    /// not hold the user's lease.
    pub(super) fn write(
        &self,
        user_id: UserId,
        write: PgWrite,
    ) -> Result<impl Future<Output = Result<Option<BotRecord>, BotError>> + 'static, BotError> {
        let fence = self.fences.get(&user_id).cloned().ok_or(BotError::Moving)?;
        let (done, outcome) = oneshot::channel();
        self.writer.send(Queued { write, fence, done }).map_err(|_| BotError::Moving)?;
        Ok(async move {
            match outcome.await {
                Ok(Ok(record)) => Ok(record),
                Ok(Err(err)) => Err(BotError::from(err)),
                Err(_) => Err(BotError::Moving),
            }
        })
    }

    /// The link a bot actor of `user_id` writes its flushes through.
    pub(super) fn link(&self, user_id: UserId) -> Option<PgBotLink> {
        let fence = self.fences.get(&user_id)?.clone();
        Some(PgBotLink { repo: self.bots.repo.clone(), fence })
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

/// A user's bots, exchange credentials and own limits as read from Postgres on taking the lease.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct UserBotsLoaded {
    fence: Fence,
    bots: Vec<(BotRecord, BotState, Vec<Order>)>,
    credentials: Vec<CredentialRecord>,
    limits: UserRiskLimits,
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

    /// Reads `fence`'s user's bots, credentials and limits from Postgres, then hands them to
    /// [`UserBotsLoaded`]. Without the credentials and limits no bot starts: a live bot must be
    /// able to sign at once (it reconciles its open orders with the venue), and every bot must
    /// be bound by its owner's limits.
    fn load_user(&mut self, fence: Fence, ctx: &mut Context<Self>) {
        let Some(pg) = &self.pg else { return };
        let (repo, vault) = (pg.bots.repo.clone(), pg.bots.vault.clone());
        let user_id = fence.user_id;
        let seen = (vault.changes(user_id), pg.limits_set.get(&user_id).copied().unwrap_or(0));
        let addr = ctx.address();
        ctx.spawn(
            async move {
                let owner = async {
                    Ok::<_, crate::pg::RecordError>((
                        vault.of_user(user_id).await?,
                        repo.user_limits(user_id).await?,
                    ))
                };
                let (credentials, limits) = match owner.await {
                    Ok(owner) => owner,
                    Err(err) => {
                        tracing::error!(user_id, error = %err, "credentials and limits not loaded");
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
                addr.do_send(UserBotsLoaded { fence, bots: loaded, credentials, limits, seen });
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
        // The user's credentials and limits go with the user: the new owner loads its own.
        self.config.user_limits.forget(user_id);
        let Some(vault) = self.pg.as_ref().map(|pg| pg.bots.vault.clone()) else { return };
        let dropped =
            self.credentials().and_then(|c| vault.change(user_id, || c.drop_user(user_id)));
        if let Err(err) = dropped {
            tracing::error!(user_id, error = %err, "credentials' working copy not dropped");
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
        let UserBotsLoaded { fence, bots, credentials, limits, seen } = loaded;
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
