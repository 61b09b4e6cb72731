//! The fake's HTTP side: reading a request, the key/signature/timestamp checks Binance makes
//! first, faults and rate limits, and writing the answer with its weight header.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::book::State;
use super::routes::{exchange_info, new_order, signed_route};
use super::stream::listen_key;
use super::{API_KEY, FuturesFault, SECRET_KEY, lock, now_ms};
use crate::hmac_sha256_hex;
pub(super) use crate::http_wire::{Request, read_request};

/// An answer: status, body, extra headers.
/// A placement endpoint's handler.
type Place = fn(&State, &HashMap<String, String>) -> Answer;

pub(super) type Answer = (u16, Value, Vec<(&'static str, String)>);

pub(super) fn error(status: u16, code: i64, msg: &str) -> Answer {
    (status, json!({"code": code, "msg": msg}), Vec::new())
}

pub(super) fn ok(body: Value) -> Answer {
    (200, body, Vec::new())
}

pub(super) async fn write(stream: &mut TcpStream, state: &State, (status, body, headers): Answer) {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    };
    let weight = state.weight.fetch_add(1, Ordering::Relaxed) + 1;
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-MBX-USED-WEIGHT-1M: {weight}\r\n",
        text.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn params_of(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

pub(super) async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let Some(request) = read_request(&mut stream).await else { return };
    state.requests.fetch_add(1, Ordering::Relaxed);
    let rate_limit = lock(&state.book).rate_limit.take();
    if let Some((status, retry)) = rate_limit {
        let mut answer =
            error(status, -1003, "Too many requests; current limit is 2400 requests per minute.");
        answer.2.push(("Retry-After", retry.to_string()));
        write(&mut stream, &state, answer).await;
        return;
    }
    let server_time = now_ms() + state.skew_ms.load(Ordering::Relaxed);
    let route = (request.method.as_str(), request.path.as_str());
    let answer = match route {
        ("GET", "/fapi/v1/time") => {
            state.time_requests.fetch_add(1, Ordering::Relaxed);
            ok(json!({"serverTime": server_time}))
        }
        ("GET", "/fapi/v1/exchangeInfo") => ok(exchange_info(server_time)),
        ("GET", "/fapi/v1/ping") => ok(json!({})),
        ("POST" | "PUT" | "DELETE", "/fapi/v1/listenKey") => listen_key(&request, &state),
        _ => match check_signed(&request, &state, server_time) {
            Err(answer) => answer,
            Ok(params) => {
                let unsigned = request
                    .query
                    .split('&')
                    .filter(|p| !p.starts_with("signature="))
                    .collect::<Vec<_>>()
                    .join("&");
                lock(&state.book)
                    .log
                    .push(format!("{} {}?{unsigned}", request.method, request.path));
                // Faults meet placements, of plain and of conditional orders alike.
                let place: Option<Place> = match route {
                    ("POST", "/fapi/v1/order") => Some(new_order),
                    ("POST", "/fapi/v1/algoOrder") => Some(super::algo::new_algo_order),
                    _ => None,
                };
                if let Some(new_order) = place {
                    let fault = lock(&state.book).faults.pop_front();
                    match fault {
                        Some(FuturesFault::Drop) => return,
                        Some(FuturesFault::ServerError) => error(
                            503,
                            -1001,
                            "Internal error; unable to process your request. Please try again.",
                        ),
                        Some(
                            after @ (FuturesFault::AcceptThenDrop
                            | FuturesFault::AcceptThenServerError),
                        ) => {
                            let _ = new_order(&state, &params);
                            if after == FuturesFault::AcceptThenDrop {
                                // The venue's events go out even though its answer does not.
                                state.flush();
                                return;
                            }
                            error(
                                503,
                                -1001,
                                "Internal error; unable to process your request. Please try again.",
                            )
                        }
                        None => new_order(&state, &params),
                    }
                } else {
                    signed_route(route, &state, &params)
                }
            }
        },
    };
    state.flush();
    write(&mut stream, &state, answer).await;
}

/// The key, signature and timestamp checks; the request's parameters when they pass.
pub(super) fn check_signed(
    request: &Request,
    state: &State,
    server_time: i64,
) -> Result<HashMap<String, String>, Answer> {
    if request.headers.get("x-mbx-apikey").map(String::as_str) != Some(API_KEY) {
        return Err(error(401, -2015, "Invalid API-key, IP, or permissions for action."));
    }
    let Some((payload, signature)) = request.query.rsplit_once("&signature=") else {
        return Err(error(
            400,
            -1102,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        ));
    };
    let signed = format!("{payload}{}", request.body);
    if hmac_sha256_hex(SECRET_KEY.as_bytes(), signed.as_bytes()) != signature {
        return Err(error(400, -1022, "Signature for this request is not valid."));
    }
    let mut params = params_of(payload);
    params.extend(params_of(&request.body));
    let Some(timestamp) = params.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return Err(error(
            400,
            -1102,
            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
        ));
    };
    let recv_window: i64 = params.get("recvWindow").and_then(|w| w.parse().ok()).unwrap_or(5_000);
    if timestamp > server_time + 1_000 || server_time - timestamp > recv_window {
        state.clock_refusals.fetch_add(1, Ordering::Relaxed);
        return Err(error(400, -1021, "Timestamp for this request is outside of the recvWindow."));
    }
    Ok(params)
}
