//! Login sessions: refresh-token families with rotation and reuse detection.
//!
//! Logging in starts a session and hands out its first refresh token. Each refresh consumes the
//! token presented and hands out the next one in the same session. Presenting a consumed token
//! again means it was copied: the whole session is revoked, so neither the thief nor the owner can
//! go on using it, and every access token naming that session stops working too.
//! Only a hash of each refresh token is stored.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{IdentityError, now_ms, random_bytes};
use crate::store::{
    Store, StoreError, TxResult, decode, decode_tx, encode, encode_tx, id_key, pair_key, trees,
};

/// Prefix of every refresh token, so one is recognisable in a leak scan.
const TOKEN_PREFIX: &str = "krt_";

/// A login session, keyed by (user id, session id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id; access tokens carry it as `sid`.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// Started, ms since the epoch.
    pub created_at_ms: u64,
    /// The session ends then, whatever the refreshes.
    pub expires_at_ms: u64,
    /// Why it was revoked, if it was.
    pub revoked: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshRecord {
    user_id: u64,
    session_id: u64,
    expires_at_ms: u64,
    used: bool,
}

/// A refresh token as handed to the client. Only its hash is stored.
#[derive(Debug)]
pub struct RefreshToken(pub SecretString);

fn token_key(token: &str) -> Result<Vec<u8>, IdentityError> {
    let digest = orion::hash::digest(token.as_bytes()).map_err(|_| IdentityError::Hashing)?;
    Ok(digest.as_ref().to_vec())
}

fn new_token() -> Result<(RefreshToken, Vec<u8>), IdentityError> {
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()?));
    let key = token_key(&token)?;
    Ok((RefreshToken(SecretString::from(token)), key))
}

enum Rotation {
    Rotated(SessionRecord),
    Invalid,
    Reused,
}

/// The sessions and refresh-token trees.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    sessions: sled::Tree,
    tokens: sled::Tree,
}

impl Sessions {
    /// Opens the trees.
    ///
    /// # Errors
    /// The store failed.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        Ok(Self {
            sessions: store.tree(trees::SESSIONS)?,
            tokens: store.tree(trees::REFRESH_TOKENS)?,
            store,
        })
    }

    /// Starts a session lasting `ttl` and returns it with its first refresh token. Not durable
    /// until `Store::commit`.
    ///
    /// # Errors
    /// The store or the random source failed.
    pub fn start(
        &self,
        user_id: u64,
        ttl: Duration,
    ) -> Result<(SessionRecord, RefreshToken), IdentityError> {
        let now = now_ms();
        let session = SessionRecord {
            id: self.store.next_id()?,
            user_id,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
            revoked: None,
        };
        let (token, key) = new_token()?;
        let record = RefreshRecord {
            user_id,
            session_id: session.id,
            expires_at_ms: session.expires_at_ms,
            used: false,
        };
        let (session_value, token_value) = (encode(&session)?, encode(&record)?);
        self.store.transaction(&[&self.sessions, &self.tokens], |tx| -> TxResult<()> {
            tx[0].insert(&pair_key(user_id, session.id), session_value.as_slice())?;
            tx[1].insert(key.as_slice(), token_value.as_slice())?;
            Ok(())
        })?;
        Ok((session, token))
    }

    /// Consumes `presented` and returns its session with the next refresh token. Not durable
    /// until `Store::commit`.
    ///
    /// # Errors
    /// [`IdentityError::InvalidRefreshToken`] for an unknown or expired token or a revoked
    /// session; [`IdentityError::RefreshTokenReused`] for a token already consumed, in which
    /// case the session is now revoked.
    pub fn rotate(
        &self,
        presented: &SecretString,
    ) -> Result<(SessionRecord, RefreshToken), IdentityError> {
        let presented_key = token_key(presented.expose_secret())?;
        let (next, next_key) = new_token()?;
        let now = now_ms();
        let outcome = self.store.transaction(&[&self.sessions, &self.tokens], |tx| {
            let Some(raw) = tx[1].get(&presented_key)? else { return Ok(Rotation::Invalid) };
            let mut record: RefreshRecord = decode_tx(&raw)?;
            let session_key = pair_key(record.user_id, record.session_id);
            let Some(raw) = tx[0].get(session_key)? else { return Ok(Rotation::Invalid) };
            let mut session: SessionRecord = decode_tx(&raw)?;
            if record.used {
                if session.revoked.is_none() {
                    session.revoked = Some("refresh token reused".into());
                    tx[0].insert(&session_key, encode_tx(&session)?)?;
                }
                return Ok(Rotation::Reused);
            }
            if session.revoked.is_some() || record.expires_at_ms <= now {
                return Ok(Rotation::Invalid);
            }
            record.used = true;
            tx[1].insert(presented_key.as_slice(), encode_tx(&record)?)?;
            let fresh = RefreshRecord { used: false, ..record };
            tx[1].insert(next_key.as_slice(), encode_tx(&fresh)?)?;
            Ok(Rotation::Rotated(session))
        })?;
        match outcome {
            Rotation::Rotated(session) => Ok((session, next)),
            Rotation::Invalid => Err(IdentityError::InvalidRefreshToken),
            Rotation::Reused => {
                tracing::warn!("refresh token reuse detected; session revoked");
                metrics::counter!("keel_refresh_token_reuse_total").increment(1);
                Err(IdentityError::RefreshTokenReused)
            }
        }
    }

    /// Whether the session exists, is not revoked and has not expired.
    ///
    /// # Errors
    /// The store failed.
    pub fn is_active(&self, user_id: u64, session_id: u64) -> Result<bool, StoreError> {
        let Some(raw) = self.sessions.get(pair_key(user_id, session_id))? else {
            return Ok(false);
        };
        let session: SessionRecord = decode(&raw)?;
        Ok(session.revoked.is_none() && session.expires_at_ms > now_ms())
    }

    /// Revokes one session (logout). Not durable until `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn revoke(&self, user_id: u64, session_id: u64, reason: &str) -> Result<(), StoreError> {
        let key = pair_key(user_id, session_id);
        if let Some(raw) = self.sessions.get(key)? {
            let mut session: SessionRecord = decode(&raw)?;
            session.revoked.get_or_insert_with(|| reason.to_owned());
            self.sessions.insert(key, encode(&session)?)?;
        }
        Ok(())
    }

    /// Removes every session of a user (account deletion). Their refresh tokens then point at
    /// nothing and are refused. Not durable until `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn remove_all(&self, user_id: u64) -> Result<(), StoreError> {
        for entry in self.sessions.scan_prefix(id_key(user_id)) {
            let (key, _) = entry?;
            self.sessions.remove(key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    const DAY: Duration = Duration::from_secs(86_400);

    fn sessions() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(Store::open(&StoreConfig::new(dir.path())).unwrap()).unwrap();
        (dir, sessions)
    }

    #[test]
    fn a_refresh_token_rotates_once() {
        let (_dir, sessions) = sessions();
        let (session, first) = sessions.start(7, DAY).unwrap();
        assert!(first.0.expose_secret().starts_with("krt_"));
        let (same, second) = sessions.rotate(&first.0).unwrap();
        assert_eq!(same.id, session.id);
        assert_ne!(first.0.expose_secret(), second.0.expose_secret());
        assert!(sessions.is_active(7, session.id).unwrap());
    }

    #[test]
    fn reusing_a_refresh_token_revokes_its_whole_session() {
        let (_dir, sessions) = sessions();
        let (session, first) = sessions.start(7, DAY).unwrap();
        let (_, second) = sessions.rotate(&first.0).unwrap();
        assert!(matches!(sessions.rotate(&first.0), Err(IdentityError::RefreshTokenReused)));
        assert!(!sessions.is_active(7, session.id).unwrap());
        // The legitimate latest token dies with the session.
        assert!(matches!(sessions.rotate(&second.0), Err(IdentityError::InvalidRefreshToken)));
    }

    #[test]
    fn unknown_expired_and_revoked_tokens_are_refused() {
        let (_dir, sessions) = sessions();
        let unknown = SecretString::from("krt_nope".to_owned());
        assert!(matches!(sessions.rotate(&unknown), Err(IdentityError::InvalidRefreshToken)));

        let (_, expired) = sessions.start(7, Duration::ZERO).unwrap();
        assert!(matches!(sessions.rotate(&expired.0), Err(IdentityError::InvalidRefreshToken)));

        let (session, token) = sessions.start(7, DAY).unwrap();
        sessions.revoke(7, session.id, "logout").unwrap();
        assert!(matches!(sessions.rotate(&token.0), Err(IdentityError::InvalidRefreshToken)));
        assert!(!sessions.is_active(7, session.id).unwrap());
    }

    #[test]
    fn removing_a_users_sessions_spares_other_users() {
        let (_dir, sessions) = sessions();
        let (mine, _) = sessions.start(7, DAY).unwrap();
        let (theirs, _) = sessions.start(8, DAY).unwrap();
        sessions.remove_all(7).unwrap();
        assert!(!sessions.is_active(7, mine.id).unwrap());
        assert!(sessions.is_active(8, theirs.id).unwrap());
    }
}
