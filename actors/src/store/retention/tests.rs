//! Retention over a seeded store: old rows go (archived when asked), open orders, positions and
//! bots stay, the sink's floor holds rows back, old recordings are deleted.

use super::*;
use crate::bot::BotRepo;
use keel_core::market::Symbol;

/// Seeded history: one order a second ending now, so `span` seconds back covers it all.
fn seeded() -> (tempfile::TempDir, Store, BotRepo, u64) {
    let (dir, store, repo, _) = crate::seed::seeded_store(200);
    let now = keel_venues::now_us() / 1000;
    (dir, store, repo, now)
}

fn config(days: u64, archive: Option<PathBuf>) -> RetentionConfig {
    RetentionConfig {
        fills_max_age: RetentionConfig::days(days),
        orders_max_age: RetentionConfig::days(days),
        bot_events_max_age: RetentionConfig::days(days),
        recordings_days: days,
        archive_dir: archive,
        record_dir: None,
        every: Duration::from_secs(3600),
    }
}

fn times(store: &Store, tree: &'static str) -> Vec<u64> {
    store
        .tree(tree)
        .unwrap()
        .iter()
        .values()
        .filter_map(|raw| row_time(tree, &raw.unwrap()).unwrap())
        .collect()
}

#[test]
fn old_rows_are_archived_then_removed_and_open_orders_positions_and_bots_stay() {
    let (dir, store, repo, now) = seeded();
    let bots: Vec<u64> = repo.all_bots().unwrap().iter().map(|b| b.id).collect();
    let open_before: Vec<Vec<u64>> =
        bots.iter().map(|b| repo.open_orders(*b).unwrap().iter().map(|o| o.id).collect()).collect();
    let states: Vec<_> = bots.iter().map(|b| repo.state(*b).unwrap()).collect();
    let counts: Vec<usize> =
        [trees::ORDERS, trees::FILLS, trees::EVENTS].map(|t| store.tree(t).unwrap().len()).into();

    // A sweep one day after "50 s ago" with a one-day limit: the cutoff is 50 s back, about half
    // of each bot's 100 s of history.
    let cutoff = now - 50_000;
    let archive = dir.path().join("archive");
    let report = sweep(&store, &config(1, Some(archive.clone())), cutoff + DAY_MS, None).unwrap();

    for (i, tree) in [trees::ORDERS, trees::FILLS, trees::EVENTS].into_iter().enumerate() {
        let removed = report.removed.get(tree).copied().unwrap_or(0);
        assert!(removed > 0, "nothing removed from {tree}: {report:?}");
        assert_eq!(store.tree(tree).unwrap().len() as u64, counts[i] as u64 - removed);
        let file = archive
            .join(tree)
            .join(format!("{}.jsonl", crate::record::utc_date((cutoff + DAY_MS) * 1000,)));
        let lines = std::fs::read_to_string(&file).unwrap();
        assert_eq!(lines.lines().count() as u64, removed, "{tree}: one archived line per row");
        for line in lines.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(bots.contains(&row["bot"].as_u64().unwrap()));
            assert!(row["row"].is_object() || row["row"].is_array(), "{line}");
        }
    }
    assert_eq!(report.archived, report.removed.values().sum::<u64>());
    for tree in [trees::FILLS, trees::EVENTS] {
        assert!(times(&store, tree).iter().all(|ts| *ts >= cutoff), "{tree} keeps only new rows");
    }
    // Orders older than the cutoff remain only if they are open.
    for (b, bot) in bots.iter().enumerate() {
        let open: Vec<u64> = repo.open_orders(*bot).unwrap().iter().map(|o| o.id).collect();
        assert_eq!(open, open_before[b], "open orders of bot {bot} untouched");
        assert_eq!(repo.state(*bot).unwrap(), states[b], "position of bot {bot} untouched");
    }
    for raw in store.tree(trees::ORDERS).unwrap().iter().values() {
        let order = Order::decode_row(&raw.unwrap()).unwrap();
        assert!(order.updated_ts >= cutoff || order.status.is_open(), "{order:?}");
    }
    assert_eq!(repo.all_bots().unwrap().len(), 2);

    // A second sweep at the same time finds nothing more.
    let again = sweep(&store, &config(1, Some(archive)), cutoff + DAY_MS, None).unwrap();
    assert!(again.removed.is_empty(), "{again:?}");
}

#[test]
fn nothing_at_or_after_the_sinks_floor_is_removed_and_zero_days_keeps_everything() {
    let (_dir, store, _repo, now) = seeded();
    let fills = store.tree(trees::FILLS).unwrap().len();
    let kept = sweep(&store, &config(0, None), now + 10 * DAY_MS, None).unwrap();
    assert_eq!(kept, SweepReport::default());
    assert_eq!(store.tree(trees::FILLS).unwrap().len(), fills);

    // Everything is past the age limit, but the sink still waits for rows from 80 s back on.
    let floor = now - 80_000;
    sweep(&store, &config(1, None), now + 10 * DAY_MS, Some(floor)).unwrap();
    let left = times(&store, trees::FILLS);
    assert!(!left.is_empty() && left.iter().all(|ts| *ts >= floor), "{left:?}");
    assert!(left.len() < fills);
}

#[test]
fn a_limit_in_seconds_keeps_exactly_that_much_history() {
    let (_dir, store, _repo, now) = seeded();
    let fills = store.tree(trees::FILLS).unwrap().len();
    // 30 s of each bot's 100 s of history, swept now.
    let limit = Duration::from_secs(30);
    let config = RetentionConfig {
        fills_max_age: limit,
        orders_max_age: Duration::ZERO,
        bot_events_max_age: limit,
        ..config(0, None)
    };
    assert!(config.is_on());
    let orders = store.tree(trees::ORDERS).unwrap().len();
    let report = sweep(&store, &config, now, None).unwrap();
    let removed = report.removed.get(trees::FILLS).copied().unwrap_or(0);
    assert!(removed > 0, "{report:?}");
    assert_eq!(store.tree(trees::FILLS).unwrap().len() as u64, fills as u64 - removed);
    assert!(report.removed.get(trees::EVENTS).is_some_and(|n| *n > 0), "{report:?}");
    for tree in [trees::FILLS, trees::EVENTS] {
        let left = times(&store, tree);
        assert!(!left.is_empty() && left.iter().all(|ts| *ts >= now - 30_000), "{tree}: {left:?}");
    }
    assert_eq!(store.tree(trees::ORDERS).unwrap().len(), orders, "a zero limit keeps them");
}

#[test]
fn the_sinks_floor_is_the_time_of_the_oldest_row_it_has_not_copied() {
    let (_dir, store, _repo, _) = seeded();
    assert_eq!(sink_floor(&store).unwrap(), None, "no outbox, no floor");
    let outbox = store.tree(trees::OUTBOX).unwrap();
    let record = |ts: u64| OutboxRecord {
        kind: crate::sink::RecordKind::Fill,
        bot_id: 1,
        user_id: None,
        entity_id: 1,
        payload: format!("{{\"ts\":{ts}}}").into_bytes(),
    };
    outbox.insert(crate::store::id_key(9), record(5_000).encode()).unwrap();
    outbox.insert(crate::store::id_key(10), record(6_000).encode()).unwrap();
    assert_eq!(sink_floor(&store).unwrap(), Some(5_000));
}

#[test]
fn recordings_of_days_before_the_limit_are_deleted() {
    let (dir, store, _repo, _) = seeded();
    let record = dir.path().join("record");
    let day = |d: &str| {
        crate::record::file_path(
            &record,
            keel_core::market::VenueId::Sim,
            &Symbol::parse("BTCUSDT").unwrap(),
            d,
        )
    };
    for d in ["2026-01-01", "2026-01-09", "2026-01-10"] {
        std::fs::create_dir_all(day(d).parent().unwrap()).unwrap();
        std::fs::write(day(d), b"x").unwrap();
    }
    std::fs::write(day("2026-01-01").with_extension("txt"), b"not a recording").unwrap();
    // 2026-01-10T12:00Z with two days kept: the 9th and 10th stay.
    let now = 1_768_046_400_000;
    let config = RetentionConfig { record_dir: Some(record.clone()), ..config(2, None) };
    let report = sweep(
        &store,
        &RetentionConfig {
            fills_max_age: Duration::ZERO,
            orders_max_age: Duration::ZERO,
            bot_events_max_age: Duration::ZERO,
            ..config
        },
        now,
        None,
    )
    .unwrap();
    assert_eq!(report.recordings_removed, 1);
    assert!(
        !day("2026-01-01").exists() && day("2026-01-09").exists() && day("2026-01-10").exists()
    );
    assert!(day("2026-01-01").with_extension("txt").exists());
}
