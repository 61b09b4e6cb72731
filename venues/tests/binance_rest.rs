//! Binance REST against a local fake exchange: instrument rules, clock offset, signed orders,
//! unknown outcomes after 5xx and silence, limit orders filled in part and canceled.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::time::{Duration, Instant};

use keel_core::market::Symbol;
use keel_core::trading::{Order, OrderType, Side};
use keel_testkit::fake_rest::{API_KEY, FakeRest, Fault, SECRET_KEY};
use keel_testkit::hmac_sha256_hex;
use keel_testkit::routing::{TestSigner, new_order, signer};
use keel_venues::binance::rest::{REST_TIMEOUT, RestClient, RestError, VenueOrder};
use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn signer_with(api_key: &str, secret: &str) -> TestSigner {
    signer(api_key, secret)
}

fn good_signer() -> TestSigner {
    signer(API_KEY, SECRET_KEY)
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

fn order(client_order_id: &str, side: Side, order_type: OrderType, qty: &str) -> Order {
    new_order(client_order_id, side, order_type, dec(qty))
}

fn market_buy(client_order_id: &str, qty: &str) -> Order {
    order(client_order_id, Side::Buy, OrderType::Market, qty)
}

async fn spot(fake: &FakeRest) -> RestClient {
    RestClient::new(&keel_venues::binance::SPOT, &fake.url()).unwrap()
}

async fn place(
    client: &RestClient,
    order: Order,
    signer: &TestSigner,
) -> Result<VenueOrder, RestError> {
    client.place(&btc(), &order, signer.as_ref()).await
}

async fn query(
    client: &RestClient,
    id: &str,
    signer: &TestSigner,
) -> Result<VenueOrder, RestError> {
    client.query(&btc(), id, signer.as_ref()).await
}

async fn cancel(
    client: &RestClient,
    id: &str,
    signer: &TestSigner,
) -> Result<VenueOrder, RestError> {
    client.cancel(&btc(), id, signer.as_ref()).await
}

fn api_code(result: &Result<VenueOrder, RestError>) -> Option<(u16, i64)> {
    match result {
        Err(RestError::Api { status, code, .. }) => Some((*status, *code)),
        _ => None,
    }
}

#[test]
fn the_fake_knows_binances_signing_example() {
    let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&\
                   recvWindow=5000&timestamp=1499827319559";
    assert_eq!(
        hmac_sha256_hex(SECRET_KEY.as_bytes(), payload.as_bytes()),
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    );
}

#[tokio::test]
async fn exchange_info_keeps_trading_symbols_with_their_filters() {
    let fake = FakeRest::start().await;
    let info = spot(&fake).await.exchange_info().await.unwrap();
    let btc_filters = &info[&btc()];
    assert_eq!(btc_filters.tick_size, dec("0.01"));
    assert_eq!(btc_filters.step_size, dec("0.00001"));
    assert_eq!(btc_filters.min_qty, dec("0.00001"));
    assert_eq!(btc_filters.max_qty, dec("9000"));
    assert_eq!(btc_filters.min_notional, dec("5"));
    assert!(info.contains_key(&Symbol::parse("ETHUSDT").unwrap()));
    assert!(!info.contains_key(&Symbol::parse("LUNAUSDT").unwrap()), "a BREAK symbol is kept");
    assert_eq!(info.len(), 2);

    // USD-M futures: its own path, and MIN_NOTIONAL's `notional` instead of NOTIONAL.
    let futures = RestClient::new(&keel_venues::binance_futures::DIALECT, &fake.url()).unwrap();
    let info = futures.exchange_info().await.unwrap();
    assert_eq!(info.len(), 2);
    assert_eq!(info[&btc()].min_notional, dec("5"));
    assert_eq!(info[&btc()].tick_size, dec("0.01"));
}

#[tokio::test]
async fn sync_time_measures_the_servers_clock() {
    let fake = FakeRest::start().await;
    fake.set_clock_skew_ms(-20_000);
    for client in [
        spot(&fake).await,
        RestClient::new(&keel_venues::binance_futures::DIALECT, &fake.url()).unwrap(),
    ] {
        let before = client.timestamp() as i64 - fake.server_time_ms();
        assert!((19_000..=21_000).contains(&before), "unsynced clock is {before} ms off");
        let offset = client.sync_time().await.unwrap();
        assert!((-21_000..=-19_000).contains(&offset), "measured offset {offset}");
        let after = client.timestamp() as i64 - fake.server_time_ms();
        assert!(after.abs() <= 1_000, "synced clock is still {after} ms off");
    }
}

#[tokio::test]
async fn a_signed_market_order_fills_and_is_found_by_query() {
    let fake = FakeRest::start().await;
    fake.set_price(dec("50000"));
    let client = spot(&fake).await;
    let signer = good_signer();

    let placed = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    let placed = placed.unwrap();
    assert_eq!(placed.client_order_id, "keel-42-000001");
    assert_eq!(placed.status, "FILLED");
    assert_eq!(placed.executed_qty, dec("0.1"));
    assert_eq!(placed.cummulative_quote_qty, dec("5000"));
    assert_eq!(placed.fills.len(), 1);
    let fill = &placed.fills[0];
    assert_eq!((fill.price, fill.qty), (dec("50000"), dec("0.1")));
    assert_eq!((fill.commission, fill.commission_asset.as_str()), (dec("5"), "USDT"));

    let stored = fake.order("keel-42-000001").unwrap();
    assert_eq!((stored["side"].as_str(), stored["type"].as_str()), (Some("BUY"), Some("MARKET")));
    assert_eq!(stored["origQty"], "0.10000000");

    let queried = query(&client, "keel-42-000001", &signer).await.unwrap();
    assert_eq!(queried.status, "FILLED");
    assert_eq!(queried.executed_qty, dec("0.1"));
    assert!(queried.fills.is_empty());
    assert_eq!(fake.posts(), 1);

    let wrong_secret = signer_with(API_KEY, "not-the-secret");
    let refused = place(&client, market_buy("keel-42-000002", "0.1"), &wrong_secret);
    let refused = refused.await;
    assert_eq!(api_code(&refused), Some((400, -1022)), "{refused:?}");
    assert!(!refused.unwrap_err().is_unknown_outcome());

    let wrong_key = signer_with("someone-elses-key", SECRET_KEY);
    let refused = place(&client, market_buy("keel-42-000003", "0.1"), &wrong_key);
    assert_eq!(api_code(&refused.await), Some((401, -2015)));
    assert_eq!(fake.posts(), 1, "a refused signature reached the book");
    assert!(fake.order("keel-42-000002").is_none());
}

#[tokio::test]
async fn a_stop_goes_out_as_a_market_order_for_what_remains() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let mut stop =
        order("keel-42-000009", Side::Sell, OrderType::Stop { stop_price: dec("90") }, "0.3");
    stop.filled_qty = dec("0.1");
    let placed = place(&client, stop, &good_signer()).await.unwrap();
    assert_eq!((placed.status.as_str(), placed.executed_qty), ("FILLED", dec("0.2")));
    let stored = fake.order("keel-42-000009").unwrap();
    assert_eq!(stored["type"], "MARKET");
    assert_eq!(stored["side"], "SELL");
    assert_eq!(stored["origQty"], "0.20000000");
}

/// A client whose clock is measured once and then left alone (the tests below move the
/// fake's clock after that measurement).
async fn measured_once(fake: &FakeRest) -> RestClient {
    let client = spot(fake).await.with_clock_refresh(Duration::from_secs(3600));
    client.sync_time().await.unwrap();
    client
}

#[tokio::test]
async fn a_skew_that_appears_later_is_refused_then_measured_and_sent_once_more() {
    let fake = FakeRest::start().await;
    let client = measured_once(&fake).await;
    let signer = good_signer();

    // The server jumps 20 s ahead: our timestamps are older than recvWindow. Binance refuses
    // before it looks at the order, so the client measures and sends once more.
    fake.set_clock_skew_ms(20_000);
    let placed = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    assert_eq!(placed.unwrap().status, "FILLED");
    assert_eq!(fake.clock_refusals(), 1, "the first attempt was refused");
    assert_eq!(fake.posts(), 1, "the refused attempt never reached the book");
    assert!((client.clock().offset_ms() - 20_000).abs() <= 1_000);

    // The server falls 20 s behind: our timestamps are now in its future.
    fake.set_clock_skew_ms(-20_000);
    let placed = place(&client, market_buy("keel-42-000002", "0.1"), &signer).await;
    assert_eq!(placed.unwrap().status, "FILLED");
    assert_eq!(fake.clock_refusals(), 2);
    assert_eq!(fake.posts(), 2);
    assert_eq!(fake.time_requests(), 3, "one measurement at start, one per refusal");
}

/// Right after a start (or a restart) no offset is known: the first signed call of any kind
/// measures the clock first, so it cannot fail for a skew Keel has not seen yet.
#[tokio::test]
async fn a_skewed_clock_at_start_is_learned_before_the_first_signed_call() {
    let fake = FakeRest::start().await;
    let signer = good_signer();
    for (skew, id) in [(20_000, "keel-42-000001"), (-20_000, "keel-42-000002")] {
        fake.set_clock_skew_ms(skew);
        let client = spot(&fake).await;
        assert!(client.clock().is_stale(), "no offset known at start");
        let placed = place(&client, market_buy(id, "0.1"), &signer).await;
        assert_eq!(placed.unwrap().status, "FILLED");
    }
    // A restarted Keel whose first call is a query or a cancel.
    let limit = order("keel-42-000003", Side::Buy, OrderType::limit(dec("95")), "0.1");
    place(&spot(&fake).await, limit, &signer).await.unwrap();
    fake.set_clock_skew_ms(30_000);
    let queried = query(&spot(&fake).await, "keel-42-000003", &signer).await.unwrap();
    assert_eq!(queried.status, "NEW");
    let canceled = cancel(&spot(&fake).await, "keel-42-000003", &signer).await.unwrap();
    assert_eq!(canceled.status, "CANCELED");
    assert_eq!(fake.clock_refusals(), 0, "no call was refused for its timestamp");
    assert_eq!(fake.time_requests(), 5, "each new client measured once, before its first call");
}

#[tokio::test]
async fn a_skew_that_appears_later_is_corrected_by_the_periodic_refresh() {
    let fake = FakeRest::start().await;
    let refresh = Duration::from_millis(300);
    let client = spot(&fake).await.with_clock_refresh(refresh);
    let signer = good_signer();
    place(&client, market_buy("keel-42-000001", "0.1"), &signer).await.unwrap();
    assert_eq!(fake.time_requests(), 1);
    // Within the interval the measurement is reused.
    query(&client, "keel-42-000001", &signer).await.unwrap();
    assert_eq!(fake.time_requests(), 1, "measured again within the refresh interval");

    fake.set_clock_skew_ms(20_000);
    tokio::time::sleep(refresh + Duration::from_millis(50)).await;
    assert!(client.clock().is_stale());
    let placed = place(&client, market_buy("keel-42-000002", "0.1"), &signer).await;
    assert_eq!(placed.unwrap().status, "FILLED");
    assert_eq!(fake.time_requests(), 2, "the stale offset was measured again before signing");
    assert_eq!(fake.clock_refusals(), 0, "the refresh came before any refusal");
}

#[tokio::test]
async fn a_1021_on_query_and_cancel_is_measured_for_and_retried_once() {
    let fake = FakeRest::start().await;
    let client = measured_once(&fake).await;
    let signer = good_signer();
    let limit = order("keel-42-000005", Side::Buy, OrderType::limit(dec("95")), "0.2");
    place(&client, limit, &signer).await.unwrap();
    let measured = fake.time_requests();

    fake.refuse_timestamps_next(1);
    let queried = query(&client, "keel-42-000005", &signer).await.unwrap();
    assert_eq!(queried.status, "NEW");
    assert_eq!((fake.clock_refusals(), fake.time_requests()), (1, measured + 1));

    fake.refuse_timestamps_next(1);
    let canceled = cancel(&client, "keel-42-000005", &signer).await.unwrap();
    assert_eq!(canceled.status, "CANCELED");
    assert_eq!((fake.clock_refusals(), fake.time_requests()), (2, measured + 2));
}

#[tokio::test]
async fn a_second_1021_is_reported_not_looped() {
    let fake = FakeRest::start().await;
    let client = measured_once(&fake).await;
    let signer = good_signer();
    let limit = order("keel-42-000007", Side::Buy, OrderType::limit(dec("95")), "0.2");
    place(&client, limit, &signer).await.unwrap();

    fake.refuse_timestamps_next(10);
    let queried = query(&client, "keel-42-000007", &signer).await;
    assert!(queried.as_ref().is_err_and(RestError::is_clock_skew), "{queried:?}");
    assert_eq!(fake.clock_refusals(), 2, "sent twice, not more");
    let canceled = cancel(&client, "keel-42-000007", &signer).await;
    assert!(canceled.as_ref().is_err_and(RestError::is_clock_skew), "{canceled:?}");
    assert_eq!(fake.clock_refusals(), 4);
    let placed = place(&client, market_buy("keel-42-000008", "0.1"), &signer).await;
    let refused = placed.unwrap_err();
    assert!(refused.is_clock_skew() && !refused.is_unknown_outcome(), "{refused:?}");
    assert_eq!(fake.clock_refusals(), 6);
    assert_eq!(fake.posts(), 1, "no refused placement reached the book");
    assert!(fake.order("keel-42-000008").is_none());

    fake.refuse_timestamps_next(0);
    let open = query(&client, "keel-42-000007", &signer).await.unwrap();
    assert_eq!(open.status, "NEW", "the refused cancel did nothing");
}

/// Only `-1021` is retried: a placement whose outcome is unknown is never sent again.
#[tokio::test]
async fn an_unknown_outcome_is_not_retried_by_the_clock_rule() {
    let fake = FakeRest::start().await;
    let client = measured_once(&fake).await;
    let signer = good_signer();
    fake.fail_next(1, Fault::AcceptThenServerError);
    let answer = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    assert!(answer.unwrap_err().is_unknown_outcome());
    assert_eq!((fake.posts(), fake.time_requests()), (1, 1));
}

#[tokio::test]
async fn the_configured_recv_window_is_what_is_sent() {
    let fake = FakeRest::start().await;
    let signer = good_signer();
    let wide = measured_once(&fake).await.with_recv_window(60_000);
    assert_eq!(wide.recv_window_ms(), 60_000);
    // `with_recv_window` after the measurement keeps it.
    assert!(!wide.clock().is_stale());
    let narrow = measured_once(&fake).await;
    assert_eq!(narrow.recv_window_ms(), 5_000, "Binance's default");
    let measured = fake.time_requests();

    // Our timestamps are now 30 s old by the server's clock: inside a 60 s window only.
    fake.set_clock_skew_ms(30_000);
    place(&wide, market_buy("keel-42-000001", "0.1"), &signer).await.unwrap();
    assert_eq!(fake.clock_refusals(), 0, "a 60000 ms recvWindow takes a 30 s old timestamp");
    assert_eq!(fake.time_requests(), measured);
    place(&narrow, market_buy("keel-42-000002", "0.1"), &signer).await.unwrap();
    assert_eq!(fake.clock_refusals(), 1, "a 5000 ms recvWindow does not");

    // Beyond Binance's maximum, the client keeps to it (Binance would answer -1131).
    let clamped = spot(&fake).await.with_recv_window(600_000);
    assert_eq!(clamped.recv_window_ms(), 60_000);
    place(&clamped, market_buy("keel-42-000003", "0.1"), &signer).await.unwrap();
}

#[tokio::test]
async fn a_503_leaves_the_outcome_unknown() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let signer = good_signer();
    fake.fail_next(1, Fault::ServerError);
    let answer = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    assert_eq!(api_code(&answer), Some((503, -1001)));
    assert!(answer.unwrap_err().is_unknown_outcome());
    // Here the venue dropped it: the query says so.
    let queried = query(&client, "keel-42-000001", &signer).await;
    assert!(queried.is_err_and(|e| e.is_no_such_order()));
    assert_eq!(fake.posts(), 1);
}

#[tokio::test]
async fn an_order_accepted_behind_a_503_is_found_by_query() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let signer = good_signer();
    fake.fail_next(1, Fault::AcceptThenServerError);
    let answer = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    assert!(answer.unwrap_err().is_unknown_outcome());
    let queried = query(&client, "keel-42-000001", &signer).await.unwrap();
    assert_eq!((queried.status.as_str(), queried.executed_qty), ("FILLED", dec("0.1")));
    assert_eq!(fake.posts(), 1, "the order was sent twice");

    // Sending it again blind would be refused by the client id, never filled twice.
    let again = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    assert_eq!(api_code(&again), Some((400, -2010)));
    assert!(!again.unwrap_err().is_unknown_outcome());
}

#[tokio::test]
async fn a_resting_limit_fills_in_part_and_is_canceled() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let signer = good_signer();
    let limit = order("keel-42-000005", Side::Buy, OrderType::limit(dec("95.50")), "0.2");

    let placed = place(&client, limit, &signer).await.unwrap();
    assert_eq!((placed.status.as_str(), placed.executed_qty), ("NEW", Decimal::ZERO));
    assert!(placed.fills.is_empty());
    let stored = fake.order("keel-42-000005").unwrap();
    assert_eq!(
        (stored["price"].as_str(), stored["timeInForce"].as_str()),
        (Some("95.50000000"), Some("GTC"))
    );

    assert!(fake.fill_limit("keel-42-000005", dec("0.05")));
    let queried = query(&client, "keel-42-000005", &signer).await.unwrap();
    assert_eq!(queried.status, "PARTIALLY_FILLED");
    assert_eq!(queried.executed_qty, dec("0.05"));
    assert_eq!(queried.cummulative_quote_qty, dec("4.775"));

    let canceled = cancel(&client, "keel-42-000005", &signer).await.unwrap();
    assert_eq!((canceled.status.as_str(), canceled.executed_qty), ("CANCELED", dec("0.05")));
    assert!(!fake.fill_limit("keel-42-000005", dec("0.05")), "a canceled order filled");

    let again = cancel(&client, "keel-42-000005", &signer).await;
    assert_eq!(api_code(&again), Some((400, -2011)));
    let queried = query(&client, "keel-42-000005", &signer).await.unwrap();
    assert_eq!(queried.status, "CANCELED");

    let unknown = query(&client, "keel-42-999999", &signer).await;
    assert!(unknown.as_ref().is_err_and(RestError::is_no_such_order), "{unknown:?}");
    let unknown = cancel(&client, "keel-42-999999", &signer).await;
    assert_eq!(api_code(&unknown), Some((400, -2011)));
}

#[tokio::test]
async fn a_limit_filled_in_full_cannot_be_canceled() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let signer = good_signer();
    let limit = order("keel-42-000006", Side::Sell, OrderType::limit(dec("101")), "0.1");
    place(&client, limit, &signer).await.unwrap();
    assert!(!fake.fill_limit("keel-42-000006", dec("0.2")), "filled more than ordered");
    assert!(fake.fill_limit("keel-42-000006", dec("0.1")));
    let queried = query(&client, "keel-42-000006", &signer).await.unwrap();
    assert_eq!((queried.status.as_str(), queried.cummulative_quote_qty), ("FILLED", dec("10.1")));
    let cancel = cancel(&client, "keel-42-000006", &signer).await;
    assert_eq!(api_code(&cancel), Some((400, -2011)));
}

#[tokio::test]
async fn an_order_never_answered_is_no_answer_within_the_timeout() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let signer = good_signer();
    fake.fail_next(1, Fault::Hang);
    let started = Instant::now();
    let answer = place(&client, market_buy("keel-42-000001", "0.1"), &signer).await;
    let took = started.elapsed();
    assert!(matches!(answer, Err(RestError::NoAnswer(_))), "{answer:?}");
    assert!(answer.unwrap_err().is_unknown_outcome());
    assert!(took >= REST_TIMEOUT - Duration::from_millis(100), "gave up after {took:?}");
    assert!(took < REST_TIMEOUT + Duration::from_secs(2), "waited {took:?}");
    assert_eq!(fake.posts(), 1);
    // The fake lost this one; the client still answers the next call.
    let queried = query(&client, "keel-42-000001", &signer).await;
    assert!(queried.is_err_and(|e| e.is_no_such_order()));
}

/// Sends raw bytes and returns the status line and body of the answer.
async fn raw(fake: &FakeRest, request: &[u8]) -> (String, String) {
    let addr = fake.url().trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The fake may answer (and close) before reading everything; a failed write is fine.
    let _ = tcp.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_fake_answers_malformed_requests_with_json() {
    let fake = FakeRest::start().await;
    let cases: [(&[u8], &str); 5] = [
        (b"garbage\r\n\r\n", "400"),
        (b"GET /api/v3/order?symbol=%ZZ HTTP/1.1\r\nX-MBX-APIKEY: x\r\n\r\n", "400"),
        (b"GET /api/v3/order?a=1&a=2 HTTP/1.1\r\n\r\n", "400"),
        (b"GET /nowhere HTTP/1.1\r\n\r\n", "404"),
        (b"POST /api/v3/order HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", "413"),
    ];
    for (request, status) in cases {
        let (status_line, body) = raw(&fake, request).await;
        assert!(
            status_line.contains(status),
            "{status_line} for {:?}",
            String::from_utf8_lossy(request)
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(body["code"].as_i64().is_some() && body["msg"].is_string(), "{body}");
    }
    let huge = vec![b'a'; 70 * 1024];
    let (status_line, _) = raw(&fake, &huge).await;
    assert!(status_line.contains("413"), "{status_line}");
    // Unsigned: no key.
    let (status_line, body) =
        raw(&fake, b"GET /api/v3/order?symbol=BTCUSDT HTTP/1.1\r\n\r\n").await;
    assert!(status_line.contains("401") && body.contains("-2015"), "{status_line} {body}");

    // Still serving, with a weight header that only grows.
    let client = spot(&fake).await;
    let weight = fake.used_weight();
    client.sync_time().await.unwrap();
    assert!(fake.used_weight() > weight);
    let (status_line, body) = raw(&fake, b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(status_line.ends_with("200 OK") && body.contains("serverTime"), "{status_line}");
}

#[tokio::test]
async fn requests_slow_down_near_the_weight_budget() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    fake.set_used_weight(6_000);
    client.sync_time().await.unwrap(); // learns the weight from X-MBX-USED-WEIGHT-1M
    let started = Instant::now();
    client.sync_time().await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "did not slow down: {took:?}");
}

/// Near the weight budget the client waits before sending; that wait must not be counted as
/// network time in the offset.
#[tokio::test]
async fn sync_time_is_not_biased_by_the_weight_slowdown() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    fake.set_used_weight(6_000);
    client.sync_time().await.unwrap();
    let offset = client.sync_time().await.unwrap();
    assert!(offset.abs() <= 60, "offset {offset} ms against a server with no skew");
}

/// An account that has placed nearly Binance's 100 orders in 10 s gets no new one from Keel until
/// the window passes (Binance would refuse it and count it against the account).
#[tokio::test]
async fn an_account_near_its_order_budget_is_held_back() {
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    fake.set_order_count_10s(99);
    let signer = good_signer();
    place(&client, market_buy("keel-1-000001", "0.1"), &signer).await.unwrap();
    let held = place(&client, market_buy("keel-1-000002", "0.1"), &signer).await.unwrap_err();
    match held {
        RestError::Backoff(ms) => assert!(ms <= 10_000, "{ms}"),
        other => panic!("expected a back-off, got {other:?}"),
    }
    assert!(!held.is_unknown_outcome(), "held back means not sent");
    assert_eq!(fake.posts(), 1, "the second order never left");
}

/// The account's balances are a signed call like any other: measured for at start, and a
/// `-1021` is measured for and retried once.
#[tokio::test]
async fn balances_follow_the_clock_rules_too() {
    let fake = FakeRest::start().await;
    let signer = good_signer();
    fake.set_clock_skew_ms(-20_000);
    let client = spot(&fake).await;
    let balances = client.balances(signer.as_ref()).await.unwrap();
    assert_eq!(balances.len(), 2);
    assert_eq!((balances[0].asset.as_str(), balances[0].free), ("USDT", dec("10000")));
    assert_eq!((fake.clock_refusals(), fake.time_requests()), (0, 1));

    fake.refuse_timestamps_next(1);
    assert_eq!(client.balances(signer.as_ref()).await.unwrap().len(), 2);
    assert_eq!((fake.clock_refusals(), fake.time_requests()), (1, 2));
    fake.refuse_timestamps_next(2);
    let refused = client.balances(signer.as_ref()).await;
    assert!(refused.as_ref().is_err_and(RestError::is_clock_skew), "{refused:?}");
    assert_eq!(fake.clock_refusals(), 3);
}

/// Each order type goes out as Binance's own: time in force, `LIMIT_MAKER`, `STOP_LOSS_LIMIT`
/// with its stop, `STOP_LOSS` with `trailingDelta`; a post-only limit that would take is refused
/// (nothing happened), and a stop-limit rests at the venue, where it outlives Keel.
#[tokio::test]
async fn order_types_are_sent_as_binances_own() {
    use keel_core::trading::TimeInForce;
    let fake = FakeRest::start().await;
    let client = spot(&fake).await;
    let signer = good_signer();
    let limit = |price: &str, time_in_force| OrderType::Limit { price: dec(price), time_in_force };

    let ioc = order("keel-42-000011", Side::Buy, limit("95", TimeInForce::Ioc), "0.1");
    let placed = place(&client, ioc, &signer).await.unwrap();
    assert_eq!(placed.status, "EXPIRED");
    assert_eq!(fake.order("keel-42-000011").unwrap()["timeInForce"], "IOC");
    let fok = order("keel-42-000012", Side::Buy, limit("95", TimeInForce::Fok), "0.1");
    place(&client, fok, &signer).await.unwrap();
    assert_eq!(fake.order("keel-42-000012").unwrap()["timeInForce"], "FOK");

    let maker = order("keel-42-000013", Side::Buy, limit("95", TimeInForce::PostOnly), "0.1");
    assert_eq!(place(&client, maker, &signer).await.unwrap().status, "NEW");
    assert_eq!(fake.order("keel-42-000013").unwrap()["type"], "LIMIT_MAKER");
    let taker = order("keel-42-000014", Side::Buy, limit("101", TimeInForce::PostOnly), "0.1");
    let refused = place(&client, taker, &signer).await;
    assert_eq!(api_code(&refused), Some((400, -2010)));
    assert!(!refused.unwrap_err().is_unknown_outcome(), "a refusal, nothing to query");

    let stop_limit = OrderType::StopLimit { stop_price: dec("90"), price: dec("89.5") };
    let sl = order("keel-42-000015", Side::Sell, stop_limit, "0.1");
    assert_eq!(place(&client, sl, &signer).await.unwrap().status, "NEW");
    let stored = fake.order("keel-42-000015").unwrap();
    assert_eq!(
        (stored["type"].as_str(), stored["stopPrice"].as_str(), stored["price"].as_str()),
        (Some("STOP_LOSS_LIMIT"), Some("90.00000000"), Some("89.50000000"))
    );

    let trailing = OrderType::TrailingStop { trailing_bps: 150 };
    let ts = order("keel-42-000016", Side::Sell, trailing, "0.1");
    assert_eq!(place(&client, ts, &signer).await.unwrap().status, "NEW");
    assert_eq!(fake.order("keel-42-000016").unwrap()["type"], "STOP_LOSS");
    // Triggered at the venue, it fills at the market.
    fake.set_price(dec("97"));
    assert!(fake.fill_limit("keel-42-000016", dec("0.1")));
    let filled = query(&client, "keel-42-000016", &signer).await.unwrap();
    assert_eq!((filled.status.as_str(), filled.cummulative_quote_qty), ("FILLED", dec("9.7")));
}
