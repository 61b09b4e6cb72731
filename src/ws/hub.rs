//! `MarketHub`: one per worker thread, fanning market events out to that thread's connections.
//!
//! A feed used to send every event to every WebSocket connection: at 1,000 clients that is 1,000
//! boxed actix messages and 1,000 cross-thread wake-ups per event, before a byte is written. Now
//! the feed sends each event once to the hub of every worker thread that has a subscriber, and the
//! hub writes each client's frame straight into that client's bounded outbound queue
//! ([`Outbound`]). Connections run on the worker thread that accepted them, the hub is created on
//! that thread the first time one of them subscribes, and the two share plain `Rc` state: no
//! locks, no messages per client.
//!
//! Ordering with the feed: a connection joins the hub, then asks the feed to deliver the stream to
//! the hub (which also checks the symbol); the hub tells the feed to stop once its last client of
//! a stream leaves. All of it happens on one thread in that order, so a `Subscribe` that follows a
//! `Unsubscribe` reaches the feed after it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::web;
use keel_actors::feed::{FeedAddress, MarketData, Subscribe, SubscriberId, Unsubscribe};
use keel_actors::mailbox::ask;
use keel_actors::market::{MarketEvent, StreamKind, Symbol, VenueId};
use serde_json::json;
use tokio::sync::mpsc;

use super::protocol::{Channel, EventFrame, control_frame, market_data_json};

/// One market stream of one venue.
pub type StreamKey = (VenueId, Symbol, StreamKind);

/// How long renewing the hub's feed subscription may take.
const RESUBSCRIBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// One frame waiting for the socket.
#[derive(Debug)]
pub enum Outgoing {
    /// Text, with the feed's receive time for market events (tick-to-client latency).
    Text(String, Option<u64>),
    /// A heartbeat ping.
    Ping,
    /// The answer to the client's ping.
    Pong(web::Bytes),
}

/// One subscribed channel of one connection.
#[derive(Debug)]
pub struct ChannelState {
    /// What the channel is.
    pub channel: Channel,
    /// Its name, as the client wrote it canonically (`market:sim:BTCUSDT:trades`).
    pub name: String,
    /// The last `seq` sent on it.
    pub seq: Cell<u64>,
    /// Market events dropped since the last `lagged` notice.
    pub dropped: Cell<u64>,
}

/// A connection's outbound side: its queue and its subscriptions, shared (on its thread) by the
/// connection and the hub.
#[derive(Debug)]
pub struct Outbound {
    out: mpsc::Sender<Outgoing>,
    channels: RefCell<HashMap<String, Rc<ChannelState>>>,
    /// Some market event could not be queued and the client has not been told yet.
    lagged: Cell<bool>,
    /// Since when market data has been dropped without the client catching up.
    lagging_since: Cell<Option<Instant>>,
    /// `keel_ws_dropped_total{channel="market"}`, resolved once (a lagging client drops many).
    market_dropped: metrics::Counter,
}

impl Outbound {
    /// An outbound side with a queue of `capacity` frames; the receiver goes to the writer.
    pub fn new(capacity: usize) -> (Rc<Self>, mpsc::Receiver<Outgoing>) {
        let (out, rx) = mpsc::channel(capacity.max(1));
        let outbound = Self {
            out,
            channels: RefCell::default(),
            lagged: Cell::new(false),
            lagging_since: Cell::new(None),
            market_dropped: metrics::counter!("keel_ws_dropped_total", "channel" => "market"),
        };
        (Rc::new(outbound), rx)
    }

    /// Queues a frame; false when the queue is full (or the writer is gone).
    pub fn try_send(&self, frame: Outgoing) -> bool {
        self.out.try_send(frame).is_ok()
    }

    /// The channel called `name`, if subscribed.
    pub fn channel(&self, name: &str) -> Option<Rc<ChannelState>> {
        self.channels.borrow().get(name).cloned()
    }

    /// Whether `name` is subscribed.
    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.borrow().contains_key(name)
    }

    /// How many channels are subscribed.
    pub fn channel_count(&self) -> usize {
        self.channels.borrow().len()
    }

    /// Records a subscribed channel.
    pub fn add_channel(&self, name: String, channel: Channel) -> Rc<ChannelState> {
        let state = Rc::new(ChannelState {
            channel,
            name: name.clone(),
            seq: Cell::new(0),
            dropped: Cell::new(0),
        });
        self.channels.borrow_mut().insert(name, state.clone());
        state
    }

    /// Forgets a channel; its state if it was subscribed.
    pub fn remove_channel(&self, name: &str) -> Option<Rc<ChannelState>> {
        self.channels.borrow_mut().remove(name)
    }

    /// Forgets every channel, returning them.
    pub fn take_channels(&self) -> Vec<Rc<ChannelState>> {
        self.channels.borrow_mut().drain().map(|(_, state)| state).collect()
    }

    /// Queues a market event's frame on `channel`, or counts it dropped when the queue is full.
    fn deliver_market(&self, channel: &ChannelState, frame: &EventFrame, received_us: u64) {
        let seq = channel.seq.get() + 1;
        channel.seq.set(seq);
        let frame = frame.with_seq(seq);
        if !self.try_send(Outgoing::Text(frame, Some(received_us))) {
            channel.dropped.set(channel.dropped.get() + 1);
            self.lagged.set(true);
            self.market_dropped.increment(1);
        } else if self.lagged.get() && self.out.capacity() * 2 >= self.out.max_capacity() {
            // Caught up once the queue is half empty again: tell the client what it missed.
            self.flush_lagged();
        }
    }

    /// Sends the `lagged` notices owed; the client stays lagged while one does not fit.
    pub fn flush_lagged(&self) {
        if !self.lagged.get() {
            return;
        }
        let mut all_sent = true;
        for (name, channel) in self.channels.borrow().iter() {
            let dropped = channel.dropped.get();
            if dropped == 0 {
                continue;
            }
            let notice = json!({"type": "lagged", "channel": name, "dropped": dropped});
            if self.try_send(Outgoing::Text(control_frame(&notice), None)) {
                channel.dropped.set(0);
                metrics::counter!("keel_ws_lagged_total").increment(1);
            } else {
                all_sent = false;
            }
        }
        self.lagged.set(!all_sent);
    }

    /// How long the client has been lagging without catching up (`None` while it keeps up).
    pub fn lagging_for(&self) -> Option<std::time::Duration> {
        if !self.lagged.get() {
            self.lagging_since.set(None);
            return None;
        }
        let since = self.lagging_since.get().unwrap_or_else(Instant::now);
        self.lagging_since.set(Some(since));
        Some(since.elapsed())
    }
}

/// One connection's subscription to one stream, as the hub holds it.
#[derive(Debug)]
struct Member {
    connection: SubscriberId,
    channel: Rc<ChannelState>,
    outbound: Rc<Outbound>,
}

/// The hub's state, shared by its actor (which delivers) and the thread's connections (which
/// join and leave).
#[derive(Debug, Default)]
struct Members {
    streams: HashMap<StreamKey, Vec<Member>>,
}

/// The thread's hub: its feed subscriber id and where the feed sends.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The subscriber id the feeds know this hub by.
    pub id: SubscriberId,
    addr: Addr<HubActor>,
    members: Rc<RefCell<Members>>,
}

thread_local! {
    static HUB: RefCell<Option<Hub>> = const { RefCell::new(None) };
}

impl Hub {
    /// This thread's hub, started on first use with feed subscriber id `id()` and a mailbox of
    /// `mailbox` messages (`mailboxes.ws_hub`). The feed never waits on the hub, so the mailbox is
    /// sized for a few seconds of a busy venue; a full one loses the event for every connection on
    /// the thread.
    pub fn local(mailbox: usize, id: impl FnOnce() -> SubscriberId) -> Self {
        HUB.with(|hub| {
            let mut hub = hub.borrow_mut();
            if let Some(hub) = hub.as_ref()
                && hub.addr.connected()
            {
                return hub.clone();
            }
            let members = Rc::new(RefCell::new(Members::default()));
            let addr = HubActor { members: members.clone(), mailbox }.start();
            let started = Self { id: id(), addr, members };
            *hub = Some(started.clone());
            started
        })
    }

    /// Where the feed delivers to this hub.
    pub fn recipient(&self) -> Recipient<MarketData> {
        self.addr.clone().recipient()
    }

    /// Adds `connection`'s `channel` to the members of `key`. The caller has had the feed
    /// accept the hub's subscription; if the stream had no members here (its last one may have
    /// left meanwhile, unsubscribing the hub), the subscription is asked for again, behind that
    /// `Unsubscribe`.
    pub fn join(
        &self,
        key: StreamKey,
        connection: SubscriberId,
        channel: Rc<ChannelState>,
        outbound: Rc<Outbound>,
        feeds: &BTreeMap<VenueId, FeedAddress>,
    ) {
        let mut members = self.members.borrow_mut();
        let fresh = !members.streams.contains_key(&key);
        let stream = members.streams.entry(key.clone()).or_default();
        stream.retain(|m| m.connection != connection);
        stream.push(Member { connection, channel, outbound });
        let (venue, symbol, kind) = key;
        if fresh && let Some(feed) = feeds.get(&venue).and_then(|f| f.get()) {
            let subscribe =
                Subscribe { symbol, kind, subscriber: self.id, recipient: self.recipient() };
            actix_web::rt::spawn(async move {
                if let Err(err) = ask(&feed, subscribe, RESUBSCRIBE_DEADLINE, "feed").await {
                    tracing::warn!(%err, "market hub could not renew its feed subscription");
                }
            });
        }
    }

    /// Removes `connection` from `key`; the feed stops delivering the stream here once nobody on
    /// this thread wants it.
    pub fn leave(
        &self,
        key: &StreamKey,
        connection: SubscriberId,
        feeds: &BTreeMap<VenueId, FeedAddress>,
    ) {
        let mut members = self.members.borrow_mut();
        let Some(stream) = members.streams.get_mut(key) else { return };
        stream.retain(|m| m.connection != connection);
        if !stream.is_empty() {
            return;
        }
        members.streams.remove(key);
        let (venue, symbol, kind) = key;
        if let Some(feed) = feeds.get(venue).and_then(|f| f.get()) {
            let _ = feed.try_send(Unsubscribe {
                symbol: symbol.clone(),
                kind: *kind,
                subscriber: self.id,
            });
        }
    }
}

/// Receives the feed's events for the thread and writes them into the members' queues.
struct HubActor {
    members: Rc<RefCell<Members>>,
    mailbox: usize,
}

impl Actor for HubActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl HubActor {
    fn deliver(&self, event: &Arc<MarketEvent>) {
        let single;
        let kinds: &[StreamKind] = match event.stream_kind() {
            Some(kind) => {
                single = [kind];
                &single
            }
            // A gap: every subscribed stream of the symbol may have missed data.
            None => &StreamKind::ALL,
        };
        let members = self.members.borrow();
        let data = market_data_json(event);
        let ts = if event.exchange_ts > 0 { event.exchange_ts } else { event.received_us / 1000 };
        for kind in kinds {
            let key = (event.venue, event.symbol.clone(), *kind);
            let Some(stream) = members.streams.get(&key) else { continue };
            // Every member's channel has the stream's name; only the seq differs per client.
            let Some(first) = stream.first() else { continue };
            let frame = EventFrame::new(&first.channel.name, ts, &data);
            for member in stream {
                member.outbound.deliver_market(&member.channel, &frame, event.received_us);
            }
        }
    }
}

impl Handler<MarketData> for HubActor {
    type Result = ();

    fn handle(&mut self, MarketData(event): MarketData, _: &mut Context<Self>) {
        self.deliver(&event);
    }
}
