//! Bot definitions: create, edit, delete and read them. An edit or a delete is refused while a
//! bot runs or has a lifecycle change in flight, and answered only once durable.

use actix::prelude::*;

use super::messages::{CreateBot, DeleteBot, GetBot, ListBots, UpdateBot};
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
        record.id = match self.repo.store().next_id() {
            Ok(id) => id + 1,
            Err(err) => return replier.send(Err(err.into())),
        };
        record.status = BotStatus::Created;
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
        if let Err(err) = self.repo.delete_bot(bot_id) {
            return replier.send(Err(err.into()));
        }
        self.bots.remove(&bot_id);
        self.restarts.remove(&bot_id);
        self.indicators.remove(bot_id);
        self.publish_owner(user_id);
        let store = self.repo.store().clone();
        ctx.spawn(async move { store.commit().await }.into_actor(self).map(move |done, _, _| {
            replier.send(done.map_err(BotError::from));
        }));
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
