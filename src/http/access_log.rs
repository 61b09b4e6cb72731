//! The access log: one JSON line per request, to stdout or a file (`[access_log]`).
//!
//! A line says when the request arrived (RFC 3339, UTC, milliseconds), its request id (the one
//! in `X-Request-Id` and in error bodies), the method (`other` for a non-standard one), the
//! matched route pattern (`unmatched` when none matched: never the raw path, which may carry
//! ids and tokens), the status, how long Keel took to produce the response head, the user when
//! the request was authenticated, and the client IP as the rate limits see it (through trusted
//! proxies only). The method, route and status are the labels of the request metrics, computed
//! by the same functions.
//!
//! Requests never wait for the log: the middleware formats the line and `try_send`s it into a
//! bounded queue that a thread of its own drains. When the writer falls behind (a slow disk, a
//! stalled terminal) the line is dropped and counted in `keel_access_log_dropped_total`. The
//! writer hands its buffer to the OS after every batch, so a crash loses only queued lines.
//!
//! A WebSocket upgrade is logged when the upgrade is answered (status 101), not when the
//! connection ends; its user is known only when the upgrade carried a bearer token.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use anyhow::Context as _;
use serde::Serialize;

use super::metrics::{method_label, route_and_status};
use super::request::RequestId;
use crate::auth::AuthUser;
use crate::configuration::{AccessLogOutput, AccessLogSettings};
use crate::state::AppState;

/// Most lines written between two hand-overs to the OS.
const MAX_BATCH: usize = 1024;
/// Room in the writer's buffer: a batch of typical lines (~200 bytes) without a syscall each.
const BUFFER_BYTES: usize = 64 * 1024;
/// Least time between two logged write errors (a full disk would otherwise flood the log).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where the middleware sends lines. Off, it does nothing.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
}

impl AccessLog {
    /// Opens the output `settings` names and starts the writer thread.
    ///
    /// # Errors
    /// The file cannot be opened for appending (the message names `access_log.output` and the
    /// path), or the thread cannot be spawned.
    pub fn start(settings: &AccessLogSettings) -> anyhow::Result<Self> {
        let out: Box<dyn Write + Send> = match settings.output() {
            AccessLogOutput::Off => return Ok(Self { tx: None }),
            AccessLogOutput::Stdout => Box::new(io::stdout()),
            AccessLogOutput::File(path) => Box::new(open_append(&path).with_context(|| {
                format!("opening access_log.output `{}` for appending", path.display())
            })?),
        };
        let (tx, rx) = sync_channel(settings.queue.max(1));
        std::thread::Builder::new()
            .name("keel-access-log".into())
            .spawn(move || write_lines(&rx, out))
            .context("starting the access-log writer thread")?;
        Ok(Self { tx: Some(tx) })
    }

    /// A log whose queue nobody drains, and the queue (tests).
    pub fn detached(capacity: usize) -> (Self, Receiver<Vec<u8>>) {
        let (tx, rx) = sync_channel(capacity.max(1));
        (Self { tx: Some(tx) }, rx)
    }

    /// Whether lines go anywhere.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `line` without waiting. False (and counted in `keel_access_log_dropped_total`)
    /// when the queue is full or the writer is gone; false without counting when the log is off.
    pub fn write(&self, line: &Line<'_>) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(line.to_json()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!("keel_access_log_dropped_total").increment(1);
                false
            }
        }
    }
}

/// One request, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line<'a> {
    /// When the request arrived: RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The request id (`X-Request-Id`).
    pub request_id: Option<&'a str>,
    /// The method; `other` for a non-standard one.
    pub method: &'static str,
    /// The matched route pattern, or `unmatched`.
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// From arrival to the response head, in milliseconds (microsecond precision).
    pub duration_ms: f64,
    /// The authenticated user, when the request was authenticated.
    pub user_id: Option<u64>,
    /// The client's address, through trusted proxies only; absent when unknown.
    pub client_ip: Option<IpAddr>,
}

impl Line<'_> {
    /// The line as written: one JSON object and a newline (strings escaped, so never two lines).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain fields into a Vec cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// `time` for a moment: RFC 3339, UTC, milliseconds.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Milliseconds with microsecond precision.
fn millis(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1000.0
}

/// Opens `path` for appending, creating it with mode 0600 (an existing file keeps its mode).
fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// How long the writer pauses after emptying the queue (the most a line waits for the disk).
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// The writer thread: drains the queue in batches until every sender is gone.
fn write_lines(rx: &Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(BUFFER_BYTES, out);
    let mut last_error_log: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut result = out.write_all(&first);
        let mut batch = 1;
        for line in rx.try_iter().take(MAX_BATCH - 1) {
            result = result.and_then(|()| out.write_all(&line));
            batch += 1;
        }
        if batch < MAX_BATCH {
            // The queue is empty: let lines gather before looking again. Blocked in `recv`, the
            // writer would be woken by every request (a futex wake and a context switch on the
            // request's core, a fifth of a busy worker's time); after this pause it finds lines
            // waiting, and requests never wake it.
            std::thread::sleep(BATCH_PAUSE);
        }
        if let Err(err) = result.and_then(|()| out.flush()) {
            metrics::counter!("keel_access_log_errors_total").increment(1);
            if last_error_log.is_none_or(|at| at.elapsed() >= ERROR_LOG_INTERVAL) {
                tracing::warn!(error = %err, "writing the access log failed; lines are lost");
                last_error_log = Some(Instant::now());
            }
        }
    }
    drop(out.flush());
}

/// Logs every request (between the request-id middleware, which it reads, and the rest).
///
/// # Errors
/// Passes on the inner service's error (logged with its status and route `unmatched`).
pub async fn middleware(
    log: web::Data<AccessLog>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !log.is_on() {
        return next.call(req).await;
    }
    let arrived = SystemTime::now();
    let started = Instant::now();
    let method = method_label(req.method());
    let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
    let client_ip = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.protection.client_ip(req.request()));
    let result = next.call(req).await;
    let (route, status) = route_and_status(&result);
    let user_id = result
        .as_ref()
        .ok()
        .and_then(|res| res.request().extensions().get::<AuthUser>().map(|user| user.user_id));
    log.write(&Line {
        time: timestamp(arrived),
        request_id: request_id.as_deref(),
        method,
        route: &route,
        status: status.as_u16(),
        duration_ms: millis(started.elapsed()),
        user_id,
        client_ip,
    });
    result
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn line(user_id: Option<u64>, client_ip: Option<IpAddr>) -> Line<'static> {
        Line {
            time: timestamp(UNIX_EPOCH + Duration::from_millis(1_764_757_871_123)),
            request_id: Some("req-1"),
            method: "GET",
            route: "/api/v1/bots/{id}",
            status: 200,
            duration_ms: millis(Duration::from_micros(1_534)),
            user_id,
            client_ip,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field_in_order() {
        let text = String::from_utf8(line(Some(42), Some([10, 0, 0, 1].into())).to_json()).unwrap();
        assert_eq!(
            text,
            "{\"time\":\"2025-12-03T10:31:11.123Z\",\"request_id\":\"req-1\",\"method\":\"GET\",\
             \"route\":\"/api/v1/bots/{id}\",\"status\":200,\"duration_ms\":1.534,\
             \"user_id\":42,\"client_ip\":\"10.0.0.1\"}\n"
        );
    }

    #[test]
    fn an_anonymous_request_from_an_unknown_address_has_null_user_and_ip() {
        let value: serde_json::Value = serde_json::from_slice(&line(None, None).to_json()).unwrap();
        assert!(value["user_id"].is_null() && value["client_ip"].is_null(), "{value}");
        assert_eq!(value.as_object().unwrap().len(), 8, "{value}");
    }

    #[test]
    fn strings_are_escaped_so_a_line_never_splits() {
        let mut sneaky = line(None, None);
        sneaky.route = "a\n{\"forged\":1}";
        let bytes = sneaky.to_json();
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["route"], "a\n{\"forged\":1}");
    }

    #[test]
    fn a_full_queue_drops_the_line_at_once_instead_of_waiting() {
        let (log, rx) = AccessLog::detached(1);
        assert!(log.write(&line(None, None)));
        let started = Instant::now();
        assert!(!log.write(&line(None, None)), "the second line finds the queue full");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn off_writes_nothing() {
        let settings = AccessLogSettings { output: "off".into(), queue: 8 };
        let log = AccessLog::start(&settings).unwrap();
        assert!(!log.is_on());
        assert!(!log.write(&line(None, None)));
    }

    #[test]
    fn a_file_is_appended_to_and_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let settings = AccessLogSettings { output: path.display().to_string(), queue: 8 };
        let log = AccessLog::start(&settings).unwrap();
        assert!(log.write(&line(Some(1), None)));
        drop(log);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default().lines().count() < 1 {
            assert!(Instant::now() < deadline, "the line was not written");
            std::thread::sleep(Duration::from_millis(10));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // A second start appends rather than truncating.
        let log = AccessLog::start(&settings).unwrap();
        assert!(log.write(&line(Some(2), None)));
        drop(log);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 2 {
                assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
                break;
            }
            assert!(Instant::now() < deadline, "{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
