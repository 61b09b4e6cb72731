//! Binance spot OCO order lists through the order router, against the local fake exchange: a
//! bracket placed as one list under Keel's ids, looked up and canceled as a list, and every
//! fault at each step (5xx before or after the venue acted, a dropped connection, silence)
//! classified so the caller queries instead of sending anything twice.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;

use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderType, Side};
use keel_testkit::fake_rest::{API_KEY, FakeRest, Fault, SECRET_KEY};
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::binance::connector::BinanceRouter;
use keel_venues::binance::rest::RestClient;
use keel_venues::routing::{OrderListLegs, OrderReport, OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;

const LIST: &str = "keel-42-000018-oco";

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

fn legs() -> (Order, Order) {
    let tp = new_order("keel-42-000018", Side::Sell, OrderType::limit(dec("102.00")), dec("0.5"));
    let sl = new_order(
        "keel-42-000019",
        Side::Sell,
        OrderType::Stop { stop_price: dec("99.00") },
        dec("0.5"),
    );
    (tp, sl)
}

fn router(fake: &FakeRest) -> BinanceRouter {
    let rest = RestClient::new(&keel_venues::binance::SPOT, &fake.url()).unwrap();
    BinanceRouter::new(Arc::new(rest))
}

fn good_signer() -> TestSigner {
    signer(API_KEY, SECRET_KEY)
}

fn status_of<'a>(reports: &'a [OrderReport], id: &str) -> &'a str {
    reports.iter().find(|r| r.client_order_id == id).map_or("missing", |r| r.status.as_str())
}

#[tokio::test]
async fn a_bracket_is_one_list_whose_filled_leg_expires_the_other() {
    let fake = FakeRest::start().await;
    let router = router(&fake);
    let signer = good_signer();
    let (tp, sl) = legs();
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    let placed = router.place_list(&btc(), legs, signer.as_ref()).await.unwrap();
    assert_eq!(placed.len(), 2);
    assert_eq!(status_of(&placed, "keel-42-000018"), "NEW");
    assert_eq!(status_of(&placed, "keel-42-000019"), "NEW");
    assert_eq!(fake.order("keel-42-000018").unwrap()["type"], "LIMIT_MAKER");
    assert_eq!(fake.order("keel-42-000019").unwrap()["type"], "STOP_LOSS");
    assert_eq!(fake.order_list(LIST).unwrap()["listOrderStatus"], "EXECUTING");
    // The same list again (a caller that would resend blind) is refused by the venue.
    let again = router.place_list(&btc(), legs, signer.as_ref()).await.unwrap_err();
    assert_eq!(again.kind, RouteErrorKind::Rejected, "{again}");

    assert!(fake.fill_limit("keel-42-000018", dec("0.5")));
    let found = router.query_list(&btc(), LIST, signer.as_ref()).await.unwrap();
    assert_eq!(status_of(&found, "keel-42-000018"), "FILLED");
    assert_eq!(status_of(&found, "keel-42-000019"), "EXPIRED");
    let filled = found.iter().find(|r| r.client_order_id == "keel-42-000018").unwrap();
    assert_eq!(filled.fills.len(), 1, "the leg's trade carries its commission");
    assert_eq!(filled.executed_qty, dec("0.5"));
    let cancel = router.cancel_list(&btc(), LIST, signer.as_ref()).await.unwrap_err();
    assert_eq!(cancel.kind, RouteErrorKind::NotOpen, "{cancel}");
    assert_eq!(fake.list_posts(), 2);
}

#[tokio::test]
async fn a_list_on_the_wrong_side_of_the_market_is_refused_and_nothing_rests() {
    let fake = FakeRest::start().await;
    let signer = good_signer();
    let (mut tp, sl) = legs();
    tp.order_type = OrderType::limit(dec("98.00"));
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    let err = router(&fake).place_list(&btc(), legs, signer.as_ref()).await.unwrap_err();
    assert_eq!(err.kind, RouteErrorKind::Rejected, "{err}");
    assert!(err.message.contains("-2010"), "{err}");
    assert!(fake.order_list(LIST).is_none() && fake.order("keel-42-000018").is_none());
}

#[tokio::test]
async fn a_canceled_list_reports_both_legs_under_their_own_ids() {
    let fake = FakeRest::start().await;
    let router = router(&fake);
    let signer = good_signer();
    let (tp, sl) = legs();
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    router.place_list(&btc(), legs, signer.as_ref()).await.unwrap();
    let canceled = router.cancel_list(&btc(), LIST, signer.as_ref()).await.unwrap();
    assert_eq!(status_of(&canceled, "keel-42-000018"), "CANCELED");
    assert_eq!(status_of(&canceled, "keel-42-000019"), "CANCELED");
    assert_eq!(fake.order_list(LIST).unwrap()["listOrderStatus"], "ALL_DONE");
    let unknown = router.query_list(&btc(), "keel-42-000099-oco", signer.as_ref()).await;
    assert_eq!(unknown.unwrap_err().kind, RouteErrorKind::NoSuchOrder);
}

/// Each fault at each step: an answer that leaves the outcome open is `UnknownOutcome` (query,
/// never resend), and what the venue holds afterwards is what the fault says it did.
#[tokio::test]
async fn every_fault_at_place_cancel_and_query_of_a_list_is_an_unknown_outcome() {
    let faults = [
        (Fault::ServerError, false),
        (Fault::AcceptThenServerError, true),
        (Fault::Drop, false),
        (Fault::AcceptThenDrop, true),
    ];
    for (fault, acts) in faults {
        let fake = FakeRest::start().await;
        let router = router(&fake);
        let signer = good_signer();
        let (tp, sl) = legs();
        let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };

        fake.fail_lists_next(1, fault);
        let err = router.place_list(&btc(), legs, signer.as_ref()).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{fault:?}: {err}");
        assert_eq!(fake.order_list(LIST).is_some(), acts, "{fault:?}");
        assert_eq!(fake.list_posts(), 1, "{fault:?}");
        // The query that follows finds the truth by Keel's own ids.
        let found = router.query_list(&btc(), LIST, signer.as_ref()).await;
        match acts {
            true => assert_eq!(found.unwrap().len(), 2, "{fault:?}"),
            false => {
                assert_eq!(found.unwrap_err().kind, RouteErrorKind::NoSuchOrder, "{fault:?}");
                // Never received: placing it now is its first and only arrival.
                router.place_list(&btc(), legs, signer.as_ref()).await.unwrap();
            }
        }

        fake.fail_queries_next(1, fault);
        let err = router.query_list(&btc(), LIST, signer.as_ref()).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{fault:?}: {err}");

        fake.fail_list_cancels_next(1, fault);
        let err = router.cancel_list(&btc(), LIST, signer.as_ref()).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::UnknownOutcome, "{fault:?}: {err}");
        let status = fake.order_list(LIST).unwrap()["listOrderStatus"].clone();
        assert_eq!(status, if acts { "ALL_DONE" } else { "EXECUTING" }, "{fault:?}");
        // Asked again: canceled now, or not open any more (the lost answer had canceled it).
        let again = router.cancel_list(&btc(), LIST, signer.as_ref()).await;
        match acts {
            true => assert_eq!(again.unwrap_err().kind, RouteErrorKind::NotOpen, "{fault:?}"),
            false => assert_eq!(again.unwrap().len(), 2, "{fault:?}"),
        }
        let found = router.query_list(&btc(), LIST, signer.as_ref()).await.unwrap();
        assert!(found.iter().all(|r| r.status == "CANCELED"), "{fault:?}: {found:?}");
    }
}

#[tokio::test]
async fn a_silent_venue_is_an_unknown_outcome_after_the_timeout() {
    let fake = FakeRest::start().await;
    let router = router(&fake);
    let signer = good_signer();
    let (tp, sl) = legs();
    let legs = OrderListLegs { list_client_order_id: LIST, take_profit: &tp, stop_loss: &sl };
    fake.fail_lists_next(1, Fault::AcceptThenHang);
    fake.fail_list_cancels_next(1, Fault::Hang);
    let symbol = btc();
    let (placed, canceled) =
        tokio::join!(router.place_list(&symbol, legs, signer.as_ref()), async {
            // The cancel goes out once the list is at the venue.
            while fake.order_list(LIST).is_none() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            router.cancel_list(&symbol, LIST, signer.as_ref()).await
        });
    assert_eq!(placed.unwrap_err().kind, RouteErrorKind::UnknownOutcome);
    assert_eq!(canceled.unwrap_err().kind, RouteErrorKind::UnknownOutcome);
    let found = router.query_list(&btc(), LIST, signer.as_ref()).await.unwrap();
    assert!(found.iter().all(|r| r.status == "NEW"), "a hung cancel did nothing: {found:?}");
}
