//! Fuzz targets for the Binance stream parser ([`parse`], [`parse_with`], [`parse_decimal`]).
//!
//! Property: no input makes them panic, and whatever they accept is sane (positive prices, an
//! exact decimal that `rust_decimal` reads the same way). Inputs: arbitrary strings, JSON-ish
//! noise, documented frames mutated (byte flips, inserts, deletes, truncations), frames with a
//! field's value swapped for another JSON type, huge numbers and deep nesting.
//!
//! CI runs a few thousand cases per target; `KEEL_FUZZ_CASES=1000000 cargo test -p keel-actors
//! --release --test fuzz_binance_parse` runs more (docs/FUZZING.md).

use proptest::prelude::*;
use proptest::test_runner::Config;

use keel_core::market::{EventKind, VenueId};
use keel_venues::binance::parse::{Inbound, SymbolCache, parse, parse_decimal, parse_with};
use rust_decimal::Decimal;

/// Cases per target when `KEEL_FUZZ_CASES` is unset: a second or two each in a debug build.
const DEFAULT_CASES: u32 = 1_000;

/// When the frames "arrived", µs.
const RECEIVED_US: u64 = 1_732_307_467_555_123;

/// Binance's documented frames (copies of /work/shared/fixtures/binance/*.jsonl lines), each
/// with the venue it arrives on.
const FRAMES: &[(VenueId, &str)] = &[
    (
        VenueId::Binance,
        r#"{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}"#,
    ),
    (
        VenueId::Binance,
        r#"{"e":"aggTrade","E":1732307467130,"s":"BTCUSDT","a":3301234567,"p":"98234.52000000","q":"0.05000000","f":4212345679,"l":4212345681,"T":1732307467129,"m":false,"M":true}"#,
    ),
    (
        VenueId::Binance,
        r#"{"u":55123456789,"s":"BTCUSDT","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000"}"#,
    ),
    (
        VenueId::Binance,
        r#"{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}"#,
    ),
    (
        VenueId::Binance,
        r#"{"e":"depthUpdate","E":1732307467300,"s":"BTCUSDT","U":55123456790,"u":55123456795,"b":[["98234.51000000","1.10000000"],["98230.00000000","0.00000000"]],"a":[["98234.52000000","0.50000000"]]}"#,
    ),
    (
        VenueId::Binance,
        r#"{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":55123456795,"bids":[["98234.51000000","1.10000000"],["98234.00000000","0.20000000"]],"asks":[["98234.52000000","0.50000000"],["98235.00000000","2.00000000"]]}}"#,
    ),
    (
        VenueId::Binance,
        r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}}"#,
    ),
    (
        VenueId::Binance,
        r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}}"#,
    ),
    (VenueId::Binance, r#"{"result":null,"id":1}"#),
    (VenueId::Binance, r#"{"code":2,"msg":"Invalid request: unknown variable","id":3}"#),
    (
        VenueId::BinanceFutures,
        r#"{"e":"aggTrade","E":1732307467150,"s":"BTCUSDT","a":2409876543,"p":"98260.10","q":"0.015","f":5601234567,"l":5601234569,"T":1732307467149,"m":true}"#,
    ),
    (
        VenueId::BinanceFutures,
        r#"{"e":"bookTicker","u":7301234567890,"s":"BTCUSDT","b":"98260.10","B":"3.512","a":"98260.20","A":"0.806","T":1732307467151,"E":1732307467152}"#,
    ),
    (
        VenueId::BinanceFutures,
        r#"{"e":"forceOrder","E":1732307467500,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"98010.00","ap":"98020.40","X":"FILLED","l":"0.014","z":"0.014","T":1732307467498}}"#,
    ),
    (
        VenueId::BinanceFutures,
        r#"{"stream":"btcusdt@depth5","data":{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["1.5","2"]],"a":[["1.6","0"]]}}"#,
    ),
    (VenueId::BinanceFutures, r#"{"e":"serverShutdown","E":1732307999999}"#),
];

/// Bytes that make JSON-looking noise more often than uniform bytes do.
const JSONISH: &[u8] = br#"{}[]",:0123456789.-+eE \tnulltruefalse@abcxyzBTCUSDT"#;

/// Keys Binance frames use, so that generated objects reach the parser's field handling.
const KEYS: &[&str] = &[
    "e",
    "E",
    "s",
    "t",
    "p",
    "q",
    "T",
    "m",
    "M",
    "a",
    "f",
    "l",
    "u",
    "U",
    "b",
    "B",
    "A",
    "k",
    "i",
    "o",
    "c",
    "h",
    "v",
    "n",
    "x",
    "Q",
    "V",
    "S",
    "X",
    "z",
    "ap",
    "pu",
    "stream",
    "data",
    "result",
    "id",
    "code",
    "msg",
    "lastUpdateId",
    "bids",
    "asks",
];

fn cases() -> u32 {
    std::env::var("KEEL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn config() -> Config {
    Config { cases: cases(), failure_persistence: None, ..Config::default() }
}

fn venue() -> impl Strategy<Value = VenueId> {
    prop::sample::select(VenueId::ALL.to_vec())
}

/// Parses `text` both ways and checks what is accepted.
fn check(venue: VenueId, text: &str) {
    let once = parse(venue, text, RECEIVED_US);
    let mut cache = SymbolCache::default();
    let cached = parse_with(venue, text, RECEIVED_US, &mut cache);
    // A second parse on the same connection takes the cache's fast path: same answer.
    let again = parse_with(venue, text, RECEIVED_US, &mut cache);
    match (&once, &cached, &again) {
        (Ok(a), Ok(b), Ok(c)) => {
            assert_eq!(a, b, "{text}");
            assert_eq!(b, c, "{text}");
            assert_sane(a, text);
        }
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(a.reason(), b.reason(), "{text}");
            assert_eq!(b.reason(), c.reason(), "{text}");
        }
        _ => panic!("parse and parse_with disagree on {text:?}: {once:?} / {cached:?} / {again:?}"),
    }
}

fn positive(d: &Decimal) -> bool {
    d.is_sign_positive() && !d.is_zero()
}

fn assert_sane(inbound: &Inbound, text: &str) {
    // `exchange_ts` is not checked: an `E` that is present is taken as sent, even 0.
    let Inbound::Event(event) = inbound else { return };
    let ok = match &event.kind {
        EventKind::Trade { price, qty, .. } => positive(price) && positive(qty),
        EventKind::Quote { bid, ask, bid_qty, ask_qty } => {
            positive(bid)
                && positive(ask)
                && !bid_qty.is_sign_negative()
                && !ask_qty.is_sign_negative()
        }
        EventKind::Candle(c) => c.low <= c.high,
        EventKind::MarkPrice { mark_price, .. } => positive(mark_price),
        EventKind::Depth { bids, asks, .. } => bids
            .iter()
            .chain(asks)
            .all(|(p, q)| positive(p) && (q.is_zero() || q.is_sign_positive())),
        EventKind::Liquidation { price, qty, .. } => positive(price) && positive(qty),
        EventKind::Gap { .. } => false,
    };
    assert!(ok, "{text} gave {event:?}");
}

/// One edit of a frame's bytes.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Overwrite { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
    Truncate { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(JSONISH.to_vec())];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<usize>(), byte.clone()).prop_map(|(at, byte)| Edit::Overwrite { at, byte }),
        (any::<usize>(), byte).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        any::<usize>().prop_map(|at| Edit::Delete { at }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

fn apply(frame: &str, edits: &[Edit]) -> String {
    let mut bytes = frame.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
            Edit::Overwrite { at, byte } if len > 0 => bytes[at % len] = byte,
            Edit::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
            Edit::Delete { at } if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate { at } => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A JSON value of any type, with extremes: huge and tiny numbers, long digit strings, deep
/// nesting, and objects keyed like Binance frames.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        decimal_text().prop_map(Value::String),
        prop::sample::select(vec![
            "BTCUSDT",
            "btcusdt",
            "trade",
            "aggTrade",
            "kline",
            "depthUpdate",
            "forceOrder",
            "bookTicker",
            "1m",
            "BUY",
            "SELL",
            "",
            "-1",
            "0",
            "1e5",
            "NaN",
            "\u{0}",
            "ß",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..10).prop_map(
                |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            ),
        ]
    })
}

/// Decimal-looking strings, including ones past what `Decimal` holds.
fn decimal_text() -> impl Strategy<Value = String> {
    let digits = prop::collection::vec(prop::sample::select(b"0123456789".to_vec()), 0..40);
    (any::<bool>(), digits.clone(), any::<bool>(), digits).prop_map(|(neg, int, point, frac)| {
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        s.extend(int.iter().map(|&b| char::from(b)));
        if point {
            s.push('.');
            s.extend(frac.iter().map(|&b| char::from(b)));
        }
        s
    })
}

/// A frame with the value of one of its keys (at any depth) replaced by `value`.
fn swap_value(frame: &str, pick: usize, value: serde_json::Value) -> String {
    // Walks by index instead of keeping pointers: no unsafe code.
    fn nth<'v>(v: &'v mut serde_json::Value, n: &mut usize) -> Option<&'v mut serde_json::Value> {
        let children: Vec<&mut serde_json::Value> = match v {
            serde_json::Value::Object(map) => map.values_mut().collect(),
            serde_json::Value::Array(items) => items.iter_mut().collect(),
            _ => return None,
        };
        for child in children {
            if *n == 0 {
                return Some(child);
            }
            *n -= 1;
            if let Some(found) = nth(child, n) {
                return Some(found);
            }
        }
        None
    }
    let Ok(mut root) = serde_json::from_str::<serde_json::Value>(frame) else {
        return frame.to_owned();
    };
    let mut count = 0usize;
    count_slots(&root, &mut count);
    if count > 0 {
        let mut n = pick % count;
        if let Some(slot) = nth(&mut root, &mut n) {
            *slot = value;
        }
    }
    root.to_string()
}

fn count_slots(v: &serde_json::Value, count: &mut usize) {
    match v {
        serde_json::Value::Object(map) => map.values().for_each(|c| {
            *count += 1;
            count_slots(c, count);
        }),
        serde_json::Value::Array(items) => items.iter().for_each(|c| {
            *count += 1;
            count_slots(c, count);
        }),
        _ => {}
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_strings_never_panic(venue in venue(), chars in prop::collection::vec(any::<char>(), 0..256)) {
        let text: String = chars.into_iter().collect();
        check(venue, &text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(venue in venue(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(venue, &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn jsonish_noise_never_panics(venue in venue(), bytes in prop::collection::vec(prop::sample::select(JSONISH.to_vec()), 0..256)) {
        check(venue, &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_fixture_frames_never_panic(
        frame in prop::sample::select(FRAMES.to_vec()),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let (venue, text) = frame;
        check(venue, &apply(text, &edits));
    }

    #[test]
    fn fixture_frames_with_a_value_of_another_type_never_panic(
        frame in prop::sample::select(FRAMES.to_vec()),
        pick in any::<usize>(),
        value in json_value(),
    ) {
        let (venue, text) = frame;
        check(venue, &swap_value(text, pick, value));
    }

    #[test]
    fn arbitrary_json_objects_never_panic(venue in venue(), value in json_value()) {
        check(venue, &value.to_string());
        let wrapped = serde_json::json!({"stream": "btcusdt@trade", "data": value});
        check(venue, &wrapped.to_string());
    }

    #[test]
    fn deep_nesting_never_panics(
        frame in prop::sample::select(FRAMES.to_vec()),
        depth in prop_oneof![0usize..300, 0usize..5_000],
        open in prop::sample::select(vec!["[", "{\"a\":", "{\"data\":", "{\"k\":"]),
        close in any::<bool>(),
    ) {
        let (venue, text) = frame;
        let mut nested = open.repeat(depth);
        nested.push_str(text);
        if close {
            let closer = if open == "[" { "]" } else { "}" };
            nested.push_str(&closer.repeat(depth));
        }
        check(venue, &nested);
        // And as the value of a key the parser reads.
        check(venue, &format!(r#"{{"e":"trade","p":{nested}}}"#));
    }

    #[test]
    fn huge_numbers_never_panic(
        frame in prop::sample::select(FRAMES.to_vec()),
        pick in any::<usize>(),
        digits in 1usize..400,
        kind in 0u8..4,
    ) {
        let (venue, text) = frame;
        let big = "9".repeat(digits);
        let value = match kind {
            0 => big,
            1 => format!("-{big}"),
            2 => format!("\"{big}\""),
            _ => format!("1e{digits}"),
        };
        let value: serde_json::Value = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
        check(venue, &swap_value(text, pick, value));
    }

    #[test]
    fn parse_decimal_agrees_with_rust_decimal(s in prop_oneof![
        decimal_text(),
        prop::collection::vec(prop::sample::select(b"0123456789.-+eE_ ".to_vec()), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
    ]) {
        if let Some(d) = parse_decimal(&s) {
            let exact = Decimal::from_str_exact(&s);
            prop_assert_eq!(exact.ok(), Some(d), "{:?}", s);
        }
    }
}
