//! Strategy modules and the bots that run them: a module is deleted here, in the actor that owns
//! every bot definition, so no bot can be created on it between the check and the delete.

use actix::prelude::*;

use super::BotSupervisor;
use crate::mailbox::{Ask, Query};
use crate::strategies::{Modules, ModulesError};
use keel_core::bot::UserId;

/// Deletes one of the owner's strategy modules, unless a bot of theirs names it; answered once
/// durable.
#[derive(Debug, Clone, Copy)]
pub struct RemoveModule {
    /// Owner.
    pub user_id: UserId,
    /// Module.
    pub module_id: u64,
}

impl Query for RemoveModule {
    type Answer = Result<(), ModulesError>;
}

impl BotSupervisor {
    /// The owner's bots that run `module_id`.
    pub(super) fn bots_on_module(&self, user_id: UserId, module_id: u64) -> Vec<u64> {
        self.bots
            .values()
            .filter(|b| b.user_id == user_id && Modules::module_of(b) == Some(module_id))
            .map(|b| b.id)
            .collect()
    }
}

impl Handler<Ask<RemoveModule>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<RemoveModule>, ctx: &mut Context<Self>) {
        let (RemoveModule { user_id, module_id }, replier) = ask.into_parts();
        let Some(modules) = self.config.modules.clone() else {
            return replier.send(Err(ModulesError::NotFound(module_id)));
        };
        let bots = self.bots_on_module(user_id, module_id);
        if !bots.is_empty() {
            return replier.send(Err(ModulesError::InUse { module: module_id, bots }));
        }
        let store = self.repo.store().clone();
        if let Some(pg) = &self.pg {
            // Cluster mode with `postgres_url`: deleted in Postgres under the owner's fence
            // first (awaited off the actor), then from this node's working copy.
            let Some(fence) = pg.fences.get(&user_id).cloned() else {
                return replier.send(Err(ModulesError::Moving));
            };
            let table = pg.modules.clone();
            ctx.spawn(
                async move {
                    match table.delete(user_id, module_id, &fence).await? {
                        Ok(true) => {}
                        Ok(false) => return Err(ModulesError::NotFound(module_id)),
                        Err(_fenced) => return Err(ModulesError::Moving),
                    }
                    match modules.remove(user_id, module_id) {
                        Ok(()) | Err(ModulesError::NotFound(_)) => {}
                        Err(err) => return Err(err),
                    }
                    Ok(store.commit().await?)
                }
                .into_actor(self)
                .map(move |done, _, _| replier.send(done)),
            );
            return;
        }
        if let Err(err) = modules.remove(user_id, module_id) {
            return replier.send(Err(err));
        }
        ctx.spawn(async move { store.commit().await }.into_actor(self).map(move |done, _, _| {
            replier.send(done.map_err(ModulesError::from));
        }));
    }
}
