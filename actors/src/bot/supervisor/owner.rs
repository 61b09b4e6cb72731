//! An account going away: every bot of the user is stopped (cancelling its open orders first)
//! and deleted with its history.

use actix::prelude::*;

use super::messages::{OpenOrderLeft, RemoveUserBots, RemovedBots};
use super::{BOT_DEADLINE, BotError, BotSupervisor};
use crate::bot::actor::{CancelOutcome, StopBot};
use crate::mailbox::Ask;
use keel_core::bot::BotId;

impl Handler<Ask<RemoveUserBots>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<RemoveUserBots>, ctx: &mut Context<Self>) {
        let (RemoveUserBots { user_id }, replier) = ask.into_parts();
        self.deleting.insert(user_id);
        self.config.user_limits.forget(user_id);
        let owned: Vec<BotId> =
            self.bots.values().filter(|b| b.user_id == user_id).map(|b| b.id).collect();
        tracing::warn!(user_id, bots = owned.len(), "removing an account's bots");
        let mut stops = Vec::new();
        for &bot_id in &owned {
            // No longer expected back after a restart.
            self.relaunch_gave_up(bot_id);
            if let Some(running) = self.running.remove(&bot_id) {
                // The account deletion wins over any change in flight.
                self.busy.insert(bot_id, ());
                stops.push((bot_id, running.addr));
            }
        }
        self.count_running();
        let stopping =
            futures_util::future::join_all(stops.into_iter().map(|(bot_id, addr)| async move {
                let answer =
                    crate::mailbox::ask(&addr, StopBot { flatten: false }, BOT_DEADLINE, "bot")
                        .await;
                (bot_id, answer)
            }));
        ctx.spawn(stopping.into_actor(self).map(move |answers, act, ctx| {
            let mut report = RemovedBots::default();
            for (bot_id, answer) in answers {
                act.busy.remove(&bot_id);
                let Ok(Ok(answers)) = answer else {
                    tracing::error!(user_id, bot_id, "a bot of a deleted account did not stop");
                    report.failed.push(bot_id);
                    continue;
                };
                report.orders_canceled +=
                    answers.iter().filter(|a| a.outcome == CancelOutcome::Canceled).count();
                let Some(record) = act.bots.get(&bot_id) else { continue };
                // What the venue did not confirm closed may still be working there.
                for answer in
                    answers.into_iter().filter(|a| a.outcome == CancelOutcome::CancelFailed)
                {
                    report.cancel_failures.push(OpenOrderLeft {
                        bot_id,
                        venue: record.venue,
                        symbol: record.symbol.to_string(),
                        order_id: answer.order_id,
                        client_order_id: answer.client_order_id,
                    });
                }
            }
            for bot_id in owned {
                if report.failed.contains(&bot_id) {
                    continue;
                }
                if let Err(err) = act.repo.delete_bot(bot_id) {
                    act.deleting.remove(&user_id);
                    act.publish_owner(user_id);
                    return replier.send(Err(BotError::from(err)));
                }
                act.bots.remove(&bot_id);
                act.restarts.remove(&bot_id);
                report.bots_deleted += 1;
            }
            act.publish_owner(user_id);
            if !report.failed.is_empty() {
                // The account stays; its owner may retry.
                act.deleting.remove(&user_id);
            }
            let store = act.repo.store().clone();
            ctx.spawn(async move { store.commit().await }.into_actor(act).map(
                move |done, _, _| replier.send(done.map(|()| report).map_err(BotError::from)),
            ));
        }));
    }
}
