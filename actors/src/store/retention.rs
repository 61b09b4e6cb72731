//! Retention: old fills, orders, journal rows and recordings are removed after a configured age
//! (`[retention]`), so the disk a busy instance needs stops growing.
//!
//! What is never removed, whatever its age: bot definitions (`bots`), position rows
//! (`positions`), orders that may still fill (the `open_orders` index and the rows it names),
//! users, credentials and sessions: start-up and open orders need them. A bot's reports
//! (`/orders`, `/fills`, `/events`, `/performance`) then cover the history still kept; the
//! position row carries the running totals.
//!
//! Rows are removed oldest first, per bot: ids grow with time within a bot, so the sweep of a
//! bot stops at its first row newer than the cutoff. Before removing, rows can be archived:
//! - with the Postgres sink on, every row is already copied there through the outbox; a row is
//!   removed only once the sink has drained every outbox row up to it ([`sink_floor`]);
//! - with `retention.archive = "files"`, the rows are appended as JSON lines to
//!   `<archive_dir>/<kind>/<YYYY-MM-DD>.jsonl` (the sweep's UTC day) and fsynced before they
//!   are removed. A crash between the two archives them again on the next sweep: at least once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tally::Changes;
use super::{Store, StoreError, StoredRow, encode, key_id, pair_key, trees};
use crate::bot::repo::journal_lines;
use crate::sink::OutboxRecord;
use keel_core::trading::{Fill, Order};

/// Rows removed per sled batch.
const BATCH: usize = 1024;
/// One day, in milliseconds.
const DAY_MS: u64 = 86_400_000;

/// What to keep and where old rows go.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Fills older than this are removed; zero keeps them.
    pub fills_max_age: Duration,
    /// Final orders (filled, canceled, rejected, expired) older than this; zero keeps them.
    pub orders_max_age: Duration,
    /// Journal rows older than this; zero keeps them.
    pub bot_events_max_age: Duration,
    /// Daily market recordings older than this; 0 keeps them.
    pub recordings_days: u64,
    /// Where removed rows are archived as JSON lines; `None` removes them without a copy (or
    /// leaves the copy to the Postgres sink).
    pub archive_dir: Option<PathBuf>,
    /// The recordings' directory, when recording is on.
    pub record_dir: Option<PathBuf>,
    /// How often the sweep runs.
    pub every: Duration,
}

impl RetentionConfig {
    /// Whether any kind has an age limit.
    pub fn is_on(&self) -> bool {
        !self.fills_max_age.is_zero()
            || !self.orders_max_age.is_zero()
            || !self.bot_events_max_age.is_zero()
            || self.recordings_days > 0
    }

    /// A limit of whole days, as the row kinds' limits are given ([`Duration::ZERO`] for 0).
    pub fn days(days: u64) -> Duration {
        Duration::from_millis(days.saturating_mul(DAY_MS))
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Rows removed, by tree (`orders`, `fills`, `events`).
    pub removed: BTreeMap<&'static str, u64>,
    /// Rows written to archive files.
    pub archived: u64,
    /// Recording files deleted.
    pub recordings_removed: u64,
}

/// The time up to which the Postgres sink has copied everything: the time of the oldest row
/// still waiting in the outbox (outbox ids, like entity ids, grow with time), or `None` when the
/// outbox is empty. Rows at or after it are kept until the sink has them.
///
/// # Errors
/// sled failed or the oldest outbox row does not decode.
pub fn sink_floor(store: &Store) -> Result<Option<u64>, StoreError> {
    let Some((_, raw)) = store.tree(trees::OUTBOX)?.first()? else { return Ok(None) };
    let record = OutboxRecord::decode(&raw)?;
    let json: serde_json::Value =
        serde_json::from_slice(&record.payload).map_err(StoreError::Codec)?;
    // An order's last change, a fill's or a journal line's time; anything else keeps all.
    let ts = json.get("updated_ts").or_else(|| json.get("ts")).and_then(serde_json::Value::as_u64);
    Ok(Some(ts.unwrap_or(0)))
}

/// Runs one sweep at `now_ms`: removes (and archives) what is older than each kind's limit, and
/// never anything at or after `floor` (see [`sink_floor`]). Not durable until the caller
/// commits; the removal of a row is idempotent, so a crash before that repeats it.
///
/// # Errors
/// sled failed, a row does not decode, or an archive file cannot be written (nothing of that
/// kind is removed then).
pub fn sweep(
    store: &Store,
    config: &RetentionConfig,
    now_ms: u64,
    floor: Option<u64>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let cutoff = |max_age: Duration| {
        let by_age = now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        floor.map_or(by_age, |f| by_age.min(f))
    };
    let bots: Vec<u64> = store
        .tree(trees::BOTS)?
        .iter()
        .keys()
        .map(|k| k.map_err(StoreError::from).and_then(|k| key_id(&k)))
        .collect::<Result<_, _>>()?;
    let open = store.tree(trees::OPEN_ORDERS)?;
    let kinds: [(&'static str, Duration); 3] = [
        (trees::ORDERS, config.orders_max_age),
        (trees::FILLS, config.fills_max_age),
        (trees::EVENTS, config.bot_events_max_age),
    ];
    for (tree_name, max_age) in kinds {
        if max_age.is_zero() {
            continue;
        }
        let cutoff = cutoff(max_age);
        let tree = store.tree(tree_name)?;
        let mut removed = 0;
        for &bot in &bots {
            let mut old = Vec::new();
            for row in tree.range(pair_key(bot, 0)..=pair_key(bot, u64::MAX)) {
                let (key, raw) = row?;
                let Some(ts) = row_time(tree_name, &raw)? else { continue };
                if ts >= cutoff {
                    break;
                }
                if tree_name == trees::ORDERS && open.contains_key(&key)? {
                    continue; // may still fill: start-up reads it
                }
                old.push((key, raw));
            }
            if old.is_empty() {
                continue;
            }
            if let Some(dir) = &config.archive_dir {
                archive(dir, tree_name, now_ms, &old)?;
                report.archived += old.len() as u64;
            }
            for chunk in old.chunks(BATCH) {
                let mut batch = sled::Batch::default();
                let mut changes = Changes::default();
                for (key, raw) in chunk {
                    batch.remove(key.clone());
                    changes.removed(tree_name, key, raw);
                }
                tree.apply_batch(batch)?;
                store.tally().apply(&changes);
                // Counted as removed, batch by batch: a read of `/metrics` during a long sweep
                // sees what is gone so far, not nothing until the kind is done.
                metrics::counter!("keel_retention_removed_total", "kind" => tree_name)
                    .increment(chunk.len() as u64);
            }
            removed += old.len() as u64;
        }
        if removed > 0 {
            report.removed.insert(tree_name, removed);
        }
    }
    if let (Some(dir), days @ 1..) = (&config.record_dir, config.recordings_days) {
        let first_kept = crate::record::utc_date(now_ms.saturating_sub(days * DAY_MS) * 1000);
        report.recordings_removed = remove_recordings(dir, &first_kept)
            .map_err(|source| StoreError::Io { path: dir.clone(), source })?;
    }
    Ok(report)
}

/// The time of a row: an order's last change, a fill's time, a journal row's last line. `None`
/// for an empty journal row (never written; kept).
fn row_time(tree: &str, raw: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(match tree {
        trees::ORDERS => Some(Order::decode_row(raw)?.updated_ts),
        trees::FILLS => Some(Fill::decode_row(raw)?.ts),
        _ => journal_lines(raw)?.last().map(|line| line.ts),
    })
}

/// Appends rows to `<dir>/<kind>/<day>.jsonl` as JSON lines (`{"bot":…,"row":…}`) and fsyncs.
fn archive(
    dir: &Path,
    kind: &str,
    now_ms: u64,
    rows: &[(sled::IVec, sled::IVec)],
) -> Result<(), StoreError> {
    let folder = dir.join(kind);
    let io = |source| StoreError::Io { path: folder.clone(), source };
    std::fs::create_dir_all(&folder).map_err(io)?;
    let path = folder.join(format!("{}.jsonl", crate::record::utc_date(now_ms * 1000)));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    for (key, raw) in rows {
        // serde_json writes no newline, so a row's JSON is one line.
        let json = row_json(kind, raw)?;
        write!(out, "{{\"bot\":{},\"row\":", key_id(key)?).map_err(io)?;
        out.write_all(&json).map_err(io)?;
        out.write_all(b"}\n").map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_data().map_err(io)
}

/// A stored row of `tree` (any stored form) as JSON: an order, a fill, or a journal row's list of
/// lines.
fn row_json(tree: &str, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    match tree {
        trees::ORDERS => encode(&Order::decode_row(raw)?),
        trees::FILLS => encode(&Fill::decode_row(raw)?),
        _ => encode(&journal_lines(raw)?),
    }
}

/// Deletes `<dir>/<venue>/<SYMBOL>/<YYYY-MM-DD>.krec` files of days before `first_kept`.
fn remove_recordings(dir: &Path, first_kept: &str) -> std::io::Result<u64> {
    let mut removed = 0;
    let Ok(venues) = std::fs::read_dir(dir) else { return Ok(0) };
    for venue in venues.flatten() {
        let Ok(symbols) = std::fs::read_dir(venue.path()) else { continue };
        for symbol in symbols.flatten() {
            let Ok(days) = std::fs::read_dir(symbol.path()) else { continue };
            for day in days.flatten() {
                let name = day.file_name();
                let Some(date) = name.to_str().and_then(|n| n.strip_suffix(".krec")) else {
                    continue;
                };
                if crate::record::is_date(date) && date < first_kept {
                    std::fs::remove_file(day.path())?;
                    removed += 1;
                }
            }
        }
    }
    if removed > 0 {
        metrics::counter!("keel_retention_removed_total", "kind" => "recordings")
            .increment(removed);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
