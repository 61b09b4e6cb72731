//! `keel vault rotate`: re-wrap every credential under a new master key.
//!
//! Each credential is rewritten on its own (a single sled insert is atomic), and the new key's
//! envelopes are skipped when met again. A crash mid-rotation therefore leaves every credential
//! wrapped under either the old or the new key, and a ring holding both (`vault.master_key` =
//! new, `vault.previous_master_key` = old) reads all of them; running the rotation again
//! finishes the job. Notification channels' secrets (webhook signing secrets, Telegram bot
//! tokens) are sealed the same way and re-wrapped the same way, after the credentials.

use super::notify::{TELEGRAM_TOKEN_FIELD, WEBHOOK_SECRET_FIELD};
use super::{Binding, CredentialRecord, Credentials, KeyRing, VaultError};
use crate::notify::{Channels, NotifyError, Target};
use crate::store::{Store, StoreError};

/// What a rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Credentials re-wrapped now.
    pub rewrapped: usize,
    /// Credentials already under the new key.
    pub already_current: usize,
}

/// Re-wraps every credential not yet under `ring`'s current (new) key, opening it with whichever
/// key of the ring wraps it (the old one is the ring's previous key).
///
/// `on_each` is called after each credential is durably rewritten; returning false stops the
/// rotation there, as a crash would (tests use it).
///
/// # Errors
/// A credential cannot be opened (unknown key, tampered) or the store failed. Credentials
/// rewritten before the error stay rewritten and readable with both keys.
pub async fn rotate(
    store: &Store,
    ring: &KeyRing,
    mut on_each: impl FnMut(&CredentialRecord) -> bool,
) -> Result<RotationReport, VaultError> {
    let credentials = Credentials::new(store.clone())?;
    let mut report = RotationReport::default();
    let records: Vec<CredentialRecord> = credentials.all().collect::<Result<_, _>>()?;
    for mut record in records {
        if record.api_key.is_current(ring) && record.api_secret.is_current(ring) {
            report.already_current += 1;
            continue;
        }
        let binding = |field| Binding { user_id: record.user_id, credential_id: record.id, field };
        record.api_key = record.api_key.rewrap(ring, ring, &binding("api_key"))?;
        record.api_secret = record.api_secret.rewrap(ring, ring, &binding("api_secret"))?;
        credentials.put(&record)?;
        store.commit().await?;
        report.rewrapped += 1;
        if !on_each(&record) {
            return Ok(report);
        }
    }
    let to_vault = |err: NotifyError| match err {
        NotifyError::Vault(err) => err,
        NotifyError::Store(err) => VaultError::Store(err),
        other => VaultError::Store(StoreError::Corrupt(other.to_string())),
    };
    let channels = Channels::open(store)?;
    for mut channel in channels.all().map_err(to_vault)? {
        if channel.secret.is_current(ring) {
            report.already_current += 1;
            continue;
        }
        let field = match channel.target {
            Target::Webhook { .. } => WEBHOOK_SECRET_FIELD,
            Target::Telegram { .. } => TELEGRAM_TOKEN_FIELD,
        };
        let binding = Binding { user_id: channel.user_id, credential_id: channel.id, field };
        channel.secret = channel.secret.rewrap(ring, ring, &binding)?;
        channels.put(&channel).map_err(to_vault)?;
        store.commit().await?;
        report.rewrapped += 1;
    }
    Ok(report)
}
