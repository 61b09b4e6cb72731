//! What the API does with channels: create one (its secret sealed by the vault, a webhook's
//! signing secret generated here and shown once), delete one. In cluster mode with
//! `postgres_url` both commit in Postgres under the owner's fence before the working copy
//! changes and the answer goes.

use actix::Addr;
use keel_core::notify::EventKind;
use rand::RngCore;
use secrecy::SecretString;

use super::NotifyError;
use super::channels::{ChannelRecord, Target};
use super::outbox::Notifications;
use crate::identity::now_ms;
use crate::mailbox::ask;
use crate::vault::Vault;
use crate::vault::notify::{SealChannelSecret, TELEGRAM_TOKEN_FIELD, WEBHOOK_SECRET_FIELD};

/// Prefix of generated webhook signing secrets (part of the secret: the HMAC key is the whole
/// string).
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated signing secret.
const WEBHOOK_SECRET_BYTES: usize = 32;

/// A channel to create.
pub struct NewChannel {
    /// Owner.
    pub user_id: u64,
    /// Where it sends.
    pub target: Target,
    /// What it wants (checked).
    pub events: Vec<EventKind>,
    /// A Telegram channel's bot token; a webhook's secret is generated.
    pub bot_token: Option<SecretString>,
}

impl std::fmt::Debug for NewChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewChannel")
            .field("user_id", &self.user_id)
            .field("target", &self.target)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Notifications {
    /// Creates a channel: its secret sealed by `vault`, stored, durable when this returns.
    /// Answers the record and, for a webhook, the signing secret (shown to the owner once).
    ///
    /// # Errors
    /// [`NotifyError::Limit`] past `max` channels; the vault or the store failed.
    pub async fn create_channel(
        &self,
        vault: &Addr<Vault>,
        new: NewChannel,
        max: usize,
        deadline: std::time::Duration,
    ) -> Result<(ChannelRecord, Option<SecretString>), NotifyError> {
        if self.channels().count(new.user_id) >= max {
            return Err(NotifyError::Limit(max));
        }
        // With Postgres: the id from its identity column (unique across nodes), and the write
        // made under the owner's fence.
        let fence = match self.record() {
            Some(record) => Some(record.fence(new.user_id).await?.ok_or(NotifyError::Moving)?),
            None => None,
        };
        let id = match self.record() {
            Some(record) => record.table.next_channel_id().await?,
            None => self.store().next_id()?,
        };
        let (field, secret, shown) = match (&new.target, new.bot_token) {
            (Target::Telegram { .. }, Some(token)) => (TELEGRAM_TOKEN_FIELD, token, None),
            _ => {
                let mut raw = [0u8; WEBHOOK_SECRET_BYTES];
                rand::rng().fill_bytes(&mut raw);
                let secret =
                    SecretString::from(format!("{WEBHOOK_SECRET_PREFIX}{}", hex::encode(raw)));
                (WEBHOOK_SECRET_FIELD, secret.clone(), Some(secret))
            }
        };
        let seal = SealChannelSecret { user_id: new.user_id, channel_id: id, field, secret };
        let sealed = ask(vault, seal, deadline, "vault").await??;
        let record = ChannelRecord {
            id,
            user_id: new.user_id,
            target: new.target,
            events: new.events,
            secret: sealed,
            created_at_ms: now_ms(),
        };
        if let (Some(table), Some(fence)) = (self.record().map(|r| &r.table), &fence) {
            table.insert_channel(&record, fence).await?.map_err(|_| NotifyError::Moving)?;
        }
        self.channels().insert(&record)?;
        self.store().commit().await?;
        Ok((record, shown))
    }

    /// Deletes a channel of a user's; durable when this returns. Its pending deliveries fail
    /// ("channel deleted") when their turn comes.
    ///
    /// # Errors
    /// [`NotifyError::NotFound`] for a channel the user does not have.
    pub async fn delete_channel(&self, user_id: u64, id: u64) -> Result<(), NotifyError> {
        if let Some(record) = self.record() {
            let fence = record.fence(user_id).await?.ok_or(NotifyError::Moving)?;
            match record.table.delete_channel(user_id, id, &fence).await? {
                Ok(true) => {}
                Ok(false) => return Err(NotifyError::NotFound),
                Err(_fenced) => return Err(NotifyError::Moving),
            }
            // The working copy may lack it (it is being loaded): gone from the record is gone.
            return match self.channels().remove(user_id, id) {
                Ok(()) | Err(NotifyError::NotFound) => Ok(self.store().commit().await?),
                Err(err) => Err(err),
            };
        }
        self.channels().remove(user_id, id)?;
        self.store().commit().await?;
        Ok(())
    }
}
