//! Replay mode of the sim venue: a given event file instead of the random walk.
//!
//! A thread reads the file (a recording, or any trade file a backtest reads) into a bounded
//! channel; the feed takes events from it on its tick and dispatches them in file order. The
//! replay starts once the symbol of the first event has subscribers on both its trades and its
//! quotes (what a bot subscribes to), so a bot started against it sees the file from its first
//! event. Unlike live fan-out, replay is lossless: an event a subscriber's full mailbox cannot
//! take waits in that subscriber's backlog (in order), and the replay does not advance until
//! every backlog is delivered. A slow subscriber slows the replay instead of missing events, so
//! a paper bot sees exactly the events of the file, as a backtest of the same file does.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};

use serde::Serialize;

use super::Stream;
use super::messages::{MarketData, SubscriberId};
use crate::backtest::input::TradeReader;
use keel_core::market::{MarketEvent, StreamKind, Symbol};

/// Events read ahead of the feed.
const READ_AHEAD: usize = 8192;
/// Most events one feed tick replays when the pace is "as fast as subscribers take them".
pub const MAX_PER_TICK: u64 = 2048;

/// What to replay, and how fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayConfig {
    /// The file: a recording (`*.krec`), Keel CSV, or a Binance trades/aggTrades dump.
    pub path: PathBuf,
    /// The symbol of a CSV file's trades (a recording names its own).
    pub symbol: Symbol,
    /// Events per second; 0 replays as fast as the subscribers take them.
    pub events_per_sec: u32,
}

/// Where a replay is, for `GET /venues`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReplayStatus {
    /// Whether it has started (its first symbol has trade and quote subscribers).
    pub started: bool,
    /// Events dispatched so far.
    pub played: u64,
    /// Whether the whole file was played (or reading it failed).
    pub finished: bool,
    /// Why reading stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

type StreamId = (Symbol, StreamKind);

/// The feed's side of a replay.
#[derive(Debug)]
pub(super) struct Replay {
    config: ReplayConfig,
    rx: Receiver<Result<MarketEvent, String>>,
    /// The next event, read but not yet dispatched.
    next: Option<MarketEvent>,
    /// Fractional events owed by the pace.
    debt: f64,
    /// Undelivered events per subscriber, oldest first.
    backlog: HashMap<SubscriberId, VecDeque<(StreamId, MarketData)>>,
    pub(super) status: ReplayStatus,
}

impl Replay {
    /// Starts reading `config.path` on a thread of its own.
    pub(super) fn start(config: ReplayConfig) -> Self {
        let (tx, rx) = sync_channel(READ_AHEAD);
        let (path, symbol) = (config.path.clone(), config.symbol.clone());
        let spawned = std::thread::Builder::new().name("keel-replay".into()).spawn(move || {
            let reader = match TradeReader::open(&path, symbol, false) {
                Ok(reader) => reader,
                Err(err) => {
                    let _ = tx.send(Err(format!("cannot open {}: {err}", path.display())));
                    return;
                }
            };
            for event in reader {
                // A send fails once the feed is gone: stop reading.
                if tx.send(event.map_err(|e| e.to_string())).is_err() {
                    return;
                }
            }
        });
        let mut replay = Self {
            config,
            rx,
            next: None,
            debt: 0.0,
            backlog: HashMap::new(),
            status: ReplayStatus::default(),
        };
        if let Err(err) = spawned {
            replay.finish(Some(format!("cannot start the replay thread: {err}")));
        }
        replay
    }

    fn finish(&mut self, error: Option<String>) {
        if let Some(error) = &error {
            tracing::warn!(path = %self.config.path.display(), %error, "replay stopped");
        } else if !self.status.finished {
            tracing::info!(path = %self.config.path.display(), events = self.status.played, "replay finished");
        }
        self.status.finished = true;
        self.status.error = error;
    }

    /// The next event from the reader, if one is ready.
    fn pull(&mut self) -> Option<MarketEvent> {
        if let Some(event) = self.next.take() {
            return Some(event);
        }
        if self.status.finished {
            return None;
        }
        match self.rx.try_recv() {
            Ok(Ok(event)) => Some(event),
            Ok(Err(error)) => {
                self.finish(Some(error));
                None
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.finish(None);
                None
            }
        }
    }

    /// How many events this tick may play, `elapsed_secs` after the last.
    pub(super) fn budget(&mut self, elapsed_secs: f64) -> u64 {
        if self.config.events_per_sec == 0 {
            return MAX_PER_TICK;
        }
        let rate = f64::from(self.config.events_per_sec);
        self.debt = (self.debt + rate * elapsed_secs).min((rate * 0.05).max(1.0));
        let due = self.debt.floor();
        self.debt -= due;
        due as u64
    }

    /// The next event to dispatch: none before the replay may start, while a backlog waits, or
    /// when the reader has nothing ready.
    pub(super) fn next_event(
        &mut self,
        streams: &HashMap<StreamId, Stream>,
    ) -> Option<MarketEvent> {
        if !self.backlog.is_empty() {
            return None;
        }
        let event = self.pull()?;
        if !self.status.started {
            let watched = |kind| {
                streams
                    .get(&(event.symbol.clone(), kind))
                    .is_some_and(|s| !s.subscribers.is_empty())
            };
            if !(watched(StreamKind::Trades) && watched(StreamKind::Quotes)) {
                self.next = Some(event);
                return None;
            }
            self.status.started = true;
            tracing::info!(path = %self.config.path.display(), symbol = %event.symbol, "replay started");
        }
        self.status.played += 1;
        Some(event)
    }

    /// Offers `data` to every subscriber of `stream`, in order behind whatever each one still
    /// has waiting.
    pub(super) fn deliver(&mut self, id: &StreamId, stream: &mut Stream, data: &MarketData) {
        let subscribers: Vec<SubscriberId> = stream.subscribers.keys().copied().collect();
        for subscriber in subscribers {
            if let Some(queue) = self.backlog.get_mut(&subscriber) {
                queue.push_back((id.clone(), data.clone()));
                continue;
            }
            let mut undelivered = None;
            stream.subscribers.publish_to(&subscriber, data.clone(), |d| undelivered = Some(d));
            if let Some(data) = undelivered {
                self.backlog.entry(subscriber).or_default().push_back((id.clone(), data));
            }
        }
    }

    /// Delivers what the backlogs hold, oldest first, as far as the mailboxes take it. Events
    /// for a stream the subscriber left are dropped.
    pub(super) fn drain_backlog(&mut self, streams: &mut HashMap<StreamId, Stream>) {
        for (subscriber, queue) in &mut self.backlog {
            while let Some((id, data)) = queue.pop_front() {
                let Some(stream) = streams.get_mut(&id) else { continue };
                let mut undelivered = None;
                stream.subscribers.publish_to(subscriber, data, |d| undelivered = Some(d));
                if let Some(data) = undelivered {
                    queue.push_front((id, data));
                    break;
                }
            }
        }
        self.backlog.retain(|_, queue| !queue.is_empty());
    }
}
