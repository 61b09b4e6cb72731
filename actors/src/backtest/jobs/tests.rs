//! The job pool: results, progress, cancel, limits, failures.

use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::*;
use crate::backtest::input::{synth, write_csv};
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_venues::sim::Instrument;

fn spec(files: Vec<PathBuf>) -> JobSpec {
    let symbol = Symbol::parse("BTCUSDT").unwrap();
    JobSpec {
        config: BacktestConfig {
            bot_id: 0,
            strategy: StrategySpec {
                kind: "ema_cross".into(),
                params: serde_json::json!({"fast": 5, "slow": 20, "qty": "0.001"}),
                module_id: None,
            },
            filters: Instrument::for_symbol(symbol.clone()).filters(),
            risk: RiskLimits::default(),
            bracket: None,
            fee_bps: Decimal::TEN,
            slippage_bps: Decimal::from(5),
            starting_quote: Decimal::from(10_000),
            futures: None,
        },
        files,
        symbol,
        skip_bad_rows: false,
    }
}

fn csv(dir: &std::path::Path, name: &str, ticks: u64) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    write_csv(synth(ticks, 1, Symbol::parse("BTCUSDT").unwrap()), &mut file).unwrap();
    std::io::Write::flush(&mut file).unwrap();
    path
}

fn config() -> JobsConfig {
    JobsConfig { workers: 1, queue: 4, max_per_user: 2, keep_finished: 3 }
}

fn wait(jobs: &Jobs, user: u64, id: JobId, what: impl Fn(&JobView) -> bool) -> JobView {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let view = jobs.get(user, id).unwrap();
        if what(&view) {
            return view;
        }
        assert!(Instant::now() < until, "timed out: {view:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_job_over_two_files_reports_like_one_run_over_both() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![csv(dir.path(), "a.csv", 3000), csv(dir.path(), "b.csv", 2000)];
    let jobs = Jobs::start(config()).unwrap();
    let view = jobs.submit(7, spec(files)).unwrap();
    let done = wait(&jobs, 7, view.id, |v| v.status.is_final());
    assert_eq!(done.status, JobStatus::Done, "{done:?}");
    assert_eq!(done.progress, 1.0);
    let result = done.result.unwrap();
    assert_eq!(result.report.ticks, 5000);
    assert!(done.started_ts.is_some() && done.finished_ts >= done.started_ts);
    assert!(jobs.get(8, view.id).is_none(), "another user's job is not found");
    assert!(jobs.cancel(8, view.id).is_none());
    assert!(matches!(jobs.cancel(7, view.id), Some(Canceled::Removed)));
    assert!(jobs.get(7, view.id).is_none());
}

#[test]
fn a_canceled_job_stops_and_a_queued_one_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let big = csv(dir.path(), "big.csv", 400_000);
    let jobs = Jobs::start(config()).unwrap();
    let running = jobs.submit(1, spec(vec![big.clone()])).unwrap();
    let queued = jobs.submit(1, spec(vec![big.clone()])).unwrap();
    assert_eq!(jobs.submit(1, spec(vec![big])).unwrap_err(), SubmitError::TooMany { limit: 2 });
    wait(&jobs, 1, running.id, |v| v.status == JobStatus::Running && v.ticks > 0);
    assert!(matches!(jobs.cancel(1, queued.id), Some(Canceled::Requested(_))));
    assert!(matches!(jobs.cancel(1, running.id), Some(Canceled::Requested(_))));
    let stopped = wait(&jobs, 1, running.id, |v| v.status.is_final());
    assert_eq!(stopped.status, JobStatus::Canceled);
    assert!(stopped.progress < 1.0);
    let never = wait(&jobs, 1, queued.id, |v| v.status.is_final());
    assert_eq!((never.status, never.started_ts), (JobStatus::Canceled, None));
}

#[test]
fn bad_input_fails_the_job_naming_the_file_and_line_and_old_jobs_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "1000,100,0.1,buy\n2000,abc,0.1,buy\n").unwrap();
    let jobs = Jobs::start(JobsConfig { max_per_user: 1, ..config() }).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let view = jobs.submit(3, spec(vec![bad.clone()])).unwrap();
        let failed = wait(&jobs, 3, view.id, |v| v.status.is_final());
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("bad.csv:2: price `abc` is not a positive decimal")
        );
        ids.push(view.id);
    }
    let kept: Vec<JobId> = jobs.list(3).iter().map(|v| v.id).collect();
    assert_eq!(kept, [ids[4], ids[3], ids[2]], "the last three, newest first");
}
