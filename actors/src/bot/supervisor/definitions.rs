//! Bot definitions: create, edit, delete and read them. An edit or a delete is refused while a
//! bot runs or has a lifecycle change in flight, and answered only once durable.

use actix::prelude::*;

use super::messages::{CreateBot, DeleteBot, GetBot, ListBots, UpdateBot};
use super::postgres::PgWrite;
use super::{BotError, BotSupervisor};
use crate::mailbox::Ask;
use keel_core::bot::{BotRecord, BotStatus};

impl Handler<Ask<CreateBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<CreateBot>, ctx: &mut Context<Self>) {
        let (CreateBot(mut record), replier) = ask.into_parts();
        if let Err(err) = self.not_deleting(record.user_id) {
            return replier.send(Err(err));
        }
        let owned = self.bots.values().filter(|b| b.user_id == record.user_id).count();
        if owned >= self.config.max_bots_per_user {
            return replier.send(Err(BotError::Limit(format!(
                "a user may have at most {} bots",
                self.config.max_bots_per_user
            ))));
        }
        if let Some(module_id) = crate::strategies::Modules::module_of(&record) {
            // Admission found it; it may have been deleted since.
            let gone = self
                .config
                .modules
                .as_ref()
                .is_none_or(|m| m.get(record.user_id, module_id).is_err());
            if gone {
                return replier.send(Err(BotError::Conflict(format!(
                    "strategy module {module_id} was deleted meanwhile"
                ))));
            }
        }
        record.status = BotStatus::Created;
        if let Some(pg) = &self.pg {
            // The id comes from Postgres (unique across nodes); the definition is kept here once
            // committed there.
            let user_id = record.user_id;
            let created = match pg.write(user_id, PgWrite::Create(record)) {
                Ok(created) => created,
                Err(err) => return replier.send(Err(err)),
            };
            ctx.spawn(created.into_actor(self).map(move |created, act, ctx| {
                let record = match created {
                    Ok(Some(record)) => record,
                    Ok(None) => return replier.send(Err(BotError::Record)),
                    Err(err) => return replier.send(Err(err)),
                };
                if let Err(err) = act.repo.put_bot(&record) {
                    return replier.send(Err(err.into()));
                }
                act.bots.insert(record.id, record.clone());
                act.publish_owner(user_id);
                let store = act.repo.store().clone();
                ctx.spawn(async move { store.commit().await }.into_actor(act).map(
                    move |done, _, _| replier.send(done.map(|()| record).map_err(BotError::from)),
                ));
            }));
            return;
        }
        record.id = match self.repo.store().next_id() {
            Ok(id) => id + 1,
            Err(err) => return replier.send(Err(err.into())),
        };
        self.save_then(record, ctx, move |r| replier.send(r));
    }
}

impl Handler<Ask<UpdateBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<UpdateBot>, ctx: &mut Context<Self>) {
        let (UpdateBot(record), replier) = ask.into_parts();
        let current = match self.owned(record.user_id, record.id) {
            Ok(current) => current,
            Err(err) => return replier.send(Err(err)),
        };
        if !current.status.is_idle() || self.busy.contains_key(&record.id) {
            return replier.send(Err(BotError::Conflict(format!(
                "bot {} is {:?}; stop it before editing",
                record.id, current.status
            ))));
        }
        let record = BotRecord { status: current.status, created_ts: current.created_ts, ..record };
        self.save_then(record, ctx, move |r| replier.send(r));
    }
}

impl Handler<Ask<DeleteBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<DeleteBot>, ctx: &mut Context<Self>) {
        let (DeleteBot { user_id, bot_id }, replier) = ask.into_parts();
        let status = match self.owned(user_id, bot_id) {
            Ok(record) => record.status,
            Err(err) => return replier.send(Err(err)),
        };
        if !status.is_idle() || self.busy.contains_key(&bot_id) {
            return replier.send(Err(BotError::Conflict(format!(
                "bot {bot_id} is {status:?}; stop it before deleting"
            ))));
        }
        let pg = match &self.pg {
            Some(pg) => match pg.write(user_id, PgWrite::Delete(bot_id)) {
                Ok(write) => Some(write),
                Err(err) => return replier.send(Err(err)),
            },
            None => None,
        };
        if let Err(err) = self.repo.delete_bot(bot_id) {
            return replier.send(Err(err.into()));
        }
        self.bots.remove(&bot_id);
        self.restarts.remove(&bot_id);
        self.indicators.remove(bot_id);
        self.publish_owner(user_id);
        let store = self.repo.store().clone();
        let deleted = async move {
            store.commit().await?;
            if let Some(write) = pg {
                write.await?;
            }
            Ok::<(), BotError>(())
        };
        ctx.spawn(deleted.into_actor(self).map(move |done, _, _| replier.send(done)));
    }
}

impl Handler<Ask<GetBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetBot>, _: &mut Context<Self>) {
        let (GetBot { user_id, bot_id }, replier) = ask.into_parts();
        replier.send(self.owned(user_id, bot_id).cloned());
    }
}

impl Handler<Ask<ListBots>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<ListBots>, _: &mut Context<Self>) {
        let (ListBots { user_id }, replier) = ask.into_parts();
        replier.send(self.bots.values().filter(|b| b.user_id == user_id).cloned().collect());
    }
}
