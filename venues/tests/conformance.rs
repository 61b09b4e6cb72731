//! The router conformance suite: the same checks against every venue that takes live orders,
//! each through the seam (`OrderRouter`) against its loopback fake. A new venue adds a
//! [`Venue`] implementation for its fake and a line in [`venues`]; `docs/VENUES.md` lists what
//! the suite proves.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;

use futures_util::future::BoxFuture;
use keel_core::market::Symbol;
use keel_core::trading::{OrderType, Side};
use keel_testkit::fake_bybit::{self, BybitFault, FakeBybit};
use keel_testkit::fake_futures::{self, FakeFutures, FuturesFault};
use keel_testkit::fake_rest::{self, FakeRest, Fault};
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::routing::{OrderRouter, RouteErrorKind};
use rust_decimal::Decimal;

/// A venue's fake, as the suite drives it.
trait Venue: Send + Sync {
    fn name(&self) -> &'static str;
    fn router(&self) -> Arc<dyn OrderRouter>;
    fn signer(&self) -> TestSigner;
    /// Fills `qty` more of a resting order.
    fn fill(&self, client_order_id: &str, qty: Decimal) -> bool;
    /// The next request does its work, and its answer is lost (a 5xx or a dropped connection).
    fn lose_next_answer(&self, variant: usize);
    /// How many ways [`lose_next_answer`](Self::lose_next_answer) has.
    fn lost_answer_variants(&self) -> usize;
    fn set_clock_skew_ms(&self, skew_ms: i64);
    fn clock_refusals(&self) -> usize;
    fn time_requests(&self) -> usize;
    /// Order-creating requests the venue received.
    fn creates(&self) -> usize;
}

struct Binance(FakeRest);

impl Venue for Binance {
    fn name(&self) -> &'static str {
        "binance"
    }
    fn router(&self) -> Arc<dyn OrderRouter> {
        let rest =
            keel_venues::binance::rest::RestClient::new(&keel_venues::binance::SPOT, &self.0.url())
                .unwrap();
        Arc::new(keel_venues::binance::connector::BinanceRouter::new(Arc::new(rest)))
    }
    fn signer(&self) -> TestSigner {
        signer(fake_rest::API_KEY, fake_rest::SECRET_KEY)
    }
    fn fill(&self, client_order_id: &str, qty: Decimal) -> bool {
        self.0.fill_limit(client_order_id, qty)
    }
    fn lose_next_answer(&self, _variant: usize) {
        self.0.fail_next(1, Fault::AcceptThenServerError);
    }
    fn lost_answer_variants(&self) -> usize {
        1
    }
    fn set_clock_skew_ms(&self, skew_ms: i64) {
        self.0.set_clock_skew_ms(skew_ms);
    }
    fn clock_refusals(&self) -> usize {
        self.0.clock_refusals()
    }
    fn time_requests(&self) -> usize {
        self.0.time_requests()
    }
    fn creates(&self) -> usize {
        self.0.posts()
    }
}

/// Bybit on one of its categories (spot, linear): one fake, one wire format.
struct Bybit(FakeBybit, &'static keel_venues::bybit::Category);

impl Venue for Bybit {
    fn name(&self) -> &'static str {
        self.1.venue.as_str()
    }
    fn router(&self) -> Arc<dyn OrderRouter> {
        let rest = keel_venues::bybit::rest::RestClient::new(self.1, &self.0.url()).unwrap();
        Arc::new(keel_venues::bybit::connector::BybitRouter::new(Arc::new(rest)))
    }
    fn signer(&self) -> TestSigner {
        signer(fake_bybit::API_KEY, fake_bybit::API_SECRET)
    }
    fn fill(&self, client_order_id: &str, qty: Decimal) -> bool {
        self.0.fill(client_order_id, qty)
    }
    fn lose_next_answer(&self, variant: usize) {
        let fault = [BybitFault::BadGateway, BybitFault::Drop][variant];
        self.0.fail_next(1, fault);
    }
    fn lost_answer_variants(&self) -> usize {
        2
    }
    fn set_clock_skew_ms(&self, skew_ms: i64) {
        self.0.set_clock_skew_ms(skew_ms);
    }
    fn clock_refusals(&self) -> usize {
        self.0.clock_refusals()
    }
    fn time_requests(&self) -> usize {
        self.0.time_requests()
    }
    fn creates(&self) -> usize {
        self.0.creates()
    }
}

struct BinanceFutures(FakeFutures);

impl Venue for BinanceFutures {
    fn name(&self) -> &'static str {
        "binance_futures"
    }
    fn router(&self) -> Arc<dyn OrderRouter> {
        let rest = keel_venues::binance::rest::RestClient::new(
            &keel_venues::binance_futures::DIALECT,
            &self.0.url(),
        )
        .unwrap();
        Arc::new(keel_venues::binance_futures::router::FuturesRouter::new(Arc::new(rest)))
    }
    fn signer(&self) -> TestSigner {
        signer(fake_futures::API_KEY, fake_futures::SECRET_KEY)
    }
    fn fill(&self, client_order_id: &str, qty: Decimal) -> bool {
        self.0.fill(client_order_id, qty)
    }
    fn lose_next_answer(&self, variant: usize) {
        let fault = [FuturesFault::AcceptThenServerError, FuturesFault::AcceptThenDrop][variant];
        self.0.fail_next(1, fault);
    }
    fn lost_answer_variants(&self) -> usize {
        2
    }
    fn set_clock_skew_ms(&self, skew_ms: i64) {
        self.0.set_clock_skew_ms(skew_ms);
    }
    fn clock_refusals(&self) -> usize {
        self.0.clock_refusals()
    }
    fn time_requests(&self) -> usize {
        self.0.time_requests()
    }
    fn creates(&self) -> usize {
        self.0.creates()
    }
}

type Start = fn() -> BoxFuture<'static, Box<dyn Venue>>;

/// The price market orders fill at on every fake.
fn price() -> Decimal {
    Decimal::from(50_000)
}

/// Every venue with live orders, each on a fresh fake.
fn venues() -> Vec<Start> {
    vec![
        || {
            Box::pin(async {
                let fake = FakeRest::start().await;
                fake.set_price(price());
                Box::new(Binance(fake)) as Box<dyn Venue>
            })
        },
        || {
            Box::pin(async {
                let fake = FakeBybit::start().await;
                fake.set_price(price());
                Box::new(Bybit(fake, &keel_venues::bybit::SPOT)) as Box<dyn Venue>
            })
        },
        || {
            Box::pin(async {
                let fake = FakeBybit::start().await;
                fake.set_price(price());
                Box::new(Bybit(fake, &keel_venues::bybit_linear::LINEAR)) as Box<dyn Venue>
            })
        },
        || {
            Box::pin(async {
                let fake = FakeFutures::start().await;
                fake.set_price(price());
                Box::new(BinanceFutures(fake)) as Box<dyn Venue>
            })
        },
    ]
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

#[tokio::test]
async fn a_market_order_fills_and_reports_its_cumulative_figures() {
    for start in venues() {
        let venue = start().await;
        let (router, signer) = (venue.router(), venue.signer());
        let order = new_order("keel-42-100", Side::Buy, OrderType::Market, dec("0.010"));
        let report = router.place(&btc(), &order, &*signer).await.unwrap();
        assert_eq!(report.status, "FILLED", "{}", venue.name());
        assert_eq!(report.client_order_id, "keel-42-100", "{}", venue.name());
        assert_eq!(report.executed_qty, dec("0.010"), "{}", venue.name());
        assert_eq!(report.cum_quote, dec("0.010") * price(), "{}", venue.name());
        assert_eq!(venue.creates(), 1, "{}", venue.name());
    }
}

#[tokio::test]
async fn a_resting_order_fills_in_part_and_cancels_keeping_its_fills() {
    for start in venues() {
        let venue = start().await;
        let (router, signer) = (venue.router(), venue.signer());
        let limit = OrderType::limit(dec("50000"));
        let order = new_order("keel-42-101", Side::Buy, limit, dec("0.010"));
        let placed = router.place(&btc(), &order, &*signer).await.unwrap();
        assert_eq!(placed.status, "NEW", "{}", venue.name());
        assert!(venue.fill("keel-42-101", dec("0.004")), "{}", venue.name());
        let queried = router.query(&btc(), "keel-42-101", &*signer).await.unwrap();
        assert_eq!(
            (queried.status.as_str(), queried.executed_qty),
            ("PARTIALLY_FILLED", dec("0.004")),
            "{}",
            venue.name()
        );
        let canceled = router.cancel(&btc(), "keel-42-101", &*signer).await.unwrap();
        assert_eq!(canceled.status, "CANCELED", "{}", venue.name());
        assert_eq!(canceled.executed_qty, dec("0.004"), "{}", venue.name());
        let again = router.cancel(&btc(), "keel-42-101", &*signer).await.unwrap_err();
        assert_eq!(again.kind, RouteErrorKind::NotOpen, "{}: {}", venue.name(), again.message);
    }
}

#[tokio::test]
async fn an_order_never_sent_is_no_such_order() {
    for start in venues() {
        let venue = start().await;
        let (router, signer) = (venue.router(), venue.signer());
        let err = router.query(&btc(), "keel-42-404", &*signer).await.unwrap_err();
        assert_eq!(err.kind, RouteErrorKind::NoSuchOrder, "{}: {}", venue.name(), err.message);
    }
}

#[tokio::test]
async fn a_lost_answer_is_unknown_and_the_query_settles_it_with_one_order() {
    for start in venues() {
        let probe = start().await;
        for variant in 0..probe.lost_answer_variants() {
            let venue = start().await;
            let (router, signer) = (venue.router(), venue.signer());
            router.sync_clock().await.unwrap();
            venue.lose_next_answer(variant);
            let order = new_order("keel-42-102", Side::Buy, OrderType::Market, dec("0.020"));
            let err = router.place(&btc(), &order, &*signer).await.unwrap_err();
            let name = venue.name();
            assert_eq!(
                err.kind,
                RouteErrorKind::UnknownOutcome,
                "{name} {variant}: {}",
                err.message
            );
            let found = router.query(&btc(), "keel-42-102", &*signer).await.unwrap();
            assert_eq!(
                (found.status.as_str(), found.executed_qty),
                ("FILLED", dec("0.020")),
                "{name} {variant}"
            );
            assert_eq!(venue.creates(), 1, "{name} {variant}: one order at the venue");
        }
    }
}

#[tokio::test]
async fn a_skewed_server_clock_is_learned_before_the_first_signed_call() {
    for start in venues() {
        for skew in [-20_000, 20_000] {
            let venue = start().await;
            venue.set_clock_skew_ms(skew);
            let (router, signer) = (venue.router(), venue.signer());
            let order = new_order("keel-42-103", Side::Buy, OrderType::Market, dec("0.010"));
            router.place(&btc(), &order, &*signer).await.unwrap();
            router.query(&btc(), "keel-42-103", &*signer).await.unwrap();
            assert_eq!(venue.clock_refusals(), 0, "{} {skew}", venue.name());
            assert_eq!(venue.time_requests(), 1, "{} {skew}", venue.name());
        }
    }
}

#[tokio::test]
async fn a_clock_jump_is_measured_for_and_the_call_sent_once_more() {
    for start in venues() {
        let venue = start().await;
        let (router, signer) = (venue.router(), venue.signer());
        router.sync_clock().await.unwrap();
        venue.set_clock_skew_ms(30_000);
        let order = new_order("keel-42-104", Side::Buy, OrderType::Market, dec("0.010"));
        router.place(&btc(), &order, &*signer).await.unwrap();
        assert_eq!(venue.clock_refusals(), 1, "{}", venue.name());
        assert_eq!(venue.time_requests(), 2, "{}", venue.name());
        assert_eq!(venue.creates(), 1, "{}", venue.name());
    }
}
