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
//! Jobs live in memory: a restart forgets them. Each user keeps their last `keep_finished`
//! finished jobs; older ones are forgotten.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use super::input::{InputError, TradeReader};
use super::{BacktestConfig, Report, run};
use keel_core::market::{MarketEvent, Symbol};
use keel_venues::now_us;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

/// The report of a finished job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobResult {
    /// Figures.
    #[serde(flatten)]
    pub report: Report,
    /// Rows skipped (with `skip_bad_rows`, and recordings' torn tails).
    pub skipped_rows: u64,
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
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The application is going away: running jobs stop at their next tick, queued ones
        // never start (the workers end once the queue is gone).
        for job in lock(&self.jobs).values() {
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
    /// Starts `config.workers` worker threads.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn start(config: JobsConfig) -> std::io::Result<Self> {
        let (queue, rx) = sync_channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("keel-backtest-{i}"))
                .spawn(move || work(&rx))?;
        }
        let shared =
            Shared { config, jobs: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), queue };
        Ok(Self { shared: Arc::new(shared) })
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
        let job = Arc::new(Job {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            user_id,
            created_ts: now_ms(),
            total_bytes: AtomicU64::new(0),
            bytes_read: Arc::default(),
            ticks: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            spec: Mutex::new(Some(spec)),
            state: Mutex::new(State {
                status: JobStatus::Queued,
                started_ts: None,
                finished_ts: None,
                result: None,
                error: None,
            }),
        });
        if self.shared.queue.try_send(job.clone()).is_err() {
            // Full (or, while shutting down, closed).
            metrics::counter!("keel_backtest_jobs_total", "outcome" => "refused").increment(1);
            return Err(SubmitError::Busy);
        }
        metrics::counter!("keel_backtest_jobs_total", "outcome" => "queued").increment(1);
        jobs.insert(job.id, job.clone());
        forget_old(&mut jobs, user_id, config.keep_finished);
        Ok(job.view())
    }

    /// A job of `user_id`'s; `None` for an unknown id or another user's job.
    pub fn get(&self, user_id: u64, id: JobId) -> Option<JobView> {
        lock(&self.shared.jobs).get(&id).filter(|j| j.user_id == user_id).map(|j| j.view())
    }

    /// `user_id`'s jobs, newest first.
    pub fn list(&self, user_id: u64) -> Vec<JobView> {
        let mut jobs = lock(&self.shared.jobs);
        forget_old(&mut jobs, user_id, self.shared.config.keep_finished);
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
            return Some(Canceled::Removed);
        }
        job.cancel.store(true, Ordering::Relaxed);
        Some(Canceled::Requested(Box::new(job.view())))
    }
}

impl Jobs {
    /// Cancels every job of `user_id`'s and forgets them all (account deletion). A running job
    /// stops at its next tick; its result goes nowhere.
    pub fn forget_user(&self, user_id: u64) -> usize {
        let mut jobs = lock(&self.shared.jobs);
        let before = jobs.len();
        jobs.retain(|_, job| {
            if job.user_id != user_id {
                return true;
            }
            job.cancel.store(true, Ordering::Relaxed);
            false
        });
        before - jobs.len()
    }
}

/// Forgets `user_id`'s oldest finished jobs beyond `keep`.
fn forget_old(jobs: &mut HashMap<JobId, Arc<Job>>, user_id: u64, keep: usize) {
    let mut finished: Vec<JobId> = jobs
        .values()
        .filter(|j| j.user_id == user_id && lock(&j.state).status.is_final())
        .map(|j| j.id)
        .collect();
    if finished.len() <= keep {
        return;
    }
    finished.sort_unstable();
    for id in &finished[..finished.len() - keep] {
        jobs.remove(id);
    }
}

/// A worker: takes jobs until the queue is gone.
fn work(rx: &Mutex<Receiver<Arc<Job>>>) {
    loop {
        let next = lock(rx).recv();
        let Ok(job) = next else { return };
        let spec = lock(&job.spec).take();
        let Some(spec) = spec else { continue };
        if job.cancel.load(Ordering::Relaxed) {
            job.finish(JobStatus::Canceled, None, None);
            continue;
        }
        let total: u64 =
            spec.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        job.total_bytes.store(total, Ordering::Relaxed);
        {
            let mut state = lock(&job.state);
            state.status = JobStatus::Running;
            state.started_ts = Some(now_ms());
        }
        // The engine runs strategy code: a panic fails this job, not the worker.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(&job, spec)));
        let (status, result, error) = match outcome {
            Ok(Ok(result)) => (JobStatus::Done, Some(result), None),
            Ok(Err(Failure::Canceled)) => (JobStatus::Canceled, None, None),
            Ok(Err(Failure::Input(error))) => (JobStatus::Failed, None, Some(error)),
            Err(_) => (JobStatus::Failed, None, Some("the backtest crashed".to_owned())),
        };
        let label = match status {
            JobStatus::Done => "done",
            JobStatus::Canceled => "canceled",
            _ => "failed",
        };
        metrics::counter!("keel_backtest_jobs_total", "outcome" => label).increment(1);
        job.finish(status, result, error);
    }
}

/// Why a job ended without a report.
#[derive(Debug)]
enum Failure {
    Canceled,
    Input(String),
}

/// Runs one job to its end.
fn execute(job: &Job, spec: JobSpec) -> Result<JobResult, Failure> {
    let mut ticks = Ticks {
        job,
        files: spec.files.into_iter(),
        symbol: spec.symbol,
        skip_bad_rows: spec.skip_bad_rows,
        current: None,
        skipped: 0,
        seen: 0,
    };
    match run(&spec.config, ticks.by_ref()) {
        Err(fields) => {
            let problems: Vec<String> =
                fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
            Err(Failure::Input(format!("invalid strategy: {}", problems.join("; "))))
        }
        Ok(Err(failure)) => Err(failure),
        Ok(Ok(outcome)) => {
            job.ticks.store(outcome.report.ticks, Ordering::Relaxed);
            let skipped = ticks.skipped + ticks.current.as_ref().map_or(0, TradeReader::skipped);
            Ok(JobResult { report: outcome.report, skipped_rows: skipped })
        }
    }
}

/// A job's ticks: its files one after the other, with progress published and the cancel flag
/// checked as they are read.
struct Ticks<'a> {
    job: &'a Job,
    files: std::vec::IntoIter<PathBuf>,
    symbol: Symbol,
    skip_bad_rows: bool,
    current: Option<TradeReader<super::input::CountedFile>>,
    /// Rows skipped in files already read.
    skipped: u64,
    seen: u64,
}

impl Iterator for Ticks<'_> {
    type Item = Result<MarketEvent, Failure>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.job.cancel.load(Ordering::Relaxed) {
            return Some(Err(Failure::Canceled));
        }
        loop {
            if let Some(reader) = &mut self.current {
                match reader.next() {
                    Some(Ok(event)) => {
                        self.seen += 1;
                        if self.seen.is_multiple_of(PROGRESS_EVERY) {
                            self.job.ticks.store(self.seen, Ordering::Relaxed);
                        }
                        return Some(Ok(event));
                    }
                    Some(Err(InputError { file, line, reason })) => {
                        let message = format!(
                            "{}:{line}: {reason}",
                            file.file_name()
                                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                        );
                        return Some(Err(Failure::Input(message)));
                    }
                    None => {
                        self.skipped += reader.skipped();
                        self.current = None;
                    }
                }
            }
            let path = self.files.next()?;
            match TradeReader::open_counted(
                &path,
                self.symbol.clone(),
                self.skip_bad_rows,
                self.job.bytes_read.clone(),
            ) {
                Ok(reader) => self.current = Some(reader),
                Err(err) => {
                    // Only the file name: the data directory is the server's business.
                    let name = path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    let reason = err.to_string();
                    let prefix = format!("{}: ", path.display());
                    let reason = reason.strip_prefix(&prefix).unwrap_or(&reason);
                    return Some(Err(Failure::Input(format!("{name}: {reason}"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
