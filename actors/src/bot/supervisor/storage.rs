//! The disk guard's side of the bot supervisor: while the free space is below
//! `store.min_free_bytes` running bots are paused, and when it is back the bots the guard paused
//! resume (bots their owners paused stay paused).
//!
//! Pausing stops the strategy from placing new orders. It neither cancels nor forgets what is
//! live: open orders stay at the venue and in the bot's engine, their fills and cancels are still
//! recorded, and brackets (stop-loss, take-profit) keep protecting the position. No order is
//! left without a bot that watches it.

use actix::prelude::*;

use super::{BOT_DEADLINE, BotSupervisor, now_ms};
use crate::bot::actor::SetPaused;
use keel_core::bot::{BotId, BotStatus};

/// The `status_reason` of a bot the disk guard paused; the guard resumes only these.
pub const DISK_LOW_REASON: &str = "paused: free disk space is below store.min_free_bytes";

/// The disk guard's current reading, sent every check: idempotent, so a bot launched or freed
/// from a change in progress meanwhile is handled at the next one.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct DiskSpace {
    /// Whether the free space is below the floor.
    pub low: bool,
}

impl Handler<DiskSpace> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, DiskSpace { low }: DiskSpace, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let targets: Vec<BotId> = self
            .bots
            .values()
            .filter(|b| {
                if low {
                    b.status == BotStatus::Running
                } else {
                    b.status == BotStatus::Paused
                        && b.status_reason.as_deref() == Some(DISK_LOW_REASON)
                }
            })
            .map(|b| b.id)
            .filter(|id| self.running.contains_key(id) && !self.busy.contains_key(id))
            .collect();
        for bot_id in targets {
            let Some(addr) = self.running.get(&bot_id).map(|r| r.addr.clone()) else { continue };
            self.busy.insert(bot_id, ());
            ctx.spawn(
                async move { crate::mailbox::ask(&addr, SetPaused(low), BOT_DEADLINE, "bot").await }
                    .into_actor(self)
                    .map(move |answer, act, ctx| {
                        act.busy.remove(&bot_id);
                        if let Err(err) = answer {
                            tracing::warn!(bot_id, error = %err, low, "disk guard: bot did not answer");
                            return;
                        }
                        let Some(mut record) = act.bots.get(&bot_id).cloned() else { return };
                        if low {
                            tracing::warn!(bot_id, "disk guard: bot paused");
                            record.status = BotStatus::Paused;
                            record.status_reason = Some(DISK_LOW_REASON.to_owned());
                        } else {
                            tracing::info!(bot_id, "disk guard: bot resumed");
                            record.status = BotStatus::Running;
                            record.status_reason = None;
                        }
                        record.updated_ts = now_ms();
                        act.save_then(record, ctx, |_| ());
                    }),
            );
        }
    }
}
