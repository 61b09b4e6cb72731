//! Bringing back the bots that were running before a stop, and telling readiness when that is
//! done.
//!
//! When the bot supervisor starts it launches every bot whose record says running or paused. A
//! bot counts as back once its actor has started and reported [`BotReconciled`]: its open orders
//! are restored into its engine (a paper bot does that as it starts) and, for a live bot, the
//! first poll of those orders at the venue has answered. `/health/ready` answers 503 until every
//! such bot is back ([`Relaunch::report`]). A bot that cannot come back (its launch fails past
//! the restart budget, or its owner stops it meanwhile) no longer holds readiness: it is counted
//! as failed, and its owner sees its status.
//!
//! The first time everything is back, `keel_startup_seconds` is set to the time since the process
//! started ([`crate::startup_clock`]), once per process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;
use serde::Serialize;

use super::BotSupervisor;
use crate::bot::actor::BotReconciled;
use crate::mailbox::{Ask, Query};
use keel_core::bot::BotId;

/// Set once the start-up time has been recorded: a restarted bot supervisor relaunches its bots
/// again, but the process started only once.
static STARTUP_RECORDED: AtomicBool = AtomicBool::new(false);

/// Which of the bots that were running before the stop are not back yet.
#[derive(Debug, Default)]
pub struct Relaunch {
    /// Bots expected back, with the incarnation that may report (0 before it is launched).
    pending: HashMap<BotId, u64>,
    /// Bots expected in all.
    expected: usize,
    /// Expected bots that will not come back.
    failed: usize,
}

/// What readiness shows of the relaunch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelaunchReport {
    /// Bots that were running before the stop.
    pub expected: usize,
    /// Of those, bots not back yet (ids, at most [`MAX_LISTED`]).
    pub pending: Vec<BotId>,
    /// How many are not back yet.
    pub pending_count: usize,
    /// Of those, bots that could not be brought back (their status says why).
    pub failed: usize,
}

impl RelaunchReport {
    /// Whether every bot that could come back is back.
    pub fn is_done(&self) -> bool {
        self.pending_count == 0
    }
}

/// Most pending bot ids a report lists.
pub const MAX_LISTED: usize = 20;

impl Relaunch {
    /// Expects `bots` back.
    pub fn expect(bots: impl IntoIterator<Item = BotId>) -> Self {
        let pending: HashMap<BotId, u64> = bots.into_iter().map(|id| (id, 0)).collect();
        Self { expected: pending.len(), pending, failed: 0 }
    }

    /// Incarnation `generation` of `bot` was launched: only it may report.
    pub fn launched(&mut self, bot: BotId, generation: u64) {
        if let Some(current) = self.pending.get_mut(&bot) {
            *current = generation;
        }
    }

    /// `bot` reported back; true when that was the last one.
    pub fn reconciled(&mut self, bot: BotId, generation: u64) -> bool {
        if self.pending.get(&bot) != Some(&generation) {
            return false;
        }
        self.pending.remove(&bot);
        self.pending.is_empty()
    }

    /// `bot` will not come back (it failed, or its owner stopped it); true when that leaves
    /// nothing pending.
    pub fn gave_up(&mut self, bot: BotId) -> bool {
        if self.pending.remove(&bot).is_none() {
            return false;
        }
        self.failed += 1;
        self.pending.is_empty()
    }

    /// Whether nothing is pending.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The state for readiness.
    pub fn report(&self) -> RelaunchReport {
        let mut pending: Vec<BotId> = self.pending.keys().copied().collect();
        pending.sort_unstable();
        pending.truncate(MAX_LISTED);
        RelaunchReport {
            expected: self.expected,
            pending,
            pending_count: self.pending.len(),
            failed: self.failed,
        }
    }
}

/// How far the relaunch of the bots that were running before the stop has come.
#[derive(Debug, Clone, Copy)]
pub struct GetRelaunch;

impl Query for GetRelaunch {
    type Answer = RelaunchReport;
}

impl Handler<Ask<GetRelaunch>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetRelaunch>, _: &mut Context<Self>) {
        let (GetRelaunch, replier) = ask.into_parts();
        replier.send(self.relaunch.report());
    }
}

impl Handler<BotReconciled> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, msg: BotReconciled, _: &mut Context<Self>) {
        if self.relaunch.reconciled(msg.bot_id, msg.generation) {
            self.relaunch_done();
        }
    }
}

impl BotSupervisor {
    /// `bot` will not come back; records the end of the relaunch if it was the last.
    pub(super) fn relaunch_gave_up(&mut self, bot: BotId) {
        if self.relaunch.gave_up(bot) {
            self.relaunch_done();
        }
    }

    /// Every bot is back: logs it and, the first time in this process, records how long
    /// start-up took.
    pub(super) fn relaunch_done(&self) {
        let report = self.relaunch.report();
        let took = crate::startup_clock::since_start();
        tracing::info!(
            bots = report.expected,
            failed = report.failed,
            seconds = took.as_secs_f64(),
            "every bot that was running is back"
        );
        if !STARTUP_RECORDED.swap(true, Ordering::AcqRel) {
            metrics::gauge!("keel_startup_seconds").set(took.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relaunch_is_done_when_every_expected_bot_reported_or_gave_up() {
        let mut relaunch = Relaunch::expect([1, 2, 3]);
        assert!(!relaunch.is_done());
        assert_eq!(relaunch.report().pending, [1, 2, 3]);
        relaunch.launched(1, 10);
        relaunch.launched(2, 11);
        relaunch.launched(3, 12);
        // A report from an incarnation that was replaced does not count.
        assert!(!relaunch.reconciled(1, 9));
        assert!(!relaunch.reconciled(1, 10));
        // A bot that died before reporting is launched again; only the new one counts.
        relaunch.launched(2, 13);
        assert!(!relaunch.reconciled(2, 11));
        assert!(!relaunch.reconciled(2, 13));
        assert_eq!(relaunch.report().pending, [3]);
        // The last one fails: nothing is pending any more.
        assert!(relaunch.gave_up(3));
        assert!(relaunch.is_done());
        let report = relaunch.report();
        assert_eq!((report.expected, report.pending_count, report.failed), (3, 0, 1));
        assert!(report.is_done());
        // Late news changes nothing.
        assert!(!relaunch.reconciled(3, 12));
        assert!(!relaunch.gave_up(1));
        // Bots started later (not expected) never hold readiness.
        relaunch.launched(4, 14);
        assert!(relaunch.is_done());
    }

    #[test]
    fn nothing_to_relaunch_is_done_at_once() {
        let relaunch = Relaunch::expect([]);
        assert!(relaunch.is_done());
        assert_eq!(relaunch.report(), RelaunchReport::default());
    }
}
