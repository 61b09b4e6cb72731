//! Resource limits and the headers of every answer (issue 18, "Resources" and "Every response"):
//! compressed bodies, over-long URLs and heads, slow bodies, per-address connection and in-flight
//! caps, closed metric labels, huge upload lines, throttled readiness; and every refusal in the
//! one JSON error shape with a request id and the security headers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keel::http::{API_PREFIX, api_routes};
use keel_testkit::{TestApp, assert_error, spawn_app_with};
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The security headers every answer carries (and `no-store` on API answers and errors).
fn assert_hardened(headers: &HeaderMap, what: &str) {
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(headers["content-security-policy"], CSP, "{what}");
    assert_eq!(headers["cache-control"], "no-store", "{what}");
    assert!(headers.contains_key("x-request-id"), "{what}");
}

/// An error answer: hardened, in the one shape, with `status` and `code`.
async fn assert_refused(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_hardened(res.headers(), code);
    assert_error(res, status, code).await
}

fn socket_addr(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to the app from `source` (another loopback address, say).
async fn connect_from(app: &TestApp, source: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(socket_addr(app)).await
}

/// A raw HTTP answer: status, lower-cased headers, body.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one answer (up to its `content-length`, or the end of the connection).
async fn read_answer(stream: &mut TcpStream, within: Duration) -> RawAnswer {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok());
            if n == 0 || length.is_some_and(|len| raw.len() >= end + 4 + len) {
                let mut lines = head.lines();
                let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                return RawAnswer { status, headers, body: text[end + 4..].to_owned() };
            }
        }
        assert!(
            n > 0,
            "the connection ended before an answer: {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
}

#[actix_web::test]
async fn compressed_bodies_are_refused_unread_with_415() {
    let app = spawn_app_with(|_| {}).await;
    // What gzip makes of 100 MB of zeros starts like this; the body is never read, whatever it
    // inflates to.
    for encoding in ["gzip", "deflate", "br", "zstd", "x-unknown", "gzip, identity"] {
        let res = app
            .client
            .post(format!("{}{API_PREFIX}/auth/login", app.address))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])
            .send()
            .await
            .unwrap();
        assert_refused(res, 415, "UNSUPPORTED_CONTENT_ENCODING").await;
    }
    let user = app.register("encoded@example.com").await;
    let res = app
        .client
        .post(format!("{}{API_PREFIX}/backtests/uploads", app.address))
        .bearer_auth(&user.access)
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0])
        .send()
        .await
        .unwrap();
    assert_refused(res, 415, "UNSUPPORTED_CONTENT_ENCODING").await;
    // `identity` is no encoding at all.
    let res = app
        .client
        .post(format!("{}{API_PREFIX}/auth/login", app.address))
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .body(json!({"email": "nobody@example.com", "password": "x".repeat(12)}).to_string())
        .send()
        .await
        .unwrap();
    assert_refused(res, 401, "UNAUTHORIZED").await;
}

#[actix_web::test]
async fn every_refusal_is_hardened_and_in_the_error_shape() {
    let app = spawn_app_with(|s| {
        s.server.max_url_bytes = 1024;
        s.server.max_header_bytes = 4096;
        s.protection.per_ip_per_minute = 1000;
    })
    .await;
    let url = |path: &str| format!("{}{path}", app.address);

    // 400: a URL or a query over server.max_url_bytes.
    let long_path = format!("{API_PREFIX}/bots/{}", "1".repeat(2000));
    assert_refused(app.client.get(url(&long_path)).send().await.unwrap(), 400, "URL_TOO_LONG")
        .await;
    let long_query = format!("{API_PREFIX}/bots?x={}", "q".repeat(2000));
    assert_refused(app.client.get(url(&long_query)).send().await.unwrap(), 400, "URL_TOO_LONG")
        .await;
    // 431: headers over server.max_header_bytes (but under what actix-http parses itself).
    let res = app.client.get(url("/health/live")).header("x-big", "h".repeat(8000)).send();
    assert_refused(res.await.unwrap(), 431, "HEADERS_TOO_LARGE").await;
    // 400 for an empty body where JSON is expected.
    let res = app
        .client
        .post(url(&format!("{API_PREFIX}/auth/login")))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_refused(res, 400, "MALFORMED_JSON").await;
    // 413: a body over server.max_body_bytes.
    let res = app
        .client
        .post(url(&format!("{API_PREFIX}/auth/login")))
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{}\"}}", "e".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_refused(res, 413, "PAYLOAD_TOO_LARGE").await;
    // 404 and 405 from the router.
    assert_refused(app.get("/nowhere").await, 404, "NOT_FOUND").await;
    let res = app.client.request(Method::PUT, url("/health/live")).send().await.unwrap();
    assert_refused(res, 405, "METHOD_NOT_ALLOWED").await;
    // A success carries the headers too.
    let res = app.get("/health/live").await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-security-policy"], CSP);
    assert_eq!(res.headers()["x-frame-options"], "DENY");
}

#[actix_web::test]
async fn rate_limits_overload_and_cors_refusals_are_hardened_too() {
    let app = spawn_app_with(|s| {
        s.protection.cors_allowed_origins = vec!["https://app.example.com".into()];
        s.protection.per_ip_per_minute = 2;
    })
    .await;
    // CORS (origins listed, so strict even in development). A simple request from an origin
    // not on the list is served without `Access-Control-Allow-Origin`, so the browser keeps
    // the answer from the page; a preflight from it is refused.
    let res = app
        .client
        .get(format!("{}/health/live", app.address))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert_eq!(res.headers()["content-security-policy"], CSP);
    // An origin not allowed, and a method no route takes (PUT is one: `/me/risk`).
    for (origin, method) in
        [("https://evil.example.com", "GET"), ("https://app.example.com", "TRACE")]
    {
        let res = app
            .client
            .request(Method::OPTIONS, format!("{}{API_PREFIX}/bots", app.address))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .send()
            .await
            .unwrap();
        assert_refused(res, 400, "BAD_REQUEST").await;
    }
    let res = app
        .client
        .request(Method::OPTIONS, format!("{}{API_PREFIX}/me/risk", app.address))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "an allowed origin may PUT its limits");
    // 429.
    let mut limited = None;
    for _ in 0..5 {
        let res = app.get(&format!("{API_PREFIX}/me")).await;
        if res.status().as_u16() == 429 {
            limited = Some(res);
            break;
        }
    }
    let limited = limited.expect("the per-IP budget runs out");
    assert!(limited.headers().contains_key("retry-after"));
    assert_refused(limited, 429, "RATE_LIMITED").await;
}

#[actix_web::test]
async fn a_slow_body_answers_408_and_holds_the_addresss_in_flight_slot_until_then() {
    let app = spawn_app_with(|s| {
        s.server.body_idle_timeout_ms = 600;
        s.protection.max_in_flight_per_ip = 1;
    })
    .await;
    let mut slow = connect_from(&app, "127.0.0.1").await.unwrap();
    let head = format!(
        "POST {API_PREFIX}/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"email\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Its one in-flight slot is taken: 503 for this address, health checks exempt.
    let res = app.get(&format!("{API_PREFIX}/me")).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_refused(res, 503, "OVERLOADED").await;
    assert_eq!(app.get("/health/live").await.status().as_u16(), 200);
    // The body stalls: 408 in the error shape, and the connection is closed.
    let started = Instant::now();
    let answer = read_answer(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
    assert_eq!(body["error"]["request_id"].as_str(), answer.header("x-request-id"));
    assert_eq!(answer.header("content-security-policy"), Some(CSP));
    assert_eq!(answer.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed after a 408");
    // The slot is free again.
    assert_eq!(app.get(&format!("{API_PREFIX}/me")).await.status().as_u16(), 401);
}

/// Opens `count` connections from `source` that each send a request head and the first bytes of
/// a body, then stall. Returns the connections the server kept open.
async fn slow_bodies(app: &TestApp, source: &str, count: usize) -> Vec<TcpStream> {
    let head = format!(
        "POST {API_PREFIX}/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{"
    );
    let mut open = Vec::new();
    for _ in 0..count {
        let Ok(mut stream) = connect_from(app, source).await else { continue };
        if stream.write_all(head.as_bytes()).await.is_ok() {
            open.push(stream);
        }
    }
    open
}

/// Whether the server closed `stream` (end of file or reset) within `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[actix_web::test]
async fn slow_connections_from_one_address_do_not_slow_anyone_else() {
    let app = spawn_app_with(|s| {
        s.protection.max_connections_per_ip = 20;
        s.protection.max_in_flight_per_ip = 10;
        // Lower than the slow connections' count: without the per-address caps they would
        // take every slot and everyone else would get 503.
        s.protection.max_in_flight = 100;
        s.server.body_idle_timeout_ms = 30_000;
    })
    .await;
    let mut slow = slow_bodies(&app, "127.0.0.2", 150).await;
    assert!(slow.len() >= 100, "the test could open only {} connections", slow.len());
    // Every connection past the cap is shut as it is accepted.
    let mut refused = 0;
    for stream in &mut slow {
        if closed_by_server(stream, Duration::from_millis(20)).await {
            refused += 1;
        }
    }
    assert!(refused >= slow.len() - 20, "{refused} of {} closed", slow.len());
    // A client from another address is served at once, every time.
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let res = app.get("/api/v1/openapi.json").await;
        assert_eq!(res.status().as_u16(), 200);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = latencies[98];
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?} (debug build, shared cores)");
    // Its own address is still capped: the stalled requests hold at least 10 connections (their
    // in-flight slots), so of 30 more connections at least 20 are shut as they are accepted.
    let mut more = Vec::new();
    for _ in 0..30 {
        more.push(connect_from(&app, "127.0.0.2").await.unwrap());
    }
    let mut shut = 0;
    for stream in &mut more {
        if closed_by_server(stream, Duration::from_millis(100)).await {
            shut += 1;
        }
    }
    assert!(shut >= 20, "only {shut} of 30 more connections were shut");
    drop(more);
    // Closing the slow connections frees their slots.
    drop(slow);
    keel_testkit::eventually(Duration::from_secs(5), "the address's slots come back", || async {
        let mut stream = connect_from(&app, "127.0.0.2").await.unwrap();
        stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut buf)).await,
            Ok(Ok(_)) if &buf[9..12] == b"200"
        )
    })
    .await;
}

#[actix_web::test]
async fn metric_labels_come_from_closed_sets_whatever_clients_send() {
    let app = spawn_app_with(|_| {}).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = Vec::new();
    for i in 0..400 {
        let token = format!("zq{:x}", random());
        let method = Method::from_bytes(token.to_uppercase().as_bytes()).unwrap();
        let path = match i % 4 {
            0 => format!("/{token}"),
            1 => format!("{API_PREFIX}/{token}"),
            2 => format!("{API_PREFIX}/bots/{token}/{token}"),
            _ => "/health/live".to_owned(),
        };
        let method = if i % 3 == 0 { Method::GET } else { method };
        let res = app.client.request(method, format!("{}{path}", app.address)).send().await;
        assert!(res.unwrap().status().is_client_error() || i % 4 == 3);
        sent.push(token);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for token in &sent {
        assert!(!metrics.to_lowercase().contains(token), "`{token}` became a label");
    }
    let mut routes: Vec<String> =
        api_routes().iter().map(|r| format!("{API_PREFIX}{}", r.path)).collect();
    routes.extend(
        [
            "/health/live",
            "/health/ready",
            "/metrics",
            "/admin/backup",
            "/admin/invites",
            "/api/v1/ws",
            // The dashboard: its page and its assets, one pattern each.
            "/",
            "/ui/{path:.*}",
            "unmatched",
        ]
        .map(str::to_owned),
    );
    let methods =
        ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other"];
    let mut unmatched = 0;
    for line in metrics.lines().filter(|l| l.starts_with("keel_http_requests_total{")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            line[start..start + line[start..].find('"').unwrap()].to_owned()
        };
        let route = label("route");
        assert!(routes.contains(&route), "route label `{route}` is not from the route table");
        assert!(methods.contains(&label("method").as_str()), "{line}");
        unmatched += usize::from(route == "unmatched");
    }
    assert!(unmatched > 0, "unknown paths count as `unmatched`");
}

#[actix_web::test]
async fn an_upload_of_one_huge_line_is_refused_without_holding_it() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register("huge-line@example.com").await;
    let mut body = b"1700000000000,100,0.1,buy\n".to_vec();
    body.extend(std::iter::repeat_n(b'7', 4 << 20));
    body.push(b'\n');
    let res = app
        .client
        .post(format!("{}{API_PREFIX}/backtests/uploads", app.address))
        .bearer_auth(&user.access)
        .body(body)
        .send()
        .await
        .unwrap();
    let error = assert_refused(res, 422, "VALIDATION_FAILED").await;
    assert!(
        error["message"].as_str().unwrap().contains("line 2: the line is longer than 65536 bytes"),
        "{error}"
    );
}

#[actix_web::test]
async fn readiness_is_checked_at_most_once_per_interval() {
    let app = spawn_app_with(|s| s.server.ready_cache_ms = 400).await;
    let ready = |app: &TestApp| {
        let client = app.client.clone();
        let url = format!("{}/health/ready", app.address);
        async move {
            let res = client.get(url).send().await.unwrap();
            assert_eq!(res.status().as_u16(), 200);
            res.json::<Value>().await.unwrap()["checked_at_ms"].as_u64().unwrap()
        }
    };
    keel_testkit::eventually(Duration::from_secs(10), "ready", || async {
        app.get("/health/ready").await.status().as_u16() == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    // 30 calls at once share one check (its store flush included).
    let calls: Vec<_> = (0..30).map(|_| ready(&app)).collect();
    let mut checked: Vec<u64> = futures_util::future::join_all(calls).await;
    checked.dedup();
    assert_eq!(checked.len(), 1, "one check for 30 calls: {checked:?}");
    // Past the interval, a new check.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(ready(&app).await > checked[0]);
}
