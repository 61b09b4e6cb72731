//! [`BotsView`]: the bot definitions by owner, as the API lists them, readable from any thread
//! without a message to the bot supervisor.
//!
//! The supervisor owns every definition and stays the only writer: after each change to a bot
//! it republishes that owner's list here (the records and their JSON, serialised once). An HTTP
//! worker answering `GET /bots` reads it with one look-up in a concurrent map and clones a
//! reference-counted buffer: no actor hop, no serialisation per request. It shows what the
//! supervisor's own `ListBots` would answer at that moment.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;

use keel_core::bot::{BotRecord, UserId};

/// One owner's bots.
#[derive(Debug)]
pub struct OwnedBots {
    /// The definitions, in id order.
    pub records: Vec<BotRecord>,
    /// `records` as a JSON array.
    pub json: Bytes,
}

/// Every owner's bots. Cheap to clone; all clones share it.
#[derive(Debug, Clone, Default)]
pub struct BotsView {
    by_user: Arc<DashMap<UserId, Arc<OwnedBots>>>,
}

impl BotsView {
    /// The user's bots; `None` when they have none.
    pub fn get(&self, user_id: UserId) -> Option<Arc<OwnedBots>> {
        self.by_user.get(&user_id).map(|entry| entry.value().clone())
    }

    /// Replaces a user's list (the bot supervisor, after a change).
    pub(crate) fn set(&self, user_id: UserId, records: Vec<BotRecord>) {
        if records.is_empty() {
            self.by_user.remove(&user_id);
            return;
        }
        let json = match serde_json::to_vec(&records) {
            Ok(json) => Bytes::from(json),
            Err(err) => {
                // A BotRecord always serialises; were it not to, readers keep the last list.
                tracing::error!(user_id, error = %err, "a bot list does not serialise");
                return;
            }
        };
        self.by_user.insert(user_id, Arc::new(OwnedBots { records, json }));
    }

    /// Keeps only the users `keep` says to (a restarted supervisor drops owners gone meanwhile).
    pub(crate) fn retain(&self, keep: impl Fn(UserId) -> bool) {
        self.by_user.retain(|user, _| keep(*user));
    }
}
