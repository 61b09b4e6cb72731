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
        (BinanceFutures, futures[2], "btcusdt@markPrice", Err("unsupported"), Err("unsupported")),
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

#[test]
fn garbage_is_refused_with_the_right_reason_and_never_panics() {
    use VenueId::*;
    let spot_trade = line(SPOT_STREAMS, 0);
    let mut lossy_bytes = spot_trade.as_bytes().to_vec();
    lossy_bytes[0] = 0xff;
    let lossy_frame = String::from_utf8_lossy(&lossy_bytes).into_owned();
    let mut lossy_symbol = spot_trade.as_bytes().to_vec();
    let at = spot_trade.find("BTCUSDT").unwrap() + 3;
    lossy_symbol[at] = 0xc3;
    let lossy_symbol = String::from_utf8_lossy(&lossy_symbol).into_owned();
    let a_mebibyte_of_junk = "x".repeat(MAX_FRAME_BYTES);
    let too_large = format!("{}{}", spot_trade, " ".repeat(MAX_FRAME_BYTES));
    let deep = format!(r#"{{"x":{}"#, "[".repeat(10_000));
    let cases: Vec<(VenueId, String, &str)> = vec![
        (Sim, spot_trade.into(), "unsupported"),
        (Binance, String::new(), "json"),
        (Binance, "   ".into(), "json"),
        (Binance, "{".into(), "json"),
        (Binance, spot_trade[..spot_trade.len() - 1].into(), "json"),
        (Binance, format!("{spot_trade}x"), "json"),
        (Binance, format!("{spot_trade}{spot_trade}"), "json"),
        (Binance, "{'e':'trade'}".into(), "json"),
        (Binance, a_mebibyte_of_junk, "json"),
        (Binance, too_large, "too_large"),
        (Binance, lossy_frame, "json"),
        (Binance, deep, "json"),
        (Binance, "null".into(), "bad_type"),
        (Binance, "42".into(), "bad_type"),
        (Binance, "[]".into(), "bad_type"),
        (Binance, r#""trade""#.into(), "bad_type"),
        (Binance, "{}".into(), "unknown_event"),
        (Binance, r#"{"e":"fooEvent","E":1}"#.into(), "unknown_event"),
        (Binance, r#"{"e":5}"#.into(), "bad_type"),
        (Binance, r#"{"e":"trade","e":"trade"}"#.into(), "bad_type"),
        // Trades.
        (Binance, spot_trade_with(r#""p":"98234.51000000""#, r#""p":98234.51"#), "bad_type"),
        (Binance, spot_trade_with(r#""t":4212345678"#, r#""t":"4212345678""#), "bad_type"),
        (Binance, spot_trade_with(r#""t":4212345678"#, r#""t":-1"#), "bad_type"),
        (Binance, spot_trade_with(r#""t":4212345678"#, r#""t":1.5"#), "bad_type"),
        (
            Binance,
            spot_trade_with(r#""E":1732307467123"#, r#""E":18446744073709551616"#),
            "bad_type",
        ),
        (Binance, spot_trade_with(r#""m":true"#, r#""m":"true""#), "bad_type"),
        (Binance, spot_trade_with("98234.51000000", r"\u0039"), "bad_type"),
        (Binance, spot_trade_with("98234.51000000", "abc"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", ""), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "-"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "."), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "1e5"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "1_000"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "+1"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", " 1"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "1.2.3"), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "NaN"), "bad_number"),
        (
            Binance,
            spot_trade_with("98234.51000000", &format!("0.{}1", "0".repeat(28))),
            "bad_number",
        ),
        (Binance, spot_trade_with("98234.51000000", &"9".repeat(40)), "bad_number"),
        (Binance, spot_trade_with("98234.51000000", "-98234.51"), "bad_value"),
        (Binance, spot_trade_with("98234.51000000", "0.00000000"), "bad_value"),
        (Binance, spot_trade_with("98234.51000000", "-0"), "bad_value"),
        (Binance, spot_trade_with("0.00120000", "0"), "bad_value"),
        (Binance, spot_trade_with(r#""p":"98234.51000000","#, ""), "missing_field"),
        (Binance, spot_trade_with(r#""m":true,"#, ""), "missing_field"),
        (Binance, spot_trade_with(r#""t":4212345678,"#, ""), "missing_field"),
        (
            Binance,
            spot_trade_with(r#""E":1732307467123,"#, "").replace(r#""T":1732307467122,"#, ""),
            "missing_field",
        ),
        (Binance, spot_trade_with(r#""s":"BTCUSDT","#, ""), "missing_field"),
        (Binance, spot_trade_with("BTCUSDT", "BTC-USDT"), "bad_symbol"),
        (Binance, spot_trade_with("BTCUSDT", ""), "bad_symbol"),
        (Binance, spot_trade_with("BTCUSDT", &"A".repeat(30)), "bad_symbol"),
        (Binance, lossy_symbol, "bad_symbol"),
        (Binance, spot_trade_with(r#""s":"BTCUSDT""#, r#""s":null"#), "bad_type"),
        (Binance, with(SPOT_STREAMS, 1, r#""a":3301234567"#, r#""a":"3301234567""#), "bad_type"),
        (Binance, with(SPOT_STREAMS, 1, r#""a":3301234567,"#, ""), "missing_field"),
        // Quotes.
        (Binance, with(SPOT_STREAMS, 2, r#""b":"98234.51000000""#, r#""b":[]"#), "bad_type"),
        (
            Binance,
            with(SPOT_STREAMS, 2, r#""b":"98234.51000000""#, r#""b":"0.00000000""#),
            "bad_value",
        ),
        (Binance, with(SPOT_STREAMS, 2, r#""A":"0.40100000""#, r#""A":"0""#), "bad_value"),
        (Binance, with(SPOT_STREAMS, 2, r#""a":"98234.52000000","#, ""), "missing_field"),
        (BinanceFutures, with(FUTURES_STREAMS, 1, r#""B":"3.512""#, r#""B":"x""#), "bad_number"),
        // Candles.
        (Binance, with(SPOT_STREAMS, 3, r#""i":"1m""#, r#""i":"3m""#), "unsupported"),
        (Binance, with(SPOT_STREAMS, 3, r#""i":"1m""#, r#""i":"nonsense""#), "unsupported"),
        (Binance, with(SPOT_STREAMS, 3, r#""i":"1m","#, ""), "missing_field"),
        (Binance, with(SPOT_STREAMS, 3, r#""h":"98240.10000000""#, r#""h":"1""#), "bad_value"),
        (Binance, with(SPOT_STREAMS, 3, r#""l":"98200.00000000""#, r#""l":"98299""#), "bad_value"),
        (Binance, with(SPOT_STREAMS, 3, r#""v":"12.34500000""#, r#""v":"-1""#), "bad_value"),
        (Binance, with(SPOT_STREAMS, 3, r#""x":false"#, r#""x":0"#), "bad_type"),
        (Binance, with(SPOT_STREAMS, 3, r#""x":false,"#, ""), "missing_field"),
        (Binance, r#"{"e":"kline","E":1,"s":"BTCUSDT"}"#.into(), "missing_field"),
        (Binance, r#"{"e":"kline","E":1,"s":"BTCUSDT","k":[]}"#.into(), "bad_type"),
        // Depth.
        (
            Binance,
            with(
                SPOT_STREAMS,
                5,
                r#""b":[["98234.51000000","1.10000000"],["98230.00000000","0.00000000"]]"#,
                r#""b":"x""#,
            ),
            "bad_type",
        ),
        (
            Binance,
            with(SPOT_STREAMS, 5, r#"["98234.52000000","0.50000000"]"#, r#"["98234.52000000"]"#),
            "bad_type",
        ),
        (
            Binance,
            with(SPOT_STREAMS, 5, r#"["98234.52000000","0.50000000"]"#, r#"{"p":"1"}"#),
            "bad_type",
        ),
        (
            Binance,
            with(SPOT_STREAMS, 5, r#"["98234.52000000","0.50000000"]"#, r#"[1,2]"#),
            "bad_type",
        ),
        (Binance, with(SPOT_STREAMS, 5, "98234.52000000", "x"), "bad_number"),
        (Binance, with(SPOT_STREAMS, 5, "98234.52000000", "-1"), "bad_value"),
        (Binance, with(SPOT_STREAMS, 5, "0.50000000", "-0.5"), "bad_value"),
        (Binance, with(SPOT_STREAMS, 5, r#""u":55123456795,"#, ""), "missing_field"),
        (Binance, with(SPOT_STREAMS, 6, r#""bids""#, r#""bidz""#), "missing_field"),
        (
            Binance,
            wrap("btcusdt@depth20@100ms", &with(SPOT_STREAMS, 6, "98235.00000000", "0")),
            "bad_value",
        ),
        (
            Binance,
            wrap("btcusdt@depth20@100ms", &with(SPOT_STREAMS, 6, r#""asks":"#, r#""asks":7,"x":"#)),
            "bad_type",
        ),
        (Binance, wrap("BTC-USDT@depth20@100ms", line(SPOT_STREAMS, 6)), "bad_symbol"),
        // Liquidations.
        (
            BinanceFutures,
            with(FUTURES_STREAMS, 3, r#""S":"SELL""#, r#""S":"SIDEWAYS""#),
            "bad_value",
        ),
        (BinanceFutures, with(FUTURES_STREAMS, 3, r#""p":"98010.00""#, r#""p":"0""#), "bad_value"),
        (BinanceFutures, r#"{"e":"forceOrder","E":1,"o":"x"}"#.into(), "bad_type"),
        (BinanceFutures, r#"{"e":"forceOrder","E":1}"#.into(), "missing_field"),
        (
            BinanceFutures,
            r#"{"e":"forceOrder","o":{"s":"BTCUSDT","S":"BUY","p":"1","q":"1"}}"#.into(),
            "missing_field",
        ),
        // The combined-stream wrapper.
        (Binance, wrap("ethusdt@trade", spot_trade), "stream_mismatch"),
        (Binance, wrap("btcusdt@bookTicker", spot_trade), "stream_mismatch"),
        (Binance, wrap("btcusdt@trade", line(SPOT_STREAMS, 6)), "stream_mismatch"),
        (Binance, wrap("btcusdt@trade", "[]"), "bad_type"),
        (Binance, wrap("btcusdt@trade", "7"), "bad_type"),
        (Binance, wrap("btcusdt@trade", "null"), "bad_type"),
        (Binance, format!(r#"{{"stream":7,"data":{spot_trade}}}"#), "bad_type"),
        (Binance, format!(r#"{{"data":{}}}"#, line(SPOT_STREAMS, 6)), "missing_field"),
        (Binance, wrap("btcusdt@trade", &wrap("btcusdt@trade", spot_trade)), "unknown_event"),
    ];
    for (venue, input, reason) in &cases {
        let got = parse(*venue, input, RECEIVED_US);
        let shown = &input[..input.len().min(120)];
        match got {
            Err(e) => {
                assert_eq!(e.reason(), *reason, "{shown}: {e}");
                assert!(e.to_string().len() < 400, "{shown}: error message too long");
            }
            Ok(ok) => panic!("{shown} parsed: {ok:?}"),
        }
    }
}

/// A deterministic linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What every accepted event must satisfy, however mangled its frame was.
fn assert_sane(inbound: &Inbound, input: &str) {
    let Inbound::Event(e) = inbound else { return };
    let positive = |d: &Decimal| d.is_sign_positive() && !d.is_zero();
    let ok = match &e.kind {
        EventKind::Trade { price, qty, .. } => positive(price) && positive(qty),
        EventKind::Quote { bid, bid_qty, ask, ask_qty } => {
            [bid, bid_qty, ask, ask_qty].into_iter().all(positive)
        }
        EventKind::Candle(c) => {
            c.low <= c.open && c.open <= c.high && c.low <= c.close && c.close <= c.high
        }
        EventKind::Depth { bids, asks, .. } => bids
            .iter()
            .chain(asks)
            .all(|(p, q)| positive(p) && (q.is_zero() || q.is_sign_positive())),
        EventKind::Liquidation { price, qty, .. } => positive(price) && positive(qty),
        EventKind::Gap { .. } => false,
    };
    assert!(ok, "{input} gave {e:?}");
}

#[test]
fn random_mutations_of_fixture_lines_never_panic() {
    const ALPHABET: &[u8] = br#"{}[]",:0123456789.-+eE \tnulltruefalse@abcxyzBTCUSDT"#;
    let mut seeds: Vec<(VenueId, String)> = Vec::new();
    for (venue, line, stream, _, _) in raw_fixtures() {
        seeds.push((venue, line.to_owned()));
        seeds.push((venue, wrap(stream, line)));
    }
    seeds.extend(COMBINED_AND_CONTROL.lines().map(|l| (VenueId::Binance, l.to_owned())));
    let mut rng = Lcg(0x6b65_656c);
    let mut accepted = 0;
    for (venue, seed) in &seeds {
        // Every truncation.
        for end in 0..seed.len() {
            if let Ok(inbound) = parse(*venue, &seed[..end], RECEIVED_US) {
                assert_sane(&inbound, &seed[..end]);
            }
        }
        // Random byte edits: overwrite, insert, delete, with random or JSON-ish bytes.
        for _ in 0..1_500 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                let byte = if rng.below(2) == 0 {
                    ALPHABET[rng.below(ALPHABET.len())]
                } else {
                    rng.next() as u8
                };
                match rng.below(3) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(inbound) = parse(*venue, &text, RECEIVED_US) {
                assert_sane(&inbound, &text);
                accepted += 1;
            }
        }
    }
    // Some edits (a digit in an id, a letter in an unknown field) leave a valid frame.
    assert!(accepted > 0);
}

#[test]
fn decimals_match_rust_decimal_on_every_plain_string() {
    // Reference: the grammar, then rust_decimal's exact parser.
    fn reference(s: &str) -> Option<Decimal> {
        let body = s.strip_prefix('-').unwrap_or(s);
        let plain = body.bytes().filter(|&b| b == b'.').count() <= 1
            && body.bytes().any(|b| b.is_ascii_digit())
            && body.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        plain.then(|| Decimal::from_str_exact(s).ok()).flatten()
    }
    let mut rng = Lcg(0x64_6563);
    let mut fixed: Vec<String> = [
        "0",
        "-0",
        "0.0",
        "-0.00",
        "5.",
        ".5",
        "-.5",
        "00001.5000",
        "98234.51000000",
        "0.00120000",
        "18446744073709551615",
        "9999999999999999999",
        "1234567890.123456789",
        "0.0000000000000000001",
        "79228162514264337593543950335",
        "79228162514264337593543950336",
        "0.0000000000000000000000000001",
        "0.00000000000000000000000000001",
        "12345678",
        "1234567.8",
    ]
    .map(String::from)
    .to_vec();
    for _ in 0..50_000 {
        let len = rng.below(32);
        let s: String = (0..len)
            .map(|_| match rng.below(20) {
                0 => '.',
                1 => '-',
                2 => ['+', '_', 'e', ' ', '/', ':'][rng.below(6)],
                _ => char::from(b'0' + rng.below(10) as u8),
            })
            .collect();
        fixed.push(s);
        // Shaped like Binance's: [-]int[.frac], sometimes with one byte spoiled.
        let digits = |rng: &mut Lcg, n: usize| -> String {
            (0..n).map(|_| char::from(b'0' + rng.below(10) as u8)).collect()
        };
        let (int_len, frac_len) = (rng.below(12), rng.below(12));
        let mut shaped = format!(
            "{}{}{}{}",
            if rng.below(8) == 0 { "-" } else { "" },
            digits(&mut rng, int_len),
            if rng.below(6) == 0 { "" } else { "." },
            digits(&mut rng, frac_len),
        );
        if rng.below(4) == 0 && !shaped.is_empty() {
            let at = rng.below(shaped.len());
            let spoiled = ['.', '-', '/', ':', ' ', 'a', '\u{7f}', '0'][rng.below(8)];
            shaped.replace_range(at..=at, spoiled.encode_utf8(&mut [0; 4]));
        }
        fixed.push(shaped);
    }
    let mut valid = 0;
    for s in &fixed {
        let got = parse_decimal(s);
        let want = reference(s);
        assert_eq!(got, want, "{s:?}");
        valid += usize::from(want.is_some());
        if let (Some(got), Some(want)) = (got, want) {
            assert_eq!(got.scale(), want.scale(), "{s:?}");
            assert_eq!(
                got.to_string().trim_start_matches('-'),
                want.to_string().trim_start_matches('-'),
                "{s:?}"
            );
        }
    }
    assert!(valid > 40_000, "only {valid} plain strings generated");
}

#[test]
fn error_reasons_are_short_stable_labels() {
    let json = serde_json::from_str::<IgnoredAny>("{").unwrap_err();
    let data = serde_json::from_str::<u8>("\"x\"").unwrap_err();
    let errors = [
        ParseError::TooLarge(1),
        ParseError::Json(json),
        ParseError::Json(data),
        ParseError::WrongType("a"),
        ParseError::MissingField("p"),
        ParseError::BadNumber { field: "p", value: "x".into() },
        ParseError::BadValue { field: "p", value: "0".into() },
        ParseError::BadSymbol("x".into()),
        ParseError::StreamMismatch { stream: "x".into(), payload: "y" },
        ParseError::UnknownEvent("x".into()),
        ParseError::Unsupported("x".into()),
    ];
    let reasons: Vec<_> = errors.iter().map(ParseError::reason).collect();
    assert_eq!(
        reasons,
        [
            "too_large",
            "json",
            "bad_type",
            "bad_type",
            "missing_field",
            "bad_number",
            "bad_value",
            "bad_symbol",
            "stream_mismatch",
            "unknown_event",
            "unsupported"
        ]
    );
    let long = ParseError::UnknownEvent(excerpt(&"é".repeat(100)));
    assert!(long.to_string().len() < 100);
}
