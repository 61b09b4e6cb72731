//! The restart budget: how many restarts a supervisor allows a child within a sliding window.
//!
//! Every supervisor that restarts actors (the generic [`super::Supervisor`] and the bot
//! supervisor) keeps one [`RestartWindow`] per child, so a child that keeps dying is given up on
//! (and the failure escalated) instead of restarted in a loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many restarts a supervisor allows within a period before it gives up on a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `period`.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub period: Duration,
}

impl Default for RestartPolicy {
    /// Three restarts in ten seconds, as in DESIGN.md.
    fn default() -> Self {
        Self { max_restarts: 3, period: Duration::from_secs(10) }
    }
}

/// One child's recent restarts under a [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct RestartWindow {
    policy: RestartPolicy,
    /// When each restart still inside the window happened, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartWindow {
    /// A window with no restarts yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self { policy, recent: VecDeque::new() }
    }

    /// The policy this window applies.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Whether a child that died at `now` may be restarted. If so, the restart is counted;
    /// if not, the budget is spent and the child should be marked failed.
    pub fn admit(&mut self, now: Instant) -> bool {
        let period = self.policy.period;
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > period) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RestartPolicy =
        RestartPolicy { max_restarts: 3, period: Duration::from_secs(10) };

    #[test]
    fn the_budget_allows_max_restarts_within_the_period_and_no_more() {
        let start = Instant::now();
        let mut window = RestartWindow::new(POLICY);
        for n in 0..3 {
            assert!(window.admit(start + Duration::from_secs(n)), "restart {n}");
        }
        assert!(!window.admit(start + Duration::from_secs(3)));
        // A refused restart is not counted: the budget stays spent, not more than spent.
        assert!(!window.admit(start + Duration::from_secs(4)));
    }

    #[test]
    fn restarts_older_than_the_period_leave_the_window() {
        let start = Instant::now();
        let mut window = RestartWindow::new(POLICY);
        for n in 0..3 {
            assert!(window.admit(start + Duration::from_secs(n)));
        }
        // The first restart (at 0 s) is more than 10 s old at 10.5 s; the others are not.
        assert!(window.admit(start + Duration::from_millis(10_500)));
        assert!(!window.admit(start + Duration::from_millis(10_600)));
    }

    #[test]
    fn a_zero_budget_restarts_nothing() {
        let mut window = RestartWindow::new(RestartPolicy { max_restarts: 0, ..POLICY });
        assert!(!window.admit(Instant::now()));
    }
}
