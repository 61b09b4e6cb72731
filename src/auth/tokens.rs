//! Access tokens: HS256 JWTs with `iss`, `aud`, `sub`, `exp`, `nbf`, `iat`, `jti` and `sid`.
//!
//! Time claims are checked with `auth.leeway_secs` of tolerated clock skew: `exp` in the past,
//! and `nbf` or `iat` in the future, beyond the leeway are refused. A token stamped in the future
//! was not issued by this Keel's clock: either a forgery or a clock gone wrong, and it would
//! outlive the lifetime Keel means it to have.
//!
//! The algorithm is pinned: a token whose header names any other (including `none`) is refused
//! before its signature is looked at. Refresh tokens are not JWTs at all (see
//! `keel_actors::identity::Sessions`), so one can never pass for an access token.
//!
//! The request path calls [`TokenIssuer::check`], which remembers, per HTTP worker thread, the
//! tokens it has verified (up to [`VERIFIED_PER_THREAD`]): a client presents the same token on
//! every request for its lifetime, so its signature and claims are checked once per thread, and
//! each later request pays a hash look-up and the expiry comparison. Only tokens that passed
//! every check are remembered, each tied to the issuer (its key) that verified it; revocation is
//! not cached (the caller checks it on every request).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::configuration::AuthSettings;

/// The one algorithm Keel signs and accepts.
pub const ALGORITHM: Algorithm = Algorithm::HS256;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id, as a decimal string.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch: the issue time. Optional on presented tokens only
    /// because tokens issued before Keel set it are still alive for one `access_ttl_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch. Required.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
    /// The login session it belongs to; revoking the session revokes the token.
    pub sid: u64,
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Why a presented token was refused. Never shown to clients beyond "invalid token".
#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct TokenRejected(pub String);

/// Verified tokens remembered per thread; when full, the memory is cleared and refilled.
pub const VERIFIED_PER_THREAD: usize = 4096;

/// What a verified access token says, as the request path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The user.
    pub user_id: u64,
    /// The login session.
    pub session_id: u64,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
}

thread_local! {
    /// Token → (the issuer that verified it, what it says).
    static VERIFIED: RefCell<HashMap<Box<str>, (u64, Verified)>> = RefCell::new(HashMap::new());
}

/// Tells issuers apart in the per-thread memory (tests run several apps, each with its own key,
/// on one thread).
static NEXT_ISSUER: AtomicU64 = AtomicU64::new(1);

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    /// This issuer's key in the per-thread memory of verified tokens.
    id: u64,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// jsonwebtoken checks `exp` and `nbf` with this leeway but not `iat`: [`TokenIssuer::verify`]
    /// does.
    leeway_secs: u64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenIssuer {
    /// An issuer for `settings`, signing with `secret`.
    pub fn new(settings: &AuthSettings, secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        validation.leeway = settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Self {
            id: NEXT_ISSUER.fetch_add(1, Ordering::Relaxed),
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: Duration::from_secs(settings.access_ttl_secs),
            leeway_secs: settings.leeway_secs,
        }
    }

    /// Signs an access token for `user_id` in session `session_id`, expiring after the
    /// configured lifetime or when the session does (`session_expires_at_ms`), whichever is first.
    ///
    /// # Errors
    /// Signing failed (a bug).
    pub fn issue(
        &self,
        user_id: u64,
        session_id: u64,
        session_expires_at_ms: u64,
    ) -> anyhow::Result<IssuedToken> {
        let iat = now_secs();
        let exp = (iat + self.ttl.as_secs()).min(session_expires_at_ms / 1000).max(iat);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            exp,
            nbf: Some(iat),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session_id,
        };
        let token = encode(&Header::new(ALGORITHM), &claims, &self.encoding)?;
        Ok(IssuedToken { token, expires_in: exp - iat })
    }

    /// [`TokenIssuer::verify`] for the request path: a token this thread verified before is
    /// only checked for expiry (see the module documentation).
    ///
    /// # Errors
    /// [`TokenRejected`] for anything wrong with the token.
    pub fn check(&self, token: &str) -> Result<Verified, TokenRejected> {
        let known = VERIFIED.with_borrow(|verified| {
            verified.get(token).filter(|(issuer, _)| *issuer == self.id).map(|(_, v)| *v)
        });
        if let Some(verified) = known {
            // As jsonwebtoken checks `exp`: expired once `exp` is more than the leeway ago.
            if verified.expires_at.saturating_add(self.leeway_secs) >= now_secs() {
                return Ok(verified);
            }
            return Err(TokenRejected("ExpiredSignature".into()));
        }
        let (user_id, claims) = self.verify(token)?;
        let verified = Verified { user_id, session_id: claims.sid, expires_at: claims.exp };
        VERIFIED.with_borrow_mut(|remembered| {
            if remembered.len() >= VERIFIED_PER_THREAD {
                remembered.clear();
            }
            remembered.insert(token.into(), (self.id, verified));
        });
        Ok(verified)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry, not-before and issued-at, and
    /// returns the claims with the user id parsed.
    ///
    /// # Errors
    /// [`TokenRejected`] for anything wrong with the token.
    pub fn verify(&self, token: &str) -> Result<(u64, AccessClaims), TokenRejected> {
        let data = decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenRejected(e.to_string()))?;
        if data.header.alg != ALGORITHM {
            return Err(TokenRejected("algorithm".into()));
        }
        if data.claims.iat > now_secs().saturating_add(self.leeway_secs) {
            return Err(TokenRejected("iat is in the future".into()));
        }
        let user_id = data.claims.sub.parse().map_err(|_| TokenRejected("sub".into()))?;
        Ok((user_id, data.claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Settings;

    fn issuer() -> TokenIssuer {
        let settings = Settings::load_with_env(None, []).unwrap();
        TokenIssuer::new(&settings.auth, &SecretString::from("k".repeat(32)))
    }

    #[test]
    fn an_issued_token_verifies_to_its_user_and_session() {
        let issuer = issuer();
        let issued = issuer.issue(42, 7, u64::MAX).unwrap();
        assert_eq!(issued.expires_in, 900);
        let (user, claims) = issuer.verify(&issued.token).unwrap();
        assert_eq!(user, 42);
        assert_eq!(claims.sid, 7);
        assert_eq!(claims.iss, "keel");
        assert_eq!(claims.aud, "keel-api");
    }

    #[test]
    fn an_issued_token_carries_nbf_and_iat() {
        let issuer = issuer();
        let (_, claims) = issuer.verify(&issuer.issue(1, 1, u64::MAX).unwrap().token).unwrap();
        assert_eq!(claims.nbf, Some(claims.iat));
        assert!(claims.iat.abs_diff(now_secs()) <= 1);
    }

    #[test]
    fn a_token_stamped_in_the_future_beyond_the_leeway_is_refused() {
        let issuer = issuer();
        let leeway = Settings::load_with_env(None, []).unwrap().auth.leeway_secs;
        let (_, genuine) = issuer.verify(&issuer.issue(1, 1, u64::MAX).unwrap().token).unwrap();
        let sign = |claims: &AccessClaims| {
            encode(&Header::new(ALGORITHM), claims, &EncodingKey::from_secret(&[b'k'; 32])).unwrap()
        };
        let later = now_secs() + leeway + 60;
        let within = now_secs() + leeway.saturating_sub(5);
        let future_iat = AccessClaims { iat: later, nbf: None, ..genuine.clone() };
        let future_nbf = AccessClaims { nbf: Some(later), ..genuine.clone() };
        assert!(issuer.verify(&sign(&future_iat)).unwrap_err().0.contains("iat"));
        assert!(issuer.verify(&sign(&future_nbf)).is_err());
        let skewed = AccessClaims { iat: within, nbf: Some(within), ..genuine.clone() };
        assert!(issuer.verify(&sign(&skewed)).is_ok(), "within the leeway");
        let old_style = AccessClaims { nbf: None, ..genuine };
        assert!(issuer.verify(&sign(&old_style)).is_ok(), "a token from before nbf");
    }

    #[test]
    fn a_token_never_outlives_its_session() {
        let issuer = issuer();
        let session_ends = (now_secs() + 100) * 1000;
        let issued = issuer.issue(1, 1, session_ends).unwrap();
        assert!(issued.expires_in <= 100, "{}", issued.expires_in);
        let (_, claims) = issuer.verify(&issued.token).unwrap();
        assert_eq!(claims.exp, now_secs() + issued.expires_in);
    }

    #[test]
    fn check_remembers_a_verified_token_per_issuer_and_still_checks_expiry() {
        let issuer = issuer();
        let token = issuer.issue(42, 7, u64::MAX).unwrap().token;
        let first = issuer.check(&token).unwrap();
        assert_eq!((first.user_id, first.session_id), (42, 7));
        assert_eq!(issuer.check(&token).unwrap(), first, "the second check answers the same");
        // Another issuer (another key) on the same thread does not take this one's word.
        let settings = Settings::load_with_env(None, []).unwrap();
        let other = TokenIssuer::new(&settings.auth, &SecretString::from("o".repeat(32)));
        assert!(other.check(&token).is_err());
        // A remembered token that has expired since is refused.
        let leeway = settings.auth.leeway_secs;
        let stale = Verified { expires_at: now_secs() - leeway - 1, ..first };
        VERIFIED.with_borrow_mut(|v| v.insert(token.clone().into(), (issuer.id, stale)));
        assert!(issuer.check(&token).is_err());
        assert!(issuer.check("a.b.c").is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let issuer = issuer();
        for token in ["", "a.b.c", "not a token", "krt_abcdef"] {
            assert!(issuer.verify(token).is_err(), "{token}");
        }
    }
}
