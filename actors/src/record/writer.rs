//! The recorder: feeds hand events to it without waiting; a thread of its own writes them.
//!
//! [`Recorder::record`] is a `try_send` into a bounded channel, so a feed actor never waits on a
//! disk: when the writer falls behind and the channel is full, the event is dropped and counted
//! in `keel_record_dropped_total{venue}`. The writer thread appends each event to the file of its
//! venue, symbol and UTC day (by receive time), opening the next day's file when the date
//! changes, and hands its buffer to the OS after every batch (and at least every second), so a
//! crash of the process loses only what was still queued. Appending to an existing file first
//! cuts away a torn tail left by an earlier crash.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::format::{self, Reader};
use keel_core::market::{MarketEvent, Symbol, VenueId};

/// How often the writer hands buffered records to the OS when events trickle in.
const IDLE_FLUSH: Duration = Duration::from_secs(1);
/// Most events written between two flushes.
const MAX_BATCH: usize = 4096;
/// Least time between two logged write errors (a full disk would otherwise flood the log).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// File name extension of recordings.
pub const EXTENSION: &str = "krec";

/// Where feeds send events to be recorded. Cloning shares the writer.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Arc<MarketEvent>>,
}

impl Recorder {
    /// Starts a writer thread recording under `dir`, with room for `capacity` queued events.
    ///
    /// # Errors
    /// The directory cannot be created or the thread cannot be spawned.
    pub fn start(dir: PathBuf, capacity: usize) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = sync_channel(capacity.max(1));
        std::thread::Builder::new()
            .name("keel-recorder".into())
            .spawn(move || Writer::new(dir).run(&rx))?;
        Ok(Self { tx })
    }

    /// A recorder whose queue nobody drains, and the queue (tests).
    pub fn detached(capacity: usize) -> (Self, Receiver<Arc<MarketEvent>>) {
        let (tx, rx) = sync_channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Queues `event` without waiting. False (and counted in `keel_record_dropped_total`) when
    /// the queue is full or the writer is gone.
    pub fn record(&self, event: &Arc<MarketEvent>) -> bool {
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!("keel_record_dropped_total", "venue" => event.venue.as_str())
                    .increment(1);
                false
            }
        }
    }
}

/// The file of one venue, symbol and day: `<dir>/<venue>/<SYMBOL>/<YYYY-MM-DD>.krec`.
pub fn file_path(dir: &Path, venue: VenueId, symbol: &Symbol, date: &str) -> PathBuf {
    dir.join(venue.as_str()).join(symbol.as_str()).join(format!("{date}.{EXTENSION}"))
}

/// The UTC date (`YYYY-MM-DD`) of a time in µs since the epoch.
pub fn utc_date(us: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_micros(us);
    let mut text = humantime::format_rfc3339_seconds(time).to_string();
    text.truncate(10);
    text
}

/// Whether `s` is a date `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    s.len() == 10 && humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).is_ok()
}

/// The recordings of `venue` and `symbol` under `dir` dated `from` to `to` (inclusive), in date
/// order.
///
/// # Errors
/// The directory exists but cannot be listed.
pub fn files_between(
    dir: &Path,
    venue: VenueId,
    symbol: &Symbol,
    from: &str,
    to: &str,
) -> io::Result<Vec<PathBuf>> {
    let folder = dir.join(venue.as_str()).join(symbol.as_str());
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let dated = path.extension().is_some_and(|e| e == EXTENSION)
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|date| is_date(date) && (from..=to).contains(&date));
        if dated {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// One open recording.
struct Segment {
    date: String,
    out: BufWriter<File>,
    dirty: bool,
}

impl Segment {
    /// Opens the file for appending, writing the header of a new file, or cutting a torn tail
    /// off an existing one. A file that is not a readable recording is moved aside.
    fn open(path: &Path, venue: VenueId, symbol: &Symbol, date: &str) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let valid = valid_length(&mut file, venue, symbol)?;
        let file = match valid {
            Some(len) => {
                file.set_len(len)?;
                file.seek(SeekFrom::Start(len))?;
                let mut out = BufWriter::new(file);
                if len == 0 {
                    format::write_header(&mut out, venue, symbol)?;
                }
                out
            }
            None => {
                drop(file);
                let aside = path.with_extension(format!("{EXTENSION}.unreadable"));
                tracing::warn!(path = %path.display(), aside = %aside.display(),
                    "a recording does not read back; moved aside");
                std::fs::rename(path, &aside)?;
                let mut out = BufWriter::new(File::create(path)?);
                format::write_header(&mut out, venue, symbol)?;
                out
            }
        };
        Ok(Self { date: date.to_owned(), out: file, dirty: true })
    }
}

/// How much of an existing file is whole records of this venue and symbol: `Some(0)` for an
/// empty file, `None` when its header is not ours.
fn valid_length(file: &mut File, venue: VenueId, symbol: &Symbol) -> io::Result<Option<u64>> {
    if file.metadata()?.len() == 0 {
        return Ok(Some(0));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut reader = match Reader::new(io::BufReader::new(&mut *file)) {
        Ok(reader) => reader,
        Err(_) => return Ok(None),
    };
    if reader.header().venue != venue || &reader.header().symbol != symbol {
        return Ok(None);
    }
    let mut valid = reader.offset();
    while let Some(next) = reader.next_event() {
        if next.is_err() {
            // Keep what precedes the first bad record; it and everything after go.
            break;
        }
        valid = reader.offset();
    }
    Ok(Some(valid))
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    segments: HashMap<(VenueId, Symbol), Segment>,
    payload: Vec<u8>,
    last_error_log: Option<Instant>,
}

impl Writer {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            segments: HashMap::new(),
            payload: Vec::with_capacity(128),
            last_error_log: None,
        }
    }

    fn run(mut self, rx: &Receiver<Arc<MarketEvent>>) {
        loop {
            match rx.recv_timeout(IDLE_FLUSH) {
                Ok(event) => {
                    self.write(&event);
                    for event in rx.try_iter().take(MAX_BATCH) {
                        self.write(&event);
                    }
                    self.flush(false);
                }
                Err(RecvTimeoutError::Timeout) => self.flush(false),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(true);
                    return;
                }
            }
        }
    }

    fn write(&mut self, event: &MarketEvent) {
        let date = utc_date(event.received_us);
        let key = (event.venue, event.symbol.clone());
        if self.segments.get(&key).is_some_and(|s| s.date != date) {
            // A new day: the old file is complete; make it durable.
            if let Some(mut old) = self.segments.remove(&key)
                && let Err(err) = old.out.flush().and_then(|()| old.out.get_ref().sync_data())
            {
                self.failed("closing", &err);
            }
        }
        if !self.segments.contains_key(&key) {
            let path = file_path(&self.dir, event.venue, &event.symbol, &date);
            match Segment::open(&path, event.venue, &event.symbol, &date) {
                Ok(segment) => {
                    self.segments.insert(key.clone(), segment);
                }
                Err(err) => {
                    self.failed("opening", &err);
                    return;
                }
            }
        }
        self.payload.clear();
        format::encode_event(event, &mut self.payload);
        let Some(segment) = self.segments.get_mut(&key) else { return };
        match format::write_record(&mut segment.out, &self.payload) {
            Ok(()) => {
                segment.dirty = true;
                metrics::counter!("keel_record_written_total", "venue" => event.venue.as_str())
                    .increment(1);
            }
            Err(err) => {
                // Reopened (and its tail repaired) on the next event.
                self.segments.remove(&key);
                self.failed("writing", &err);
            }
        }
    }

    /// Hands buffered records to the OS; with `sync`, to the disk.
    fn flush(&mut self, sync: bool) {
        let mut failed = Vec::new();
        for (key, segment) in &mut self.segments {
            if !segment.dirty && !sync {
                continue;
            }
            let mut done = segment.out.flush();
            if sync {
                done = done.and_then(|()| segment.out.get_ref().sync_data());
            }
            match done {
                Ok(()) => segment.dirty = false,
                Err(err) => failed.push((key.clone(), err)),
            }
        }
        for (key, err) in failed {
            self.segments.remove(&key);
            self.failed("flushing", &err);
        }
    }

    fn failed(&mut self, what: &'static str, err: &io::Error) {
        metrics::counter!("keel_record_errors_total", "op" => what).increment(1);
        let quiet = self.last_error_log.is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL);
        if !quiet {
            self.last_error_log = Some(Instant::now());
            tracing::warn!(dir = %self.dir.display(), error = %err, "recording: {what} failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use keel_core::market::{EventKind, Side};

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    /// 2026-12-01T23:59:59Z and a second later, in µs.
    const LATE: u64 = 1_796_169_599_000_000;

    fn trade(symbol: &str, received_us: u64, id: u64) -> Arc<MarketEvent> {
        Arc::new(MarketEvent {
            venue: VenueId::Sim,
            symbol: sym(symbol),
            exchange_ts: received_us / 1000,
            received_us,
            kind: EventKind::Trade {
                price: Decimal::new(9_800_000 + id as i64, 2),
                qty: Decimal::new(1, 3),
                side: Side::Buy,
                trade_id: id,
            },
        })
    }

    fn read(path: &Path) -> (Vec<MarketEvent>, bool) {
        let mut reader = Reader::new(io::BufReader::new(File::open(path).unwrap())).unwrap();
        let events = reader.by_ref().map(Result::unwrap).collect();
        (events, reader.torn_tail())
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(utc_date(LATE), "2026-12-01");
        assert_eq!(utc_date(LATE + 1_000_000), "2026-12-02");
        assert!(is_date("2026-12-01") && !is_date("2026-13-01") && !is_date("../etc"));
    }

    #[test]
    fn events_land_in_one_file_per_venue_symbol_and_utc_day() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(dir.path().to_owned(), 1024).unwrap();
        let sent = [
            trade("BTCUSDT", LATE - 1, 1),
            trade("ETHUSDT", LATE, 2),
            trade("BTCUSDT", LATE + 1_000_000, 3),
            trade("BTCUSDT", LATE + 2_000_000, 4),
        ];
        for event in &sent {
            assert!(recorder.record(event));
        }
        drop(recorder); // the writer drains, syncs and stops
        let day1 = file_path(dir.path(), VenueId::Sim, &sym("BTCUSDT"), "2026-12-01");
        let day2 = file_path(dir.path(), VenueId::Sim, &sym("BTCUSDT"), "2026-12-02");
        let eth = file_path(dir.path(), VenueId::Sim, &sym("ETHUSDT"), "2026-12-01");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(day2.exists() && read(&day2).0.len() == 2) {
            assert!(Instant::now() < deadline, "the writer did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(read(&day1).0, [(*sent[0]).clone()]);
        assert_eq!(read(&day2).0, [(*sent[2]).clone(), (*sent[3]).clone()]);
        assert_eq!(read(&eth).0, [(*sent[1]).clone()]);
        let files =
            files_between(dir.path(), VenueId::Sim, &sym("BTCUSDT"), "2026-11-30", "2026-12-02")
                .unwrap();
        assert_eq!(files, [day1.clone(), day2]);
        let files =
            files_between(dir.path(), VenueId::Sim, &sym("BTCUSDT"), "2026-12-01", "2026-12-01")
                .unwrap();
        assert_eq!(files, [day1]);
        assert!(
            files_between(dir.path(), VenueId::Sim, &sym("SOLUSDT"), "2000-01-01", "2100-01-01")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn appending_after_a_crash_cuts_the_torn_tail_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(dir.path(), VenueId::Sim, &sym("BTCUSDT"), "2026-12-01");
        let (venue, symbol) = (VenueId::Sim, sym("BTCUSDT"));
        {
            let mut segment = Segment::open(&path, venue, &symbol, "2026-12-01").unwrap();
            let mut payload = Vec::new();
            for id in 1..=3 {
                payload.clear();
                format::encode_event(&trade("BTCUSDT", LATE, id), &mut payload);
                format::write_record(&mut segment.out, &payload).unwrap();
            }
            segment.out.flush().unwrap();
        }
        // The crash: the last record lost its final bytes.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();
        let (events, torn) = read(&path);
        assert_eq!((events.len(), torn), (2, true));
        {
            let mut segment = Segment::open(&path, venue, &symbol, "2026-12-01").unwrap();
            let mut payload = Vec::new();
            format::encode_event(&trade("BTCUSDT", LATE, 4), &mut payload);
            format::write_record(&mut segment.out, &payload).unwrap();
            segment.out.flush().unwrap();
        }
        let (events, torn) = read(&path);
        assert!(!torn);
        let ids: Vec<u64> = events
            .iter()
            .map(|e| match e.kind {
                EventKind::Trade { trade_id, .. } => trade_id,
                _ => 0,
            })
            .collect();
        assert_eq!(ids, [1, 2, 4]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (recorder, rx) = Recorder::detached(2);
        let event = trade("BTCUSDT", LATE, 1);
        let queued: Vec<bool> = (0..4).map(|_| recorder.record(&event)).collect();
        assert_eq!(queued, [true, true, false, false]);
        assert_eq!(rx.try_iter().count(), 2);
        drop(rx);
        assert!(!recorder.record(&event), "a gone writer drops too");
    }
}
