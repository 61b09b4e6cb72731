//! A live bot and its account's circuit breaker ([`crate::breaker`]): the strategy pauses when
//! the breaker opens and resumes when it closes, unless the owner paused or stopped the bot
//! meanwhile. Every transition is a journal line (`breaker`), so it reaches the owner's
//! `bot:{id}` channel once durable.

use actix::prelude::*;

use super::{BotActor, BotResumed};
use crate::breaker::{BreakerState, BreakerTransition};
use keel_core::bot::BotStatus;
use keel_core::engine::BotEventKind;

impl BotActor {
    /// Subscribes to the account's breaker, and pauses at once if it is open already.
    pub(super) fn watch_breaker(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.args.live else { return };
        link.breaker.subscribe(self.args.bot_id, ctx.address().recipient());
        self.check_breaker(ctx);
    }

    /// Catches up with the breaker's state (a transition message may have found the mailbox
    /// full): called at start and on every live poll.
    pub(super) fn check_breaker(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.args.live else { return };
        let state = link.breaker.state();
        let behind = match state {
            BreakerState::Open => !self.paused,
            BreakerState::Closed => self.breaker_paused,
            BreakerState::HalfOpen => false,
        };
        if behind {
            let transition = BreakerTransition {
                venue: link.router.venue(),
                account_id: link.credential_id,
                state,
                reason: None,
            };
            self.on_breaker(transition, ctx);
        }
    }

    fn on_breaker(&mut self, transition: BreakerTransition, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = keel_venues::now_us() / 1000;
        let BreakerTransition { venue, account_id, state, reason } = transition;
        let reason = reason.unwrap_or_else(|| {
            format!("{} on {venue} account {account_id}", crate::breaker::BREAKER_REASON)
        });
        self.args.engine.log(
            now,
            BotEventKind::Breaker {
                venue: venue.to_string(),
                account_id,
                state: state.as_str().to_owned(),
                reason: (state == BreakerState::Open).then(|| reason.clone()),
            },
            &mut self.fx,
        );
        match state {
            BreakerState::Open if !self.paused => {
                self.breaker_paused = true;
                self.args.engine.set_strategy_active(false);
                // Stored, then reported to the supervisor (status `paused` with this reason).
                self.fx.paused = Some(reason);
            }
            BreakerState::Closed if self.breaker_paused && self.paused => {
                self.breaker_paused = false;
                self.paused = false;
                self.args.engine.set_strategy_active(true);
                let status = BotStatus::Running;
                self.args.engine.log(
                    now,
                    BotEventKind::Status { status, reason: None },
                    &mut self.fx,
                );
                let _ = self.args.resumed.try_send(BotResumed { bot_id: self.args.bot_id });
            }
            _ => {}
        }
        self.persist(ctx, None);
    }
}

impl Handler<BreakerTransition> for BotActor {
    type Result = ();

    fn handle(&mut self, transition: BreakerTransition, ctx: &mut Context<Self>) {
        self.on_breaker(transition, ctx);
    }
}
