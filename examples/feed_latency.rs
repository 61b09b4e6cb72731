//! Feed-to-subscriber latency at a steady event rate, over a real WebSocket from a local fake
//! Binance (loopback only, bounded in time).
//!
//! `cargo run --release --example feed_latency -- [events_per_sec] [seconds] [subscribers]`
//! (defaults 10000, 10, 10). Each event is stamped when the connection task receives and parses
//! it; each subscriber actor records `now - received` when it handles the event. That is the
//! latency the feed adds: channel to the feed actor, fan-out, subscriber mailbox.
#![allow(clippy::unwrap_used)] // a measurement tool: a panic is a failed run with its line

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use keel_actors::feed::{FeedActor, FeedConfig, MarketData, Subscribe};
use keel_actors::mailbox::ask;
use keel_core::market::{EventKind, StreamKind, Symbol};
use keel_testkit::fake_binance;
use keel_venues::binance::SPOT;
use keel_venues::binance::connector::BinanceMarket;
use keel_venues::now_us;

struct Recorder(Arc<Mutex<Vec<u64>>>);
impl Actor for Recorder {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}
impl Handler<MarketData> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: MarketData, _: &mut Context<Self>) {
        if matches!(msg.0.kind, EventKind::Trade { .. }) {
            self.0.lock().unwrap().push(now_us().saturating_sub(msg.0.received_us));
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let rate = args.first().copied().unwrap_or(10_000);
    let seconds = args.get(1).copied().unwrap_or(10);
    let subscribers = args.get(2).copied().unwrap_or(10);
    System::new().block_on(async move {
        let fake = fake_binance::FakeBinance::start().await;
        let feed = FeedActor::new(FeedConfig {
            market: Arc::new(BinanceMarket::new(&SPOT, fake.url.clone(), None)),
            warm_for: Duration::from_secs(60),
            first_data_wait: Duration::from_secs(2),
            replay: None,
            recorder: None,
            mailbox: keel_actors::feed::DEFAULT_MAILBOX,
            cluster: None,
        })
        .start();
        let samples = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds * subscribers) as usize)));
        for id in 0..subscribers {
            let recorder = Recorder(samples.clone()).start();
            let sub = Subscribe {
                symbol: Symbol::parse("BTCUSDT").unwrap(),
                kind: StreamKind::Trades,
                subscriber: id,
                recipient: recorder.recipient(),
            };
            ask(&feed, sub, Duration::from_secs(2), "feed").await.unwrap().unwrap();
        }
        while !fake.subscriptions().contains("btcusdt@trade") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Publish in 1 ms batches to hold the rate.
        let per_ms = rate.div_ceil(1000).max(1);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while started.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            let target = due.min(sent + per_ms * 5);
            while sent < target {
                sent += 1;
                let payload = format!(
                    r#"{{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":{sent},"p":"98234.51","q":"0.0012","T":1732307467122,"m":true}}"#
                );
                fake.publish("btcusdt@trade", &payload);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        // Let the last events drain before reading the samples.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut all = samples.lock().unwrap().clone();
        all.sort_unstable();
        println!(
            "rate {rate}/s for {seconds} s, {subscribers} subscribers: sent {sent} ({:.0}/s), deliveries {} of {}",
            sent as f64 / elapsed,
            all.len(),
            sent * subscribers
        );
        println!(
            "feed-to-subscriber latency: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            percentile(&all, 0.50),
            percentile(&all, 0.99),
            percentile(&all, 0.999),
            all.last().copied().unwrap_or(0)
        );
        System::current().stop();
    });
}
