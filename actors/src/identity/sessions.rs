//! Login sessions: refresh-token families with rotation and reuse detection.
//!
//! Logging in starts a session and hands out its first refresh token. Each refresh consumes the
//! token presented and hands out the next one in the same session. Presenting a consumed token
//! again means it was copied: the whole session is revoked, so neither the thief nor the owner can
//! go on using it, and every access token naming that session stops working too.
//! Only a hash of each refresh token is stored.
//!
//! # Revocation
//!
//! Access tokens are stateless JWTs naming their session (`sid`), so revoking a session must
//! also refuse the access tokens already handed out for it. Every revocation (logout, logout
//! everywhere, a password change, account deletion, refresh-token reuse, `keel admin
//! reset-password`) is recorded twice:
//! - in the session's own row (`revoked`), which the refresh path reads, so the session's refresh
//!   tokens stop working for good;
//! - in the revocation list: the `revoked_sessions` tree and its in-memory copy (a concurrent hash
//!   set), which the request path reads. An entry lives until every access token of the session
//!   has expired: revocation time + the token window (the access-token lifetime plus the clock
//!   leeway, [`Sessions::with_token_window`]). After that no token of the session can pass the
//!   expiry check anyway, so the entry is pruned ([`Sessions::prune_revocations`]). The list is
//!   bounded by the revocations of one token lifetime, is persisted (a restart does not
//!   un-revoke: [`Sessions::new`] loads it), and a check is one hash look-up, no store read.
//!
//! A session that is never revoked simply expires: access tokens are never issued past the
//! session's own expiry (the issuer caps `exp` at it), and the refresh path checks it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use dashmap::DashMap;

use super::{IdentityError, now_ms, random_bytes};
use crate::store::{
    Store, StoreError, TxResult, decode, decode_tx, encode, encode_tx, id_key, key_id, pair_key,
    trees,
};

/// The token window unless [`Sessions::with_token_window`] sets one: the longest access-token
/// lifetime the configuration allows (a day) plus the largest leeway (5 minutes).
pub const MAX_TOKEN_WINDOW: Duration = Duration::from_secs(86_400 + 300);
/// Marks, in `meta`, a store whose revoked sessions were copied into the revocation list.
const REVOCATIONS_SEEDED: &[u8] = b"revocations_seeded";

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

pub(super) fn token_key(token: &str) -> Result<Vec<u8>, IdentityError> {
    let digest = orion::hash::digest(token.as_bytes()).map_err(|_| IdentityError::Hashing)?;
    Ok(digest.as_ref().to_vec())
}

pub(super) fn new_token() -> Result<(RefreshToken, Vec<u8>), IdentityError> {
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()?));
    let key = token_key(&token)?;
    Ok((RefreshToken(SecretString::from(token)), key))
}

pub(super) enum Rotation {
    Rotated(SessionRecord),
    Invalid,
    /// The user and session revoked.
    Reused(u64, u64),
}

/// The sessions and refresh-token trees, and the revocation list.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    sessions: sled::Tree,
    tokens: sled::Tree,
    users: sled::Tree,
    revoked_rows: sled::Tree,
    /// Session id → until (seconds since the epoch): the in-memory copy of `revoked_rows`.
    revoked: Arc<DashMap<u64, u64>>,
    token_window: Duration,
}

pub(super) fn now_secs() -> u64 {
    now_ms() / 1000
}

impl Sessions {
    /// Opens the trees and loads the revocation list (entries still within their window).
    ///
    /// # Errors
    /// The store failed.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let sessions = Self {
            sessions: store.tree(trees::SESSIONS)?,
            tokens: store.tree(trees::REFRESH_TOKENS)?,
            users: store.tree(trees::USERS)?,
            revoked_rows: store.tree(trees::REVOKED_SESSIONS)?,
            revoked: Arc::default(),
            token_window: MAX_TOKEN_WINDOW,
            store,
        };
        sessions.seed_revocations()?;
        let now = now_secs();
        for row in sessions.revoked_rows.iter().keys() {
            let (until, session_id) = split_pair(&row?)?;
            if until >= now {
                sessions.revoked.insert(session_id, until);
            }
        }
        sessions.prune_revocations()?;
        Ok(sessions)
    }

    /// How long after a revocation the session's access tokens may still be presented: the
    /// access-token lifetime plus the clock leeway.
    #[must_use]
    pub fn with_token_window(mut self, window: Duration) -> Self {
        self.token_window = window;
        self
    }

    /// A store written before the revocation list: its revoked sessions (which had no list
    /// entry) get one for a whole window, once.
    fn seed_revocations(&self) -> Result<(), StoreError> {
        let meta = self.store.tree(trees::META)?;
        if meta.contains_key(REVOCATIONS_SEEDED)? {
            return Ok(());
        }
        let now = now_ms();
        for entry in self.sessions.iter() {
            let (_, raw) = entry?;
            let session: SessionRecord = decode(&raw)?;
            if session.revoked.is_some() && session.expires_at_ms > now {
                self.record_revocation(session.user_id, session.id)?;
            }
        }
        meta.insert(REVOCATIONS_SEEDED, &[1u8][..])?;
        Ok(())
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
        // In one transaction with a read of the user's row: a login racing the account's
        // deletion either starts before the delete (and the delete revokes it) or finds no user.
        let started = self.store.transaction(
            &[&self.sessions, &self.tokens, &self.users],
            |tx| -> TxResult<bool> {
                if tx[2].get(id_key(user_id))?.is_none() {
                    return Ok(false);
                }
                tx[0].insert(&pair_key(user_id, session.id), session_value.as_slice())?;
                tx[1].insert(key.as_slice(), token_value.as_slice())?;
                Ok(true)
            },
        )?;
        if !started {
            return Err(IdentityError::InvalidCredentials);
        }
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
                return Ok(Rotation::Reused(record.user_id, record.session_id));
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
            Rotation::Reused(user_id, session_id) => {
                self.record_revocation(user_id, session_id)?;
                tracing::warn!("refresh token reuse detected; session revoked");
                metrics::counter!("keel_refresh_token_reuse_total").increment(1);
                Err(IdentityError::RefreshTokenReused)
            }
        }
    }

    /// Whether the session exists, is not revoked and has not expired (a store read; the
    /// request path uses [`Sessions::is_revoked`]).
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

    /// Whether access tokens of this session are refused: one in-memory hash look-up, taken by
    /// every authenticated request.
    pub fn is_revoked(&self, session_id: u64) -> bool {
        self.revoked.contains_key(&session_id)
    }

    /// Entries in the revocation list now.
    pub fn revocations(&self) -> usize {
        self.revoked.len()
    }

    /// Adds a session to the revocation list, in the store and in memory (at once: the request
    /// path refuses its tokens from now on, before the store is even flushed).
    fn record_revocation(&self, user_id: u64, session_id: u64) -> Result<(), StoreError> {
        let until = now_secs().saturating_add(self.token_window.as_secs());
        self.revoked_rows.insert(pair_key(until, session_id), &id_key(user_id))?;
        self.revoked.insert(session_id, until);
        Ok(())
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
        self.record_revocation(user_id, session_id)
    }

    /// Revokes every live session of a user except `keep` (logout everywhere, a password change,
    /// account deletion, a password reset), and returns the ids it revoked (not those revoked
    /// before). Expired sessions are removed on the way. Not durable until `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn revoke_all(
        &self,
        user_id: u64,
        keep: Option<u64>,
        reason: &str,
    ) -> Result<Vec<u64>, StoreError> {
        let now = now_ms();
        let mut revoked = Vec::new();
        for entry in self.sessions.scan_prefix(id_key(user_id)) {
            let (key, raw) = entry?;
            let mut session: SessionRecord = decode(&raw)?;
            if session.expires_at_ms <= now {
                self.sessions.remove(key)?;
                continue;
            }
            if Some(session.id) == keep {
                continue;
            }
            if session.revoked.is_some() {
                continue;
            }
            session.revoked = Some(reason.to_owned());
            self.sessions.insert(key, encode(&session)?)?;
            self.record_revocation(user_id, session.id)?;
            revoked.push(session.id);
        }
        Ok(revoked)
    }

    /// Removes every session of a user and their refresh tokens (account deletion, after
    /// [`Sessions::revoke_all`]: the revocation list keeps refusing their access tokens until
    /// they expire). Refresh tokens are keyed by their hash, so this walks that tree once, and
    /// drops every expired token of anyone on the way. Not durable until `Store::commit`.
    /// Blocking: call it off the event loop.
    ///
    /// # Errors
    /// The store failed.
    pub fn remove_all(&self, user_id: u64) -> Result<(), StoreError> {
        for entry in self.sessions.scan_prefix(id_key(user_id)) {
            let (key, _) = entry?;
            self.sessions.remove(key)?;
        }
        let now = now_ms();
        for entry in self.tokens.iter() {
            let (key, raw) = entry?;
            let record: RefreshRecord = decode(&raw)?;
            if record.user_id == user_id || record.expires_at_ms <= now {
                self.tokens.remove(key)?;
            }
        }
        Ok(())
    }

    /// Drops revocation entries whose window has passed (every access token of the session has
    /// expired). Not durable until the next commit; an entry that comes back after a crash is
    /// pruned again.
    ///
    /// # Errors
    /// The store failed.
    pub fn prune_revocations(&self) -> Result<usize, StoreError> {
        let now = now_secs();
        let mut pruned = 0;
        for row in self.revoked_rows.range(pair_key(0, 0)..pair_key(now, 0)).keys() {
            let row = row?;
            let (until, session_id) = split_pair(&row)?;
            self.revoked_rows.remove(&row)?;
            self.revoked.remove_if(&session_id, |_, kept| *kept <= until);
            pruned += 1;
        }
        Ok(pruned)
    }
}

/// The two ids of a [`pair_key`].
fn split_pair(key: &[u8]) -> Result<(u64, u64), StoreError> {
    if key.len() != 16 {
        return Err(StoreError::Corrupt(format!("a revocation key of {} bytes", key.len())));
    }
    Ok((key_id(&key[..8])?, key_id(&key[8..])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    const DAY: Duration = Duration::from_secs(86_400);

    fn sessions() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let users = store.tree(trees::USERS).unwrap();
        for user in [7u64, 8] {
            users.insert(id_key(user), b"{}".as_slice()).unwrap();
        }
        let sessions = Sessions::new(store).unwrap().with_token_window(Duration::from_secs(930));
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
        assert!(!sessions.is_revoked(session.id));
    }

    #[test]
    fn no_session_starts_for_a_user_that_does_not_exist() {
        let (_dir, sessions) = sessions();
        assert!(matches!(sessions.start(99, DAY), Err(IdentityError::InvalidCredentials)));
    }

    #[test]
    fn reusing_a_refresh_token_revokes_its_whole_session() {
        let (_dir, sessions) = sessions();
        let (session, first) = sessions.start(7, DAY).unwrap();
        let (_, second) = sessions.rotate(&first.0).unwrap();
        assert!(matches!(sessions.rotate(&first.0), Err(IdentityError::RefreshTokenReused)));
        assert!(!sessions.is_active(7, session.id).unwrap());
        assert!(sessions.is_revoked(session.id), "its access tokens are refused too");
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
        assert!(sessions.is_revoked(session.id));
    }

    #[test]
    fn revoking_all_of_a_users_sessions_can_keep_one_and_spares_other_users() {
        let (_dir, sessions) = sessions();
        let (kept, kept_token) = sessions.start(7, DAY).unwrap();
        let (other, other_token) = sessions.start(7, DAY).unwrap();
        let (theirs, _) = sessions.start(8, DAY).unwrap();
        let revoked = sessions.revoke_all(7, Some(kept.id), "password changed").unwrap();
        assert_eq!(revoked, vec![other.id]);
        assert!(sessions.is_revoked(other.id) && !sessions.is_revoked(kept.id));
        assert!(!sessions.is_revoked(theirs.id));
        assert!(matches!(sessions.rotate(&other_token.0), Err(IdentityError::InvalidRefreshToken)));
        assert!(sessions.rotate(&kept_token.0).is_ok());

        let revoked = sessions.revoke_all(7, None, "logout everywhere").unwrap();
        assert_eq!(revoked, vec![kept.id], "the one revoked before is not counted again");
        assert!(sessions.is_revoked(kept.id));
    }

    #[test]
    fn removing_a_users_sessions_removes_their_refresh_tokens_and_spares_other_users() {
        let (_dir, sessions) = sessions();
        let (mine, token) = sessions.start(7, DAY).unwrap();
        let (theirs, their_token) = sessions.start(8, DAY).unwrap();
        sessions.revoke_all(7, None, "account deleted").unwrap();
        sessions.remove_all(7).unwrap();
        assert!(!sessions.is_active(7, mine.id).unwrap());
        assert!(sessions.is_active(8, theirs.id).unwrap());
        let users_tokens = sessions
            .tokens
            .iter()
            .values()
            .filter(|raw| decode::<RefreshRecord>(raw.as_ref().unwrap()).unwrap().user_id == 7)
            .count();
        assert_eq!(users_tokens, 0);
        assert!(matches!(sessions.rotate(&token.0), Err(IdentityError::InvalidRefreshToken)));
        assert!(sessions.rotate(&their_token.0).is_ok());
    }

    #[test]
    fn the_revocation_list_survives_a_reopen_and_ends_with_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let revoked_id;
        {
            let store = Store::open(&config).unwrap();
            store.tree(trees::USERS).unwrap().insert(id_key(7), b"{}".as_slice()).unwrap();
            let sessions = Sessions::new(store.clone()).unwrap();
            let (session, _) = sessions.start(7, DAY).unwrap();
            sessions.revoke(7, session.id, "logout").unwrap();
            // An entry whose window has already passed, as if revoked long ago.
            sessions.revoked_rows.insert(pair_key(now_secs() - 1, 4242), &id_key(7)).unwrap();
            sessions.revoked.insert(4242, now_secs() - 1);
            revoked_id = session.id;
            store.flush_blocking().unwrap();
        }
        // sled lets go of its lock a moment after the last handle is dropped.
        let store = crate::store::reopen(dir.path());
        let sessions = Sessions::new(store).unwrap();
        assert!(sessions.is_revoked(revoked_id), "a restart does not un-revoke");
        assert!(!sessions.is_revoked(4242), "an entry past its window is pruned");
        assert_eq!(sessions.revocations(), 1);
        assert_eq!(sessions.revoked_rows.len(), 1);
    }

    #[test]
    fn a_store_from_before_the_revocation_list_has_its_revoked_sessions_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let old = SessionRecord {
            id: 55,
            user_id: 7,
            created_at_ms: now_ms(),
            expires_at_ms: now_ms() + 60_000,
            revoked: Some("logout".into()),
        };
        let rows = store.tree(trees::SESSIONS).unwrap();
        rows.insert(pair_key(7, 55), encode(&old).unwrap()).unwrap();
        let sessions = Sessions::new(store.clone()).unwrap();
        assert!(sessions.is_revoked(55));
        assert!(store.tree(trees::META).unwrap().contains_key(REVOCATIONS_SEEDED).unwrap());
    }
}
