//! The feed with the simulated venue: subscriptions, fan-out, on-demand market state.

use std::sync::Mutex;

use super::*;
use crate::mailbox::ask;
use keel_core::market::{EventKind, MarketEvent};
use keel_venues::sim::connector::{SimConnector, SimSettings};
use keel_venues::sim::{Instrument, SimMarket};

const DEADLINE: Duration = Duration::from_secs(5);

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn sim_market(symbols: Vec<Symbol>, seed: u64, trades_per_sec: u32) -> Arc<dyn MarketConnector> {
    Arc::new(SimConnector::new(SimSettings::walk(symbols, seed, trades_per_sec)))
}

fn sim_feed(trades_per_sec: u32) -> Addr<FeedActor> {
    FeedActor::new(FeedConfig {
        market: sim_market(vec![sym("BTCUSDT"), sym("ETHUSDT")], 42, trades_per_sec),
        warm_for: Duration::from_secs(60),
        first_data_wait: Duration::from_secs(2),
        replay: None,
        recorder: None,
        mailbox: super::DEFAULT_MAILBOX,
        cluster: None,
    })
    .start()
}

/// What a collector has received.
type Seen = Arc<Mutex<Vec<Arc<MarketEvent>>>>;

/// Collects what it receives; optionally sleeps per message to be slow.
struct Collector {
    seen: Seen,
    capacity: usize,
    delay: Option<Duration>,
}

impl Actor for Collector {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl Handler<MarketData> for Collector {
    type Result = ();
    fn handle(&mut self, msg: MarketData, _: &mut Context<Self>) {
        if let Some(delay) = self.delay {
            std::thread::sleep(delay);
        }
        self.seen.lock().unwrap().push(msg.0);
    }
}

fn collector(capacity: usize, delay: Option<Duration>) -> (Seen, Recipient<MarketData>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = Collector { seen: seen.clone(), capacity, delay }.start();
    (seen, addr.recipient())
}

async fn subscribe(
    feed: &Addr<FeedActor>,
    symbol: &str,
    kind: StreamKind,
    id: u64,
    to: Recipient<MarketData>,
) -> Result<(), FeedError> {
    let sub = Subscribe { symbol: sym(symbol), kind, subscriber: id, recipient: to };
    ask(feed, sub, DEADLINE, "feed").await.unwrap()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[actix_rt::test]
async fn a_subscriber_receives_only_its_stream_until_it_unsubscribes() {
    let feed = sim_feed(200);
    let (seen, to) = collector(1024, None);
    subscribe(&feed, "BTCUSDT", StreamKind::Trades, 1, to).await.unwrap();
    wait_for("trades", || seen.lock().unwrap().len() >= 20).await;
    for event in seen.lock().unwrap().iter() {
        assert_eq!(event.symbol.as_str(), "BTCUSDT");
        assert!(matches!(event.kind, EventKind::Trade { .. }), "{event:?}");
        assert!(event.received_us > 0);
    }
    let status = ask(&feed, GetVenueStatus, DEADLINE, "feed").await.unwrap();
    assert_eq!(status.streams, ["market:sim:BTCUSDT:trades"]);
    assert_eq!(status.subscribers, 1);
    assert_eq!(status.state, Connectivity::Connected);

    feed.do_send(Unsubscribe { symbol: sym("BTCUSDT"), kind: StreamKind::Trades, subscriber: 1 });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let count = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.lock().unwrap().len(), count, "events after unsubscribing");
    let status = ask(&feed, GetVenueStatus, DEADLINE, "feed").await.unwrap();
    assert!(status.streams.is_empty());
}

#[actix_rt::test]
async fn unknown_symbols_and_unsupported_streams_are_refused() {
    let feed = sim_feed(10);
    let (_, to) = collector(16, None);
    let err = subscribe(&feed, "DOGEUSDT", StreamKind::Trades, 1, to.clone()).await.unwrap_err();
    assert!(matches!(err, FeedError::UnknownSymbol { .. }));
    let err = subscribe(&feed, "BTCUSDT", StreamKind::Liquidations, 1, to).await.unwrap_err();
    assert!(matches!(err, FeedError::Unsupported { .. }));
    let err = ask(&feed, GetTicker { symbol: sym("DOGEUSDT") }, DEADLINE, "feed")
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, FeedError::UnknownSymbol { .. }));
}

#[actix_rt::test]
async fn a_ticker_request_subscribes_on_demand_and_waits_for_data() {
    let feed = sim_feed(50);
    let ticker =
        ask(&feed, GetTicker { symbol: sym("ETHUSDT") }, DEADLINE, "feed").await.unwrap().unwrap();
    let trade = ticker.last_trade.expect("a trade arrived within the wait");
    assert!(trade.price > rust_decimal::Decimal::ZERO);
    let quote = ticker.quote.expect("a quote arrived");
    assert!(quote.bid < quote.ask);
    let candles = ask(
        &feed,
        GetCandles { symbol: sym("ETHUSDT"), interval: Interval::M1, limit: 10 },
        DEADLINE,
        "feed",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!candles.is_empty());
    assert!(
        candles
            .iter()
            .all(|c| c.low <= c.open && c.open <= c.high && c.low <= c.close && c.close <= c.high)
    );
}

#[actix_rt::test]
async fn without_data_a_market_request_answers_no_data_after_the_wait() {
    let feed = FeedActor::new(FeedConfig {
        market: sim_market(vec![sym("BTCUSDT")], 1, 0),
        warm_for: Duration::from_secs(60),
        first_data_wait: Duration::from_millis(100),
        replay: None,
        recorder: None,
        mailbox: super::DEFAULT_MAILBOX,
        cluster: None,
    })
    .start();
    let started = Instant::now();
    let err = ask(&feed, GetTicker { symbol: sym("BTCUSDT") }, DEADLINE, "feed")
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, FeedError::NoData { .. }));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[actix_rt::test]
async fn a_slow_subscriber_loses_trades_without_slowing_a_fast_one() {
    let feed = sim_feed(1_000);
    let (fast_seen, fast) = collector(4096, None);
    let (slow_seen, slow) = collector(2, Some(Duration::from_millis(20)));
    subscribe(&feed, "BTCUSDT", StreamKind::Trades, 1, fast).await.unwrap();
    subscribe(&feed, "BTCUSDT", StreamKind::Trades, 2, slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fast_ids: Vec<u64> = fast_seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Trade { trade_id, .. } => Some(trade_id),
            _ => None,
        })
        .collect();
    assert!(fast_ids.len() > 200, "the fast subscriber got only {}", fast_ids.len());
    assert!(fast_ids.windows(2).all(|w| w[1] == w[0] + 1), "the fast subscriber missed trades");
    let slow = slow_seen.lock().unwrap().len();
    assert!(slow < fast_ids.len() / 2, "the slow subscriber kept up ({slow})?");
}

#[actix_rt::test]
async fn a_full_quote_subscriber_gets_the_latest_quote_conflated() {
    let feed = sim_feed(1_000);
    let (seen, slow) = collector(1, Some(Duration::from_millis(50)));
    subscribe(&feed, "BTCUSDT", StreamKind::Quotes, 1, slow).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    feed.do_send(Unsubscribe { symbol: sym("BTCUSDT"), kind: StreamKind::Quotes, subscriber: 1 });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "conflated quotes keep flowing: {}", seen.len());
    assert!(seen.iter().all(|e| matches!(e.kind, EventKind::Quote { .. })));
    // Deliveries move forward in time: a conflated quote is never older than one already seen.
    assert!(seen.windows(2).all(|w| w[0].received_us <= w[1].received_us));
}

/// A recording of `steps` sim steps on BTCUSDT (a trade and a quote each), and its events.
fn recording(dir: &std::path::Path, steps: u64) -> (std::path::PathBuf, Vec<MarketEvent>) {
    let symbol = sym("BTCUSDT");
    let mut market = SimMarket::new(9, vec![Instrument::for_symbol(symbol.clone())]);
    let events: Vec<MarketEvent> = (0..steps)
        .flat_map(|i| market.step(&symbol, 1_700_000_000_000 + i * 100, 0).unwrap())
        .collect();
    let path = dir.join("replay.krec");
    let mut file = std::fs::File::create(&path).unwrap();
    crate::record::format::write_recording(&mut file, VenueId::Sim, &symbol, &events).unwrap();
    (path, events)
}

fn replay_feed(path: std::path::PathBuf, events_per_sec: u32) -> Addr<FeedActor> {
    FeedActor::new(FeedConfig {
        market: sim_market(vec![sym("BTCUSDT")], 42, 1_000),
        warm_for: Duration::from_secs(60),
        first_data_wait: Duration::from_secs(2),
        replay: Some(ReplayConfig { path, symbol: sym("BTCUSDT"), events_per_sec }),
        recorder: None,
        mailbox: super::DEFAULT_MAILBOX,
        cluster: None,
    })
    .start()
}

/// An event without what the feed stamps on delivery.
fn unstamped(event: &MarketEvent) -> (u64, EventKind) {
    (event.exchange_ts, event.kind.clone())
}

#[actix_rt::test]
async fn a_replay_starts_with_a_bots_subscriptions_and_delivers_every_event_in_order_even_to_a_slow_subscriber()
 {
    let dir = tempfile::tempdir().unwrap();
    let (path, events) = recording(dir.path(), 400);
    let feed = replay_feed(path, 0);
    // Like a bot: one subscriber on trades and quotes, here with a tiny, slow mailbox.
    let (seen, to) = collector(8, Some(Duration::from_micros(300)));
    subscribe(&feed, "BTCUSDT", StreamKind::Trades, 1, to.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(seen.lock().unwrap().is_empty(), "no replay before the quotes are subscribed too");
    let status = ask(&feed, GetVenueStatus, DEADLINE, "feed").await.unwrap();
    assert_eq!(status.replay.unwrap(), ReplayStatus::default());
    subscribe(&feed, "BTCUSDT", StreamKind::Quotes, 1, to).await.unwrap();
    wait_for("the whole replay", || seen.lock().unwrap().len() >= events.len()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got: Vec<_> = seen.lock().unwrap().iter().map(|e| unstamped(e)).collect();
    let want: Vec<_> = events.iter().map(unstamped).collect();
    assert_eq!(got, want, "every event, once, in file order");
    let status = ask(&feed, GetVenueStatus, DEADLINE, "feed").await.unwrap();
    let replay = status.replay.unwrap();
    assert!(replay.started && replay.finished && replay.error.is_none(), "{replay:?}");
    assert_eq!(replay.played, events.len() as u64);
}

#[actix_rt::test]
async fn a_replay_of_a_missing_file_reports_why_and_generates_nothing() {
    let feed = replay_feed("/nonexistent/replay.krec".into(), 0);
    let (seen, to) = collector(64, None);
    subscribe(&feed, "BTCUSDT", StreamKind::Trades, 1, to.clone()).await.unwrap();
    subscribe(&feed, "BTCUSDT", StreamKind::Quotes, 1, to).await.unwrap();
    let until = Instant::now() + DEADLINE;
    let status = loop {
        let status = ask(&feed, GetVenueStatus, DEADLINE, "feed").await.unwrap();
        if status.replay.as_ref().is_some_and(|r| r.finished) || Instant::now() > until {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let replay = status.replay.unwrap();
    assert!(replay.error.unwrap().contains("/nonexistent/replay.krec"));
    assert!(seen.lock().unwrap().is_empty(), "no random walk instead");
}

#[actix_rt::test]
async fn a_recording_feed_writes_what_it_handles_to_the_days_file() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = crate::record::Recorder::start(dir.path().to_owned(), 1024).unwrap();
    let feed = FeedActor::new(FeedConfig {
        market: sim_market(vec![sym("BTCUSDT")], 3, 500),
        warm_for: Duration::from_secs(60),
        first_data_wait: Duration::from_secs(2),
        replay: None,
        recorder: Some(recorder),
        mailbox: super::DEFAULT_MAILBOX,
        cluster: None,
    })
    .start();
    let (seen, to) = collector(4096, None);
    subscribe(&feed, "BTCUSDT", StreamKind::Trades, 1, to).await.unwrap();
    wait_for("trades", || seen.lock().unwrap().len() >= 20).await;
    let recorded = || {
        let files = crate::record::files_between(
            dir.path(),
            VenueId::Sim,
            &sym("BTCUSDT"),
            "2000-01-01",
            "2999-12-31",
        )
        .unwrap();
        files
            .iter()
            .flat_map(|path| {
                let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
                crate::record::format::Reader::new(file)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    wait_for("the recording", || recorded().len() >= 40).await;
    let recorded = recorded();
    let first: Vec<_> = seen.lock().unwrap().iter().take(20).map(|e| (**e).clone()).collect();
    let trades: Vec<_> = recorded
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Trade { .. }))
        .take(20)
        .collect();
    assert_eq!(trades, first, "the recorded trades are the delivered ones, exactly");
}
