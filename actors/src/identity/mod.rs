//! Users, login sessions and password hashing.
//!
//! Users and their sessions live in the node's store (sled), or in cluster mode with
//! `cluster.postgres_url` in the cluster's Postgres ([`pg`]); [`UserStore`], [`SessionStore`]
//! and [`InviteStore`] are the seam between the two. JWT handling is the façade's business (the
//! `keel` crate), which asks this module who exists and which sessions are alive.

mod backend;
mod invites;
mod password;
pub mod pg;
mod sessions;
mod users;

pub use backend::{InviteStore, SessionStore, UserStore};
pub use invites::Invites;
pub use password::{PasswordHasher, PasswordPolicy, hash_password_blocking, validate_password};
pub use sessions::{MAX_TOKEN_WINDOW, RefreshToken, SessionRecord, Sessions};
pub use users::{UserRecord, Users, normalize_email};

use crate::pg::RecordError;
use crate::store::StoreError;

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Another account uses this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The email or password is wrong (deliberately not saying which).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The refresh token is unknown, expired, or its session was revoked.
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    /// A refresh token was presented a second time: its whole session was revoked.
    #[error("the refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// Too many password hashes are queued; retry shortly.
    #[error("too many logins in progress")]
    Overloaded,
    /// The hashing library failed (out of memory, RNG failure).
    #[error("password hashing failed")]
    Hashing,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster's Postgres failed or could not be reached.
    #[error("the system of record")]
    Record(#[from] RecordError),
    /// The cluster's revocation list has not been read from Postgres for too long to say that
    /// a session is not revoked.
    #[error("the cluster's session revocations cannot be read")]
    RevocationsStale,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Random bytes from the OS CSPRNG.
///
/// # Errors
/// The OS random source failed.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut buf = [0u8; N];
    orion::util::secure_rand_bytes(&mut buf).map_err(|_| IdentityError::Hashing)?;
    Ok(buf)
}
