//! Registration invites: single-use tokens an operator creates (`POST /admin/invites`) when
//! `auth.registration = "invite"`. Only a BLAKE2b hash of each token is stored, with its expiry.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{IdentityError, now_ms, random_bytes};
use crate::store::{Store, StoreError, decode, encode, trees};

/// Prefix of every invite token.
const INVITE_PREFIX: &str = "kinv_";

#[derive(Debug, Serialize, Deserialize)]
struct InviteRecord {
    expires_at_ms: u64,
}

/// The invites tree.
#[derive(Debug, Clone)]
pub struct Invites {
    tree: sled::Tree,
}

pub(super) fn invite_key(token: &str) -> Result<Vec<u8>, IdentityError> {
    let digest = orion::hash::digest(token.as_bytes()).map_err(|_| IdentityError::Hashing)?;
    Ok(digest.as_ref().to_vec())
}

/// A new invite token and the key it is stored under.
pub(super) fn new_invite() -> Result<(SecretString, Vec<u8>), IdentityError> {
    let token = format!("{INVITE_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<24>()?));
    let key = invite_key(&token)?;
    Ok((SecretString::from(token), key))
}

impl Invites {
    /// Opens the tree.
    ///
    /// # Errors
    /// The store failed.
    pub fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(Self { tree: store.tree(trees::INVITES)? })
    }

    /// A new invite valid for `ttl`, and when it expires (ms since the epoch). Not durable until
    /// `Store::commit`.
    ///
    /// # Errors
    /// The store or the random source failed.
    pub fn create(&self, ttl: Duration) -> Result<(SecretString, u64), IdentityError> {
        let (token, key) = new_invite()?;
        let expires_at_ms = now_ms().saturating_add(ttl.as_millis() as u64);
        let record = encode(&InviteRecord { expires_at_ms })?;
        self.tree.insert(key, record).map_err(StoreError::from)?;
        self.prune()?;
        Ok((token, expires_at_ms))
    }

    /// Spends an invite: its expiry if it existed and had not expired (it is gone either way).
    /// Not durable until `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn consume(&self, token: &SecretString) -> Result<Option<u64>, IdentityError> {
        let removed = self.tree.remove(invite_key(token.expose_secret())?);
        let Some(raw) = removed.map_err(StoreError::from)? else {
            return Ok(None);
        };
        let record: InviteRecord = decode(&raw)?;
        Ok((record.expires_at_ms > now_ms()).then_some(record.expires_at_ms))
    }

    /// Puts back an invite spent by a registration that then failed (a taken email, say).
    ///
    /// # Errors
    /// The store failed.
    pub fn restore(&self, token: &SecretString, expires_at_ms: u64) -> Result<(), IdentityError> {
        let key = invite_key(token.expose_secret())?;
        let record = encode(&InviteRecord { expires_at_ms })?;
        self.tree.insert(key, record).map_err(StoreError::from)?;
        Ok(())
    }

    /// Drops expired invites.
    fn prune(&self) -> Result<(), StoreError> {
        let now = now_ms();
        for entry in self.tree.iter() {
            let (key, raw) = entry?;
            if decode::<InviteRecord>(&raw)?.expires_at_ms <= now {
                self.tree.remove(key)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn an_invite_is_spent_once_and_an_expired_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let invites = Invites::new(&Store::open(&StoreConfig::new(dir.path())).unwrap()).unwrap();
        let (token, expires) = invites.create(Duration::from_secs(60)).unwrap();
        assert!(token.expose_secret().starts_with("kinv_"));
        assert_eq!(invites.consume(&token).unwrap(), Some(expires));
        assert_eq!(invites.consume(&token).unwrap(), None);
        invites.restore(&token, expires).unwrap();
        assert_eq!(invites.consume(&token).unwrap(), Some(expires));
        let (stale, _) = invites.create(Duration::ZERO).unwrap();
        assert_eq!(invites.consume(&stale).unwrap(), None);
        assert_eq!(invites.consume(&SecretString::from("kinv_guess".to_owned())).unwrap(), None);
    }
}
