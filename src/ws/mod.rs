//! The live WebSocket API: `GET /api/v1/ws` (protocol in `docs/WEBSOCKET.md`).
//!
//! Built on actix-ws (actix-web-actors is deprecated and its send queue is unbounded): the
//! handler upgrades, then hands the socket to a [`connection::ClientConnection`] actor with a
//! bounded outbound queue, which the response body ([`outbound::FrameBody`]) encodes. Connections are counted here, in total and per user.

mod channels;
pub mod connection;
pub mod hub;
pub mod outbound;
pub mod protocol;
pub mod relay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::{Actor, AsyncContext};
use actix_web::body::MessageBody;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::AuthUser;
use crate::http::ApiError;
use crate::state::AppState;
use connection::ClientConnection;
use outbound::{FrameBody, Outbound};

/// Largest frame a client may send.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Feed subscriber ids of WebSocket connections have the top bit set, so they never collide with
/// bot ids on the same feed.
const CONNECTION_ID_BASE: u64 = 1 << 63;

/// Connection counts against `ws.max_connections`, `ws.max_per_user` and
/// `ws.max_unauthenticated`.
#[derive(Debug)]
pub struct Limits {
    max_total: usize,
    max_per_user: usize,
    max_unauthenticated: usize,
    total: AtomicUsize,
    unauthenticated: AtomicUsize,
    per_user: Mutex<HashMap<u64, usize>>,
    next_id: AtomicU64,
    /// Set once, as graceful shutdown begins: every connection closes with 1001.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Limits {
    /// Limits from the settings.
    pub fn new(max_total: usize, max_per_user: usize, max_unauthenticated: usize) -> Self {
        Self {
            max_total,
            max_per_user,
            max_unauthenticated,
            total: AtomicUsize::new(0),
            unauthenticated: AtomicUsize::new(0),
            per_user: Mutex::default(),
            next_id: AtomicU64::new(1),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Graceful shutdown has begun: every connection, open or opening, queues a close frame
    /// with 1001 ("going away") behind what it had queued and ends, so the HTTP server's drain
    /// is not held up by long-lived sockets (which it would otherwise reset at its deadline).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Limits::shut_down`] was called (at once if it already was).
    pub fn shutting_down(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut watch = self.shutdown.subscribe();
        async move {
            // An error means the sender is gone: so is the server.
            let _ = watch.wait_for(|down| *down).await;
        }
    }

    /// Counts a new connection; false (and nothing counted) past the total.
    fn admit_connection(&self) -> bool {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a connection that has not authenticated yet; false (and nothing counted) past
    /// `ws.max_unauthenticated`.
    fn admit_unauthenticated(&self) -> bool {
        self.unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_unauthenticated).then_some(n + 1)
            })
            .is_ok()
    }

    /// Uncounts a connection that was counted unauthenticated: it authenticated, or it is gone.
    pub fn unauthenticated_done(&self) {
        self.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections that have not authenticated yet.
    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Ordering::Acquire)
    }

    /// Counts a connection for `user_id`; false (and nothing counted) past the per-user limit.
    pub fn admit_user(&self, user_id: u64) -> bool {
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_user.entry(user_id).or_default();
        if *count >= self.max_per_user {
            return false;
        }
        *count += 1;
        true
    }

    /// Uncounts a connection (and its user, once admitted).
    pub fn release(&self, user_id: Option<u64>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let Some(user_id) = user_id else { return };
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_user.get_mut(&user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_user.remove(&user_id);
            }
        }
    }

    /// Connections now.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn next_id(&self) -> u64 {
        CONNECTION_ID_BASE | self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn too_many(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_CONNECTIONS", message).retry_after(5)
}

/// `GET /api/v1/ws`: authenticates a bearer header if there is one (else the client has
/// `ws.auth_timeout_ms` to send `auth`), applies the connection limits, and upgrades.
///
/// # Errors
/// 401 for a bad bearer token, 429 `TOO_MANY_CONNECTIONS` past a limit, 400 when the request is
/// not a WebSocket upgrade.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = if req.headers().contains_key(header::AUTHORIZATION) {
        Some(AuthUser::from_request_sync(&req)?)
    } else {
        None
    };
    // Kept to read a bot from its owner node (the relay, in cluster mode).
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    let limits = state.ws_limits.clone();
    if !limits.admit_connection() {
        metrics::counter!("keel_ws_refused_total", "reason" => "total").increment(1);
        return Err(too_many("the server has as many connections as it takes"));
    }
    if user.is_none() && !limits.admit_unauthenticated() {
        limits.release(None);
        metrics::counter!("keel_ws_refused_total", "reason" => "unauthenticated").increment(1);
        return Err(too_many("the server has as many unauthenticated connections as it takes"));
    }
    if let Some(user) = user
        && !limits.admit_user(user.user_id)
    {
        limits.release(None);
        metrics::counter!("keel_ws_refused_total", "reason" => "user").increment(1);
        return Err(too_many("too many connections for this user"));
    }
    // actix-ws reads the socket; the body that writes it is ours (`FrameBody`), so its `Session`
    // goes unused.
    let (response, _session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(err) => {
            if user.is_none() {
                limits.unauthenticated_done();
            }
            limits.release(user.map(|u| u.user_id));
            return Err(ApiError::bad_request(
                "NOT_A_WEBSOCKET",
                format!("GET /api/v1/ws must be a WebSocket upgrade: {err}"),
            ));
        }
    };
    let stream = stream.max_frame_size(MAX_FRAME_BYTES);
    let id = limits.next_id();
    let user = user.zip(token).map(|(u, token)| (u, u.expires_at, token));
    let outbound = Outbound::new(state.settings.ws.outbound_queue);
    let response =
        response.map_body(|_, reader_link| FrameBody::new(outbound.clone(), reader_link).boxed());
    let connection = ClientConnection::new(id, state, limits, outbound, user);
    ClientConnection::create(move |ctx| {
        ctx.add_stream(stream);
        connection
    });
    Ok(response)
}

/// Shared by every worker.
pub type SharedLimits = Arc<Limits>;
