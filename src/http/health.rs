//! `GET /health/live` and `GET /health/ready`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use keel_actors::bot::{GetRelaunch, RelaunchReport};
use keel_actors::mailbox::ask;
use keel_actors::sink::{SINK_CHILD_NAME, SinkReport, SinkState};
use keel_actors::supervisor::{ChildState, GetStatus};
use serde_json::json;

use super::error::{ApiError, FieldError};
use crate::state::AppState;

/// How long each readiness check may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// The last readiness verdict, reused for `server.ready_cache_ms` so that polling
/// `/health/ready` (by anyone: it needs no token) cannot make the store flush on every call.
/// Callers that arrive while a check runs wait for it and share its verdict.
#[derive(Debug, Default)]
pub struct ReadyCache {
    last: tokio::sync::Mutex<Option<(Instant, Verdict)>>,
}

#[derive(Debug, Clone)]
enum Verdict {
    Ready(serde_json::Value),
    NotReady(Vec<FieldError>),
}

impl Verdict {
    fn answer(self) -> Result<HttpResponse, ApiError> {
        match self {
            Self::Ready(body) => Ok(HttpResponse::Ok().json(body)),
            Self::NotReady(problems) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                "Keel is not ready",
            )
            .with_details(problems)
            .retry_after(5)),
        }
    }
}

/// Liveness: the process serves HTTP. Touches nothing else, so it stays fast under load.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "live"}))
}

/// Readiness: the store takes a durable write and has its free-space reserve (`store.disk`: below
/// `store.min_free_bytes` new orders and bot starts are refused and bots paused), every
/// supervised actor is running, and every bot
/// that was running before the stop is running again with its open orders reconciled
/// (`checks.bots`; a bot that could not come back is counted as failed and shows its own status
/// instead of holding readiness). In cluster mode the node's NATS connection must be up
/// (`checks.cluster`): without it the node neither relays nor receives market data; and with
/// `cluster.postgres_url`, Postgres must answer (`cluster.postgres`): without it no one can log
/// in, and authenticated requests are refused once the revocation list goes stale. The Postgres sink is reported (`checks.sink`) but never makes Keel unready: trading does not
/// depend on it, and its backlog waits safely in the outbox.
///
/// The verdict is reused for `server.ready_cache_ms` (`checked_at_ms` says when it was made).
///
/// # Errors
/// 503 `NOT_READY` with one detail per failing check.
pub async fn ready(
    state: web::Data<AppState>,
    cache: web::Data<ReadyCache>,
) -> Result<HttpResponse, ApiError> {
    let fresh_for = Duration::from_millis(state.settings.server.ready_cache_ms);
    let mut last = cache.last.lock().await;
    if let Some((at, verdict)) = last.as_ref()
        && at.elapsed() < fresh_for
    {
        return verdict.clone().answer();
    }
    let verdict = check(&state).await;
    *last = Some((Instant::now(), verdict.clone()));
    drop(last);
    verdict.answer()
}

/// Runs every readiness check once (the store probe flushes).
async fn check(state: &AppState) -> Verdict {
    let mut problems = Vec::new();
    match tokio::time::timeout(CHECK_DEADLINE, state.store.probe_writable()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => problems.push(FieldError::new("store", format!("not writable: {err}"))),
        Err(_) => problems.push(FieldError::new("store", "flush took longer than 2 s")),
    }
    if let Err(low) = state.store.disk().refuse_if_low() {
        problems.push(FieldError::new("store.disk", low.to_string()));
    }
    let mut sink = state.sink.as_ref().map_or_else(SinkReport::disabled, |s| s.report());
    let actors = match ask(&state.root, GetStatus, CHECK_DEADLINE, "root supervisor").await {
        Ok(status) => {
            for child in &status.children {
                if child.name == SINK_CHILD_NAME {
                    if child.state != ChildState::Running {
                        sink.state = SinkState::Degraded;
                        sink.last_error = Some(format!("the sink actor is {:?}", child.state));
                    }
                } else if child.state != ChildState::Running {
                    problems.push(FieldError::new(
                        format!("actors.{}", child.name),
                        format!("{:?}", child.state).to_lowercase(),
                    ));
                }
            }
            for failure in &status.escalated {
                problems.push(FieldError::new(
                    format!("actors.{}.{}", failure.supervisor, failure.child),
                    format!("failed: {}", failure.reason),
                ));
            }
            Some(status)
        }
        Err(err) => {
            problems.push(FieldError::new("actors", err.to_string()));
            None
        }
    };
    let postgres = match &state.record {
        None => None,
        Some(record) => Some(match tokio::time::timeout(CHECK_DEADLINE, record.ping()).await {
            Ok(Ok(())) => "connected",
            Ok(Err(err)) => {
                problems.push(FieldError::new("cluster.postgres", err.detail()));
                "unreachable"
            }
            Err(_) => {
                problems.push(FieldError::new("cluster.postgres", "did not answer within 2 s"));
                "unreachable"
            }
        }),
    };
    let cluster = state.cluster.as_ref().map(|cluster| {
        let connected = cluster.connected();
        if !connected {
            problems.push(FieldError::new("cluster.nats", "not connected to NATS"));
        }
        let advertise = &state.settings.cluster.advertise_url;
        json!({
            "node_id": cluster.node_id(),
            "nats": if connected { "connected" } else { "disconnected" },
            "postgres": postgres,
            "advertise_url": (!advertise.is_empty()).then_some(advertise),
        })
    });
    let bots = bots_back(state, &mut problems).await;
    if !problems.is_empty() {
        return Verdict::NotReady(problems);
    }
    let checked_at_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Verdict::Ready(json!({
        "status": "ready",
        "checked_at_ms": checked_at_ms,
        "checks": { "store": "ok", "actors": actors, "bots": bots, "sink": sink, "cluster": cluster },
    }))
}

/// How far the bot supervisor has come in bringing back the bots that were running before the
/// stop; a problem while any is not back (or the supervisor itself is not there yet).
async fn bots_back(state: &AppState, problems: &mut Vec<FieldError>) -> Option<RelaunchReport> {
    let supervisor = match state.bots() {
        Ok(supervisor) => supervisor,
        Err(_) => {
            problems.push(FieldError::new("bots", "the bot supervisor is starting"));
            return None;
        }
    };
    match ask(&supervisor, GetRelaunch, CHECK_DEADLINE, "bots").await {
        Ok(report) => {
            if !report.is_done() {
                problems.push(FieldError::new(
                    "bots",
                    format!(
                        "{} of the {} bots that were running are not back yet",
                        report.pending_count, report.expected
                    ),
                ));
            }
            Some(report)
        }
        Err(err) => {
            problems.push(FieldError::new("bots", err.to_string()));
            None
        }
    }
}
