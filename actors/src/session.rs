//! Per-user sessions: one `SessionActor` per user with live client connections, relaying what the
//! user's bots do to those connections.
//!
//! The [`SessionDirectory`] is the sessions' supervisor and registry in one: a connection that
//! authenticates calls [`SessionDirectory::attach`], which starts the user's session on demand; the
//! session stops itself when its last connection leaves. A session holds no durable state (bot
//! events are in each bot's journal, and clients resync from `GET /bots/{id}/events?after=seq`),
//! so a session that dies is simply started again by the next connection that needs it.
//!
//! Bots publish after their changes are durable ([`SessionDirectory::publish`]): a look-up in the
//! directory, and a `try_send` to the owner's session when one exists. Nothing here waits on a
//! client. A session that cannot take an event (its mailbox is full) tells every connection to
//! close with 1013, because bot events are never dropped silently.
//!
//! In cluster mode with Postgres, [`SessionDirectory::set_remote`] installs a [`RemoteEvents`]
//! (the cluster's [`UserEvents`](crate::cluster::user_events::UserEvents)): every published batch
//! also goes to the other nodes, and lines relayed from them arrive through
//! [`SessionDirectory::deliver_relayed`], marked [`BotEvents::relayed`]. On a single node nothing
//! is installed and publishing does no more than before.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use actix::prelude::*;

use keel_core::bot::{BotId, UserId};
use keel_core::engine::BotEvent;

/// A session's mailbox unless [`SessionDirectory::new`] sets `mailboxes.session`. A full one makes
/// every connection of the user close with 1013 and resync.
pub const SESSION_MAILBOX: usize = 4096;
/// How long attaching to a session may take.
const ATTACH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Bot events for one user's connections.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BotEvents {
    /// The bot.
    pub bot_id: BotId,
    /// Its new journal lines, durable, in order.
    pub events: Arc<[BotEvent]>,
    /// Relayed from the node that runs the bot (cluster mode): only the channels that asked for
    /// the relay take them (a `bot:{id}` channel of a bot on another node, `account`).
    pub relayed: bool,
}

/// Where a node's published bot lines also go (the cluster's other nodes). Called on the
/// publishing actor's thread once the lines are durable: must not block.
pub trait RemoteEvents: std::fmt::Debug + Send + Sync {
    /// Hands `user_id`'s bot `bot_id`'s durable lines on.
    fn publish(&self, user_id: UserId, bot_id: BotId, events: &[BotEvent]);
}

/// A bot's indicator values for one user's connections. Not a journal line: it may be dropped
/// when a mailbox or a connection's queue is full (the chart reads the series again from
/// `GET /bots/{id}/indicators`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BotIndicator {
    /// The bot.
    pub bot_id: BotId,
    /// Event time of the strategy call, ms since the epoch.
    pub ts: u64,
    /// The event's `data`, JSON: `{"kind":"indicator","ts":…,"values":{…}}`.
    pub data: Arc<str>,
}

/// What a session tells a connection.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum SessionEvent {
    /// Bot events.
    Bot(BotEvents),
    /// A bot's indicator values.
    Indicator(BotIndicator),
    /// Events were lost on the way: close (1013) so the client reconnects and resyncs.
    Overflow,
    /// These login sessions were revoked (logout, logout everywhere, a password change, account
    /// deletion): a connection authenticated with one of them closes (4401).
    Revoked(Arc<[u64]>),
}

/// Identifies a connection within its session.
pub type ConnectionId = u64;

/// Adds a connection to its user's session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Attach {
    id: ConnectionId,
    recipient: Recipient<SessionEvent>,
    /// Answered once attached; dropped unanswered if the session stopped first.
    attached: tokio::sync::oneshot::Sender<()>,
}

/// Removes a connection.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Detach(pub ConnectionId);

/// One user's session.
#[derive(Debug)]
pub struct SessionActor {
    user_id: UserId,
    directory: SessionDirectory,
    connections: Vec<(ConnectionId, Recipient<SessionEvent>)>,
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.directory.mailbox);
        metrics::gauge!("keel_sessions").increment(1.0);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!("keel_sessions").decrement(1.0);
        self.directory.forget(self.user_id, &ctx.address());
    }
}

impl Handler<Attach> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        self.connections.push((msg.id, msg.recipient));
        let _ = msg.attached.send(());
    }
}

impl Handler<Detach> for SessionActor {
    type Result = ();

    fn handle(&mut self, Detach(id): Detach, ctx: &mut Context<Self>) {
        self.connections.retain(|(c, r)| *c != id && r.connected());
        if self.connections.is_empty() {
            // Idle: the next connection starts a new one.
            self.directory.forget(self.user_id, &ctx.address());
            ctx.stop();
        }
    }
}

impl Handler<BotEvents> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: BotEvents, _: &mut Context<Self>) {
        self.connections.retain(|(_, recipient)| {
            match recipient.try_send(SessionEvent::Bot(msg.clone())) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    // This connection cannot keep up; it must not miss events silently. Rare, and
                    // must arrive, so `do_send` (it is the last message the connection gets).
                    metrics::counter!("keel_ws_dropped_total", "channel" => "bot").increment(1);
                    recipient.do_send(SessionEvent::Overflow);
                    false
                }
                Err(SendError::Closed(_)) => false,
            }
        });
    }
}

impl Handler<BotIndicator> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: BotIndicator, _: &mut Context<Self>) {
        self.connections.retain(|(_, recipient)| {
            match recipient.try_send(SessionEvent::Indicator(msg.clone())) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    metrics::counter!("keel_ws_dropped_total", "channel" => "indicator")
                        .increment(1);
                    true
                }
                Err(SendError::Closed(_)) => false,
            }
        });
    }
}

impl Handler<SessionEvent> for SessionActor {
    type Result = ();

    /// `Overflow` from the directory: this session lost events; every connection must resync.
    fn handle(&mut self, msg: SessionEvent, ctx: &mut Context<Self>) {
        match msg {
            SessionEvent::Overflow => {
                for (_, recipient) in self.connections.drain(..) {
                    recipient.do_send(SessionEvent::Overflow);
                }
                self.directory.forget(self.user_id, &ctx.address());
                ctx.stop();
            }
            SessionEvent::Revoked(sessions) => {
                // Rare and must arrive (a connection left open would outlive its session):
                // `do_send`. Each connection knows its own login session and decides.
                for (_, recipient) in &self.connections {
                    recipient.do_send(SessionEvent::Revoked(sessions.clone()));
                }
            }
            SessionEvent::Bot(events) => self.handle(events, ctx),
            SessionEvent::Indicator(indicator) => self.handle(indicator, ctx),
        }
    }
}

/// Where each user's session is. Cheap to clone; all clones share it.
#[derive(Debug, Clone)]
pub struct SessionDirectory {
    sessions: Arc<RwLock<HashMap<UserId, Addr<SessionActor>>>>,
    /// Capacity of each session's mailbox.
    mailbox: usize,
    /// Where published lines also go, in cluster mode with Postgres.
    remote: Arc<OnceLock<Arc<dyn RemoteEvents>>>,
}

impl Default for SessionDirectory {
    /// A directory whose sessions have [`SESSION_MAILBOX`]-message mailboxes.
    fn default() -> Self {
        Self::new(SESSION_MAILBOX)
    }
}

impl SessionDirectory {
    /// An empty directory whose sessions have mailboxes of `mailbox` messages.
    pub fn new(mailbox: usize) -> Self {
        Self { sessions: Arc::default(), mailbox, remote: Arc::default() }
    }

    /// Sends every batch published from now on to `remote` as well (once; later calls are
    /// ignored). Every clone of the directory shares it.
    pub fn set_remote(&self, remote: Arc<dyn RemoteEvents>) {
        let _ = self.remote.set(remote);
    }

    /// The user's running session, if any.
    pub fn get(&self, user_id: UserId) -> Option<Addr<SessionActor>> {
        let sessions = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&user_id).filter(|a| a.connected()).cloned()
    }

    /// Adds a connection to the user's session, starting it (on the calling arbiter) if needed,
    /// and waits until the session has it. Returns the session, to [`Detach`] from when the
    /// connection ends; `None` if no session would take it.
    pub async fn attach(
        &self,
        user_id: UserId,
        id: ConnectionId,
        recipient: Recipient<SessionEvent>,
    ) -> Option<Addr<SessionActor>> {
        // A session that was stopping as the connection arrived drops the request: try again,
        // and the next attempt starts a fresh session.
        for _ in 0..3 {
            let (attached, ack) = tokio::sync::oneshot::channel();
            let addr =
                self.try_attach(user_id, Attach { id, recipient: recipient.clone(), attached });
            if let Ok(Ok(())) = tokio::time::timeout(ATTACH_DEADLINE, ack).await {
                return Some(addr);
            }
            self.forget(user_id, &addr);
        }
        None
    }

    fn try_attach(&self, user_id: UserId, attach: Attach) -> Addr<SessionActor> {
        let mut sessions = self.sessions.write().unwrap_or_else(PoisonError::into_inner);
        let addr = match sessions.get(&user_id).filter(|a| a.connected()) {
            Some(addr) => addr.clone(),
            None => {
                let session =
                    SessionActor { user_id, directory: self.clone(), connections: Vec::new() };
                let addr = session.start();
                sessions.insert(user_id, addr.clone());
                addr
            }
        };
        // Rare (once per connection) and acknowledged: `do_send`.
        addr.do_send(attach);
        addr
    }

    /// Hands a bot's durable events to its owner's session, if the owner is connected, and to
    /// the other nodes when [`SessionDirectory::set_remote`] installed them.
    pub fn publish(&self, user_id: UserId, bot_id: BotId, events: &[BotEvent]) {
        if events.is_empty() {
            return;
        }
        if let Some(remote) = self.remote.get() {
            remote.publish(user_id, bot_id, events);
        }
        self.deliver(user_id, BotEvents { bot_id, events: events.into(), relayed: false });
    }

    /// Hands lines relayed from the node that runs the bot to the user's session here, if the
    /// user is connected here. They go to no other node.
    pub fn deliver_relayed(&self, user_id: UserId, bot_id: BotId, events: Arc<[BotEvent]>) {
        if events.is_empty() {
            return;
        }
        self.deliver(user_id, BotEvents { bot_id, events, relayed: true });
    }

    fn deliver(&self, user_id: UserId, message: BotEvents) {
        let Some(session) = self.get(user_id) else { return };
        match session.try_send(message) {
            Ok(()) => {}
            Err(SendError::Full(_)) => {
                metrics::counter!("keel_ws_dropped_total", "channel" => "bot").increment(1);
                session.do_send(SessionEvent::Overflow);
            }
            Err(SendError::Closed(_)) => {}
        }
    }

    /// Hands a bot's indicator values to its owner's session, if the owner is connected; dropped
    /// (and counted) when the session's mailbox is full.
    pub fn publish_indicator(&self, user_id: UserId, indicator: BotIndicator) {
        let Some(session) = self.get(user_id) else { return };
        if let Err(SendError::Full(_)) = session.try_send(indicator) {
            metrics::counter!("keel_ws_dropped_total", "channel" => "indicator").increment(1);
        }
    }

    /// Tells the user's connections that these login sessions were revoked; those authenticated
    /// with one of them close. (Connections also check the revocation list every second, so one
    /// that was not attached yet closes too.)
    pub fn revoke(&self, user_id: UserId, sessions: &[u64]) {
        if sessions.is_empty() {
            return;
        }
        if let Some(session) = self.get(user_id) {
            session.do_send(SessionEvent::Revoked(sessions.into()));
        }
    }

    /// Whether anyone of `user_id` is connected (so bots skip copying events otherwise).
    pub fn is_connected(&self, user_id: UserId) -> bool {
        self.get(user_id).is_some()
    }

    fn forget(&self, user_id: UserId, addr: &Addr<SessionActor>) {
        let mut sessions = self.sessions.write().unwrap_or_else(PoisonError::into_inner);
        if sessions.get(&user_id).is_some_and(|a| a == addr) {
            sessions.remove(&user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that ignores what its session tells it.
    struct Connection;

    impl Actor for Connection {
        type Context = Context<Self>;
    }

    impl Handler<SessionEvent> for Connection {
        type Result = ();
        fn handle(&mut self, _: SessionEvent, _: &mut Context<Self>) {}
    }

    fn events() -> BotEvents {
        BotEvents { bot_id: 1, events: Vec::<BotEvent>::new().into(), relayed: false }
    }

    #[actix_rt::test]
    async fn a_session_takes_as_many_events_as_its_configured_mailbox_holds() {
        const CAPACITY: usize = 4;
        let directory = SessionDirectory::new(CAPACITY);
        let connection = Connection.start().recipient();
        let session = directory.attach(7, 1, connection).await.expect("the session starts");
        // Nothing below yields, so the session is not polled and its mailbox only fills. actix
        // parks a sender on the message that reaches the capacity and refuses its next one.
        for n in 0..CAPACITY {
            assert!(session.try_send(events()).is_ok(), "event {n} was refused");
        }
        assert!(matches!(session.try_send(events()), Err(SendError::Full(_))));

        // With the default capacity the same burst and one more event fit.
        let directory = SessionDirectory::default();
        let connection = Connection.start().recipient();
        let session = directory.attach(7, 1, connection).await.expect("the session starts");
        for n in 0..=CAPACITY {
            assert!(session.try_send(events()).is_ok(), "event {n} was refused");
        }
    }
}
