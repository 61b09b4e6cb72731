//! Owners' notifications: channels (webhooks, Telegram chats) with the events each wants, a
//! durable outbox of deliveries in sled, and the [`Notifier`] that delivers them with retries.
//!
//! - [`channels`]: the `notify_channels` tree and the in-memory rules (user → channels → events)
//!   the bot repository consults on every write.
//! - [`outbox`]: [`Notifications`], the handle everything else holds: it stages deliveries in the
//!   same sled transaction as the journal lines they come from ([`crate::bot::BotRepo`]),
//!   enqueues the kill switch's report and the daily summary, and lists and removes rows.
//! - [`deliver`]: one HTTP attempt (a signed webhook POST behind the SSRF guard, or a Telegram
//!   `sendMessage`) and what its outcome means.
//! - [`actor`]: the supervised [`Notifier`]: schedules, retries with backoff, records outcomes,
//!   sends the daily P&L summary.
//! - [`pg`]: cluster mode with `postgres_url`: channels and the outbox in Postgres, the record
//!   (sled keeps the owner node's working copy of the channels); `pg_deliver` is the
//!   notifier's loop over that outbox.
//!
//! The pure rules (event names, signatures, refused addresses, the backoff) are
//! `keel_core::notify`.

pub mod actor;
pub mod channels;
pub mod deliver;
mod manage;
pub mod outbox;
pub mod pg;
mod pg_deliver;

use std::time::Duration;

use keel_core::notify::EventKind;
use keel_core::notify::backoff::Backoff;
use serde::{Deserialize, Serialize};

pub use actor::{DAILY_MARKER, Notifier, NotifierSpec};
pub use channels::{ChannelRecord, Channels, Target};
pub use manage::{NewChannel, WEBHOOK_SECRET_PREFIX};
pub use outbox::{DeliveryRecord, DeliveryState, Notifications};

use crate::store::StoreError;
use crate::vault::VaultError;

/// The notifier's child name under the root supervisor.
pub const NOTIFIER_CHILD_NAME: &str = "notifier";

/// `[notifications]`, as the runtime uses it.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Whether webhooks may target private, loopback, link-local… addresses.
    pub allow_private_targets: bool,
    /// The Telegram Bot API's base URL.
    pub telegram_api_url: String,
    /// Connecting to a receiver may take this long.
    pub connect_timeout: Duration,
    /// One attempt may take this long in all.
    pub timeout: Duration,
    /// Retry schedule and attempt cap.
    pub backoff: Backoff,
    /// Most channels per user.
    pub max_channels_per_user: usize,
    /// How long finished (delivered or failed) deliveries stay listed.
    pub keep_finished: Duration,
    /// Most attempts under way at once.
    pub max_in_flight: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            telegram_api_url: "https://api.telegram.org".to_owned(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
                max_attempts: 8,
            },
            max_channels_per_user: 10,
            keep_finished: Duration::from_secs(7 * 86_400),
            max_in_flight: 16,
        }
    }
}

/// What went wrong with a channel or a delivery row.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No such channel of this user's (also the answer for another user's).
    #[error("no such notification channel")]
    NotFound,
    /// The user has as many channels as allowed.
    #[error("at most {0} notification channels per user")]
    Limit(usize),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The vault did not answer.
    #[error(transparent)]
    Ask(#[from] crate::mailbox::AskError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode with `postgres_url`: this node does not hold the owner's lease (it is
    /// moving); nothing changed, retry.
    #[error("the owner's lease is moving")]
    Moving,
    /// Cluster mode with `postgres_url`: the system of record failed; nothing changed.
    #[error(transparent)]
    Record(#[from] crate::pg::RecordError),
}

impl From<sled::Error> for NotifyError {
    fn from(err: sled::Error) -> Self {
        Self::Store(StoreError::Sled(err))
    }
}

/// A channel as its owner sees it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = NotificationChannel)]
pub struct ChannelView {
    /// Its id.
    pub id: u64,
    /// `webhook` or `telegram`.
    pub kind: String,
    /// A webhook's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Telegram chat id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// The events it receives.
    pub events: Vec<EventKind>,
    /// Created, ms since the epoch.
    pub created_at_ms: u64,
}

/// A delivery as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = NotificationDelivery)]
pub struct DeliveryView {
    /// Its id (also the webhook body's `id`: receivers deduplicate on it).
    pub id: u64,
    /// The channel.
    pub channel_id: u64,
    /// The event.
    pub event: EventKind,
    /// The bot it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<u64>,
    /// `pending`, `delivered` or `failed`.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// The last answer's HTTP status, if one came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it is tried next (pending only), ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
    /// When it was delivered, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at_ms: Option<u64>,
    /// When it was enqueued, ms since the epoch.
    pub created_at_ms: u64,
}
