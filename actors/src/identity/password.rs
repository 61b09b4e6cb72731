//! Argon2id password hashing on a bounded pool of blocking threads.
//!
//! A hash costs tens of milliseconds of CPU and 19 MiB of memory. Run on an actor or HTTP worker
//! thread it would stall everything else on that thread, and run unbounded on tokio's blocking
//! pool (up to 512 threads) a burst of logins would take every core and gigabytes of memory. So
//! hashes run on `spawn_blocking` behind a semaphore of `concurrency` permits, and when more than
//! `max_queued` callers are waiting the next one is refused at once ([`IdentityError::Overloaded`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orion::pwhash::{self, CostParams, Password, PasswordHash};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::IdentityError;

/// Argon2id cost: OWASP's recommended minimum (m = 19 MiB, t = 2, p = 1).
pub const COST: CostParams = pwhash::OWASP_ARGON2ID_2ND;

/// Length rules for passwords.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy;

impl PasswordPolicy {
    /// Fewest characters accepted.
    pub const MIN_CHARS: usize = 12;
    /// Most characters accepted: long enough for any passphrase, short enough that hashing
    /// cannot be used to burn CPU.
    pub const MAX_CHARS: usize = 128;
}

/// Checks a new password against [`PasswordPolicy`].
///
/// # Errors
/// A message for the `password` field.
pub fn validate_password(password: &SecretString) -> Result<(), String> {
    let chars = password.expose_secret().chars().count();
    if chars < PasswordPolicy::MIN_CHARS {
        return Err(format!("must be at least {} characters", PasswordPolicy::MIN_CHARS));
    }
    if chars > PasswordPolicy::MAX_CHARS {
        return Err(format!("must be at most {} characters", PasswordPolicy::MAX_CHARS));
    }
    Ok(())
}

/// Hashes a password into its PHC string on the calling thread. Blocks for tens of
/// milliseconds: for tools that run with the server stopped (`keel store seed`); the server
/// hashes through [`PasswordHasher`].
///
/// # Errors
/// [`IdentityError::Hashing`] when the library fails.
pub fn hash_password_blocking(password: &SecretString) -> Result<String, IdentityError> {
    let password = Password::try_from(password.expose_secret().as_bytes())
        .map_err(|_| IdentityError::Hashing)?;
    let hash = pwhash::hash_password(&password, &COST).map_err(|_| IdentityError::Hashing)?;
    Ok(hash.unprotected_as_ref::<str>().to_owned())
}

/// Hashes and verifies passwords off the event-loop threads, with bounded concurrency.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_queued: usize,
    /// Verified against when the email is unknown, so that login takes the same time whether or
    /// not the account exists.
    decoy: PasswordHash,
}

impl PasswordHasher {
    /// A hasher running at most `concurrency` hashes at once with at most `max_queued` waiting.
    ///
    /// # Errors
    /// The decoy hash could not be computed (the hashing library failed).
    pub fn new(concurrency: usize, max_queued: usize) -> Result<Self, IdentityError> {
        let decoy_password = super::random_bytes::<32>()?;
        let decoy = Password::try_from(&decoy_password[..])
            .and_then(|p| pwhash::hash_password(&p, &COST))
            .map_err(|_| IdentityError::Hashing)?;
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Semaphore::new(concurrency.max(1)),
                waiting: AtomicUsize::new(0),
                max_queued,
                decoy,
            }),
        })
    }

    /// Hashes a new password into its PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    ///
    /// # Errors
    /// [`IdentityError::Overloaded`] when the queue is full, [`IdentityError::Hashing`] when the
    /// library fails.
    pub async fn hash(&self, password: SecretString) -> Result<String, IdentityError> {
        self.run(move |_| hash_password_blocking(&password)).await
    }

    /// Whether `password` matches `stored` (a PHC string). With `stored` = `None` (no such
    /// user) it checks against a decoy of the same cost and answers false, taking the same time.
    ///
    /// # Errors
    /// [`IdentityError::Overloaded`] when the queue is full.
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: SecretString,
    ) -> Result<bool, IdentityError> {
        self.run(move |inner| {
            let Ok(candidate) = Password::try_from(password.expose_secret().as_bytes()) else {
                return Ok(false);
            };
            let matched = match stored.as_deref().map(PasswordHash::try_from) {
                Some(Ok(hash)) => pwhash::hash_password_verify(&hash, &candidate).is_ok(),
                Some(Err(_)) => {
                    tracing::error!("a stored password hash does not parse");
                    let _ = pwhash::hash_password_verify(&inner.decoy, &candidate);
                    false
                }
                None => {
                    let _ = pwhash::hash_password_verify(&inner.decoy, &candidate);
                    false
                }
            };
            Ok(matched)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, IdentityError> + Send + 'static,
    ) -> Result<T, IdentityError> {
        let inner = &self.inner;
        let queued = inner.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= inner.max_queued {
            inner.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("keel_password_hash_rejected_total").increment(1);
            return Err(IdentityError::Overloaded);
        }
        let permit = inner.permits.acquire().await;
        inner.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| IdentityError::Hashing)?;
        let shared = self.inner.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|_| IdentityError::Hashing)?;
        metrics::histogram!("keel_password_hash_seconds").record(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn passwords_shorter_than_12_or_longer_than_128_characters_are_refused() {
        let cases = [
            ("short", false),
            ("exactly12chr", true),
            ("ünïcödé-pässwörd", true),
            (&"x".repeat(128), true),
            (&"x".repeat(129), false),
        ];
        for (password, ok) in cases {
            assert_eq!(validate_password(&secret(password)).is_ok(), ok, "{password}");
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = PasswordHasher::new(1, 8).unwrap();
        let hash = hasher.hash(secret("correct horse battery")).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(hash.contains("m=19456,t=2,p=1"), "{hash}");
        assert!(hasher.verify(Some(hash.clone()), secret("correct horse battery")).await.unwrap());
        assert!(!hasher.verify(Some(hash), secret("wrong horse battery")).await.unwrap());
        assert!(!hasher.verify(None, secret("anything at all")).await.unwrap());
        assert!(!hasher.verify(Some("garbage".into()), secret("anything at all")).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let hasher = PasswordHasher::new(1, 0).unwrap();
        let err = hasher.hash(secret("correct horse battery")).await.unwrap_err();
        assert!(matches!(err, IdentityError::Overloaded));
    }
}
