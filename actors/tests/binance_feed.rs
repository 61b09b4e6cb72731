//! A Binance connection against a local fake exchange: reconnects, staleness, limits, garbage.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use keel_core::market::{EventKind, VenueId};
use keel_testkit::fake_binance::FakeBinance;
use keel_venues::binance::connector::BinanceMarket;
use keel_venues::binance::{SPOT, streams};
use keel_venues::connection::{self, Command, ConnectionConfig, Output};
use keel_venues::market::MarketConnector;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const TRADE: &str = r#"{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}"#;
const QUOTE: &str =
    r#"{"u":55123456789,"s":"ETHUSDT","b":"3500.10","B":"1.2","a":"3500.11","A":"0.4"}"#;
const STREAMS: [&str; 2] = ["btcusdt@trade", "ethusdt@bookTicker"];

fn fast_config(url: &str) -> ConnectionConfig {
    ConnectionConfig {
        stale_after: Duration::from_secs(30),
        silence_timeout: Duration::from_secs(30),
        ping_every: Duration::from_secs(30),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        healthy_after: Duration::from_millis(300),
        max_outgoing_per_sec: 50,
        ..streams::connection_config(&SPOT, url.to_owned())
    }
}

/// Binance spot behind the seam, with `config` for its connections.
fn spot(config: ConnectionConfig) -> Arc<dyn MarketConnector> {
    Arc::new(BinanceMarket::new(&SPOT, config.ws_url.clone(), None).with_connection(config))
}

struct Running {
    commands: mpsc::Sender<Command>,
    output: mpsc::Receiver<Output>,
    task: tokio::task::JoinHandle<()>,
}

fn start(config: ConnectionConfig, budget_burst: u32, budget_period: Duration) -> Running {
    start_on(spot(config.clone()), config, budget_burst, budget_period)
}

fn start_on(
    market: Arc<dyn MarketConnector>,
    config: ConnectionConfig,
    budget_burst: u32,
    budget_period: Duration,
) -> Running {
    let (commands, command_rx) = mpsc::channel(16);
    let (output_tx, output) = mpsc::channel(1024);
    let quota = Quota::with_period(budget_period)
        .unwrap()
        .allow_burst(NonZeroU32::new(budget_burst).unwrap());
    let task = connection::spawn(
        0,
        market,
        config,
        Arc::new(RateLimiter::direct(quota)),
        command_rx,
        output_tx,
    );
    Running { commands, output, task }
}

impl Running {
    async fn subscribe(&self, names: &[&str]) {
        let names = names.iter().map(|s| (*s).to_owned()).collect();
        self.commands.send(Command::Subscribe(names)).await.unwrap();
    }

    /// Waits for an output matching `want`, skipping others, for at most `within`.
    async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        mut want: impl FnMut(&Output) -> bool,
    ) -> Output {
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, self.output.recv()).await {
                Ok(Some(output)) if want(&output) => return output,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the connection stopped while waiting for {what}"),
                Err(_) => panic!("timed out after {within:?} waiting for {what}"),
            }
        }
    }
}

async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn is_connected(o: &Output) -> bool {
    matches!(o, Output::Connected { .. })
}

fn is_trade(o: &Output) -> bool {
    matches!(o, Output::Event(e) if matches!(e.kind, EventKind::Trade { .. }))
}

#[tokio::test]
async fn subscriptions_are_sent_and_events_come_back_parsed() {
    let fake = FakeBinance::start().await;
    let mut conn = start(fast_config(&fake.url), 10, Duration::from_millis(100));
    conn.subscribe(&STREAMS).await;
    conn.expect(Duration::from_secs(2), "connected", is_connected).await;
    until(Duration::from_secs(2), "both subscribed", || fake.subscriptions().len() == 2).await;
    fake.publish("btcusdt@trade", TRADE);
    let Output::Event(event) = conn.expect(Duration::from_secs(2), "a trade", is_trade).await
    else {
        unreachable!()
    };
    assert_eq!(event.symbol.as_str(), "BTCUSDT");
    assert_eq!(event.exchange_ts, 1732307467123);
    conn.commands.send(Command::Unsubscribe(vec!["ethusdt@bookTicker".into()])).await.unwrap();
    until(Duration::from_secs(2), "one left", || fake.subscriptions().len() == 1).await;
    drop(conn.commands);
    tokio::time::timeout(Duration::from_secs(2), conn.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn after_a_drop_the_feed_reconnects_within_2_seconds_with_every_subscription_restored() {
    let fake = FakeBinance::start().await;
    let mut conn = start(fast_config(&fake.url), 10, Duration::from_millis(100));
    conn.subscribe(&STREAMS).await;
    conn.expect(Duration::from_secs(2), "connected", is_connected).await;
    until(Duration::from_secs(2), "subscribed", || fake.subscriptions().len() == 2).await;

    let dropped_at = Instant::now();
    fake.drop_connections();
    conn.expect(Duration::from_secs(2), "disconnected", |o| {
        matches!(o, Output::Disconnected { .. })
    })
    .await;
    let gap =
        conn.expect(Duration::from_secs(2), "a gap", |o| matches!(o, Output::Gap { .. })).await;
    let Output::Gap { streams, .. } = gap else { unreachable!() };
    assert_eq!(streams, ["btcusdt@trade", "ethusdt@bookTicker"]);
    conn.expect(Duration::from_secs(2), "reconnected", is_connected).await;
    until(Duration::from_secs(2), "resubscribed", || fake.subscriptions().len() == 2).await;
    assert!(dropped_at.elapsed() < Duration::from_secs(2), "took {:?}", dropped_at.elapsed());
    assert_eq!(fake.connections(), 2);
    fake.publish("ethusdt@bookTicker", QUOTE);
    conn.expect(
        Duration::from_secs(2),
        "a quote after reconnecting",
        |o| matches!(o, Output::Event(e) if matches!(e.kind, EventKind::Quote { .. })),
    )
    .await;
}

#[tokio::test]
async fn a_stale_stream_is_detected_and_the_connection_renewed() {
    let fake = FakeBinance::start().await;
    let config =
        ConnectionConfig { stale_after: Duration::from_millis(400), ..fast_config(&fake.url) };
    let mut conn = start(config, 10, Duration::from_millis(100));
    conn.subscribe(&["btcusdt@trade"]).await;
    conn.expect(Duration::from_secs(2), "connected", is_connected).await;
    fake.silent(true);
    let down = conn
        .expect(Duration::from_secs(3), "stale", |o| matches!(o, Output::Disconnected { .. }))
        .await;
    let Output::Disconnected { reason, .. } = down else { unreachable!() };
    assert!(reason.contains("stale"), "{reason}");
}

#[tokio::test]
async fn a_server_that_goes_completely_silent_is_abandoned() {
    let fake = FakeBinance::start().await;
    let config =
        ConnectionConfig { silence_timeout: Duration::from_millis(400), ..fast_config(&fake.url) };
    let mut conn = start(config, 10, Duration::from_millis(100));
    conn.expect(Duration::from_secs(2), "connected", is_connected).await;
    // No subscriptions, no data, no pings: nothing at all arrives.
    let down = conn
        .expect(Duration::from_secs(3), "silence", |o| matches!(o, Output::Disconnected { .. }))
        .await;
    let Output::Disconnected { reason, .. } = down else { unreachable!() };
    assert!(reason.contains("silent"), "{reason}");
}

#[tokio::test]
async fn server_pings_are_answered_and_server_shutdown_reconnects() {
    let fake = FakeBinance::start().await;
    let mut conn = start(fast_config(&fake.url), 10, Duration::from_millis(100));
    conn.subscribe(&["btcusdt@trade"]).await;
    conn.expect(Duration::from_secs(2), "connected", is_connected).await;
    fake.send_frame(Message::Ping(b"keel".to_vec().into()));
    until(Duration::from_secs(2), "a pong", || fake.pongs() >= 1).await;
    fake.server_shutdown();
    let down = conn
        .expect(Duration::from_secs(2), "shutdown", |o| matches!(o, Output::Disconnected { .. }))
        .await;
    let Output::Disconnected { reason, .. } = down else { unreachable!() };
    assert_eq!(reason, "serverShutdown");
    conn.expect(Duration::from_secs(2), "reconnected", is_connected).await;
}

#[tokio::test]
async fn garbage_is_counted_not_fatal_and_broken_frames_only_cost_a_reconnect() {
    let fake = FakeBinance::start().await;
    let mut conn = start(fast_config(&fake.url), 10, Duration::from_millis(100));
    conn.subscribe(&["btcusdt@trade"]).await;
    conn.expect(Duration::from_secs(2), "connected", is_connected).await;
    until(Duration::from_secs(2), "subscribed", || fake.subscriptions().len() == 1).await;
    for garbage in [
        "{not json",
        r#"{"e":"mystery","E":1}"#,
        r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","p":"-5","q":"1","t":1,"T":1,"m":true}}"#,
        r#"{"code":1,"msg":"Invalid value type: expected Boolean"}"#,
        "[]",
    ] {
        fake.send_text(garbage);
    }
    fake.publish("btcusdt@trade", TRADE);
    conn.expect(Duration::from_secs(2), "the trade after the garbage", is_trade).await;
    assert_eq!(fake.connections(), 1, "garbage must not cost the connection");

    // A 1 MiB frame and invalid UTF-8 break the socket itself: reconnect, keep going.
    for fault in 0..2 {
        if fault == 0 {
            fake.send_text(&"x".repeat(2 * 1024 * 1024));
        } else {
            fake.send_invalid_utf8();
        }
        conn.expect(Duration::from_secs(3), "reconnected", is_connected).await;
        until(Duration::from_secs(2), "resubscribed", || fake.subscriptions().len() == 1).await;
        fake.publish("btcusdt@trade", TRADE);
        conn.expect(Duration::from_secs(2), "a trade after the fault", is_trade).await;
    }
}

#[tokio::test]
async fn a_flapping_server_never_gets_more_connection_attempts_than_the_budget() {
    let fake = FakeBinance::start().await;
    fake.refuse(true);
    // Backoff as small as it goes: only the budget holds the attempts back.
    let config = ConnectionConfig {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(2),
        ..fast_config(&fake.url)
    };
    // Budget: a burst of 3, then one every 250 ms: at most 3 + 8 = 11 attempts in 2 s.
    let conn = start(config, 3, Duration::from_millis(250));
    conn.subscribe(&["btcusdt@trade"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = fake.connections();
    assert!((3..=11).contains(&attempts), "{attempts} attempts in 2 s");
    fake.refuse(false);
    drop(conn);
}

mod feed {
    //! The feed actor on a Binance connection: fan-out and gap events.

    use std::sync::Mutex;

    use actix::prelude::*;
    use keel_actors::feed::{FeedActor, FeedConfig, MarketData, Subscribe};
    use keel_actors::mailbox::ask;
    use keel_core::market::{MarketEvent, StreamKind, Symbol};

    use super::*;

    struct Collector(Arc<Mutex<Vec<Arc<MarketEvent>>>>);
    impl Actor for Collector {
        type Context = Context<Self>;
    }
    impl Handler<MarketData> for Collector {
        type Result = ();
        fn handle(&mut self, msg: MarketData, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg.0);
        }
    }

    #[actix_rt::test]
    async fn subscribers_get_binance_trades_and_a_gap_after_a_reconnect() {
        let fake = FakeBinance::start().await;
        let feed = FeedActor::new(FeedConfig {
            market: spot(fast_config(&fake.url)),
            warm_for: Duration::from_secs(60),
            first_data_wait: Duration::from_secs(2),
            replay: None,
            recorder: None,
            mailbox: keel_actors::feed::DEFAULT_MAILBOX,
            cluster: None,
        })
        .start();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let collector = Collector(seen.clone()).start();
        let subscribe = Subscribe {
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            kind: StreamKind::Trades,
            subscriber: 7,
            recipient: collector.recipient(),
        };
        ask(&feed, subscribe, Duration::from_secs(2), "feed").await.unwrap().unwrap();
        until(Duration::from_secs(2), "subscribed upstream", || {
            fake.subscriptions().contains("btcusdt@trade")
        })
        .await;
        fake.publish("btcusdt@trade", TRADE);
        until(Duration::from_secs(2), "a trade", || !seen.lock().unwrap().is_empty()).await;

        fake.drop_connections();
        until(Duration::from_secs(3), "a gap", || {
            seen.lock().unwrap().iter().any(|e| matches!(e.kind, EventKind::Gap { .. }))
        })
        .await;
        until(Duration::from_secs(2), "resubscribed", || {
            fake.subscriptions().contains("btcusdt@trade")
        })
        .await;
        fake.publish("btcusdt@trade", TRADE);
        until(Duration::from_secs(2), "trades again", || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
                .count()
                >= 2
        })
        .await;
    }
}

#[tokio::test]
async fn a_futures_liquidation_arrives_as_a_liquidation_event() {
    let fake = FakeBinance::start().await;
    let config = ConnectionConfig { max_outgoing_per_sec: 50, ..fast_config(&fake.url) };
    let futures =
        BinanceMarket::new(&keel_venues::binance_futures::DIALECT, config.ws_url.clone(), None);
    let mut conn = start_on(Arc::new(futures), config, 10, Duration::from_millis(100));
    conn.subscribe(&["btcusdt@forceOrder"]).await;
    until(Duration::from_secs(2), "subscribed", || {
        fake.subscriptions().contains("btcusdt@forceOrder")
    })
    .await;
    // The USD-M fixture's frame, as the futures stream sends it.
    fake.publish(
        "btcusdt@forceOrder",
        r#"{"e":"forceOrder","E":1732307467500,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"98010.00","ap":"98020.40","X":"FILLED","l":"0.014","z":"0.014","T":1732307467498}}"#,
    );
    let want = |o: &Output| matches!(o, Output::Event(e) if matches!(e.kind, EventKind::Liquidation { .. }));
    let Output::Event(event) = conn.expect(Duration::from_secs(2), "a liquidation", want).await
    else {
        unreachable!()
    };
    assert_eq!((event.venue, event.symbol.as_str()), (VenueId::BinanceFutures, "BTCUSDT"));
    assert_eq!(event.exchange_ts, 1732307467500);
    let EventKind::Liquidation { side, price, qty, .. } = event.kind else { unreachable!() };
    assert_eq!(side, keel_core::market::Side::Sell);
    assert_eq!((price.to_string(), qty.to_string()), ("98010.00".to_owned(), "0.014".to_owned()));
}
