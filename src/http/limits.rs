//! Resource limits at the HTTP boundary: what one client address may hold open, what a request
//! head may weigh, how long a body may take to arrive, and which bodies are refused unread.
//!
//! - [`ip_key`]: the key every per-IP limit counts under: an IPv4 address, or the /64 of an
//!   IPv6 address (one host is usually given a whole /64, so per-address limits would not hold).
//! - [`PerIp`]: counts per key, with a cap (connections open, requests in flight); a slot is held
//!   by a [`Slot`] and given back when it drops.
//! - [`check_head`]: refusals decided from the request head alone, before anything reads the
//!   body: a `Content-Encoding` (415: Keel never inflates a body, so a small compressed body
//!   cannot become a large one in memory), an over-long URL or query (400), request headers over
//!   `server.max_header_bytes` (431).
//! - [`BodyDeadline`]: a request body must keep arriving (`server.body_idle_timeout_ms` between
//!   chunks) and be complete within `server.body_timeout_secs`; otherwise the reader gets an
//!   error, the request is answered 408 and the connection closed.
//!
//! Everything here is O(1) per request; a request without a body allocates nothing.

use std::cell::Cell;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Bytes;
use dashmap::DashMap;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::ApiError;

/// The key per-IP limits count under: the address itself for IPv4 (and IPv4-mapped IPv6), the
/// /64 network for IPv6.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// Counts per key under one cap: how many connections (or requests) each key holds now.
///
/// Keys are only present while they hold something, so the map is bounded by what is open.
#[derive(Debug)]
pub struct PerIp<K: Eq + Hash = IpAddr> {
    counts: DashMap<K, u32>,
    cap: u32,
}

impl<K: Eq + Hash + Copy> PerIp<K> {
    /// A counter allowing `cap` at once per key.
    pub fn new(cap: u32) -> Self {
        Self { counts: DashMap::new(), cap }
    }

    /// Takes a slot for `key`; `None` when the key already holds `cap`.
    pub fn acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut count = self.counts.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        drop(count);
        Some(Slot { owner: self.clone(), key })
    }

    /// What `key` holds now.
    pub fn held(&self, key: &K) -> u32 {
        self.counts.get(key).map_or(0, |c| *c)
    }

    /// Keys holding anything now.
    pub fn keys(&self) -> usize {
        self.counts.len()
    }

    fn release(&self, key: &K) {
        // Remove the key with its last slot, so idle keys take no memory.
        self.counts.remove_if_mut(key, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

/// One held slot of a [`PerIp`]; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash + Copy = IpAddr> {
    owner: Arc<PerIp<K>>,
    key: K,
}

impl<K: Eq + Hash + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        self.owner.release(&self.key);
    }
}

/// Limits on a request head, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request target (path and query), bytes.
    pub max_url_bytes: usize,
    /// Most bytes of request headers (names and values).
    pub max_header_bytes: usize,
}

/// Refusals decided from the head alone. `None`: go on.
pub fn check_head(req: &ServiceRequest, limits: HeadLimits) -> Option<ApiError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.max_url_bytes {
        return Some(ApiError::bad_request(
            "URL_TOO_LONG",
            format!(
                "the URL has {target} bytes; the limit is {} (server.max_url_bytes)",
                limits.max_url_bytes
            ),
        ));
    }
    let mut header_bytes = 0usize;
    let mut encoded = false;
    for (name, value) in req.headers() {
        header_bytes += name.as_str().len() + value.len();
        if name == header::CONTENT_ENCODING && !value.as_bytes().eq_ignore_ascii_case(b"identity") {
            encoded = true;
        }
    }
    if header_bytes > limits.max_header_bytes {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!(
                "the request headers have {header_bytes} bytes; the limit is {} \
                 (server.max_header_bytes)",
                limits.max_header_bytes
            ),
        ));
    }
    if encoded {
        return Some(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_CONTENT_ENCODING",
            "request bodies must not be compressed (no Content-Encoding)",
        ));
    }
    None
}

/// Whether a request carries a body (a non-zero length, or chunked).
pub fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() != b"0",
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// Deadlines on reading a body, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Longest time for the whole body.
    pub total: Duration,
}

/// A request body that fails with `TimedOut` when it stalls or takes too long. The flag it
/// shares with the middleware says the request timed out, so the answer becomes 408.
pub struct BodyDeadline {
    inner: Payload,
    sleep: Pin<Box<Sleep>>,
    idle: Duration,
    end: Instant,
    timed_out: Rc<Cell<bool>>,
    done: bool,
}

impl std::fmt::Debug for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDeadline").field("idle", &self.idle).finish_non_exhaustive()
    }
}

impl BodyDeadline {
    /// Wraps `req`'s payload; the returned flag turns true if a deadline passes.
    pub fn wrap(req: &mut ServiceRequest, timeouts: BodyTimeouts) -> Rc<Cell<bool>> {
        let timed_out = Rc::new(Cell::new(false));
        let now = Instant::now();
        let end = now + timeouts.total;
        let inner = req.take_payload();
        let body = Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(end.min(now + timeouts.idle))),
            idle: timeouts.idle,
            end,
            timed_out: timed_out.clone(),
            done: false,
        };
        req.set_payload(Payload::from(
            Box::pin(body) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
        ));
        timed_out
    }
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next = this.end.min(Instant::now() + this.idle);
                this.sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                this.done = true;
                Poll::Ready(other)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    this.timed_out.set(true);
                    metrics::counter!("keel_http_body_timeouts_total").increment(1);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the body did not arrive in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// 408 for a body that did not arrive in time.
pub fn body_timed_out() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "REQUEST_TIMEOUT",
        "the request body did not arrive in time (server.body_idle_timeout_ms, \
         server.body_timeout_secs)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_its_64_and_ipv4_by_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_eq!(ip_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(ip_key(a), ip_key(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
        assert_ne!(ip_key(v4), ip_key("192.0.2.8".parse().unwrap()));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), v4, "an IPv4-mapped address counts as the IPv4 one");
    }

    #[test]
    fn per_ip_caps_each_key_and_forgets_idle_ones() {
        let limits = Arc::new(PerIp::new(2));
        let a = ip_key("2001:db8::1".parse().unwrap());
        let same_64 = ip_key("2001:db8::ffff".parse().unwrap());
        let b = ip_key("192.0.2.1".parse().unwrap());
        let first = limits.acquire(a).unwrap();
        let second = limits.acquire(same_64).unwrap();
        assert!(limits.acquire(a).is_none(), "a third from the same /64 is refused");
        let other = limits.acquire(b).unwrap();
        assert_eq!(limits.held(&a), 2);
        drop(first);
        let third = limits.acquire(a).expect("a slot given back is free again");
        drop((second, third, other));
        assert_eq!(limits.keys(), 0, "keys holding nothing are removed");
    }

    #[actix_web::test]
    async fn a_stalled_body_fails_with_timed_out_and_sets_the_flag() {
        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        let mut req = actix_web::test::TestRequest::default().to_srv_request();
        req.set_payload(Payload::from(payload));
        let timeouts =
            BodyTimeouts { idle: Duration::from_millis(50), total: Duration::from_secs(5) };
        let flag = BodyDeadline::wrap(&mut req, timeouts);
        sender.feed_data(Bytes::from_static(b"{\"a\":"));
        let mut body = req.take_payload();
        let first = futures_util::StreamExt::next(&mut body).await.unwrap().unwrap();
        assert_eq!(&first[..], b"{\"a\":");
        let started = std::time::Instant::now();
        let err = futures_util::StreamExt::next(&mut body).await.unwrap().unwrap_err();
        assert!(matches!(err, PayloadError::Io(ref e) if e.kind() == std::io::ErrorKind::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(flag.get());
        assert!(futures_util::StreamExt::next(&mut body).await.is_none());
        drop(sender);
    }

    #[actix_web::test]
    async fn a_body_that_keeps_arriving_passes() {
        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        let mut req = actix_web::test::TestRequest::default().to_srv_request();
        req.set_payload(Payload::from(payload));
        let timeouts =
            BodyTimeouts { idle: Duration::from_millis(200), total: Duration::from_secs(5) };
        let flag = BodyDeadline::wrap(&mut req, timeouts);
        let mut body = req.take_payload();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            sender.feed_data(Bytes::from_static(b"x"));
            assert!(futures_util::StreamExt::next(&mut body).await.unwrap().is_ok());
        }
        sender.feed_eof();
        assert!(futures_util::StreamExt::next(&mut body).await.is_none());
        assert!(!flag.get());
    }
}
