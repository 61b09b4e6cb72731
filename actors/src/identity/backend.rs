//! The identity seam: each area (users, sessions, invites) is one of two backends, the node's
//! own sled store (single-node mode, and cluster mode without `postgres_url`) or the cluster's
//! Postgres. The callers (the façade's handlers) see one type per area and do not know which.
//!
//! The sled arms run inline as they always have (a sled call is a memory write; durability
//! comes with the caller's `Store::commit`); the Postgres arms are committed when they return.

use std::time::Duration;

use secrecy::SecretString;

use super::pg::{PgInvites, PgSessions, PgUsers};
use super::{IdentityError, Invites, RefreshToken, SessionRecord, Sessions, UserRecord, Users};
use crate::store::StoreError;

/// The user accounts.
#[derive(Debug, Clone)]
pub enum UserStore {
    /// This node's sled store.
    Sled(Users),
    /// The cluster's Postgres.
    Pg(PgUsers),
}

impl UserStore {
    /// Creates a user with an already normalised email.
    ///
    /// # Errors
    /// [`IdentityError::EmailTaken`], or the store failed.
    pub async fn create(
        &self,
        email: &str,
        password_hash: String,
    ) -> Result<UserRecord, IdentityError> {
        match self {
            UserStore::Sled(users) => users.create(email, password_hash),
            UserStore::Pg(users) => users.create(email, password_hash).await,
        }
    }

    /// The user with this id.
    ///
    /// # Errors
    /// The store failed.
    pub async fn get(&self, id: u64) -> Result<Option<UserRecord>, IdentityError> {
        match self {
            UserStore::Sled(users) => Ok(users.get(id)?),
            UserStore::Pg(users) => Ok(users.get(id).await?),
        }
    }

    /// Whether a user with this id exists.
    ///
    /// # Errors
    /// The store failed.
    pub async fn exists(&self, id: u64) -> Result<bool, IdentityError> {
        match self {
            UserStore::Sled(users) => Ok(users.exists(id)?),
            UserStore::Pg(users) => Ok(users.exists(id).await?),
        }
    }

    /// The user with this normalised email.
    ///
    /// # Errors
    /// The store failed.
    pub async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, IdentityError> {
        match self {
            UserStore::Sled(users) => Ok(users.by_email(email)?),
            UserStore::Pg(users) => Ok(users.by_email(email).await?),
        }
    }

    /// Replaces a user's password hash; false if there is no such user.
    ///
    /// # Errors
    /// The store failed.
    pub async fn set_password(
        &self,
        id: u64,
        password_hash: String,
    ) -> Result<bool, IdentityError> {
        match self {
            UserStore::Sled(users) => Ok(users.set_password(id, password_hash)?),
            UserStore::Pg(users) => Ok(users.set_password(id, &password_hash).await?),
        }
    }

    /// Deletes a user and frees their email. True if they existed.
    ///
    /// # Errors
    /// The store failed.
    pub async fn delete(&self, id: u64) -> Result<bool, IdentityError> {
        match self {
            UserStore::Sled(users) => Ok(users.delete(id)?),
            UserStore::Pg(users) => Ok(users.delete(id).await?),
        }
    }
}

/// Login sessions, refresh tokens and the revocation list.
#[derive(Debug, Clone)]
pub enum SessionStore {
    /// This node's sled store.
    Sled(Sessions),
    /// The cluster's Postgres.
    Pg(PgSessions),
}

impl SessionStore {
    /// Starts a session lasting `ttl`, with its first refresh token.
    ///
    /// # Errors
    /// [`IdentityError::InvalidCredentials`] when the user no longer exists; the store failed.
    pub async fn start(
        &self,
        user_id: u64,
        ttl: Duration,
    ) -> Result<(SessionRecord, RefreshToken), IdentityError> {
        match self {
            SessionStore::Sled(sessions) => sessions.start(user_id, ttl),
            SessionStore::Pg(sessions) => sessions.start(user_id, ttl).await,
        }
    }

    /// Consumes a refresh token and hands out the next one.
    ///
    /// # Errors
    /// As [`Sessions::rotate`].
    pub async fn rotate(
        &self,
        presented: &SecretString,
    ) -> Result<(SessionRecord, RefreshToken), IdentityError> {
        match self {
            SessionStore::Sled(sessions) => sessions.rotate(presented),
            SessionStore::Pg(sessions) => sessions.rotate(presented).await,
        }
    }

    /// Whether access tokens of this session are refused: one in-memory look-up.
    ///
    /// # Errors
    /// [`IdentityError::RevocationsStale`] (Postgres only): the cluster's revocations could
    /// not be read for too long to answer "not revoked".
    pub fn is_revoked(&self, session_id: u64) -> Result<bool, IdentityError> {
        match self {
            SessionStore::Sled(sessions) => Ok(sessions.is_revoked(session_id)),
            SessionStore::Pg(sessions) => sessions.is_revoked(session_id),
        }
    }

    /// Entries in this node's revocation list now.
    pub fn revocations(&self) -> usize {
        match self {
            SessionStore::Sled(sessions) => sessions.revocations(),
            SessionStore::Pg(sessions) => sessions.revocations(),
        }
    }

    /// Revokes one session (logout).
    ///
    /// # Errors
    /// The store failed.
    pub async fn revoke(
        &self,
        user_id: u64,
        session_id: u64,
        reason: &str,
    ) -> Result<(), IdentityError> {
        match self {
            SessionStore::Sled(sessions) => Ok(sessions.revoke(user_id, session_id, reason)?),
            SessionStore::Pg(sessions) => Ok(sessions.revoke(user_id, session_id, reason).await?),
        }
    }

    /// Revokes every live session of a user except `keep`; the ids it revoked.
    ///
    /// # Errors
    /// The store failed.
    pub async fn revoke_all(
        &self,
        user_id: u64,
        keep: Option<u64>,
        reason: &str,
    ) -> Result<Vec<u64>, IdentityError> {
        match self {
            SessionStore::Sled(sessions) => Ok(sessions.revoke_all(user_id, keep, reason)?),
            SessionStore::Pg(sessions) => Ok(sessions.revoke_all(user_id, keep, reason).await?),
        }
    }

    /// Removes every session and refresh token of a user (account deletion). On sled this walks
    /// every refresh token, so it runs on a blocking thread.
    ///
    /// # Errors
    /// The store failed.
    pub async fn remove_all(&self, user_id: u64) -> Result<(), IdentityError> {
        match self {
            SessionStore::Sled(sessions) => {
                let sessions = sessions.clone();
                tokio::task::spawn_blocking(move || sessions.remove_all(user_id))
                    .await
                    .map_err(|err| StoreError::Aborted(format!("removing sessions: {err}")))??;
                Ok(())
            }
            SessionStore::Pg(sessions) => Ok(sessions.remove_all(user_id).await?),
        }
    }

    /// Drops revocation entries whose window has passed.
    ///
    /// # Errors
    /// The store failed.
    pub async fn prune_revocations(&self) -> Result<usize, IdentityError> {
        match self {
            SessionStore::Sled(sessions) => Ok(sessions.prune_revocations()?),
            SessionStore::Pg(sessions) => Ok(sessions.prune_revocations().await?),
        }
    }
}

/// Registration invites.
#[derive(Debug, Clone)]
pub enum InviteStore {
    /// This node's sled store.
    Sled(Invites),
    /// The cluster's Postgres.
    Pg(PgInvites),
}

impl InviteStore {
    /// A new invite valid for `ttl`, and when it expires (ms since the epoch).
    ///
    /// # Errors
    /// The store or the random source failed.
    pub async fn create(&self, ttl: Duration) -> Result<(SecretString, u64), IdentityError> {
        match self {
            InviteStore::Sled(invites) => invites.create(ttl),
            InviteStore::Pg(invites) => invites.create(ttl).await,
        }
    }

    /// Spends an invite: its expiry if it existed and had not expired.
    ///
    /// # Errors
    /// The store failed.
    pub async fn consume(&self, token: &SecretString) -> Result<Option<u64>, IdentityError> {
        match self {
            InviteStore::Sled(invites) => invites.consume(token),
            InviteStore::Pg(invites) => invites.consume(token).await,
        }
    }

    /// Puts back an invite spent by a registration that then failed.
    ///
    /// # Errors
    /// The store failed.
    pub async fn restore(
        &self,
        token: &SecretString,
        expires_at_ms: u64,
    ) -> Result<(), IdentityError> {
        match self {
            InviteStore::Sled(invites) => invites.restore(token, expires_at_ms),
            InviteStore::Pg(invites) => invites.restore(token, expires_at_ms).await,
        }
    }
}
