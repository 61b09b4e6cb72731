//! The Binance USD-M futures router against the loopback fake (`keel_testkit::fake_futures`):
//! leverage and margin type set before the first order, reduce-only exits, native brackets as
//! conditional orders, positions, funding, balances and back-offs. The guarantees every live venue shares are in `conformance.rs`.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;

use keel_core::bot::MarginType;
use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderOrigin, OrderType, Side};
use keel_testkit::fake_futures::{self, FakeFutures, FuturesFault};
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::binance::rest::RestClient;
use keel_venues::binance_futures::router::FuturesRouter;
use keel_venues::routing::{OrderListLegs, OrderReport, OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

async fn start() -> (FakeFutures, FuturesRouter, TestSigner) {
    let fake = FakeFutures::start().await;
    let rest = RestClient::new(&keel_venues::binance_futures::DIALECT, &fake.url()).unwrap();
    let router = FuturesRouter::new(Arc::new(rest));
    (fake, router, signer(fake_futures::API_KEY, fake_futures::SECRET_KEY))
}

/// The paths of the signed requests the fake accepted, in order.
fn paths(fake: &FakeFutures) -> Vec<String> {
    fake.log().iter().map(|l| l.split('?').next().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn prepare_checks_one_way_mode_then_sets_margin_type_then_leverage() {
    let (fake, router, signer) = start().await;
    router.prepare(&btc(), 10, MarginType::Isolated, &*signer).await.unwrap();
    assert_eq!(
        paths(&fake),
        ["GET /fapi/v1/positionSide/dual", "POST /fapi/v1/marginType", "POST /fapi/v1/leverage"]
    );
    let log = fake.log();
    assert!(log[1].contains("symbol=BTCUSDT&marginType=ISOLATED&"), "{}", log[1]);
    assert!(log[2].contains("symbol=BTCUSDT&leverage=10&"), "{}", log[2]);
    assert_eq!(fake.config("BTCUSDT"), Some((10, "ISOLATED".to_owned())));
    // Already so: Binance answers -4046, which is success.
    router.prepare(&btc(), 10, MarginType::Isolated, &*signer).await.unwrap();
    router.prepare(&btc(), 5, MarginType::Cross, &*signer).await.unwrap();
    assert_eq!(fake.config("BTCUSDT"), Some((5, "CROSSED".to_owned())));
}

#[tokio::test]
async fn a_leverage_above_the_bracket_is_the_venues_refusal() {
    let (fake, router, signer) = start().await;
    let err = router.prepare(&btc(), 126, MarginType::Cross, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
    assert!(err.message.contains("-4028") && err.message.contains("126"), "{}", err.message);
    assert_eq!(fake.config("BTCUSDT"), Some((fake_futures::DEFAULT_LEVERAGE, "CROSSED".into())));
}

#[tokio::test]
async fn hedge_mode_is_refused_before_anything_is_changed() {
    let (fake, router, signer) = start().await;
    fake.set_dual_side(true);
    let err = router.prepare(&btc(), 3, MarginType::Isolated, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
    assert!(err.message.contains("hedge mode"), "{}", err.message);
    assert_eq!(paths(&fake), ["GET /fapi/v1/positionSide/dual"]);
}

#[tokio::test]
async fn a_short_entry_fills_and_its_exit_is_reduce_only() {
    let (fake, router, signer) = start().await;
    fake.set_price(dec("50000"));
    router.prepare(&btc(), 5, MarginType::Isolated, &*signer).await.unwrap();
    let entry = new_order("keel-42-000001", Side::Sell, OrderType::Market, dec("0.010"));
    let report = router.place(&btc(), &entry, &*signer).await.unwrap();
    assert_eq!((report.status.as_str(), report.executed_qty), ("FILLED", dec("0.010")));
    assert_eq!(report.cum_quote, dec("500"));
    // RESULT answers carry no fills: they are read from the order's trades, with commission.
    assert_eq!(report.fills.len(), 1);
    assert_eq!((report.fills[0].fee, report.fills[0].fee_asset.as_str()), (dec("0.2"), "USDT"));
    assert_eq!(fake.position("BTCUSDT"), dec("-0.010"));
    let order_request =
        fake.log().into_iter().find(|l| l.starts_with("POST /fapi/v1/order")).unwrap();
    assert!(order_request.contains("newOrderRespType=RESULT"), "{order_request}");
    assert!(!order_request.contains("reduceOnly"), "an entry is not reduce-only: {order_request}");

    let positions = router.positions(&*signer).await.unwrap();
    assert_eq!(positions.len(), 1);
    let short = &positions[0];
    assert_eq!(
        (short.symbol.as_str(), short.qty, short.entry_price),
        ("BTCUSDT", dec("-0.010"), dec("50000"))
    );
    assert_eq!((short.leverage, short.margin_type), (Some(5), Some(MarginType::Isolated)));
    assert_eq!(short.liquidation_price, Some(dec("60000")));
    fake.set_price(dec("49000"));
    let positions = router.positions(&*signer).await.unwrap();
    assert_eq!(positions[0].unrealized_pnl, dec("10"));
    assert_eq!(positions[0].mark_price, Some(dec("49000")));

    // An exit larger than the position would flip it: the venue refuses it.
    let mut too_big = new_order("keel-42-000002", Side::Buy, OrderType::Market, dec("0.020"));
    too_big.origin = OrderOrigin::StopLoss;
    let err = router.place(&btc(), &too_big, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
    assert!(err.message.contains("-2022"), "{}", err.message);
    let mut close = new_order("keel-42-000003", Side::Buy, OrderType::Market, dec("0.010"));
    close.origin = OrderOrigin::Close;
    let closed = router.place(&btc(), &close, &*signer).await.unwrap();
    assert_eq!(closed.status, "FILLED");
    assert_eq!(fake.position("BTCUSDT"), Decimal::ZERO);
    let close_request =
        fake.log().into_iter().rfind(|l| l.starts_with("POST /fapi/v1/order")).unwrap();
    assert!(close_request.contains("reduceOnly=true"), "{close_request}");
    assert!(router.positions(&*signer).await.unwrap().is_empty());
    // Flat: any exit would open a position.
    let mut take_profit = new_order("keel-42-000004", Side::Buy, OrderType::Market, dec("0.010"));
    take_profit.origin = OrderOrigin::TakeProfit;
    assert_eq!(
        router.place(&btc(), &take_profit, &*signer).await.unwrap_err().kind,
        RouteErrorKind::Rejected
    );
}

#[tokio::test]
async fn a_post_only_limit_is_gtx_and_conditional_types_are_refused_here() {
    let (fake, router, signer) = start().await;
    fake.set_price(dec("50000"));
    let post_only = OrderType::Limit {
        price: dec("49000"),
        time_in_force: keel_core::trading::TimeInForce::PostOnly,
    };
    let order = new_order("keel-42-000010", Side::Buy, post_only, dec("0.010"));
    assert_eq!(router.place(&btc(), &order, &*signer).await.unwrap().status, "NEW");
    assert!(fake.log().last().unwrap().contains("timeInForce=GTX"));
    let stop_limit = OrderType::StopLimit { stop_price: dec("51000"), price: dec("51100") };
    let order = new_order("keel-42-000011", Side::Buy, stop_limit, dec("0.010"));
    let err = router.place(&btc(), &order, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
    assert_eq!(fake.creates(), 1, "nothing sent for the refused type");
}

#[tokio::test]
async fn funding_payments_are_read_from_income_history_since_a_time() {
    let (fake, router, signer) = start().await;
    fake.pay_funding("BTCUSDT", dec("-0.25"), 1_700_000_000_000, 9_689_322_392);
    fake.pay_funding("BTCUSDT", dec("0.125"), 1_700_028_800_000, 9_689_322_393);
    fake.pay_funding("ETHUSDT", dec("-1"), 1_700_028_800_000, 9_689_322_394);
    let all = router.funding(&btc(), 0, &*signer).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].amount, all[0].id.as_str(), all[0].asset.as_str()),
        (dec("-0.25"), "9689322392", "USDT")
    );
    let later = router.funding(&btc(), 1_700_000_000_001, &*signer).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].amount, later[0].time_ms), (dec("0.125"), 1_700_028_800_000));
    let request = fake.log().into_iter().find(|l| l.starts_with("GET /fapi/v1/income")).unwrap();
    assert!(
        request.contains("incomeType=FUNDING_FEE") && request.contains("startTime=0"),
        "{request}"
    );
}

#[tokio::test]
async fn balances_are_the_futures_wallet() {
    let (fake, router, signer) = start().await;
    fake.set_price(dec("50000"));
    router.prepare(&btc(), 10, MarginType::Isolated, &*signer).await.unwrap();
    let order = new_order("keel-42-000020", Side::Buy, OrderType::Market, dec("0.100"));
    router.place(&btc(), &order, &*signer).await.unwrap();
    let balances = router.balances(&*signer).await.unwrap();
    let usdt = balances.iter().find(|b| b.asset == "USDT").unwrap();
    // 5000 notional at 10x holds 500 as margin.
    assert_eq!((usdt.free, usdt.locked), (dec("9500"), dec("500")));
}

#[tokio::test]
async fn a_429_holds_every_request_back_for_its_retry_after() {
    let (fake, router, signer) = start().await;
    router.sync_clock().await.unwrap();
    fake.rate_limit_next(429, 30);
    let order = new_order("keel-42-000030", Side::Buy, OrderType::Market, dec("0.010"));
    let first = router.place(&btc(), &order, &*signer).await.unwrap_err();
    assert_eq!(first.kind, RouteErrorKind::Rejected, "{}", first.message);
    let requests = fake.requests();
    let second = router.place(&btc(), &order, &*signer).await.unwrap_err();
    assert_eq!(second.kind, RouteErrorKind::NotSent, "{}", second.message);
    assert_eq!(fake.requests(), requests, "nothing sent during the back-off");
    assert_eq!(fake.creates(), 0);
}

#[tokio::test]
async fn the_order_budget_is_futures_300_per_10_seconds_not_spots_100() {
    let (fake, router, signer) = start().await;
    fake.set_price(dec("50000"));
    // Past spot's 95: futures still sends.
    fake.set_order_count_10s(120);
    for n in 0..2 {
        let order =
            new_order(&format!("keel-42-00020{n}"), Side::Buy, OrderType::Market, dec("0.001"));
        router.place(&btc(), &order, &*signer).await.unwrap();
    }
    // At 295 of 300, the next order is held back and not sent.
    fake.set_order_count_10s(294);
    let order = new_order("keel-42-000210", Side::Buy, OrderType::Market, dec("0.001"));
    router.place(&btc(), &order, &*signer).await.unwrap();
    let creates = fake.creates();
    let order = new_order("keel-42-000211", Side::Buy, OrderType::Market, dec("0.001"));
    let err = router.place(&btc(), &order, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::NotSent, "{}", err.message);
    assert_eq!(fake.creates(), creates);
}

mod stream {
    use std::time::Duration;

    use keel_venues::account::{AccountEvent, AccountStream, OwnedSigner};
    use keel_venues::binance_futures::user_stream::FuturesStreamConfig;

    use super::*;

    async fn open(fake: &FakeFutures, keepalive: Duration) -> (FuturesRouter, AccountStream) {
        let rest = RestClient::new(&keel_venues::binance_futures::DIALECT, &fake.url()).unwrap();
        let mut config = FuturesStreamConfig::new(fake.ws_url());
        config.keepalive_every = keepalive;
        config.connection.backoff_base = Duration::from_millis(10);
        config.connection.backoff_cap = Duration::from_millis(50);
        let router = FuturesRouter::new(Arc::new(rest)).with_stream(config);
        let owned: OwnedSigner = Arc::from(signer(fake_futures::API_KEY, fake_futures::SECRET_KEY));
        let stream = router.account_stream(owned).unwrap();
        (router, stream)
    }

    async fn next(stream: &mut AccountStream) -> AccountEvent {
        tokio::time::timeout(Duration::from_secs(5), stream.events.recv())
            .await
            .expect("an event in time")
            .expect("the stream is open")
    }

    #[tokio::test]
    async fn orders_positions_balances_and_funding_arrive_from_the_user_data_stream() {
        let fake = FakeFutures::start().await;
        fake.set_price(dec("50000"));
        let (router, mut stream) = open(&fake, Duration::from_secs(1800)).await;
        assert_eq!(next(&mut stream).await, AccountEvent::Connected);
        let signer = signer(fake_futures::API_KEY, fake_futures::SECRET_KEY);
        let order = new_order("keel-42-000100", Side::Sell, OrderType::Market, dec("0.010"));
        router.place(&btc(), &order, &*signer).await.unwrap();
        let AccountEvent::Order(placed) = next(&mut stream).await else { panic!("not an order") };
        assert_eq!((placed.report.status.as_str(), placed.trade_id), ("NEW", None));
        let AccountEvent::Order(traded) = next(&mut stream).await else { panic!("not an order") };
        assert_eq!(traded.report.client_order_id, "keel-42-000100");
        assert_eq!(
            (traded.report.status.as_str(), traded.report.executed_qty),
            ("FILLED", dec("0.010"))
        );
        assert_eq!(traded.report.cum_quote, dec("500"));
        assert!(traded.trade_id.is_some());
        assert_eq!(
            (traded.report.fills[0].fee, traded.report.fills[0].fee_asset.as_str()),
            (dec("0.2"), "USDT")
        );
        let AccountEvent::Position(short) = next(&mut stream).await else {
            panic!("not a position")
        };
        assert_eq!(
            (short.symbol.as_str(), short.qty, short.entry_price),
            ("BTCUSDT", dec("-0.010"), dec("50000"))
        );
        let AccountEvent::Balances(balances) = next(&mut stream).await else {
            panic!("not balances")
        };
        assert_eq!(balances[0].asset, "USDT");

        fake.charge_funding("BTCUSDT", dec("-0.05"), 777);
        let AccountEvent::Balances(_) = next(&mut stream).await else { panic!("not balances") };
        let AccountEvent::Funding(paid) = next(&mut stream).await else { panic!("not funding") };
        assert_eq!(
            (paid.symbol.as_str(), paid.amount, paid.id.as_str()),
            ("BTCUSDT", dec("-0.05"), "777")
        );
    }

    /// The leg's order updates from the stream, until `done` says enough, skipping positions
    /// and balances.
    async fn leg_updates(
        stream: &mut AccountStream,
        leg: &str,
        done: impl Fn(&keel_venues::account::OrderUpdate) -> bool,
    ) -> Vec<keel_venues::account::OrderUpdate> {
        let mut seen = Vec::new();
        loop {
            if let AccountEvent::Order(update) = next(stream).await
                && update.report.client_order_id == leg
            {
                let last = done(&update);
                seen.push(update);
                if last {
                    return seen;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_triggered_stop_arrives_as_its_legs_updates_with_the_market_orders_trade() {
        let fake = FakeFutures::start().await;
        fake.set_price(dec("100"));
        let (router, mut stream) = open(&fake, Duration::from_secs(1800)).await;
        assert_eq!(next(&mut stream).await, AccountEvent::Connected);
        let signer = signer(fake_futures::API_KEY, fake_futures::SECRET_KEY);
        let entry = new_order("keel-42-000017", Side::Buy, OrderType::Market, dec("0.5"));
        router.place(&btc(), &entry, &*signer).await.unwrap();
        let (tp, sl) = bracket(Side::Sell, "110", "95");
        router.place_list(&btc(), legs(&tp, &sl), &*signer).await.unwrap();
        let placed = leg_updates(&mut stream, "keel-42-000019", |_| true).await;
        assert_eq!(placed[0].report.status, "NEW");

        fake.set_price(dec("95"));
        let finished = |u: &keel_venues::account::OrderUpdate| {
            u.report.status == "FILLED" && u.trade_id.is_none()
        };
        let updates = leg_updates(&mut stream, "keel-42-000019", finished).await;
        // ALGO_UPDATE TRIGGERED, the market order's NEW and TRADE (renamed to the leg, with its
        // trade and commission), ALGO_UPDATE FINISHED.
        let traded: Vec<_> = updates.iter().filter(|u| u.trade_id.is_some()).collect();
        assert_eq!(traded.len(), 1, "{updates:?}");
        assert_eq!(traded[0].report.fills[0].fee, dec("0.019"));
        assert_eq!(traded[0].report.executed_qty, dec("0.5"));
        let finished = updates.last().unwrap();
        assert_eq!(
            (finished.report.executed_qty, finished.report.cum_quote),
            (dec("0.5"), dec("47.5"))
        );
        assert_eq!(updates.len(), 4, "{updates:?}");
    }

    #[tokio::test]
    async fn an_expired_listen_key_reconnects_with_a_new_one_and_the_key_is_kept_alive() {
        let fake = FakeFutures::start().await;
        let (_router, mut stream) = open(&fake, Duration::from_millis(100)).await;
        assert_eq!(next(&mut stream).await, AccountEvent::Connected);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(fake.keepalives() >= 2, "{}", fake.keepalives());
        fake.expire_listen_key();
        let AccountEvent::Disconnected(why) = next(&mut stream).await else { panic!("not down") };
        assert!(why.contains("listenKeyExpired"), "{why}");
        assert_eq!(next(&mut stream).await, AccountEvent::Connected);
        assert_eq!((fake.listen_keys_made(), fake.stream_connections()), (2, 2));
    }
}

/// A bracket's two legs on `side` (the exit's side), as the engine makes them: the take-profit
/// order 18, the stop-loss 19, list `keel-42-000018-oco`.
fn bracket(side: Side, take_profit: &str, stop: &str) -> (Order, Order) {
    let list = Some("keel-42-000018-oco".to_owned());
    let mut tp = new_order("keel-42-000018", side, OrderType::limit(dec(take_profit)), dec("0.5"));
    tp.origin = OrderOrigin::TakeProfit;
    tp.venue_list.clone_from(&list);
    let stop = OrderType::Stop { stop_price: dec(stop) };
    let mut sl = new_order("keel-42-000019", side, stop, dec("0.5"));
    sl.origin = OrderOrigin::StopLoss;
    sl.venue_list = list;
    (tp, sl)
}

fn legs<'a>(tp: &'a Order, sl: &'a Order) -> OrderListLegs<'a> {
    OrderListLegs { list_client_order_id: "keel-42-000018-oco", take_profit: tp, stop_loss: sl }
}

/// The leg `id` of a list answer.
fn leg<'a>(reports: &'a [OrderReport], id: &str) -> &'a OrderReport {
    reports.iter().find(|r| r.client_order_id == id).unwrap()
}

#[tokio::test]
async fn a_bracket_rests_as_two_reduce_only_conditional_orders_and_its_stop_fills_at_the_venue() {
    // A long exits by selling: take-profit above, stop below; a short the other way round.
    for (entry, exit, take_profit, stop, through) in
        [(Side::Buy, Side::Sell, "110", "95", "94"), (Side::Sell, Side::Buy, "90", "105", "106")]
    {
        let (fake, router, signer) = start().await;
        fake.set_price(dec("100"));
        let open = new_order("keel-42-000017", entry, OrderType::Market, dec("0.5"));
        router.place(&btc(), &open, &*signer).await.unwrap();
        let (tp, sl) = bracket(exit, take_profit, stop);
        let placed = router.place_list(&btc(), legs(&tp, &sl), &*signer).await.unwrap();
        assert_eq!(leg(&placed, "keel-42-000018").status, "NEW");
        assert_eq!(leg(&placed, "keel-42-000019").status, "NEW");
        let posts: Vec<String> =
            fake.log().into_iter().filter(|l| l.starts_with("POST /fapi/v1/algoOrder")).collect();
        assert_eq!(posts.len(), 2, "{posts:?}");
        assert!(posts[0].contains("type=TAKE_PROFIT_MARKET"), "{}", posts[0]);
        assert!(posts[1].contains("type=STOP_MARKET"), "{}", posts[1]);
        for (post, id) in posts.iter().zip(["keel-42-000018", "keel-42-000019"]) {
            assert!(post.contains("reduceOnly=true") && post.contains("quantity=0.5"), "{post}");
            assert!(post.contains(&format!("clientAlgoId={id}")), "{post}");
        }
        assert_eq!(fake.algo("keel-42-000019").unwrap()["algoStatus"], "NEW");

        // The price goes through the stop with nobody watching: the venue closes the position.
        fake.set_price(dec(through));
        assert_eq!(fake.position("BTCUSDT"), Decimal::ZERO);
        let found = router.query_list(&btc(), "keel-42-000018-oco", &*signer).await.unwrap();
        let stop_leg = leg(&found, "keel-42-000019");
        assert_eq!((stop_leg.status.as_str(), stop_leg.executed_qty), ("FILLED", dec("0.5")));
        assert_eq!(stop_leg.cum_quote, dec("0.5") * dec(through));
        // Its trade, with the commission, from the market order it became.
        assert_eq!(stop_leg.fills.len(), 1);
        assert_eq!(stop_leg.fills[0].fee, (dec("0.5") * dec(through) * dec("0.0004")).normalize());
        assert_eq!(leg(&found, "keel-42-000018").status, "NEW");

        // Keel cancels the partner; a cancel once nothing is open is "not open".
        let canceled = router.cancel_list(&btc(), "keel-42-000018-oco", &*signer).await.unwrap();
        assert_eq!(leg(&canceled, "keel-42-000018").status, "CANCELED");
        assert_eq!(leg(&canceled, "keel-42-000019").status, "FILLED");
        let err = router.cancel_list(&btc(), "keel-42-000018-oco", &*signer).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::NotOpen);
        assert_eq!(fake.algo("keel-42-000018").unwrap()["algoStatus"], "CANCELED");
    }
}

#[tokio::test]
async fn a_stop_already_crossed_refuses_the_whole_bracket_and_leaves_nothing_behind() {
    let (fake, router, signer) = start().await;
    fake.set_price(dec("100"));
    let open = new_order("keel-42-000017", Side::Buy, OrderType::Market, dec("0.5"));
    router.place(&btc(), &open, &*signer).await.unwrap();
    // A long's stop above the market would trigger at once.
    let (tp, sl) = bracket(Side::Sell, "110", "101");
    let err = router.place_list(&btc(), legs(&tp, &sl), &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected);
    assert!(err.message.contains("-2021"), "{}", err.message);
    assert_eq!(fake.algo("keel-42-000018").unwrap()["algoStatus"], "CANCELED");
    assert!(fake.algo("keel-42-000019").is_none());
    // An exit on the side that would grow the position is the venue's reduce-only refusal.
    let (tp, sl) = bracket(Side::Buy, "90", "95");
    let err = router.place_list(&btc(), legs(&tp, &sl), &*signer).await.unwrap_err();
    assert!(err.message.contains("-2022"), "{}", err.message);
}

/// The conditional orders the fake was asked to create, by client id.
fn algo_posts(fake: &FakeFutures) -> Vec<String> {
    fake.log().into_iter().filter(|l| l.starts_with("POST /fapi/v1/algoOrder")).collect()
}

/// A router to `fake` with a short receive window, so a lost answer settles quickly, and a long
/// position of 0.5 to protect.
async fn opened_with_short_window(fake: &FakeFutures) -> FuturesRouter {
    let rest = RestClient::new(&keel_venues::binance_futures::DIALECT, &fake.url())
        .unwrap()
        .with_recv_window(300);
    let router = FuturesRouter::new(Arc::new(rest));
    fake.set_price(dec("100"));
    let open = new_order("keel-42-000017", Side::Buy, OrderType::Market, dec("0.5"));
    let signer = signer(fake_futures::API_KEY, fake_futures::SECRET_KEY);
    router.place(&btc(), &open, &*signer).await.unwrap();
    router
}

#[tokio::test]
async fn a_take_profit_whose_answer_is_lost_is_looked_up_and_the_stop_loss_still_goes_out() {
    // The take-profit arrives but its answer is lost (connection reset, 503): it is found by
    // its client id, never sent again, and the stop-loss follows, so the position keeps a stop.
    for fault in [FuturesFault::AcceptThenDrop, FuturesFault::AcceptThenServerError] {
        let (fake, _, signer) = start().await;
        let router = opened_with_short_window(&fake).await;
        let (tp, sl) = bracket(Side::Sell, "110", "95");
        fake.fail_next(1, fault);
        let placed = router.place_list(&btc(), legs(&tp, &sl), &*signer).await.unwrap();
        assert_eq!(leg(&placed, "keel-42-000018").status, "NEW", "{fault:?}");
        assert_eq!(leg(&placed, "keel-42-000019").status, "NEW", "{fault:?}");
        for id in ["keel-42-000018", "keel-42-000019"] {
            assert_eq!(fake.algo(id).unwrap()["algoStatus"], "NEW", "{fault:?}: {id}");
        }
        let posts = algo_posts(&fake);
        assert_eq!(posts.len(), 2, "{fault:?}: one create per leg: {posts:?}");
        assert!(posts[0].contains("clientAlgoId=keel-42-000018"), "{}", posts[0]);
        assert!(posts[1].contains("clientAlgoId=keel-42-000019"), "{}", posts[1]);
        let found = router.query_list(&btc(), "keel-42-000018-oco", &*signer).await.unwrap();
        assert!(found.iter().all(|r| r.status == "NEW"), "{fault:?}: {found:?}");
    }
}

#[tokio::test]
async fn a_take_profit_never_received_leaves_nothing_behind_and_the_list_is_refused() {
    let (fake, _, signer) = start().await;
    let router = opened_with_short_window(&fake).await;
    let (tp, sl) = bracket(Side::Sell, "110", "95");
    // Nothing received at all: looked for until the receive window has passed, then refused,
    // and the stop-loss is not sent on its own.
    fake.fail_next(1, FuturesFault::Drop);
    let started = std::time::Instant::now();
    let err = router.place_list(&btc(), legs(&tp, &sl), &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected, "{}", err.message);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(algo_posts(&fake).len(), 1);
    let lookups = fake.log().iter().filter(|l| l.starts_with("GET /fapi/v1/algoOrder")).count();
    assert!(lookups >= 2, "looked up now and after the window: {lookups}");
    assert!(fake.algo("keel-42-000018").is_none() && fake.algo("keel-42-000019").is_none());
    let err = router.query_list(&btc(), "keel-42-000018-oco", &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::NoSuchOrder);
}
