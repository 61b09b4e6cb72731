//! What the store holds, by kind: rows and bytes, bytes written in the last day (growth per
//! day) and the time of the oldest record. `keel store stats` prints it ([`collect`]); the
//! runtime publishes it on `/metrics` every [`STATS_EVERY`] ([`current`]:
//! `keel_store_bytes{kind}`, `keel_store_rows{kind}`, `keel_store_growth_bytes_per_day{kind}`,
//! `keel_store_oldest_record_seconds{kind}`).
//!
//! Rows and bytes are the keys and values as stored (packed), summed without decoding. Growth
//! and the oldest time come from the rows' own times, for the kinds that carry one (orders,
//! fills, journal rows, backtests, recordings): per bot only the newest day of rows and the
//! first row are decoded, since a bot's rows are in time order.
//!
//! [`collect`] reads every row. [`current`] does that once, to seed the store's tally
//! ([`super::tally`]); after it, orders, fills and journal rows come from the tally (growth:
//! bytes written in the last 24 whole hours) and only each bot's first row of each is read.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::tally::{HOUR_MS, TALLIED, TreeFigures};
use super::{Store, StoreError, StoredRow, decode, key_id, pair_key, trees};
use crate::bot::repo::journal_lines;
use keel_core::trading::{Fill, Order};

/// How often the runtime refreshes the figures on `/metrics` ([`current`]).
pub const STATS_EVERY: Duration = Duration::from_secs(600);
/// One day, in milliseconds.
const DAY_MS: u64 = 86_400_000;

/// One kind's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindStats {
    /// Rows (files, for recordings).
    pub rows: u64,
    /// Bytes of keys and values as stored (file sizes, for recordings).
    pub bytes: u64,
    /// Bytes of the rows written in the last 24 hours; `None` for kinds without a time.
    pub growth_bytes_per_day: Option<u64>,
    /// Time of the oldest record, ms since the epoch; `None` when empty or without a time.
    pub oldest_ms: Option<u64>,
}

/// The store's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// By kind: each tree by its name, and `recordings`.
    pub kinds: BTreeMap<String, KindStats>,
    /// What sled reports for its files.
    pub size_on_disk: u64,
}

/// The figures at `now_ms`, from a read of every row; `record_dir` adds the recordings.
/// `keel store stats` prints them, and the first [`current`] seeds the store's tally with them.
///
/// # Errors
/// sled failed or a row that carries a time does not decode.
pub fn collect(
    store: &Store,
    record_dir: Option<&Path>,
    now_ms: u64,
) -> Result<StoreStats, StoreError> {
    Ok(read_all(store, record_dir, now_ms)?.0)
}

/// The figures at `now_ms`, for `/metrics`: the trees that grow with trading from the store's
/// tally ([`super::tally`]; the first call seeds it with [`collect`]'s read), the others read
/// whole (they hold users, bots and sessions, not history), and each bot's oldest row read
/// once per kind.
///
/// # Errors
/// sled failed or a row that carries a time does not decode.
pub fn current(
    store: &Store,
    record_dir: Option<&Path>,
    now_ms: u64,
) -> Result<StoreStats, StoreError> {
    let tally = store.tally();
    if !tally.is_seeded() {
        let mark = tally.mark();
        let (stats, found) = read_all(store, record_dir, now_ms)?;
        tally.seed(mark, &found);
        return Ok(stats);
    }
    let since = now_ms.saturating_sub(DAY_MS);
    let bots = bot_ids(store)?;
    let mut stats = StoreStats { size_on_disk: store.size_on_disk()?, ..StoreStats::default() };
    for name in tree_names(store) {
        let tree = store.tree(&name)?;
        let kind = match (tally.figures(&name, since), row_time_of(&name)) {
            (Some(figures), Some(time)) => KindStats {
                rows: figures.rows,
                bytes: figures.bytes,
                growth_bytes_per_day: Some(figures.written_since(since)),
                oldest_ms: oldest(&tree, &bots, time)?,
            },
            _ => read_tree(&name, &tree, &bots, since)?.0,
        };
        stats.kinds.insert(name, kind);
    }
    if let Some(dir) = record_dir {
        stats.kinds.insert("recordings".into(), recordings(dir, since));
    }
    Ok(stats)
}

/// [`collect`]'s figures, and for each tallied tree what seeds the tally.
fn read_all<'a>(
    store: &Store,
    record_dir: Option<&Path>,
    now_ms: u64,
) -> Result<(StoreStats, BTreeMap<&'a str, TreeFigures>), StoreError> {
    let since = now_ms.saturating_sub(DAY_MS);
    let bots = bot_ids(store)?;
    let mut stats = StoreStats { size_on_disk: store.size_on_disk()?, ..StoreStats::default() };
    let mut found = BTreeMap::new();
    for name in tree_names(store) {
        let tree = store.tree(&name)?;
        let (kind, written_by_hour) = read_tree(&name, &tree, &bots, since)?;
        if let Some(tallied) = TALLIED.iter().find(|t| **t == name) {
            let figures = TreeFigures { rows: kind.rows, bytes: kind.bytes, written_by_hour };
            found.insert(*tallied, figures);
        }
        stats.kinds.insert(name, kind);
    }
    if let Some(dir) = record_dir {
        stats.kinds.insert("recordings".into(), recordings(dir, since));
    }
    Ok((stats, found))
}

/// Every bot's id.
fn bot_ids(store: &Store) -> Result<Vec<u64>, StoreError> {
    store
        .tree(trees::BOTS)?
        .iter()
        .keys()
        .map(|k| k.map_err(StoreError::from).and_then(|k| key_id(&k)))
        .collect()
}

/// The store's trees, by name, sled's own left out.
fn tree_names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .inner
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| !n.starts_with("__sled"))
        .collect();
    names.sort();
    names
}

/// One tree's figures from a read of every row, and for the per-bot trees with a time the
/// bytes of the last day's rows by the hour of their time.
fn read_tree(
    name: &str,
    tree: &sled::Tree,
    bots: &[u64],
    since: u64,
) -> Result<(KindStats, BTreeMap<u64, u64>), StoreError> {
    let mut kind = KindStats::default();
    let mut by_hour = BTreeMap::new();
    for row in tree.iter() {
        let (key, value) = row?;
        kind.rows += 1;
        kind.bytes += (key.len() + value.len()) as u64;
    }
    if let Some(time) = row_time_of(name) {
        for &bot in bots {
            let range = tree.range(pair_key(bot, 0)..=pair_key(bot, u64::MAX));
            for row in range.rev() {
                let (key, value) = row?;
                match time(&value)? {
                    Some(ts) if ts >= since => {
                        *by_hour.entry(ts / HOUR_MS).or_default() +=
                            (key.len() + value.len()) as u64
                    }
                    Some(_) => break,
                    None => {}
                }
            }
        }
        kind.oldest_ms = oldest(tree, bots, time)?;
        kind.growth_bytes_per_day = Some(by_hour.values().sum());
    } else if name == trees::BACKTESTS {
        // Few rows (finished jobs per user are capped): decode them all.
        let mut growth = 0;
        for row in tree.iter() {
            let (key, value) = row?;
            let created = decode::<serde_json::Value>(&value)?["created_ts"].as_u64();
            if let Some(ts) = created {
                kind.oldest_ms = Some(kind.oldest_ms.map_or(ts, |o| o.min(ts)));
                if ts >= since {
                    growth += (key.len() + value.len()) as u64;
                }
            }
        }
        kind.growth_bytes_per_day = Some(growth);
    }
    Ok((kind, by_hour))
}

/// The time of the oldest row of a per-bot tree: each bot's first row that carries one (a
/// bot's rows are in time order).
fn oldest(tree: &sled::Tree, bots: &[u64], time: RowTime) -> Result<Option<u64>, StoreError> {
    let mut oldest: Option<u64> = None;
    for &bot in bots {
        for row in tree.range(pair_key(bot, 0)..=pair_key(bot, u64::MAX)) {
            let (_, value) = row?;
            if let Some(ts) = time(&value)? {
                oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
                break;
            }
        }
    }
    Ok(oldest)
}

type RowTime = fn(&[u8]) -> Result<Option<u64>, StoreError>;

/// How to read the time of a row of `tree`, for the per-bot trees that carry one.
fn row_time_of(tree: &str) -> Option<RowTime> {
    match tree {
        trees::ORDERS => Some(|raw| Ok(Some(Order::decode_row(raw)?.created_ts))),
        trees::FILLS => Some(|raw| Ok(Some(Fill::decode_row(raw)?.ts))),
        trees::EVENTS => Some(|raw| Ok(journal_lines(raw)?.last().map(|line| line.ts))),
        _ => None,
    }
}

/// Files under `<dir>/<venue>/<SYMBOL>/<YYYY-MM-DD>.krec`: their sizes, the oldest day and the
/// bytes of files changed in the last day.
fn recordings(dir: &Path, since_ms: u64) -> KindStats {
    let mut kind = KindStats { growth_bytes_per_day: Some(0), ..KindStats::default() };
    let entries = |p: &Path| std::fs::read_dir(p).into_iter().flatten().flatten();
    for venue in entries(dir) {
        for symbol in entries(&venue.path()) {
            for day in entries(&symbol.path()) {
                let name = day.file_name();
                let Some(date) = name.to_str().and_then(|n| n.strip_suffix(".krec")) else {
                    continue;
                };
                let Ok(meta) = day.metadata() else { continue };
                kind.rows += 1;
                kind.bytes += meta.len();
                if let Some(ms) = day_ms(date) {
                    kind.oldest_ms = Some(kind.oldest_ms.map_or(ms, |o| o.min(ms)));
                }
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                if modified >= since_ms {
                    kind.growth_bytes_per_day = kind.growth_bytes_per_day.map(|g| g + meta.len());
                }
            }
        }
    }
    kind
}

/// Midnight UTC of a `YYYY-MM-DD` day, in ms.
fn day_ms(date: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// What the kinds of the bot tables in Postgres (cluster mode with `postgres_url`) are named
/// with, before the sled tree names they mirror (`postgres_orders`, `postgres_fills`...), so
/// they are told apart from this node's own store on `/metrics` and in `keel store stats`.
pub const POSTGRES_PREFIX: &str = "postgres_";

/// Sets the `/metrics` gauges from `stats`.
pub fn publish(stats: &StoreStats) {
    metrics::gauge!("keel_store_size_on_disk_bytes").set(stats.size_on_disk as f64);
    publish_kinds("", &stats.kinds);
}

/// Sets the per-kind `/metrics` gauges from `kinds`, each kind named `prefix` then its name.
pub fn publish_kinds(prefix: &str, kinds: &BTreeMap<String, KindStats>) {
    for (kind, figures) in kinds {
        let label = format!("{prefix}{kind}");
        metrics::gauge!("keel_store_bytes", "kind" => label.clone()).set(figures.bytes as f64);
        metrics::gauge!("keel_store_rows", "kind" => label.clone()).set(figures.rows as f64);
        if let Some(growth) = figures.growth_bytes_per_day {
            metrics::gauge!("keel_store_growth_bytes_per_day", "kind" => label.clone())
                .set(growth as f64);
        }
        if let Some(oldest) = figures.oldest_ms {
            metrics::gauge!("keel_store_oldest_record_seconds", "kind" => label)
                .set(oldest as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn figures_follow_what_was_written_and_when() {
        let (dir, store, _repo, seeded) = crate::seed::seeded_store(100);
        let now = keel_venues::now_us() / 1000;
        let record = dir.path().join("record");
        let day = record.join("sim").join("BTCUSDT").join("2026-01-05.krec");
        std::fs::create_dir_all(day.parent().unwrap()).unwrap();
        std::fs::write(&day, vec![0u8; 1000]).unwrap();

        let stats = collect(&store, Some(&record), now).unwrap();
        let orders = &stats.kinds[trees::ORDERS];
        assert_eq!(orders.rows, seeded.orders);
        let fills = &stats.kinds[trees::FILLS];
        assert_eq!(fills.rows, seeded.fills);
        let raw: u64 = store
            .tree(trees::FILLS)
            .unwrap()
            .iter()
            .map(|r| r.map(|(k, v)| (k.len() + v.len()) as u64).unwrap())
            .sum();
        assert_eq!(fills.bytes, raw);
        // Seeded history ends now and spans under two minutes: all of it is the last day's.
        assert_eq!(fills.growth_bytes_per_day, Some(fills.bytes));
        let oldest = fills.oldest_ms.unwrap();
        assert!(oldest <= now && now - oldest < 200_000, "{oldest} vs {now}");
        assert_eq!(stats.kinds[trees::BOTS].rows, 2);
        assert_eq!(stats.kinds[trees::BOTS].growth_bytes_per_day, None);
        let recordings = &stats.kinds["recordings"];
        assert_eq!((recordings.rows, recordings.bytes), (1, 1000));
        assert_eq!(recordings.oldest_ms, day_ms("2026-01-05"));
        assert_eq!(day_ms("2026-01-05"), Some(1_767_571_200_000));

        // A day later nothing is new; the oldest stays.
        let later = collect(&store, None, now + 2 * DAY_MS).unwrap();
        assert_eq!(later.kinds[trees::FILLS].growth_bytes_per_day, Some(0));
        assert_eq!(later.kinds[trees::FILLS].oldest_ms, Some(oldest));
        assert!(!later.kinds.contains_key("recordings"));
    }

    /// The kinds' rows, bytes and oldest time (growth is counted differently: by row time when
    /// read, by the hour written when tallied).
    fn held(stats: &StoreStats) -> Vec<(String, u64, u64, Option<u64>)> {
        stats.kinds.iter().map(|(k, s)| (k.clone(), s.rows, s.bytes, s.oldest_ms)).collect()
    }

    #[test]
    fn the_tally_follows_writes_deletes_and_sweeps_as_a_full_read_would() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::store::StoreConfig::new(dir.path().join("db"))).unwrap();
        let repo = crate::bot::repo::BotRepo::new(&store).unwrap();
        let now = || keel_venues::now_us() / 1000;
        // Seeded on an empty store; everything after is counted by its writers.
        current(&store, None, now()).unwrap();
        assert!(store.tally().is_seeded());
        let plan = crate::seed::SeedPlan {
            users: 2,
            bots: 4,
            orders: 60,
            symbols: vec![keel_core::market::Symbol::parse("BTCUSDT").unwrap()],
            max_bots_per_user: 10,
            paper_slippage_bps: rust_decimal::Decimal::from(5),
            threads: 2,
        };
        crate::seed::seed(&store, &repo, &plan).unwrap();
        let tallied = current(&store, None, now()).unwrap();
        assert!(tallied.kinds[trees::FILLS].rows > 0);
        assert_eq!(held(&tallied), held(&collect(&store, None, now()).unwrap()));
        let written = tallied.kinds[trees::EVENTS].growth_bytes_per_day.unwrap();
        assert!(written >= tallied.kinds[trees::EVENTS].bytes, "{written}");

        let first_bot = bot_ids(&store).unwrap()[0];
        repo.delete_bot(first_bot).unwrap();
        assert_eq!(
            held(&current(&store, None, now()).unwrap()),
            held(&collect(&store, None, now()).unwrap())
        );

        // A year on, the sweep removes every final order, fill and journal row.
        let later = now() + 400 * DAY_MS;
        let config = super::super::retention::RetentionConfig {
            fills_max_age: Duration::from_secs(86_400),
            orders_max_age: Duration::from_secs(86_400),
            bot_events_max_age: Duration::from_secs(86_400),
            recordings_days: 0,
            archive_dir: None,
            record_dir: None,
            every: Duration::from_secs(60),
        };
        let swept = super::super::retention::sweep(&store, &config, later, None).unwrap();
        assert!(swept.removed.get(trees::FILLS).is_some_and(|n| *n > 0));
        let after = current(&store, None, later).unwrap();
        assert_eq!(after.kinds[trees::FILLS].rows, 0);
        assert_eq!(held(&after), held(&collect(&store, None, later).unwrap()));
    }
}
