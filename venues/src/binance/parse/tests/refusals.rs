//! What the parser refuses, and that nothing makes it panic: garbage with the reason it is
//! refused, random mutations of the documented frames, decimal strings against rust_decimal, and
//! the error reasons themselves.

use rust_decimal::Decimal;

use super::*;

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
        EventKind::MarkPrice { mark_price, .. } => positive(mark_price),
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
