//! The `notify_channels` tree, `pair_key(user, channel)` → [`ChannelRecord`], and the rules
//! held in memory (who wants which event where) so a bot's write asks no tree whether anyone
//! listens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use keel_core::notify::EventKind;
use serde::{Deserialize, Serialize};

use super::{ChannelView, NotifyError};
use crate::store::{Store, StoreError, decode, encode, id_key, pair_key, trees};
use crate::vault::Envelope;

/// Where a channel sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// HTTP POST of the signed JSON event.
    Webhook {
        /// `http(s)://…`.
        url: String,
    },
    /// A Telegram chat, through the Bot API.
    Telegram {
        /// The chat's id (or `@channel`).
        chat_id: String,
    },
}

impl Target {
    /// `webhook` or `telegram`: the API's `kind`, and the metrics' `channel` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Telegram { .. } => "telegram",
        }
    }
}

/// A stored channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// Its id.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// Where it sends.
    pub target: Target,
    /// What it wants, sorted, no duplicates.
    pub events: Vec<EventKind>,
    /// The signing secret (webhook) or bot token (Telegram), sealed by the vault.
    pub secret: Envelope,
    /// Created, ms since the epoch.
    pub created_at_ms: u64,
}

impl From<&ChannelRecord> for ChannelView {
    fn from(r: &ChannelRecord) -> Self {
        let (url, chat_id) = match &r.target {
            Target::Webhook { url } => (Some(url.clone()), None),
            Target::Telegram { chat_id } => (None, Some(chat_id.clone())),
        };
        Self {
            id: r.id,
            kind: r.target.kind().to_owned(),
            url,
            chat_id,
            events: r.events.clone(),
            created_at_ms: r.created_at_ms,
        }
    }
}

/// One user's rules: each channel and its events.
type Rules = HashMap<u64, Vec<(u64, Vec<EventKind>)>>;

/// The channels tree and its rules.
#[derive(Debug, Clone)]
pub struct Channels {
    tree: sled::Tree,
    rules: Arc<RwLock<Rules>>,
    /// Channels in all: while none exist, a bot's write skips even the owner lookup.
    total: Arc<AtomicUsize>,
}

impl Channels {
    /// Opens the tree and loads the rules.
    ///
    /// # Errors
    /// The store failed or a row does not decode.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let tree = store.tree(trees::NOTIFY_CHANNELS)?;
        let mut rules = Rules::new();
        let mut total = 0;
        for row in tree.iter().values() {
            let record: ChannelRecord = decode(&row?)?;
            rules.entry(record.user_id).or_default().push((record.id, record.events));
            total += 1;
        }
        let total = Arc::new(AtomicUsize::new(total));
        Ok(Self { tree, rules: Arc::new(RwLock::new(rules)), total })
    }

    /// Whether any user has a channel.
    pub fn any(&self) -> bool {
        self.total.load(Ordering::Relaxed) > 0
    }

    /// The channels of `user_id` that want `kind`.
    pub fn subscribers(&self, user_id: u64, kind: EventKind) -> Vec<u64> {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        rules.get(&user_id).map_or_else(Vec::new, |channels| {
            channels
                .iter()
                .filter(|(_, events)| events.contains(&kind))
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// Whether `user_id` has any channel (the common "no" costs one map lookup).
    pub fn has_any(&self, user_id: u64) -> bool {
        self.rules.read().unwrap_or_else(PoisonError::into_inner).contains_key(&user_id)
    }

    /// Users with a channel that wants `kind`.
    pub fn users_wanting(&self, kind: EventKind) -> Vec<u64> {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        rules
            .iter()
            .filter(|(_, channels)| channels.iter().any(|(_, events)| events.contains(&kind)))
            .map(|(user, _)| *user)
            .collect()
    }

    /// How many channels `user_id` has.
    pub fn count(&self, user_id: u64) -> usize {
        self.rules.read().unwrap_or_else(PoisonError::into_inner).get(&user_id).map_or(0, Vec::len)
    }

    /// Stores a channel (not yet durable: commit before acknowledging).
    ///
    /// # Errors
    /// The store failed.
    pub fn insert(&self, record: &ChannelRecord) -> Result<(), NotifyError> {
        self.tree.insert(pair_key(record.user_id, record.id), encode(record)?)?;
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        rules.entry(record.user_id).or_default().push((record.id, record.events.clone()));
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One channel of a user's.
    ///
    /// # Errors
    /// The store failed.
    pub fn get(&self, user_id: u64, id: u64) -> Result<Option<ChannelRecord>, NotifyError> {
        Ok(self.tree.get(pair_key(user_id, id))?.map(|raw| decode(&raw)).transpose()?)
    }

    /// A user's channels, oldest first.
    ///
    /// # Errors
    /// The store failed.
    pub fn list(&self, user_id: u64) -> Result<Vec<ChannelRecord>, NotifyError> {
        self.tree.scan_prefix(id_key(user_id)).values().map(|raw| Ok(decode(&raw?)?)).collect()
    }

    /// Every channel (for `keel vault rotate`).
    ///
    /// # Errors
    /// The store failed.
    pub fn all(&self) -> Result<Vec<ChannelRecord>, NotifyError> {
        self.tree.iter().values().map(|raw| Ok(decode(&raw?)?)).collect()
    }

    /// Rewrites a channel's row as it is (after a re-wrap of its secret).
    ///
    /// # Errors
    /// The store failed.
    pub fn put(&self, record: &ChannelRecord) -> Result<(), NotifyError> {
        self.tree.insert(pair_key(record.user_id, record.id), encode(record)?)?;
        Ok(())
    }

    /// Deletes one channel of a user's.
    ///
    /// # Errors
    /// [`NotifyError::NotFound`] when the user has no such channel.
    pub fn remove(&self, user_id: u64, id: u64) -> Result<(), NotifyError> {
        self.tree.remove(pair_key(user_id, id))?.ok_or(NotifyError::NotFound)?;
        self.total.fetch_sub(1, Ordering::Relaxed);
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(channels) = rules.get_mut(&user_id) {
            channels.retain(|(channel, _)| *channel != id);
            if channels.is_empty() {
                rules.remove(&user_id);
            }
        }
        Ok(())
    }

    /// Replaces a user's channels with `channels` (cluster mode: this node's working copy of
    /// what Postgres holds, on taking the user).
    ///
    /// # Errors
    /// The store failed.
    pub fn replace_user(
        &self,
        user_id: u64,
        channels: &[ChannelRecord],
    ) -> Result<(), NotifyError> {
        self.remove_user(user_id)?;
        for channel in channels.iter().filter(|c| c.user_id == user_id) {
            self.insert(channel)?;
        }
        Ok(())
    }

    /// Deletes every channel (cluster mode: the working copies an earlier run left).
    ///
    /// # Errors
    /// The store failed.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.tree.clear()?;
        self.total.store(0, Ordering::Relaxed);
        self.rules.write().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }

    /// Deletes every channel of a user's; returns how many.
    ///
    /// # Errors
    /// The store failed.
    pub fn remove_user(&self, user_id: u64) -> Result<usize, NotifyError> {
        let keys: Vec<_> =
            self.tree.scan_prefix(id_key(user_id)).keys().collect::<Result<_, _>>()?;
        let mut removed = 0;
        for key in &keys {
            if self.tree.remove(key)?.is_some() {
                removed += 1;
            }
        }
        self.total.fetch_sub(removed, Ordering::Relaxed);
        self.rules.write().unwrap_or_else(PoisonError::into_inner).remove(&user_id);
        Ok(removed)
    }
}
