//! Venues and market endpoints on the simulated venue.

use keel_testkit::{assert_error, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::Value;

#[actix_web::test]
async fn the_sim_venue_serves_tickers_and_candles_on_demand() {
    let app = spawn_app_with(|s| s.venues.sim.trades_per_sec = 200).await;
    let user = app.register("quotes@example.com").await;
    let res = app.call(Method::GET, "/api/v1/markets/sim/btcusdt/ticker", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 200);
    let ticker: Value = res.json().await.unwrap();
    assert_eq!(ticker["venue"], "sim");
    assert_eq!(ticker["symbol"], "BTCUSDT");
    let price = ticker["last_trade"]["price"].as_str().expect("prices are decimal strings");
    assert!(price.parse::<f64>().unwrap() > 0.0, "{price}");
    let (bid, ask) = (&ticker["quote"]["bid"], &ticker["quote"]["ask"]);
    assert!(
        bid.as_str().unwrap().parse::<f64>().unwrap()
            < ask.as_str().unwrap().parse::<f64>().unwrap()
    );

    let res = app
        .call(
            Method::GET,
            "/api/v1/markets/sim/BTCUSDT/candles?interval=1m&limit=5",
            Some(&user.access),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let candles: Value = res.json().await.unwrap();
    assert_eq!(candles["interval"], "1m");
    let items = candles["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 5);
    assert!(items[0]["open"].is_string() && items[0]["volume"].is_string());

    let venues: Value =
        app.call(Method::GET, "/api/v1/venues", Some(&user.access)).await.json().await.unwrap();
    let sim = &venues["items"][0];
    assert_eq!(sim["venue"], "sim");
    assert_eq!(sim["state"], "connected");
    assert!(sim["last_message_age_ms"].as_u64().is_some(), "{sim}");
}

#[actix_web::test]
async fn unknown_venues_symbols_and_bad_queries_get_clear_errors() {
    let app = spawn_app().await;
    let user = app.register("markets@example.com").await;
    let get = |path: &'static str| app.call(Method::GET, path, Some(&user.access));
    assert_error(get("/api/v1/markets/kraken/BTCUSDT/ticker").await, 404, "VENUE_NOT_FOUND").await;
    assert_error(get("/api/v1/markets/binance/BTCUSDT/ticker").await, 404, "VENUE_NOT_FOUND").await;
    assert_error(get("/api/v1/markets/sim/DOGEUSDT/ticker").await, 404, "SYMBOL_NOT_FOUND").await;
    assert_error(get("/api/v1/markets/sim/BTC-USDT/ticker").await, 404, "SYMBOL_NOT_FOUND").await;
    let error = assert_error(
        get("/api/v1/markets/sim/BTCUSDT/candles?interval=2m").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "interval");
    let error = assert_error(
        get("/api/v1/markets/sim/BTCUSDT/candles?limit=0").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "limit");
    assert_error(
        get("/api/v1/markets/sim/BTCUSDT/candles?limit=-3").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
}

#[actix_web::test]
async fn a_market_without_data_answers_503_market_data_unavailable() {
    let app = spawn_app_with(|s| {
        s.venues.sim.trades_per_sec = 0;
        s.feed.first_data_wait_ms = 100;
    })
    .await;
    let user = app.register("silent@example.com").await;
    let res = app.call(Method::GET, "/api/v1/markets/sim/ETHUSDT/ticker", Some(&user.access)).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 503, "MARKET_DATA_UNAVAILABLE").await;
}

#[actix_web::test]
async fn a_binance_ticker_comes_from_the_exchange_stream_on_demand() {
    let fake = crate::fake_binance::FakeBinance::start().await;
    let rest = crate::fake_rest::FakeRest::start().await;
    let (url, rest_url) = (fake.url.clone(), rest.url());
    let app = spawn_app_with(move |s| {
        s.venues.binance.enabled = true;
        s.venues.binance.ws_url = url;
        s.venues.binance.rest_url = rest_url;
    })
    .await;
    let user = app.register("binance@example.com").await;
    // Symbols are checked against the exchange's list once it is loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let res =
            app.call(Method::GET, "/api/v1/markets/binance/NOPEUSDT/ticker", Some(&user.access));
        let res = res.await;
        if res.status().as_u16() == 404 {
            assert_error(res, 404, "SYMBOL_NOT_FOUND").await;
            break;
        }
        assert!(std::time::Instant::now() < deadline, "exchange info never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let client = app.client.clone();
    let request = client
        .get(format!("{}/api/v1/markets/binance/BTCUSDT/ticker", app.address))
        .bearer_auth(&user.access)
        .send();
    let pending = actix_web::rt::spawn(request);
    // The request subscribes on demand; the exchange then streams.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !fake.subscriptions().contains("btcusdt@trade") {
        assert!(std::time::Instant::now() < deadline, "the feed never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    fake.publish(
        "btcusdt@trade",
        r#"{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":42,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}"#,
    );
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let ticker: Value = res.json().await.unwrap();
    assert_eq!(ticker["venue"], "binance");
    assert_eq!(ticker["last_trade"]["price"], "98234.51000000");
    assert_eq!(ticker["last_trade"]["side"], "sell");
    let venues: Value =
        app.call(Method::GET, "/api/v1/venues", Some(&user.access)).await.json().await.unwrap();
    let binance = venues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["venue"] == "binance")
        .unwrap()
        .clone();
    assert_eq!(binance["state"], "connected", "{binance}");
}
