//! The tie between a child actor and its supervisor.

use actix::Recipient;

use super::panic::take_last_panic;
use super::{ChildExited, ChildFailed};

/// Owned by a supervised actor. When the actor goes away (stopped, or dropped by the runtime
/// after a panic) the lifeline is dropped with it and tells the supervisor why.
#[derive(Debug)]
pub struct Lifeline {
    index: usize,
    generation: u64,
    supervisor: Recipient<ChildExited>,
    failures: Recipient<ChildFailed>,
    reason: Option<String>,
}

impl Lifeline {
    pub(crate) fn new(
        index: usize,
        generation: u64,
        supervisor: Recipient<ChildExited>,
        failures: Recipient<ChildFailed>,
    ) -> Self {
        Self { index, generation, supervisor, failures, reason: None }
    }

    /// Where a child that is itself a supervisor escalates: its own supervisor.
    pub fn escalation(&self) -> Recipient<ChildFailed> {
        self.failures.clone()
    }

    /// Records why the actor is about to stop (a caught panic, a fatal error), for the
    /// supervisor's logs and status.
    pub fn crashed(&mut self, reason: impl Into<String>) {
        self.reason = Some(reason.into());
    }

    /// Marks a stop the supervisor asked for, so it is not reported as a crash.
    pub fn stopped_on_request(&mut self) {
        self.reason = Some("stopped on request".to_owned());
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let reason = self
            .reason
            .take()
            .or_else(|| take_last_panic().map(|msg| format!("panicked: {msg}")))
            .unwrap_or_else(|| "stopped unexpectedly".to_owned());
        // Death notices are rare and must not be lost to a full mailbox.
        self.supervisor.do_send(ChildExited {
            index: self.index,
            generation: self.generation,
            reason,
        });
    }
}
