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
//! - Per client address (an IPv6 /64, see [`super::limits::ip_key`]): at most
//!   `protection.max_connections_per_ip` connections open (more are closed as they are
//!   accepted, [`Protection::admit_connection`]) and `protection.max_in_flight_per_ip` requests in
//!   flight (more answer 503 `OVERLOADED`), so one address cannot hold the server's slots.
//! - The head checks and body deadlines of [`super::limits`]: 415 for a compressed body, 400 for
//!   an over-long URL, 431 for oversized headers, 408 for a body that does not arrive in time.
//! - The security headers every response carries are set by the outermost middleware
//!   ([`security_headers`], called from [`super::request`]), so that answers made outside this
//!   one (CORS refusals, actix's own errors) carry them too.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiError;
use super::limits::{self, BodyDeadline, BodyTimeouts, HeadLimits, PerIp, ip_key};
use crate::configuration::ProtectionSettings;
use crate::state::AppState;

/// Shared protection state.
#[derive(Debug)]
pub struct Protection {
    in_flight: AtomicUsize,
    max_in_flight: usize,
    in_flight_per_ip: Arc<PerIp>,
    connections_per_ip: Arc<PerIp>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<u64>,
    trusted_proxies: Vec<IpAddr>,
    /// Cluster mode with forwarding: a request this node's forwarding responder sends to its own
    /// listener (from loopback, marked `keel-forwarded`) is counted under the client address the
    /// node it reached saw (its `x-forwarded-for`), not under loopback.
    forwarded_from_cluster: bool,
    hsts: bool,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Protection {
    /// From the settings (validated: the proxies parse). `forwarded_from_cluster`: cluster mode
    /// with forwarding (`cluster.postgres_url`).
    pub fn new(settings: &ProtectionSettings, forwarded_from_cluster: bool) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max_in_flight: settings.max_in_flight,
            in_flight_per_ip: Arc::new(PerIp::new(settings.max_in_flight_per_ip)),
            connections_per_ip: Arc::new(PerIp::new(settings.max_connections_per_ip)),
            per_ip: RateLimiter::keyed(per_minute(settings.per_ip_per_minute)),
            per_user: RateLimiter::keyed(per_minute(settings.per_user_per_minute)),
            trusted_proxies: settings
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            forwarded_from_cluster,
            hsts: settings.hsts,
        }
    }

    /// Forgets rate-limit keys whose budget has refilled, so memory stays bounded.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_user.retain_recent();
    }

    /// Counts a connection accepted from `peer` against `protection.max_connections_per_ip`:
    /// `Ok(None)` for a trusted proxy (exempt: it speaks for many clients), `Ok(Some(slot))`
    /// (hold the slot for as long as the connection lives), `Err(())` past the cap.
    #[allow(clippy::result_unit_err)]
    pub fn admit_connection(&self, peer: IpAddr) -> Result<Option<limits::Slot>, ()> {
        if self.trusted_proxies.contains(&peer) {
            return Ok(None);
        }
        self.connections_per_ip.acquire(ip_key(peer)).map(Some).ok_or(())
    }

    /// Marks, in a connection's data, a connection refused by [`Protection::admit_connection`].
    pub fn refused_marker() -> ConnectionRefused {
        ConnectionRefused(())
    }

    /// Connections `ip`'s key holds open now.
    pub fn connections_of(&self, ip: IpAddr) -> u32 {
        self.connections_per_ip.held(&ip_key(ip))
    }

    /// The client's address, seen through trusted proxies only.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let forwarded = || {
            req.headers()
                .get_all(HeaderName::from_static("x-forwarded-for"))
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
                .collect::<Vec<_>>()
        };
        // Another node's request, through this node's own forwarding responder: the client is
        // the one that node saw (it set the header itself, one address; the per-address limits
        // were applied there too).
        if self.forwarded_from_cluster
            && peer.is_loopback()
            && req.headers().contains_key("keel-forwarded")
        {
            return Some(forwarded().last().copied().unwrap_or(peer));
        }
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = forwarded();
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

/// In a connection's data: the connection was past its address's cap and is being shut.
#[derive(Debug)]
pub struct ConnectionRefused(());

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
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    if req.conn_data::<ConnectionRefused>().is_some() {
        // Shut as it was accepted (past the address's connection cap), but a request it had
        // already sent can still be read: it gets nothing, not even a slot.
        let mut res = ApiError::overloaded("the server, for this address,").error_response();
        res.head_mut().set_connection_type(ConnectionType::Close);
        return Ok(req.into_response(res));
    }
    let server = &state.settings.server;
    let head = HeadLimits {
        max_url_bytes: server.max_url_bytes,
        max_header_bytes: server.max_header_bytes,
    };
    if let Some(refusal) = limits::check_head(&req, head) {
        metrics::counter!("keel_http_refused_total", "reason" => refusal_reason(&refusal))
            .increment(1);
        return Ok(refuse(req, &refusal));
    }
    let protection = &state.protection;
    let _guards = if exempt(req.path()) {
        None
    } else {
        // Per address first, so that one address's flood cannot take the global slots.
        let key = protection.client_ip(req.request()).map(ip_key);
        let per_ip = match key {
            Some(key) => match protection.in_flight_per_ip.acquire(key) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!("keel_http_shed_total", "reason" => "per_ip").increment(1);
                    return Ok(refuse(req, &ApiError::overloaded("the server, for this address,")));
                }
            },
            None => None,
        };
        if protection.in_flight.fetch_add(1, Ordering::AcqRel) >= protection.max_in_flight {
            protection.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("keel_http_shed_total", "reason" => "total").increment(1);
            return Ok(refuse(req, &ApiError::overloaded("the server")));
        }
        let guard = InFlight(&protection.in_flight);
        // The limiter's own clock: `DefaultClock::default()` builds a quanta clock, which
        // calibrates with CPUID (a VM exit under virtualisation) every time.
        let now = protection.per_ip.clock().now();
        let checked = match bearer_user(&state, &req) {
            Some(user_id) => protection.per_user.check_key(&user_id),
            None => match key {
                Some(key) => protection.per_ip.check_key(&key),
                None => Ok(()),
            },
        };
        if let Err(not_until) = checked {
            let wait = not_until.wait_time_from(now).as_secs().max(1);
            metrics::counter!("keel_http_rate_limited_total").increment(1);
            drop((guard, per_ip));
            return Ok(refuse(req, &ApiError::rate_limited(wait)));
        }
        Some((guard, per_ip))
    };
    let timed_out = limits::has_body(&req).then(|| {
        let timeouts = BodyTimeouts {
            idle: Duration::from_millis(server.body_idle_timeout_ms),
            total: Duration::from_secs(server.body_timeout_secs),
        };
        BodyDeadline::wrap(&mut req, timeouts)
    });
    let res = next.call(req).await?.map_into_boxed_body();
    if timed_out.is_some_and(|flag| flag.get()) {
        // Whatever the reader made of the failed body, the answer is the timeout; the rest of
        // the body is never read, so the connection cannot be reused.
        let (req, _) = res.into_parts();
        let mut res = limits::body_timed_out().error_response();
        res.head_mut().set_connection_type(ConnectionType::Close);
        return Ok(ServiceResponse::new(req, res));
    }
    Ok(res)
}

fn refusal_reason(error: &ApiError) -> &'static str {
    match error.code() {
        "URL_TOO_LONG" => "url",
        "HEADERS_TOO_LARGE" => "headers",
        _ => "encoding",
    }
}

/// The Content-Security-Policy of every response: Keel's own origin only, no inline script or
/// style, no framing. A page served at `/` lives within it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// Sets the security headers on a response: `X-Content-Type-Options: nosniff`,
/// `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, the
/// [`CONTENT_SECURITY_POLICY`] (unless the handler set its own), `Cache-Control: no-store` on
/// `/api/` answers and on every error, and HSTS when `protection.hsts` says Keel is served over
/// TLS.
pub fn security_headers(
    headers: &mut actix_web::http::header::HeaderMap,
    is_api: bool,
    is_error: bool,
    hsts: bool,
) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    if is_api || is_error {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

impl Protection {
    /// Whether HSTS is sent.
    pub fn hsts(&self) -> bool {
        self.hsts
    }
}

/// Shared by every worker.
pub type SharedProtection = Arc<Protection>;
