//! Bot journal lines across nodes (cluster mode with `cluster.postgres_url`; docs/CLUSTER.md,
//! "The WebSocket relay").
//!
//! The node that runs a bot publishes each batch of its durable journal lines on core NATS
//! subject `{name}.user.{user_id}` (the [`RemoteEvents`] seam of the session directory): one
//! message per batch, JSON `{"node", "bot_id", "events"}`, in the order the bot published them.
//! A node with a WebSocket of that user subscribed to a bot that does not run here
//! [`follows`](UserEvents::follow) the user's subject, once per user per node while any
//! connection needs it, and hands each batch to the user's session as relayed lines
//! ([`SessionDirectory::deliver_relayed`]); the connection de-duplicates them by journal id.
//!
//! Core NATS delivers at most once: a batch is lost if the publisher's queue is full
//! ([`PUBLISH_QUEUE`], counted in `keel_cluster_user_events_dropped_total`), if NATS is down, or
//! if the follower is too slow. The subject is the user's, not the node's, so a bot that moves
//! with its user's lease keeps publishing where its followers listen; whether lines were lost
//! on the way is for the receiver to tell from the journal ids.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use futures_util::StreamExt as _;
use keel_core::bot::{BotId, UserId};
use keel_core::engine::BotEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Cluster;
use crate::session::{RemoteEvents, SessionDirectory};

/// Batches waiting to be published; one more is dropped (and counted).
pub const PUBLISH_QUEUE: usize = 8192;

/// One message on `{name}.user.{user_id}`.
#[derive(Debug, Serialize, Deserialize)]
struct Batch<N, E> {
    /// The publishing node (its own followers skip it: its sessions had the lines already).
    node: N,
    bot_id: BotId,
    events: E,
}

/// Publishes this node's bot lines and follows other nodes' for the users connected here.
/// Cheap to clone; all clones share it.
#[derive(Debug, Clone)]
pub struct UserEvents {
    client: async_nats::Client,
    name: String,
    node_id: String,
    sessions: SessionDirectory,
    queue: mpsc::Sender<(UserId, BotId, Arc<[BotEvent]>)>,
    /// The users followed now; an entry lives while a connection holds its [`Following`].
    following: Arc<tokio::sync::Mutex<HashMap<UserId, Weak<Following>>>>,
}

/// A user's subject followed by this node: the subscription ends when the last holder drops it.
#[derive(Debug)]
pub struct Following {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a user's subject cannot be followed.
#[derive(Debug, thiserror::Error)]
#[error("cannot follow the user's bot lines over NATS: {0}")]
pub struct FollowError(String);

impl Cluster {
    /// This node's [`UserEvents`], relaying to and from `sessions`, and its publishing task
    /// (started here: call it inside the runtime, once).
    pub fn user_events(&self, sessions: SessionDirectory) -> UserEvents {
        UserEvents::start(
            self.0.client.clone(),
            self.0.config.name.clone(),
            self.0.config.node_id.clone(),
            sessions,
        )
    }
}

/// The subject a user's bot lines go out on.
pub fn user_subject(name: &str, user_id: UserId) -> String {
    format!("{name}.user.{user_id}")
}

impl RemoteEvents for UserEvents {
    fn publish(&self, user_id: UserId, bot_id: BotId, events: &[BotEvent]) {
        if self.queue.try_send((user_id, bot_id, events.into())).is_err() {
            metrics::counter!("keel_cluster_user_events_dropped_total").increment(1);
        }
    }
}

impl UserEvents {
    /// Relays between `sessions` and the cluster `name` as node `node_id`, and starts the
    /// publishing task.
    fn start(
        client: async_nats::Client,
        name: String,
        node_id: String,
        sessions: SessionDirectory,
    ) -> Self {
        let (queue, mut batches) = mpsc::channel::<(UserId, BotId, Arc<[BotEvent]>)>(PUBLISH_QUEUE);
        let events = Self { client, name, node_id, sessions, queue, following: Arc::default() };
        let publisher = events.clone();
        tokio::spawn(async move {
            // One task, so each bot's batches leave in the order they were published.
            while let Some((user_id, bot_id, lines)) = batches.recv().await {
                let batch = Batch { node: publisher.node_id.as_str(), bot_id, events: &*lines };
                let Ok(payload) = serde_json::to_vec(&batch) else { continue };
                let subject = user_subject(&publisher.name, user_id);
                if let Err(err) = publisher.client.publish(subject, payload.into()).await {
                    metrics::counter!("keel_cluster_user_events_dropped_total").increment(1);
                    tracing::debug!(user_id, bot_id, error = %err, "bot lines not relayed");
                }
            }
        });
        events
    }

    /// Follows `user_id`'s subject (or joins this node's following of it): relayed lines reach
    /// the user's session here until every holder of the answer has dropped it. Returns once the
    /// NATS server has the subscription, so every batch published after that arrives.
    ///
    /// # Errors
    /// NATS is not connected, or refused the subscription or could not confirm it.
    pub async fn follow(&self, user_id: UserId) -> Result<Arc<Following>, FollowError> {
        let mut following = self.following.lock().await;
        if let Some(existing) = following.get(&user_id).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(FollowError("NATS is not connected".to_owned()));
        }
        let mut subscription = self
            .client
            .subscribe(user_subject(&self.name, user_id))
            .await
            .map_err(|err| FollowError(err.to_string()))?;
        self.client.flush().await.map_err(|err| FollowError(err.to_string()))?;
        let (node_id, sessions) = (self.node_id.clone(), self.sessions.clone());
        let task = tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                match decode(&message.payload, &node_id) {
                    Some((bot_id, events)) => sessions.deliver_relayed(user_id, bot_id, events),
                    None => continue,
                }
            }
        });
        let handle = Arc::new(Following { task });
        following.retain(|_, weak| weak.strong_count() > 0);
        following.insert(user_id, Arc::downgrade(&handle));
        Ok(handle)
    }
}

/// A batch from another node: its bot and lines. `None` for this node's own batches and for a
/// payload that does not decode (logged).
fn decode(payload: &[u8], me: &str) -> Option<(BotId, Arc<[BotEvent]>)> {
    match serde_json::from_slice::<Batch<String, Vec<BotEvent>>>(payload) {
        Ok(batch) if batch.node == me => None,
        Ok(batch) => Some((batch.bot_id, batch.events.into())),
        Err(err) => {
            tracing::warn!(error = %err, "a relayed batch of bot lines does not decode");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_core::engine::BotEventKind;

    use super::*;

    fn line(id: u64) -> BotEvent {
        BotEvent {
            id,
            ts: 1_000 + id,
            kind: BotEventKind::Log { level: "info".into(), message: format!("line {id}") },
        }
    }

    use actix::prelude::*;

    use crate::session::{BotEvents, SessionEvent};

    /// A connection that keeps the bot lines its session hands it.
    struct Connection(tokio::sync::mpsc::UnboundedSender<BotEvents>);

    impl Actor for Connection {
        type Context = Context<Self>;
    }

    impl Handler<SessionEvent> for Connection {
        type Result = ();
        fn handle(&mut self, event: SessionEvent, _: &mut Context<Self>) {
            if let SessionEvent::Bot(batch) = event {
                let _ = self.0.send(batch);
            }
        }
    }

    /// Node `node` of cluster `name` with user 7 connected: its relay and what user 7's
    /// connection there receives.
    async fn node(
        url: &str,
        name: &str,
        node: &str,
    ) -> (UserEvents, tokio::sync::mpsc::UnboundedReceiver<BotEvents>) {
        let client = async_nats::connect(url).await.expect("NATS");
        let sessions = SessionDirectory::default();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let connection = Connection(tx).start().recipient();
        sessions.attach(7, 1, connection).await.expect("the session starts");
        let events = UserEvents::start(client, name.to_owned(), node.to_owned(), sessions.clone());
        sessions.set_remote(Arc::new(events.clone()));
        (events, rx)
    }

    #[actix_rt::test]
    async fn a_nodes_lines_reach_a_follower_once_and_in_order_and_stop_when_it_is_dropped() {
        let Ok(url) = std::env::var("KEEL_TEST_NATS_URL") else {
            eprintln!("user events: skipped: KEEL_TEST_NATS_URL is not set");
            return;
        };
        let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
        let (owner, mut at_owner) = node(&url, &name, "n1").await;
        let (other, mut at_other) = node(&url, &name, "n2").await;
        // Both follow: the owner skips its own batches, the other node relays them.
        let own = owner.follow(7).await.unwrap();
        let first = other.follow(7).await.unwrap();
        let second = other.follow(7).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one following per user per node");

        owner.sessions.publish(7, 9, &[line(1), line(2)]);
        owner.sessions.publish(7, 9, &[line(3)]);
        let local = at_owner.recv().await.unwrap();
        assert!(!local.relayed && local.events.len() == 2, "the owner's own session as before");
        let mut relayed = Vec::new();
        while relayed.len() < 3 {
            let batch = tokio::time::timeout(Duration::from_secs(5), at_other.recv())
                .await
                .expect("relayed within 5 s")
                .unwrap();
            assert!(batch.relayed && batch.bot_id == 9, "{batch:?}");
            relayed.extend(batch.events.iter().map(|e| e.id));
        }
        assert_eq!(relayed, [1, 2, 3]);
        assert_eq!(at_owner.recv().await.unwrap().events.len(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(at_owner.try_recv().is_err(), "the owner skipped its own relayed batches");

        // Nobody holds the following any more: nothing more arrives.
        drop((first, second, own));
        tokio::task::yield_now().await;
        owner.sessions.publish(7, 9, &[line(4)]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(at_other.try_recv().is_err(), "no longer followed");
    }

    #[test]
    fn a_batch_decodes_on_another_node_and_is_skipped_on_its_own() {
        let lines = [line(4), line(5)];
        let payload =
            serde_json::to_vec(&Batch { node: "n1", bot_id: 9, events: &lines[..] }).unwrap();
        let (bot, events) = decode(&payload, "n2").expect("another node's batch");
        assert_eq!((bot, &*events), (9, &lines[..]));
        assert!(decode(&payload, "n1").is_none(), "a node skips its own batches");
        assert!(decode(b"{\"node\":\"n1\"}", "n2").is_none(), "a bad payload is skipped");
    }
}
