//! Requests forwarded between nodes over NATS request/reply (docs/CLUSTER.md, "Forwarding").
//!
//! A node that receives a request for a user another node owns sends it to that node on
//! `{name}.rpc.{node_id}`: the method, path and query, the request headers that matter and the
//! body; the answer (status, the answer headers that matter, body) comes back on the reply
//! subject. The metadata travels in NATS headers and the body as the payload, as is. This
//! module only carries them: what a request means is the HTTP façade's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::Cluster;

/// NATS header: the HTTP method.
const METHOD: &str = "Keel-Method";
/// NATS header: the path and query.
const PATH: &str = "Keel-Path";
/// NATS header: the node that forwarded the request.
const FROM: &str = "Keel-From";
/// NATS header: how long the owner has to answer, in milliseconds.
const DEADLINE: &str = "Keel-Deadline-Ms";
/// NATS header: the answer's HTTP status.
const STATUS: &str = "Keel-Status";
/// NATS's default largest message, assumed until the server says its own.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Room left in a message for the forwarded request's headers.
const HEADER_ROOM: usize = 16 * 1024;
/// How much longer than the owner's deadline the forwarding node waits for the answer, so an
/// answer the owner gives at its deadline still arrives.
pub const REPLY_MARGIN: Duration = Duration::from_secs(1);

/// A request as forwarded to the user's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, `/api/v1/bots?limit=10`.
    pub path: String,
    /// The request headers that matter (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body, as received.
    pub body: Bytes,
    /// How long the owner has to answer.
    pub deadline: Duration,
    /// The node that forwarded it.
    pub from: String,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The answer headers that matter (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body, as the owner sent it.
    pub body: Bytes,
}

/// A forwarded request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// NATS is not connected, or nothing listens on the owner's subject (it stopped).
    #[error("node {node} cannot be reached: {reason}")]
    Unreachable {
        /// The owner.
        node: String,
        /// Why.
        reason: String,
    },
    /// The owner did not answer within the deadline.
    #[error("node {node} did not answer within {after:?}")]
    TimedOut {
        /// The owner.
        node: String,
        /// The deadline.
        after: Duration,
    },
    /// The request is larger than NATS carries in one message.
    #[error("the request is larger than the cluster's messages can carry")]
    TooLarge,
    /// The answer lacks its status.
    #[error("node {node} sent an answer without a status")]
    Malformed {
        /// The owner.
        node: String,
    },
}

/// What serves forwarded requests on the owner.
pub type RpcHandler =
    Arc<dyn Fn(RpcRequest) -> Pin<Box<dyn Future<Output = RpcAnswer> + Send>> + Send + Sync>;

impl Cluster {
    /// The largest body a forwarded request may carry: the NATS server's `max_payload` less
    /// room for the headers (1 MiB, NATS's default, before the server has said).
    pub fn max_forward_bytes(&self) -> usize {
        let max = match self.0.client.server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            max => max,
        };
        max.saturating_sub(HEADER_ROOM)
    }

    /// The subject node `node_id` serves forwarded requests on.
    pub fn rpc_subject(&self, node_id: &str) -> String {
        format!("{}.rpc.{node_id}", self.0.config.name)
    }

    /// Sends `request` to node `node_id` and waits for its answer, at most the request's
    /// deadline plus [`REPLY_MARGIN`].
    ///
    /// # Errors
    /// NATS is down, the node does not listen, the answer is late or malformed, or the request
    /// is too large.
    pub async fn forward(&self, node_id: &str, request: RpcRequest) -> Result<RpcAnswer, RpcError> {
        let node = node_id.to_owned();
        if !self.connected() {
            return Err(RpcError::Unreachable { node, reason: "NATS is not connected".into() });
        }
        let mut headers = HeaderMap::new();
        headers.insert(METHOD, request.method.as_str());
        headers.insert(PATH, request.path.as_str());
        headers.insert(FROM, request.from.as_str());
        let deadline_ms = u64::try_from(request.deadline.as_millis()).unwrap_or(u64::MAX);
        headers.insert(DEADLINE, deadline_ms.to_string());
        for (name, value) in &request.headers {
            headers.insert(name.as_str(), value.as_str());
        }
        let wait = request.deadline + REPLY_MARGIN;
        let sent =
            async_nats::Request::new().headers(headers).payload(request.body).timeout(Some(wait));
        let reply = match self.0.client.send_request(self.rpc_subject(node_id), sent).await {
            Ok(reply) => reply,
            Err(err) => {
                return Err(match err.kind() {
                    RequestErrorKind::TimedOut => RpcError::TimedOut { node, after: wait },
                    RequestErrorKind::MaxPayloadExceeded => RpcError::TooLarge,
                    RequestErrorKind::NoResponders => RpcError::Unreachable {
                        node,
                        reason: "no node listens on its subject".into(),
                    },
                    _ => RpcError::Unreachable { node, reason: err.to_string() },
                });
            }
        };
        let reply_headers = reply.headers.unwrap_or_default();
        let status = reply_headers
            .get(STATUS)
            .and_then(|v| v.as_str().parse::<u16>().ok())
            .ok_or_else(|| RpcError::Malformed { node: node.clone() })?;
        Ok(RpcAnswer { status, headers: plain_headers(&reply_headers), body: reply.payload })
    }

    /// Serves the requests forwarded to this node with `handler`, each on a task of its own,
    /// until the returned task is aborted.
    ///
    /// # Errors
    /// NATS refused the subscription.
    pub async fn serve_rpc(
        &self,
        handler: RpcHandler,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let subject = self.rpc_subject(self.node_id());
        let mut requests = self.0.client.subscribe(subject).await?;
        let client = self.0.client.clone();
        Ok(tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(reply_to) = message.reply.clone() else { continue };
                let (handler, client) = (handler.clone(), client.clone());
                tokio::spawn(async move {
                    let answer = match parse(message.headers.unwrap_or_default(), message.payload) {
                        Some(request) => handler(request).await,
                        None => RpcAnswer {
                            status: 400,
                            headers: vec![("content-type".into(), "text/plain".into())],
                            body: Bytes::from_static(b"malformed forwarded request"),
                        },
                    };
                    let mut headers = HeaderMap::new();
                    headers.insert(STATUS, answer.status.to_string());
                    for (name, value) in &answer.headers {
                        headers.insert(name.as_str(), value.as_str());
                    }
                    if let Err(err) =
                        client.publish_with_headers(reply_to, headers, answer.body).await
                    {
                        tracing::warn!(error = %err, "the answer to a forwarded request was not sent");
                    }
                });
            }
        }))
    }
}

/// A forwarded request from its NATS headers and payload, or `None` without its method or path.
fn parse(headers: HeaderMap, body: Bytes) -> Option<RpcRequest> {
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let deadline = get(DEADLINE).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(RpcRequest {
        method: get(METHOD)?,
        path: get(PATH)?,
        from: get(FROM).unwrap_or_default(),
        deadline: Duration::from_millis(deadline),
        headers: plain_headers(&headers),
        body,
    })
}

/// The headers other than Keel's own metadata, lower-cased.
fn plain_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let ours = [METHOD, PATH, FROM, DEADLINE, STATUS];
    headers
        .iter()
        .filter(|(name, _)| {
            !ours.iter().any(|o| o.eq_ignore_ascii_case(AsRef::<str>::as_ref(name)))
        })
        .flat_map(|(name, values)| {
            let name = AsRef::<str>::as_ref(name).to_ascii_lowercase();
            values.iter().map(move |v| (name.clone(), v.as_str().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_request_reads_back_from_its_headers_without_keels_own() {
        let mut headers = HeaderMap::new();
        headers.insert(METHOD, "POST");
        headers.insert(PATH, "/api/v1/bots?limit=2");
        headers.insert(FROM, "n2");
        headers.insert(DEADLINE, "5000");
        headers.insert("Authorization", "Bearer t");
        let request = parse(headers, Bytes::from_static(b"{}")).expect("complete");
        assert_eq!(
            request,
            RpcRequest {
                method: "POST".into(),
                path: "/api/v1/bots?limit=2".into(),
                headers: vec![("authorization".into(), "Bearer t".into())],
                body: Bytes::from_static(b"{}"),
                deadline: Duration::from_secs(5),
                from: "n2".into(),
            }
        );
        let mut no_path = HeaderMap::new();
        no_path.insert(METHOD, "GET");
        assert_eq!(parse(no_path, Bytes::new()), None, "a request needs its path");
    }
}
