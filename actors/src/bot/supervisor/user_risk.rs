//! An owner's limits over all of their bots: changing them (`SetUserRisk`), and the leverage a
//! bot's start must fit under. Both run in the supervisor, so a start and a lowered
//! `max_leverage` cannot pass each other: a limit is never lowered under a running bot, and a
//! bot never starts above it.

use actix::prelude::*;

use super::messages::SetUserRisk;
use super::postgres::PgWrite;
use super::{BotError, BotSupervisor};
use crate::mailbox::{Ask, Replier};
use keel_core::bot::BotRecord;
use keel_core::bot::user_risk::{
    LeverageCaps, UserRiskLimits, leverage_error, running_above, running_above_message,
};

/// How soon a change of limits that waits for its owner's load is tried again.
const LOADING_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

impl Handler<Ask<SetUserRisk>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<SetUserRisk>, ctx: &mut Context<Self>) {
        // A user just taken: their limits are being read from Postgres; change them after.
        let user = ask.query.user_id;
        if self.pg.as_ref().is_some_and(|pg| pg.loading.contains(&user)) {
            ctx.notify_later(ask, LOADING_RETRY);
            return;
        }
        let (SetUserRisk { user_id, limits }, replier) = ask.into_parts();
        if let Err(err) = self.not_deleting(user_id) {
            return replier.send(Err(err));
        }
        if let Some(max) = limits.max_leverage {
            let owned = self.bots.values().filter(|b| b.user_id == user_id);
            let above = running_above(owned, max);
            if !above.is_empty() {
                return replier.send(Err(BotError::Conflict(running_above_message(max, &above))));
            }
        }
        // With `postgres_url`: recorded there under the user's fence before the answer.
        let record = match &mut self.pg {
            Some(pg) => {
                *pg.limits_set.entry(user_id).or_default() += 1;
                let previous = match self.config.user_limits.get(user_id) {
                    Ok(previous) => previous,
                    Err(err) => return replier.send(Err(err.into())),
                };
                match pg.write(user_id, PgWrite::Limits(user_id, limits.clone())) {
                    Ok(write) => Some((write, previous)),
                    Err(err) => return replier.send(Err(err)),
                }
            }
            None => None,
        };
        // The working copy changes at once, so no start passes the new limits meanwhile.
        match self.config.user_limits.set(user_id, &limits) {
            Ok(true) => {}
            Ok(false) => {
                return replier
                    .send(Err(BotError::Conflict("the account no longer exists".into())));
            }
            Err(err) => return replier.send(Err(err.into())),
        }
        tracing::info!(user_id, ?limits, "owner's limits changed");
        if let Some((write, previous)) = record {
            let done = write.into_actor(self).map(move |written, act, _| {
                // Counted again once settled: a read of the limits that began before the
                // commit may not hold them.
                if let Some(pg) = &mut act.pg {
                    *pg.limits_set.entry(user_id).or_default() += 1;
                }
                act.limits_recorded(user_id, limits, previous, written, replier);
            });
            ctx.spawn(done);
            return;
        }
        let store = self.repo.store().clone();
        ctx.spawn(async move { store.commit().await }.into_actor(self).map(move |done, _, _| {
            replier.send(done.map(|()| limits).map_err(BotError::from));
        }));
    }
}

impl BotSupervisor {
    /// Answers a change of limits once Postgres settled it; one not recorded puts the working
    /// copy back to what Postgres holds.
    fn limits_recorded(
        &mut self,
        user_id: keel_core::bot::UserId,
        limits: UserRiskLimits,
        previous: UserRiskLimits,
        written: Result<Option<BotRecord>, BotError>,
        replier: Replier<Result<UserRiskLimits, BotError>>,
    ) {
        match written {
            Ok(_) => replier.send(Ok(limits)),
            Err(err) => {
                if let Err(err) = self.config.user_limits.set(user_id, &previous) {
                    tracing::error!(user_id, error = %err, "owner's limits not restored");
                }
                replier.send(Err(err));
            }
        }
    }

    /// Refuses to start a bot whose leverage is above its owner's `max_leverage` or the
    /// operator's `bots.max_leverage` (either may have been lowered since it was defined).
    pub(super) fn check_start_leverage(&self, record: &BotRecord) -> Result<(), BotError> {
        let owner = self.config.user_limits.get(record.user_id)?;
        let caps = LeverageCaps { owner: owner.max_leverage, server: self.config.max_leverage };
        match leverage_error(record, caps) {
            Some(error) => Err(BotError::Invalid(vec![error])),
            None => Ok(()),
        }
    }
}
