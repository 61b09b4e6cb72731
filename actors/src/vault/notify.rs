//! The vault's side of notification channels: their secrets (a webhook's signing secret, a
//! Telegram bot token) are sealed here into [`Envelope`]s bound to (user, channel, field), the
//! same envelope encryption as exchange credentials. The channel record holds the envelope; the
//! vault opens it only to sign a webhook body, or to hand the notifier a Telegram token for the
//! one request that needs it (the Bot API takes the token in the URL path), as a
//! [`SecretString`] that is wiped when dropped.

use actix::prelude::*;
use keel_core::notify::signing;
use secrecy::{ExposeSecret, SecretString};

use super::{Binding, Envelope, Vault, VaultError};
use crate::mailbox::{Ask, Query};

/// The envelope field of a webhook's signing secret.
pub const WEBHOOK_SECRET_FIELD: &str = "notify_webhook_secret";
/// The envelope field of a Telegram bot token.
pub const TELEGRAM_TOKEN_FIELD: &str = "notify_telegram_token";

/// Seal a channel's secret.
pub struct SealChannelSecret {
    /// Owner.
    pub user_id: u64,
    /// The channel.
    pub channel_id: u64,
    /// [`WEBHOOK_SECRET_FIELD`] or [`TELEGRAM_TOKEN_FIELD`].
    pub field: &'static str,
    /// The secret.
    pub secret: SecretString,
}

impl std::fmt::Debug for SealChannelSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealChannelSecret")
            .field("user_id", &self.user_id)
            .field("channel_id", &self.channel_id)
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl Query for SealChannelSecret {
    type Answer = Result<Envelope, VaultError>;
}

/// Sign a webhook body with a channel's secret: the `Keel-Signature` value.
#[derive(Debug)]
pub struct SignWebhook {
    /// Owner.
    pub user_id: u64,
    /// The channel.
    pub channel_id: u64,
    /// Its sealed signing secret.
    pub secret: Envelope,
    /// Unix seconds, the signature's `t`.
    pub timestamp: u64,
    /// The exact body sent.
    pub body: Vec<u8>,
}

impl Query for SignWebhook {
    type Answer = Result<String, VaultError>;
}

/// Open a Telegram channel's bot token, for one request.
#[derive(Debug)]
pub struct OpenBotToken {
    /// Owner.
    pub user_id: u64,
    /// The channel.
    pub channel_id: u64,
    /// Its sealed token.
    pub secret: Envelope,
}

impl Query for OpenBotToken {
    type Answer = Result<SecretString, VaultError>;
}

fn binding(user_id: u64, channel_id: u64, field: &str) -> Binding<'_> {
    Binding { user_id, credential_id: channel_id, field }
}

impl Handler<Ask<SealChannelSecret>> for Vault {
    type Result = ();

    #[tracing::instrument(skip_all, fields(user_id = ask.query.user_id))]
    fn handle(&mut self, ask: Ask<SealChannelSecret>, _: &mut Context<Self>) {
        let q = &ask.query;
        let answer = Envelope::seal(
            &self.ring,
            &binding(q.user_id, q.channel_id, q.field),
            q.secret.expose_secret().as_bytes(),
        );
        ask.reply(answer);
    }
}

impl Handler<Ask<SignWebhook>> for Vault {
    type Result = ();

    fn handle(&mut self, ask: Ask<SignWebhook>, _: &mut Context<Self>) {
        let q = &ask.query;
        let answer = q
            .secret
            .open(&self.ring, &binding(q.user_id, q.channel_id, WEBHOOK_SECRET_FIELD))
            .and_then(|secret| {
                signing::sign(&secret, q.timestamp, &q.body).map_err(|_| VaultError::Crypto)
            });
        ask.reply(answer);
    }
}

impl Handler<Ask<OpenBotToken>> for Vault {
    type Result = ();

    fn handle(&mut self, ask: Ask<OpenBotToken>, _: &mut Context<Self>) {
        let q = &ask.query;
        let answer = q
            .secret
            .open(&self.ring, &binding(q.user_id, q.channel_id, TELEGRAM_TOKEN_FIELD))
            .and_then(|token| {
                std::str::from_utf8(&token)
                    .map(|t| SecretString::from(t.to_owned()))
                    .map_err(|_| VaultError::Tampered)
            });
        ask.reply(answer);
    }
}
