//! The parser against Binance's documented frames, garbage, and random mutations.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::IgnoredAny;

use super::*;

// Verbatim copies of /work/shared/fixtures/binance/*.jsonl (Binance's documented shapes),
// kept here so the crate builds and tests on its own.
const SPOT_STREAMS: &str = r#"{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}
{"e":"aggTrade","E":1732307467130,"s":"BTCUSDT","a":3301234567,"p":"98234.52000000","q":"0.05000000","f":4212345679,"l":4212345681,"T":1732307467129,"m":false,"M":true}
{"u":55123456789,"s":"BTCUSDT","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000"}
{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}
{"e":"kline","E":1732307520001,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212346001,"o":"98210.00000000","c":"98250.00000000","h":"98251.00000000","l":"98200.00000000","v":"15.00000000","n":6002,"x":true,"q":"1473210.00000000","V":"7.00000000","Q":"687500.00000000","B":"0"}}
{"e":"depthUpdate","E":1732307467300,"s":"BTCUSDT","U":55123456790,"u":55123456795,"b":[["98234.51000000","1.10000000"],["98230.00000000","0.00000000"]],"a":[["98234.52000000","0.50000000"]]}
{"lastUpdateId":55123456795,"bids":[["98234.51000000","1.10000000"],["98234.00000000","0.20000000"]],"asks":[["98234.52000000","0.50000000"],["98235.00000000","2.00000000"]]}
{"e":"24hrTicker","E":1732307467400,"s":"BTCUSDT","p":"1234.56000000","P":"1.272","w":"97500.12345678","x":"96999.95000000","c":"98234.51000000","Q":"0.00120000","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000","o":"96999.95000000","h":"98500.00000000","l":"96500.00000000","v":"23456.78900000","q":"2287123456.12345678","O":1732221067400,"C":1732307467400,"F":4200000000,"L":4212345681,"n":12345682}"#;

const FUTURES_STREAMS: &str = r#"{"e":"aggTrade","E":1732307467150,"s":"BTCUSDT","a":2409876543,"p":"98260.10","q":"0.015","f":5601234567,"l":5601234569,"T":1732307467149,"m":true}
{"e":"bookTicker","u":7301234567890,"s":"BTCUSDT","b":"98260.10","B":"3.512","a":"98260.20","A":"0.806","T":1732307467151,"E":1732307467152}
{"e":"markPriceUpdate","E":1732307468000,"s":"BTCUSDT","p":"98261.33000000","i":"98255.10234567","P":"98270.11111111","r":"0.00010000","T":1732320000000}
{"e":"forceOrder","E":1732307467500,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"98010.00","ap":"98020.40","X":"FILLED","l":"0.014","z":"0.014","T":1732307467498}}
{"e":"kline","E":1732307467600,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":5601230000,"L":5601234569,"o":"98230.00","c":"98260.10","h":"98270.00","l":"98220.00","v":"210.512","n":3021,"x":false,"q":"20681234.56","V":"101.001","Q":"9923456.78","B":"0"}}"#;

const COMBINED_AND_CONTROL: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}}
{"stream":"btcusdt@bookTicker","data":{"u":55123456789,"s":"BTCUSDT","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000"}}
{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}}
{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}
{"result":null,"id":1}
{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}
{"code":2,"msg":"Invalid request: unknown variable","id":3}
{"code":1,"msg":"Invalid value type: expected Boolean"}
{"e":"serverShutdown","E":1732307999999}"#;

/// When the frames "arrived", µs.
const RECEIVED_US: u64 = 1_732_307_467_555_123;
/// The same in ms: the stand-in event time for frames without one.
const RECEIVED_MS: u64 = 1_732_307_467_555;

type Expected = Result<Inbound, &'static str>;

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap()
}

fn lv(levels: &[(&str, &str)]) -> Vec<Level> {
    levels.iter().map(|(p, q)| (d(p), d(q))).collect()
}

fn event(venue: VenueId, exchange_ts: u64, kind: EventKind) -> Expected {
    Ok(Inbound::Event(MarketEvent {
        venue,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts,
        received_us: RECEIVED_US,
        kind,
    }))
}

fn trade(price: &str, qty: &str, side: Side, trade_id: u64) -> EventKind {
    EventKind::Trade { price: d(price), qty: d(qty), side, trade_id }
}

fn quote(bid: &str, bid_qty: &str, ask: &str, ask_qty: &str) -> EventKind {
    EventKind::Quote { bid: d(bid), bid_qty: d(bid_qty), ask: d(ask), ask_qty: d(ask_qty) }
}

fn candle(ohlcv: [&str; 5], closed: bool) -> EventKind {
    EventKind::Candle(Candle {
        interval: Interval::M1,
        open_time: 1_732_307_460_000,
        open: d(ohlcv[0]),
        high: d(ohlcv[1]),
        low: d(ohlcv[2]),
        close: d(ohlcv[3]),
        volume: d(ohlcv[4]),
        closed,
    })
}

fn spot_depth_update(snapshot: bool) -> EventKind {
    EventKind::Depth {
        bids: lv(&[("98234.51000000", "1.10000000"), ("98230.00000000", "0.00000000")]),
        asks: lv(&[("98234.52000000", "0.50000000")]),
        update_id: 55_123_456_795,
        snapshot,
    }
}

fn spot_partial_depth() -> EventKind {
    EventKind::Depth {
        bids: lv(&[("98234.51000000", "1.10000000"), ("98234.00000000", "0.20000000")]),
        asks: lv(&[("98234.52000000", "0.50000000"), ("98235.00000000", "2.00000000")]),
        update_id: 55_123_456_795,
        snapshot: true,
    }
}

/// Each raw fixture line: its venue, the stream it comes on, what it parses to unwrapped,
/// and what it parses to inside the combined-stream wrapper.
fn raw_fixtures() -> Vec<(VenueId, &'static str, &'static str, Expected, Expected)> {
    use Side::*;
    use VenueId::*;
    let spot_trade = || {
        event(
            Binance,
            1_732_307_467_123,
            trade("98234.51000000", "0.00120000", Sell, 4_212_345_678),
        )
    };
    let spot_agg = || {
        event(Binance, 1_732_307_467_130, trade("98234.52000000", "0.05000000", Buy, 3_301_234_567))
    };
    let spot_quote = || {
        event(
            Binance,
            RECEIVED_MS,
            quote("98234.51000000", "1.20300000", "98234.52000000", "0.40100000"),
        )
    };
    let open_candle =
        ["98210.00000000", "98240.10000000", "98200.00000000", "98234.52000000", "12.34500000"];
    let closed_candle =
        ["98210.00000000", "98251.00000000", "98200.00000000", "98250.00000000", "15.00000000"];
    let spot_kline_open = || event(Binance, 1_732_307_467_200, candle(open_candle, false));
    let spot_kline_closed = || event(Binance, 1_732_307_520_001, candle(closed_candle, true));
    let spot_diff = |snapshot| event(Binance, 1_732_307_467_300, spot_depth_update(snapshot));
    let fut_agg = || {
        event(BinanceFutures, 1_732_307_467_150, trade("98260.10", "0.015", Sell, 2_409_876_543))
    };
    let fut_quote = || {
        event(BinanceFutures, 1_732_307_467_152, quote("98260.10", "3.512", "98260.20", "0.806"))
    };
    let fut_liq = || {
        let kind = EventKind::Liquidation { side: Sell, price: d("98010.00"), qty: d("0.014") };
        event(BinanceFutures, 1_732_307_467_500, kind)
    };
    let fut_kline = || {
        let ohlcv = ["98230.00", "98270.00", "98220.00", "98260.10", "210.512"];
        event(BinanceFutures, 1_732_307_467_600, candle(ohlcv, false))
    };
    // `r` is the funding rate the next funding time (`T`) applies.
    let fut_mark = || {
        let kind = EventKind::MarkPrice {
            mark_price: d("98261.33000000"),
            funding_rate: Some(d("0.00010000")),
            next_funding_ms: Some(1_732_320_000_000),
        };
        event(BinanceFutures, 1_732_307_468_000, kind)
    };
    let spot: Vec<_> = SPOT_STREAMS.lines().collect();
    let futures: Vec<_> = FUTURES_STREAMS.lines().collect();
    assert_eq!((spot.len(), futures.len()), (8, 5), "a fixture line went missing");
    vec![
        (Binance, spot[0], "btcusdt@trade", spot_trade(), spot_trade()),
        (Binance, spot[1], "btcusdt@aggTrade", spot_agg(), spot_agg()),
        (Binance, spot[2], "btcusdt@bookTicker", spot_quote(), spot_quote()),
        (Binance, spot[3], "btcusdt@kline_1m", spot_kline_open(), spot_kline_open()),
        (Binance, spot[4], "btcusdt@kline_1m", spot_kline_closed(), spot_kline_closed()),
        (Binance, spot[5], "btcusdt@depth@100ms", spot_diff(false), spot_diff(false)),
        // Futures partial depth has the diff's shape: the stream name makes it a snapshot.
        (Binance, spot[5], "btcusdt@depth20@100ms", spot_diff(false), spot_diff(true)),
        // Raw spot partial depth names no symbol.
        (
            Binance,
            spot[6],
            "btcusdt@depth20@100ms",
            Err("missing_field"),
            event(Binance, RECEIVED_MS, spot_partial_depth()),
        ),
        (Binance, spot[7], "btcusdt@ticker", Err("unsupported"), Err("unsupported")),
        (BinanceFutures, futures[0], "btcusdt@aggTrade", fut_agg(), fut_agg()),
        (BinanceFutures, futures[1], "btcusdt@bookTicker", fut_quote(), fut_quote()),
        (BinanceFutures, futures[2], "btcusdt@markPrice", fut_mark(), fut_mark()),
        (BinanceFutures, futures[3], "btcusdt@forceOrder", fut_liq(), fut_liq()),
        (BinanceFutures, futures[4], "btcusdt@kline_1m", fut_kline(), fut_kline()),
    ]
}

fn check(venue: VenueId, input: &str, expected: &Expected) {
    let got = parse(venue, input, RECEIVED_US);
    match (&got, expected) {
        (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{input}"),
        (Err(e), Err(reason)) => assert_eq!(e.reason(), *reason, "{input}: {e}"),
        _ => panic!("{input}\n got {got:?}\nwant {expected:?}"),
    }
}

fn wrap(stream: &str, payload: &str) -> String {
    format!(r#"{{"stream":"{stream}","data":{payload}}}"#)
}

#[test]
fn every_raw_fixture_line_parses_as_documented_raw_and_wrapped() {
    for (venue, line, stream, raw, wrapped) in raw_fixtures() {
        check(venue, line, &raw);
        check(venue, &wrap(stream, line), &wrapped);
    }
}

#[test]
fn every_combined_and_control_fixture_line_parses_as_documented() {
    let lines: Vec<_> = COMBINED_AND_CONTROL.lines().collect();
    let spot = raw_fixtures();
    let expected: [Expected; 9] = [
        spot[0].4.clone(),
        spot[2].4.clone(),
        spot[3].4.clone(),
        // Keel's own requests are not something Binance sends.
        Err("unknown_event"),
        Ok(Inbound::Ack { id: 1 }),
        Err("unknown_event"),
        Ok(Inbound::Error {
            code: 2,
            msg: "Invalid request: unknown variable".into(),
            id: Some(3),
        }),
        Ok(Inbound::Error {
            code: 1,
            msg: "Invalid value type: expected Boolean".into(),
            id: None,
        }),
        Ok(Inbound::ServerShutdown),
    ];
    assert_eq!(lines.len(), expected.len(), "a fixture line went missing");
    for (line, expected) in lines.iter().zip(&expected) {
        check(VenueId::Binance, line, expected);
    }
}

#[test]
fn wrapped_fixture_payloads_parse_the_same_unwrapped_and_in_any_key_order() {
    for line in COMBINED_AND_CONTROL.lines().take(3) {
        let wrapped = parse(VenueId::Binance, line, RECEIVED_US).unwrap();
        let start = line.find(r#""data":"#).unwrap() + r#""data":"#.len();
        let raw = &line[start..line.len() - 1];
        assert_eq!(parse(VenueId::Binance, raw, RECEIVED_US).unwrap(), wrapped, "{raw}");
        // serde_json's map sorts keys: `data` now precedes `stream`, `E` precedes `e`.
        let reordered = serde_json::from_str::<serde_json::Value>(line).unwrap().to_string();
        assert!(reordered.starts_with(r#"{"data":"#), "{reordered}");
        assert_eq!(parse(VenueId::Binance, &reordered, RECEIVED_US).unwrap(), wrapped);
    }
}

#[test]
fn decimals_keep_the_exchanges_scale() {
    let Inbound::Event(MarketEvent { kind: EventKind::Trade { price, qty, .. }, .. }) =
        parse(VenueId::Binance, SPOT_STREAMS.lines().next().unwrap(), 0).unwrap()
    else {
        panic!("not a trade");
    };
    assert_eq!(
        (price.to_string().as_str(), qty.to_string().as_str()),
        ("98234.51000000", "0.00120000")
    );
    assert_eq!(price, Decimal::from_str("98234.51").unwrap());
}

#[test]
fn control_replies_and_odd_but_valid_frames_are_understood() {
    use VenueId::*;
    let trade = SPOT_STREAMS.lines().next().unwrap();
    let five_minute_kline =
        SPOT_STREAMS.lines().nth(3).unwrap().replace(r#""i":"1m""#, r#""i":"5m""#);
    let Ok(Inbound::Event(MarketEvent { kind: EventKind::Candle(c), .. })) =
        parse(Binance, &five_minute_kline, RECEIVED_US)
    else {
        panic!("5m kline did not parse");
    };
    assert_eq!(c.interval, Interval::M5);
    let cases: Vec<(VenueId, String, Expected)> = vec![
        (Binance, r#"{"result":["btcusdt@trade"],"id":5}"#.into(), Ok(Inbound::Ack { id: 5 })),
        (Binance, r#"{"id":6,"result":null}"#.into(), Ok(Inbound::Ack { id: 6 })),
        (Binance, r#"{"result":null}"#.into(), Err("missing_field")),
        (
            Binance,
            r#"{"code":0,"msg":"Unknown property","id":null}"#.into(),
            Ok(Inbound::Error { code: 0, msg: "Unknown property".into(), id: None }),
        ),
        (
            Binance,
            r#"{"code":3,"msg":"Invalid JSON: \"x\"","id":4}"#.into(),
            Ok(Inbound::Error { code: 3, msg: r#"Invalid JSON: "x""#.into(), id: Some(4) }),
        ),
        (Binance, r#"{"code":-1}"#.into(), Ok(Inbound::Error { code: -1, msg: String::new(), id: None })),
        (BinanceFutures, r#"{"e":"serverShutdown"}"#.into(), Ok(Inbound::ServerShutdown)),
        (
            Binance,
            r#"{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":7,"bids":[],"asks":[]}}"#.into(),
            event(Binance, RECEIVED_MS, EventKind::Depth { bids: vec![], asks: vec![], update_id: 7, snapshot: true }),
        ),
        // Older depth payloads carried an ignored third element per level.
        (
            Binance,
            wrap("btcusdt@depth5", r#"{"lastUpdateId":8,"bids":[["1.5","2",[]]],"asks":[]}"#),
            event(Binance, RECEIVED_MS, EventKind::Depth { bids: lv(&[("1.5", "2")]), asks: vec![], update_id: 8, snapshot: true }),
        ),
        // Unknown fields, whitespace, and `T` standing in for a missing `E`.
        (
            Binance,
            r#" { "x" : {"deep":[1,{"y":null}]}, "e":"trade", "T":5, "s":"btcusdt", "t":1, "p":"2", "q":"3", "m":false } "#.into(),
            event(Binance, 5, EventKind::Trade { price: d("2"), qty: d("3"), side: Side::Buy, trade_id: 1 }),
        ),
        // The venue comes from the caller, not the frame.
        (BinanceFutures, trade.into(), {
            let Ok(Inbound::Event(e)) = parse(Binance, trade, RECEIVED_US) else { panic!() };
            Ok(Inbound::Event(MarketEvent { venue: BinanceFutures, ..e }))
        }),
        // A stream name Keel does not know is not cross-checked.
        (Binance, wrap("btcusdt@trade@fast", trade), parse(Binance, trade, RECEIVED_US).map_err(|e| e.reason())),
        (Binance, wrap("nonsense", trade), parse(Binance, trade, RECEIVED_US).map_err(|e| e.reason())),
    ];
    for (venue, input, expected) in &cases {
        check(*venue, input, expected);
    }
}

/// The spot trade fixture with `from` replaced by `to`.
fn spot_trade_with(from: &str, to: &str) -> String {
    let line = SPOT_STREAMS.lines().next().unwrap();
    assert!(line.contains(from), "{from}");
    line.replacen(from, to, 1)
}

fn line(file: &'static str, n: usize) -> &'static str {
    file.lines().nth(n).unwrap()
}

fn with(file: &'static str, n: usize, from: &str, to: &str) -> String {
    let line = line(file, n);
    assert!(line.contains(from), "{from} not in {line}");
    line.replacen(from, to, 1)
}

mod refusals;
