//! Bybit v5 behind the seam: the public stream parser on Bybit's documented frames, and the
//! REST router against a loopback fake that checks signatures and timestamps as Bybit does.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use keel_core::market::{EventKind, MarketEvent, Side as MarketSide, Symbol};
use keel_core::trading::{OrderType, Side};
use keel_testkit::fake_bybit::{API_KEY, API_SECRET, BybitFault, FakeBybit};
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::bybit::SPOT;
use keel_venues::bybit::connector::BybitRouter;
use keel_venues::bybit::parse::Parser;
use keel_venues::bybit::rest::RestClient;
use keel_venues::bybit_linear::LINEAR;
use keel_venues::market::Inbound;
use keel_venues::routing::{OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;
use serde_json::Value;

const WS_FIXTURES: &str = include_str!("../../testkit/fixtures/bybit/ws_public.jsonl");

fn frame(name: &str) -> String {
    WS_FIXTURES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))["frame"]
        .to_string()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn events(inbound: Inbound) -> Vec<MarketEvent> {
    match inbound {
        Inbound::Event(event) => vec![event],
        Inbound::Events(events) => events,
        other => panic!("not data: {other:?}"),
    }
}

#[test]
fn spot_trades_arrive_one_event_per_row_with_numeric_ids() {
    let mut parser = Parser::new(&SPOT);
    let trades = events(parser.parse(&frame("trade_spot"), 1_672_304_486_900_000).unwrap());
    assert_eq!(trades.len(), 2);
    assert_eq!(trades[0].venue.as_str(), "bybit");
    assert_eq!(trades[0].symbol.as_str(), "BTCUSDT");
    assert_eq!(trades[0].exchange_ts, 1_672_304_486_865);
    assert_eq!(
        trades[0].kind,
        EventKind::Trade {
            price: dec("16578.50"),
            qty: dec("0.001"),
            side: MarketSide::Buy,
            trade_id: 2_290_000_000_007_764_263
        }
    );
    assert!(matches!(trades[1].kind, EventKind::Trade { side: MarketSide::Sell, .. }));
}

#[test]
fn linear_tickers_give_the_mark_price_and_funding_and_deltas_keep_what_they_omit() {
    let mut parser = Parser::new(&LINEAR);
    let snapshot = events(parser.parse(&frame("tickers_linear_snapshot"), 0).unwrap());
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].exchange_ts, 1_673_272_861_686);
    assert_eq!(
        snapshot[0].kind,
        EventKind::MarkPrice {
            mark_price: dec("17217.33"),
            funding_rate: Some(dec("-0.000212")),
            next_funding_ms: Some(1_673_280_000_000),
        }
    );
    // The delta changes the mark only: the rate and the next funding time stay.
    let delta = events(parser.parse(&frame("tickers_linear_delta"), 0).unwrap());
    assert_eq!(
        delta[0].kind,
        EventKind::MarkPrice {
            mark_price: dec("17210.01"),
            funding_rate: Some(dec("-0.000212")),
            next_funding_ms: Some(1_673_280_000_000),
        }
    );
    // Spot has no tickers stream in Keel.
    assert!(Parser::new(&SPOT).parse(&frame("tickers_linear_snapshot"), 0).is_err());
}

#[test]
fn linear_trade_ids_are_the_uuids_first_64_bits() {
    let mut parser = Parser::new(&LINEAR);
    let trades = events(parser.parse(&frame("trade_linear"), 0).unwrap());
    let EventKind::Trade { trade_id, .. } = trades[0].kind else { panic!() };
    assert_eq!(trade_id, 0x20f4_3950_d8dd_5b31);
    assert_eq!(trades[0].venue.as_str(), "bybit_linear");
}

#[test]
fn the_depth_book_applies_deltas_in_update_order_and_drops_stale_ones() {
    let mut parser = Parser::new(&SPOT);
    let snapshot = events(parser.parse(&frame("book50_snapshot"), 0).unwrap());
    let EventKind::Depth { bids, asks, update_id, snapshot: whole } = &snapshot[0].kind else {
        panic!("{snapshot:?}")
    };
    assert!(*whole);
    assert_eq!(*update_id, 18_521_288);
    assert_eq!(bids[0], (dec("16493.50"), dec("0.006")));
    assert_eq!(asks[0], (dec("16611.00"), dec("0.029")));
    // The delta removes the best bid (size 0), adds one below, changes and adds asks.
    let delta = events(parser.parse(&frame("book50_delta"), 0).unwrap());
    let EventKind::Depth { bids, asks, update_id, .. } = &delta[0].kind else { panic!() };
    assert_eq!(*update_id, 18_521_289);
    assert_eq!(
        bids,
        &vec![(dec("16493.00"), dec("0.100")), (dec("16490.00"), dec("0.450"))],
        "bids best first"
    );
    assert_eq!(
        asks,
        &vec![
            (dec("16611.00"), dec("0.100")),
            (dec("16611.50"), dec("0.300")),
            (dec("16612.00"), dec("0.213"))
        ]
    );
    // A delta whose `u` is not newer changes nothing and sends nothing.
    assert!(events(parser.parse(&frame("book50_stale_delta"), 0).unwrap()).is_empty());
}

#[test]
fn a_delta_before_its_snapshot_is_refused() {
    let mut parser = Parser::new(&SPOT);
    let err = parser.parse(&frame("book50_delta"), 0).unwrap_err();
    assert_eq!(err.reason, "book_gap");
}

#[test]
fn level_one_of_the_book_is_the_quote() {
    let mut parser = Parser::new(&LINEAR);
    let quote = events(parser.parse(&frame("book1_snapshot"), 0).unwrap());
    assert_eq!(
        quote[0].kind,
        EventKind::Quote {
            bid: dec("16493.50"),
            bid_qty: dec("0.006"),
            ask: dec("16611.00"),
            ask_qty: dec("0.029")
        }
    );
    let moved = events(parser.parse(&frame("book1_delta"), 0).unwrap());
    let EventKind::Quote { bid, bid_qty, ask, .. } = moved[0].kind else { panic!() };
    assert_eq!((bid, bid_qty, ask), (dec("16494.00"), dec("0.500"), dec("16611.00")));
}

#[test]
fn candles_and_liquidations_read_as_keel_events() {
    let mut parser = Parser::new(&LINEAR);
    let candle = events(parser.parse(&frame("kline"), 0).unwrap());
    let EventKind::Candle(c) = &candle[0].kind else { panic!() };
    assert_eq!(
        (c.open_time, c.open, c.close, c.closed),
        (1_672_324_800_000, dec("16649.5"), dec("16677"), false)
    );
    let liquidation = events(parser.parse(&frame("liquidation"), 0).unwrap());
    assert_eq!(liquidation[0].symbol.as_str(), "ROSEUSDT");
    // Bybit's `S` is the liquidated position's side; Keel carries the order's.
    assert_eq!(
        liquidation[0].kind,
        EventKind::Liquidation { side: MarketSide::Buy, price: dec("0.04499"), qty: dec("20000") }
    );
    // Spot has no liquidation stream.
    assert!(Parser::new(&SPOT).parse(&frame("liquidation"), 0).is_err());
}

#[test]
fn answers_and_heartbeats_are_control_frames() {
    let mut parser = Parser::new(&SPOT);
    assert_eq!(parser.parse(&frame("subscribe_ok"), 0).unwrap(), Inbound::Ack { id: 10001 });
    assert_eq!(parser.parse(&frame("pong_spot"), 0).unwrap(), Inbound::Ack { id: 3 });
    assert_eq!(parser.parse(&frame("pong_linear"), 0).unwrap(), Inbound::Ack { id: 4 });
    let Inbound::Error { msg, id, .. } = parser.parse(&frame("subscribe_failed"), 0).unwrap()
    else {
        panic!()
    };
    assert_eq!(id, Some(10002));
    assert!(msg.contains("handler not found"), "{msg}");
}

#[test]
fn malformed_frames_are_refused_not_panicked_on() {
    let mut parser = Parser::new(&SPOT);
    let bad = [
        "",
        "[]",
        "{}",
        r#"{"topic":"publicTrade.BTCUSDT","data":[{"s":"BTCUSDT","S":"Buy","v":"-1","p":"1","i":"1"}]}"#,
        r#"{"topic":"publicTrade.BTCUSDT","data":[{"s":"ETHUSDT","S":"Buy","v":"1","p":"1","i":"1"}]}"#,
        r#"{"topic":"publicTrade.BTCUSDT","data":[{"s":"BTCUSDT","S":"Up","v":"1","p":"1","i":"1"}]}"#,
        r#"{"topic":"orderbook.50.BTCUSDT","type":"weird","data":{"s":"BTCUSDT","b":[],"a":[],"u":1}}"#,
        r#"{"topic":"kline.1.BTCUSDT","data":[{"start":1,"interval":"5","open":"1","close":"1","high":"1","low":"1","volume":"1"}]}"#,
        r#"{"topic":"tickers.BTCUSDT","data":{"symbol":"BTCUSDT"}}"#,
    ];
    for text in bad {
        assert!(parser.parse(text, 0).is_err(), "{text}");
    }
}

fn client(fake: &FakeBybit) -> Arc<RestClient> {
    Arc::new(RestClient::new(&SPOT, &fake.url()).unwrap())
}

fn good_signer() -> TestSigner {
    signer(API_KEY, API_SECRET)
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

#[tokio::test]
async fn a_market_buy_is_signed_as_bybit_documents_and_reported_filled() {
    let fake = FakeBybit::start().await;
    let router = BybitRouter::new(client(&fake));
    let signer = good_signer();
    let order = new_order("keel-42-000017", Side::Buy, OrderType::Market, dec("0.001"));
    let report = router.place(&btc(), &order, &*signer).await.unwrap();
    assert_eq!(report.status, "FILLED");
    assert_eq!(report.client_order_id, "keel-42-000017");
    assert_eq!(report.executed_qty, dec("0.001"));
    assert_eq!(report.cum_quote, dec("16.5785"));
    // The signed text is timestamp + key + recv_window + the exact JSON body.
    let texts = fake.signed_texts();
    let create = texts.iter().find(|t| t.contains("\"orderLinkId\"")).unwrap();
    assert!(create.contains(&format!("{API_KEY}5000{{")), "{create}");
    assert!(create.contains(r#""marketUnit":"baseCoin""#), "{create}");
    assert_eq!(fake.creates(), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_bybit_refuses_it() {
    let fake = FakeBybit::start().await;
    let router = BybitRouter::new(client(&fake));
    let signer = signer(API_KEY, "not-the-secret");
    let order = new_order("keel-42-1", Side::Buy, OrderType::Market, dec("0.001"));
    let err = router.place(&btc(), &order, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
    assert!(err.message.contains("10004"), "{}", err.message);
    assert_eq!(fake.creates(), 0);
}

#[tokio::test]
async fn a_skewed_server_clock_is_learned_before_the_first_signed_call() {
    for skew in [-20_000, 20_000] {
        let fake = FakeBybit::start().await;
        fake.set_clock_skew_ms(skew);
        let router = BybitRouter::new(client(&fake));
        let signer = good_signer();
        let order = new_order("keel-42-2", Side::Buy, OrderType::Market, dec("0.001"));
        router.place(&btc(), &order, &*signer).await.unwrap();
        assert_eq!(fake.clock_refusals(), 0, "skew {skew}");
        assert_eq!(fake.time_requests(), 1);
    }
}

#[tokio::test]
async fn a_10002_remeasures_and_resends_once() {
    let fake = FakeBybit::start().await;
    let rest =
        RestClient::new(&SPOT, &fake.url()).unwrap().with_clock_refresh(Duration::from_secs(3600));
    let router = BybitRouter::new(Arc::new(rest));
    let signer = good_signer();
    router.sync_clock().await.unwrap();
    // The server's clock jumps after the measurement: the next call is refused once.
    fake.set_clock_skew_ms(30_000);
    let balances = router.balances(&*signer).await.unwrap();
    assert_eq!(fake.clock_refusals(), 1);
    assert_eq!(fake.time_requests(), 2);
    let usdt = balances.iter().find(|b| b.asset == "USDT").unwrap();
    assert_eq!((usdt.free, usdt.locked), (dec("900.25"), dec("100.25")));
}

#[tokio::test]
async fn resting_orders_are_queried_filled_in_part_and_cancelled() {
    let fake = FakeBybit::start().await;
    let router = BybitRouter::new(client(&fake));
    let signer = good_signer();
    let order = new_order("keel-42-3", Side::Buy, OrderType::limit(dec("16000")), dec("0.010"));
    let placed = router.place(&btc(), &order, &*signer).await.unwrap();
    assert_eq!(placed.status, "NEW");
    assert!(fake.fill("keel-42-3", dec("0.004")));
    let queried = router.query(&btc(), "keel-42-3", &*signer).await.unwrap();
    assert_eq!((queried.status.as_str(), queried.executed_qty), ("PARTIALLY_FILLED", dec("0.004")));
    let canceled = router.cancel(&btc(), "keel-42-3", &*signer).await.unwrap();
    // Partly filled then cancelled: the final state keeps what filled.
    assert_eq!((canceled.status.as_str(), canceled.executed_qty), ("CANCELED", dec("0.004")));
    // A second cancel finds it closed; a query of an order never sent finds nothing.
    let again = router.cancel(&btc(), "keel-42-3", &*signer).await.unwrap_err();
    assert_eq!(again.kind, RouteErrorKind::NotOpen);
    let never = router.query(&btc(), "keel-42-404", &*signer).await.unwrap_err();
    assert_eq!(never.kind, RouteErrorKind::NoSuchOrder);
}

#[tokio::test]
async fn a_lost_answer_is_an_unknown_outcome_and_the_query_settles_it() {
    for fault in [BybitFault::BadGateway, BybitFault::Drop] {
        let fake = FakeBybit::start().await;
        let router = BybitRouter::new(client(&fake));
        let signer = good_signer();
        router.sync_clock().await.unwrap();
        fake.fail_next(1, fault);
        let order = new_order("keel-42-4", Side::Buy, OrderType::Market, dec("0.002"));
        let err = router.place(&btc(), &order, &*signer).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{fault:?}: {}", err.message);
        // The create happened; the query finds it, and nothing is sent twice.
        let found = router.query(&btc(), "keel-42-4", &*signer).await.unwrap();
        assert_eq!((found.status.as_str(), found.executed_qty), ("FILLED", dec("0.002")));
        assert_eq!(fake.creates(), 1);
    }
}

#[tokio::test]
async fn too_many_visits_holds_requests_back_until_the_reset() {
    let fake = FakeBybit::start().await;
    let router = BybitRouter::new(client(&fake));
    let signer = good_signer();
    router.sync_clock().await.unwrap();
    fake.fail_next(1, BybitFault::TooManyVisits);
    let err = router.balances(&*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected, "{}", err.message);
    // The answer said 0 left until the reset: the next call is not sent.
    let sent = fake.requests();
    let held = router.balances(&*signer).await.unwrap_err();
    assert_eq!(held.kind, RouteErrorKind::NotSent, "{}", held.message);
    assert_eq!(fake.requests(), sent);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    router.balances(&*signer).await.unwrap();
}

#[tokio::test]
async fn instrument_rules_come_from_instruments_info() {
    let fake = FakeBybit::start().await;
    let rules = router_instruments(&fake).await;
    let btc_rules = &rules[&btc()];
    assert_eq!(btc_rules.step_size, dec("0.000001"));
    assert_eq!(btc_rules.tick_size, dec("0.01"));
    assert_eq!(btc_rules.min_notional, dec("1"));
}

async fn router_instruments(fake: &FakeBybit) -> keel_venues::market::InstrumentMap {
    BybitRouter::new(client(fake)).instruments().await.unwrap()
}
