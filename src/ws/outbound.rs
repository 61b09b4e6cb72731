//! A connection's outbound side: a bounded queue of frames, shared on the connection's worker
//! thread by its actor and the market hub, and the HTTP response body that encodes that queue
//! straight into the socket's write buffer.
//!
//! actix-ws hands out a `Session` that feeds its own response body through a second channel; a
//! frame used to travel hub → queue → writer future → `Session` → channel → body. Here the body
//! *is* the queue's reader: the hub pushes a frame (a shared [`EventFrame`] and this client's
//! `seq`, no per-client text), and when the HTTP dispatcher next polls the body it writes every
//! queued frame's WebSocket header and bytes into one buffer. actix-ws still reads the socket
//! (`MessageStream`); its unused body is kept inside ours only so that dropping ours still tells
//! that stream the connection is gone.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::{BufMut, Bytes, BytesMut};
use actix_ws::CloseReason;
use serde_json::json;

use super::protocol::{Channel, EventFrame, control_frame};

/// One body poll writes at most this much (the dispatcher's own write buffer is 32 KiB).
const BATCH_BYTES: usize = 32 * 1024;
/// RFC 6455: control frames carry at most 125 bytes; a close reason 123 after its code.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// One frame waiting for the socket.
#[derive(Debug)]
pub enum Outgoing {
    /// A market event: the text shared by every client of the stream, this client's `seq`, and
    /// the feed's receive time (for tick-to-client latency).
    Market {
        /// The event's text around its `seq`.
        frame: Rc<EventFrame>,
        /// This client's `seq` on the channel.
        seq: u64,
        /// When the feed received the event (µs since the epoch).
        received_us: u64,
    },
    /// A whole text frame (control messages and bot events).
    Text(String),
    /// A heartbeat ping.
    Ping,
    /// The answer to the client's ping.
    Pong(Bytes),
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

/// What became of a frame offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Queued,
    /// The queue is at capacity: the client is not reading fast enough.
    Full,
    /// The connection is closing or gone.
    Closed,
}

/// The queue and what the body needs to know about the end of the connection.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Outgoing>,
    /// The close frame to send once the frames before it are out; nothing is queued after it.
    close: Option<CloseReason>,
    /// Set once the close frame was asked for (it may already be written).
    closed: bool,
    /// The response body is gone (the connection ended): nothing queued will be written.
    body_gone: bool,
    /// The body's task, while it waits for a frame.
    waker: Option<Waker>,
}

/// A connection's outbound side: its queue and its subscriptions, shared (on its thread) by the
/// connection, the hub and the response body.
#[derive(Debug)]
pub struct Outbound {
    queue: RefCell<Queue>,
    capacity: usize,
    channels: RefCell<HashMap<String, Rc<ChannelState>>>,
    /// Some market event could not be queued and the client has not been told yet.
    lagged: Cell<bool>,
    /// Since when market data has been dropped without the client catching up.
    lagging_since: Cell<Option<Instant>>,
    /// `keel_ws_dropped_total{channel="market"}`, resolved once (a lagging client drops many).
    market_dropped: metrics::Counter,
    /// `keel_ws_outbound_frames`: frames queued on every connection, raised as a frame is queued
    /// and lowered as it is written or discarded.
    depth: metrics::Gauge,
}

impl Outbound {
    /// An outbound side with a queue of `capacity` frames.
    pub fn new(capacity: usize) -> Rc<Self> {
        Rc::new(Self {
            queue: RefCell::default(),
            capacity: capacity.max(1),
            channels: RefCell::default(),
            lagged: Cell::new(false),
            lagging_since: Cell::new(None),
            market_dropped: metrics::counter!("keel_ws_dropped_total", "channel" => "market"),
            depth: metrics::gauge!("keel_ws_outbound_frames"),
        })
    }

    /// Queues a frame; false when the queue is full or the connection is closing or gone.
    pub fn try_send(&self, frame: Outgoing) -> bool {
        matches!(self.push(frame), Push::Queued)
    }

    /// Queues a frame, waking the body if it waits, or says why not.
    fn push(&self, frame: Outgoing) -> Push {
        let waker = {
            let mut queue = self.queue.borrow_mut();
            if queue.closed || queue.body_gone {
                return Push::Closed;
            }
            if queue.frames.len() >= self.capacity {
                return Push::Full;
            }
            queue.frames.push_back(frame);
            queue.waker.take()
        };
        self.depth.increment(1.0);
        if let Some(waker) = waker {
            waker.wake();
        }
        Push::Queued
    }

    /// Ends the connection: queued market frames are dropped (they are stale, and a client that
    /// is cut off must resync anyway), the other queued frames go out, then the close frame;
    /// nothing more is taken. The first reason given is the one sent.
    pub fn close(&self, reason: CloseReason) {
        let waker = {
            let mut queue = self.queue.borrow_mut();
            if queue.closed {
                return;
            }
            queue.closed = true;
            queue.close = Some(reason);
            let before = queue.frames.len();
            queue.frames.retain(|frame| !matches!(frame, Outgoing::Market { .. }));
            self.depth.decrement((before - queue.frames.len()) as f64);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the response body is gone: the HTTP connection ended.
    pub fn body_gone(&self) -> bool {
        self.queue.borrow().body_gone
    }

    /// Frames waiting for the socket.
    pub fn queued(&self) -> usize {
        self.queue.borrow().frames.len()
    }

    /// The channel called `name`, if subscribed.
    pub fn channel(&self, name: &str) -> Option<Rc<ChannelState>> {
        self.channels.borrow().get(name).cloned()
    }

    /// Frames the queue holds at most (`ws.outbound_queue`).
    pub fn capacity(&self) -> usize {
        self.capacity
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
    pub fn deliver_market(&self, channel: &ChannelState, frame: &Rc<EventFrame>, received_us: u64) {
        let seq = channel.seq.get() + 1;
        channel.seq.set(seq);
        match self.push(Outgoing::Market { frame: frame.clone(), seq, received_us }) {
            Push::Full => {
                channel.dropped.set(channel.dropped.get() + 1);
                self.lagged.set(true);
                self.market_dropped.increment(1);
            }
            Push::Queued if self.lagged.get() && self.queued() * 2 <= self.capacity => {
                // Caught up once the queue is half empty again: tell the client what it missed.
                self.flush_lagged();
            }
            // Closed: not a lagging client but one going away (its actor leaves the hub soon).
            Push::Queued | Push::Closed => {}
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
            if self.try_send(Outgoing::Text(control_frame(&notice))) {
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

impl Drop for Outbound {
    fn drop(&mut self) {
        // Frames still queued when no body ever took them (the body clears them as it goes).
        self.depth.decrement(self.queue.get_mut().frames.len() as f64);
    }
}

/// The WebSocket response body: encodes the connection's queue as it is polled.
pub struct FrameBody {
    outbound: Rc<Outbound>,
    /// actix-ws's own body, never polled: dropping it (with this one) ends its `MessageStream`.
    _reader_link: BoxBody,
    /// The close frame was written: the body ends.
    done: bool,
    /// Resolved once per connection, not looked up in the registry for every write.
    tick_to_client: metrics::Histogram,
    messages_out: metrics::Counter,
}

impl std::fmt::Debug for FrameBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBody").field("done", &self.done).finish_non_exhaustive()
    }
}

impl FrameBody {
    /// The body for `outbound`, holding actix-ws's body `reader_link` until the connection ends.
    pub fn new(outbound: Rc<Outbound>, reader_link: BoxBody) -> Self {
        Self {
            outbound,
            _reader_link: reader_link,
            done: false,
            tick_to_client: metrics::histogram!("keel_ws_tick_to_client_seconds"),
            messages_out: metrics::counter!("keel_ws_messages_out_total"),
        }
    }
}

impl MessageBody for FrameBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut queue = this.outbound.queue.borrow_mut();
        if queue.frames.is_empty() && queue.close.is_none() {
            match &queue.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => queue.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let mut buf = BytesMut::with_capacity(BATCH_BYTES.min(queue.frames.len() * 320 + 16));
        let mut written = 0u64;
        let mut oldest_market = None;
        while buf.len() < BATCH_BYTES {
            let Some(frame) = queue.frames.pop_front() else { break };
            if let Outgoing::Market { received_us, .. } = &frame {
                oldest_market.get_or_insert(*received_us);
            }
            encode(&frame, &mut buf);
            written += 1;
        }
        if queue.frames.is_empty()
            && let Some(reason) = queue.close.take()
        {
            encode_close(&reason, &mut buf);
            this.done = true;
        }
        drop(queue);
        this.outbound.depth.decrement(written as f64);
        this.messages_out.increment(written);
        // One sample per write, for its oldest market frame: the write's worst latency.
        if let Some(received_us) = oldest_market {
            let now = keel_venues::now_us();
            this.tick_to_client.record(now.saturating_sub(received_us) as f64 / 1e6);
        }
        Poll::Ready(Some(Ok(buf.freeze())))
    }
}

impl Drop for FrameBody {
    fn drop(&mut self) {
        let mut queue = self.outbound.queue.borrow_mut();
        queue.body_gone = true;
        self.outbound.depth.decrement(queue.frames.len() as f64);
        queue.frames.clear();
        queue.waker = None;
    }
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A final, unmasked (server to client) frame header for `len` payload bytes.
fn put_header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        buf.put_u8(126);
        buf.put_u16(len);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

/// Appends one frame.
fn encode(frame: &Outgoing, buf: &mut BytesMut) {
    match frame {
        Outgoing::Market { frame, seq, .. } => {
            let mut digits = itoa::Buffer::new();
            let seq = digits.format(*seq);
            let (head, tail) = frame.parts();
            put_header(buf, OP_TEXT, head.len() + seq.len() + tail.len());
            buf.put_slice(head.as_bytes());
            buf.put_slice(seq.as_bytes());
            buf.put_slice(tail.as_bytes());
        }
        Outgoing::Text(text) => {
            put_header(buf, OP_TEXT, text.len());
            buf.put_slice(text.as_bytes());
        }
        Outgoing::Ping => {
            put_header(buf, OP_PING, 4);
            buf.put_slice(b"keel");
        }
        Outgoing::Pong(bytes) => {
            let bytes = &bytes[..bytes.len().min(MAX_CONTROL_PAYLOAD)];
            put_header(buf, OP_PONG, bytes.len());
            buf.put_slice(bytes);
        }
    }
}

/// Appends a close frame: the code, then as much of the description as fits on a char boundary.
fn encode_close(reason: &CloseReason, buf: &mut BytesMut) {
    let mut description = reason.description.as_deref().unwrap_or("");
    let mut end = description.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !description.is_char_boundary(end) {
        end -= 1;
    }
    description = &description[..end];
    put_header(buf, OP_CLOSE, 2 + description.len());
    buf.put_u16(u16::from(reason.code));
    buf.put_slice(description.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use actix_codec::Decoder;
    use actix_http::ws::{Codec, Frame};
    use actix_web::body::MessageBody;
    use actix_ws::CloseCode;
    use metrics_util::debugging::DebugValue;

    use super::*;

    fn body(capacity: usize) -> (Rc<Outbound>, FrameBody) {
        let outbound = Outbound::new(capacity);
        let body = FrameBody::new(outbound.clone(), BoxBody::new(()));
        (outbound, body)
    }

    /// Polls the body once; `None` while it waits.
    async fn poll_once(body: &mut FrameBody) -> Option<Option<Bytes>> {
        poll_fn(|cx| match Pin::new(&mut *body).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Some(bytes))),
            Poll::Ready(None) => Poll::Ready(Some(None)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Decodes what the body wrote the way a client does.
    fn decode(bytes: &[u8]) -> Vec<Frame> {
        let mut codec = Codec::new().client_mode().max_size(1 << 20);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "a partial frame was left");
        frames
    }

    fn text(frame: &Frame) -> &str {
        match frame {
            Frame::Text(bytes) => std::str::from_utf8(bytes).unwrap(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[actix_web::test]
    async fn frames_of_every_kind_and_size_decode_as_a_client_reads_them() {
        let (outbound, mut body) = body(16);
        assert_eq!(poll_once(&mut body).await, None, "nothing queued: the body waits");
        let shared = Rc::new(EventFrame::new("market:sim:BTCUSDT:trades", 7, r#"{"p":"1"}"#));
        let medium = "m".repeat(300);
        let large = "l".repeat(70_000);
        for frame in [
            Outgoing::Market { frame: shared.clone(), seq: 41, received_us: 1 },
            Outgoing::Market { frame: shared, seq: 10_000_000, received_us: 2 },
            Outgoing::Text(medium.clone()),
            Outgoing::Text(large.clone()),
            Outgoing::Ping,
            Outgoing::Pong(Bytes::from(vec![7u8; 200])),
        ] {
            assert!(outbound.try_send(frame));
        }
        let mut bytes = Vec::new();
        while let Some(Some(chunk)) = poll_once(&mut body).await {
            bytes.extend_from_slice(&chunk);
        }
        let frames = decode(&bytes);
        assert_eq!(frames.len(), 6);
        let first: serde_json::Value = serde_json::from_str(text(&frames[0])).unwrap();
        assert_eq!(first["seq"], 41);
        assert_eq!(first["data"]["p"], "1");
        let second: serde_json::Value = serde_json::from_str(text(&frames[1])).unwrap();
        assert_eq!(second["seq"], 10_000_000);
        assert_eq!(text(&frames[2]), medium);
        assert_eq!(text(&frames[3]), large);
        assert!(matches!(&frames[4], Frame::Ping(p) if &p[..] == b"keel"));
        assert!(matches!(&frames[5], Frame::Pong(p) if p.len() == MAX_CONTROL_PAYLOAD));
    }

    #[actix_web::test]
    async fn a_full_queue_refuses_and_the_close_frame_ends_the_body_without_stale_market_data() {
        let (outbound, mut body) = body(3);
        let shared = Rc::new(EventFrame::new("market:sim:BTCUSDT:trades", 7, "{}"));
        assert!(outbound.try_send(Outgoing::Text("a".into())));
        assert!(outbound.try_send(Outgoing::Market { frame: shared, seq: 1, received_us: 1 }));
        assert!(outbound.try_send(Outgoing::Text("b".into())));
        assert!(!outbound.try_send(Outgoing::Text("c".into())), "over capacity");
        let description = "é".repeat(100);
        outbound.close(CloseReason { code: CloseCode::Again, description: Some(description) });
        outbound.close(CloseReason { code: CloseCode::Normal, description: None });
        assert!(!outbound.try_send(Outgoing::Text("d".into())), "nothing after the close");
        let chunk = poll_once(&mut body).await.flatten().unwrap();
        let frames = decode(&chunk);
        assert_eq!(frames.len(), 3, "the market frame was dropped: {frames:?}");
        assert_eq!(text(&frames[0]), "a");
        assert_eq!(text(&frames[1]), "b");
        let Frame::Close(Some(reason)) = &frames[2] else { panic!("{:?}", frames[2]) };
        assert_eq!(reason.code, CloseCode::Again, "the first close wins");
        let kept = reason.description.as_deref().unwrap();
        assert_eq!(kept, "é".repeat(61), "cut to 123 bytes on a char boundary");
        assert_eq!(poll_once(&mut body).await, Some(None), "the body ends after the close");
    }

    #[actix_web::test]
    async fn a_queued_frame_wakes_the_waiting_body_and_a_dropped_body_takes_nothing() {
        let (outbound, mut body) = body(4);
        let woken = poll_fn(|cx| {
            assert!(Pin::new(&mut body).poll_next(cx).is_pending());
            Poll::Ready(cx.waker().clone())
        })
        .await;
        assert!(outbound.queue.borrow().waker.as_ref().is_some_and(|w| w.will_wake(&woken)));
        assert!(outbound.try_send(Outgoing::Ping));
        assert!(outbound.queue.borrow().waker.is_none(), "the waker was used");
        drop(body);
        assert!(outbound.body_gone());
        assert_eq!(outbound.queued(), 0, "what was queued is freed with the body");
        assert!(!outbound.try_send(Outgoing::Ping));
    }

    #[actix_web::test]
    async fn the_depth_gauge_follows_frames_queued_written_and_discarded() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // The gauge is resolved when the queue is made: it stays on this recorder afterwards.
        let (outbound, mut body) = metrics::with_local_recorder(&recorder, || body(8));
        // A snapshot hands over the gauge's value and resets it: the level is their sum.
        let level = Cell::new(0.0);
        let depth = || {
            let snapshot = snapshotter.snapshot().into_vec();
            let name = "keel_ws_outbound_frames";
            let found = snapshot.iter().find(|(key, ..)| key.key().name() == name);
            match found.map(|(.., value)| value) {
                Some(DebugValue::Gauge(value)) => level.set(level.get() + value.into_inner()),
                other => panic!("{other:?}"),
            }
            level.get()
        };
        let shared = Rc::new(EventFrame::new("market:sim:BTCUSDT:trades", 7, "{}"));
        let market = |seq| Outgoing::Market { frame: shared.clone(), seq, received_us: 1 };
        for seq in 1..=3 {
            assert!(outbound.try_send(market(seq)));
        }
        assert!(outbound.try_send(Outgoing::Ping));
        assert_eq!(depth(), 4.0);
        while let Some(Some(_)) = poll_once(&mut body).await {}
        assert_eq!(depth(), 0.0, "written");
        for seq in 4..=6 {
            assert!(outbound.try_send(market(seq)));
        }
        assert!(outbound.try_send(Outgoing::Text("bot event".into())));
        outbound.close(CloseReason { code: CloseCode::Away, description: None });
        assert_eq!(depth(), 1.0, "the market frames were discarded with the close");
        drop(body);
        assert_eq!(depth(), 0.0, "the rest went with the body");
        drop(outbound);
        assert_eq!(depth(), 0.0);
    }

    #[test]
    fn market_frames_over_capacity_are_counted_and_the_client_told_once_it_catches_up() {
        let outbound = Outbound::new(4);
        let name = "market:sim:BTCUSDT:trades".to_owned();
        let channel = outbound.add_channel(name.clone(), Channel::parse(&name).unwrap());
        let frame = Rc::new(EventFrame::new(&name, 1, "{}"));
        for _ in 0..6 {
            outbound.deliver_market(&channel, &frame, 0);
        }
        assert_eq!((outbound.queued(), channel.dropped.get()), (4, 2));
        assert!(outbound.lagging_for().is_some());
        outbound.queue.borrow_mut().frames.clear();
        outbound.deliver_market(&channel, &frame, 0);
        assert_eq!(channel.seq.get(), 7, "every event took a seq, delivered or not");
        assert_eq!(channel.dropped.get(), 0, "the notice went out");
        let queue = outbound.queue.borrow();
        let Some(Outgoing::Text(notice)) = queue.frames.back() else { panic!() };
        let notice: serde_json::Value = serde_json::from_str(notice).unwrap();
        assert_eq!(notice["type"], "lagged");
        assert_eq!(notice["dropped"], 2);
        drop(queue);
        assert!(outbound.lagging_for().is_none());
    }
}
