//! The sandbox: a hand-written module runs through the real engine, and every hostile module of
//! the issue's list gets a clear error (at upload) or pauses only its own bot (at run time).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use keel_core::engine::{BotEngine, BotEventKind, BotState, Effects, EngineConfig};
use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use keel_core::strategy::Strategy;
use keel_core::trading::paper::PaperConfig;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{InstrumentFilters, OrderStatus, Position};
use keel_wasm::{ModuleError, WasmConfig, WasmHost};
use rust_decimal::Decimal;
use serde_json::json;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: d("0.01"),
        step_size: d("0.001"),
        min_qty: d("0.001"),
        max_qty: d("1000"),
        min_notional: d("1"),
    }
}

fn host() -> WasmHost {
    WasmHost::new(WasmConfig { max_instances: 16, ..WasmConfig::default() }).unwrap()
}

fn engine(strategy: Box<dyn Strategy>) -> BotEngine {
    let config = EngineConfig {
        bot_id: 1,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: d("10"), slippage_bps: d("0") },
        allow_short: false,
        futures: None,
        live: false,
    };
    let state = BotState {
        position: Position { quote_balance: d("10000"), ..Position::default() },
        ..BotState::default()
    };
    BotEngine::new(config, state, strategy, Vec::new())
}

fn trade(price: &str, ts: u64) -> MarketEvent {
    MarketEvent {
        venue: VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts: ts,
        received_us: ts * 1000,
        kind: EventKind::Trade { price: d(price), qty: d("1"), side: Side::Buy, trade_id: ts },
    }
}

const FIRST_TRADE: &str = include_str!("modules/first_trade.wat");

#[test]
fn a_hand_written_module_trades_publishes_and_restores_without_the_sdk() {
    let host = host();
    let bytes = wat::parse_str(FIRST_TRADE).unwrap();
    let info = host.inspect(&bytes).unwrap();
    assert_eq!(info.abi_version, 1);
    assert_eq!(info.size, bytes.len());
    assert_eq!(info.sha256.len(), 64);
    assert_eq!(info.params_schema["additionalProperties"], false);

    let strategy = host.strategy(&bytes, &json!({}), &filters()).unwrap();
    let mut engine = engine(Box::new(strategy));
    assert_eq!(engine.series()[0].name, "last_price");
    let mut fx = Effects::default();
    engine.on_market(&trade("100.5", 1), &mut fx);
    assert_eq!(fx.fills.len(), 1, "{fx:?}");
    assert_eq!((fx.fills[0].side, fx.fills[0].qty), (Side::Buy, d("0.01")));
    assert!(fx.orders.iter().any(|o| o.status == OrderStatus::Filled));
    let logged = fx.events.iter().any(|e| {
        matches!(&e.kind, BotEventKind::Log { message, .. } if message == "bought 0.01 at market")
    });
    assert!(logged, "{:?}", fx.events);
    assert_eq!(fx.indicators.as_ref().unwrap().values, vec![(0, d("100.5"))]);
    fx.clear();
    engine.on_market(&trade("101", 2), &mut fx);
    assert!(fx.fills.is_empty(), "one buy only");
    assert_eq!(fx.indicators.unwrap().values, vec![(0, d("101"))]);

    // Snapshot through the host: a new instance restored from it does not buy again.
    let saved = engine.snapshot();
    let strategy = host.strategy(&bytes, &json!({}), &filters()).unwrap();
    let mut restarted = BotEngine::new(engine_config(), saved, Box::new(strategy), Vec::new());
    let mut fx = Effects::default();
    restarted.on_market(&trade("102", 3), &mut fx);
    assert!(fx.fills.is_empty(), "restored: already bought");
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        bot_id: 1,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: d("10"), slippage_bps: d("0") },
        allow_short: false,
        futures: None,
        live: false,
    }
}

/// A minimal valid module with `extra` fields and functions and `on_trade` as the body of
/// `keel_on_trade` (which must leave an i32).
fn module(extra: &str, on_trade: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (import "keel" "log" (func $log (param i32 i32 i32)))
          {extra}
          (memory (export "memory") 1 1)
          (func (export "keel_abi_version") (result i32) (i32.const 1))
          (func (export "keel_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
          (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0))
          (func (export "keel_on_trade") (param i64 i64 i32 i64 i32 i32) (result i32) {on_trade}))"#
    ))
    .unwrap()
}

fn refused(host: &WasmHost, bytes: &[u8]) -> String {
    match host.inspect(bytes) {
        Ok(info) => panic!("accepted: {info:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn malformed_and_malicious_modules_are_refused_at_upload_with_a_clear_reason() {
    let host = host();
    // The template itself is fine.
    host.inspect(&module("", "(i32.const 0)")).unwrap();

    let invalid = refused(&host, b"\0asm\x01\0\0\0garbage");
    assert!(invalid.starts_with("not a valid WebAssembly module"), "{invalid}");
    assert!(refused(&host, b"hello").starts_with("not a valid WebAssembly module"));

    let missing = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "keel_abi_version") (result i32) (i32.const 1)))"#,
    )
    .unwrap();
    assert!(refused(&host, &missing).contains("missing export `keel_alloc`"));

    let wrong = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "keel_abi_version") (result i32) (i32.const 1))
             (func (export "keel_alloc") (param i32) (result i32) (i32.const 0))
             (func (export "keel_init") (param i32) (result i32) (i32.const 0))
             (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let why = refused(&host, &wrong);
    assert!(
        why.contains("export `keel_init` is (i32) -> (i32); it must be (i32, i32) -> (i32)"),
        "{why}"
    );

    let v2 = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "keel_abi_version") (result i32) (i32.const 2))
             (func (export "keel_alloc") (param i32) (result i32) (i32.const 0))
             (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
             (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert!(refused(&host, &v2).contains("keel_abi_version returned 2"));

    for import in [
        r#"(import "env" "random" (func))"#,
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        r#"(import "keel" "clock" (func (result i64)))"#,
    ] {
        let why = refused(&host, &module(import, "(i32.const 0)"));
        assert!(why.starts_with("unknown import"), "{why}");
    }
    // A known import with the wrong type.
    let why =
        refused(&host, &module(r#"(import "keel" "place" (func (param i32)))"#, "(i32.const 0)"));
    assert!(why.contains("place"), "{why}");

    // A huge declared memory and a huge table: over the caps, refused before anything runs.
    let huge_memory = wat::parse_str(
        r#"(module (memory (export "memory") 60000)
             (func (export "keel_abi_version") (result i32) (i32.const 1))
             (func (export "keel_alloc") (param i32) (result i32) (i32.const 0))
             (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
             (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let why = refused(&host, &huge_memory);
    assert!(why.contains("memory"), "{why}");
    let why = refused(&host, &module("(table 50000000 funcref)", "(i32.const 0)"));
    assert!(why.contains("table"), "{why}");

    // A start function that never returns: refused well within 2 s.
    let started = Instant::now();
    let why =
        refused(&host, &module("(func $spin (loop $l (br $l))) (start $spin)", "(i32.const 0)"));
    assert!(why.contains("ran out of fuel"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // A giant output from a host call: a schema that claims a gigabyte, a log line of 100 MB
    // written by the start function.
    let why = refused(
        &host,
        &module(
            r#"(func (export "keel_params_schema") (result i64) (i64.const 0x3fffffff))"#,
            "(i32.const 0)",
        ),
    );
    assert!(why.contains("over the cap"), "{why}");
    let why = refused(
        &host,
        &module(
            "(func $shout (call $log (i32.const 0) (i32.const 0) (i32.const 100000000))) (start $shout)",
            "(i32.const 0)",
        ),
    );
    assert!(why.contains("over the cap of 4096 bytes"), "{why}");

    // Deep recursion at start: a stack overflow, not a crash of the host.
    let why = refused(&host, &module("(func $deep (call $deep)) (start $deep)", "(i32.const 0)"));
    assert!(why.contains("stack overflow"), "{why}");

    // Too large: 413 material.
    let small = WasmHost::new(WasmConfig {
        max_module_bytes: 100,
        max_instances: 2,
        ..WasmConfig::default()
    })
    .unwrap();
    match small.inspect(&module("", "(i32.const 0)")) {
        Err(ModuleError::TooLarge { cap: 100, .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// Runs `on_trade` in a bot, with a well-behaved bot beside it on the same host.
fn run_hostile(on_trade: &str, extra: &str) -> (String, BotEngine) {
    let host = host();
    let hostile = host.strategy(&module(extra, on_trade), &json!({}), &filters()).unwrap();
    let good_bytes = wat::parse_str(FIRST_TRADE).unwrap();
    let good = host.strategy(&good_bytes, &json!({}), &filters()).unwrap();
    let mut bad_bot = engine(Box::new(hostile));
    let mut good_bot = engine(Box::new(good));
    let mut fx = Effects::default();
    let started = Instant::now();
    bad_bot.on_market(&trade("100", 1), &mut fx);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let reason = fx.paused.clone().expect("the hostile bot paused itself");
    let journaled = fx.events.iter().any(|e| {
        matches!(&e.kind, BotEventKind::Log { level, message } if level == "error" && *message == reason)
    });
    assert!(journaled, "the reason is in the journal (and so on the bot's channel)");
    // Not retried: the next events do not call the module again.
    for ts in 2..50 {
        let mut fx = Effects::default();
        bad_bot.on_market(&trade("100", ts), &mut fx);
        assert!(fx.paused.is_none() && fx.events.is_empty(), "called again at {ts}: {fx:?}");
    }
    // The bot beside it is unaffected.
    let mut fx = Effects::default();
    good_bot.on_market(&trade("100", 1), &mut fx);
    assert_eq!(fx.fills.len(), 1);
    assert!(fx.paused.is_none());
    (reason, bad_bot)
}

#[test]
fn a_module_that_traps_runs_out_of_fuel_or_memory_or_recurses_pauses_only_its_own_bot() {
    let (why, _) = run_hostile("(loop $l (br $l)) (i32.const 0)", "");
    assert_eq!(why, "strategy failed: ran out of fuel (10000000 per call)");
    let (why, _) = run_hostile("(unreachable)", "");
    assert!(why.starts_with("strategy failed: trapped: "), "{why}");
    let (why, _) = run_hostile("(i32.load (i32.const 70000))", "");
    assert!(why.contains("out of bounds"), "{why}");
    let (why, _) = run_hostile("(call $deep) (i32.const 0)", "(func $deep (call $deep))");
    assert_eq!(why, "strategy failed: stack overflow (recursion too deep)");
    let grow = r#"(module
      (memory (export "memory") 1)
      (func (export "keel_abi_version") (result i32) (i32.const 1))
      (func (export "keel_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
      (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0))
      (func (export "keel_on_trade") (param i64 i64 i32 i64 i32 i32) (result i32)
        (drop (memory.grow (i32.const 1000))) (i32.const 0)))"#;
    let host = host();
    let mut bot = engine(Box::new(
        host.strategy(&wat::parse_str(grow).unwrap(), &json!({}), &filters()).unwrap(),
    ));
    let mut fx = Effects::default();
    bot.on_market(&trade("100", 1), &mut fx);
    let why = fx.paused.unwrap();
    assert!(why.contains("over the cap of 16777216 bytes"), "{why}");
    let (why, _) = run_hostile(
        "(call $log (i32.const 0) (i32.const 0) (i32.const 100000000)) (i32.const 0)",
        "",
    );
    assert!(why.contains("over the cap of 4096 bytes"), "{why}");
    let (why, _) = run_hostile("(i32.const 7)", "");
    assert_eq!(why, "strategy failed: keel_on_trade returned error code 7");
}

#[test]
fn a_failed_module_starts_over_when_its_owner_resumes_the_bot() {
    // Traps on the first trade only: a global survives in the instance, not across instances.
    let once = "(if (i32.eqz (global.get $seen)) (then (global.set $seen (i32.const 1)) (unreachable))) (i32.const 0)";
    let (_, mut bot) = run_hostile(once, "(global $seen (mut i32) (i32.const 0))");
    bot.set_strategy_active(true);
    let mut fx = Effects::default();
    bot.on_market(&trade("100", 60), &mut fx);
    // A fresh instance traps again on its first trade: resumed, called once, paused again.
    assert!(fx.paused.is_some());
}

#[test]
fn two_owners_modules_side_by_side_see_nothing_of_each_other() {
    // Each counts its trades in its own memory and publishes the count.
    let counter = r#"(module
      (import "keel" "series" (func $series (param i32 i32 i32 i32 f64 f64) (result i32)))
      (import "keel" "publish" (func $publish (param i32 f64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "count")
      (func (export "keel_abi_version") (result i32) (i32.const 1))
      (func (export "keel_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "keel_init") (param i32 i32) (result i32)
        (drop (call $series (i32.const 0) (i32.const 5) (i32.const 1) (i32.const 0) (f64.const nan) (f64.const nan)))
        (i32.const 0))
      (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0))
      (func (export "keel_on_trade") (param i64 i64 i32 i64 i32 i32) (result i32)
        (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))
        (call $publish (i32.const 0) (f64.convert_i32_u (i32.load (i32.const 64))))
        (i32.const 0)))"#;
    let host = host();
    let bytes = wat::parse_str(counter).unwrap();
    let mut alice = engine(Box::new(host.strategy(&bytes, &json!({}), &filters()).unwrap()));
    let mut bob = engine(Box::new(host.strategy(&bytes, &json!({}), &filters()).unwrap()));
    let last = |bot: &mut BotEngine, ts: u64| {
        let mut fx = Effects::default();
        bot.on_market(&trade("100", ts), &mut fx);
        fx.indicators.unwrap().values[0].1
    };
    for ts in 1..=5 {
        assert_eq!(last(&mut alice, ts), Decimal::from(ts));
    }
    assert_eq!(last(&mut bob, 1), Decimal::ONE, "bob's instance saw none of alice's trades");
    assert_eq!(last(&mut alice, 6), Decimal::from(6));
}

/// `json` as a WebAssembly text string literal's body.
fn wat_text(json: &str) -> String {
    json.replace('"', "\\\"")
}

#[test]
fn a_module_places_any_order_type_and_hears_each_change_of_its_orders() {
    // On its first trade it places a stop-limit through `place_order`; it logs every event JSON
    // it gets, so the journal shows what it heard.
    let order = r#"{"type":"stop_limit","side":"buy","qty":"0.01","stop_price":"105","price":"106","tag":4}"#;
    let wat = format!(
        r#"(module
          (import "keel" "log" (func $log (param i32 i32 i32)))
          (import "keel" "place_order" (func $place_order (param i32 i32) (result i32)))
          (memory (export "memory") 1 1)
          (data (i32.const 0) "{text}")
          (global $placed (mut i32) (i32.const 0))
          (func (export "keel_abi_version") (result i32) (i32.const 1))
          (func (export "keel_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
          (func (export "keel_on_event") (param $ptr i32) (param $len i32) (result i32)
            (call $log (i32.const 0) (local.get $ptr) (local.get $len)) (i32.const 0))
          (func (export "keel_on_trade") (param i64 i64 i32 i64 i32 i32) (result i32)
            (if (i32.eqz (global.get $placed))
              (then (drop (call $place_order (i32.const 0) (i32.const {len})))
                    (global.set $placed (i32.const 1))))
            (i32.const 0)))"#,
        text = wat_text(order),
        len = order.len(),
    );
    let host = host();
    let strategy = host.strategy(&wat::parse_str(wat).unwrap(), &json!({}), &filters()).unwrap();
    let mut bot = engine(Box::new(strategy));
    let mut heard = Vec::new();
    for (ts, price) in [(1, "100"), (2, "105.5"), (3, "105.6"), (4, "105.7")] {
        let mut fx = Effects::default();
        bot.on_market(&trade(price, ts), &mut fx);
        assert!(fx.paused.is_none(), "{fx:?}");
        if ts == 1 {
            let placed = fx.orders.first().expect("the order is placed");
            assert_eq!(
                placed.order_type,
                keel_core::trading::OrderType::StopLimit { stop_price: d("105"), price: d("106") }
            );
            assert_eq!((placed.qty, placed.tag), (d("0.01"), 4));
        }
        heard.extend(fx.events.into_iter().filter_map(|e| match e.kind {
            BotEventKind::Log { message, .. } => {
                serde_json::from_str::<serde_json::Value>(&message).ok()
            }
            _ => None,
        }));
    }
    let orders: Vec<&str> = heard
        .iter()
        .filter(|e| e["type"] == "order")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(orders.first(), Some(&"accepted"), "{heard:?}");
    assert_eq!(orders.last(), Some(&"filled"), "{heard:?}");
    let first = heard.iter().find(|e| e["type"] == "order").unwrap();
    assert_eq!(first["order_type"]["type"], "stop_limit");
    assert_eq!(first["tag"], 4);
    assert!(heard.iter().any(|e| e["type"] == "fill" && e["tag"] == 4), "{heard:?}");
}

#[test]
fn an_order_with_a_field_its_type_does_not_have_pauses_the_bot_naming_the_field() {
    let order = r#"{"type":"limit","side":"buy","qty":"0.01","price":"100","stop_price":"99"}"#;
    let extra = format!(
        r#"(import "keel" "place_order" (func $place_order (param i32 i32) (result i32)))
           (data (i32.const 0) "{}")"#,
        wat_text(order)
    );
    let on_trade = format!(
        "(drop (call $place_order (i32.const 0) (i32.const {}))) (i32.const 0)",
        order.len()
    );
    let (why, _) = run_hostile(&on_trade, &extra);
    assert!(why.contains(r#"a limit order has no field "stop_price""#), "{why}");
}
