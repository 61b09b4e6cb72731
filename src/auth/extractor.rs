//! `AuthUser`: the only way a handler learns who is calling.
//!
//! It reads `Authorization: Bearer <jwt>`, verifies the token ([`TokenIssuer::check`]: a token
//! this worker thread verified before costs a hash look-up), and checks that its session is not
//! revoked ([`SessionStore::is_revoked`]: one in-memory look-up, kept current from Postgres in
//! cluster mode with `cluster.postgres_url`). No store read: a session that ends
//! (logout, logout everywhere, a password change, account deletion, refresh-token reuse) is
//! revoked, and tokens never outlive their session's expiry. Any failure is 401
//! `UNAUTHORIZED` with `WWW-Authenticate: Bearer`, saying no more.
//!
//! [`TokenIssuer::check`]: crate::auth::TokenIssuer::check
//! [`SessionStore::is_revoked`]: keel_actors::identity::SessionStore::is_revoked

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use crate::http::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    /// The user.
    pub user_id: u64,
    /// Their login session.
    pub session_id: u64,
    /// When the access token expires, seconds since the epoch.
    pub expires_at: u64,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::unauthorized(message).www_authenticate()
}

impl AuthUser {
    /// Authenticates a bearer token (also used by the WebSocket `auth` message).
    ///
    /// # Errors
    /// 401 for a bad or expired token, or one whose session was revoked (which includes every
    /// session of a deleted account).
    pub fn from_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let identity = &state.identity;
        let verified = identity.tokens.check(token).map_err(|rejected| {
            tracing::debug!(reason = %rejected, "access token refused");
            unauthorized("invalid or expired access token")
        })?;
        // In cluster mode with Postgres, an error: the cluster's revocations could not be read
        // for a while, so "not revoked" cannot be said (503, never a pass).
        if identity.sessions.is_revoked(verified.session_id)? {
            return Err(unauthorized("the session has ended; log in again"));
        }
        Ok(Self {
            user_id: verified.user_id,
            session_id: verified.session_id,
            expires_at: verified.expires_at,
        })
    }

    /// The bearer token of a request's `Authorization` header, authenticated, and recorded in
    /// the request's extensions (the access log reads the user from there).
    ///
    /// # Errors
    /// As [`AuthUser::from_token`], and 401 without a well-formed header.
    pub fn from_request_sync(req: &HttpRequest) -> Result<Self, ApiError> {
        let user = Self::authenticate(req)?;
        req.extensions_mut().insert(user);
        Ok(user)
    }

    fn authenticate(req: &HttpRequest) -> Result<Self, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not registered")))?;
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("an access token is required"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        Self::from_token(state, token)
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::from_request_sync(req))
    }
}
