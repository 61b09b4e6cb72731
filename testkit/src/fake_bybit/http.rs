//! The fake's HTTP (requests are read by `crate::http_wire`): Bybit's envelope and rate-limit
//! headers, injected faults, and the signature and timestamp checks of a signed request.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::routes::answer;
use super::{API_KEY, API_SECRET, BybitFault, State, now_ms};
use crate::hmac_sha256_hex;
pub(super) use crate::http_wire::{Request, read_request};

pub(super) async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let Some(request) = read_request(&mut stream).await else { return };
    state.requests.fetch_add(1, Ordering::Relaxed);
    let fault = {
        let mut book = state.book.lock().unwrap();
        (!book.faults.is_empty()).then(|| book.faults.remove(0))
    };
    let server_time = now_ms() + state.skew_ms.load(Ordering::Relaxed);
    let (status, body, limit_left) = match fault {
        Some(BybitFault::TooManyVisits) => {
            (200, envelope(10006, "Too many visits!", json!({}), server_time), 0)
        }
        _ => {
            let (code, msg, result) = answer(&request, &state, server_time);
            (200, envelope(code, &msg, result, server_time), 99)
        }
    };
    match fault {
        Some(BybitFault::Drop) => return,
        Some(BybitFault::BadGateway) => {
            let text = "<html>502 Bad Gateway</html>";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
        _ => {}
    }
    let reset = server_time + 1_000;
    let text = body.to_string();
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Bapi-Limit: 100\r\nX-Bapi-Limit-Status: {limit_left}\r\nX-Bapi-Limit-Reset-Timestamp: {reset}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
            .as_bytes(),
        )
        .await;
}

pub(super) fn envelope(code: i64, msg: &str, result: Value, time: i64) -> Value {
    json!({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": time})
}

pub(super) type Answer = (i64, String, Value);

pub(super) fn ok(result: Value) -> Answer {
    (0, "OK".into(), result)
}

pub(super) fn refuse(code: i64, msg: &str) -> Answer {
    (code, msg.into(), json!({}))
}

pub(super) fn authenticate(
    request: &Request,
    payload: &str,
    state: &State,
    server_time: i64,
) -> Result<(), Answer> {
    let header = |name: &str| request.headers.get(name).cloned().unwrap_or_default();
    let (key, timestamp, window, sign) = (
        header("x-bapi-api-key"),
        header("x-bapi-timestamp"),
        header("x-bapi-recv-window"),
        header("x-bapi-sign"),
    );
    if key != API_KEY {
        return Err(refuse(10003, "API key is invalid."));
    }
    let (Ok(ts), Ok(recv_window)) = (timestamp.parse::<i64>(), window.parse::<i64>()) else {
        return Err(refuse(10001, "params error: timestamp or recv_window"));
    };
    let text = format!("{timestamp}{key}{window}{payload}");
    if hmac_sha256_hex(API_SECRET.as_bytes(), text.as_bytes()) != sign {
        return Err(refuse(10004, &format!("error sign! origin_string[{text}]")));
    }
    if !(server_time - recv_window <= ts && ts < server_time + 1000) {
        state.clock_refusals.fetch_add(1, Ordering::Relaxed);
        return Err(refuse(
            10002,
            &format!(
                "invalid request, please check your server timestamp or recv_window param. req_timestamp[{ts}],server_timestamp[{server_time}],recv_window[{recv_window}]"
            ),
        ));
    }
    state.signed.lock().unwrap().push(text);
    Ok(())
}
