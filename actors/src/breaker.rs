//! A circuit breaker per venue account (venue, exchange account), shared by every live bot that
//! trades through that account.
//!
//! - **closed**: requests go out; `failure_threshold` failures in a row (the venue unreachable,
//!   or an answer that does not say what happened) open it.
//! - **open**: requests are refused at once, without touching the network, for `open_for`.
//! - **half-open**: after `open_for` the next request goes out as a probe (one at a time); a
//!   failed probe opens the breaker again, `half_open_successes` answered probes in a row close
//!   it.
//!
//! Each transition is counted (`keel_breaker_transitions_total{venue,to}`), sets
//! `keel_breaker_state{venue,account}` (0 closed, 1 half-open, 2 open) and is sent to the bots
//! that subscribed ([`BreakerTransition`]): a bot pauses its strategy when the breaker opens and
//! resumes by itself when it closes, unless its owner paused or stopped it meanwhile. The state
//! machine reads no clock: callers pass `now`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;

use keel_core::market::VenueId;

/// When a breaker opens and how it closes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures in a row that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe may go out.
    pub open_for: Duration,
    /// Answered probes in a row that close it.
    pub half_open_successes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30), half_open_successes: 1 }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Requests go out.
    Closed,
    /// Requests are refused.
    Open,
    /// Probes go out, one at a time.
    HalfOpen,
}

impl BreakerState {
    /// Its name in metrics, events and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// The start of every status reason of a bot the breaker paused: how a restarted Keel knows
/// that the breaker, not the owner, paused it.
pub const BREAKER_REASON: &str = "circuit breaker open";

/// A transition, sent to every subscribed bot of the account.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct BreakerTransition {
    /// The venue.
    pub venue: VenueId,
    /// The exchange account.
    pub account_id: u64,
    /// The new state.
    pub state: BreakerState,
    /// Why (the last failure), for `open`.
    pub reason: Option<String>,
}

/// What became of a request sent under a [`Permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The venue could not be reached or did not say what happened.
    Failed(&'a str),
    /// The venue answered a place or cancel: ends a run of failures.
    Answered,
    /// The venue answered a query: proof enough for a probe, but it does not end a run of
    /// failures (a venue that answers queries and fails every order is still failing).
    Reached,
    /// Keel held the request back itself (the account's order budget): nothing was sent, so it
    /// says nothing about the venue; a probe's turn passes to the next request.
    Unsent,
}

/// Leave to send one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the outcome with Breaker::record"]
pub struct Permit {
    probe: bool,
}

/// The pure state machine.
#[derive(Debug)]
struct Machine {
    state: BreakerState,
    failures: u32,
    successes: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

impl Machine {
    fn new() -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
            opened_at: None,
            probe_in_flight: false,
        }
    }

    /// Leave to send, and the transition that asking caused (open → half-open).
    fn admit(
        &mut self,
        policy: &BreakerPolicy,
        now: Instant,
    ) -> (Option<Permit>, Option<BreakerState>) {
        match self.state {
            BreakerState::Closed => (Some(Permit { probe: false }), None),
            BreakerState::Open => {
                let due = self.opened_at.is_none_or(|at| now.duration_since(at) >= policy.open_for);
                if !due {
                    return (None, None);
                }
                self.state = BreakerState::HalfOpen;
                self.successes = 0;
                self.probe_in_flight = true;
                (Some(Permit { probe: true }), Some(BreakerState::HalfOpen))
            }
            BreakerState::HalfOpen if self.probe_in_flight => (None, None),
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                (Some(Permit { probe: true }), None)
            }
        }
    }

    /// Records an outcome; the transition it caused, if any.
    fn record(
        &mut self,
        policy: &BreakerPolicy,
        permit: Permit,
        outcome: Outcome<'_>,
        now: Instant,
    ) -> Option<BreakerState> {
        if permit.probe {
            self.probe_in_flight = false;
        }
        if outcome == Outcome::Unsent {
            return None;
        }
        let ok = !matches!(outcome, Outcome::Failed(_));
        match (self.state, ok) {
            (BreakerState::Closed, true) => {
                if outcome == Outcome::Answered {
                    self.failures = 0;
                }
                None
            }
            (BreakerState::Closed, false) => {
                self.failures += 1;
                (self.failures >= policy.failure_threshold).then(|| self.open(now))
            }
            // A request admitted before the breaker opened: its failure is old news, and an
            // answer to it is no probe.
            (BreakerState::Open, _) => None,
            (BreakerState::HalfOpen, _) if !permit.probe => None,
            (BreakerState::HalfOpen, false) => Some(self.open(now)),
            (BreakerState::HalfOpen, true) => {
                self.successes += 1;
                (self.successes >= policy.half_open_successes).then(|| {
                    self.state = BreakerState::Closed;
                    self.failures = 0;
                    self.opened_at = None;
                    BreakerState::Closed
                })
            }
        }
    }

    fn open(&mut self, now: Instant) -> BreakerState {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.successes = 0;
        BreakerState::Open
    }
}

#[derive(Debug)]
struct Inner {
    machine: Machine,
    subscribers: Vec<(u64, Recipient<BreakerTransition>)>,
}

/// One venue account's breaker; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Breaker {
    venue: VenueId,
    account_id: u64,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl Breaker {
    fn new(venue: VenueId, account_id: u64, policy: BreakerPolicy) -> Self {
        Self {
            venue,
            account_id,
            policy,
            inner: Mutex::new(Inner { machine: Machine::new(), subscribers: Vec::new() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.lock().machine.state
    }

    /// Leave to send one request now; `None` while open (or while a probe is out).
    pub fn admit(&self, now: Instant) -> Option<Permit> {
        let mut inner = self.lock();
        let (permit, transition) = inner.machine.admit(&self.policy, now);
        if let Some(state) = transition {
            self.announce(&mut inner, state, None);
        }
        permit
    }

    /// Reports what became of a request sent under `permit`.
    pub fn record(&self, permit: Permit, outcome: Outcome<'_>, now: Instant) {
        let mut inner = self.lock();
        let transition = inner.machine.record(&self.policy, permit, outcome, now);
        if let Some(state) = transition {
            let reason = match (state, outcome) {
                (BreakerState::Open, Outcome::Failed(why)) => Some(format!(
                    "{BREAKER_REASON} on {} account {}: the venue failed {} times in a row: {why}",
                    self.venue,
                    self.account_id,
                    inner.machine.failures.max(1)
                )),
                _ => None,
            };
            self.announce(&mut inner, state, reason);
        }
    }

    /// Sends this account's transitions to `recipient` (keyed by bot id) until it
    /// unsubscribes or goes away.
    pub fn subscribe(&self, bot_id: u64, recipient: Recipient<BreakerTransition>) {
        let mut inner = self.lock();
        inner.subscribers.retain(|(id, r)| *id != bot_id && r.connected());
        inner.subscribers.push((bot_id, recipient));
    }

    /// Stops sending to `bot_id`.
    pub fn unsubscribe(&self, bot_id: u64) {
        self.lock().subscribers.retain(|(id, _)| *id != bot_id);
    }

    fn announce(&self, inner: &mut Inner, state: BreakerState, reason: Option<String>) {
        let venue = self.venue.as_str();
        tracing::warn!(
            venue,
            account_id = self.account_id,
            state = state.as_str(),
            ?reason,
            "circuit breaker"
        );
        metrics::counter!("keel_breaker_transitions_total", "venue" => venue, "to" => state.as_str())
            .increment(1);
        metrics::gauge!("keel_breaker_state", "venue" => venue,
            "account" => self.account_id.to_string())
        .set(state.gauge());
        let transition =
            BreakerTransition { venue: self.venue, account_id: self.account_id, state, reason };
        // A bot whose mailbox is full misses this message; it also reads the state on its poll.
        inner.subscribers.retain(|(_, r)| r.connected());
        for (_, recipient) in &inner.subscribers {
            let _ = recipient.try_send(transition.clone());
        }
    }
}

/// The breakers by (venue, exchange account).
type BreakerMap = HashMap<(VenueId, u64), Arc<Breaker>>;

/// Every account's breaker, made on first use under one policy.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    policy: BreakerPolicy,
    map: Arc<Mutex<BreakerMap>>,
}

impl Breakers {
    /// No breakers yet, all to be made under `policy`.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self { policy, map: Arc::default() }
    }

    /// The breaker of `account_id` on `venue`.
    pub fn get(&self, venue: VenueId, account_id: u64) -> Arc<Breaker> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry((venue, account_id))
            .or_insert_with(|| Arc::new(Breaker::new(venue, account_id, self.policy)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        open_for: Duration::from_secs(10),
        half_open_successes: 2,
    };

    fn send(m: &mut Machine, now: Instant, ok: bool) -> Option<BreakerState> {
        let (permit, _) = m.admit(&POLICY, now);
        let outcome = if ok { Outcome::Answered } else { Outcome::Failed("down") };
        m.record(&POLICY, permit.expect("admitted"), outcome, now)
    }

    #[test]
    fn closed_opens_after_n_failures_in_a_row_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut m = Machine::new();
        assert_eq!(send(&mut m, t0, false), None);
        assert_eq!(send(&mut m, t0, false), None);
        assert_eq!(send(&mut m, t0, true), None, "an answered order ends the run");
        let (permit, _) = m.admit(&POLICY, t0);
        assert_eq!(m.record(&POLICY, permit.unwrap(), Outcome::Reached, t0), None);
        assert_eq!(m.failures, 0);
        assert_eq!(send(&mut m, t0, false), None);
        let (permit, _) = m.admit(&POLICY, t0);
        m.record(&POLICY, permit.unwrap(), Outcome::Reached, t0);
        assert_eq!(m.failures, 1, "an answered query does not end the run");
        assert_eq!(send(&mut m, t0, true), None);
        assert_eq!(send(&mut m, t0, false), None);
        assert_eq!(send(&mut m, t0, false), None);
        assert_eq!(send(&mut m, t0, false), Some(BreakerState::Open));
        assert_eq!(m.admit(&POLICY, t0 + Duration::from_secs(9)).0, None, "open refuses");
    }

    #[test]
    fn open_lets_one_probe_through_after_the_wait_and_closes_after_enough_answered_probes() {
        let t0 = Instant::now();
        let mut m = Machine::new();
        for _ in 0..3 {
            send(&mut m, t0, false);
        }
        let t1 = t0 + Duration::from_secs(10);
        let (probe, transition) = m.admit(&POLICY, t1);
        assert_eq!(transition, Some(BreakerState::HalfOpen));
        assert_eq!(m.admit(&POLICY, t1).0, None, "one probe at a time");
        assert_eq!(m.record(&POLICY, probe.unwrap(), Outcome::Reached, t1), None, "needs two");
        assert_eq!(send(&mut m, t1, true), Some(BreakerState::Closed));
        assert!(m.admit(&POLICY, t1).0.is_some());
        // Closed again: the count starts over.
        assert_eq!(send(&mut m, t1, false), None);
    }

    #[test]
    fn a_request_keel_held_back_itself_neither_fails_nor_probes() {
        let t0 = Instant::now();
        let mut m = Machine::new();
        for _ in 0..10 {
            let (permit, _) = m.admit(&POLICY, t0);
            assert_eq!(m.record(&POLICY, permit.unwrap(), Outcome::Unsent, t0), None);
        }
        assert_eq!(m.state, BreakerState::Closed, "held orders do not open it");
        for _ in 0..3 {
            send(&mut m, t0, false);
        }
        let t1 = t0 + Duration::from_secs(10);
        let (probe, _) = m.admit(&POLICY, t1);
        assert_eq!(m.record(&POLICY, probe.unwrap(), Outcome::Unsent, t1), None);
        assert_eq!(m.successes, 0, "a held probe proves nothing");
        assert!(m.admit(&POLICY, t1).0.is_some(), "the next request probes instead");
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_another_wait() {
        let t0 = Instant::now();
        let mut m = Machine::new();
        for _ in 0..3 {
            send(&mut m, t0, false);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(send(&mut m, t1, false), Some(BreakerState::Open));
        assert_eq!(m.admit(&POLICY, t1 + Duration::from_secs(5)).0, None);
        let (_, transition) = m.admit(&POLICY, t1 + Duration::from_secs(10));
        assert_eq!(transition, Some(BreakerState::HalfOpen));
    }

    #[test]
    fn outcomes_of_requests_sent_before_it_opened_change_nothing() {
        let t0 = Instant::now();
        let mut m = Machine::new();
        let early: Vec<Permit> = (0..5).map(|_| m.admit(&POLICY, t0).0.unwrap()).collect();
        let mut opened = 0;
        for permit in early {
            if m.record(&POLICY, permit, Outcome::Failed("down"), t0) == Some(BreakerState::Open) {
                opened += 1;
            }
        }
        assert_eq!(opened, 1, "opens once, not once per late failure");
        let t1 = t0 + Duration::from_secs(10);
        let (probe, _) = m.admit(&POLICY, t1);
        let late = Permit { probe: false };
        assert_eq!(
            m.record(&POLICY, late, Outcome::Answered, t1),
            None,
            "an old answer is no probe"
        );
        assert_eq!(m.state, BreakerState::HalfOpen);
        assert_eq!(m.record(&POLICY, probe.unwrap(), Outcome::Answered, t1), None);
    }

    #[test]
    fn breakers_are_per_venue_account_and_shared() {
        let breakers = Breakers::new(POLICY);
        let a = breakers.get(VenueId::Binance, 1);
        assert!(Arc::ptr_eq(&a, &breakers.get(VenueId::Binance, 1)));
        assert!(!Arc::ptr_eq(&a, &breakers.get(VenueId::Binance, 2)));
        assert!(!Arc::ptr_eq(&a, &breakers.get(VenueId::BinanceFutures, 1)));
        let now = Instant::now();
        for _ in 0..3 {
            let permit = a.admit(now).unwrap();
            a.record(permit, Outcome::Failed("down"), now);
        }
        assert_eq!(a.state(), BreakerState::Open);
        assert_eq!(breakers.get(VenueId::Binance, 2).state(), BreakerState::Closed);
    }
}
