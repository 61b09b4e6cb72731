//! Request protection: the global in-flight cap, per-IP and per-user rate limits, the client IP
//! behind trusted proxies, and security headers.
//!
//! - Over `protection.max_in_flight` requests at once, a request is answered 503 `OVERLOADED` at
//!   once instead of queueing; health checks and metrics are exempt, so an operator still sees in.
//! - Authenticated requests (a bearer token whose signature and expiry verify; the handler still
//!   does the full check) spend the user's budget, others the client IP's. Over it: 429
//!   `RATE_LIMITED` with `Retry-After`.
//! - The client IP is the peer address, unless the peer is a listed trusted proxy: then it is the
//!   right-most `X-Forwarded-For` entry that is not a trusted proxy. `X-Forwarded-For` from anyone
//!   else is ignored.
//! - Every response gets `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
//!   `X-Frame-Options: DENY`; API responses `Cache-Control: no-store`; and HSTS when
//!   `protection.hsts` says Keel is served over TLS.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiError;
use crate::configuration::ProtectionSettings;
use crate::state::AppState;

/// Shared protection state.
#[derive(Debug)]
pub struct Protection {
    in_flight: AtomicUsize,
    max_in_flight: usize,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<u64>,
    trusted_proxies: Vec<IpAddr>,
    hsts: bool,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Protection {
    /// From the settings (validated: the proxies parse).
    pub fn new(settings: &ProtectionSettings) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max_in_flight: settings.max_in_flight,
            per_ip: RateLimiter::keyed(per_minute(settings.per_ip_per_minute)),
            per_user: RateLimiter::keyed(per_minute(settings.per_user_per_minute)),
            trusted_proxies: settings
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            hsts: settings.hsts,
        }
    }

    /// Forgets rate-limit keys whose budget has refilled, so memory stays bounded.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_user.retain_recent();
    }

    /// The client's address, seen through trusted proxies only.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = req
            .headers()
            .get_all(HeaderName::from_static("x-forwarded-for"))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        // Right to left: each trusted proxy appended the address it received from.
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !self.trusted_proxies.contains(ip))
                .unwrap_or(peer),
        )
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// The user a bearer token names, when its signature and expiry verify.
fn bearer_user(state: &AppState, req: &ServiceRequest) -> Option<u64> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    state.identity.tokens.check(token).ok().map(|verified| verified.user_id)
}

fn refuse(req: ServiceRequest, error: &ApiError) -> ServiceResponse<BoxBody> {
    let response = error.error_response();
    req.into_response(response)
}

/// The middleware (innermost of the stack, so refusals still get request ids and the error
/// shape).
///
/// # Errors
/// Whatever the inner service returns.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let protection = state.protection.clone();
    let path = req.path().to_owned();
    let is_api = path.starts_with(super::API_PREFIX);
    let _guard = if exempt(&path) {
        None
    } else {
        if protection.in_flight.fetch_add(1, Ordering::AcqRel) >= protection.max_in_flight {
            protection.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("keel_http_shed_total").increment(1);
            return Ok(refuse(req, &ApiError::overloaded("the server")));
        }
        let guard = InFlight(&protection.in_flight);
        // The limiter's own clock: `DefaultClock::default()` builds a quanta clock, which
        // calibrates with CPUID (a VM exit under virtualisation) every time.
        let now = protection.per_ip.clock().now();
        let checked = match bearer_user(&state, &req) {
            Some(user_id) => protection.per_user.check_key(&user_id),
            None => match protection.client_ip(req.request()) {
                Some(ip) => protection.per_ip.check_key(&ip),
                None => Ok(()),
            },
        };
        if let Err(not_until) = checked {
            let wait = not_until.wait_time_from(now).as_secs().max(1);
            metrics::counter!("keel_http_rate_limited_total").increment(1);
            drop(guard);
            return Ok(refuse(req, &ApiError::rate_limited(wait)));
        }
        Some(guard)
    };
    let mut res = next.call(req).await?.map_into_boxed_body();
    let headers = res.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if is_api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if protection.hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    Ok(res)
}

/// Shared by every worker.
pub type SharedProtection = Arc<Protection>;
