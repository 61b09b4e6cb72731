//! The tie between a supervised actor and its supervisor.
//!
//! Every supervised actor owns one [`Lifeline`]: the children of the generic
//! [`super::Supervisor`] (feeds, vault, sink, nested supervisors) and the bot actors of the bot
//! supervisor alike. Dropping it, which happens however the actor dies, sends its supervisor a
//! [`ChildExited`] with an [`ExitReason`].

use actix::prelude::*;

use super::ChildFailed;
use super::exit::ExitReason;
use super::panic::take_last_panic;

/// Names a child within its supervisor: an index in the generic supervisor's child list, a bot
/// id in the bot supervisor.
pub type ChildKey = u64;

/// A supervised actor went away: its lifeline was dropped (or its mailbox found closed).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    /// Which child.
    pub child: ChildKey,
    /// Which incarnation of it, so a late notice from a replaced one is ignored.
    pub generation: u64,
    /// Why.
    pub reason: ExitReason,
}

/// Owned by a supervised actor. When the actor goes away (stopped, or dropped by the runtime
/// after a panic) the lifeline is dropped with it and tells the supervisor why.
#[derive(Debug)]
pub struct Lifeline {
    child: ChildKey,
    generation: u64,
    supervisor: Recipient<ChildExited>,
    escalation: Option<Recipient<ChildFailed>>,
    reason: Option<ExitReason>,
}

impl Lifeline {
    /// The lifeline of incarnation `generation` of `child`, reporting to `supervisor`.
    pub fn new(child: ChildKey, generation: u64, supervisor: Recipient<ChildExited>) -> Self {
        Self { child, generation, supervisor, escalation: None, reason: None }
    }

    /// Sets where a child that is itself a supervisor escalates the failures of its own
    /// children.
    pub fn escalating_to(mut self, parent: Recipient<ChildFailed>) -> Self {
        self.escalation = Some(parent);
        self
    }

    /// Where a child that is itself a supervisor escalates: its own supervisor, if that takes
    /// escalations.
    pub fn escalation(&self) -> Option<Recipient<ChildFailed>> {
        self.escalation.clone()
    }

    /// Which incarnation of its child this is.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records why the actor is about to stop (a caught panic, a fatal error), for the
    /// supervisor's logs and status.
    pub fn crashed(&mut self, reason: impl Into<String>) {
        self.reason = Some(ExitReason::Crashed(reason.into()));
    }

    /// Marks a stop the supervisor asked for, so it is not reported as a crash.
    pub fn stopped_on_request(&mut self) {
        self.reason = Some(ExitReason::Requested);
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let reason = self
            .reason
            .take()
            .or_else(|| take_last_panic().map(ExitReason::Panicked))
            .unwrap_or(ExitReason::Unexpected);
        // Death notices are rare and must not be lost to a full mailbox.
        self.supervisor.do_send(ChildExited {
            child: self.child,
            generation: self.generation,
            reason,
        });
    }
}
