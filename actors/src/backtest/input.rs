//! Trade files for backtests.
//!
//! Formats, told apart by their columns (a header row is optional in each):
//! - Keel's CSV: `ts,price,qty,side` (ms since the epoch; `side` is the aggressor, `buy`/`sell`);
//!   what `keel data synth` writes;
//! - Binance `trades` dumps: `id,price,qty,quote_qty,time,is_buyer_maker,is_best_match`;
//! - Binance `aggTrades` dumps: `agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match]`.
//!
//! - Keel's recordings (`*.krec`, see [`crate::record::format`]), told apart by their magic
//!   bytes: their trades, quotes and mark prices (a perpetual's, as `sim_perp` records them:
//!   a leveraged backtest without a fixed funding rate pays the recorded ones), on the recorded
//!   symbol, in recorded order.
//!
//! Binance times in microseconds (spot dumps from 2025 on) are read as such. A row that does not
//! parse, has the wrong column count, or goes back in time is an error naming the file and line,
//! or is skipped and counted with `skip_bad_rows`. In a recording, a record whose checksum fails
//! is such an error (the "line" is the record's number); a torn tail (the last record cut short
//! by a crash) ends the file and counts as one skipped row.

use std::fmt;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rust_decimal::Decimal;

use crate::record::format::{self as record, RecordError};
use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use keel_venues::sim::{Instrument, SimMarket};

/// A row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

impl std::error::Error for InputError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Keel,
    BinanceTrades,
    BinanceAggTrades,
}

/// Longest CSV line a [`TradeReader`] holds in memory, in bytes (its line ending aside). A longer
/// line is a bad row (an error, or skipped with `skip_bad_rows`), and the rest of it is read past
/// without being kept: one line of a 64 MiB upload cannot take 64 MiB of memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A line of a CSV file that could not be read.
#[derive(Debug)]
enum LineError {
    /// Longer than [`MAX_LINE_BYTES`]: a bad row.
    TooLong,
    /// The input failed, or the line is not UTF-8: the file cannot be read on.
    Unreadable(String),
}

/// Lines of a CSV file, each at most [`MAX_LINE_BYTES`] long (`BufRead::lines` would gather a
/// line of any length).
#[derive(Debug)]
struct BoundedLines<R> {
    reader: R,
    line: Vec<u8>,
}

impl<R: BufRead> BoundedLines<R> {
    fn new(reader: R) -> Self {
        Self { reader, line: Vec::new() }
    }

    /// The next line without its ending; `None` at the end of the input.
    fn next_line(&mut self) -> Option<Result<String, LineError>> {
        self.line.clear();
        let mut too_long = false;
        let mut started = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Some(Err(LineError::Unreadable(err.to_string()))),
            };
            if available.is_empty() {
                if !started {
                    return None;
                }
                break;
            }
            started = true;
            let (take, ends) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                let content = take - usize::from(ends);
                if self.line.len() + content > MAX_LINE_BYTES + 1 {
                    too_long = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(&available[..content]);
                }
            }
            self.reader.consume(take);
            if ends {
                break;
            }
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if too_long || self.line.len() > MAX_LINE_BYTES {
            self.line.clear();
            return Some(Err(LineError::TooLong));
        }
        match std::str::from_utf8(&self.line) {
            Ok(text) => Some(Ok(text.to_owned())),
            Err(_) => Some(Err(LineError::Unreadable("the line is not UTF-8".to_owned()))),
        }
    }
}

/// Where a [`TradeReader`] reads from.
#[derive(Debug)]
enum Source<R> {
    Csv(BoundedLines<R>),
    Recorded(record::Reader<R>),
}

/// Reads trades (and, from recordings, quotes) from a file, in order, as market events.
#[derive(Debug)]
pub struct TradeReader<R> {
    source: Source<R>,
    file: PathBuf,
    symbol: Symbol,
    line: u64,
    format: Option<Format>,
    last_ts: u64,
    skip_bad_rows: bool,
    skipped: u64,
    /// Whether a recording's torn tail was counted in `skipped`.
    tail_counted: bool,
}

/// A reader that adds the bytes it reads to a shared counter.
#[derive(Debug)]
pub struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A file whose bytes read so far are counted (for progress), shareable across threads.
pub type CountedFile = std::io::BufReader<Counted<std::fs::File>>;

impl TradeReader<CountedFile> {
    /// Opens `path`, a CSV file or a recording (told apart by its first bytes).
    ///
    /// # Errors
    /// The file cannot be opened, or it starts like a recording but its header is damaged.
    pub fn open(path: &Path, symbol: Symbol, skip_bad_rows: bool) -> std::io::Result<Self> {
        Self::open_counted(path, symbol, skip_bad_rows, Arc::default())
    }

    /// Like [`TradeReader::open`], adding every byte read to `bytes_read`.
    ///
    /// # Errors
    /// As [`TradeReader::open`].
    pub fn open_counted(
        path: &Path,
        symbol: Symbol,
        skip_bad_rows: bool,
        bytes_read: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let reader =
            std::io::BufReader::with_capacity(1 << 16, Counted { inner: file, count: bytes_read });
        Self::detect(reader, path, symbol, skip_bad_rows)
    }
}

impl<R: BufRead> TradeReader<R> {
    /// Reads a CSV file from `reader`, naming `file` in errors.
    pub fn new(reader: R, file: &Path, symbol: Symbol, skip_bad_rows: bool) -> Self {
        Self::with_source(Source::Csv(BoundedLines::new(reader)), file, symbol, skip_bad_rows)
    }

    /// Reads a recording or a CSV file from `reader`, whichever its first bytes say.
    ///
    /// # Errors
    /// The input cannot be read, or it starts like a recording but its header is damaged.
    pub fn detect(
        mut reader: R,
        file: &Path,
        symbol: Symbol,
        skip_bad_rows: bool,
    ) -> std::io::Result<Self> {
        let start = reader.fill_buf()?;
        let prefix = start.len().min(record::MAGIC.len());
        let recorded = prefix > 0 && start[..prefix] == record::MAGIC[..prefix];
        if !recorded {
            return Ok(Self::new(reader, file, symbol, skip_bad_rows));
        }
        let recording = record::Reader::new(reader).map_err(|err| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {err}", file.display()),
            )
        })?;
        let symbol = recording.header().symbol.clone();
        Ok(Self::with_source(Source::Recorded(recording), file, symbol, skip_bad_rows))
    }

    fn with_source(source: Source<R>, file: &Path, symbol: Symbol, skip_bad_rows: bool) -> Self {
        Self {
            source,
            file: file.to_owned(),
            symbol,
            line: 0,
            format: None,
            last_ts: 0,
            skip_bad_rows,
            skipped: 0,
            tail_counted: false,
        }
    }

    /// Rows skipped so far (with `skip_bad_rows`, and a recording's torn tail).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether the input is a recording.
    pub fn is_recording(&self) -> bool {
        matches!(self.source, Source::Recorded(_))
    }

    /// The next trade, quote or mark price of a recording.
    fn next_recorded(&mut self) -> Option<Result<MarketEvent, InputError>> {
        loop {
            let Source::Recorded(recording) = &mut self.source else { return None };
            let next = recording.next_event();
            self.line = recording.records();
            let Some(next) = next else {
                if recording.torn_tail() && !self.tail_counted {
                    self.tail_counted = true;
                    self.skipped += 1;
                }
                return None;
            };
            match next {
                Ok(event)
                    if matches!(
                        event.kind,
                        EventKind::Trade { .. }
                            | EventKind::Quote { .. }
                            | EventKind::MarkPrice { .. }
                    ) =>
                {
                    return Some(Ok(event));
                }
                Ok(_) => {}
                Err(RecordError::Checksum { .. }) if self.skip_bad_rows => self.skipped += 1,
                Err(err) => return Some(Err(self.error(err.to_string()))),
            }
        }
    }

    fn error(&self, reason: impl Into<String>) -> InputError {
        InputError { file: self.file.clone(), line: self.line, reason: reason.into() }
    }

    fn parse_row(&mut self, row: &str) -> Result<Option<MarketEvent>, InputError> {
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        let format = match self.format {
            Some(format) => format,
            None => {
                // The first row decides; a header (no number in the price column) is skipped.
                let format = detect(&fields).ok_or_else(|| {
                    self.error(format!(
                        "{} columns: expected ts,price,qty,side or a Binance trades/aggTrades dump",
                        fields.len()
                    ))
                })?;
                self.format = Some(format);
                if fields.get(1).is_some_and(|p| p.parse::<Decimal>().is_err()) {
                    return Ok(None);
                }
                format
            }
        };
        let (ts, price, qty, side) = match (format, fields.as_slice()) {
            (Format::Keel, [ts, price, qty, side]) => (*ts, *price, *qty, side_of(side)),
            (Format::BinanceTrades, [_, price, qty, _, ts, maker, _]) => {
                (*ts, *price, *qty, maker_side(maker))
            }
            (Format::BinanceAggTrades, [_, price, qty, _, _, ts, maker, ..])
                if fields.len() <= 8 =>
            {
                (*ts, *price, *qty, maker_side(maker))
            }
            _ => {
                return Err(self.error(format!("{} columns, unlike the rows before", fields.len())));
            }
        };
        let ts: u64 = ts.parse().map_err(|_| self.error(format!("time `{ts}` is not a number")))?;
        // Binance spot dumps switched to microseconds; anything past year 5138 in ms is µs.
        let ts = if ts >= 100_000_000_000_000 { ts / 1000 } else { ts };
        let price: Decimal = price
            .parse()
            .ok()
            .filter(|p: &Decimal| *p > Decimal::ZERO)
            .ok_or_else(|| self.error(format!("price `{price}` is not a positive decimal")))?;
        let qty: Decimal = qty
            .parse()
            .ok()
            .filter(|q: &Decimal| *q > Decimal::ZERO)
            .ok_or_else(|| self.error(format!("quantity `{qty}` is not a positive decimal")))?;
        let side = side.ok_or_else(|| {
            self.error("side must be buy/sell (or true/false for is_buyer_maker)")
        })?;
        if ts < self.last_ts {
            return Err(
                self.error(format!("time {ts} is before the previous row's {}", self.last_ts))
            );
        }
        self.last_ts = ts;
        Ok(Some(MarketEvent {
            venue: VenueId::Sim,
            symbol: self.symbol.clone(),
            exchange_ts: ts,
            received_us: ts * 1000,
            kind: EventKind::Trade { price, qty, side, trade_id: self.line },
        }))
    }
}

fn detect(fields: &[&str]) -> Option<Format> {
    match fields.len() {
        4 => Some(Format::Keel),
        8 => Some(Format::BinanceAggTrades),
        // Both Binance dumps have 7 columns: `trades` has the buyer-maker flag in column 6,
        // `aggTrades` has the time there.
        7 if is_bool(fields[5]) => Some(Format::BinanceTrades),
        7 => Some(Format::BinanceAggTrades),
        _ => None,
    }
}

fn is_bool(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "is_buyer_maker")
}

fn side_of(s: &str) -> Option<Side> {
    match s.to_ascii_lowercase().as_str() {
        "buy" | "b" => Some(Side::Buy),
        "sell" | "s" => Some(Side::Sell),
        _ => None,
    }
}

/// The aggressor from Binance's `is_buyer_maker`: a maker buyer means the taker sold.
fn maker_side(s: &str) -> Option<Side> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Some(Side::Sell),
        "false" => Some(Side::Buy),
        _ => None,
    }
}

impl<R: BufRead> Iterator for TradeReader<R> {
    type Item = Result<MarketEvent, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let Source::Csv(lines) = &mut self.source else { return self.next_recorded() };
            let row = match lines.next_line()? {
                Ok(row) => row,
                Err(LineError::TooLong) if self.skip_bad_rows => {
                    self.skipped += 1;
                    continue;
                }
                Err(LineError::TooLong) => {
                    let reason = format!("the line is longer than {MAX_LINE_BYTES} bytes");
                    return Some(Err(self.error(reason)));
                }
                Err(LineError::Unreadable(err)) => {
                    return Some(Err(self.error(format!("unreadable: {err}"))));
                }
            };
            if row.trim().is_empty() {
                continue;
            }
            match self.parse_row(&row) {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(_) if self.skip_bad_rows => self.skipped += 1,
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// A seeded synthetic trade series: the sim venue's random walk, one trade every 100 ms from a
/// fixed start, so the same seed always gives the same ticks.
pub fn synth(ticks: u64, seed: u64, symbol: Symbol) -> impl Iterator<Item = MarketEvent> {
    const START_MS: u64 = 1_700_000_000_000;
    let mut market = SimMarket::new(seed, vec![Instrument::for_symbol(symbol.clone())]);
    (0..ticks).filter_map(move |i| {
        let ts = START_MS + i * 100;
        market.step(&symbol, ts, ts * 1000).map(|[trade, _quote]| trade)
    })
}

/// Writes events (trades) as Keel's CSV, with a header.
///
/// # Errors
/// The writer failed.
pub fn write_csv(
    events: impl Iterator<Item = MarketEvent>,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    writeln!(out, "ts,price,qty,side")?;
    let mut rows = 0;
    for event in events {
        if let EventKind::Trade { price, qty, side, .. } = event.kind {
            let side = if side == Side::Buy { "buy" } else { "sell" };
            writeln!(out, "{},{price},{qty},{side}", event.exchange_ts)?;
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, skip: bool) -> (Vec<Result<MarketEvent, InputError>>, u64) {
        let mut reader = TradeReader::new(
            std::io::Cursor::new(text.to_owned()),
            Path::new("t.csv"),
            Symbol::parse("BTCUSDT").unwrap(),
            skip,
        );
        let rows: Vec<_> = reader.by_ref().collect();
        (rows, reader.skipped())
    }

    fn trade(event: &MarketEvent) -> (u64, String, String, Side) {
        match &event.kind {
            EventKind::Trade { price, qty, side, .. } => {
                (event.exchange_ts, price.to_string(), qty.to_string(), *side)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_huge_line_is_a_bad_row_and_is_never_held_whole() {
        // 8 MiB without a newline, in a buffered reader as uploads are read.
        let huge = "9".repeat(8 << 20);
        let text = format!("1000,100,0.1,buy\n{huge}\n2000,101,0.2,sell\n");
        let mut lines = BoundedLines::new(std::io::BufReader::with_capacity(
            1 << 16,
            std::io::Cursor::new(text.clone().into_bytes()),
        ));
        assert_eq!(lines.next_line().unwrap().unwrap(), "1000,100,0.1,buy");
        assert!(matches!(lines.next_line(), Some(Err(LineError::TooLong))));
        assert!(
            lines.line.capacity() <= 2 * MAX_LINE_BYTES,
            "the line buffer grew to {} bytes",
            lines.line.capacity()
        );
        assert_eq!(lines.next_line().unwrap().unwrap(), "2000,101,0.2,sell", "reading goes on");
        assert!(lines.next_line().is_none());

        let (rows, skipped) = read(&text, false);
        let err = rows[1].as_ref().unwrap_err();
        assert_eq!((err.line, err.reason.as_str()), (2, "the line is longer than 65536 bytes"));
        let (rows, skipped_with_skip) = read(&text, true);
        assert_eq!((rows.len(), skipped, skipped_with_skip), (2, 0, 1));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read_and_one_more_byte_is_not() {
        for (extra, ending) in [(0, "\n"), (0, "\r\n"), (0, ""), (1, "\n"), (1, "")] {
            let line = "x".repeat(MAX_LINE_BYTES + extra);
            let mut lines = BoundedLines::new(std::io::Cursor::new(format!("{line}{ending}")));
            let got = lines.next_line().unwrap();
            if extra == 0 {
                assert_eq!(got.unwrap().len(), MAX_LINE_BYTES, "{ending:?}");
            } else {
                assert!(matches!(got, Err(LineError::TooLong)), "{ending:?}");
            }
            assert!(lines.next_line().is_none());
        }
    }

    #[test]
    fn the_three_formats_read_with_or_without_a_header() {
        let cases = [
            ("ts,price,qty,side\n1000,100.5,0.1,buy\n2000,101,0.2,sell\n", (1000, Side::Buy)),
            ("1000,100.5,0.1,buy\n2000,101,0.2,sell\n", (1000, Side::Buy)),
            // trades: id,price,qty,quote_qty,time,is_buyer_maker,is_best_match
            (
                "1,100.5,0.1,10.05,1000,true,true\n2,101,0.2,20.2,2000,false,true\n",
                (1000, Side::Sell),
            ),
            (
                "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n1,100.5,0.1,10.05,1000,True,True\n2,101,0.2,20.2,2000,False,True\n",
                (1000, Side::Sell),
            ),
            // aggTrades, 8 and 7 columns.
            ("7,100.5,0.1,1,2,1000,false,true\n8,101,0.2,3,3,2000,true,true\n", (1000, Side::Buy)),
            ("7,100.5,0.1,1,2,1000,false\n8,101,0.2,3,3,2000,true\n", (1000, Side::Buy)),
        ];
        for (text, (ts, side)) in cases {
            let (rows, _) = read(text, false);
            let rows: Vec<MarketEvent> = rows.into_iter().map(Result::unwrap).collect();
            assert_eq!(rows.len(), 2, "{text}");
            assert_eq!(trade(&rows[0]), (ts, "100.5".into(), "0.1".into(), side), "{text}");
            assert_eq!(trade(&rows[1]).0, 2000, "{text}");
        }
        // Recent spot dumps stamp microseconds.
        let (rows, _) = read("7,100.5,0.1,1,2,1735689600123456,false,true\n", false);
        assert_eq!(rows[0].as_ref().unwrap().exchange_ts, 1_735_689_600_123);
    }

    #[test]
    fn bad_rows_name_the_file_and_line_or_are_skipped_and_counted() {
        let text = "ts,price,qty,side\n1000,100,0.1,buy\n2000,abc,0.1,buy\n1500,100,0.1,buy\n3000,100,0.1\n4000,100,-1,sell\n5000,100,0.1,hold\n6000,100,0.1,sell\n";
        let (rows, _) = read(text, false);
        let error = rows.into_iter().find_map(Result::err).unwrap();
        assert_eq!(error.to_string(), "t.csv:3: price `abc` is not a positive decimal");
        let (rows, skipped) = read(text, true);
        let good: Vec<u64> = rows.into_iter().map(|r| r.unwrap().exchange_ts).collect();
        assert_eq!(good, [1000, 1500, 6000], "a bad row does not move the clock");
        assert_eq!(skipped, 4);
        let (rows, _) = read("1000,100,0.1,buy\n500,100,0.1,buy\n", false);
        assert!(rows[1].as_ref().unwrap_err().reason.contains("before the previous"));
        let (rows, _) = read("a,b\n", false);
        assert!(rows[0].as_ref().unwrap_err().reason.contains("2 columns"));
    }

    #[test]
    fn synth_is_seeded_and_round_trips_through_csv() {
        let symbol = Symbol::parse("BTCUSDT").unwrap();
        let a: Vec<_> = synth(1000, 3, symbol.clone()).collect();
        assert_eq!(a, synth(1000, 3, symbol.clone()).collect::<Vec<_>>());
        assert_ne!(a, synth(1000, 4, symbol).collect::<Vec<_>>());
        let mut csv = Vec::new();
        assert_eq!(write_csv(a.iter().cloned(), &mut csv).unwrap(), 1000);
        let (rows, _) = read(std::str::from_utf8(&csv).unwrap(), false);
        let back: Vec<_> = rows.into_iter().map(Result::unwrap).map(|e| trade(&e)).collect();
        let orig: Vec<_> = a.iter().map(trade).collect();
        assert_eq!(back, orig);
    }

    /// A recording of `n` sim steps (trade and quote each) plus a gap and a mark price, and the
    /// trades, quotes and the mark price.
    fn recording(n: u64) -> (Vec<u8>, Vec<MarketEvent>) {
        let symbol = Symbol::parse("ETHUSDT").unwrap();
        let mut market = SimMarket::new(5, vec![Instrument::for_symbol(symbol.clone())]);
        let mut events: Vec<MarketEvent> = (0..n)
            .flat_map(|i| market.step(&symbol, 1000 + i, (1000 + i) * 1000).unwrap())
            .collect();
        let mut gap = events[0].clone();
        gap.kind = EventKind::Gap { reason: "test".into() };
        let mut mark = events[1].clone();
        mark.kind = EventKind::MarkPrice {
            mark_price: Decimal::new(350_012, 2),
            funding_rate: Some(Decimal::new(1, 4)),
            next_funding_ms: Some(28_800_000),
        };
        events.insert(2, mark);
        events.insert(1, gap);
        let mut bytes = Vec::new();
        record::write_recording(&mut bytes, VenueId::Sim, &symbol, &events).unwrap();
        events.remove(1);
        (bytes, events)
    }

    fn read_recording(bytes: Vec<u8>, skip: bool) -> (Vec<Result<MarketEvent, InputError>>, u64) {
        let mut reader = TradeReader::detect(
            std::io::Cursor::new(bytes),
            Path::new("r.krec"),
            Symbol::parse("BTCUSDT").unwrap(),
            skip,
        )
        .unwrap();
        assert!(reader.is_recording());
        let rows: Vec<_> = reader.by_ref().collect();
        (rows, reader.skipped())
    }

    #[test]
    fn recordings_are_detected_and_give_their_trades_quotes_and_marks_on_their_own_symbol() {
        let (bytes, events) = recording(50);
        let (rows, skipped) = read_recording(bytes, false);
        let rows: Vec<MarketEvent> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows, events, "the gap is left out, everything else as recorded");
        assert_eq!(skipped, 0);
        assert_eq!(rows[0].symbol.as_str(), "ETHUSDT");
    }

    #[test]
    fn a_recordings_torn_tail_is_skipped_and_counted() {
        let (bytes, events) = recording(20);
        let cut = bytes.len() - 3;
        let (rows, skipped) = read_recording(bytes[..cut].to_vec(), false);
        let rows: Vec<MarketEvent> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows, events[..events.len() - 1]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn a_wrong_checksum_names_the_file_and_record_or_is_skipped() {
        let (mut bytes, events) = recording(20);
        // Corrupt the last byte of the 5th record's payload (records: header, trade, gap, ...).
        let mut reader = record::Reader::new(bytes.as_slice()).unwrap();
        for _ in 0..4 {
            reader.next_event().unwrap().unwrap();
        }
        let fifth_end = {
            reader.next_event().unwrap().unwrap();
            reader.offset() as usize
        };
        bytes[fifth_end - 1] ^= 0xff;
        let (rows, _) = read_recording(bytes.clone(), false);
        let error = rows.into_iter().find_map(Result::err).unwrap();
        assert_eq!(error.file, Path::new("r.krec"));
        assert_eq!(error.line, 5);
        assert!(error.reason.contains("checksum mismatch"), "{error}");
        let (rows, skipped) = read_recording(bytes, true);
        let rows: Vec<MarketEvent> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(skipped, 1);
        assert_eq!(rows.len(), events.len() - 1, "only the bad record is lost");
    }
}
