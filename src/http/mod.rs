//! The HTTP façade: one place that declares every route, the extractor error handlers, and the
//! middleware stack.
//!
//! Handlers turn requests into actor messages and answers into JSON; they hold no state of their
//! own. Every `/api/v1` route is declared in [`api_routes`], which is also what the test that
//! proves "no route ships unprotected" walks.

pub mod access_log;
pub mod accounts;
pub mod admin;
pub mod auth;
pub mod backtests;
pub mod bots;
pub mod dashboard;
pub mod error;
pub mod forward;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod id;
pub mod indicators;
pub mod json;
pub mod limits;
pub mod markets;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod protect;
pub mod request;
pub mod strategies;
pub mod trading;
pub mod user_risk;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::{HttpRequest, web};
pub use error::{ApiError, FieldError};

/// CORS from `protection.cors_allowed_origins`: the listed origins; with none listed, none in
/// production and any in development.
pub fn cors(settings: &crate::configuration::Settings) -> actix_cors::Cors {
    let origins = &settings.protection.cors_allowed_origins;
    let development = settings.environment == crate::configuration::Environment::Development;
    if origins.is_empty() && development {
        return actix_cors::Cors::permissive();
    }
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
        ])
        .expose_headers(["x-request-id", "retry-after"])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// A list answer: `{"items": [...]}`, so fields can be added beside the list later.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    /// The rows.
    pub items: Vec<T>,
}

/// Prefix of the versioned API.
pub const API_PREFIX: &str = "/api/v1";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (register, login, refresh, the OpenAPI document).
    Public,
    /// Only an authenticated user; the handler takes the `AuthUser` extractor.
    User,
}

/// One `/api/v1` route: what it matches, who may call it, and its handler.
pub struct ApiRoute {
    /// HTTP method.
    pub method: Method,
    /// Path under [`API_PREFIX`], with `{param}` placeholders.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    route: actix_web::Route,
}

impl std::fmt::Debug for ApiRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}{} ({:?})", self.method, API_PREFIX, self.path, self.access)
    }
}

impl ApiRoute {
    /// A route; `route` supplies the handler, and its method is set from `method`.
    pub fn new(
        method: Method,
        path: &'static str,
        access: Access,
        route: actix_web::Route,
    ) -> Self {
        Self { method: method.clone(), path, access, route: route.method(method) }
    }
}

/// Every `/api/v1` route. Add new endpoints here and nowhere else.
pub fn api_routes() -> Vec<ApiRoute> {
    use Access::{Public, User};
    use Method as M;
    vec![
        ApiRoute::new(M::GET, "/openapi.json", Public, web::route().to(openapi::document)),
        ApiRoute::new(M::POST, "/auth/register", Public, web::route().to(auth::register)),
        ApiRoute::new(M::POST, "/auth/login", Public, web::route().to(auth::login)),
        ApiRoute::new(M::POST, "/auth/refresh", Public, web::route().to(auth::refresh)),
        ApiRoute::new(M::POST, "/auth/logout", User, web::route().to(auth::logout)),
        ApiRoute::new(M::POST, "/auth/logout-all", User, web::route().to(auth::logout_all)),
        ApiRoute::new(M::GET, "/me", User, web::route().to(auth::me)),
        ApiRoute::new(M::DELETE, "/me", User, web::route().to(auth::delete_me)),
        ApiRoute::new(M::POST, "/me/password", User, web::route().to(auth::change_password)),
        ApiRoute::new(M::GET, "/me/risk", User, web::route().to(user_risk::get)),
        ApiRoute::new(M::PUT, "/me/risk", User, web::route().to(user_risk::put)),
        ApiRoute::new(M::POST, "/exchange-accounts", User, web::route().to(accounts::create)),
        ApiRoute::new(M::GET, "/exchange-accounts", User, web::route().to(accounts::list)),
        ApiRoute::new(
            M::DELETE,
            "/exchange-accounts/{id}",
            User,
            web::route().to(accounts::delete),
        ),
        ApiRoute::new(
            M::GET,
            "/exchange-accounts/{id}/balances",
            User,
            web::route().to(accounts::balances),
        ),
        ApiRoute::new(M::GET, "/venues", User, web::route().to(markets::venues)),
        ApiRoute::new(
            M::GET,
            "/markets/{venue}/{symbol}/ticker",
            User,
            web::route().to(markets::ticker),
        ),
        ApiRoute::new(
            M::GET,
            "/markets/{venue}/{symbol}/candles",
            User,
            web::route().to(markets::candles),
        ),
        ApiRoute::new(M::POST, "/bots", User, web::route().to(bots::create)),
        ApiRoute::new(M::GET, "/bots", User, web::route().to(bots::list)),
        ApiRoute::new(M::GET, "/bots/{id}", User, web::route().to(bots::get)),
        ApiRoute::new(M::PATCH, "/bots/{id}", User, web::route().to(bots::update)),
        ApiRoute::new(M::DELETE, "/bots/{id}", User, web::route().to(bots::delete)),
        ApiRoute::new(
            M::POST,
            "/bots/{id}/close-position",
            User,
            web::route().to(trading::close_position),
        ),
        ApiRoute::new(M::GET, "/bots/{id}/orders", User, web::route().to(trading::orders)),
        ApiRoute::new(M::POST, "/bots/{id}/orders", User, web::route().to(trading::place)),
        ApiRoute::new(
            M::DELETE,
            "/bots/{id}/orders/{order_id}",
            User,
            web::route().to(trading::cancel),
        ),
        ApiRoute::new(M::GET, "/bots/{id}/fills", User, web::route().to(trading::fills)),
        ApiRoute::new(M::GET, "/bots/{id}/position", User, web::route().to(trading::position)),
        ApiRoute::new(
            M::GET,
            "/bots/{id}/performance",
            User,
            web::route().to(trading::performance),
        ),
        ApiRoute::new(M::GET, "/bots/{id}/events", User, web::route().to(trading::events)),
        ApiRoute::new(
            M::GET,
            "/bots/{id}/indicators",
            User,
            web::route().to(indicators::indicators),
        ),
        // After the fixed sub-paths, so `close-position` and the rest are not taken as actions.
        ApiRoute::new(M::POST, "/bots/{id}/{action}", User, web::route().to(bots::control)),
        ApiRoute::new(M::POST, "/kill-switch", User, web::route().to(trading::kill_switch)),
        ApiRoute::new(M::GET, "/portfolio", User, web::route().to(trading::portfolio)),
        // Before `/backtests/{id}`, so `uploads` is not taken for an id.
        ApiRoute::new(M::POST, "/backtests/uploads", User, web::route().to(backtests::upload)),
        ApiRoute::new(M::POST, "/backtests", User, web::route().to(backtests::create)),
        ApiRoute::new(M::GET, "/backtests", User, web::route().to(backtests::list)),
        ApiRoute::new(M::GET, "/backtests/{id}", User, web::route().to(backtests::get)),
        ApiRoute::new(M::DELETE, "/backtests/{id}", User, web::route().to(backtests::cancel)),
        ApiRoute::new(M::POST, "/strategies", User, web::route().to(strategies::upload)),
        ApiRoute::new(M::GET, "/strategies", User, web::route().to(strategies::list)),
        ApiRoute::new(M::GET, "/strategies/{id}", User, web::route().to(strategies::get)),
        ApiRoute::new(M::DELETE, "/strategies/{id}", User, web::route().to(strategies::delete)),
        ApiRoute::new(
            M::POST,
            "/notifications/channels",
            User,
            web::route().to(notifications::create),
        ),
        ApiRoute::new(
            M::GET,
            "/notifications/channels",
            User,
            web::route().to(notifications::list),
        ),
        ApiRoute::new(
            M::DELETE,
            "/notifications/channels/{id}",
            User,
            web::route().to(notifications::delete),
        ),
        ApiRoute::new(
            M::GET,
            "/notifications/deliveries",
            User,
            web::route().to(notifications::deliveries),
        ),
    ]
}

/// Registers the whole HTTP surface on an `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Resources rather than `cfg.route`, so a wrong method answers 405 rather than 404.
    cfg.service(web::resource("/health/live").route(web::get().to(health::live)))
        .service(web::resource("/health/ready").route(web::get().to(health::ready)))
        .service(web::resource("/metrics").route(web::get().to(metrics::scrape)))
        // Guarded by `admin.token`, not by user tokens: outside the `/api/v1` route table.
        .service(web::resource(admin::BACKUP_PATH).route(web::get().to(admin::backup)))
        .service(web::resource(admin::INVITES_PATH).route(web::post().to(admin::create_invite)));
    // The dashboard at `/`, a client of the routes below.
    cfg.configure(dashboard::configure);
    let mut scope = web::scope(API_PREFIX);
    let mut routes = api_routes();
    // One resource per path, so a wrong method on a known path answers 405, not 404.
    while let Some(first) = routes.first() {
        let path = first.path;
        let mut resource = web::resource(path);
        let (same, rest): (Vec<_>, Vec<_>) = routes.into_iter().partition(|r| r.path == path);
        for api_route in same {
            resource = resource.route(api_route.route);
        }
        scope = scope.service(resource);
        routes = rest;
    }
    // The WebSocket upgrade authenticates with a bearer header or a first `auth` message
    // (browsers cannot set headers on an upgrade), so it is not in the route table above.
    scope = scope.service(web::resource("/ws").route(web::get().to(crate::ws::connect)));
    cfg.service(scope);
}

/// Extractor settings that turn every parse failure into the JSON error shape.
pub fn extractor_configs(
    max_body_bytes: usize,
) -> (web::JsonConfig, web::PayloadConfig, web::PathConfig, web::QueryConfig) {
    (
        web::JsonConfig::default()
            .limit(max_body_bytes)
            .error_handler(|err, _req| json_error(err).into()),
        web::PayloadConfig::default().limit(max_body_bytes),
        web::PathConfig::default().error_handler(|err, req| path_error(err, req).into()),
        web::QueryConfig::default().error_handler(|err, _req| query_error(err).into()),
    )
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body has {length} bytes; the limit is {limit}"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body exceeds the limit of {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be JSON with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::validation(vec![FieldError::new("body", e.to_string())])
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("MALFORMED_JSON", format!("the body is not valid JSON: {e}"))
        }
        other => ApiError::bad_request("BAD_REQUEST", format!("cannot read the body: {other}")),
    }
}

fn path_error(err: PathError, req: &HttpRequest) -> ApiError {
    let PathError::Deserialize(e) = err else {
        return ApiError::not_found("NOT_FOUND", format!("nothing at {}", req.path()));
    };
    ApiError::not_found("NOT_FOUND", format!("nothing at {}: {e}", req.path()))
}

fn query_error(err: QueryPayloadError) -> ApiError {
    ApiError::validation(vec![FieldError::new("query", err.to_string())])
}
