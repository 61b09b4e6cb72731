//! The worker side of backtest jobs: a worker thread takes queued jobs, runs each over its
//! input through the engine (`execute`, with `Ticks` reading the input and reporting progress),
//! and records what happens to it in the store as it goes (`note`, `finish_stored`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Writes a change to a job's row, logging (not failing the job) when the store refuses.
fn note(store: Option<&Store>, id: JobId, change: impl FnOnce(&mut StoredJob)) {
    if let Some(store) = store
        && let Err(err) = stored::update(store, id, change)
    {
        tracing::warn!(job = id, error = %err, "storing a backtest's progress failed");
    }
}

/// A worker: takes jobs until the queue is gone.
pub(super) fn work(rx: &Mutex<Receiver<Arc<Job>>>, store: Option<&Store>) {
    loop {
        let next = lock(rx).recv();
        let Ok(job) = next else { return };
        let spec = lock(&job.spec).take();
        let Some(spec) = spec else { continue };
        if job.cancel.load(Ordering::Relaxed) {
            job.finish(JobStatus::Canceled, None, None);
            if !job.abandoned.load(Ordering::Relaxed) {
                finish_stored(store, &job);
            }
            continue;
        }
        let total: u64 =
            spec.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        job.total_bytes.store(total, Ordering::Relaxed);
        let started = now_ms();
        {
            let mut state = lock(&job.state);
            state.status = JobStatus::Running;
            state.started_ts = Some(started);
        }
        note(store, job.id, |r| {
            r.status = JobStatus::Running;
            r.started_ts = Some(started);
            r.total_bytes = total;
        });
        // The engine runs strategy code: a panic fails this job, not the worker.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(&job, spec, store)));
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
        if status == JobStatus::Canceled && job.abandoned.load(Ordering::Relaxed) {
            // Stopped by the shutdown, not its owner: its row still says running.
            continue;
        }
        metrics::counter!("keel_backtest_jobs_total", "outcome" => label).increment(1);
        job.finish(status, result, error);
        finish_stored(store, &job);
    }
}

/// Stores a job's end durably: its result is readable after any restart from now on.
fn finish_stored(store: Option<&Store>, job: &Job) {
    let Some(store) = store else { return };
    let view = job.view();
    let (bytes_read, total_bytes) =
        (job.bytes_read.load(Ordering::Relaxed), job.total_bytes.load(Ordering::Relaxed));
    note(Some(store), job.id, |r| {
        r.status = view.status;
        r.started_ts = view.started_ts;
        r.finished_ts = view.finished_ts;
        r.ticks = view.ticks;
        r.bytes_read = bytes_read;
        r.total_bytes = total_bytes;
        r.result = view.result;
        r.error = view.error;
    });
    if let Err(err) = store.flush_blocking() {
        tracing::warn!(job = job.id, error = %err, "flushing a finished backtest failed");
    }
}

/// Why a job ended without a report.
#[derive(Debug)]
enum Failure {
    Canceled,
    Input(String),
}

/// Runs one job to its end.
fn execute(job: &Job, spec: JobSpec, store: Option<&Store>) -> Result<JobResult, Failure> {
    let mut ticks = Ticks {
        job,
        store,
        last_save: std::time::Instant::now(),
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
            let (fills, equity) = trades_and_equity(outcome.fills, spec.config.starting_quote);
            Ok(JobResult { report: outcome.report, skipped_rows: skipped, fills, equity })
        }
    }
}

/// A job's ticks: its files one after the other, with progress published and the cancel flag
/// checked as they are read.
struct Ticks<'a> {
    job: &'a Job,
    /// Where progress is saved, every [`PROGRESS_SAVE_EVERY`].
    store: Option<&'a Store>,
    last_save: std::time::Instant,
    files: std::vec::IntoIter<PathBuf>,
    symbol: Symbol,
    skip_bad_rows: bool,
    current: Option<TradeReader<crate::backtest::input::CountedFile>>,
    /// Rows skipped in files already read.
    skipped: u64,
    seen: u64,
}

impl Ticks<'_> {
    fn save_progress(&mut self) {
        if self.store.is_none() || self.last_save.elapsed() < PROGRESS_SAVE_EVERY {
            return;
        }
        self.last_save = std::time::Instant::now();
        let (ticks, bytes) = (self.seen, self.job.bytes_read.load(Ordering::Relaxed));
        note(self.store, self.job.id, |r| (r.ticks, r.bytes_read) = (ticks, bytes));
    }
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
                            self.save_progress();
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
