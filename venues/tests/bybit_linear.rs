//! Bybit USDT perpetuals through the seam against the loopback fakes: reduce-only exits,
//! leverage and margin mode before the first order, positions and funding from the venue, and the
//! private stream (authentication as Bybit documents it, fills pushed with their fees, positions,
//! funding, reconnection).
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::bot::MarginType;
use keel_core::market::Symbol;
use keel_core::trading::{OrderOrigin, OrderType, Side};
use keel_testkit::fake_bybit::{API_KEY, API_SECRET, FakeBybit};
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::account::{AccountEvent, AccountStream, OwnedSigner};
use keel_venues::bybit::connector::BybitRouter;
use keel_venues::bybit::private::PrivateStreamConfig;
use keel_venues::bybit::rest::RestClient;
use keel_venues::bybit_linear::LINEAR;
use keel_venues::routing::{OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

fn router(fake: &FakeBybit) -> BybitRouter {
    let rest = RestClient::new(&LINEAR, &fake.url()).unwrap();
    let mut config = PrivateStreamConfig::new(fake.private().url.clone());
    config.connection.backoff_base = Duration::from_millis(20);
    config.connection.backoff_cap = Duration::from_millis(100);
    BybitRouter::new(Arc::new(rest)).with_private_stream(config)
}

fn good_signer() -> TestSigner {
    signer(API_KEY, API_SECRET)
}

fn owned_signer(secret: &str) -> OwnedSigner {
    let signer = signer(API_KEY, secret);
    Arc::new(move |payload| signer(payload))
}

async fn next_event(stream: &mut AccountStream) -> AccountEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.events.recv())
        .await
        .expect("an account event within 5 s")
        .expect("the stream is running")
}

#[tokio::test]
async fn a_short_opens_and_only_a_reduce_only_exit_closes_it() {
    let fake = FakeBybit::start().await;
    fake.set_price(dec("100"));
    let router = router(&fake);
    let signer = good_signer();
    let short = new_order("keel-42-000001", Side::Sell, OrderType::Market, dec("0.2"));
    let report = router.place(&btc(), &short, &*signer).await.unwrap();
    assert_eq!((report.status.as_str(), report.executed_qty), ("FILLED", dec("0.2")));
    assert_eq!(fake.position("BTCUSDT"), (dec("-0.2"), dec("100")));
    assert_eq!(fake.order("keel-42-000001").unwrap()["reduceOnly"], false);

    // An exit larger than the position would flip it: Bybit refuses it, reduce-only.
    let mut too_big = new_order("keel-42-000002", Side::Buy, OrderType::Market, dec("0.3"));
    too_big.origin = OrderOrigin::Close;
    let err = router.place(&btc(), &too_big, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected, "{}", err.message);
    assert!(err.message.contains("110017"), "{}", err.message);
    assert_eq!(fake.position("BTCUSDT").0, dec("-0.2"));

    for (id, origin) in
        [("keel-42-000003", OrderOrigin::TakeProfit), ("keel-42-000004", OrderOrigin::StopLoss)]
    {
        let mut exit = new_order(id, Side::Buy, OrderType::Market, dec("0.1"));
        exit.origin = origin;
        router.place(&btc(), &exit, &*signer).await.unwrap();
        assert_eq!(fake.order(id).unwrap()["reduceOnly"], true, "{origin:?}");
    }
    assert_eq!(fake.position("BTCUSDT").0, Decimal::ZERO);
    // Flat: a reduce-only exit can no longer do anything.
    let mut late = new_order("keel-42-000005", Side::Buy, OrderType::Market, dec("0.1"));
    late.origin = OrderOrigin::StopLoss;
    assert_eq!(
        router.place(&btc(), &late, &*signer).await.unwrap_err().kind,
        RouteErrorKind::Rejected
    );
}

#[tokio::test]
async fn prepare_sets_margin_mode_and_leverage_once_and_is_idempotent() {
    let fake = FakeBybit::start().await;
    let router = router(&fake);
    let signer = good_signer();
    router.prepare(&btc(), 5, MarginType::Isolated, &*signer).await.unwrap();
    assert_eq!(fake.leverage("BTCUSDT"), Some(5));
    assert_eq!(fake.margin_mode(), "ISOLATED_MARGIN");
    assert_eq!(fake.margin_switches(), 1);
    // Again: the margin mode is already so (not switched again), the leverage answers 110043,
    // which is success.
    router.prepare(&btc(), 5, MarginType::Isolated, &*signer).await.unwrap();
    assert_eq!((fake.margin_switches(), fake.set_leverage_calls()), (1, 2));
    router.prepare(&btc(), 3, MarginType::Cross, &*signer).await.unwrap();
    assert_eq!(
        (fake.leverage("BTCUSDT"), fake.margin_mode().as_str()),
        (Some(3), "REGULAR_MARGIN")
    );
    // A refused leverage is an error.
    let err = router.prepare(&btc(), 1000, MarginType::Cross, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
}

#[tokio::test]
async fn positions_and_funding_come_from_the_venue() {
    let fake = FakeBybit::start().await;
    fake.set_price(dec("110"));
    let router = router(&fake);
    let signer = good_signer();
    router.prepare(&btc(), 4, MarginType::Isolated, &*signer).await.unwrap();
    fake.set_position("BTCUSDT", dec("-0.5"), dec("100"));
    let positions = router.positions(&*signer).await.unwrap();
    let [position] = &positions[..] else { panic!("{positions:?}") };
    assert_eq!((position.qty, position.entry_price), (dec("-0.5"), dec("100")));
    assert_eq!(position.unrealized_pnl, dec("-5"));
    assert_eq!(position.mark_price, Some(dec("110")));
    assert_eq!(position.liquidation_price, Some(dec("125")));
    assert_eq!((position.leverage, position.margin_type), (Some(4), Some(MarginType::Isolated)));

    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64;
    let day = 24 * 3600 * 1000;
    fake.add_funding("BTCUSDT", "0.0125", now - 20 * day);
    fake.add_funding("BTCUSDT", "-0.004", now - 2 * day);
    fake.add_funding("ETHUSDT", "1", now - day);
    // Three 7-day windows back to 20 days ago, oldest first; paid is negative.
    let paid = router.funding(&btc(), now - 21 * day, &*signer).await.unwrap();
    let amounts: Vec<Decimal> = paid.iter().map(|p| p.amount).collect();
    assert_eq!(amounts, [dec("-0.0125"), dec("0.004")]);
    assert!(paid.iter().all(|p| p.asset == "USDT" && !p.id.is_empty()));
    assert!(router.funding(&btc(), now - day, &*signer).await.unwrap().is_empty());
    // From the epoch: only the two years Bybit keeps are asked for, and today's are found.
    assert_eq!(router.funding(&btc(), 0, &*signer).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_private_stream_pushes_fills_with_fees_positions_and_funding_and_reconnects() {
    let fake = FakeBybit::start().await;
    fake.set_price(dec("100"));
    let router = router(&fake);
    let mut stream = router.account_stream(owned_signer(API_SECRET)).unwrap();
    assert_eq!(next_event(&mut stream).await, AccountEvent::Connected);
    assert_eq!(fake.private().auths(), 1);
    assert!(fake.private().topics().contains("execution"));

    let signer = good_signer();
    let limit = new_order("keel-42-000010", Side::Sell, OrderType::limit(dec("100")), dec("0.2"));
    router.place(&btc(), &limit, &*signer).await.unwrap();
    assert!(fake.fill("keel-42-000010", dec("0.05")));
    let mut fills = Vec::new();
    let mut positions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while positions.is_empty() {
        assert!(Instant::now() < deadline);
        match next_event(&mut stream).await {
            AccountEvent::Order(update) => fills.push(update),
            AccountEvent::Position(position) => positions.push(position),
            _ => {}
        }
    }
    let fill = fills.iter().find(|u| !u.report.fills.is_empty()).unwrap();
    assert_eq!(fill.report.client_order_id, "keel-42-000010");
    assert_eq!(
        (fill.report.status.as_str(), fill.report.executed_qty),
        ("PARTIALLY_FILLED", dec("0.05"))
    );
    // 0.05 × 100 × 0.055 % in USDT.
    assert_eq!(fill.report.fills[0].fee, dec("0.00275"));
    assert_eq!(fill.report.fills[0].fee_asset, "USDT");
    assert!(fill.trade_id.is_some());
    assert_eq!(positions[0].qty, dec("-0.05"));

    fake.add_funding("BTCUSDT", "0.01", 1_700_000_000_000);
    loop {
        if let AccountEvent::Funding(payment) = next_event(&mut stream).await {
            assert_eq!(payment.amount, dec("-0.01"));
            break;
        }
    }

    // The connection drops: Disconnected, then a new authenticated subscription.
    fake.private().drop_connections();
    loop {
        if let AccountEvent::Disconnected(_) = next_event(&mut stream).await {
            break;
        }
    }
    assert_eq!(next_event(&mut stream).await, AccountEvent::Connected);
    assert_eq!(fake.private().auths(), 2);
}

#[tokio::test]
async fn a_wrong_secret_never_subscribes() {
    let fake = FakeBybit::start().await;
    let router = router(&fake);
    let mut stream = router.account_stream(owned_signer("not-the-secret")).unwrap();
    let AccountEvent::Disconnected(why) = next_event(&mut stream).await else {
        panic!("subscribed with a wrong secret");
    };
    assert!(why.contains("auth refused"), "{why}");
    assert_eq!(fake.private().auths(), 0);
    assert_eq!(fake.private().refusals()[0], "Request not authorized");
}

#[tokio::test]
async fn answers_carry_each_trade_with_the_fee_bybit_took_and_its_coin() {
    let fake = FakeBybit::start().await;
    fake.set_price(dec("100"));
    let signer = good_signer();
    // Spot takes a buy's fee in the coin received (BTC), a sell's in USDT.
    let spot = BybitRouter::new(Arc::new(
        RestClient::new(&keel_venues::bybit::SPOT, &fake.url()).unwrap(),
    ));
    let buy = new_order("keel-42-000020", Side::Buy, OrderType::Market, dec("0.1"));
    let report = spot.place(&btc(), &buy, &*signer).await.unwrap();
    let [fill] = &report.fills[..] else { panic!("{report:?}") };
    assert_eq!(
        (fill.qty, fill.price, fill.fee, fill.fee_asset.as_str()),
        (dec("0.1"), dec("100"), dec("0.0001"), "BTC")
    );
    let sell = new_order("keel-42-000021", Side::Sell, OrderType::Market, dec("0.05"));
    let report = spot.place(&btc(), &sell, &*signer).await.unwrap();
    assert_eq!((report.fills[0].fee, report.fills[0].fee_asset.as_str()), (dec("0.005"), "USDT"));
    // Linear in the settle coin; a resting order's query lists its trades oldest first.
    let linear = router(&fake);
    let limit = new_order("keel-42-000022", Side::Sell, OrderType::limit(dec("100")), dec("0.3"));
    assert!(linear.place(&btc(), &limit, &*signer).await.unwrap().fills.is_empty());
    fake.set_price(dec("101"));
    assert!(fake.fill("keel-42-000022", dec("0.1")));
    fake.set_price(dec("102"));
    assert!(fake.fill("keel-42-000022", dec("0.05")));
    let report = linear.query(&btc(), "keel-42-000022", &*signer).await.unwrap();
    let prices: Vec<Decimal> = report.fills.iter().map(|f| f.price).collect();
    assert_eq!(prices, [dec("101"), dec("102")]);
    assert!(report.fills.iter().all(|f| f.fee_asset == "USDT"));
    assert_eq!(report.executed_qty, dec("0.15"));
}
