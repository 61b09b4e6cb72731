//! The fake's user data stream: the listen key's life and the WebSocket that carries every
//! pushed event.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as Request2, Response,
};

use super::API_KEY;
use super::book::State;
use super::http::{Answer, Request, error, ok};
use super::lock;

/// `POST` (create, or the valid key again), `PUT` (keep alive) and `DELETE` (close) of the
/// account's listen key: the API key only, no signature (`USER_STREAM`).
pub(super) fn listen_key(request: &Request, state: &State) -> Answer {
    if request.headers.get("x-mbx-apikey").map(String::as_str) != Some(API_KEY) {
        return error(401, -2015, "Invalid API-key, IP, or permissions for action.");
    }
    let mut book = lock(&state.book);
    match request.method.as_str() {
        "POST" => {
            if book.listen_key.is_none() {
                book.listen_keys_made += 1;
                let key = format!(
                    "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a{:05}",
                    book.listen_keys_made
                );
                book.listen_key = Some(key);
            }
            ok(json!({"listenKey": book.listen_key}))
        }
        "PUT" => match &book.listen_key {
            Some(key) => {
                state.keepalives.fetch_add(1, Ordering::SeqCst);
                ok(json!({"listenKey": key}))
            }
            None => error(400, -1125, "This listenKey does not exist."),
        },
        _ => {
            book.listen_key = None;
            ok(json!({}))
        }
    }
}

/// One user data stream connection: `/ws/<listenKey>` with the valid key, then every pushed
/// frame until either side closes.
pub(super) async fn serve_stream(
    tcp: TcpStream,
    state: Arc<State>,
    mut pushes: broadcast::Receiver<Message>,
) {
    let valid = lock(&state.book).listen_key.clone();
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback =
        move |request: &Request2, response: Response| -> Result<Response, ErrorResponse> {
            let path = request.uri().path();
            if valid.as_ref().is_some_and(|key| path == format!("/ws/{key}")) {
                return Ok(response);
            }
            let mut refused = ErrorResponse::new(Some("invalid listen key".into()));
            *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
            Err(refused)
        };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    state.stream_connections.fetch_add(1, Ordering::SeqCst);
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Ping(payload))) => {
                    if sink.send(Message::Pong(payload)).await.is_err() { return; }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            pushed = pushes.recv() => match pushed {
                Ok(message) => {
                    let expired = message.to_text().is_ok_and(|t| t.contains("listenKeyExpired"));
                    if sink.send(message).await.is_err() { return; }
                    if expired {
                        let _ = sink.close().await;
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
