//! Backtests as jobs: a bounded queue in front of a fixed pool of worker threads, so a backtest
//! (seconds to minutes of CPU) never runs on an HTTP worker or an actor's thread.
//!
//! - [`Jobs::submit`] queues a job (refused at once when the queue is full, or when the user
//!   already has `max_per_user` jobs queued or running);
//! - a worker runs it through [`super::run`], reading its files as it goes, publishing progress
//!   (bytes read of the total, ticks) and checking the job's cancel flag between ticks;
//! - [`Jobs::get`] shows progress, then the report; [`Jobs::cancel`] sets the flag (a queued job
//!   never starts, a running one stops at its next tick).
//!
//! With a store ([`Jobs::open`], as the runtime runs them) each job's spec, progress and result
//! are stored ([`stored`]): after a restart queued jobs run, a job that was running runs again,
//! and finished results stay readable. Each user keeps their last `keep_finished` finished jobs;
//! older ones are forgotten (and removed from the store).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::input::{InputError, TradeReader};
use super::{BacktestConfig, Report, run};
use keel_core::market::{MarketEvent, Symbol};
use keel_venues::now_us;

use crate::store::{Store, StoreError};

mod stored;
mod worker;
use stored::{PROGRESS_SAVE_EVERY, StoredJob, StoredSpec};
use worker::work;

/// A job's id, unique in this process.
pub type JobId = u64;

/// How many ticks pass between two progress updates (and cancel checks cost one atomic load
/// per tick).
const PROGRESS_EVERY: u64 = 1024;

/// Pool and limits.
#[derive(Debug, Clone, Copy)]
pub struct JobsConfig {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Jobs that may wait for a worker; more are refused.
    pub queue: usize,
    /// Jobs one user may have queued or running at once.
    pub max_per_user: usize,
    /// Finished jobs kept per user.
    pub keep_finished: usize,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The backtest's settings.
    pub config: BacktestConfig,
    /// Trade files, read one after the other.
    pub files: Vec<PathBuf>,
    /// The symbol of CSV rows (recordings name their own).
    pub symbol: Symbol,
    /// Skip and count rows that do not parse.
    pub skip_bad_rows: bool,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Finished with a report.
    Done,
    /// Stopped by bad input.
    Failed,
    /// Canceled by its owner.
    Canceled,
}

impl JobStatus {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed | JobStatus::Canceled)
    }
}

/// The most fills (and equity points) a finished job keeps for `GET /backtests/{id}`: the last
/// ones. `fill_count` in the report counts them all.
pub const MAX_RESULT_FILLS: usize = 2_000;

/// The report of a finished job.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobResult {
    /// Figures.
    #[serde(flatten)]
    pub report: Report,
    /// Rows skipped (with `skip_bad_rows`, and recordings' torn tails).
    pub skipped_rows: u64,
    /// The run's trades: its last fills (at most 2,000), oldest first.
    #[serde(default)]
    pub fills: Vec<keel_core::trading::Fill>,
    /// Equity (quote balance plus the position at the fill's price) after each of those fills,
    /// replayed from the starting quote over every fill of the run.
    #[serde(default)]
    pub equity: Vec<EquityPoint>,
}

/// One point of a backtest's equity curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EquityPoint {
    /// The fill's time, ms since the epoch.
    pub ts: u64,
    /// Equity after it, in the quote currency.
    #[schema(value_type = String)]
    pub equity: rust_decimal::Decimal,
}

/// The last [`MAX_RESULT_FILLS`] fills and the equity after each, replayed over all of them.
fn trades_and_equity(
    fills: Vec<keel_core::trading::Fill>,
    starting_quote: rust_decimal::Decimal,
) -> (Vec<keel_core::trading::Fill>, Vec<EquityPoint>) {
    let mut position =
        keel_core::trading::Position { quote_balance: starting_quote, ..Default::default() };
    let skip = fills.len().saturating_sub(MAX_RESULT_FILLS);
    let mut equity = Vec::with_capacity(fills.len() - skip);
    for (i, fill) in fills.iter().enumerate() {
        position.apply(fill.side, fill.qty, fill.price, fill.fee);
        if i >= skip {
            let value = position.quote_balance + position.qty * fill.price;
            equity.push(EquityPoint { ts: fill.ts, equity: value });
        }
    }
    let mut fills = fills;
    fills.drain(..skip);
    (fills, equity)
}

/// What `GET /backtests/{id}` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Id.
    pub id: JobId,
    /// Where it is.
    pub status: JobStatus,
    /// Share of the input read, 0 to 1.
    pub progress: f64,
    /// Ticks fed to the engine so far.
    pub ticks: u64,
    /// When it was submitted, started and finished, ms since the epoch.
    pub created_ts: u64,
    /// Started.
    pub started_ts: Option<u64>,
    /// Finished.
    pub finished_ts: Option<u64>,
    /// The report, once done.
    pub result: Option<JobResult>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The user has as many jobs queued or running as allowed.
    #[error("at most {limit} backtests may be queued or running per user")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// The queue is full.
    #[error("the backtest queue is full")]
    Busy,
    /// The job could not be stored; it was not queued.
    #[error("the backtest could not be stored")]
    Store,
}

/// What canceling did.
#[derive(Debug, Clone)]
pub enum Canceled {
    /// The job was queued or running; it stops (the view as it was then).
    Requested(Box<JobView>),
    /// The job had finished; it is forgotten.
    Removed,
}

#[derive(Debug)]
struct Job {
    id: JobId,
    user_id: u64,
    created_ts: u64,
    /// Size of the input, measured when the job starts.
    total_bytes: AtomicU64,
    bytes_read: Arc<AtomicU64>,
    ticks: AtomicU64,
    cancel: AtomicBool,
    /// Set when the application goes away: the job stops like a canceled one, but its stored
    /// row keeps saying queued or running, so it runs again after the restart.
    abandoned: AtomicBool,
    spec: Mutex<Option<JobSpec>>,
    state: Mutex<State>,
}

#[derive(Debug, Clone)]
struct State {
    status: JobStatus,
    started_ts: Option<u64>,
    finished_ts: Option<u64>,
    result: Option<JobResult>,
    error: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves data that is still usable (plain fields).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    now_us() / 1000
}

impl Job {
    fn new(id: JobId, user_id: u64, spec: JobSpec) -> Self {
        Job {
            id,
            user_id,
            created_ts: now_ms(),
            total_bytes: AtomicU64::new(0),
            bytes_read: Arc::default(),
            ticks: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            spec: Mutex::new(Some(spec)),
            state: Mutex::new(State {
                status: JobStatus::Queued,
                started_ts: None,
                finished_ts: None,
                result: None,
                error: None,
            }),
        }
    }

    /// A job read back from the store: a finished one as it ended, any other queued again.
    fn restored(row: StoredJob) -> Self {
        if !row.status.is_final() {
            let mut job = Job::new(row.id, row.user_id, row.spec.into());
            job.created_ts = row.created_ts;
            return job;
        }
        Job {
            id: row.id,
            user_id: row.user_id,
            created_ts: row.created_ts,
            total_bytes: AtomicU64::new(row.total_bytes),
            bytes_read: Arc::new(AtomicU64::new(row.bytes_read)),
            ticks: AtomicU64::new(row.ticks),
            cancel: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            spec: Mutex::new(None),
            state: Mutex::new(State {
                status: row.status,
                started_ts: row.started_ts,
                finished_ts: row.finished_ts,
                result: row.result,
                error: row.error,
            }),
        }
    }

    fn view(&self) -> JobView {
        let state = lock(&self.state).clone();
        let total = self.total_bytes.load(Ordering::Relaxed);
        let progress = match state.status {
            JobStatus::Done => 1.0,
            _ if total == 0 => 0.0,
            _ => (self.bytes_read.load(Ordering::Relaxed) as f64 / total as f64).min(1.0),
        };
        JobView {
            id: self.id,
            status: state.status,
            progress,
            ticks: self.ticks.load(Ordering::Relaxed),
            created_ts: self.created_ts,
            started_ts: state.started_ts,
            finished_ts: state.finished_ts,
            result: state.result,
            error: state.error,
        }
    }

    fn finish(&self, status: JobStatus, result: Option<JobResult>, error: Option<String>) {
        let mut state = lock(&self.state);
        state.status = status;
        state.finished_ts = Some(now_ms());
        state.result = result;
        state.error = error;
    }
}

#[derive(Debug)]
struct Shared {
    config: JobsConfig,
    jobs: Mutex<HashMap<JobId, Arc<Job>>>,
    next_id: AtomicU64,
    queue: SyncSender<Arc<Job>>,
    /// Where jobs are kept across restarts; `None` keeps them in memory only.
    store: Option<Store>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The application is going away: running jobs stop at their next tick, queued ones
        // never start (the workers end once the queue is gone).
        for job in lock(&self.jobs).values() {
            job.abandoned.store(true, Ordering::Relaxed);
            job.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// The job registry and its worker pool. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Jobs {
    shared: Arc<Shared>,
}

impl Jobs {
    /// Starts `config.workers` worker threads, with jobs kept in memory only.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn start(config: JobsConfig) -> std::io::Result<Self> {
        Self::spawn(config, None)
    }

    /// Starts the workers with jobs kept in `store`, and brings back the stored ones: finished
    /// jobs with their results, queued and running ones queued again in their order (behind the
    /// queue's capacity, from a thread of their own, so none is refused).
    ///
    /// # Errors
    /// The stored jobs cannot be read, or a thread could not be spawned.
    pub fn open(config: JobsConfig, store: Store) -> Result<Self, StoreError> {
        let thread_error = |source| StoreError::Io { path: store.path().to_path_buf(), source };
        let rows = stored::load(&store)?;
        let jobs = Self::spawn(config, Some(store.clone())).map_err(thread_error)?;
        let mut again = Vec::new();
        {
            let mut map = lock(&jobs.shared.jobs);
            for row in rows {
                if !row.status.is_final() {
                    stored::update(&store, row.id, |r| {
                        r.status = JobStatus::Queued;
                        r.started_ts = None;
                        (r.ticks, r.bytes_read, r.total_bytes) = (0, 0, 0);
                    })?;
                }
                let job = Arc::new(Job::restored(row));
                if !lock(&job.state).status.is_final() {
                    again.push(job.clone());
                }
                map.insert(job.id, job);
            }
        }
        if !again.is_empty() {
            tracing::info!(jobs = again.len(), "backtests queued again after the restart");
            let queue = jobs.shared.queue.clone();
            std::thread::Builder::new()
                .name("keel-backtest-requeue".into())
                .spawn(move || {
                    for job in again {
                        if queue.send(job).is_err() {
                            return;
                        }
                    }
                })
                .map_err(thread_error)?;
        }
        Ok(jobs)
    }

    fn spawn(config: JobsConfig, store: Option<Store>) -> std::io::Result<Self> {
        let (queue, rx) = sync_channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.workers.max(1) {
            let (rx, store) = (rx.clone(), store.clone());
            std::thread::Builder::new()
                .name(format!("keel-backtest-{i}"))
                .spawn(move || work(&rx, store.as_ref()))?;
        }
        let shared = Shared {
            config,
            jobs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue,
            store,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The store jobs are kept in, if any: a caller acknowledging a submit or a removal awaits
    /// its commit first.
    pub fn store(&self) -> Option<&Store> {
        self.shared.store.as_ref()
    }

    /// Queues a job for `user_id`.
    ///
    /// # Errors
    /// The user has too many jobs queued or running, or the queue is full.
    pub fn submit(&self, user_id: u64, spec: JobSpec) -> Result<JobView, SubmitError> {
        let config = self.shared.config;
        let mut jobs = lock(&self.shared.jobs);
        let active = jobs
            .values()
            .filter(|j| j.user_id == user_id && !lock(&j.state).status.is_final())
            .count();
        if active >= config.max_per_user {
            return Err(SubmitError::TooMany { limit: config.max_per_user });
        }
        let store = self.shared.store.as_ref();
        let id = match store {
            // Unique across restarts: a stored job keeps its id.
            Some(store) => store.next_id().map_err(store_failed)?,
            None => self.shared.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let row = store.map(|_| StoredJob {
            id,
            user_id,
            created_ts: now_ms(),
            spec: StoredSpec::from(&spec),
            status: JobStatus::Queued,
            started_ts: None,
            finished_ts: None,
            ticks: 0,
            bytes_read: 0,
            total_bytes: 0,
            result: None,
            error: None,
        });
        let job = Arc::new(Job::new(id, user_id, spec));
        if let (Some(store), Some(row)) = (store, &row) {
            stored::save(store, row).map_err(store_failed)?;
        }
        if self.shared.queue.try_send(job.clone()).is_err() {
            // Full (or, while shutting down, closed).
            if let Some(store) = store {
                let _ = stored::remove(store, id);
            }
            metrics::counter!("keel_backtest_jobs_total", "outcome" => "refused").increment(1);
            return Err(SubmitError::Busy);
        }
        metrics::counter!("keel_backtest_jobs_total", "outcome" => "queued").increment(1);
        jobs.insert(job.id, job.clone());
        for id in forget_old(&mut jobs, user_id, config.keep_finished) {
            self.forget_stored(id);
        }
        Ok(job.view())
    }

    /// A job of `user_id`'s; `None` for an unknown id or another user's job.
    pub fn get(&self, user_id: u64, id: JobId) -> Option<JobView> {
        lock(&self.shared.jobs).get(&id).filter(|j| j.user_id == user_id).map(|j| j.view())
    }

    /// `user_id`'s jobs, newest first.
    pub fn list(&self, user_id: u64) -> Vec<JobView> {
        let mut jobs = lock(&self.shared.jobs);
        for id in forget_old(&mut jobs, user_id, self.shared.config.keep_finished) {
            self.forget_stored(id);
        }
        let mut views: Vec<JobView> =
            jobs.values().filter(|j| j.user_id == user_id).map(|j| j.view()).collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.id));
        views
    }

    /// Cancels a queued or running job, or forgets a finished one; `None` for an unknown id or
    /// another user's job.
    pub fn cancel(&self, user_id: u64, id: JobId) -> Option<Canceled> {
        let mut jobs = lock(&self.shared.jobs);
        let job = jobs.get(&id).filter(|j| j.user_id == user_id)?.clone();
        let status = lock(&job.state).status;
        if status.is_final() {
            jobs.remove(&id);
            self.forget_stored(id);
            return Some(Canceled::Removed);
        }
        job.cancel.store(true, Ordering::Relaxed);
        Some(Canceled::Requested(Box::new(job.view())))
    }
}

impl Jobs {
    /// Removes a forgotten job's stored row (durable at the next commit; a crash before it
    /// brings back a job that was forgotten anyway, never loses one that was not).
    fn forget_stored(&self, id: JobId) {
        if let Some(store) = &self.shared.store
            && let Err(err) = stored::remove(store, id)
        {
            tracing::warn!(job = id, error = %err, "a forgotten backtest stays stored");
        }
    }

    /// Cancels every job of `user_id`'s and forgets them all, stored rows included (account
    /// deletion). A running job stops at its next tick; its result goes nowhere.
    pub fn forget_user(&self, user_id: u64) -> usize {
        let mut removed = Vec::new();
        {
            let mut jobs = lock(&self.shared.jobs);
            jobs.retain(|id, job| {
                if job.user_id != user_id {
                    return true;
                }
                job.cancel.store(true, Ordering::Relaxed);
                removed.push(*id);
                false
            });
        }
        for id in &removed {
            self.forget_stored(*id);
        }
        removed.len()
    }
}

fn store_failed(err: StoreError) -> SubmitError {
    tracing::error!(error = %err, "storing a backtest failed");
    SubmitError::Store
}

/// Forgets `user_id`'s oldest finished jobs beyond `keep`; their ids.
fn forget_old(jobs: &mut HashMap<JobId, Arc<Job>>, user_id: u64, keep: usize) -> Vec<JobId> {
    let mut finished: Vec<JobId> = jobs
        .values()
        .filter(|j| j.user_id == user_id && lock(&j.state).status.is_final())
        .map(|j| j.id)
        .collect();
    if finished.len() <= keep {
        return Vec::new();
    }
    finished.sort_unstable();
    let old = finished[..finished.len() - keep].to_vec();
    for id in &old {
        jobs.remove(id);
    }
    old
}

#[cfg(test)]
mod tests;
