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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use keel_actors::feed::{FeedAddress, MarketData, Subscribe, SubscriberId, Unsubscribe};
use keel_actors::mailbox::ask;
use keel_core::market::{MarketEvent, StreamKind, Symbol, VenueId};

use super::outbound::{ChannelState, Outbound};
use super::protocol::{EventFrame, market_data_json};

/// One market stream of one venue.
pub type StreamKey = (VenueId, Symbol, StreamKind);

/// How long renewing the hub's feed subscription may take.
const RESUBSCRIBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

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
            let frame = Rc::new(EventFrame::new(&first.channel.name, ts, &data));
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
