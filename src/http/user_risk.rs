//! `/api/v1/me/risk`: an owner's own limits over all of their bots. Reading goes to the cached
//! limits (`keel_actors::bot::UserLimits`); a change goes through the bot supervisor, which
//! refuses to lower `max_leverage` under a running bot (`keel_core::bot::user_risk`).

use actix_web::{HttpResponse, web};
use keel_actors::bot::SetUserRisk;
use keel_actors::mailbox::ask;
use keel_core::bot::user_risk::UserRiskLimits;

use super::ApiError;
use super::bots::SUPERVISOR_TIMEOUT;
use super::error::ErrorResponse;
use super::json::Json;
use crate::auth::AuthUser;
use crate::state::AppState;

/// `GET /me/risk`: the caller's limits (`null`: not set).
///
/// # Errors
/// 401 without a valid token.
#[utoipa::path(get, path = "/me/risk", tag = "auth",
    responses(
        (status = 200, description = "The caller's limits over all of their bots; `null` is no \
            limit.", body = UserRiskLimits),
    ))]
pub async fn get(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.user_limits.get(user.user_id)?))
}

/// `PUT /me/risk`: replaces the caller's limits over all of their bots; a field left out or
/// `null` is no limit.
///
/// `max_leverage` (1 to 125) refuses any bot of the caller's with a higher leverage at create,
/// edit and start (422, field `leverage`); it cannot be set below the leverage of a bot that is
/// running or paused (409 naming the bots: stop them first), so no bot ever trades above it.
/// The server's `bots.max_leverage` applies too when it is lower. `max_notional` (quote, above
/// 0) caps the notional of all the caller's running bots together (each bot's position at the
/// mark price plus its open orders that add to it): an order that would pass it is rejected
/// with `MAX_USER_NOTIONAL`, from the bots' next refresh (within 250 ms) on.
///
/// # Errors
/// 422 for a limit out of range, 409 for a `max_leverage` below a running bot's leverage.
#[utoipa::path(put, path = "/me/risk", tag = "auth", request_body = UserRiskLimits,
    responses(
        (status = 200, description = "The new limits, stored.", body = UserRiskLimits),
        (status = 409, description = "`max_leverage` is below the leverage of running or paused \
            bots, named in the message (`CONFLICT`).", body = ErrorResponse),
        (status = 422, description = "A limit out of range: `max_leverage` 1 to 125, \
            `max_notional` above 0 (`VALIDATION_FAILED`).", body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn put(
    user: AuthUser,
    state: web::Data<AppState>,
    body: Json<UserRiskLimits>,
) -> Result<HttpResponse, ApiError> {
    let limits = body.into_inner();
    let details = limits.validate();
    if !details.is_empty() {
        return Err(ApiError::validation(details));
    }
    let change = SetUserRisk { user_id: user.user_id, limits };
    let stored = ask(&state.bots()?, change, state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::Ok().json(stored))
}
