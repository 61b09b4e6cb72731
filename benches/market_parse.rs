//! What turning a Binance frame into a [`MarketEvent`] costs, against the floor of reading the
//! same JSON.
//!
//! For each of `trade`, `bookTicker`, `kline` and `depthUpdate` (the payloads of
//! `shared/fixtures/binance`), in the combined-stream wrapper as Keel's connection receives them
//! (`…/wrapped`) and raw (`…/raw`):
//!
//! - `parse` is [`parse_with`] and a warm [`SymbolCache`], as a connection parses: one
//!   `serde_json` pass, exact decimals, the symbol, the event; `parse_uncached` is [`parse`],
//!   which validates and allocates the symbol each time;
//! - `serde_baseline` is `serde_json::from_str` of the same frame into a borrowed struct with
//!   the fields `parse` reads, all `&str`, `u64` and `bool`: no decimals, no symbol, no checks.
//!
//! After each message's criterion group, `…/interleaved` times the two sides in alternating
//! rounds and prints the median ratio of the rounds: on a shared machine, criterion's figures for
//! `parse` and `serde_baseline` are taken seconds apart and their ratio moves with the noise.
//!
//! The target is `parse` within 1.5× of `serde_baseline`. `depth20/wrapped` is a full
//! `depth20@100ms` futures frame (20 levels a side), the largest frame Keel subscribes to.
//! `parts/*` prices the pieces `parse` adds: a decimal through `rust_decimal`'s `from_str` and
//! `from_str_exact` and through [`parse_decimal`] (what `parse` uses), and [`Symbol::parse`]
//! (two allocations: upper-casing, then the `Arc<str>`).
//!
//! `cargo bench --bench market_parse`
//!
//! [`MarketEvent`]: keel_core::market::MarketEvent

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keel_core::market::{Symbol, VenueId};
use keel_venues::binance::parse::{Inbound, SymbolCache, parse, parse_decimal, parse_with};
use rust_decimal::Decimal;
use serde::Deserialize;

const TRADE: &str = r#"{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}"#;
const BOOK_TICKER: &str = r#"{"u":55123456789,"s":"BTCUSDT","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000"}"#;
const KLINE: &str = r#"{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}"#;
const DEPTH_UPDATE: &str = r#"{"e":"depthUpdate","E":1732307467300,"s":"BTCUSDT","U":55123456790,"u":55123456795,"b":[["98234.51000000","1.10000000"],["98230.00000000","0.00000000"]],"a":[["98234.52000000","0.50000000"]]}"#;

/// When the frames "arrived", µs.
const RECEIVED_US: u64 = 1_732_307_467_555_123;

#[allow(dead_code)] // Fields are read by the deserializer, which is the point.
#[derive(Deserialize)]
struct Wrapped<'a, T> {
    stream: &'a str,
    data: T,
}

#[allow(dead_code, non_snake_case)]
#[derive(Deserialize)]
struct TradeB<'a> {
    e: &'a str,
    E: u64,
    s: &'a str,
    t: u64,
    p: &'a str,
    q: &'a str,
    T: u64,
    m: bool,
}

#[allow(dead_code, non_snake_case)]
#[derive(Deserialize)]
struct BookTickerB<'a> {
    u: u64,
    s: &'a str,
    b: &'a str,
    B: &'a str,
    a: &'a str,
    A: &'a str,
}

#[allow(dead_code, non_snake_case)]
#[derive(Deserialize)]
struct KlineB<'a> {
    e: &'a str,
    E: u64,
    s: &'a str,
    #[serde(borrow)]
    k: KB<'a>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct KB<'a> {
    t: u64,
    s: &'a str,
    i: &'a str,
    o: &'a str,
    h: &'a str,
    l: &'a str,
    c: &'a str,
    v: &'a str,
    x: bool,
}

#[allow(dead_code, non_snake_case)]
#[derive(Deserialize)]
struct DepthUpdateB<'a> {
    e: &'a str,
    E: u64,
    T: Option<u64>,
    s: &'a str,
    u: u64,
    #[serde(borrow)]
    b: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    a: Vec<(&'a str, &'a str)>,
}

/// A futures `depth20@100ms` frame: `depthUpdate`-shaped, 20 levels a side.
fn depth20() -> String {
    // Prices in cents, 10 cents apart: bids down from the best, asks up.
    let side = |best: u32, step: i64| {
        (0..20u32)
            .map(|i| {
                let cents = i64::from(best) + step * i64::from(i);
                format!(r#"["{}.{:02}","{}.{:03}"]"#, cents / 100, cents % 100, 1 + i, 7 * i + 5)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"e":"depthUpdate","E":1732307467300,"T":1732307467299,"s":"BTCUSDT","U":7301234567880,"u":7301234567890,"pu":7301234567870,"b":[{}],"a":[{}]}}"#,
        side(9_826_010, -10),
        side(9_826_020, 10)
    )
}

fn wrap(stream: &str, payload: &str) -> String {
    format!(r#"{{"stream":"{stream}","data":{payload}}}"#)
}

/// Benches `parse` against `serde_baseline` (`$baseline` is the borrowed struct) on one
/// frame, after checking both read it.
macro_rules! compare {
    ($c:expr, $name:expr, $venue:expr, $frame:expr, $baseline:ty) => {{
        let (venue, frame): (VenueId, &str) = ($venue, $frame);
        let parsed = parse(venue, frame, RECEIVED_US);
        assert!(matches!(parsed, Ok(Inbound::Event(_))), "{}: {parsed:?}", $name);
        assert!(serde_json::from_str::<$baseline>(frame).is_ok(), "{}: baseline", $name);
        let mut group = $c.benchmark_group($name);
        // As a connection parses: with its warm symbol cache.
        let mut symbols = SymbolCache::default();
        group.bench_function("parse", |b| {
            b.iter(|| parse_with(venue, black_box(frame), RECEIVED_US, &mut symbols))
        });
        group.bench_function("parse_uncached", |b| {
            b.iter(|| parse(venue, black_box(frame), RECEIVED_US))
        });
        group.bench_function("serde_baseline", |b| {
            b.iter(|| serde_json::from_str::<$baseline>(black_box(frame)))
        });
        group.finish();
        interleaved(
            $name,
            || drop(black_box(parse_with(venue, black_box(frame), RECEIVED_US, &mut symbols))),
            || drop(black_box(serde_json::from_str::<$baseline>(black_box(frame)))),
        );
    }};
}

/// Rounds of the interleaved comparison, and calls of each side per round.
const ROUNDS: usize = 61;
const PER_ROUND: u32 = 10_000;

/// The ratio `parse / baseline` measured the noise-proof way: [`ROUNDS`] rounds, each timing
/// [`PER_ROUND`] calls of one, then of the other (which goes first alternates), so a slow
/// patch of a shared machine slows both sides of a round alike. Prints the median and quartile
/// ratios of the rounds, next to criterion's own (sequential) figures.
fn interleaved(name: &str, mut parse: impl FnMut(), mut baseline: impl FnMut()) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            f();
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(PER_ROUND)
    };
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (p, b) = if round % 2 == 0 {
            let p = time(&mut parse);
            (p, time(&mut baseline))
        } else {
            let b = time(&mut baseline);
            (time(&mut parse), b)
        };
        rounds.push((p / b, p, b));
    }
    rounds.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (q1, median, q3) = (rounds[ROUNDS / 4], rounds[ROUNDS / 2], rounds[3 * ROUNDS / 4]);
    println!(
        "{name}/interleaved: ratio {:.2} (quartiles {:.2}–{:.2}) over {ROUNDS} rounds; median \
         round: parse {:.0} ns, baseline {:.0} ns",
        median.0, q1.0, q3.0, median.1, median.2
    );
}

fn messages(c: &mut Criterion) {
    use VenueId::{Binance, BinanceFutures};
    let trade = wrap("btcusdt@trade", TRADE);
    compare!(c, "trade/wrapped", Binance, &trade, Wrapped<TradeB>);
    compare!(c, "trade/raw", Binance, TRADE, TradeB);
    let book_ticker = wrap("btcusdt@bookTicker", BOOK_TICKER);
    compare!(c, "bookTicker/wrapped", Binance, &book_ticker, Wrapped<BookTickerB>);
    compare!(c, "bookTicker/raw", Binance, BOOK_TICKER, BookTickerB);
    let kline = wrap("btcusdt@kline_1m", KLINE);
    compare!(c, "kline/wrapped", Binance, &kline, Wrapped<KlineB>);
    compare!(c, "kline/raw", Binance, KLINE, KlineB);
    let depth_update = wrap("btcusdt@depth@100ms", DEPTH_UPDATE);
    compare!(c, "depthUpdate/wrapped", Binance, &depth_update, Wrapped<DepthUpdateB>);
    compare!(c, "depthUpdate/raw", Binance, DEPTH_UPDATE, DepthUpdateB);
    let depth20 = wrap("btcusdt@depth20@100ms", &depth20());
    compare!(c, "depth20/wrapped", BinanceFutures, &depth20, Wrapped<DepthUpdateB>);
}

fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    let price = "98234.51000000";
    group.bench_function("decimal_from_str", |b| b.iter(|| Decimal::from_str(black_box(price))));
    group.bench_function("decimal_from_str_exact", |b| {
        b.iter(|| Decimal::from_str_exact(black_box(price)))
    });
    group.bench_function("decimal_parse_decimal", |b| b.iter(|| parse_decimal(black_box(price))));
    group.bench_function("symbol_parse", |b| b.iter(|| Symbol::parse(black_box("BTCUSDT"))));
    group.finish();
}

criterion_group! {
    name = market_parse;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = messages, parts
}
criterion_main!(market_parse);
