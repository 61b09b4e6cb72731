//! The WebSocket API with a real client (tokio-tungstenite) against the running server: both ways
//! of authenticating, market and bot channels, forbidden channels, malformed input, limits, the
//! heartbeat, and slow clients being cut off.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use keel_testkit::{TestApp, quiet_bot, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_url(address: &str) -> String {
    format!("{}/api/v1/ws", address.replacen("http://", "ws://", 1))
}

/// Connects, with a bearer header when `token` is given.
pub(crate) async fn connect(app: &TestApp, token: Option<&str>) -> Result<Socket, WsError> {
    connect_to(&app.address, token).await
}

/// [`connect`] to the Keel at `address` (`http://host:port`), a process of its own or not.
pub(crate) async fn connect_to(address: &str, token: Option<&str>) -> Result<Socket, WsError> {
    let mut request = ws_url(address).into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(socket, _)| socket)
}

pub(crate) async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).await.unwrap();
}

/// What the server said next (a text frame as JSON, or how the connection ended).
#[derive(Debug)]
enum Heard {
    Json(Value),
    Closed(Option<u16>),
}

async fn next(socket: &mut Socket, within: Duration) -> Heard {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("nothing heard within {within:?}"),
            Ok(None) | Ok(Some(Err(_))) => return Heard::Closed(None),
            Ok(Some(Ok(Message::Text(text)))) => {
                return Heard::Json(serde_json::from_str(&text).unwrap());
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Heard::Closed(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Skips frames until one of `kind` (`"type"` field) arrives.
pub(crate) async fn expect_type(socket: &mut Socket, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(socket, left).await {
            Heard::Json(value) if value["type"] == kind => return value,
            Heard::Json(_) => {}
            Heard::Closed(code) => panic!("closed ({code:?}) while waiting for {kind}"),
        }
    }
}

/// Reads until the connection ends and returns the close code, if any.
pub(crate) async fn expect_closed(socket: &mut Socket, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "still open after {within:?}");
        if let Heard::Closed(code) = next(socket, left).await {
            return code;
        }
    }
}

fn quick(s: &mut keel::configuration::Settings) {
    s.ws.auth_timeout_ms = 300;
}

#[actix_web::test]
async fn a_header_authenticated_client_receives_market_events_with_a_sequence() {
    let app = spawn_app_with(quick).await;
    let user = app.register("ws-market@example.com").await;
    let mut socket = connect(&app, Some(&user.access)).await.unwrap();
    let hello = expect_type(&mut socket, "authenticated").await;
    assert_eq!(hello["user_id"], user.user_id);
    send(&mut socket, json!({"op": "subscribe", "channels": ["market:sim:btcusdt:trades"]})).await;
    let subscribed = expect_type(&mut socket, "subscribed").await;
    assert_eq!(subscribed["channels"], json!(["market:sim:BTCUSDT:trades"]));
    let first = expect_type(&mut socket, "event").await;
    let second = expect_type(&mut socket, "event").await;
    assert_eq!(first["channel"], "market:sim:BTCUSDT:trades");
    assert_eq!(first["data"]["kind"], "trade");
    assert_eq!(first["data"]["symbol"], "BTCUSDT");
    assert!(first["data"]["price"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{first}");
    assert_eq!(second["seq"].as_u64().unwrap(), first["seq"].as_u64().unwrap() + 1);

    send(&mut socket, json!({"op": "unsubscribe", "channels": ["market:sim:BTCUSDT:trades"]}))
        .await;
    expect_type(&mut socket, "unsubscribed").await;
    send(&mut socket, json!({"op": "ping"})).await;
    expect_type(&mut socket, "pong").await;
}

/// The next frame, which must be an event on `channel`; returns its `seq`.
async fn event_seq(socket: &mut Socket, channel: &str) -> u64 {
    let event = expect_type(socket, "event").await;
    assert_eq!(event["channel"], channel, "{event}");
    event["seq"].as_u64().unwrap()
}

#[actix_web::test]
async fn clients_sharing_a_stream_come_and_go_without_disturbing_each_other() {
    const TRADES: &str = "market:sim:BTCUSDT:trades";
    let app = spawn_app_with(quick).await;
    let user = app.register("ws-shared@example.com").await;
    let mut a = connect(&app, Some(&user.access)).await.unwrap();
    let mut b = connect(&app, Some(&user.access)).await.unwrap();
    for socket in [&mut a, &mut b] {
        expect_type(socket, "authenticated").await;
        send(socket, json!({"op": "subscribe", "channels": [TRADES]})).await;
        expect_type(socket, "subscribed").await;
        event_seq(socket, TRADES).await;
    }

    // A leaves: nothing more arrives for it after the answer, and B's sequence goes on unbroken.
    send(&mut a, json!({"op": "unsubscribe", "channels": [TRADES]})).await;
    expect_type(&mut a, "unsubscribed").await;
    send(&mut a, json!({"op": "ping"})).await;
    let after = match next(&mut a, Duration::from_secs(5)).await {
        Heard::Json(value) => value,
        Heard::Closed(code) => panic!("closed ({code:?})"),
    };
    assert_eq!(after["type"], "pong", "an event came after `unsubscribed`: {after}");
    let mut seq = event_seq(&mut b, TRADES).await;
    for _ in 0..3 {
        let next_seq = event_seq(&mut b, TRADES).await;
        assert_eq!(next_seq, seq + 1);
        seq = next_seq;
    }

    // Everyone leaves the stream, then comes back: it is delivered again, from seq 1 for a
    // channel subscribed anew.
    drop(a);
    send(&mut b, json!({"op": "unsubscribe", "channels": [TRADES]})).await;
    expect_type(&mut b, "unsubscribed").await;
    send(&mut b, json!({"op": "subscribe", "channels": [TRADES]})).await;
    expect_type(&mut b, "subscribed").await;
    assert_eq!(event_seq(&mut b, TRADES).await, 1);
    let mut c = connect(&app, Some(&user.access)).await.unwrap();
    expect_type(&mut c, "authenticated").await;
    send(&mut c, json!({"op": "subscribe", "channels": [TRADES]})).await;
    expect_type(&mut c, "subscribed").await;
    assert_eq!(event_seq(&mut c, TRADES).await, 1);
    assert_eq!(event_seq(&mut c, TRADES).await, 2);
}

#[actix_web::test]
async fn a_first_auth_message_works_and_without_one_the_connection_closes_with_4401() {
    let app = spawn_app_with(quick).await;
    let user = app.register("ws-auth@example.com").await;

    let mut socket = connect(&app, None).await.unwrap();
    send(&mut socket, json!({"op": "subscribe", "channels": ["account"]})).await;
    let error = expect_type(&mut socket, "error").await;
    assert_eq!(error["code"], "UNAUTHENTICATED");
    send(&mut socket, json!({"op": "auth", "token": user.access})).await;
    expect_type(&mut socket, "authenticated").await;
    send(&mut socket, json!({"op": "subscribe", "channels": ["account"]})).await;
    expect_type(&mut socket, "subscribed").await;

    // Silent past the deadline: 4401.
    let mut silent = connect(&app, None).await.unwrap();
    assert_eq!(expect_closed(&mut silent, Duration::from_secs(5)).await, Some(4401));
    // A forged token in the first message: 4401 at once.
    let mut forged = connect(&app, None).await.unwrap();
    send(&mut forged, json!({"op": "auth", "token": "eyJhbGciOiJIUzI1NiJ9.e30.forged"})).await;
    assert_eq!(expect_closed(&mut forged, Duration::from_secs(5)).await, Some(4401));
    // A bad bearer header is refused before the upgrade.
    match connect(&app, Some("garbage")).await {
        Err(WsError::Http(res)) => assert_eq!(res.status().as_u16(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
}

#[actix_web::test]
async fn bot_channels_are_for_their_owner_and_carry_the_journal_sequence() {
    let app = spawn_app_with(quick).await;
    let alice = app.register("ws-alice@example.com").await;
    let mallory = app.register("ws-mallory@example.com").await;
    let bot = app.create_bot(&alice.access, &quiet_bot()).await["id"].as_u64().unwrap();
    assert_eq!(app.control(&alice.access, bot, "start").await.status().as_u16(), 200);

    // Someone else's bot and a bot that does not exist get the same answer.
    let mut intruder = connect(&app, Some(&mallory.access)).await.unwrap();
    for id in [bot, 999_999] {
        send(&mut intruder, json!({"op": "subscribe", "channels": [format!("bot:{id}")]})).await;
        let error = expect_type(&mut intruder, "error").await;
        assert_eq!(error["code"], "FORBIDDEN_CHANNEL");
        assert_eq!(error["message"], format!("bot:{id} is not a bot of yours"));
    }

    let mut socket = connect(&app, Some(&alice.access)).await.unwrap();
    let channels = [format!("bot:{bot}"), "account".to_owned()];
    send(&mut socket, json!({"op": "subscribe", "channels": channels})).await;
    expect_type(&mut socket, "subscribed").await;
    let orders = format!("/api/v1/bots/{bot}/orders");
    let buy = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.send(Method::POST, &orders, Some(&buy), &alice.access).await.status() != 200 {
        assert!(Instant::now() < deadline, "no market order filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bot_events = Vec::new();
    let mut account_events = 0;
    while !bot_events.iter().any(|e: &Value| e["data"]["kind"] == "fill") {
        let event = expect_type(&mut socket, "event").await;
        if event["channel"] == "account" {
            account_events += 1;
        } else {
            assert_eq!(event["channel"], format!("bot:{bot}"));
            bot_events.push(event);
        }
    }
    let fill = bot_events.iter().find(|e| e["data"]["kind"] == "fill").unwrap();
    assert_eq!(fill["data"]["data"]["qty"], "0.001", "{fill}");
    // The bot channel's seq is the journal id, so a gap can be filled from REST.
    let journal =
        app.get_json(&format!("/api/v1/bots/{bot}/events?limit=100"), &alice.access).await;
    let ids: Vec<u64> =
        journal["items"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    for event in &bot_events {
        assert!(ids.contains(&event["seq"].as_u64().unwrap()), "{event} not in {ids:?}");
    }
    assert!(account_events >= 1, "the account channel sees the bot's events too");
}

#[actix_web::test]
async fn malformed_input_gets_errors_and_the_connection_stays_open() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.ws.max_subscriptions = 2;
    })
    .await;
    let user = app.register("ws-malformed@example.com").await;
    let mut socket = connect(&app, Some(&user.access)).await.unwrap();
    expect_type(&mut socket, "authenticated").await;
    let cases = [
        ("{not json", "BAD_MESSAGE"),
        ("[1,2,3]", "BAD_MESSAGE"),
        (r#"{"op":"subscribe","channels":"account"}"#, "BAD_MESSAGE"),
        (r#"{"op":"teleport"}"#, "UNKNOWN_OP"),
        (r#"{"op":"subscribe","channels":["market:sim:DOGEUSDT:trades"]}"#, "UNKNOWN_CHANNEL"),
        (r#"{"op":"subscribe","channels":["weather:today"]}"#, "UNKNOWN_CHANNEL"),
        (
            r#"{"op":"subscribe","channels":["account","market:sim:BTCUSDT:quotes","market:sim:ETHUSDT:quotes"]}"#,
            "TOO_MANY_SUBSCRIPTIONS",
        ),
    ];
    for (text, code) in cases {
        socket.send(Message::Text(text.into())).await.unwrap();
        let error = expect_type(&mut socket, "error").await;
        assert_eq!(error["code"], code, "{text}: {error}");
    }
    socket.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(expect_type(&mut socket, "error").await["code"], "BAD_MESSAGE");
    send(&mut socket, json!({"op": "ping"})).await;
    expect_type(&mut socket, "pong").await;

    // Over 64 KiB: closed with 1009.
    let huge = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    let _ = socket.send(Message::Text(huge.into())).await;
    assert_eq!(expect_closed(&mut socket, Duration::from_secs(5)).await, Some(1009));
}

#[actix_web::test]
async fn connections_past_the_per_user_limit_are_refused_with_429() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.ws.max_per_user = 1;
    })
    .await;
    let user = app.register("ws-limit@example.com").await;
    let mut first = connect(&app, Some(&user.access)).await.unwrap();
    expect_type(&mut first, "authenticated").await;
    match connect(&app, Some(&user.access)).await {
        Err(WsError::Http(res)) => assert_eq!(res.status().as_u16(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // Authenticating by message past the limit closes with 4429.
    let mut second = connect(&app, None).await.unwrap();
    send(&mut second, json!({"op": "auth", "token": user.access})).await;
    assert_eq!(expect_closed(&mut second, Duration::from_secs(5)).await, Some(4429));
    // Once the first leaves, there is room again.
    first.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect(&app, Some(&user.access)).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("no room after the first connection closed: {err}"),
        }
    }
}

#[actix_web::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.ws.ping_secs = 1;
        s.ws.pong_timeout_secs = 2;
    })
    .await;
    let user = app.register("ws-heartbeat@example.com").await;
    let mut socket = connect(&app, Some(&user.access)).await.unwrap();
    // Not reading means not answering pings (tungstenite answers them as it reads).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let started = Instant::now();
    assert_eq!(expect_closed(&mut socket, Duration::from_secs(5)).await, Some(1001));
    assert!(started.elapsed() < Duration::from_secs(2), "it was closed while we slept");
}

/// A server that cuts a client off quickly: an 8-frame queue, 1 s behind at most, and trades
/// pouring in to fill it.
fn cuts_off_quickly(s: &mut keel::configuration::Settings) {
    quick(s);
    s.ws.outbound_queue = 8;
    s.ws.max_lag_secs = 1;
    s.venues.sim.trades_per_sec = 20_000;
}

/// A client with a tiny receive buffer, so the server's writes block soon after it stops reading.
async fn small_window_client(app: &TestApp, token: &str) -> Socket {
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let addr = app.address.trim_start_matches("http://").parse().unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let mut request = ws_url(&app.address).into_client_request().unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (socket, _) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await.unwrap();
    socket
}

#[actix_web::test]
async fn a_client_that_stops_reading_loses_market_data_with_notice_and_is_cut_off_for_bot_events() {
    let app = spawn_app_with(cuts_off_quickly).await;
    let user = app.register("ws-slow@example.com").await;
    let bot = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    assert_eq!(app.control(&user.access, bot, "start").await.status().as_u16(), 200);

    let mut socket = small_window_client(&app, &user.access).await;
    let channels = ["market:sim:BTCUSDT:trades".to_owned(), format!("bot:{bot}")];
    send(&mut socket, json!({"op": "subscribe", "channels": channels})).await;
    // Stop reading while trades pour in, until the socket and the queue are full.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let orders = format!("/api/v1/bots/{bot}/orders");
    let buy = json!({"side": "buy", "qty": "0.001", "type": "market"});
    // The order makes bot events the full queue cannot take. (On this busy single-worker test
    // server the request itself may time out; the lag limit cuts the client off either way.)
    let url = format!("{}{orders}", app.address);
    let _ = app.client.post(url).bearer_auth(&user.access).json(&buy).send().await;

    // Reading again: market data was dropped with notice, and the connection ends with 1013,
    // because the bot events found no room or the client stayed behind too long.
    let mut lagged = 0;
    let mut seen = 0;
    let mut bot_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "never cut off: {seen} frames, {bot_seen} bot events, {lagged} lagged"
        );
        match next(&mut socket, left).await {
            Heard::Json(value) if value["type"] == "lagged" => {
                lagged += value["dropped"].as_u64().unwrap();
            }
            Heard::Json(value) => {
                seen += 1;
                if value["channel"] != "market:sim:BTCUSDT:trades" {
                    bot_seen += 1;
                }
            }
            Heard::Closed(code) => break code,
        }
    };
    assert!(matches!(code, Some(1013) | None), "closed with {code:?}");
    // Notices go out whenever the queue has drained enough; a client that never catches up may
    // be cut off before any.
    let _ = lagged;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("keel_ws_dropped_total"), "drops are counted");
}

/// `keel_ws_disconnects_total{reason="slow_client"}` now (the registry is shared by every test in
/// this binary, so callers compare before and after).
async fn slow_client_disconnects(app: &TestApp) -> f64 {
    // On a loaded machine one scrape can stall past the client's timeout while the server is
    // busy filling the silent client's queue; the next one is answered.
    let url = format!("{}/metrics", app.address);
    let mut attempts = 0;
    let metrics = loop {
        attempts += 1;
        match app.client.get(&url).send().await {
            Ok(res) => break res.text().await.unwrap(),
            Err(err) if attempts < 3 && err.is_timeout() => continue,
            Err(err) => panic!("GET /metrics: {err}"),
        }
    };
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"keel_ws_disconnects_total{reason="slow_client"} "#))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[cfg(target_os = "linux")]
#[actix_web::test]
async fn a_client_cut_off_for_not_reading_also_loses_its_socket() {
    // Cut off for not reading, the client's close frame waits behind data it never reads; the
    // socket's user timeout is what frees the connection. It is longer than the time to be cut
    // off (the queue fills at once, then 1 s behind, checked every second), so the server cuts
    // the client off first.
    let app = spawn_app_with(|s| {
        cuts_off_quickly(s);
        s.server.socket_user_timeout_secs = 6;
    })
    .await;
    let user = app.register("ws-reaped@example.com").await;
    let cut_before = slow_client_disconnects(&app).await;
    let mut socket = small_window_client(&app, &user.access).await;
    send(&mut socket, json!({"op": "subscribe", "channels": ["market:sim:BTCUSDT:trades"]})).await;

    // Not reading: the queue fills, the server cuts the client off, and its window stays shut.
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow_client_disconnects(&app).await <= cut_before {
        assert!(Instant::now() < deadline, "the silent client was never cut off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Reading now: what had arrived, then a reset. Without the timeout the server would still be
    // holding the connection, and the 1013 close frame would arrive once the client read.
    assert_eq!(expect_closed(&mut socket, Duration::from_secs(30)).await, None);
}

#[actix_web::test]
async fn unauthenticated_connections_have_a_cap_of_their_own() {
    let app = spawn_app_with(|s| {
        s.ws.max_unauthenticated = 2;
        s.ws.auth_timeout_ms = 10_000;
    })
    .await;
    let user = app.register("ws-unauthenticated@example.com").await;
    let mut first = connect(&app, None).await.unwrap();
    let second = connect(&app, None).await.unwrap();
    match connect(&app, None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 429),
        other => panic!("a third unauthenticated connection was not refused: {other:?}"),
    }
    // Authenticated connections do not count against it.
    let mut with_header = connect(&app, Some(&user.access)).await.unwrap();
    expect_type(&mut with_header, "authenticated").await;
    // One authenticates: its place is free for another unauthenticated one.
    send(&mut first, json!({"op": "auth", "token": user.access})).await;
    expect_type(&mut first, "authenticated").await;
    let mut third = connect(&app, None).await.unwrap();
    // Gone without authenticating: its place is free too.
    drop(second);
    keel_testkit::eventually(Duration::from_secs(5), "the place comes back", || async {
        connect(&app, None).await.is_ok()
    })
    .await;
    send(&mut third, json!({"op": "ping"})).await;
    assert!(matches!(next(&mut third, Duration::from_secs(5)).await, Heard::Json(_)));
}

#[actix_web::test]
async fn the_authentication_deadline_is_at_most_ten_seconds() {
    let mut settings = keel_testkit::test_settings(std::path::Path::new("/tmp"));
    settings.ws.auth_timeout_ms = 10_001;
    assert!(settings.validate().is_err(), "an unauthenticated socket may wait 10 s at most");
}

/// Fills one market order of `bot`, retrying while the bot has no price yet.
pub(crate) async fn fill_one(app: &TestApp, token: &str, bot: u64) {
    let orders = format!("/api/v1/bots/{bot}/orders");
    let buy = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.send(Method::POST, &orders, Some(&buy), token).await.status() != 200 {
        assert!(Instant::now() < deadline, "no market order filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bot's journal ids, all of them.
pub(crate) async fn journal_ids(app: &TestApp, token: &str, bot: u64) -> Vec<u64> {
    let page = app.get_json(&format!("/api/v1/bots/{bot}/events?limit=500"), token).await;
    page["items"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

/// Reads events on `channel` until `seq` `upto` arrives; their seqs, in order.
pub(crate) async fn bot_seqs_until(socket: &mut Socket, channel: &str, upto: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last().is_none_or(|last| *last < upto) {
        let event = expect_type(socket, "event").await;
        if event["channel"] == channel && event["data"]["kind"] != "indicator" {
            assert_eq!(event["data"]["id"], event["seq"], "{event}");
            seqs.push(event["seq"].as_u64().unwrap());
        }
    }
    seqs
}

#[actix_web::test]
async fn a_subscription_with_since_resumes_the_bot_journal_with_no_gap_and_no_repeat() {
    let app = spawn_app_with(quick).await;
    let alice = app.register("ws-resume@example.com").await;
    let bot = app.create_bot(&alice.access, &quiet_bot()).await["id"].as_u64().unwrap();
    assert_eq!(app.control(&alice.access, bot, "start").await.status().as_u16(), 200);
    let channel = format!("bot:{bot}");

    // A first connection from the start of the journal (`since` 0: everything).
    let mut first = connect(&app, Some(&alice.access)).await.unwrap();
    send(&mut first, json!({"op": "subscribe", "channels": [&channel], "since": {&channel: 0}}))
        .await;
    expect_type(&mut first, "subscribed").await;
    fill_one(&app, &alice.access, bot).await;
    let ids = journal_ids(&app, &alice.access, bot).await;
    let seen = bot_seqs_until(&mut first, &channel, *ids.last().unwrap()).await;
    assert_eq!(seen, ids, "the whole journal, in order, once");
    let held = *seen.last().unwrap();
    drop(first);

    // Lines written while no one listens.
    fill_one(&app, &alice.access, bot).await;
    fill_one(&app, &alice.access, bot).await;
    let missed: Vec<u64> =
        journal_ids(&app, &alice.access, bot).await.into_iter().filter(|id| *id > held).collect();
    assert!(missed.len() >= 2, "{missed:?}");

    // Resumed: the missed lines, then live ones, one by one.
    let mut second = connect(&app, Some(&alice.access)).await.unwrap();
    let op = json!({"op": "subscribe", "channels": [&channel, "market:sim:BTCUSDT:trades"],
                    "since": {&channel: held}});
    send(&mut second, op).await;
    let subscribed = expect_type(&mut second, "subscribed").await;
    assert_eq!(subscribed["channels"], json!([&channel, "market:sim:BTCUSDT:trades"]));
    fill_one(&app, &alice.access, bot).await;
    let last = *journal_ids(&app, &alice.access, bot).await.last().unwrap();
    let resumed = bot_seqs_until(&mut second, &channel, last).await;
    let expected: Vec<u64> = (held + 1..=last).collect();
    assert_eq!(resumed, expected, "no gap, no repeat across the resume");
}

#[actix_web::test]
async fn a_resume_too_far_back_or_on_the_wrong_channel_is_refused_and_the_connection_stays() {
    // A queue of 8 frames brings back at most 4 lines.
    let app = spawn_app_with(|s| {
        quick(s);
        s.ws.outbound_queue = 8;
    })
    .await;
    let alice = app.register("ws-resume-far@example.com").await;
    let bot = app.create_bot(&alice.access, &quiet_bot()).await["id"].as_u64().unwrap();
    assert_eq!(app.control(&alice.access, bot, "start").await.status().as_u16(), 200);
    for _ in 0..3 {
        fill_one(&app, &alice.access, bot).await;
    }
    let ids = journal_ids(&app, &alice.access, bot).await;
    assert!(ids.len() > 4, "{ids:?}");
    let channel = format!("bot:{bot}");
    let mut socket = connect(&app, Some(&alice.access)).await.unwrap();
    expect_type(&mut socket, "authenticated").await;

    send(&mut socket, json!({"op": "subscribe", "channels": [&channel], "since": {&channel: 0}}))
        .await;
    let error = expect_type(&mut socket, "error").await;
    assert_eq!(error["code"], "RESUME_TOO_FAR", "{error}");
    let text = error["message"].as_str().unwrap();
    assert!(text.contains(&format!("/api/v1/bots/{bot}/events?after=0")), "{text}");

    for since in [json!({"market:sim:BTCUSDT:trades": 1}), json!({"bot:999": 1})] {
        let op = json!({"op": "subscribe", "channels": ["market:sim:BTCUSDT:trades"],
                        "since": since});
        send(&mut socket, op).await;
        assert_eq!(expect_type(&mut socket, "error").await["code"], "BAD_MESSAGE");
    }

    // Close enough: the last lines come back.
    let from = ids[ids.len() - 3];
    send(
        &mut socket,
        json!({"op": "subscribe", "channels": [&channel], "since": {&channel: from}}),
    )
    .await;
    expect_type(&mut socket, "subscribed").await;
    let seqs = bot_seqs_until(&mut socket, &channel, *ids.last().unwrap()).await;
    assert_eq!(seqs, ids[ids.len() - 2..].to_vec());
}

#[actix_web::test]
async fn graceful_shutdown_closes_every_connection_with_1001_before_the_drain_ends() {
    let app = spawn_app_with(quick).await;
    let user = app.register("ws-shutdown@example.com").await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(&app, Some(&user.access)).await.unwrap();
        send(&mut socket, json!({"op": "subscribe", "channels": ["market:sim:BTCUSDT:trades"]}))
            .await;
        expect_type(&mut socket, "subscribed").await;
        sockets.push(socket);
    }
    let began = Instant::now();
    app.stop.stop();
    for socket in &mut sockets {
        assert_eq!(expect_closed(socket, Duration::from_secs(5)).await, Some(1001));
    }
    // Well before the HTTP drain's deadline (server.shutdown_timeout_secs, 5 s), which would have
    // reset them.
    assert!(began.elapsed() < Duration::from_secs(4), "{:?}", began.elapsed());
}
