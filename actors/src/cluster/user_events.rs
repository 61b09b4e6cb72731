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
        let (queue, mut batches) = mpsc::channel::<(UserId, BotId, Arc<[BotEvent]>)>(PUBLISH_QUEUE);
        let events = UserEvents {
            client: self.0.client.clone(),
            name: self.0.config.name.clone(),
            node_id: self.0.config.node_id.clone(),
            sessions,
            queue,
            following: Arc::default(),
        };
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
    /// Follows `user_id`'s subject (or joins this node's following of it): relayed lines reach
    /// the user's session here until every holder of the answer has dropped it. Returns once the
    /// NATS server has the subscription, so every batch published after that arrives.
    ///
    /// # Errors
    /// NATS refused the subscription or could not confirm it.
    pub async fn follow(&self, user_id: UserId) -> Result<Arc<Following>, FollowError> {
        let mut following = self.following.lock().await;
        if let Some(existing) = following.get(&user_id).and_then(Weak::upgrade) {
            return Ok(existing);
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
    use keel_core::engine::BotEventKind;

    use super::*;

    fn line(id: u64) -> BotEvent {
        BotEvent {
            id,
            ts: 1_000 + id,
            kind: BotEventKind::Log { level: "info".into(), message: format!("line {id}") },
        }
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
