//! The sink's state, shared between its actor (which writes it), readiness (which reads it) and
//! the metrics it publishes. It outlives restarts of the actor.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

use super::outbox::Outbox;

/// How the sink is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    /// Not configured (`sink.postgres.url` unset).
    Disabled,
    /// Configured, not yet connected.
    Starting,
    /// The last attempt to reach Postgres worked.
    Ok,
    /// The last attempt failed; the backlog is kept and retried.
    Degraded,
}

/// What readiness shows of the sink.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// The state.
    pub state: SinkState,
    /// Outbox rows waiting for Postgres.
    pub backlog: u64,
    /// Rows delivered since Keel started.
    pub delivered: u64,
    /// Seconds since Postgres last answered, if it ever did since start.
    pub last_success_age_secs: Option<u64>,
    /// Failed attempts since the last success.
    pub consecutive_errors: u32,
    /// The most recent error, until the next success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl SinkReport {
    /// The report for a Keel without a sink.
    pub fn disabled() -> Self {
        Self {
            state: SinkState::Disabled,
            backlog: 0,
            delivered: 0,
            last_success_age_secs: None,
            consecutive_errors: 0,
            last_error: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: SinkState,
    delivered: u64,
    last_success: Option<Instant>,
    consecutive_errors: u32,
    last_error: Option<String>,
}

/// The shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SinkHealth {
    inner: Arc<Mutex<Inner>>,
    outbox: Outbox,
}

impl SinkHealth {
    /// A fresh state for a sink draining `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state: SinkState::Starting,
                delivered: 0,
                last_success: None,
                consecutive_errors: 0,
                last_error: None,
            })),
            outbox,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Postgres answered; `rows` more were delivered. Returns the errors this ends.
    pub fn succeeded(&self, rows: usize) -> u32 {
        self.with(|inner| {
            inner.state = SinkState::Ok;
            inner.delivered += rows as u64;
            inner.last_success = Some(Instant::now());
            inner.last_error = None;
            std::mem::take(&mut inner.consecutive_errors)
        })
    }

    /// An attempt failed. Returns how many have failed in a row.
    pub fn failed(&self, error: &str) -> u32 {
        self.with(|inner| {
            inner.state = SinkState::Degraded;
            inner.consecutive_errors = inner.consecutive_errors.saturating_add(1);
            inner.last_error = Some(error.to_owned());
            inner.consecutive_errors
        })
    }

    /// The current report.
    pub fn report(&self) -> SinkReport {
        let backlog = self.outbox.backlog();
        self.with(|inner| SinkReport {
            state: inner.state,
            backlog,
            delivered: inner.delivered,
            last_success_age_secs: inner.last_success.map(|t| t.elapsed().as_secs()),
            consecutive_errors: inner.consecutive_errors,
            last_error: inner.last_error.clone(),
        })
    }

    /// Sets the gauges: `keel_sink_backlog`, `keel_sink_last_success_age_seconds` (time since
    /// start while Postgres has not answered yet) and `keel_sink_up` (1 when the last attempt
    /// worked).
    pub fn publish_metrics(&self, started: Instant) {
        let backlog = self.outbox.backlog();
        let (age, up) = self.with(|inner| {
            let since = inner.last_success.unwrap_or(started);
            (since.elapsed().as_secs_f64(), inner.state == SinkState::Ok)
        });
        metrics::gauge!("keel_sink_backlog").set(backlog as f64);
        metrics::gauge!("keel_sink_last_success_age_seconds").set(age);
        metrics::gauge!("keel_sink_up").set(if up { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreConfig};

    #[test]
    fn failures_degrade_the_state_until_a_success_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let health = SinkHealth::new(Outbox::open(&store).unwrap());
        let report = health.report();
        assert_eq!(report.state, SinkState::Starting);
        assert_eq!(report.last_success_age_secs, None);

        assert_eq!(health.failed("connection refused"), 1);
        assert_eq!(health.failed("connection refused"), 2);
        let report = health.report();
        assert_eq!(report.state, SinkState::Degraded);
        assert_eq!(report.last_error.as_deref(), Some("connection refused"));

        assert_eq!(health.succeeded(7), 2, "the success ends two failures");
        let report = health.report();
        assert_eq!(
            (report.state, report.delivered, report.consecutive_errors),
            (SinkState::Ok, 7, 0)
        );
        assert_eq!(report.last_error, None);
        assert_eq!(report.last_success_age_secs, Some(0));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["state"], "ok");
        assert!(json.get("last_error").is_none());
    }
}
