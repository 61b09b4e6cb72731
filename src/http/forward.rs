//! Forwarding (cluster mode with `cluster.postgres_url`): any node authenticates any request,
//! and a user-scoped `/api/v1` request for a user another node owns is sent to that node over
//! NATS ([`keel_actors::cluster::rpc`]), which runs it through its own HTTP stack (a loopback
//! request to its own listener) and sends the answer back as it is (docs/CLUSTER.md,
//! "Forwarding").
//!
//! Every answer in cluster mode says which node served it in `keel-node`. A forwarded request
//! carries `keel-forwarded` (the forwarding node), so the owner never forwards it again: if it
//! no longer owns the user it answers 503 `UNAVAILABLE` "ownership is moving, retry".

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse, web};
use bytes::Bytes;
use keel_actors::cluster::rpc::{RpcAnswer, RpcError, RpcHandler, RpcRequest};
use keel_actors::cluster::users::Owner;

use super::error::ErrorBody;
use super::request::RequestId;
use super::{API_PREFIX, ApiError};
use crate::auth::AuthUser;
use crate::state::AppState;

/// Header on every answer in cluster mode: the node that served the request.
pub const NODE_HEADER: HeaderName = HeaderName::from_static("keel-node");
/// Header on a forwarded request: the node that forwarded it (the owner never forwards it on).
pub const FORWARDED_HEADER: HeaderName = HeaderName::from_static("keel-forwarded");
/// The request headers forwarded with a request.
const REQUEST_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "accept",
    "idempotency-key",
    "x-request-id",
    "x-forwarded-for",
];
/// The answer headers sent back with an answer.
const ANSWER_HEADERS: [&str; 6] =
    ["content-type", "retry-after", "www-authenticate", "location", "x-request-id", "keel-node"];
/// How much longer than the forwarded deadline the owner's loopback request may take, so the
/// owner's own answer at its deadline (a 504 from an actor) gets through.
const LOOPBACK_MARGIN: Duration = Duration::from_millis(500);
/// The `/api/v1` paths whose data is the user's and lives on the user's owner. Register, login,
/// refresh and logout (identity, shared in Postgres), the OpenAPI document, venues and market
/// data (every node has them) are served where they arrive; so is the WebSocket (it stays on
/// the node it reached).
const USER_SCOPED: [&str; 8] = [
    "/bots",
    "/exchange-accounts",
    "/strategies",
    "/notifications",
    "/backtests",
    "/me",
    "/kill-switch",
    "/portfolio",
];

/// Marks an answer that came from the owner, so the request middleware leaves its body (already
/// in the JSON error shape, with the same request id) as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwardedAnswer;

/// Whether `path` is a user-scoped `/api/v1` path.
pub fn user_scoped(path: &str) -> bool {
    let Some(rest) = path.strip_prefix(API_PREFIX) else { return false };
    USER_SCOPED
        .iter()
        .any(|p| rest.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with('/')))
}

/// Sends user-scoped requests to the user's owner, and names the serving node on every answer.
///
/// # Errors
/// Passes on an inner middleware's error.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let node = state.cluster.as_ref().map(|c| c.node_id().to_owned());
    // The path as the router matches it (`%62ots` is `bots`), not as sent.
    let scoped = user_scoped(req.match_info().as_str());
    let mut res = match &state.leases {
        Some(_) if scoped => route(req, next, &state).await?,
        _ => next.call(req).await?.map_into_boxed_body(),
    };
    if let Some(node) = node
        && !res.headers().contains_key(NODE_HEADER)
        && let Ok(value) = HeaderValue::from_str(&node)
    {
        res.headers_mut().insert(NODE_HEADER, value);
    }
    Ok(res)
}

/// Serves the request here if this node owns the user, else forwards it or refuses it. An
/// owner that cannot be reached is looked up once more (it may have just handed the user over).
async fn route(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &AppState,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (Some(leases), Some(cluster)) = (&state.leases, &state.cluster) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // Unauthenticated: the handler's own extractor answers 401, as on a single node.
    let Ok(user) = AuthUser::from_request_sync(req.request()) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let forwarded = req.headers().contains_key(FORWARDED_HEADER);
    let mut body: Option<Bytes> = None;
    let mut last_error = None;
    for _attempt in 0..2 {
        // Nobody holds the user (new, or its holder died): the rendezvous winner takes it,
        // here or on arrival of the request forwarded to it.
        let owner = match leases.owner(user.user_id).await {
            Ok(Owner::Unknown) => leases.take_if_winner(user.user_id).await,
            other => other,
        };
        let node_id = match owner {
            Ok(Owner::Mine(_)) => {
                if let Some(body) = body.take() {
                    req.set_payload(actix_web::dev::Payload::from(body));
                }
                return Ok(next.call(req).await?.map_into_boxed_body());
            }
            Err(err) => return Ok(req.error_response(ApiError::from(err))),
            Ok(Owner::Other { .. } | Owner::Unknown) if forwarded => {
                metrics::counter!("keel_cluster_forwarded_total", "outcome" => "moving")
                    .increment(1);
                return Ok(req.error_response(moving()));
            }
            Ok(Owner::Other { node_id, .. }) => node_id,
            Ok(Owner::Unknown) => match leases.winner(user.user_id) {
                Some(winner) if winner != leases.node_id() => winner,
                _ => {
                    let err = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        "no node holds this user's data yet; retry",
                    )
                    .retry_after(1);
                    return Ok(req.error_response(err));
                }
            },
        };
        let bytes = match body.take() {
            Some(bytes) => bytes,
            None => match read_body(&mut req, cluster.max_forward_bytes(), &node_id).await {
                Ok(bytes) => bytes,
                Err(err) => return Ok(req.error_response(err)),
            },
        };
        body = Some(bytes.clone());
        let request = rpc_request(&req, state, leases.node_id(), bytes);
        let answer = cluster.forward(&node_id, request).await;
        let outcome = match &answer {
            Ok(_) => "forwarded",
            Err(RpcError::TimedOut { .. }) => "timed_out",
            Err(_) => "unreachable",
        };
        metrics::counter!("keel_cluster_forwarded_total", "outcome" => outcome).increment(1);
        match answer {
            Ok(answer) => return Ok(req.into_response(answer_response(answer))),
            Err(err @ RpcError::Unreachable { .. }) => {
                tracing::warn!(error = %err, owner = %node_id, "a forwarded request got no answer");
                leases.forget(user.user_id);
                last_error = Some(err);
            }
            Err(err) => {
                tracing::warn!(error = %err, owner = %node_id, "a forwarded request got no answer");
                return Ok(req.error_response(rpc_error(&err)));
            }
        }
    }
    let err = last_error.map_or_else(moving, |err| rpc_error(&err));
    Ok(req.error_response(err))
}

/// The request's body, up to `limit` bytes (what one NATS message carries; larger uploads must
/// be sent to the owner itself).
async fn read_body(req: &mut ServiceRequest, limit: usize, owner: &str) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt as _;
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::bad_request("BAD_REQUEST", format!("cannot read the body: {err}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!(
                    "bodies over {limit} bytes are not forwarded between nodes; send this one to \
                     node {owner}, which holds this user's data"
                ),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// 503: the lease moved while the request was on its way.
fn moving() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "ownership is moving, retry")
        .retry_after(1)
}

/// The request as forwarded: the headers that matter, this request's id, the body.
fn rpc_request(req: &ServiceRequest, state: &AppState, me: &str, body: Bytes) -> RpcRequest {
    let mut headers: Vec<(String, String)> = REQUEST_HEADERS
        .iter()
        .filter(|name| !matches!(**name, "x-request-id" | "x-forwarded-for"))
        .filter_map(|name| {
            let value = req.headers().get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    // The id this node answers with, so the owner's body and logs carry the same one.
    if let Some(id) = req.extensions().get::<RequestId>() {
        headers.push(("x-request-id".to_owned(), id.0.clone()));
    }
    // The client's address as this node sees it (never the client's own header): the owner's
    // per-address limits and access log count the client, not this node.
    if let Some(ip) = state.protection.client_ip(req.request()) {
        headers.push(("x-forwarded-for".to_owned(), ip.to_string()));
    }
    let path =
        req.uri().path_and_query().map_or_else(|| req.path().to_owned(), |pq| pq.to_string());
    RpcRequest {
        method: req.method().to_string(),
        path,
        headers,
        body,
        deadline: state.settings.request_timeout(),
        from: me.to_owned(),
    }
}

/// Sends `GET {path}` (an `/api/v1` path and query) to node `node_id` for the bearer of `token`,
/// as a forwarded request: the owner serves it through its own HTTP stack and never forwards it
/// on. For the WebSocket relay, which reads a bot and its journal from the bot's owner.
///
/// # Errors
/// Not in cluster mode, or the owner cannot be reached or does not answer in time.
pub async fn forward_get(
    state: &AppState,
    node_id: &str,
    path: String,
    token: &str,
) -> Result<RpcAnswer, RpcError> {
    let Some(cluster) = &state.cluster else {
        return Err(RpcError::Unreachable {
            node: node_id.to_owned(),
            reason: "not in cluster mode".into(),
        });
    };
    let request = RpcRequest {
        method: "GET".to_owned(),
        path,
        headers: vec![
            ("authorization".to_owned(), format!("Bearer {token}")),
            ("accept".to_owned(), "application/json".to_owned()),
        ],
        body: Bytes::new(),
        deadline: state.settings.request_timeout(),
        from: cluster.node_id().to_owned(),
    };
    let answer = cluster.forward(node_id, request).await;
    let outcome = match &answer {
        Ok(_) => "forwarded",
        Err(RpcError::TimedOut { .. }) => "timed_out",
        Err(_) => "unreachable",
    };
    metrics::counter!("keel_cluster_forwarded_total", "outcome" => outcome).increment(1);
    answer
}

/// The owner's answer as this node's response, marked so its body is left as it is.
fn answer_response(answer: RpcAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers.iter().filter(|(n, _)| ANSWER_HEADERS.contains(&n.as_str()))
    {
        response.append_header((name.as_str(), value.as_str()));
    }
    let mut response = response.body(answer.body);
    response.extensions_mut().insert(ForwardedAnswer);
    response
}

/// The answer when the owner could not be asked or did not answer.
fn rpc_error(err: &RpcError) -> ApiError {
    match err {
        RpcError::TimedOut { node, .. } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "TIMEOUT",
            format!("node {node}, which holds this user's data, did not answer in time"),
        ),
        RpcError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request is too large to forward to the node holding this user's data",
        ),
        RpcError::Unreachable { node, .. } | RpcError::Malformed { node } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("node {node}, which holds this user's data, cannot be reached; retry"),
        )
        .retry_after(1),
    }
}

/// What serves the requests other nodes forward to this one: each is sent to this node's own
/// listener at `base` (`http://127.0.0.1:PORT`), marked as forwarded.
///
/// # Errors
/// The HTTP client cannot be built.
pub fn responder(base: String) -> anyhow::Result<RpcHandler> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base: Arc<str> = base.into();
    Ok(Arc::new(move |request| {
        let (client, base) = (client.clone(), base.clone());
        Box::pin(async move { serve(&client, &base, request).await })
    }))
}

async fn serve(client: &reqwest::Client, base: &str, request: RpcRequest) -> RpcAnswer {
    let request_id = request
        .headers
        .iter()
        .find(|(n, _)| n == "x-request-id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let path = request.path.clone();
    let failed = |status, code: &'static str, message: &str| {
        let body = ErrorBody::standalone(code, message, &request_id, &path);
        RpcAnswer {
            status,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("retry-after".to_owned(), "1".to_owned()),
            ],
            body,
        }
    };
    let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
        return failed(400, "BAD_REQUEST", "the forwarded request's method is not valid");
    };
    if !request.path.starts_with(API_PREFIX) {
        return failed(400, "BAD_REQUEST", "only API requests are forwarded");
    }
    let mut call = client
        .request(method, format!("{base}{}", request.path))
        .timeout(request.deadline + LOOPBACK_MARGIN)
        .header(FORWARDED_HEADER.as_str(), request.from.as_str())
        .body(request.body);
    for (name, value) in
        request.headers.iter().filter(|(n, _)| REQUEST_HEADERS.contains(&n.as_str()))
    {
        call = call.header(name.as_str(), value.as_str());
    }
    let answered = async {
        let res = call.send().await?;
        let status = res.status().as_u16();
        let headers = ANSWER_HEADERS
            .iter()
            .filter_map(|name| {
                let value = res.headers().get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        let body: Bytes = res.bytes().await?;
        Ok::<_, reqwest::Error>(RpcAnswer { status, headers, body })
    };
    match answered.await {
        Ok(answer) => answer,
        Err(err) if err.is_timeout() => {
            failed(504, "TIMEOUT", "the node holding this user's data did not answer in time")
        }
        Err(err) => {
            tracing::warn!(error = %err, "a forwarded request could not be served here");
            failed(503, "UNAVAILABLE", "ownership is moving, retry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_users_own_data_is_forwarded() {
        for path in [
            "/api/v1/bots",
            "/api/v1/bots/7/orders",
            "/api/v1/me",
            "/api/v1/me/risk",
            "/api/v1/exchange-accounts/3/balances",
            "/api/v1/backtests/uploads",
            "/api/v1/kill-switch",
            "/api/v1/portfolio",
            "/api/v1/notifications/channels",
            "/api/v1/strategies",
        ] {
            assert!(user_scoped(path), "{path}");
        }
        for path in [
            "/api/v1/auth/login",
            "/api/v1/auth/register",
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/openapi.json",
            "/api/v1/venues",
            "/api/v1/markets/sim/BTCUSDT/ticker",
            "/api/v1/ws",
            "/api/v1/metrics",
            "/api/v1/botsx",
            "/health/ready",
            "/metrics",
            "/bots",
        ] {
            assert!(!user_scoped(path), "{path}");
        }
    }
}
