//! `PgSink`: the supervised actor that drains the sled outbox into Postgres.
//!
//! The actor owns one drain loop (a future in its context, so stopping the actor stops it):
//! 1. connect and migrate the sink's schema, if not done on this connection pool yet;
//! 2. read the oldest `batch_size` outbox rows (on a blocking thread);
//! 3. await a store commit, so every row read is durable in sled before it leaves: Postgres never
//!    holds a change that a crash could take back from Keel;
//! 4. insert them in one Postgres transaction (`ON CONFLICT DO NOTHING`) and commit;
//! 5. only then remove those rows from the outbox.
//!
//! Any error leaves the rows where they are, marks the sink degraded and retries after a bounded,
//! jittered backoff. A batch whose `COMMIT` went through but whose answer was lost is sent again
//! and changes nothing, because each table's primary key comes from the entity's own ids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use deadpool_postgres::Pool;
use rand::Rng;

use super::health::SinkHealth;
use super::outbox::Outbox;
use super::pg::{self, Batch, Statements};
use super::{PgSinkConfig, SINK_CHILD_NAME, SinkError};
use crate::supervisor::{ChildHandle, ChildSpec, Lifeline, StartError, Stop};

/// First wait after an error; it doubles per consecutive error up to `max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How often the sink's gauges are published.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// With nothing to send, Postgres is still pinged this often, so readiness and `keel_sink_up`
/// tell the truth about it while the outbox is empty.
const IDLE_PING: Duration = Duration::from_secs(10);

/// The sink actor. It handles only [`Stop`]: everything else happens in its drain loop, so its
/// mailbox keeps actix's default capacity (16) and is not configurable.
pub struct PgSink {
    config: Arc<PgSinkConfig>,
    outbox: Outbox,
    health: SinkHealth,
    started: Instant,
    _lifeline: Lifeline,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink").field("schema", &self.config.schema).finish_non_exhaustive()
    }
}

impl Actor for PgSink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match Drainer::new(self.config.clone(), self.outbox.clone(), self.health.clone()) {
            Ok(drainer) => {
                ctx.spawn(drainer.run().into_actor(self));
            }
            Err(err) => {
                // Checked at start-up already; if it still fails, say so and stay degraded
                // rather than crash-loop the supervisor.
                tracing::error!(error = %err.detail(), "the Postgres sink cannot start");
                self.health.failed(&err.detail());
            }
        }
        self.health.publish_metrics(self.started);
        ctx.run_interval(METRICS_INTERVAL, |act, _| act.health.publish_metrics(act.started));
    }
}

impl Handler<Stop> for PgSink {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // An interrupted batch is harmless: its rows are still in the outbox.
        ctx.stop();
    }
}

/// The drain loop's state.
struct Drainer {
    config: Arc<PgSinkConfig>,
    outbox: Outbox,
    health: SinkHealth,
    pool: Pool,
    statements: Statements,
    /// Whether the schema was checked since the last error.
    migrated: bool,
    /// When Postgres last answered.
    last_contact: Option<Instant>,
}

impl Drainer {
    fn new(
        config: Arc<PgSinkConfig>,
        outbox: Outbox,
        health: SinkHealth,
    ) -> Result<Self, SinkError> {
        let pool = pg::pool(&config)?;
        let statements = Statements::new(&config.schema);
        Ok(Self { config, outbox, health, pool, statements, migrated: false, last_contact: None })
    }

    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            match self.step().await {
                Ok(step) => {
                    if step.contacted {
                        self.last_contact = Some(Instant::now());
                        let ended = self.health.succeeded(step.delivered);
                        if ended > 0 {
                            tracing::info!(
                                failed_attempts = ended,
                                backlog = self.outbox.backlog(),
                                "Postgres sink reconnected; draining the backlog"
                            );
                        }
                    }
                    failures = 0;
                    if step.delivered < self.config.batch_size {
                        tokio::time::sleep(self.config.poll_interval).await;
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    self.migrated = false;
                    metrics::counter!("keel_sink_errors_total", "reason" => err.reason())
                        .increment(1);
                    let detail = err.detail();
                    self.health.failed(&detail);
                    // What a person must fix is retried at the longest interval, not hammered.
                    let attempt = if err.is_transient() { failures } else { u32::MAX };
                    let wait = backoff(attempt, self.config.max_backoff);
                    tracing::warn!(error = %detail, attempt = failures, backlog = self.outbox.backlog(),
                        retry_in = ?wait, "Postgres sink attempt failed; the backlog is kept");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One pass: connect/migrate if needed, then one batch (or an idle ping).
    async fn step(&mut self) -> Result<Step, SinkError> {
        let mut contacted = false;
        if !self.migrated {
            let mut client = self.pool.get().await?;
            let schema = self.config.schema.clone();
            let after = self.config.batch_timeout;
            let store_id = self.outbox.store_id().to_owned();
            let migration = pg::migrate(&mut client, &schema, &store_id);
            let result = tokio::time::timeout(after, migration).await;
            settle(client, result, "the schema migration", after)?;
            self.migrated = true;
            contacted = true;
        }

        let outbox = self.outbox.clone();
        let max = self.config.batch_size;
        let batch = tokio::task::spawn_blocking(move || {
            outbox.oldest(max).map(|rows| Batch::from_rows(&rows))
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))??;

        if batch.is_empty() {
            let stale = self.last_contact.is_none_or(|t| t.elapsed() >= IDLE_PING);
            if !contacted && stale {
                self.ping().await?;
                contacted = true;
            }
            return Ok(Step { contacted, delivered: 0 });
        }

        // Every row read was written before this commit started, so it is durable once it ends.
        self.outbox.store().commit().await?;

        let started = Instant::now();
        let mut client = self.pool.get().await?;
        let after = self.config.batch_timeout;
        let result =
            tokio::time::timeout(after, pg::write(&mut client, &self.statements, &batch)).await;
        settle(client, result, "a batch", after)?;
        metrics::histogram!("keel_sink_batch_seconds").record(started.elapsed().as_secs_f64());

        // Postgres committed: now, and only now, the rows may leave the outbox.
        let delivered = batch.ids.len();
        let outbox = self.outbox.clone();
        let ids = batch.ids.clone();
        tokio::task::spawn_blocking(move || outbox.remove(&ids))
            .await
            .map_err(|e| SinkError::Task(e.to_string()))??;
        for (kind, rows) in batch.counts() {
            if rows > 0 {
                metrics::counter!("keel_sink_rows_total", "kind" => kind).increment(rows as u64);
            }
        }
        Ok(Step { contacted: true, delivered })
    }

    async fn ping(&self) -> Result<(), SinkError> {
        let client = self.pool.get().await?;
        let after = self.config.batch_timeout;
        let result = tokio::time::timeout(after, async {
            client.simple_query("SELECT 1").await.map(drop).map_err(SinkError::from)
        })
        .await;
        settle(client, result, "a ping", after)
    }
}

/// What one pass did.
struct Step {
    /// Postgres answered during it.
    contacted: bool,
    /// Outbox rows delivered.
    delivered: usize,
}

/// Turns a timed Postgres call's outcome into a result. On any failure the connection is taken
/// out of the pool and closed: after a timeout or a broken stream it cannot be trusted, and
/// `RecyclingMethod::Fast` would hand it out again.
fn settle(
    client: deadpool_postgres::Client,
    result: Result<Result<(), SinkError>, tokio::time::error::Elapsed>,
    what: &'static str,
    after: Duration,
) -> Result<(), SinkError> {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(_) => Err(SinkError::Timeout { what, after }),
    };
    if outcome.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    outcome
}

/// The wait before retry number `attempt` (from 1): between half and all of
/// `min(cap, 100 ms × 2^(attempt-1))`, so retries neither hammer Postgres nor fall into step with
/// another Keel's.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let ceiling = MIN_BACKOFF.saturating_mul(1u32 << exponent).min(cap.max(MIN_BACKOFF));
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(millis / 2 + rand::rng().random_range(0..=millis / 2))
}

/// Starts the sink under a supervisor. Its [`SinkHealth`] outlives restarts.
pub struct PgSinkSpec {
    config: Arc<PgSinkConfig>,
    outbox: Outbox,
    health: SinkHealth,
}

impl std::fmt::Debug for PgSinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSinkSpec").finish_non_exhaustive()
    }
}

impl PgSinkSpec {
    /// A spec for a sink draining `outbox` per `config`, and the health handle readiness reads.
    pub fn new(config: PgSinkConfig, outbox: Outbox) -> (Self, SinkHealth) {
        let health = SinkHealth::new(outbox.clone());
        (Self { config: Arc::new(config), outbox, health: health.clone() }, health)
    }
}

impl ChildSpec for PgSinkSpec {
    fn name(&self) -> &str {
        SINK_CHILD_NAME
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let sink = PgSink {
            config: self.config.clone(),
            outbox: self.outbox.clone(),
            health: self.health.clone(),
            started: Instant::now(),
            _lifeline: lifeline,
        };
        Ok(Box::new(sink.start()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let cap = Duration::from_secs(2);
        for attempt in 1..40 {
            let wait = backoff(attempt, cap);
            let ceiling = MIN_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16));
            let ceiling = ceiling.min(cap);
            assert!(wait <= ceiling, "attempt {attempt}: {wait:?} > {ceiling:?}");
            assert!(wait >= ceiling / 2, "attempt {attempt}: {wait:?} < half of {ceiling:?}");
        }
    }
}
