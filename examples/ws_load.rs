//! WebSocket fan-out load: tick-to-client latency of many clients on one market channel, against a
//! running Keel (`GET /api/v1/ws`) or against a plain tokio-tungstenite baseline server that this
//! same binary provides.
//!
//! `ws_load run URL` (the client):
//!
//! 1. registers `--users` accounts (their access tokens come back from `register`; skipped with
//!    `--no-auth`, for the baseline) and reads the server's RSS (`--pid`) as the idle figure;
//! 2. opens `--clients` WebSockets spread round-robin over the users, each with
//!    `Authorization: Bearer <token>` on the upgrade, and subscribes each to `--channel`; then
//!    opens `--silent` more that subscribe and then never read again;
//! 3. after `--warmup-secs`, for `--duration-secs` every reading client measures each event's
//!    tick-to-client latency, its own receive time minus the event's `data.received_us` (the
//!    feed's receive stamp; same machine, same clock), into a log-linear histogram (1.6%
//!    resolution, exact max), and counts events, `seq` gaps and `lagged` notices;
//! 4. meanwhile samples the server's VmRSS and CPU (`/proc/<pid>`) and, against Keel,
//!    `/metrics` (`keel_ws_clients`, `keel_ws_disconnects_total{reason="slow_client"}`, dropped
//!    frames, the server's own `keel_ws_tick_to_client_seconds` histogram);
//! 5. with `--bots`, each account also has one trading paper bot (`ema_cross(2, 5)` on the
//!    channel's symbol), started once every client is subscribed and stopped at the end of the
//!    window; every client (silent ones too) also subscribes to its account's `bot:{id}` channel,
//!    and after the run each reading client's bot events are checked against the bot's journal
//!    (`GET /bots/{id}/events`): every line written while it was subscribed must have arrived;
//! 6. with silent clients, keeps watching (the reading clients keep reading, unmeasured) until
//!    every silent one has been disconnected by the server or `--silent-wait-secs` after they
//!    stopped reading, then reads each silent socket to its end to see what it was sent and how
//!    it ended (close code, or no close).
//!
//! It prints a report and one `RESULT key=value ...` line for scripts. It stops by itself: every
//! phase is bounded. Loopback only: the URL must name 127.0.0.1, ::1 or localhost.
//!
//! `ws_load baseline --port P` (the baseline server): a tokio-tungstenite server on 127.0.0.1
//! that speaks just enough of Keel's protocol (`authenticated` on connect, `subscribed` on
//! `subscribe`) and generates trades as Keel's sim venue does: a 10 ms tick, `--rate` events per
//! second spread over the ticks, each event's JSON built once (same fields and size as Keel's sim
//! trades) and stamped `received_us` when generated. Fan-out is one task per client fed from a
//! `tokio::sync::broadcast` channel (`--queue` events, like `ws.outbound_queue`): each task frames
//! the event with its own `seq`, writes it, writes whatever else is already waiting (up to 64),
//! then flushes; a lagging receiver gets a `lagged` notice. Sockets are `TCP_NODELAY` unless
//! `--nagle`. It stops
//! on SIGTERM or after `--max-secs`.
//!
//! `scripts/ws-load.sh` runs Keel and the baseline under the same load; by hand:
//!
//! ```text
//! cargo run --release --example ws_load -- run http://127.0.0.1:8080 --pid $(pgrep -x keel)
//! cargo run --release --example ws_load -- baseline --port 9100 &
//! cargo run --release --example ws_load -- run http://127.0.0.1:9100 --no-auth --pid $!
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The password every load account uses (it satisfies the policy).
const PASSWORD: &str = "correct horse battery staple";
/// How long one connection may take to connect, authenticate and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a silent socket's drain may wait for the next frame before calling it stalled.
const DRAIN_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long draining all silent sockets may take in all.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long reading clients get to notice the stop before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest run the tool accepts, so it always ends.
const MAX_DURATION_SECS: u64 = 600;
/// Keel's frames start with this; anything else is a control message, parsed in full.
const EVENT_PREFIX: &str = r#"{"type":"event""#;
/// What follows [`EVENT_PREFIX`] in a bot event.
const BOT_CHANNEL_PREFIX: &str = r#","channel":"bot:"#;
/// How long bot events may take to arrive after the bots were stopped.
const BOT_SETTLE: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "WebSocket fan-out load: tick-to-client latency against Keel or a baseline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a running server with clients and measure.
    Run(RunArgs),
    /// Serve the tokio-tungstenite baseline on 127.0.0.1.
    Baseline(BaselineArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Base URL of the server (http:// or ws://, loopback only); the socket is `/api/v1/ws`.
    #[arg(default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Reading clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Accounts to spread the clients over (Keel's `ws.max_per_user` must allow
    /// (clients + silent) / users each).
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// Channel every client subscribes to.
    #[arg(long, default_value = "market:sim:BTCUSDT:trades")]
    channel: String,
    /// Measured time, seconds (at most 600).
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Unmeasured time after the last client subscribed, seconds.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Clients that subscribe and then never read.
    #[arg(long, default_value_t = 0)]
    silent: usize,
    /// How long after the silent clients stopped reading to wait for the server to drop them.
    #[arg(long, default_value_t = 40)]
    silent_wait_secs: u64,
    /// The server's process id, for VmRSS and CPU from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Do not register accounts; send a dummy bearer token (for the baseline server).
    #[arg(long)]
    no_auth: bool,
    /// Name of this run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The event rate the server was configured with (events/s), for the expected counts.
    #[arg(long)]
    rate: Option<f64>,
    /// Longest the connections may take to open, seconds; the run goes on with those open.
    #[arg(long, default_value_t = 300)]
    setup_limit_secs: u64,
    /// The p99 target, in milliseconds, for the verdict line.
    #[arg(long, default_value_t = 5.0)]
    target_p99_ms: f64,
    /// One trading paper bot per account, its `bot:{id}` channel subscribed by the account's
    /// clients, and a check that no reading client missed a line of its bot's journal.
    #[arg(long)]
    bots: bool,
}

#[derive(Debug, clap::Args)]
struct BaselineArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Events per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Events each client may fall behind before it loses some (the broadcast capacity).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Server runtime worker threads (Keel's HTTP workers default to one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Stops by itself after this long.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
    /// Channel name put in the frames.
    #[arg(long, default_value = "market:sim:BTCUSDT:trades")]
    channel: String,
    /// Leave Nagle's algorithm on (no TCP_NODELAY), as actix-web does unless told otherwise.
    #[arg(long)]
    nagle: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(args) => args.threads.max(1),
        Command::Baseline(args) if args.threads > 0 => args.threads,
        Command::Baseline(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Baseline(args) => runtime.block_on(baseline(args)),
    }
}

/// Microseconds since the Unix epoch, now (the clock Keel stamps `received_us` with).
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

// ---------------------------------------------------------------------------------------------
// Histogram

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6%).
const SUB_BUCKETS: u64 = 64;
/// Buckets up to 2^40 µs (12 days).
const BUCKETS: usize = 34 * 64 + 128;

/// A log-linear histogram of microseconds: exact below 128 µs, 1.6% above.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    fn index(value: u64) -> usize {
        let value = value.min((1 << 40) - 1);
        if value < 2 * SUB_BUCKETS {
            return value as usize;
        }
        let exponent = 63 - u64::from(value.leading_zeros());
        let shift = exponent - 6;
        (shift * SUB_BUCKETS + (value >> shift)) as usize
    }

    /// The largest value bucket `index` holds.
    fn value_at(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB_BUCKETS {
            return index;
        }
        let shift = index / SUB_BUCKETS - 1;
        let top = index % SUB_BUCKETS + SUB_BUCKETS;
        (top << shift) + ((1 << shift) - 1)
    }

    fn record(&mut self, value: u64) {
        let slot = &mut self.counts[Self::index(value)];
        *slot = slot.saturating_add(1);
        self.total += 1;
        self.max = self.max.max(value);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Nearest-rank percentile (upper edge of its bucket, never above the max).
    fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                return Self::value_at(index).min(self.max);
            }
        }
        self.max
    }

    /// Share of samples above `limit` µs (to bucket resolution).
    fn share_above(&self, limit: u64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let above: u64 = self
            .counts
            .iter()
            .enumerate()
            .filter(|(index, _)| Self::value_at(*index) > limit)
            .map(|(_, count)| u64::from(*count))
            .sum();
        above as f64 / self.total as f64
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

// ---------------------------------------------------------------------------------------------
// The client

/// The measured window, in µs since the epoch; nothing is recorded until it is set.
#[derive(Debug)]
struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
    /// Reading clients stop at this.
    stop: AtomicBool,
    /// When reading clients were closed with 1013 (too slow) or 1001 (heartbeat), µs since the
    /// epoch: the server counts those with the silent ones.
    slow_closes: Mutex<Vec<u64>>,
}

/// What one reading client saw.
#[derive(Debug)]
struct ClientStats {
    latency: Histogram,
    /// Events received inside the window.
    events: u64,
    /// Events received in all.
    events_total: u64,
    /// Per second of the window: events, and events over the target.
    per_sec: Vec<(u32, u32)>,
    last_seq: Option<u64>,
    /// `seq` jumps forward, and the events they skipped.
    gaps: u64,
    missing: u64,
    /// `seq` not above the previous one.
    out_of_order: u64,
    lagged_notices: u64,
    lagged_dropped: u64,
    /// How the connection ended before the stop, if it did.
    ended: Option<String>,
    first_frame_len: usize,
    /// The bot (index into the run's bots) whose channel this client subscribed to.
    bot: Option<usize>,
    /// The `seq` (journal ids) of the bot events received.
    bot_seqs: Vec<u64>,
}

impl ClientStats {
    fn new(seconds: usize) -> Self {
        Self {
            latency: Histogram::new(),
            events: 0,
            events_total: 0,
            per_sec: vec![(0, 0); seconds],
            last_seq: None,
            gaps: 0,
            missing: 0,
            out_of_order: 0,
            lagged_notices: 0,
            lagged_dropped: 0,
            ended: None,
            first_frame_len: 0,
            bot: None,
            bot_seqs: Vec::new(),
        }
    }
}

/// The unsigned integer after `key` in `text`.
fn field_u64(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = &text[at..];
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// How a close frame or error reads in the report.
fn describe_close(
    message: Option<&Message>,
    error: Option<&tokio_tungstenite::tungstenite::Error>,
) -> String {
    if let Some(Message::Close(frame)) = message {
        return match frame {
            Some(frame) => format!("close {}", u16::from(frame.code)),
            None => "close (no code)".to_owned(),
        };
    }
    match error {
        Some(tokio_tungstenite::tungstenite::Error::Protocol(p)) => format!("protocol: {p}"),
        Some(tokio_tungstenite::tungstenite::Error::Io(e)) => format!("io: {:?}", e.kind()),
        Some(other) => format!("error: {other}"),
        None => "eof (no close frame)".to_owned(),
    }
}

/// Reads frames until the stop, measuring events inside the window.
async fn read_events(
    mut ws: Ws,
    window: Arc<Window>,
    seconds: usize,
    target_us: u64,
    bot: Option<usize>,
) -> ClientStats {
    let mut stats = ClientStats::new(seconds);
    stats.bot = bot;
    loop {
        let next = ws.next().await;
        let now = now_us();
        if window.stop.load(Ordering::Relaxed) {
            break;
        }
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                stats.ended = Some(describe_close(None, Some(&err)));
                break;
            }
            None => {
                stats.ended = Some(describe_close(None, None));
                break;
            }
        };
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Close(frame) => {
                if frame.as_ref().is_some_and(|f| [1001, 1013].contains(&u16::from(f.code))) {
                    window.slow_closes.lock().unwrap_or_else(PoisonError::into_inner).push(now);
                }
                stats.ended = Some(describe_close(Some(&message), None));
                break;
            }
            _ => continue,
        };
        if text[EVENT_PREFIX.len().min(text.len())..].starts_with(BOT_CHANNEL_PREFIX) {
            if let Some(seq) = field_u64(text, r#""seq":"#) {
                stats.bot_seqs.push(seq);
            }
            continue;
        }
        if text.starts_with(EVENT_PREFIX) {
            stats.events_total += 1;
            if stats.first_frame_len == 0 {
                stats.first_frame_len = text.len();
            }
            if let Some(seq) = field_u64(text, r#""seq":"#) {
                match stats.last_seq {
                    Some(last) if seq == last + 1 => {}
                    Some(last) if seq > last => {
                        stats.gaps += 1;
                        stats.missing += seq - last - 1;
                    }
                    Some(_) => stats.out_of_order += 1,
                    None => {}
                }
                stats.last_seq = Some(seq);
            }
            let start = window.start_us.load(Ordering::Relaxed);
            let end = window.end_us.load(Ordering::Relaxed);
            if now >= start
                && now < end
                && let Some(received) = field_u64(text, r#""received_us":"#)
            {
                let latency = now.saturating_sub(received);
                stats.latency.record(latency);
                stats.events += 1;
                let second = ((now - start) / 1_000_000) as usize;
                if let Some(slot) = stats.per_sec.get_mut(second) {
                    slot.0 += 1;
                    if latency > target_us {
                        slot.1 += 1;
                    }
                }
            }
        } else if let Ok(value) = serde_json::from_str::<Value>(text)
            && value["type"] == "lagged"
        {
            stats.lagged_notices += 1;
            stats.lagged_dropped += value["dropped"].as_u64().unwrap_or(0);
        }
    }
    stats
}

/// Opens one connection, waits for `authenticated`, subscribes to `channels` and waits for
/// `subscribed`.
async fn open_client(url: &str, token: &str, channels: &[String]) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .context("upgrade")?;
    let mut authenticated = false;
    let mut subscribed = false;
    while !subscribed {
        let message = ws.next().await.context("closed during set-up")??;
        let Message::Text(text) = &message else {
            if let Message::Close(_) = message {
                bail!("closed during set-up: {}", describe_close(Some(&message), None));
            }
            continue;
        };
        if text.starts_with(EVENT_PREFIX) {
            continue;
        }
        let value: Value =
            serde_json::from_str(text).context("a control frame that is not JSON")?;
        match value["type"].as_str() {
            Some("authenticated") if !authenticated => {
                authenticated = true;
                let op = json!({"op": "subscribe", "channels": channels});
                ws.send(Message::text(op.to_string())).await?;
            }
            Some("subscribed") => subscribed = true,
            Some("error") => bail!("subscribe refused: {value}"),
            _ => {}
        }
    }
    Ok(ws)
}

/// Registers `count` accounts and returns their access tokens.
async fn register(base: &str, count: usize) -> anyhow::Result<Vec<String>> {
    keel_venues::tls::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let limit = Arc::new(Semaphore::new(8));
    let mut tasks = JoinSet::new();
    for n in 0..count {
        let (client, limit) = (client.clone(), limit.clone());
        let url = format!("{base}/api/v1/auth/register");
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let email = format!("ws-load-{nonce}-{n}@example.com");
            let res = client
                .post(url)
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if status.as_u16() != 201 {
                bail!("registering {email} answered {status}: {body}");
            }
            let token = body["tokens"]["access_token"].as_str().context("no access_token")?;
            anyhow::Ok((n, token.to_owned()))
        });
    }
    let mut tokens = vec![String::new(); count];
    while let Some(joined) = tasks.join_next().await {
        let (n, token) = joined??;
        tokens[n] = token;
    }
    Ok(tokens)
}

/// VmRSS and VmHWM of a process, KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().split(' ').next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) of a process, seconds (assumes 100 clock ticks per second).
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Busy share of the whole machine from /proc/stat: (busy, total) jiffies.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A Prometheus text exposition, as `series value` pairs.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// One sample of the server's state.
#[derive(Debug, Clone, Default)]
struct ServerSample {
    at_us: u64,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    ws_clients: Option<f64>,
    slow_client_disconnects: Option<f64>,
    heartbeat_disconnects: Option<f64>,
    market_dropped: Option<f64>,
    feed_dropped: Option<f64>,
    /// `keel_ws_tick_to_client_seconds` buckets (le, cumulative count) and count.
    server_buckets: Vec<(f64, f64)>,
}

impl ServerSample {
    fn value(metrics: &[(String, f64)], series: &str) -> Option<f64> {
        metrics.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
    }

    fn sum(metrics: &[(String, f64)], prefix: &str) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for (series, value) in metrics {
            if series.starts_with(prefix) {
                found = true;
                sum += value;
            }
        }
        found.then_some(sum)
    }
}

/// Samples RSS and `/metrics` every `every` until told to stop.
async fn sample_server(
    pid: Option<u32>,
    metrics_url: Option<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<ServerSample>>>,
) {
    let client = match &metrics_url {
        Some(_) => {
            keel_venues::tls::install_crypto_provider();
            reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()
        }
        None => None,
    };
    let mut failed_scrapes = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = Instant::now() + Duration::from_secs(3 * MAX_DURATION_SECS);
    while !stop.load(Ordering::Acquire) && Instant::now() < limit {
        tick.tick().await;
        let mut sample = ServerSample { at_us: now_us(), ..ServerSample::default() };
        if let Some((rss, hwm)) = pid.and_then(rss_kib) {
            sample.rss_kib = Some(rss);
            sample.hwm_kib = Some(hwm);
        }
        let text = match (&client, &metrics_url) {
            (Some(client), Some(url)) => match client.get(url).send().await {
                Ok(res) => res.text().await.ok(),
                Err(err) => {
                    if failed_scrapes == 0 {
                        println!("scraping {url} failed: {err:#}");
                    }
                    failed_scrapes += 1;
                    None
                }
            },
            _ => None,
        };
        if let Some(text) = text {
            let metrics = parse_metrics(&text);
            sample.ws_clients = ServerSample::value(&metrics, "keel_ws_clients");
            sample.slow_client_disconnects =
                ServerSample::value(&metrics, r#"keel_ws_disconnects_total{reason="slow_client"}"#);
            sample.heartbeat_disconnects =
                ServerSample::value(&metrics, r#"keel_ws_disconnects_total{reason="heartbeat"}"#);
            sample.market_dropped =
                ServerSample::value(&metrics, r#"keel_ws_dropped_total{channel="market"}"#);
            sample.feed_dropped = ServerSample::sum(&metrics, "keel_feed_dropped_total");
            sample.server_buckets = metrics
                .iter()
                .filter_map(|(series, value)| {
                    let le = series
                        .strip_prefix(r#"keel_ws_tick_to_client_seconds_bucket{le=""#)?
                        .strip_suffix(r#""}"#)?;
                    let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                    Some((le, *value))
                })
                .collect();
        }
        samples.lock().unwrap_or_else(PoisonError::into_inner).push(sample);
    }
}

/// Converts the base URL to the socket's `ws://` URL, refusing anything not on loopback.
fn socket_url(base: &str) -> anyhow::Result<(String, String)> {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("ws://"))
        .context("the URL must start with http:// or ws://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if !["127.0.0.1", "localhost", "[::1]"].contains(&host) {
        bail!("loopback only: {host} is not 127.0.0.1, ::1 or localhost");
    }
    Ok((format!("http://{authority}"), format!("ws://{authority}/api/v1/ws")))
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What one silent socket held when read after the run.
#[derive(Debug)]
struct Drained {
    events: u64,
    last_received_us: Option<u64>,
    /// Events stamped after the drain began: the server was still sending.
    live_events: u64,
    ended: String,
}

async fn drain_silent(mut ws: Ws, began_us: u64) -> Drained {
    let mut drained =
        Drained { events: 0, last_received_us: None, live_events: 0, ended: String::new() };
    loop {
        match tokio::time::timeout(DRAIN_READ_TIMEOUT, ws.next()).await {
            Err(_) => {
                drained.ended = format!("open, nothing for {} s", DRAIN_READ_TIMEOUT.as_secs());
                break;
            }
            Ok(None) => {
                drained.ended = describe_close(None, None);
                break;
            }
            Ok(Some(Err(err))) => {
                drained.ended = describe_close(None, Some(&err));
                break;
            }
            Ok(Some(Ok(message))) => match &message {
                Message::Text(text) if text.starts_with(EVENT_PREFIX) => {
                    drained.events += 1;
                    if let Some(received) = field_u64(text, r#""received_us":"#) {
                        drained.last_received_us = Some(received);
                        if received >= began_us {
                            drained.live_events += 1;
                            if drained.live_events >= 100 {
                                drained.ended = "still receiving live events".to_owned();
                                break;
                            }
                        }
                    }
                }
                Message::Close(_) => {
                    drained.ended = describe_close(Some(&message), None);
                    break;
                }
                _ => {}
            },
        }
    }
    drained
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.duration_secs == 0 || args.duration_secs > MAX_DURATION_SECS {
        bail!("--duration-secs must be 1 to {MAX_DURATION_SECS}");
    }
    if args.users == 0 || args.clients == 0 {
        bail!("--users and --clients must be at least 1");
    }
    let (base, url) = socket_url(&args.base_url)?;
    let target_us = (args.target_p99_ms * 1e3) as u64;
    let per_user = (args.clients + args.silent).div_ceil(args.users);
    println!(
        "[{}] {url}: {} reading + {} silent clients over {} users ({per_user} per user), \
         channel {}, warm-up {} s, measured {} s",
        args.label,
        args.clients,
        args.silent,
        args.users,
        args.channel,
        args.warmup_secs,
        args.duration_secs
    );

    let tokens = if args.no_auth {
        vec!["baseline".to_owned(); args.users]
    } else {
        let began = Instant::now();
        let tokens = register(&base, args.users).await?;
        println!("registered {} users in {:.1} s", tokens.len(), began.elapsed().as_secs_f64());
        tokens
    };
    let idle_rss = args.pid.and_then(rss_kib);
    let bots = if args.bots && !args.no_auth {
        let symbol = args.channel.split(':').nth(2).context("--bots needs a market channel")?;
        let bots = Bots::create(&base, &tokens, symbol).await?;
        println!("created {} paper bots (one per account), not started yet", bots.ids.len());
        Some(bots)
    } else {
        None
    };
    // What each user's clients subscribe to.
    let channels: Vec<Vec<String>> = (0..tokens.len())
        .map(|user| {
            let mut channels = vec![args.channel.clone()];
            if let Some(bots) = &bots {
                channels.push(format!("bot:{}", bots.ids[user]));
            }
            channels
        })
        .collect();
    let bot_of = |user: usize| bots.as_ref().map(|_| user);

    // Server sampling runs from before the first connection to the end.
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let metrics_url = (!args.no_auth).then(|| format!("{base}/metrics"));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_server(
        args.pid,
        metrics_url,
        Duration::from_millis(500),
        sampler_stop.clone(),
        samples.clone(),
    ));

    // Reading clients: each task connects, subscribes, then reads until the stop.
    let window = Arc::new(Window {
        start_us: AtomicU64::new(u64::MAX),
        end_us: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        slow_closes: Mutex::new(Vec::new()),
    });
    let seconds = args.duration_secs as usize;
    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<()>>();
    let setup_began = Instant::now();
    let mut readers = JoinSet::new();
    for n in 0..args.clients {
        let user = n % tokens.len();
        let (url, token, channels) = (url.clone(), tokens[user].clone(), channels[user].clone());
        let bot = bot_of(user);
        let (limit, window, ready_tx) = (limit.clone(), window.clone(), ready_tx.clone());
        readers.spawn(async move {
            let permit = limit.acquire_owned().await.ok()?;
            let opened =
                tokio::time::timeout(CONNECT_TIMEOUT, open_client(&url, &token, &channels)).await;
            drop(permit);
            let ws = match opened {
                Ok(Ok(ws)) => ws,
                Ok(Err(err)) => {
                    let _ = ready_tx.send(Err(err));
                    return None;
                }
                Err(_) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("set-up took over 30 s")));
                    return None;
                }
            };
            let _ = ready_tx.send(Ok(()));
            Some(read_events(ws, window, seconds, target_us, bot).await)
        });
    }
    drop(ready_tx);
    let mut failures: Vec<String> = Vec::new();
    let mut opened = 0usize;
    let setup_deadline = tokio::time::Instant::now() + Duration::from_secs(args.setup_limit_secs);
    while let Ok(Some(result)) = tokio::time::timeout_at(setup_deadline, ready_rx.recv()).await {
        match result {
            Ok(()) => opened += 1,
            Err(err) => failures.push(format!("{err:#}")),
        }
        if opened + failures.len() == args.clients {
            break;
        }
    }
    if opened + failures.len() < args.clients {
        let missing = args.clients - opened - failures.len();
        println!("{missing} reading clients not subscribed within {} s", args.setup_limit_secs);
        failures.extend(std::iter::repeat_n("not subscribed in time".to_owned(), missing));
    }
    let setup_secs = setup_began.elapsed().as_secs_f64();
    println!(
        "{opened} reading clients subscribed in {setup_secs:.1} s ({} failed)",
        failures.len()
    );

    // Silent clients: connect and subscribe, then are held without ever being polled again.
    let mut silent: Vec<(Ws, u64)> = Vec::with_capacity(args.silent);
    if args.silent > 0 {
        let mut tasks = JoinSet::new();
        for n in 0..args.silent {
            let user = (args.clients + n) % tokens.len();
            let (url, token, channels) =
                (url.clone(), tokens[user].clone(), channels[user].clone());
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await?;
                let ws =
                    tokio::time::timeout(CONNECT_TIMEOUT, open_client(&url, &token, &channels))
                        .await
                        .context("set-up took over 30 s")??;
                anyhow::Ok((ws, now_us()))
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.setup_limit_secs);
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
            match joined? {
                Ok(pair) => silent.push(pair),
                Err(err) => failures.push(format!("silent: {err:#}")),
            }
        }
        tasks.abort_all();
        println!("{} silent clients subscribed and stopped reading", silent.len());
    }
    let mut distinct = failures.clone();
    distinct.sort();
    distinct.dedup();
    for failure in distinct.iter().take(5) {
        println!("  connection failure: {failure}");
    }

    // The bots trade from here to the end of the window.
    if let Some(bots) = &bots {
        bots.control(&base, &tokens, "start").await?;
        println!("started the bots");
    }

    // The window.
    let connected_rss = args.pid.and_then(rss_kib);
    let start = now_us() + args.warmup_secs * 1_000_000;
    let end = start + args.duration_secs * 1_000_000;
    window.end_us.store(end, Ordering::Relaxed);
    window.start_us.store(start, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let cpu_before = (cpu_secs(args.pid), cpu_secs(None), machine_jiffies());
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    let cpu_after = (cpu_secs(args.pid), cpu_secs(None), machine_jiffies());
    if let Some(bots) = &bots {
        bots.control(&base, &tokens, "stop").await?;
        tokio::time::sleep(BOT_SETTLE).await;
    }

    // With silent clients: keep the readers reading (unmeasured) until the server has dropped
    // every silent one, or the wait is over.
    let silent_stopped_us = silent.iter().map(|(_, at)| *at).max().unwrap_or(0);
    if !silent.is_empty() && !args.no_auth {
        let wait_until = silent_stopped_us + args.silent_wait_secs * 1_000_000;
        while now_us() < wait_until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Stop early once the server has dropped them all (plus a second of samples).
            let samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
            let slow = window.slow_closes.lock().unwrap_or_else(PoisonError::into_inner);
            let (_, all) = silent_dropped(&samples, silent_stopped_us, silent.len(), &slow);
            if all.is_some_and(|s| now_us() > silent_stopped_us + (s * 1e6) as u64 + 1_000_000) {
                break;
            }
        }
    }
    window.stop.store(true, Ordering::Relaxed);
    let drain_began = now_us();

    // Read the silent sockets to their end.
    let mut drains = Vec::new();
    if !silent.is_empty() {
        let mut tasks = JoinSet::new();
        for (ws, stopped_at) in silent {
            tasks.spawn(async move { (drain_silent(ws, drain_began).await, stopped_at) });
        }
        let deadline = Instant::now() + DRAIN_LIMIT;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline.into(), tasks.join_next()).await
        {
            if let Ok(pair) = joined {
                drains.push(pair);
            }
        }
        tasks.abort_all();
    }

    // Collect the readers.
    let mut all = Vec::new();
    let deadline = Instant::now() + STOP_GRACE;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline.into(), readers.join_next()).await
    {
        if let Ok(Some(stats)) = joined {
            all.push(stats);
        }
    }
    let unfinished = readers.len();
    readers.abort_all();
    sampler_stop.store(true, Ordering::Release);
    let _ = tokio::time::timeout(Duration::from_secs(5), sampler).await;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let bot_check = match &bots {
        Some(bots) => Some(bots.check(&base, &tokens, &all).await?),
        None => None,
    };

    report(
        &args,
        &all,
        unfinished,
        &failures,
        idle_rss,
        connected_rss,
        &samples,
        (start, end),
        cpu_before,
        cpu_after,
        silent_stopped_us,
        &drains,
        &window,
        setup_secs,
        bot_check.as_ref(),
    )
}

/// One paper bot per account, for `--bots`.
#[derive(Debug)]
struct Bots {
    /// Bot id of each account (same order as the tokens).
    ids: Vec<u64>,
    /// The last journal id of each bot before it was started: later lines are the run's.
    before: Vec<u64>,
    client: reqwest::Client,
}

/// What the clients' bot channels delivered, against the bots' journals.
#[derive(Debug)]
struct BotCheck {
    /// Journal lines the bots wrote during the run, in all.
    lines: usize,
    /// Reading clients that received every line of their bot's.
    complete: usize,
    /// Lines missed, summed over the reading clients.
    missed: usize,
    /// Lines received twice, summed over the reading clients.
    duplicates: usize,
    /// For the first client that missed lines: its bot, the journal's first and last id, the
    /// first and last it missed, and the first and last it received.
    example: Option<String>,
}

impl Bots {
    async fn create(base: &str, tokens: &[String], symbol: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        // About 5 quote at sim prices, above the minimum order value; 50/200 crosses every few
        // seconds at 1,000 trades/s, so each bot writes a few journal lines a second.
        let qty = if symbol == "BTCUSDT" { "0.0001" } else { "0.002" };
        let mut ids = Vec::with_capacity(tokens.len());
        let mut before = Vec::with_capacity(tokens.len());
        for (n, token) in tokens.iter().enumerate() {
            let body = json!({
                "name": format!("ws-load-{n}"),
                "venue": "sim",
                "symbol": symbol,
                "mode": "paper",
                "strategy": {"kind": "ema_cross", "params": {"fast": 50, "slow": 200, "qty": qty}},
                "paper": {"starting_quote": "100000", "fee_bps": "10"}
            });
            let res = client.post(format!("{base}/api/v1/bots")).bearer_auth(token).json(&body);
            let res = res.send().await?;
            let status = res.status();
            let answer: Value = res.json().await.unwrap_or(Value::Null);
            if status.as_u16() != 201 {
                bail!("creating a bot answered {status}: {answer}");
            }
            let id = answer["id"].as_u64().context("no bot id")?;
            let journal = journal_ids(&client, base, token, id, 0).await?;
            ids.push(id);
            before.push(journal.last().copied().unwrap_or(0));
        }
        Ok(Self { ids, before, client })
    }

    /// `POST /bots/{id}/start` (or `stop`) for every bot; a busy server (503, 504) is asked
    /// again, up to five times.
    async fn control(&self, base: &str, tokens: &[String], action: &str) -> anyhow::Result<()> {
        for (id, token) in self.ids.iter().zip(tokens) {
            let url = format!("{base}/api/v1/bots/{id}/{action}");
            let mut tries = 0;
            loop {
                tries += 1;
                let began = Instant::now();
                let res = self.client.post(&url).bearer_auth(token).send().await?;
                let status = res.status();
                if status.is_success() {
                    break;
                }
                let body = res.text().await.unwrap_or_default();
                println!(
                    "{action} bot {id}: {status} after {:.1} s (try {tries}): {body}",
                    began.elapsed().as_secs_f64()
                );
                // A request that timed out may have been carried out: asked again, it is then an
                // invalid transition (409), which means done.
                if status.as_u16() == 409 && tries > 1 {
                    break;
                }
                if ![503, 504].contains(&status.as_u16()) || tries == 5 {
                    bail!("{action} bot {id} answered {status}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok(())
    }

    /// Every reading client against its bot's journal since the start.
    async fn check(
        &self,
        base: &str,
        tokens: &[String],
        all: &[ClientStats],
    ) -> anyhow::Result<BotCheck> {
        let mut journals = Vec::with_capacity(self.ids.len());
        for ((id, token), after) in self.ids.iter().zip(tokens).zip(&self.before) {
            journals.push(journal_ids(&self.client, base, token, *id, *after).await?);
        }
        let mut check = BotCheck {
            lines: journals.iter().map(Vec::len).sum(),
            complete: 0,
            missed: 0,
            duplicates: 0,
            example: None,
        };
        for stats in all {
            let Some(journal) = stats.bot.and_then(|bot| journals.get(bot)) else { continue };
            let mut seen = stats.bot_seqs.clone();
            seen.sort_unstable();
            let received = seen.len();
            seen.dedup();
            check.duplicates += received - seen.len();
            let missing: Vec<u64> =
                journal.iter().copied().filter(|id| seen.binary_search(id).is_err()).collect();
            let missed = missing.len();
            check.missed += missed;
            if missed > 0 && check.example.is_none() {
                let bot = stats.bot.map_or(0, |b| self.ids[b]);
                check.example = Some(format!(
                    "bot {bot}: journal {:?}..{:?}, missed {:?}..{:?}, received {:?}..{:?} ({})",
                    journal.first(),
                    journal.last(),
                    missing.first(),
                    missing.last(),
                    seen.first(),
                    seen.last(),
                    stats.ended.as_deref().unwrap_or("open at the stop"),
                ));
            }
            if missed == 0 {
                check.complete += 1;
            }
        }
        Ok(check)
    }
}

/// The ids of a bot's journal lines after `after`, all pages.
async fn journal_ids(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    bot: u64,
    mut after: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut ids = Vec::new();
    loop {
        let url = format!("{base}/api/v1/bots/{bot}/events?after={after}&limit=500");
        let res = client.get(url).bearer_auth(token).send().await?;
        let status = res.status();
        let page: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("reading bot {bot}'s journal answered {status}: {page}");
        }
        let items = page["items"].as_array().context("no items")?;
        ids.extend(items.iter().filter_map(|line| line["id"].as_u64()));
        match page["next_after"].as_u64() {
            Some(next) if !items.is_empty() => after = next,
            _ => return Ok(ids),
        }
    }
}

/// When the server dropped the first and the last of `count` silent clients, in seconds after
/// `stopped_us`, from `keel_ws_disconnects_total` with reason `slow_client` (1013, behind for
/// `ws.max_lag_secs`) or `heartbeat` (1001, nothing heard for `ws.pong_timeout_secs`).
fn silent_dropped(
    samples: &[ServerSample],
    stopped_us: u64,
    count: usize,
    reading_slow_closes: &[u64],
) -> (Option<f64>, Option<f64>) {
    let base = samples.iter().rev().find(|s| s.at_us <= stopped_us).map_or(0.0, dropped);
    let mut first = None;
    let mut all = None;
    for sample in samples.iter().filter(|s| s.at_us > stopped_us) {
        // Reading clients closed as too slow by then are not silent ones.
        let reading = reading_slow_closes.iter().filter(|at| **at <= sample.at_us).count();
        let gone = dropped(sample) - base - reading as f64;
        let after = (sample.at_us - stopped_us) as f64 / 1e6;
        if gone >= 1.0 && first.is_none() {
            first = Some(after);
        }
        if gone >= count as f64 && all.is_none() {
            all = Some(after);
        }
    }
    (first, all)
}

/// Connections the server has closed as too slow or silent, so far.
fn dropped(sample: &ServerSample) -> f64 {
    sample.slow_client_disconnects.unwrap_or(0.0) + sample.heartbeat_disconnects.unwrap_or(0.0)
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &RunArgs,
    all: &[ClientStats],
    unfinished: usize,
    failures: &[String],
    idle_rss: Option<(u64, u64)>,
    connected_rss: Option<(u64, u64)>,
    samples: &[ServerSample],
    (start, end): (u64, u64),
    cpu_before: (Option<f64>, Option<f64>, Option<(u64, u64)>),
    cpu_after: (Option<f64>, Option<f64>, Option<(u64, u64)>),
    silent_stopped_us: u64,
    drains: &[(Drained, u64)],
    window: &Window,
    setup_secs: f64,
    bot_check: Option<&BotCheck>,
) -> anyhow::Result<()> {
    let window_secs = (end - start) as f64 / 1e6;
    let mut latency = Histogram::new();
    for stats in all {
        latency.merge(&stats.latency);
    }
    let mut events: Vec<f64> = all.iter().map(|s| s.events as f64).collect();
    let events_median = median(&mut events);
    let events_min = events.first().copied().unwrap_or(0.0);
    let events_max = events.last().copied().unwrap_or(0.0);
    let gaps: u64 = all.iter().map(|s| s.gaps).sum();
    let missing: u64 = all.iter().map(|s| s.missing).sum();
    let out_of_order: u64 = all.iter().map(|s| s.out_of_order).sum();
    let clients_with_gaps = all.iter().filter(|s| s.gaps > 0).count();
    let lagged: u64 = all.iter().map(|s| s.lagged_notices).sum();
    let lagged_dropped: u64 = all.iter().map(|s| s.lagged_dropped).sum();
    let clients_lagged = all.iter().filter(|s| s.lagged_notices > 0).count();
    let ended: Vec<&String> = all.iter().filter_map(|s| s.ended.as_ref()).collect();
    let frame_len = all.iter().map(|s| s.first_frame_len).find(|l| *l > 0).unwrap_or(0);

    let (p50, p90, p99, p999, max) = (
        latency.percentile(50.0),
        latency.percentile(90.0),
        latency.percentile(99.0),
        latency.percentile(99.9),
        latency.max,
    );
    println!();
    println!("== {} ==", args.label);
    println!(
        "clients                  {} reading measured, {} failed to connect, {} did not stop in time",
        all.len(),
        failures.len(),
        unfinished
    );
    println!(
        "tick-to-client latency   n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms p99.9={:.2} ms max={:.2} ms",
        latency.total,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max)
    );
    println!(
        "over target              {:.3}% of events over {} ms",
        latency.share_above((args.target_p99_ms * 1e3) as u64) * 100.0,
        args.target_p99_ms
    );
    let expected = args.rate.map(|r| r * window_secs);
    println!(
        "events per client        min={events_min:.0} median={events_median:.0} max={events_max:.0} \
         ({:.0}/s median){}  frame {frame_len} bytes",
        events_median / window_secs,
        expected.map(|e| format!(", expected {e:.0}")).unwrap_or_default()
    );
    println!(
        "seq                      {gaps} gaps ({missing} events skipped) on {clients_with_gaps} clients, \
         {out_of_order} out of order"
    );
    println!(
        "lagged notices           {lagged} on {clients_lagged} clients, {lagged_dropped} events dropped"
    );
    if !ended.is_empty() {
        let mut reasons: Vec<&String> = ended.clone();
        reasons.sort();
        reasons.dedup();
        let reasons: Vec<String> = reasons
            .iter()
            .map(|r| format!("{r} ×{}", ended.iter().filter(|e| *e == r).count()))
            .collect();
        println!("reading clients closed   {}", reasons.join(", "));
    }

    // Per-second share over the target, to see when trouble happened.
    let mut per_sec = vec![(0u64, 0u64); args.duration_secs as usize];
    for stats in all {
        for (slot, (n, over)) in per_sec.iter_mut().zip(&stats.per_sec) {
            slot.0 += u64::from(*n);
            slot.1 += u64::from(*over);
        }
    }
    let line: Vec<String> = per_sec
        .iter()
        .map(|(n, over)| {
            if *n == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}", *over as f64 * 100.0 / *n as f64)
            }
        })
        .collect();
    println!("% over target per second {}", line.join(" "));
    let rate_line: Vec<String> = per_sec
        .iter()
        .map(|(n, _)| format!("{:.0}", *n as f64 / all.len().max(1) as f64))
        .collect();
    println!("events/s per client      {}", rate_line.join(" "));

    // CPU.
    let server_cpu = match (cpu_before.0, cpu_after.0) {
        (Some(a), Some(b)) => (b - a) / window_secs * 100.0,
        _ => f64::NAN,
    };
    let client_cpu = match (cpu_before.1, cpu_after.1) {
        (Some(a), Some(b)) => (b - a) / window_secs * 100.0,
        _ => f64::NAN,
    };
    let machine = match (cpu_before.2, cpu_after.2) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0,
        _ => f64::NAN,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cpu in window            server {server_cpu:.0}%  this client {client_cpu:.0}%  \
         machine {machine:.0}% busy of {cores} cores (100% = one core for processes)"
    );

    // Memory.
    let mib = |kib: u64| kib as f64 / 1024.0;
    let in_window: Vec<&ServerSample> =
        samples.iter().filter(|s| s.at_us >= start && s.at_us <= end).collect();
    let rss_max = samples.iter().filter_map(|s| s.rss_kib).max();
    let rss_window_max = in_window.iter().filter_map(|s| s.rss_kib).max();
    let rss_last = samples.iter().rev().find_map(|s| s.rss_kib);
    if args.pid.is_some() {
        println!(
            "server RSS               idle {:.1} MiB, after connecting {:.1} MiB, max in window {:.1} MiB, \
             max overall {:.1} MiB, last {:.1} MiB, VmHWM {:.1} MiB",
            idle_rss.map_or(f64::NAN, |r| mib(r.0)),
            connected_rss.map_or(f64::NAN, |r| mib(r.0)),
            rss_window_max.map_or(f64::NAN, mib),
            rss_max.map_or(f64::NAN, mib),
            rss_last.map_or(f64::NAN, mib),
            samples.iter().rev().find_map(|s| s.hwm_kib).map_or(f64::NAN, mib),
        );
    }

    // Server-side figures from /metrics.
    let first = in_window.first();
    let last = in_window.last();
    if let (Some(first), Some(last)) = (first, last)
        && !last.server_buckets.is_empty()
    {
        let delta = |le: f64| {
            let at = |s: &ServerSample| {
                s.server_buckets.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, v)| *v)
            };
            at(last) - at(first)
        };
        let total = delta(f64::INFINITY);
        if total > 0.0 {
            let shares: Vec<String> = [0.000_25, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1]
                .iter()
                .map(|le| format!("≤{}ms {:.2}%", le * 1e3, delta(*le) / total * 100.0))
                .collect();
            println!(
                "server-side tick-to-write {total:.0} socket writes in window (each at its oldest \
                 market frame): {}",
                shares.join(", ")
            );
        }
        let dropped = match (first.market_dropped, last.market_dropped) {
            (a, Some(b)) => b - a.unwrap_or(0.0),
            _ => 0.0,
        };
        let feed_dropped = match (first.feed_dropped, last.feed_dropped) {
            (a, Some(b)) => b - a.unwrap_or(0.0),
            _ => 0.0,
        };
        println!(
            "server drops in window   {dropped:.0} frames at full outbound queues, \
             {feed_dropped:.0} at full connection mailboxes (feed)"
        );
    }

    // Silent clients.
    let mut silent_disconnect_secs = f64::NAN;
    if !drains.is_empty() {
        let before = samples.iter().rev().find(|s| s.at_us <= silent_stopped_us);
        let base_slow = before.and_then(|s| s.slow_client_disconnects).unwrap_or(0.0);
        let base_heartbeat = before.and_then(|s| s.heartbeat_disconnects).unwrap_or(0.0);
        let slow = window.slow_closes.lock().unwrap_or_else(PoisonError::into_inner);
        let (first_seen, all_seen) =
            silent_dropped(samples, silent_stopped_us, drains.len(), &slow);
        if !slow.is_empty() {
            println!(
                "note                     {} reading clients were closed with 1013 or 1001 too; \
                 they are subtracted from the server's counts below",
                slow.len()
            );
        }
        silent_disconnect_secs = all_seen.unwrap_or(f64::NAN);
        println!(
            "silent: server dropped   first {} s, all {} s after the last silent client stopped reading \
             (keel_ws_disconnects_total, reasons slow_client + heartbeat, sampled every 0.5 s)",
            first_seen.map_or("never".to_owned(), |s| format!("{s:.1}")),
            all_seen.map_or("not all".to_owned(), |s| format!("{s:.1}"))
        );
        // Timeline every 2 s from when they stopped reading.
        let mut next = 0.0;
        let mut timeline = Vec::new();
        for sample in samples.iter().filter(|s| s.at_us + 1_000_000 > silent_stopped_us) {
            let after = (sample.at_us as f64 - silent_stopped_us as f64) / 1e6;
            if after + 0.25 < next {
                continue;
            }
            next = after + 2.0;
            timeline.push(format!(
                "{after:+.0}s:{}c/{:.0}+{:.0}/{:.0}MiB",
                sample.ws_clients.map_or("?".to_owned(), |c| format!("{c:.0}")),
                sample.slow_client_disconnects.unwrap_or(0.0) - base_slow,
                sample.heartbeat_disconnects.unwrap_or(0.0) - base_heartbeat,
                sample.rss_kib.map_or(f64::NAN, mib)
            ));
        }
        println!(
            "silent timeline          (t: ws clients / closed 1013 + closed 1001 / RSS) {}",
            timeline.join(" ")
        );
        let mut outcomes: Vec<&str> = drains.iter().map(|(d, _)| d.ended.as_str()).collect();
        outcomes.sort_unstable();
        let mut counted: Vec<String> = Vec::new();
        let mut i = 0;
        while i < outcomes.len() {
            let j = outcomes[i..].iter().take_while(|o| **o == outcomes[i]).count();
            counted.push(format!("{} ×{j}", outcomes[i]));
            i += j;
        }
        let mut drained_events: Vec<f64> = drains.iter().map(|(d, _)| d.events as f64).collect();
        let mut filled_after: Vec<f64> = drains
            .iter()
            .filter_map(|(d, stopped)| Some((d.last_received_us? as f64 - *stopped as f64) / 1e6))
            .collect();
        println!(
            "silent sockets, read after the run: {}; median {:.0} events buffered for each; \
             the last one was generated {:.1} s (median) after the client stopped reading",
            counted.join(", "),
            median(&mut drained_events),
            median(&mut filled_after),
        );
    }

    if let Some(check) = bot_check {
        println!(
            "bot events               {} journal lines written by the bots during the run; {} of {} \
             reading clients received every line of their bot's ({} missed, {} twice)",
            check.lines,
            check.complete,
            all.len(),
            check.missed,
            check.duplicates
        );
        if let Some(example) = &check.example {
            println!("  first client that missed lines: {example}");
        }
    }
    let held = p99 <= (args.target_p99_ms * 1e3) as u64;
    println!(
        "verdict                  {}: p99 {:.2} ms (target ≤ {} ms)",
        if held { "PASS" } else { "MISS" },
        ms(p99),
        args.target_p99_ms
    );
    println!(
        "RESULT label={} setup_s={setup_secs:.1} clients={} silent={} n={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} \
         max_ms={:.3} events_median={events_median:.0} gaps={gaps} lagged={lagged} \
         rss_idle_mib={:.1} rss_max_mib={:.1} server_cpu_pct={server_cpu:.0} client_cpu_pct={client_cpu:.0} \
         silent_all_dropped_s={silent_disconnect_secs:.1} bot_lines={} bot_missed={} failed={}",
        args.label,
        all.len(),
        drains.len(),
        latency.total,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max),
        idle_rss.map_or(f64::NAN, |r| mib(r.0)),
        rss_max.map_or(f64::NAN, mib),
        bot_check.map_or(f64::NAN, |c| c.lines as f64),
        bot_check.map_or(f64::NAN, |c| c.missed as f64),
        failures.len()
    );
    if !held {
        std::process::exit(2);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The baseline server

/// One generated trade: its event time and its `data` JSON, built once for every client.
#[derive(Debug)]
struct Tick {
    ts_ms: u64,
    data: Box<str>,
}

async fn baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!(
        "baseline listening on {} ({} events/s, queue {}, TCP_NODELAY {})",
        listener.local_addr()?,
        args.rate,
        args.queue,
        if args.nagle { "off" } else { "on" }
    );
    let (tx, _) = broadcast::channel::<Arc<Tick>>(args.queue.max(1));
    tokio::spawn(generate(tx.clone(), args.rate));
    let channel: Arc<str> = args.channel.into();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let limit = tokio::time::sleep(Duration::from_secs(args.max_secs));
    tokio::pin!(limit);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                if !args.nagle {
                    let _ = stream.set_nodelay(true);
                }
                tokio::spawn(serve_client(stream, tx.clone(), channel.clone()));
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut limit => {
                println!("baseline: --max-secs reached");
                break;
            }
        }
    }
    Ok(())
}

/// Generates `rate` trades a second as Keel's sim venue does: on a 10 ms tick, the whole trades
/// due (catch-up capped at 50 ms' worth), each stamped when generated.
async fn generate(tx: broadcast::Sender<Arc<Tick>>, rate: u32) {
    let rate = f64::from(rate);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut debt = 0.0f64;
    let mut ticks: i64 = 9_801_245;
    let mut trade_id: u64 = 1;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        tick.tick().await;
        let now = Instant::now();
        debt = (debt + rate * now.duration_since(last).as_secs_f64()).min((rate * 0.05).max(1.0));
        last = now;
        let due = debt.floor() as u64;
        debt -= due as f64;
        let ts_ms = now_us() / 1000;
        for _ in 0..due {
            // xorshift: a random walk of the price, a random size and side.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            ticks = (ticks + (rng % 11) as i64 - 5).max(100);
            let lots = rng % 500 + 1;
            let side = if rng & (1 << 40) == 0 { "buy" } else { "sell" };
            let received_us = now_us();
            let data = format!(
                r#"{{"venue":"sim","symbol":"BTCUSDT","exchange_ts":{ts_ms},"received_us":{received_us},"kind":"trade","price":"{}.{:02}","qty":"{}.{:05}","side":"{side}","trade_id":{trade_id}}}"#,
                ticks / 100,
                ticks % 100,
                lots / 100_000,
                lots % 100_000,
            );
            trade_id += 1;
            let _ = tx.send(Arc::new(Tick { ts_ms, data: data.into_boxed_str() }));
        }
    }
}

/// One baseline client: `authenticated`, waits for `subscribe`, then writes every event.
async fn serve_client(stream: TcpStream, tx: broadcast::Sender<Arc<Tick>>, channel: Arc<str>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut sink, mut source) = ws.split();
    let hello = r#"{"expires_at":0,"type":"authenticated","user_id":0}"#;
    if sink.send(Message::text(hello)).await.is_err() {
        return;
    }
    loop {
        match source.next().await {
            Some(Ok(Message::Text(text))) if text.contains(r#""subscribe""#) => break,
            Some(Ok(_)) => {}
            _ => return,
        }
    }
    let mut rx = tx.subscribe();
    let subscribed = json!({"type": "subscribed", "channels": [&*channel]}).to_string();
    if sink.send(Message::text(subscribed)).await.is_err() {
        return;
    }
    // Reads the client's frames (so pings are answered and a close is seen) until it goes.
    let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                break;
            }
        }
        let _ = gone_tx.send(());
    });
    let mut seq = 0u64;
    let frame = |seq: u64, tick: &Tick| {
        let mut out = String::with_capacity(tick.data.len() + channel.len() + 64);
        out.push_str(r#"{"type":"event","channel":""#);
        out.push_str(&channel);
        out.push_str(&format!(r#"","seq":{seq},"ts":{},"data":"#, tick.ts_ms));
        out.push_str(&tick.data);
        out.push('}');
        out
    };
    let lagged = |dropped: u64| {
        json!({"type": "lagged", "channel": &*channel, "dropped": dropped}).to_string()
    };
    loop {
        let first = tokio::select! {
            received = rx.recv() => received,
            _ = &mut gone_rx => return,
        };
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(received) = next.take() {
            let text = match received {
                Ok(tick) => {
                    seq += 1;
                    frame(seq, &tick)
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    seq += n;
                    lagged(n)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if sink.feed(Message::text(text)).await.is_err() {
                return;
            }
            batched += 1;
            if batched < 64 {
                next = match rx.try_recv() {
                    Ok(tick) => Some(Ok(tick)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(broadcast::error::TryRecvError::Empty) => None,
                    Err(broadcast::error::TryRecvError::Closed) => return,
                };
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}
