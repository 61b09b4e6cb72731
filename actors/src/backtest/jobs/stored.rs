//! Backtest jobs in the store (the `backtests` tree, keyed by job id): the spec, the progress and
//! the result, so jobs survive a restart. A job is written when it is queued (durably, before the
//! 202), when it starts, every [`PROGRESS_SAVE_EVERY`] while it runs, and when it ends (durably);
//! a forgotten job's row is removed.
//!
//! On start ([`super::Jobs::open`]) finished jobs come back as they ended, with their results;
//! queued jobs are queued again in their order, and a job that was running runs again from the
//! start (a backtest is deterministic: the same input gives the same report).

use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{JobId, JobResult, JobSpec, JobStatus};
use crate::backtest::BacktestConfig;
use crate::store::{Store, StoreError, decode, encode_packed, id_key, trees};
use keel_core::bot::Bracket;
use keel_core::market::Symbol;
use keel_core::strategy::StrategySpec;
use keel_core::trading::InstrumentFilters;
use keel_core::trading::risk::RiskLimits;

/// How often a running job's progress is written (not flushed: progress is never acknowledged).
pub(super) const PROGRESS_SAVE_EVERY: Duration = Duration::from_secs(2);

/// A job as the `backtests` tree holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredJob {
    pub id: JobId,
    pub user_id: u64,
    pub created_ts: u64,
    pub spec: StoredSpec,
    pub status: JobStatus,
    pub started_ts: Option<u64>,
    pub finished_ts: Option<u64>,
    pub ticks: u64,
    pub bytes_read: u64,
    pub total_bytes: u64,
    pub result: Option<JobResult>,
    pub error: Option<String>,
}

/// A [`JobSpec`] in stored form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredSpec {
    bot_id: u64,
    strategy: StrategySpec,
    filters: InstrumentFilters,
    risk: RiskLimits,
    bracket: Option<Bracket>,
    fee_bps: Decimal,
    slippage_bps: Decimal,
    starting_quote: Decimal,
    files: Vec<PathBuf>,
    symbol: Symbol,
    skip_bad_rows: bool,
}

impl From<&JobSpec> for StoredSpec {
    fn from(spec: &JobSpec) -> Self {
        let c = &spec.config;
        Self {
            bot_id: c.bot_id,
            strategy: c.strategy.clone(),
            filters: c.filters.clone(),
            risk: c.risk.clone(),
            bracket: c.bracket,
            fee_bps: c.fee_bps,
            slippage_bps: c.slippage_bps,
            starting_quote: c.starting_quote,
            files: spec.files.clone(),
            symbol: spec.symbol.clone(),
            skip_bad_rows: spec.skip_bad_rows,
        }
    }
}

impl From<StoredSpec> for JobSpec {
    fn from(s: StoredSpec) -> Self {
        JobSpec {
            config: BacktestConfig {
                bot_id: s.bot_id,
                strategy: s.strategy,
                filters: s.filters,
                risk: s.risk,
                bracket: s.bracket,
                fee_bps: s.fee_bps,
                slippage_bps: s.slippage_bps,
                starting_quote: s.starting_quote,
                futures: None,
            },
            files: s.files,
            symbol: s.symbol,
            skip_bad_rows: s.skip_bad_rows,
        }
    }
}

/// Writes a job's row (not flushed: callers that acknowledge it await a commit).
pub(super) fn save(store: &Store, job: &StoredJob) -> Result<(), StoreError> {
    store.tree(trees::BACKTESTS)?.insert(id_key(job.id), encode_packed(job)?)?;
    Ok(())
}

/// Changes a job's row in place; a row that is gone (forgotten meanwhile) stays gone.
pub(super) fn update(
    store: &Store,
    id: JobId,
    change: impl FnOnce(&mut StoredJob),
) -> Result<(), StoreError> {
    let tree = store.tree(trees::BACKTESTS)?;
    let Some(raw) = tree.get(id_key(id))? else { return Ok(()) };
    let mut job: StoredJob = decode(&raw)?;
    change(&mut job);
    tree.insert(id_key(id), encode_packed(&job)?)?;
    Ok(())
}

/// Removes a job's row.
pub(super) fn remove(store: &Store, id: JobId) -> Result<(), StoreError> {
    store.tree(trees::BACKTESTS)?.remove(id_key(id))?;
    Ok(())
}

/// Every stored job, in id (submission) order. A row that does not decode is logged and skipped:
/// one bad row must not keep Keel from starting.
pub(super) fn load(store: &Store) -> Result<Vec<StoredJob>, StoreError> {
    let mut jobs = Vec::new();
    for row in store.tree(trees::BACKTESTS)?.iter() {
        let (key, raw) = row?;
        match decode::<StoredJob>(&raw) {
            Ok(job) => jobs.push(job),
            Err(err) => {
                tracing::error!(key = ?key, error = %err, "skipping an unreadable backtest")
            }
        }
    }
    Ok(jobs)
}
