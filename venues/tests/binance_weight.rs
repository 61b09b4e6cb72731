//! Binance's IP-wide limits through one shared REST client: a 418 ban (or a 429) with
//! `Retry-After` holds back every caller, whatever account it signs for, with nothing sent until
//! it has passed.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::time::Duration;

use keel_core::market::Symbol;
use keel_core::trading::{OrderType, Side};
use keel_testkit::fake_rest::{API_KEY, FakeRest, SECRET_KEY};
use keel_testkit::routing::{new_order, signer};
use keel_venues::binance::rest::{RestClient, RestError};

fn backoff_ms(err: RestError) -> u64 {
    match err {
        RestError::Backoff(ms) => ms,
        other => panic!("expected a back-off, got {other:?}"),
    }
}

#[tokio::test]
async fn a_418_ban_holds_back_every_account_on_the_ip_until_retry_after() {
    let fake = FakeRest::start().await;
    let client = RestClient::new(&keel_venues::binance::SPOT, &fake.url()).unwrap();
    client.sync_time().await.unwrap();
    let (one, other) = (signer(API_KEY, SECRET_KEY), signer("another-key", "another-secret"));
    let btc = Symbol::parse("BTCUSDT").unwrap();

    fake.rate_limit_next(418, 2);
    let banned = client.balances(one.as_ref()).await.unwrap_err();
    assert!(matches!(banned, RestError::Api { status: 418, code: -1003, .. }), "{banned:?}");
    let sent = fake.requests();
    let order = new_order("keel-9-000001", Side::Buy, OrderType::Market, "0.1".parse().unwrap());
    let held = client.place(&btc, &order, other.as_ref()).await.unwrap_err();
    assert!((1_000..=2_000).contains(&backoff_ms(held)));
    let held = client.query(&btc, "keel-9-000001", one.as_ref()).await.unwrap_err();
    assert!(held.to_string().contains("rate limited by binance"), "{held}");
    assert_eq!(fake.requests(), sent, "nothing is sent during the ban");

    tokio::time::sleep(Duration::from_millis(2_050)).await;
    client.balances(one.as_ref()).await.unwrap();
    assert_eq!(fake.requests(), sent + 1);
}
