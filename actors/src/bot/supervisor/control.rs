//! Controlling bots: start, stop, pause and resume; an owner's trading commands forwarded to the
//! running bot; a live view for the read endpoints; and the kill switch, which stops all of a
//! user's bots at once.

use actix::prelude::*;

use super::messages::{ControlBot, ForBot, GetIndicators, GetLiveBot, KillReport, KillSwitch};
use super::{BOT_DEADLINE, BotError, BotSupervisor, now_ms};
use crate::bot::actor::{CancelOutcome, GetLive, SetPaused};
use crate::mailbox::Ask;
use keel_core::bot::{BotId, BotStatus, Control};

impl Handler<Ask<ControlBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<ControlBot>, ctx: &mut Context<Self>) {
        let (ControlBot { user_id, bot_id, control }, replier) = ask.into_parts();
        let record = match self.owned(user_id, bot_id).cloned() {
            Ok(record) => record,
            Err(err) => return replier.send(Err(err)),
        };
        if let Err(err) = self.not_busy(bot_id) {
            return replier.send(Err(err));
        }
        let Some(next) = record.status.after(control) else {
            return replier.send(Err(BotError::Conflict(format!(
                "cannot {control:?} a bot that is {:?}",
                record.status
            ))));
        };
        match control {
            Control::Stop => {
                self.stop_bot(bot_id, false, ctx, move |r| replier.send(r.map(|(r, _)| r)))
            }
            Control::Start => {
                if let Err(err) =
                    self.not_deleting(user_id).and_then(|()| self.check_start_leverage(&record))
                {
                    return replier.send(Err(err));
                }
                // A derivatives bot's leverage and margin type are set at the venue first: a
                // refusal is the start's answer, and the bot stays as it was.
                let prepare = match self.live_link(&record) {
                    Ok(Some(link)) => crate::bot::live::prepare_request(&link, &record),
                    _ => None,
                };
                let Some(prepare) = prepare else {
                    return self.start_now(record, next, false, ctx, replier);
                };
                self.busy.insert(bot_id, ());
                let asked_at = record.updated_ts;
                ctx.spawn(prepare.into_actor(self).map(move |prepared, act, ctx| {
                    act.busy.remove(&bot_id);
                    if let Err(err) = prepared {
                        tracing::warn!(bot_id, error = %err, "the venue refused the bot's leverage or margin type");
                        return replier.send(Err(BotError::Venue {
                            refused: err.kind != keel_venues::routing::RouteErrorKind::NotSent
                                && err.kind != keel_venues::routing::RouteErrorKind::UnknownOutcome,
                            message: format!("not started: {err}"),
                        }));
                    }
                    // Read again: the kill switch, an edit or the owner's deletion may have
                    // come while the venue answered; the start does not override them.
                    let Some(record) = act.bots.get(&bot_id).cloned() else {
                        return replier.send(Err(BotError::NotFound(bot_id)));
                    };
                    // Its owner may have lowered their max_leverage meanwhile.
                    if let Err(err) =
                        act.not_deleting(user_id).and_then(|()| act.check_start_leverage(&record))
                    {
                        return replier.send(Err(err));
                    }
                    let next = record.status.after(Control::Start);
                    let (Some(next), true) = (next, record.updated_ts == asked_at) else {
                        return replier.send(Err(BotError::Conflict(format!(
                            "bot {bot_id} changed while its venue was asked; retry"
                        ))));
                    };
                    act.start_now(record, next, true, ctx, replier);
                }));
            }
            Control::Pause | Control::Resume => {
                let Some(running) = self.running.get(&bot_id) else {
                    return replier
                        .send(Err(BotError::Conflict(format!("bot {bot_id} is not running"))));
                };
                let addr = running.addr.clone();
                self.busy.insert(bot_id, ());
                let paused = control == Control::Pause;
                ctx.spawn(
                    async move {
                        crate::mailbox::ask(&addr, SetPaused(paused), BOT_DEADLINE, "bot").await
                    }
                    .into_actor(self)
                    .map(move |answer, act, ctx| {
                        act.busy.remove(&bot_id);
                        if let Err(err) = answer {
                            return replier.send(Err(err.into()));
                        }
                        let mut record = record;
                        record.status = next;
                        record.status_reason = None;
                        record.updated_ts = now_ms();
                        act.save_then(record, ctx, move |r| replier.send(r));
                    }),
                );
            }
        }
    }
}

impl BotSupervisor {
    /// Starts `record` now, in state `next`; `prepared` when its leverage and margin type were
    /// just set at the venue.
    fn start_now(
        &mut self,
        mut record: keel_core::bot::BotRecord,
        next: BotStatus,
        prepared: bool,
        ctx: &mut Context<Self>,
        replier: crate::mailbox::Replier<Result<keel_core::bot::BotRecord, BotError>>,
    ) {
        let (bot_id, user_id) = (record.id, record.user_id);
        record.status = next;
        record.status_reason = None;
        record.updated_ts = now_ms();
        self.bots.insert(bot_id, record.clone());
        self.publish_owner(user_id);
        self.restarts.remove(&bot_id);
        if let Err(reason) = self.launch(bot_id, None, prepared, ctx) {
            self.mark_failed(bot_id, reason.clone(), ctx);
            return replier.send(Err(BotError::Conflict(format!("bot cannot start: {reason}"))));
        }
        self.save_then(record, ctx, move |r| replier.send(r));
    }
}

impl Handler<Ask<ForBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<ForBot>, ctx: &mut Context<Self>) {
        let (ForBot { user_id, bot_id, command }, replier) = ask.into_parts();
        let status = match self.owned(user_id, bot_id) {
            Ok(record) => record.status,
            Err(err) => return replier.send(Err(err)),
        };
        let Some(running) = self.running.get(&bot_id) else {
            return replier.send(Err(BotError::Conflict(format!(
                "bot {bot_id} is {status:?}; start it to trade"
            ))));
        };
        let addr = running.addr.clone();
        ctx.spawn(
            async move {
                match crate::mailbox::ask(&addr, command, BOT_DEADLINE, "bot").await {
                    Ok(answer) => answer.map_err(BotError::from),
                    Err(err) => Err(err.into()),
                }
            }
            .into_actor(self)
            .map(move |answer, _, _| replier.send(answer)),
        );
    }
}

impl Handler<Ask<GetLiveBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetLiveBot>, ctx: &mut Context<Self>) {
        let (GetLiveBot { user_id, bot_id }, replier) = ask.into_parts();
        let record = match self.owned(user_id, bot_id) {
            Ok(record) => record.clone(),
            Err(err) => return replier.send(Err(err)),
        };
        let Some(running) = self.running.get(&bot_id) else {
            return replier.send(Ok((record, None)));
        };
        let addr = running.addr.clone();
        ctx.spawn(
            async move { crate::mailbox::ask(&addr, GetLive, BOT_DEADLINE, "bot").await }
                .into_actor(self)
                .map(move |answer, _, _| {
                    replier.send(answer.map(|live| (record, Some(live))).map_err(BotError::from));
                }),
        );
    }
}

impl Handler<Ask<GetIndicators>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetIndicators>, _: &mut Context<Self>) {
        let (GetIndicators { user_id, bot_id, since, limit }, replier) = ask.into_parts();
        replier
            .send(self.owned(user_id, bot_id).map(|_| self.indicators.view(bot_id, since, limit)));
    }
}

impl Handler<Ask<KillSwitch>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<KillSwitch>, ctx: &mut Context<Self>) {
        let (KillSwitch { user_id, flatten }, replier) = ask.into_parts();
        let targets: Vec<BotId> = self
            .bots
            .values()
            .filter(|b| {
                b.user_id == user_id && (b.status.is_active() || b.status == BotStatus::Failed)
            })
            .map(|b| b.id)
            .collect();
        tracing::warn!(user_id, bots = targets.len(), flatten, "kill switch");
        // The owner's channels hear of it once every bot has answered, before the answer.
        let tell = std::rc::Rc::new(tell_kill_switch(self.repo.notifications().cloned(), user_id));
        let report = std::rc::Rc::new(std::cell::RefCell::new(KillReport::default()));
        let replier = std::rc::Rc::new(std::cell::RefCell::new(Some(replier)));
        let pending = std::rc::Rc::new(std::cell::Cell::new(targets.len()));
        if targets.is_empty() {
            tell(&KillReport::default());
            if let Some(r) = replier.borrow_mut().take() {
                r.send(Ok(KillReport::default()));
            }
            return;
        }
        for bot_id in targets {
            let (report, replier, pending) = (report.clone(), replier.clone(), pending.clone());
            let tell = tell.clone();
            // A bot busy with another change is stopped anyway: the kill switch wins.
            self.busy.remove(&bot_id);
            self.stop_bot(bot_id, flatten, ctx, move |result| {
                {
                    let mut report = report.borrow_mut();
                    match result {
                        Ok((_, answers)) => {
                            report.bots_stopped += 1;
                            report.orders_canceled += answers
                                .iter()
                                .filter(|a| a.outcome == CancelOutcome::Canceled)
                                .count();
                            report.orders.extend(answers);
                        }
                        Err(_) => report.failed.push(bot_id),
                    }
                }
                pending.set(pending.get() - 1);
                if pending.get() == 0
                    && let Some(r) = replier.borrow_mut().take()
                {
                    tell(&report.borrow());
                    r.send(Ok(report.borrow().clone()));
                }
            });
        }
    }
}

/// Enqueues the kill switch's report for the owner's channels that want `kill_switch`.
fn tell_kill_switch(
    notifications: Option<crate::notify::Notifications>,
    user_id: keel_core::bot::UserId,
) -> impl Fn(&KillReport) {
    move |report| {
        let Some(notifications) = &notifications else { return };
        let event = keel_core::notify::NotifyEvent {
            kind: keel_core::notify::EventKind::KillSwitch,
            bot_id: None,
            ts: crate::identity::now_ms(),
            data: serde_json::to_value(report).unwrap_or_default(),
        };
        if let Err(err) = notifications.enqueue(user_id, event) {
            tracing::warn!(user_id, error = %err, "kill switch notification not enqueued");
        }
    }
}
