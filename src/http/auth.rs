//! `/api/v1/auth/*` and `/api/v1/me`.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use keel_actors::bot::supervisor::{RemoveUserBots, RemovedBots};
use keel_actors::identity::{IdentityError, UserRecord, normalize_email, validate_password};
use keel_actors::mailbox::ask;
use keel_actors::vault::RemoveUserCredentials;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::ErrorResponse;
use super::json::Json;
use super::{ApiError, FieldError};
use crate::auth::AuthUser;
use crate::configuration::Registration;
use crate::state::AppState;

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The account's email address.
    #[schema(format = Email, example = "ada@example.com")]
    pub(super) email: String,
    /// 12 to 128 characters (checked at registration; at login a password of another length
    /// matches no account).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    pub(super) password: SecretString,
}

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The account's email address.
    #[schema(format = Email, example = "ada@example.com")]
    email: String,
    /// 12 to 128 characters.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    password: SecretString,
    /// An invite from `POST /admin/invites`: required when `auth.registration` is `invite`,
    /// ignored otherwise.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    invite: Option<SecretString>,
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    #[schema(value_type = String, format = Password)]
    refresh_token: SecretString,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Id.
    id: u64,
    /// Email address, normalised.
    email: String,
    /// When the account was made, RFC 3339 UTC.
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> Self {
        let created = std::time::UNIX_EPOCH + std::time::Duration::from_millis(user.created_at_ms);
        Self {
            id: user.id,
            email: user.email.clone(),
            created_at: humantime::format_rfc3339_seconds(created).to_string(),
        }
    }
}

/// Tokens handed out by register, login and refresh.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// The bearer token for `Authorization: Bearer …`.
    access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Single-use token for `POST /auth/refresh`.
    refresh_token: String,
    /// Seconds until the session (and so the refresh token) expires.
    refresh_expires_in: u64,
}

/// What `POST /auth/register` answers: the new account, logged in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// The account.
    user: UserView,
    /// Its first session's tokens.
    tokens: TokenPair,
}

/// Validates email and password shape, collecting both problems at once.
fn check_new_credentials(email: &str, password: &SecretString) -> Result<String, ApiError> {
    let email = normalize_email(email);
    let password = validate_password(password);
    let mut details = Vec::new();
    if let Err(message) = &email {
        details.push(FieldError::new("email", message));
    }
    if let Err(message) = password {
        details.push(FieldError::new("password", message));
    }
    match email {
        Ok(email) if details.is_empty() => Ok(email),
        _ => Err(ApiError::validation(details)),
    }
}

/// Starts a session for `user_id`, makes it durable, and answers with its tokens.
async fn start_session(state: &AppState, user_id: u64) -> Result<TokenPair, ApiError> {
    let identity = &state.identity;
    let (session, refresh) = identity.sessions.start(user_id, identity.refresh_ttl).await?;
    state.store.commit().await?;
    token_pair(state, user_id, session.id, refresh.0, session.expires_at_ms)
}

fn token_pair(
    state: &AppState,
    user_id: u64,
    session_id: u64,
    refresh: SecretString,
    session_expires_at_ms: u64,
) -> Result<TokenPair, ApiError> {
    let access = state
        .identity
        .tokens
        .issue(user_id, session_id, session_expires_at_ms)
        .map_err(ApiError::internal)?;
    let now = keel_actors::identity::now_ms();
    Ok(TokenPair {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        refresh_token: refresh.expose_secret().to_owned(),
        refresh_expires_in: session_expires_at_ms.saturating_sub(now) / 1000,
    })
}

/// `POST /auth/register`: creates an account and logs it in.
///
/// Who may register is `auth.registration`: anyone (`open`), the holder of an invite
/// (`invite`), or no one (`closed`); each client IP may try `auth.registrations_per_hour_per_ip`
/// times an hour.
///
/// # Errors
/// 403 `REGISTRATION_CLOSED`, `INVITE_REQUIRED` or `INVALID_INVITE`; 422 for a bad email or
/// password; 409 for a taken email; 429 past the per-IP rate; 503 when hashing is saturated.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = NewUser,
    responses(
        (status = 201, description = "The account, logged in.", body = Registered),
        (status = 403, description = "Registration is closed (`REGISTRATION_CLOSED`), or needs \
            a valid invite (`INVITE_REQUIRED`, `INVALID_INVITE`).", body = ErrorResponse),
        (status = 409, description = "An account with this email exists (`CONFLICT`).",
            body = ErrorResponse),
        (status = 422, description = "Bad email or password (`VALIDATION_FAILED`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all)]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let identity = &state.identity;
    let mode = state.settings.auth.registration;
    if mode == Registration::Closed {
        return Err(forbidden("REGISTRATION_CLOSED", "registration is closed on this server"));
    }
    if let Err(wait) = identity.throttle.register(client_ip(&state, &req)) {
        return Err(ApiError::rate_limited(wait.as_secs().max(1)));
    }
    let email = check_new_credentials(&body.email, &body.password)?;
    let invite = match (mode, body.invite) {
        (Registration::Invite, None) => {
            return Err(forbidden("INVITE_REQUIRED", "registration needs an invite"));
        }
        (Registration::Invite, Some(token)) => match identity.invites.consume(&token).await? {
            Some(expires_at_ms) => Some((token, expires_at_ms)),
            None => return Err(forbidden("INVALID_INVITE", "the invite is unknown or expired")),
        },
        _ => None,
    };
    let created = match identity.hasher.hash(body.password).await {
        Ok(hash) => identity.users.create(&email, hash).await,
        Err(err) => Err(err),
    };
    let user = match created {
        Ok(user) => user,
        Err(err) => {
            // The invite was not used up: give it back.
            if let Some((token, expires_at_ms)) = &invite {
                identity.invites.restore(token, *expires_at_ms).await?;
            }
            return Err(err.into());
        }
    };
    let tokens = start_session(&state, user.id).await?;
    tracing::info!(user_id = user.id, invited = invite.is_some(), "user registered");
    Ok(HttpResponse::Created().json(Registered { user: UserView::from(&user), tokens }))
}

fn forbidden(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

fn client_ip(state: &AppState, req: &HttpRequest) -> Option<IpAddr> {
    state.protection.client_ip(req)
}

/// `POST /auth/login`.
///
/// Takes the same time whether or not the email exists: an unknown email is checked against a
/// decoy hash of the same cost.
///
/// # Errors
/// 401 for a wrong email or password, 429 when throttled, 503 when hashing is saturated.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, description = "A new session's tokens.", body = TokenPair),
        (status = 401, description = "Wrong email or password (`UNAUTHORIZED`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // A malformed email cannot match any account, but is throttled and hashed like one.
    let email = normalize_email(&body.email).unwrap_or_else(|_| body.email.to_lowercase());
    if let Err(wait) = state.identity.throttle.attempt(&email, client_ip(&state, &req)) {
        metrics::counter!("keel_login_throttled_total").increment(1);
        return Err(ApiError::rate_limited(wait.as_secs().max(1)));
    }
    let user = state.identity.users.by_email(&email).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matched = state.identity.hasher.verify(stored, body.password).await?;
    let Some(user) = user.filter(|_| matched) else {
        metrics::counter!("keel_login_failures_total").increment(1);
        return Err(IdentityError::InvalidCredentials.into());
    };
    let tokens = start_session(&state, user.id).await?;
    Ok(HttpResponse::Ok().json(tokens))
}

/// `POST /auth/refresh`: rotates the refresh token. Reusing an old one revokes its session.
///
/// # Errors
/// 401 for an unknown, expired, reused or revoked refresh token.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the old refresh token is spent.",
            body = TokenPair),
        (status = 401, description = "Unknown, expired, reused or revoked refresh token \
            (`UNAUTHORIZED`).", body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all)]
pub async fn refresh(
    state: web::Data<AppState>,
    body: Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let identity = &state.identity;
    let result = identity.sessions.rotate(&body.refresh_token).await;
    // A detected reuse revoked the session: make that durable before answering.
    state.store.commit().await?;
    let (session, next) = result?;
    if !identity.users.exists(session.user_id).await? {
        return Err(IdentityError::InvalidRefreshToken.into());
    }
    let tokens = token_pair(&state, session.user_id, session.id, next.0, session.expires_at_ms)?;
    Ok(HttpResponse::Ok().json(tokens))
}

/// `POST /auth/logout`: ends the caller's session; its access and refresh tokens stop working,
/// and WebSockets authenticated with it close (4401).
///
/// # Errors
/// 401 without a valid token.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204, description = "The session is over.")))]
pub async fn logout(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.identity.sessions.revoke(user.user_id, user.session_id, "logout").await?;
    state.store.commit().await?;
    state.sessions.revoke(user.user_id, &[user.session_id]);
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /auth/logout-all`: ends every session of the caller's, this one included ("sign out
/// everywhere").
///
/// # Errors
/// 401 without a valid token.
#[utoipa::path(post, path = "/auth/logout-all", tag = "auth",
    responses((status = 204, description = "Every session of the account is over.")))]
pub async fn logout_all(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let revoked =
        state.identity.sessions.revoke_all(user.user_id, None, "logout everywhere").await?;
    state.store.commit().await?;
    state.sessions.revoke(user.user_id, &revoked);
    tracing::info!(user_id = user.user_id, sessions = revoked.len(), "signed out everywhere");
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /me/password` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The account's password now.
    #[schema(value_type = String, format = Password, max_length = 128)]
    current_password: SecretString,
    /// The new password, 12 to 128 characters.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    new_password: SecretString,
}

/// `POST /me/password`: changes the password and ends every other session of the account (the
/// caller's stays).
///
/// Attempts spend the login throttle's budget (per account and per IP), so a stolen access
/// token cannot be used to guess the password.
///
/// # Errors
/// 403 `WRONG_PASSWORD` when `current_password` is wrong, 422 for a new password that breaks the
/// rules, 429 when throttled, 503 when hashing is saturated.
#[utoipa::path(post, path = "/me/password", tag = "auth", request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every other session is over."),
        (status = 403, description = "`current_password` is wrong (`WRONG_PASSWORD`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn change_password(
    req: HttpRequest,
    user: AuthUser,
    state: web::Data<AppState>,
    body: Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if let Err(message) = validate_password(&body.new_password) {
        return Err(ApiError::validation(vec![FieldError::new("new_password", message)]));
    }
    let identity = &state.identity;
    let record = identity
        .users
        .get(user.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    if let Err(wait) = identity.throttle.attempt(&record.email, client_ip(&state, &req)) {
        metrics::counter!("keel_login_throttled_total").increment(1);
        return Err(ApiError::rate_limited(wait.as_secs().max(1)));
    }
    if !identity.hasher.verify(Some(record.password_hash), body.current_password).await? {
        metrics::counter!("keel_login_failures_total").increment(1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "WRONG_PASSWORD",
            "current_password is not the account's password",
        ));
    }
    let hash = identity.hasher.hash(body.new_password).await?;
    if !identity.users.set_password(user.user_id, hash).await? {
        return Err(ApiError::unauthorized("the account no longer exists"));
    }
    let revoked = identity
        .sessions
        .revoke_all(user.user_id, Some(user.session_id), "password changed")
        .await?;
    state.store.commit().await?;
    state.sessions.revoke(user.user_id, &revoked);
    tracing::info!(sessions_ended = revoked.len(), "password changed");
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /me`.
///
/// # Errors
/// 401 without a valid token.
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, description = "The caller's account.", body = UserView)))]
pub async fn me(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let record = state
        .identity
        .users
        .get(user.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    Ok(HttpResponse::Ok().json(UserView::from(&record)))
}

/// What `DELETE /me` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountDeleted {
    /// The account's bots: stopped (open orders canceled first) and deleted with their history.
    bots: RemovedBots,
    /// Exchange accounts whose secrets were removed from the vault.
    exchange_accounts_removed: usize,
    /// Login sessions ended.
    sessions_ended: usize,
}

/// `DELETE /me`: deletes the account and everything of it.
///
/// In order: every bot is stopped, its open orders canceled first (a live bot's cancels are
/// sent to the venue and answered before it stops) and deleted with its history; the exchange
/// accounts' secrets are removed from the vault; every session is revoked (its tokens refused
/// at once, its WebSockets closed); backtest uploads are removed; then the user record. The
/// answer lists any live order whose cancel the venue did not confirm: it may still be working
/// on the exchange. What is kept by design is in docs/SECURITY.md ("Deleting an account").
///
/// # Errors
/// 401 without a valid token; 503 `BOTS_NOT_STOPPED` when a bot did not stop in time (nothing
/// else was deleted: retry); 503/504 if the vault or the bot supervisor cannot answer.
#[utoipa::path(delete, path = "/me", tag = "auth",
    responses(
        (status = 200, description = "The account and everything of it is gone.",
            body = AccountDeleted),
        (status = 504, description = "The vault or the bot supervisor did not answer in time \
            (`TIMEOUT`).", body = ErrorResponse),
    ))]
pub async fn delete_me(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user_id = user.user_id;
    // Bots first: a live bot needs the vault to sign its cancels. Allow for the bots' own
    // deadline (5 s to stop) on top of the request timeout.
    let deadline = state.settings.request_timeout() + std::time::Duration::from_secs(10);
    let bots = ask(&state.bots()?, RemoveUserBots { user_id }, deadline, "bots").await??;
    if !bots.failed.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BOTS_NOT_STOPPED",
            format!("bots {:?} did not stop in time; nothing else was deleted: retry", bots.failed),
        )
        .retry_after(5));
    }
    let removed = ask(
        &state.vault()?,
        RemoveUserCredentials { user_id },
        state.settings.request_timeout(),
        "vault",
    )
    .await??;
    let identity = state.identity.clone();
    let notifications = state.notifications.clone();
    let uploads = keel_actors::backtest::upload::uploads_dir(&state.settings.store.path, user_id);
    let modules = state.strategies.clone();
    let mut ended = identity.sessions.revoke_all(user_id, None, "account deleted").await?;
    identity.users.delete(user_id).await?;
    // A login that checked the password before the user row went may have started a session
    // meanwhile: revoke again, then drop every session and refresh token of the account.
    ended.extend(identity.sessions.revoke_all(user_id, None, "account deleted").await?);
    identity.sessions.remove_all(user_id).await?;
    web::block(move || -> Result<(), ApiError> {
        // Their bots are gone: nothing runs the owner's strategy modules any more.
        modules.remove_user(user_id)?;
        notifications.remove_user(user_id)?;
        match std::fs::remove_dir_all(&uploads) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(ApiError::internal(err)),
        }
    })
    .await
    .map_err(ApiError::internal)??;
    state.backtests.forget_user(user_id);
    state.store.commit().await?;
    state.sessions.revoke(user_id, &ended);
    tracing::info!(user_id, credentials = removed, bots = bots.bots_deleted, "account deleted");
    Ok(HttpResponse::Ok().json(AccountDeleted {
        bots,
        exchange_accounts_removed: removed,
        sessions_ended: ended.len(),
    }))
}
