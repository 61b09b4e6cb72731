//! `GET /bots/{id}/indicators`: the indicator series a bot's strategy publishes, with their
//! recent points, for a chart to draw what the strategy sees. The same values stream on the
//! bot's WebSocket channel as `indicator` events (docs/WEBSOCKET.md).

use actix_web::{HttpResponse, web};
use keel_actors::bot::indicators::IndicatorsView;
use keel_actors::bot::supervisor::GetIndicators;
use keel_actors::mailbox::ask;
use serde::Deserialize;

use super::ApiError;
use super::bots::{BOT_NOT_FOUND, BotPath, SUPERVISOR_TIMEOUT};
use super::error::ErrorResponse;
use crate::auth::AuthUser;
use crate::state::AppState;

/// Most points per series one answer holds.
pub const MAX_POINTS: usize = 100_000;

/// `?since=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IndicatorQuery {
    /// Points at or after this event time, ms since the epoch; all kept points by default.
    #[serde(default, deserialize_with = "super::id::int64")]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64, format = Int64)]
    since: u64,
    /// Most points per series, the newest; every kept point by default (1 to 100000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100_000)]
    limit: Option<usize>,
}

/// `GET /bots/{id}/indicators`.
///
/// # Errors
/// 404 for another user's bot, 422 for a bad `since` or `limit`.
#[utoipa::path(get, path = "/bots/{id}/indicators", tag = "trading", params(BotPath, IndicatorQuery),
    responses(
        (status = 200, description = "The strategy's series and their recent points, oldest \
            first (kept in memory: empty before the bot first runs in this process).",
            body = IndicatorsView),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 422, description = "A bad `since` or `limit` (`VALIDATION_FAILED`).",
            body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn indicators(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    query: web::Query<IndicatorQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.limit {
        None => MAX_POINTS,
        Some(n) if (1..=MAX_POINTS).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::validation(vec![super::FieldError::new(
                "limit",
                format!("must be 1 to {MAX_POINTS}"),
            )]));
        }
    };
    let get =
        GetIndicators { user_id: user.user_id, bot_id: id.into_inner(), since: query.since, limit };
    let view = ask(&state.bots()?, get, state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::Ok().json(view))
}
