//! Binance's commission through the order router, against the loopback fake: the asset a fill
//! was charged in comes back from a new-order answer and, for queries and cancels (whose answers
//! list no fills), from the order's trades; a trades lookup that fails (5xx, silence, a dropped
//! connection) fails the query rather than report a fill without its commission, and never turns
//! a cancel that happened into a failed one.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;

use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderType, Side};
use keel_testkit::fake_rest::{API_KEY, FakeRest, Fault, FeeMode, SECRET_KEY};
use keel_testkit::routing::{TestSigner, new_order};
use keel_venues::binance::connector::BinanceRouter;
use keel_venues::binance::rest::RestClient;
use keel_venues::routing::{OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;

fn signer() -> TestSigner {
    keel_testkit::routing::signer(API_KEY, SECRET_KEY)
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

fn order(id: &str, side: Side, order_type: OrderType, qty: &str) -> Order {
    let mut order = new_order(id, side, order_type, dec(qty));
    order.id = 1;
    order
}

fn router(fake: &FakeRest) -> BinanceRouter {
    let rest = RestClient::new(&keel_venues::binance::SPOT, &fake.url()).unwrap();
    BinanceRouter::new(Arc::new(rest))
}

#[tokio::test]
async fn a_buy_pays_commission_in_the_base_asset_received_and_a_sell_in_the_quote() {
    let fake = FakeRest::start().await;
    fake.set_fee_mode(FeeMode::Received);
    let router = router(&fake);
    let s = signer();
    let buy = order("keel-42-000001", Side::Buy, OrderType::Market, "0.1");
    let placed = router.place(&btc(), &buy, s.as_ref()).await.unwrap();
    let fill = &placed.fills[0];
    assert_eq!((fill.fee_asset.as_str(), fill.fee), ("BTC", dec("0.0001")));

    let sell = order("keel-42-000002", Side::Sell, OrderType::Market, "0.0999");
    let placed = router.place(&btc(), &sell, s.as_ref()).await.unwrap();
    let fill = &placed.fills[0];
    assert_eq!((fill.fee_asset.as_str(), fill.fee), ("USDT", dec("0.00999")));
}

#[tokio::test]
async fn a_bnb_account_pays_commission_in_bnb() {
    let fake = FakeRest::start().await;
    fake.set_fee_mode(FeeMode::Bnb);
    let router = router(&fake);
    let s = signer();
    let buy = order("keel-42-000001", Side::Buy, OrderType::Market, "1");
    let placed = router.place(&btc(), &buy, s.as_ref()).await.unwrap();
    // 0.075 % of 100 USDT, at 500 USDT per BNB.
    let fill = &placed.fills[0];
    assert_eq!((fill.fee_asset.as_str(), fill.fee), ("BNB", dec("0.00015")));
}

#[tokio::test]
async fn a_query_lists_the_trades_of_what_executed_with_their_commission() {
    let fake = FakeRest::start().await;
    fake.set_fee_mode(FeeMode::Received);
    let router = router(&fake);
    let s = signer();
    let limit = order("keel-42-000003", Side::Buy, OrderType::limit(dec("95")), "0.2");
    let placed = router.place(&btc(), &limit, s.as_ref()).await.unwrap();
    assert!(placed.fills.is_empty());
    // Nothing executed: no trades lookup.
    let queried = router.query(&btc(), "keel-42-000003", s.as_ref()).await.unwrap();
    assert!(queried.fills.is_empty());

    assert!(fake.fill_limit("keel-42-000003", dec("0.05")));
    assert!(fake.fill_limit("keel-42-000003", dec("0.1")));
    let queried = router.query(&btc(), "keel-42-000003", s.as_ref()).await.unwrap();
    assert_eq!(queried.executed_qty, dec("0.15"));
    let listed: Vec<(Decimal, Decimal, &str)> =
        queried.fills.iter().map(|f| (f.qty, f.fee, f.fee_asset.as_str())).collect();
    assert_eq!(
        listed,
        vec![(dec("0.05"), dec("0.00005"), "BTC"), (dec("0.1"), dec("0.0001"), "BTC")]
    );

    let canceled = router.cancel(&btc(), "keel-42-000003", s.as_ref()).await.unwrap();
    assert_eq!(canceled.status, "CANCELED");
    assert_eq!(canceled.fills.len(), 2, "a cancel's answer gets the trades too");
}

#[tokio::test]
async fn a_trades_lookup_that_fails_fails_the_query_but_never_the_cancel() {
    let fake = FakeRest::start().await;
    fake.set_fee_mode(FeeMode::Received);
    let router = router(&fake);
    let s = signer();
    let limit = order("keel-42-000004", Side::Buy, OrderType::limit(dec("95")), "0.2");
    router.place(&btc(), &limit, s.as_ref()).await.unwrap();
    assert!(fake.fill_limit("keel-42-000004", dec("0.05")));

    fake.fail_trades_next(1, Fault::ServerError);
    let err = router.query(&btc(), "keel-42-000004", s.as_ref()).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{err}");
    fake.fail_trades_next(1, Fault::Drop);
    let err = router.query(&btc(), "keel-42-000004", s.as_ref()).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{err}");
    // Asked again, the venue answers.
    let queried = router.query(&btc(), "keel-42-000004", s.as_ref()).await.unwrap();
    assert_eq!(queried.fills.len(), 1);

    // The cancel happened: it is reported as such, without the fills it could not read.
    fake.fail_trades_next(1, Fault::ServerError);
    let canceled = router.cancel(&btc(), "keel-42-000004", s.as_ref()).await.unwrap();
    assert_eq!((canceled.status.as_str(), canceled.executed_qty), ("CANCELED", dec("0.05")));
    assert!(canceled.fills.is_empty());
    assert_eq!(fake.order("keel-42-000004").unwrap()["status"], "CANCELED");
}

#[tokio::test]
async fn a_trades_lookup_that_hangs_fails_the_query_within_the_timeout() {
    let fake = FakeRest::start().await;
    let router = router(&fake);
    let s = signer();
    let limit = order("keel-42-000005", Side::Buy, OrderType::limit(dec("95")), "0.2");
    router.place(&btc(), &limit, s.as_ref()).await.unwrap();
    assert!(fake.fill_limit("keel-42-000005", dec("0.2")));
    fake.fail_trades_next(1, Fault::Hang);
    let started = std::time::Instant::now();
    let err = router.query(&btc(), "keel-42-000005", s.as_ref()).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{err}");
    let rest_timeout = keel_venues::binance::rest::REST_TIMEOUT;
    assert!(started.elapsed() < rest_timeout + std::time::Duration::from_secs(2));
}
