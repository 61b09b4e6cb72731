//! The two directions of the market-data hop: the holder's [`Relay`] publishes a venue's events
//! in order, a [`Follower`] reads one symbol's events from the stream, and [`Seen`] drops the
//! duplicates and names the gaps of what a follower received.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use keel_core::market::{EventKind, MarketEvent, Symbol, VenueId};

use super::{LEASE_HEADER, SEQ_HEADER};

/// Events waiting for the publisher task; past it they are dropped and counted.
const RELAY_BUFFER: usize = 65_536;
/// How long a follower waits before reading the stream again after an error.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// Trade ids remembered per symbol to drop a trade delivered twice.
const RECENT_TRADES: usize = 4_096;

struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

/// Publishes a venue's events to the stream, in the order given, from a task of its own.
#[derive(Debug, Clone)]
pub struct Relay {
    venue: VenueId,
    queue: tokio::sync::mpsc::Sender<Outgoing>,
}

impl Relay {
    /// Starts the publisher task of `venue`.
    pub(super) fn start(jetstream: jetstream::Context, venue: VenueId) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Outgoing>(RELAY_BUFFER);
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                match jetstream.publish_with_headers(out.subject, out.headers, out.payload).await {
                    // The ack is awaited on the side, so one slow ack does not hold the next.
                    Ok(ack) => {
                        tokio::spawn(async move {
                            if let Err(err) = ack.await {
                                failed(venue, &err.to_string());
                            }
                        });
                    }
                    Err(err) => failed(venue, &err.to_string()),
                }
            }
        });
        Self { venue, queue }
    }

    /// Queues `event` for `subject`, as event `seq` of the lease taken at revision `lease`.
    /// Never waits: a full queue drops the event and counts it.
    pub fn publish(&self, subject: String, node: &str, lease: u64, seq: u64, event: &MarketEvent) {
        let payload = match serde_json::to_vec(event) {
            Ok(payload) => bytes::Bytes::from(payload),
            Err(err) => return failed(self.venue, &err.to_string()),
        };
        let mut headers = HeaderMap::new();
        // A trade's id is the venue's, so two holders relaying the same trade (around a
        // handover) produce one message; anything else is unique per holder and lease.
        let id = match &event.kind {
            EventKind::Trade { trade_id, .. } => {
                format!("{}.{}.t{trade_id}", self.venue.as_str(), event.symbol.as_str())
            }
            _ => format!("{node}.{lease}.{seq}"),
        };
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        headers.insert(LEASE_HEADER, lease.to_string().as_str());
        headers.insert(SEQ_HEADER, seq.to_string().as_str());
        if self.queue.try_send(Outgoing { subject, headers, payload }).is_err() {
            failed(self.venue, "the relay queue is full");
        } else {
            metrics::counter!("keel_cluster_md_published_total", "venue" => self.venue.as_str())
                .increment(1);
        }
    }
}

fn failed(venue: VenueId, error: &str) {
    metrics::counter!("keel_cluster_md_publish_errors_total", "venue" => venue.as_str())
        .increment(1);
    tracing::warn!(venue = %venue, error, "a market event was not relayed");
}

/// One event read from the stream, with where it stands in its holder's sequence.
#[derive(Debug)]
pub struct Received {
    /// The symbol followed.
    pub symbol: Symbol,
    /// The revision of the publisher's lease.
    pub lease: u64,
    /// The event's number within that lease.
    pub seq: u64,
    /// The event.
    pub event: MarketEvent,
}

/// Reads one symbol from the stream until dropped.
#[derive(Debug)]
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    pub(super) fn start(
        stream: stream::Stream,
        filter: String,
        symbol: Symbol,
        out: tokio::sync::mpsc::Sender<Received>,
    ) -> Self {
        let task = tokio::spawn(async move {
            loop {
                match follow(&stream, &filter, &symbol, &out).await {
                    Ok(()) => return, // the feed is gone
                    Err(err) => {
                        tracing::warn!(%filter, error = %err, "reading market data from the cluster failed; retrying");
                        tokio::time::sleep(FOLLOW_RETRY).await;
                    }
                }
            }
        });
        Self { task }
    }
}

/// Reads new events on `filter` (an ordered consumer: in stream order, recreated by the client
/// when it misses one) until the feed stops listening.
async fn follow(
    stream: &stream::Stream,
    filter: &str,
    symbol: &Symbol,
    out: &tokio::sync::mpsc::Sender<Received>,
) -> Result<(), async_nats::Error> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let number = |name: &str| -> Option<u64> {
            message.headers.as_ref()?.get(name)?.as_str().parse().ok()
        };
        let (Some(lease), Some(seq)) = (number(LEASE_HEADER), number(SEQ_HEADER)) else {
            tracing::warn!(subject = %message.subject, "a market event without its lease and sequence; ignored");
            continue;
        };
        let event = match serde_json::from_slice::<MarketEvent>(&message.payload) {
            Ok(event) if &event.symbol == symbol => event,
            Ok(_) | Err(_) => {
                tracing::warn!(subject = %message.subject, "an unreadable market event; ignored");
                continue;
            }
        };
        let received = Received { symbol: symbol.clone(), lease, seq, event };
        if out.send(received).await.is_err() {
            return Ok(());
        }
    }
    Err("the stream's messages ended".into())
}

/// The latest trade ids of one symbol, to drop a trade delivered twice.
#[derive(Debug, Default)]
pub struct RecentTrades {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentTrades {
    /// Whether `event` is a trade seen before (and remembers it if not). Other events are new.
    pub fn repeated(&mut self, event: &MarketEvent) -> bool {
        let EventKind::Trade { trade_id, .. } = event.kind else { return false };
        if !self.ids.insert(trade_id) {
            return true;
        }
        self.order.push_back(trade_id);
        if self.order.len() > RECENT_TRADES
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        false
    }
}

/// What a follower has seen of one symbol: the holder's position and the latest trade ids.
#[derive(Debug, Default)]
pub struct Seen {
    last: Option<(u64, u64)>,
    trades: RecentTrades,
}

/// What to do with a received event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Deliver,
    /// Deliver it, but events were missed before it (why).
    AfterGap(String),
    /// Seen before: drop it.
    Duplicate,
}

impl Seen {
    /// Judges event `seq` of lease `lease`.
    pub fn check(&mut self, lease: u64, seq: u64, event: &MarketEvent) -> Verdict {
        let verdict = match self.last {
            Some((last_lease, last_seq)) if last_lease == lease && seq <= last_seq => {
                return Verdict::Duplicate;
            }
            Some((last_lease, last_seq)) if last_lease == lease && seq > last_seq + 1 => {
                Verdict::AfterGap(format!("{} relayed events missed", seq - last_seq - 1))
            }
            Some((last_lease, _)) if last_lease != lease => {
                Verdict::AfterGap("the exchange connection moved to another node".to_owned())
            }
            _ => Verdict::Deliver,
        };
        self.last = Some((lease, seq));
        if self.trades.repeated(event) {
            return Verdict::Duplicate;
        }
        verdict
    }

    /// Whether anything was received.
    pub fn any(&self) -> bool {
        self.last.is_some()
    }
}
