//! The fake's HTTP/1.1 framing: one request per connection, read with a size limit and a
//! deadline, answered with Binance's headers (`X-MBX-USED-WEIGHT-1M`, `X-MBX-ORDER-COUNT-10S`)
//! and `Connection: close`. Anything malformed gets a 4xx JSON answer instead of a panic.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{HANG_FOR, MAX_REQUEST, READ_TIMEOUT, State};

/// A parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    /// The raw (still percent-encoded) query string, without `?`.
    pub(super) query: String,
    /// Header names lower-cased.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
pub(super) struct Answer {
    status: u16,
    body: String,
    /// `Retry-After`, seconds (429 and 418 answers).
    retry_after: Option<u64>,
}

impl Answer {
    pub(super) fn ok(body: Value) -> Self {
        Self { status: 200, body: body.to_string(), retry_after: None }
    }

    pub(super) fn error(status: u16, code: i64, msg: &str) -> Self {
        Self { status, body: json!({ "code": code, "msg": msg }).to_string(), retry_after: None }
    }

    /// Binance's 429 (or 418 ban) with `Retry-After`.
    pub(super) fn rate_limited(status: u16, retry_after_secs: u64) -> Self {
        let msg = "Too much request weight used; current limit is 6000 request weight per 1 \
                   MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.";
        Self { retry_after: Some(retry_after_secs), ..Self::error(status, -1003, msg) }
    }

    pub(super) fn bad(code: i64, msg: &str) -> Self {
        Self::error(400, code, msg)
    }

    pub(super) fn mandatory(param: &str) -> Self {
        Self::bad(
            -1102,
            &format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    pub(super) fn server_error() -> Self {
        Self::error(503, -1001, "Internal error; unable to process your request. Please try again.")
    }
}

pub(super) enum Reply {
    Answer(Answer),
    /// Say nothing; hold the connection.
    Hang,
    /// Close the connection without a word.
    Drop,
}

pub(super) async fn serve(mut tcp: TcpStream, state: Arc<State>, mut stop: watch::Receiver<()>) {
    let read = tokio::time::timeout(READ_TIMEOUT, read_request(&mut tcp)).await;
    let reply = match read {
        Err(_) | Ok(Err(None)) => return,
        Ok(Err(Some(bad))) => {
            state.requests.fetch_add(1, Ordering::SeqCst);
            state.weight.fetch_add(1, Ordering::SeqCst);
            Reply::Answer(bad)
        }
        Ok(Ok(request)) => {
            state.requests.fetch_add(1, Ordering::SeqCst);
            state.handle(&request)
        }
    };
    match reply {
        Reply::Answer(answer) => {
            let _ = write_answer(&mut tcp, &state, &answer).await;
        }
        Reply::Drop => drop(tcp),
        Reply::Hang => {
            tokio::select! {
                () = tokio::time::sleep(HANG_FOR) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Reads one request. `Err(None)`: the peer went away; `Err(Some(_))`: answer this and close.
async fn read_request(tcp: &mut TcpStream) -> Result<Request, Option<Answer>> {
    let too_large = || Some(Answer::error(413, -1000, "Request larger than 64 KiB."));
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            return Err(too_large());
        }
        let n = tcp.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                None
            } else {
                Some(Answer::bad(-1000, "Incomplete request head."))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let malformed = || Some(Answer::bad(-1000, "Malformed request."));
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| malformed())?.to_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(malformed());
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Err(malformed()) };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if header("transfer-encoding").is_some() {
        return Err(Some(Answer::error(411, -1000, "Send a Content-Length, not chunks.")));
    }
    let length = match header("content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| malformed())?,
    };
    let body_start = head_end + 4;
    if body_start.saturating_add(length) > MAX_REQUEST {
        return Err(too_large());
    }
    while buf.len() < body_start + length {
        let n = tcp.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(Some(Answer::bad(-1000, "Body shorter than Content-Length.")));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = std::str::from_utf8(&buf[body_start..body_start + length])
        .map_err(|_| malformed())?
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}

async fn write_answer(tcp: &mut TcpStream, state: &State, answer: &Answer) -> std::io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut out = String::with_capacity(answer.body.len() + 200);
    let retry_after =
        answer.retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\n{retry_after}Content-Type: application/json;charset=UTF-8\r\n\
         Content-Length: {}\r\nX-MBX-USED-WEIGHT-1M: {}\r\nX-MBX-ORDER-COUNT-10S: {}\r\n\
         Connection: close\r\n\r\n{}",
        answer.status,
        answer.body.len(),
        state.weight.load(Ordering::SeqCst),
        state.reported_order_count(),
        answer.body,
    );
    tcp.write_all(out.as_bytes()).await?;
    tcp.flush().await?;
    tcp.shutdown().await
}
