//! Who wants which stream, and fan-out: events are folded into the per-symbol state, recorded,
//! and offered to every subscriber of their stream without waiting on any of them.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::messages::{FeedError, MarketData, Subscribe, Unsubscribe};
use super::{FeedActor, Stream};
use crate::mailbox::Ask;
use keel_core::market::{EventKind, Interval, MarketEvent, StreamKind, Symbol};
use keel_venues::now_us;

impl FeedActor {
    pub(super) fn check_symbol(&self, symbol: &Symbol) -> Result<(), FeedError> {
        // Rules not loaded: the symbol's syntax was checked; the venue will say.
        let unknown = self.instruments.as_ref().is_some_and(|known| !known.contains_key(symbol));
        if unknown {
            return Err(FeedError::UnknownSymbol {
                venue: self.venue(),
                symbol: symbol.to_string(),
            });
        }
        Ok(())
    }

    fn check_kind(&self, kind: StreamKind) -> Result<(), FeedError> {
        if self.config.market.supports(kind) {
            Ok(())
        } else {
            Err(FeedError::Unsupported { venue: self.venue(), kind: kind.as_str() })
        }
    }

    /// Symbols the source must produce: those with subscribers or kept warm.
    pub(super) fn active_symbols(&self) -> Vec<Symbol> {
        let mut active: Vec<Symbol> = self.streams.keys().map(|(s, _)| s.clone()).collect();
        active.extend(self.warm_until.keys().cloned());
        active.sort();
        active.dedup();
        active
    }

    pub(super) fn warm(&mut self, symbol: &Symbol) {
        self.warm_until.insert(symbol.clone(), Instant::now() + self.config.warm_for);
    }

    /// Folds an event into state and queues it for recording; returns it shared, with its
    /// stream kind.
    pub(super) fn observe(&mut self, event: MarketEvent) -> (Arc<MarketEvent>, Option<StreamKind>) {
        self.last_message = Some(Instant::now());
        metrics::counter!("keel_feed_messages_total", "venue" => self.venue().as_str())
            .increment(1);
        self.symbols.entry(event.symbol.clone()).or_default().apply(&event);
        let kind = event.stream_kind();
        let event = Arc::new(event);
        if let Some(recorder) = &self.config.recorder {
            recorder.record(&event);
        }
        (event, kind)
    }

    /// Folds an event into state and fans it out.
    pub(super) fn dispatch(&mut self, event: MarketEvent) {
        let venue = self.venue().as_str();
        let (event, kind) = self.observe(event);
        let Some(kind) = kind else { return };
        let Some(stream) = self.streams.get_mut(&(event.symbol.clone(), kind)) else { return };
        let data = MarketData(event);
        let Stream { subscribers, conflated } = stream;
        let delivery = subscribers.publish(&data, |subscriber, undelivered| match kind {
            StreamKind::Quotes | StreamKind::Candles1m | StreamKind::Depth | StreamKind::MarkPrice => {
                conflated.insert(*subscriber, undelivered);
            }
            StreamKind::Trades | StreamKind::Liquidations => {
                metrics::counter!("keel_feed_dropped_total", "venue" => venue, "stream" => kind.as_str())
                    .increment(1);
            }
        });
        if delivery.delivered > 0 {
            metrics::counter!("keel_feed_deliveries_total", "venue" => venue)
                .increment(delivery.delivered as u64);
        }
    }

    /// Retries conflated deliveries; the latest value only.
    pub(super) fn flush_conflated(&mut self) {
        for stream in self.streams.values_mut() {
            if stream.conflated.is_empty() {
                continue;
            }
            let pending = std::mem::take(&mut stream.conflated);
            for (subscriber, data) in pending {
                let _ = stream.subscribers.publish_to(&subscriber, data, |data| {
                    stream.conflated.insert(subscriber, data);
                });
            }
        }
    }

    /// Sends the current 1 m candle to `candles.1m` subscribers (once per tick at most).
    pub(super) fn publish_candle(&mut self, symbol: &Symbol, now_ms: u64) {
        if !self.streams.contains_key(&(symbol.clone(), StreamKind::Candles1m)) {
            return;
        }
        let Some(candle) =
            self.symbols.get(symbol).and_then(|s| s.current_candle(Interval::M1)).cloned()
        else {
            return;
        };
        self.dispatch(MarketEvent {
            venue: self.venue(),
            symbol: symbol.clone(),
            exchange_ts: now_ms,
            received_us: now_us(),
            kind: EventKind::Candle(candle),
        });
    }
}

impl Handler<Ask<Subscribe>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<Subscribe>, _: &mut Context<Self>) {
        let (sub, replier) = ask.into_parts();
        let checked = self.check_symbol(&sub.symbol).and_then(|()| self.check_kind(sub.kind));
        if checked.is_ok() {
            let stream = self.streams.entry((sub.symbol.clone(), sub.kind)).or_default();
            stream.subscribers.subscribe(sub.subscriber, sub.recipient);
            metrics::gauge!("keel_feed_streams", "venue" => self.venue().as_str())
                .set(self.streams.len() as f64);
            self.reconcile();
        }
        replier.send(checked);
    }
}

impl Handler<Unsubscribe> for FeedActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        let key = (msg.symbol, msg.kind);
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.subscribers.unsubscribe(&msg.subscriber);
            stream.conflated.remove(&msg.subscriber);
            if stream.subscribers.is_empty() {
                self.streams.remove(&key);
                self.reconcile();
            }
        }
        metrics::gauge!("keel_feed_streams", "venue" => self.venue().as_str())
            .set(self.streams.len() as f64);
    }
}
