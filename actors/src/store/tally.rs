//! Rows and bytes of the trees that grow with trading (orders, fills, journal rows), kept as
//! they are written and removed, so the store's figures on `/metrics` need no read of every row.
//!
//! Reading every row every ten minutes pulled the whole store through sled's page cache and
//! held tens of MiB for minutes each time (docs/PERFORMANCE.md, "Soak"). Now one full read seeds
//! the tally, in the background after start ([`super::stats::current`]), and from then on the
//! writers report what they changed:
//! - a bot's writes ([`crate::bot::repo::BotRepo`]: its transaction and the delete of a bot);
//! - the retention sweep ([`super::retention`]), for the rows it removes.
//!
//! Those are the only writers of these trees while Keel runs (migrations and compaction run
//! before it serves). Rows written while the seeding read runs may be counted twice, once by
//! the read and once by their writer: the figures are exact when the store is quiet during
//! that read, and off by at most those rows otherwise.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::trees;

/// The tallied trees.
pub const TALLIED: [&str; 3] = [trees::ORDERS, trees::FILLS, trees::EVENTS];
/// The width of the buckets that bytes written are counted in, in ms.
pub const HOUR_MS: u64 = 3_600_000;

/// What one write did to one tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Change {
    rows: i64,
    bytes: i64,
    /// Bytes added: a new row's key and value, or what an overwrite added to a value.
    written: u64,
}

/// What one write (a transaction, a batch) did to the tallied trees; applied with
/// [`Tally::apply`] once it has landed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes([Change; TALLIED.len()]);

impl Changes {
    /// `key` now holds `value`, where it held `old` (or nothing). Other trees are ignored.
    pub fn put(&mut self, tree: &str, key: &[u8], old: Option<&[u8]>, value: &[u8]) {
        let Some(change) = self.of(tree) else { return };
        match old {
            None => {
                let size = (key.len() + value.len()) as i64;
                change.rows += 1;
                change.bytes += size;
                change.written += size as u64;
            }
            Some(old) => {
                let delta = value.len() as i64 - old.len() as i64;
                change.bytes += delta;
                change.written += delta.max(0) as u64;
            }
        }
    }

    /// `key`, which held `old`, was removed.
    pub fn removed(&mut self, tree: &str, key: &[u8], old: &[u8]) {
        let Some(change) = self.of(tree) else { return };
        change.rows -= 1;
        change.bytes -= (key.len() + old.len()) as i64;
    }

    fn of(&mut self, tree: &str) -> Option<&mut Change> {
        let at = TALLIED.iter().position(|t| *t == tree)?;
        Some(&mut self.0[at])
    }
}

/// One tree's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeFigures {
    /// Rows.
    pub rows: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Bytes written, by the hour (`ms / HOUR_MS`) they were written in.
    pub written_by_hour: BTreeMap<u64, u64>,
}

impl TreeFigures {
    /// Bytes written at or after `since_ms` (whole hours: the hour `since_ms` falls in counts).
    pub fn written_since(&self, since_ms: u64) -> u64 {
        self.written_by_hour.range(since_ms / HOUR_MS..).map(|(_, b)| b).sum()
    }
}

#[derive(Debug, Default)]
struct Counts {
    rows: i64,
    bytes: i64,
    written_by_hour: BTreeMap<u64, u64>,
}

#[derive(Debug, Default)]
struct State {
    seeded: bool,
    trees: [Counts; TALLIED.len()],
}

/// The running figures of the tallied trees. One per store.
#[derive(Debug, Default)]
pub struct Tally {
    state: Mutex<State>,
}

/// Where the tally stood when a seeding read began ([`Tally::mark`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark([(i64, i64); TALLIED.len()]);

impl Tally {
    /// Counts `changes`, written now.
    pub fn apply(&self, changes: &Changes) {
        self.apply_at(changes, keel_venues::now_us() / 1000);
    }

    /// Counts `changes`, written at `now_ms`.
    pub fn apply_at(&self, changes: &Changes, now_ms: u64) {
        if changes.0.iter().all(|c| *c == Change::default()) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (counts, change) in state.trees.iter_mut().zip(&changes.0) {
            counts.rows += change.rows;
            counts.bytes += change.bytes;
            if change.written > 0 {
                *counts.written_by_hour.entry(now_ms / HOUR_MS).or_default() += change.written;
            }
        }
    }

    /// Whether a full read has seeded the figures.
    pub fn is_seeded(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).seeded
    }

    /// Call before a seeding read: what is written from here on is added to what it finds.
    pub fn mark(&self) -> Mark {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut mark = [(0, 0); TALLIED.len()];
        for (at, counts) in state.trees.iter_mut().enumerate() {
            counts.written_by_hour.clear();
            mark[at] = (counts.rows, counts.bytes);
        }
        Mark(mark)
    }

    /// Sets the figures to what a full read begun at `mark` found (`found`, by tree name), plus
    /// what was written since the mark.
    pub fn seed(&self, mark: Mark, found: &BTreeMap<&str, TreeFigures>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (at, name) in TALLIED.iter().enumerate() {
            let counts = &mut state.trees[at];
            let (rows_then, bytes_then) = mark.0[at];
            let read = found.get(name).cloned().unwrap_or_default();
            counts.rows = read.rows as i64 + (counts.rows - rows_then);
            counts.bytes = read.bytes as i64 + (counts.bytes - bytes_then);
            for (hour, bytes) in read.written_by_hour {
                *counts.written_by_hour.entry(hour).or_default() += bytes;
            }
        }
        state.seeded = true;
    }

    /// The figures of `tree` (one of [`TALLIED`]); hours before `keep_from_ms` are dropped.
    pub fn figures(&self, tree: &str, keep_from_ms: u64) -> Option<TreeFigures> {
        let at = TALLIED.iter().position(|t| *t == tree)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = &mut state.trees[at];
        counts.written_by_hour = counts.written_by_hour.split_off(&(keep_from_ms / HOUR_MS));
        Some(TreeFigures {
            rows: counts.rows.max(0) as u64,
            bytes: counts.bytes.max(0) as u64,
            written_by_hour: counts.written_by_hour.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_removals_move_the_figures_and_other_trees_do_not() {
        let tally = Tally::default();
        let mut changes = Changes::default();
        changes.put(trees::FILLS, b"k1", None, b"value");
        changes.put(trees::ORDERS, b"o1", None, b"abc");
        changes.put(trees::ORDERS, b"o1", Some(b"abc"), b"abcdef");
        changes.put(trees::BOTS, b"b1", None, b"ignored");
        tally.apply_at(&changes, 10 * HOUR_MS + 5);
        let fills = tally.figures(trees::FILLS, 0).unwrap();
        assert_eq!((fills.rows, fills.bytes, fills.written_since(0)), (1, 7, 7));
        let orders = tally.figures(trees::ORDERS, 0).unwrap();
        assert_eq!((orders.rows, orders.bytes, orders.written_since(0)), (1, 8, 8));
        assert!(tally.figures(trees::BOTS, 0).is_none());

        let mut removal = Changes::default();
        removal.removed(trees::FILLS, b"k1", b"value");
        tally.apply_at(&removal, 11 * HOUR_MS);
        let fills = tally.figures(trees::FILLS, 0).unwrap();
        assert_eq!((fills.rows, fills.bytes), (0, 0));
        // What was written stays written; it ages out by the hour.
        assert_eq!(fills.written_since(10 * HOUR_MS), 7);
        assert_eq!(tally.figures(trees::FILLS, 11 * HOUR_MS).unwrap().written_since(0), 0);
    }

    #[test]
    fn a_seed_adds_what_was_written_since_its_mark() {
        let tally = Tally::default();
        let mut before = Changes::default();
        before.put(trees::EVENTS, b"e1", None, b"12345678");
        tally.apply_at(&before, HOUR_MS);
        let mark = tally.mark();
        let mut during = Changes::default();
        during.put(trees::EVENTS, b"e2", None, b"1234");
        tally.apply_at(&during, 2 * HOUR_MS);
        assert!(!tally.is_seeded());

        // The read found e1 only (e2 came after the read had passed it).
        let read = TreeFigures { rows: 1, bytes: 10, written_by_hour: BTreeMap::from([(1, 10)]) };
        tally.seed(mark, &BTreeMap::from([(trees::EVENTS, read)]));
        assert!(tally.is_seeded());
        let events = tally.figures(trees::EVENTS, 0).unwrap();
        assert_eq!((events.rows, events.bytes), (2, 16));
        assert_eq!(events.written_by_hour, BTreeMap::from([(1, 10), (2, 6)]));
        assert_eq!(tally.figures(trees::FILLS, 0).unwrap().rows, 0);
    }
}
