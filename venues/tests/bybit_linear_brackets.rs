//! Native brackets on Bybit USDT perpetuals through the seam, against the loopback fake: each
//! leg a reduce-only conditional order under its own client id, for a long and for a short;
//! a leg the price reaches fires at the venue with no Keel involved, and a look-up afterwards
//! (what a restart does) reports it filled with Bybit's fee and its partner still resting; a
//! refused stop-loss takes the take-profit back; a lost create is looked up, never resent.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;

use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderOrigin, OrderType, Side};
use keel_testkit::fake_bybit::{API_KEY, API_SECRET, BybitFault, FakeBybit};
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::bybit::SPOT;
use keel_venues::bybit::connector::BybitRouter;
use keel_venues::bybit::rest::RestClient;
use keel_venues::bybit_linear::LINEAR;
use keel_venues::routing::{OrderListLegs, OrderReport, OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;

const LIST: &str = "keel-42-000002-oco";
const TP: &str = "keel-42-000002";
const SL: &str = "keel-42-000003";

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

fn router(fake: &FakeBybit) -> BybitRouter {
    let rest = RestClient::new(&LINEAR, &fake.url()).unwrap().with_recv_window(300);
    BybitRouter::new(Arc::new(rest))
}

fn good_signer() -> TestSigner {
    signer(API_KEY, API_SECRET)
}

/// The bracket's legs exiting on `side`: a take-profit limit at `tp`, a stop-loss at `sl`.
fn legs(side: Side, tp: &str, sl: &str, qty: &str) -> (Order, Order) {
    let mut take_profit = new_order(TP, side, OrderType::limit(dec(tp)), dec(qty));
    take_profit.origin = OrderOrigin::TakeProfit;
    take_profit.venue_list = Some(LIST.into());
    let mut stop_loss = new_order(SL, side, OrderType::Stop { stop_price: dec(sl) }, dec(qty));
    stop_loss.origin = OrderOrigin::StopLoss;
    stop_loss.venue_list = Some(LIST.into());
    (take_profit, stop_loss)
}

/// A fake at 100 and a router to it, with a position opened by a market order on `side`
/// (`keel-42-000001`).
async fn opened(side: Side, qty: &str) -> (FakeBybit, BybitRouter) {
    let fake = FakeBybit::start().await;
    fake.set_price(dec("100"));
    let router = router(&fake);
    let entry = new_order("keel-42-000001", side, OrderType::Market, dec(qty));
    let report = router.place(&btc(), &entry, &*good_signer()).await.unwrap();
    assert_eq!(report.status, "FILLED");
    (fake, router)
}

fn leg<'a>(reports: &'a [OrderReport], id: &str) -> &'a OrderReport {
    reports.iter().find(|r| r.client_order_id == id).unwrap_or_else(|| panic!("{id}: {reports:?}"))
}

#[tokio::test]
async fn a_long_bracket_rests_as_two_conditional_orders_and_its_stop_fires_at_the_venue() {
    let (fake, router) = opened(Side::Buy, "0.2").await;
    let signer = good_signer();
    let (tp, sl) = legs(Side::Sell, "102", "99", "0.2");
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    let placed = router.place_list(&btc(), legs, &*signer).await.unwrap();
    assert_eq!(
        (leg(&placed, TP).status.as_str(), leg(&placed, SL).status.as_str()),
        ("NEW", "NEW")
    );

    // At the venue: conditional, reduce-only, the take-profit firing on a rise, the stop on a
    // fall, each under its own id.
    let venue_tp = fake.order(TP).unwrap();
    let venue_sl = fake.order(SL).unwrap();
    for (order, direction, kind) in [(&venue_tp, 1, "Limit"), (&venue_sl, 2, "Market")] {
        assert_eq!(order["orderStatus"], "Untriggered", "{order}");
        assert_eq!(order["stopOrderType"], "Stop", "{order}");
        assert_eq!(order["triggerDirection"], direction, "{order}");
        assert_eq!(order["orderType"], kind, "{order}");
        assert_eq!(order["reduceOnly"], true, "{order}");
    }
    assert_eq!(
        (venue_tp["triggerPrice"].as_str(), venue_tp["price"].as_str()),
        (Some("102"), Some("102"))
    );
    assert_eq!(
        (venue_sl["triggerPrice"].as_str(), venue_sl["closeOnTrigger"].as_bool()),
        (Some("99"), Some(true))
    );

    // The price falls through the stop with nobody watching: Bybit fires it.
    fake.set_price(dec("98.5"));
    assert_eq!(fake.position("BTCUSDT").0, Decimal::ZERO);
    let found = router.query_list(&btc(), LIST, &*signer).await.unwrap();
    let stop = leg(&found, SL);
    assert_eq!((stop.status.as_str(), stop.executed_qty), ("FILLED", dec("0.2")));
    // Its trade with the fee Bybit took: 0.2 × 98.5 × 0.055 %.
    assert_eq!(stop.fills.len(), 1, "{stop:?}");
    assert_eq!((stop.fills[0].price, stop.fills[0].fee), (dec("98.5"), dec("0.010835")));
    assert_eq!(stop.fills[0].fee_asset, "USDT");
    assert_eq!(leg(&found, TP).status, "NEW", "the partner still rests");

    // Keel then cancels the partner; the filled leg is reported as it ended.
    let canceled = router.cancel_list(&btc(), LIST, &*signer).await.unwrap();
    assert_eq!(leg(&canceled, TP).status, "EXPIRED", "Deactivated before it fired");
    assert_eq!(leg(&canceled, SL).status, "FILLED");
    assert_eq!(fake.order(TP).unwrap()["orderStatus"], "Deactivated");
    let again = router.cancel_list(&btc(), LIST, &*signer).await.unwrap_err();
    assert_eq!(again.kind, RouteErrorKind::NotOpen, "{}", again.message);
    assert_eq!(fake.creates(), 3);
}

#[tokio::test]
async fn a_short_bracket_fires_the_other_way_and_its_take_profit_fills_at_its_limit() {
    let (fake, router) = opened(Side::Sell, "0.3").await;
    let signer = good_signer();
    let (tp, sl) = legs(Side::Buy, "98", "101", "0.3");
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    router.place_list(&btc(), legs, &*signer).await.unwrap();
    assert_eq!(fake.order(TP).unwrap()["triggerDirection"], 2);
    assert_eq!(fake.order(SL).unwrap()["triggerDirection"], 1);

    // Not yet: the price has to reach a trigger.
    fake.set_price(dec("99"));
    assert_eq!(fake.order(TP).unwrap()["orderStatus"], "Untriggered");
    fake.set_price(dec("97.5"));
    assert_eq!(fake.position("BTCUSDT").0, Decimal::ZERO);
    let found = router.query_list(&btc(), LIST, &*signer).await.unwrap();
    let take = leg(&found, TP);
    assert_eq!(
        (take.status.as_str(), take.executed_qty, take.cum_quote),
        ("FILLED", dec("0.3"), dec("29.4"))
    );
    assert_eq!(leg(&found, SL).status, "NEW");

    // Were the stop to fire with the position already closed, reduce-only keeps it from
    // opening a long: Bybit cancels it.
    fake.set_price(dec("101.5"));
    assert_eq!(fake.order(SL).unwrap()["orderStatus"], "Cancelled");
    assert_eq!(fake.order(SL).unwrap()["cancelType"], "CancelByReduceOnly");
    assert_eq!(fake.position("BTCUSDT").0, Decimal::ZERO);
}

#[tokio::test]
async fn a_refused_stop_loss_takes_the_take_profit_back_and_the_list_is_refused_whole() {
    let (fake, router) = opened(Side::Buy, "0.2").await;
    let signer = good_signer();
    // A stop above the market for a long's exit would fire at once: Bybit refuses it.
    let (tp, sl) = legs(Side::Sell, "102", "100.5", "0.2");
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    let err = router.place_list(&btc(), legs, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected, "{}", err.message);
    assert!(err.message.contains("110093"), "{}", err.message);
    assert_eq!(fake.order(TP).unwrap()["orderStatus"], "Deactivated");
    assert!(fake.order(SL).is_none());

    // The same ids again are Bybit's duplicates; a list on spot is not Bybit's to hold.
    let err = router.place_list(&btc(), legs, &*signer).await.unwrap_err();
    assert!(err.message.contains("110072"), "{}", err.message);
    let spot = BybitRouter::new(Arc::new(RestClient::new(&SPOT, &fake.url()).unwrap()));
    let err = spot.place_list(&btc(), legs, &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected, "{}", err.message);
    let err = router.query_list(&btc(), "keel-42-000099-oco", &*signer).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::NoSuchOrder, "{}", err.message);
}

#[tokio::test]
async fn a_take_profit_whose_create_answer_is_lost_is_looked_up_and_the_stop_loss_follows() {
    // Bybit did the work and the take-profit's answer was lost: a dropped connection, a 502.
    for fault in [BybitFault::Drop, BybitFault::BadGateway] {
        let (fake, router) = opened(Side::Buy, "0.2").await;
        let signer = good_signer();
        let (tp, sl) = legs(Side::Sell, "102", "99", "0.2");
        let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
        fake.fail_next(1, fault);
        let placed = router.place_list(&btc(), legs, &*signer).await.unwrap();
        assert_eq!(placed.len(), 2, "{fault:?}: {placed:?}");
        assert!(placed.iter().all(|r| r.status == "NEW"), "{fault:?}: {placed:?}");
        assert_eq!(fake.creates(), 3, "{fault:?}: entry, take-profit and stop-loss once each");
        // Both legs rest at Bybit: the position is never left with the take-profit alone.
        for id in [TP, SL] {
            let order = fake.order(id).unwrap_or_else(|| panic!("{fault:?}: {id} not at bybit"));
            assert_eq!(order["orderStatus"], "Untriggered", "{fault:?}: {order}");
        }
        let found = router.query_list(&btc(), LIST, &*signer).await.unwrap();
        assert!(found.len() == 2 && found.iter().all(|r| r.status == "NEW"), "{found:?}");
    }
}
