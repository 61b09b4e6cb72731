//! Fuzz targets for the API's request bodies: arbitrary bytes and JSON-shaped values go through
//! the same serde types, the same strict reading and error mapping (`json::parse`) and the same
//! synchronous validation the handlers use. Property: nothing panics, and every refusal is a 4xx in the
//! documented error shape (`MALFORMED_JSON` 400 or `VALIDATION_FAILED` 422).
//!
//! CI runs a thousand cases per target; `KEEL_FUZZ_CASES` raises it (docs/FUZZING.md).

use actix_web::ResponseError;
use keel_actors::identity::{normalize_email, validate_password};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{accounts, auth, bots, json, trading};

/// Cases per target when `KEEL_FUZZ_CASES` is unset.
const DEFAULT_CASES: u32 = 1_000;

/// Field names of the request bodies (and a few strangers), so that generated objects reach
/// the types' field handling instead of stopping at the first unknown key.
const KEYS: &[&str] = &[
    "email",
    "password",
    "refresh_token",
    "venue",
    "label",
    "api_key",
    "api_secret",
    "testnet",
    "name",
    "symbol",
    "mode",
    "exchange_account_id",
    "strategy",
    "kind",
    "params",
    "fast",
    "slow",
    "qty",
    "risk",
    "bracket",
    "paper",
    "starting_quote",
    "fee_bps",
    "side",
    "type",
    "price",
    "stop_price",
    "time_in_force",
    "client_order_id",
    "max_order_notional",
    "max_open_orders",
    "take_profit_pct",
    "stop_loss_pct",
    "flatten",
    "x",
];

fn config() -> Config {
    let cases =
        std::env::var("KEEL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    Config { cases, failure_persistence: None, ..Config::default() }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::collection::vec(any::<char>(), 0..80)
            .prop_map(|c| Value::String(c.into_iter().collect())),
        prop::sample::select(vec![
            "sim",
            "binance",
            "binance_futures",
            "BTCUSDT",
            "paper",
            "live",
            "buy",
            "sell",
            "market",
            "limit",
            "ema_cross",
            "grid",
            "dca",
            "rsi",
            "0.001",
            "-1",
            "0",
            "1e40",
            "99999999999999999999999999999999",
            "a@example.com",
            "correct horse battery staple",
            "",
            " ",
            "\u{0}",
            "ß@ẞ.de",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 10, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..10).prop_map(
                |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            ),
        ]
    })
}

/// Reads `bytes` as `T` as the handlers' extractor does; a refusal must be a documented 4xx.
fn read<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match json::parse::<T>(bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            refused(&err);
            None
        }
    }
}

fn refused(err: &super::ApiError) {
    let status = err.status_code().as_u16();
    assert!(
        matches!((status, err.code()), (400, "MALFORMED_JSON") | (422, "VALIDATION_FAILED")),
        "{status} {}",
        err.code()
    );
}

/// Every body type, with the synchronous checks its handler makes before any actor is asked.
fn check(bytes: &[u8]) {
    if let Some(credentials) = read::<auth::Credentials>(bytes) {
        let _ = normalize_email(&credentials.email);
        let _ = validate_password(&credentials.password);
    }
    let _ = read::<auth::RefreshRequest>(bytes);
    if let Some(account) = read::<accounts::NewAccount>(bytes)
        && let Err(err) = accounts::validate(&account)
    {
        refused(&err);
    }
    let _ = read::<bots::NewBot>(bytes);
    let _ = read::<bots::BotPatch>(bytes);
    let _ = read::<trading::NewOrder>(bytes);
    let _ = read::<trading::KillBody>(bytes);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_as_request_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_json_as_request_bodies_never_panic(value in json_value()) {
        check(value.to_string().as_bytes());
    }

    #[test]
    fn valid_bodies_with_one_field_changed_never_panic(
        base in prop::sample::select(vec![
            r#"{"email":"a@example.com","password":"correct horse battery staple"}"#,
            r#"{"venue":"binance","label":"main","api_key":"k","api_secret":"s","testnet":true}"#,
            r#"{"name":"q","venue":"sim","symbol":"BTCUSDT","mode":"paper","strategy":{"kind":"ema_cross","params":{"fast":5,"slow":9,"qty":"0.001"}},"paper":{"starting_quote":"10000","fee_bps":"10"}}"#,
            r#"{"side":"buy","qty":"0.002","type":"market"}"#,
            r#"{"side":"buy","qty":"0.01","type":"limit","price":"1000.00"}"#,
        ]),
        key in prop::sample::select(KEYS.to_vec()),
        value in json_value(),
    ) {
        let mut body: Value = serde_json::from_str(base).unwrap_or_default();
        if let Value::Object(map) = &mut body {
            map.insert(key.to_owned(), value);
        }
        check(body.to_string().as_bytes());
    }
}
