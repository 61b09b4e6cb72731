//! Soak: Keel for a long run with paper bots and WebSocket clients, restarted once midway.
//!
//! Starts `--keel-bin serve` itself on 127.0.0.1 (`--port`, data in `--data-dir`), then:
//!
//! 1. registers `--users` accounts, creates `--bots` `ema_cross` paper bots on the sim venue
//!    (round-robin over the users, alternating BTCUSDT and ETHUSDT) and starts them;
//! 2. connects `--clients` WebSocket clients, client `n` as the owner of bot `n % bots`,
//!    subscribed to `bot:{id}` and to the bot's market trades. A client that loses its connection
//!    reconnects and resumes as docs/WEBSOCKET.md ("Resuming") says: it subscribes to `bot:{id}`
//!    with `since` its last journal id (0 the first time), and the server sends the missed lines
//!    and then the live ones (a resume too far back reads them from
//!    `GET /api/v1/bots/{id}/events?after=<last seq>` first);
//! 3. samples Keel's RSS (`VmRSS`) and open descriptors (`/proc/<pid>/fd`) every
//!    `--sample-secs`;
//! 4. at half the run, stops Keel with SIGTERM and starts it again on the same store and port
//!    (bots come back running; clients resume);
//! 5. at the end stops the bots, waits for each client to see its bot's `stopped` line, stops
//!    Keel and reads the store's figures with `keel store stats --json`.
//!
//! It asserts, and exits 1 on any violation (printing every figure either way):
//! - RSS after warm-up (`--warmup-secs` after each start) stays within ±`--rss-tolerance-pct` of
//!   its median over the first post-warm-up minute, in both halves;
//! - open descriptors after warm-up stay within ±max(`--fd-slack`, 5 %) of the same reference;
//! - every client holds each of its bot's journal lines exactly once: none missing against the
//!   journal, each connection's ids following on from its resume point one by one (none
//!   repeated, none skipped), and a line seen twice (over HTTP and live) is the same line (its
//!   kind and time);
//! - every connection the server ended was closed with 1001 (the restart) or 1013 (a slow
//!   client), never reset;
//! - the store matches the retention settings. Keel runs with `retention.*_max_age_secs` =
//!   `--retention-secs` (120) and a sweep a minute, so the store holds a steady size (sled's
//!   memory grows with the rows it holds: docs/PERFORMANCE.md, "The hour with the store held by
//!   retention"): the sweeps removed rows of each kind, no fill or journal row is older than the
//!   limit plus two sweeps, the fills in the store plus those removed are exactly the `fill` lines
//!   seen (by the clients, or still in the journals), and the sled files stay within
//!   `--max-disk-amplification` × the bytes of the rows plus 64 MiB. With `--retention-secs 0`
//!   (Keel's limits in days) nothing may be removed.
//!
//! A client's lines older than the first its bot's journal still holds were removed by retention;
//! they are counted, and the lines from there on must match the journal one for one.
//!
//! `scripts/soak.sh` builds and runs it; `DURATION_SECS=300 scripts/soak.sh` is CI's version.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "support/http.rs"]
mod http;
use http::{call, counter_total};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The password every account uses (it satisfies the policy).
const PASSWORD: &str = "correct horse battery staple";
/// The JWT secret of both Keel processes, so that tokens survive the restart.
const JWT_SECRET: &str = "soak-only-secret-0123456789abcdef0123";
/// Symbols the bots alternate between.
const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
/// Bounds on each step, so the run always ends by itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A restart with 200 running bots on a debug build of a busy machine takes minutes.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than a restart may take to be ready.
const RECONNECT_LIMIT: Duration = Duration::from_secs(360);
const STOPPED_WAIT: Duration = Duration::from_secs(30);
/// How long a bot's stop is asked again while Keel answers busy: on a starved machine the bot
/// supervisor itself can answer late (504) for over a minute.
const STOP_RETRY_FOR: Duration = Duration::from_secs(180);
/// Seconds between two retention sweeps (Keel's shortest; the first runs a minute after start).
const SWEEP_SECS: u64 = 60;
/// Bots being stopped at once at the end (their owners are many).
const STOPS_AT_ONCE: usize = 20;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Soak a Keel: bots, WebSocket clients, one restart; RSS, fds, events, store")]
struct Args {
    /// The keel binary to run.
    #[arg(long)]
    keel_bin: PathBuf,
    /// Its store directory (created; should be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The whole run, seconds (Keel is restarted at half).
    #[arg(long, default_value_t = 3600)]
    duration_secs: u64,
    /// Paper bots.
    #[arg(long, default_value_t = 200)]
    bots: usize,
    /// WebSocket clients.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Accounts the bots and clients are spread over.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Seconds after each start before RSS and descriptors must be flat; default a fifth of a
    /// half, between 30 and 300.
    #[arg(long)]
    warmup_secs: Option<u64>,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
    /// RSS band around its post-warm-up reference, percent.
    #[arg(long, default_value_t = 10.0)]
    rss_tolerance_pct: f64,
    /// Descriptors allowed around their reference (or 5 % of it, if more).
    #[arg(long, default_value_t = 16)]
    fd_slack: u64,
    /// Largest ratio of sled's files to the bytes of the rows they hold.
    #[arg(long, default_value_t = 8.0)]
    max_disk_amplification: f64,
    /// Seconds fills, final orders and journal rows are kept (`retention.*_max_age_secs`), so
    /// that the store holds a steady size (sweeps every minute); 0 keeps Keel's limits in days,
    /// under which nothing of the run is removed.
    #[arg(long, default_value_t = 120)]
    retention_secs: u64,
    /// Sim trades per second per symbol.
    #[arg(long, default_value_t = 20)]
    trades_per_sec: u32,
    /// The sim venue's regime (`venues.sim.regime`). `walk` by default: a steady load, so that
    /// memory flat under it means no leak. Under `schedule` (Keel's default) the load itself
    /// cycles (docs/PERFORMANCE.md, "Soak"), and memory follows it.
    #[arg(long, default_value = "walk")]
    sim_regime: String,
    /// EMA periods of the bots, in trades (5/20 crosses every few seconds at 20 trades/s).
    #[arg(long, default_value_t = 5)]
    fast: u32,
    #[arg(long, default_value_t = 20)]
    slow: u32,
}

/// One Keel process.
struct Keel {
    child: Child,
    started: Instant,
}

impl Keel {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts Keel and waits for `/health/ready`.
async fn start_keel(args: &Args, http: &reqwest::Client, run: u32) -> anyhow::Result<Keel> {
    let log = std::fs::File::create(args.data_dir.with_extension(format!("keel-{run}.log")))?;
    let mut command = Command::new(&args.keel_bin);
    command
        .arg("serve")
        .env_remove("RUST_LOG")
        .env("KEEL__SERVER__HOST", "127.0.0.1")
        .env("KEEL__SERVER__PORT", args.port.to_string())
        .env("KEEL__STORE__PATH", &args.data_dir)
        .env("KEEL__LOG__LEVEL", "warn")
        .env("KEEL__ACCESS_LOG__OUTPUT", "off")
        .env("KEEL__AUTH__JWT_SECRET", JWT_SECRET)
        .env("KEEL__AUTH__ACCESS_TTL_SECS", "86400")
        .env("KEEL__BOTS__MAX_PER_USER", args.bots.div_ceil(args.users).max(1).to_string())
        .env("KEEL__WS__MAX_PER_USER", (2 * args.clients.div_ceil(args.users)).to_string())
        .env("KEEL__PROTECTION__MAX_CONNECTIONS_PER_IP", "100000")
        .env("KEEL__PROTECTION__MAX_IN_FLIGHT_PER_IP", "100000")
        .env("KEEL__PROTECTION__PER_USER_PER_MINUTE", "100000")
        .env("KEEL__PROTECTION__PER_IP_PER_MINUTE", "100000")
        .env("KEEL__AUTH__REGISTRATIONS_PER_HOUR_PER_IP", "100000")
        .env("KEEL__VENUES__SIM__TRADES_PER_SEC", args.trades_per_sec.to_string())
        .env("KEEL__VENUES__SIM__REGIME", &args.sim_regime)
        // A sweep every minute, so retention runs during the soak.
        .env("KEEL__RETENTION__SWEEP_INTERVAL_SECS", SWEEP_SECS.to_string())
        .env("KEEL__RETENTION__FILLS_MAX_AGE_SECS", args.retention_secs.to_string())
        .env("KEEL__RETENTION__ORDERS_MAX_AGE_SECS", args.retention_secs.to_string())
        .env("KEEL__RETENTION__BOT_EVENTS_MAX_AGE_SECS", args.retention_secs.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command.spawn().with_context(|| format!("starting {}", args.keel_bin.display()))?;
    // The script stops this pid whatever happens to this process (killed by its timeout, say).
    std::fs::write(args.data_dir.with_extension("keel.pid"), child.id().to_string())?;
    let mut keel = Keel { child, started: Instant::now() };
    let url = format!("http://127.0.0.1:{}/health/ready", args.port);
    loop {
        if let Some(status) = keel.child.try_wait()? {
            bail!("keel exited during start-up ({status}); see its log beside the data directory");
        }
        if keel.started.elapsed() > READY_TIMEOUT {
            bail!("keel not ready within {READY_TIMEOUT:?}");
        }
        if let Ok(res) = http.get(&url).send().await
            && res.status().is_success()
        {
            return Ok(keel);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a stop went: how long it took, and whether SIGTERM sufficed.
struct Stopped {
    took: Duration,
    graceful: bool,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.graceful {
            write!(f, "SIGTERM to exit {:.1} s", self.took.as_secs_f64())
        } else {
            write!(f, "no exit within {STOP_TIMEOUT:?} of SIGTERM: killed")
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`] (a failure of the soak, which goes on: what
/// follows a crash is worth checking too).
async fn stop_keel(mut keel: Keel) -> anyhow::Result<Stopped> {
    let began = Instant::now();
    // A pid this process spawned and has not reaped yet, so it is still Keel's.
    let status = Command::new("kill").args(["-TERM", &keel.pid().to_string()]).status()?;
    if !status.success() {
        bail!("kill -TERM {} failed ({status})", keel.pid());
    }
    while began.elapsed() < STOP_TIMEOUT {
        if keel.child.try_wait()?.is_some() {
            return Ok(Stopped { took: began.elapsed(), graceful: true });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    keel.child.kill()?;
    keel.child.wait()?;
    Ok(Stopped { took: began.elapsed(), graceful: false })
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().split(' ').next()?.parse().ok())
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// One journal line as a client keeps it: its kind and time, to tell two copies apart.
type Line = (String, u64);

/// The ids and lines of a bot's journal after `after`, all pages.
async fn journal(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    bot: u64,
    mut after: u64,
) -> anyhow::Result<Vec<(u64, Line)>> {
    let mut lines = Vec::new();
    loop {
        let url = format!("{base}/api/v1/bots/{bot}/events?after={after}&limit=500");
        let page = call(http.get(url).bearer_auth(token), 200, "reading a journal").await?;
        let items = page["items"].as_array().context("no items")?;
        lines.extend(items.iter().filter_map(|l| Some((l["id"].as_u64()?, line_of(l)))));
        match page["next_after"].as_u64() {
            Some(next) if !items.is_empty() => after = next,
            _ => return Ok(lines),
        }
    }
}

/// A journal line (live `data` or a catch-up item: the same shape) as a client keeps it; a
/// status line's kind names the status (`status:stopped`).
fn line_of(line: &Value) -> Line {
    let kind = line["kind"].as_str().unwrap_or("?");
    let kind = match line["data"]["status"].as_str() {
        Some(status) if kind == "status" => format!("status:{status}"),
        _ => kind.to_owned(),
    };
    (kind, line["ts"].as_u64().unwrap_or(0))
}

/// Stops a bot as a client would: a busy Keel (503), a timed-out answer (504) or a change still
/// in progress (409) is not a refusal. The bot's state says whether the stop was carried out (a
/// 504's stop may still finish); if not, the stop is asked again, for up to [`STOP_RETRY_FOR`].
async fn stop_bot(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: u64,
    retries: &mut BTreeMap<u16, u64>,
) -> anyhow::Result<()> {
    let began = Instant::now();
    loop {
        let url = format!("{base}/api/v1/bots/{id}/stop");
        // A connection the server closed under the request (a kept-alive one, say) is retried
        // like a busy answer; 0 counts them.
        let status = match http.post(url).bearer_auth(token).send().await {
            Ok(res) => res.status().as_u16(),
            Err(err) if began.elapsed() <= STOP_RETRY_FOR => {
                note_retry(&err);
                0
            }
            Err(err) => return Err(err.into()),
        };
        if (200..300).contains(&status) {
            return Ok(());
        }
        if ![0, 409, 503, 504].contains(&status) || began.elapsed() > STOP_RETRY_FOR {
            bail!(
                "stopping bot {id} answered {status} ({:.0} s of tries)",
                began.elapsed().as_secs_f64()
            );
        }
        *retries.entry(status).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if bot_status(http, base, token, id, retries).await? == "stopped" {
            return Ok(());
        }
    }
}

/// `/metrics` of the running Keel.
async fn metrics(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    call_text(http.get(format!("{base}/metrics"))).await
}

/// `GET` answered 200, as text.
async fn call_text(req: reqwest::RequestBuilder) -> anyhow::Result<String> {
    let res = req.timeout(REQUEST_TIMEOUT).send().await?;
    if !res.status().is_success() {
        bail!("/metrics answered {}", res.status());
    }
    Ok(res.text().await?)
}

/// Rows of `kind` retention removed, from a `/metrics` text (`keel_retention_removed_total`).
fn removed_rows(text: &str, kind: &str) -> u64 {
    let label = format!("kind=\"{kind}\"");
    let of_kind: Vec<&str> = text.lines().filter(|l| l.contains(&label)).collect();
    counter_total(&of_kind.join("\n"), "keel_retention_removed_total") as u64
}

/// Says why a request is retried (the example has no logger).
fn note_retry(err: &reqwest::Error) {
    eprintln!("retrying after a failed request: {err}");
}

/// A bot's status, asked again while Keel answers busy (503) or late (504).
async fn bot_status(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: u64,
    retries: &mut BTreeMap<u16, u64>,
) -> anyhow::Result<String> {
    let began = Instant::now();
    loop {
        let status =
            match http.get(format!("{base}/api/v1/bots/{id}")).bearer_auth(token).send().await {
                Ok(res) if res.status().is_success() => {
                    let bot = res.json::<Value>().await?;
                    return Ok(bot["status"].as_str().unwrap_or("?").to_owned());
                }
                Ok(res) => res.status().as_u16(),
                Err(err) if began.elapsed() <= STOP_RETRY_FOR => {
                    note_retry(&err);
                    0
                }
                Err(err) => return Err(err.into()),
            };
        if ![0, 503, 504].contains(&status) || began.elapsed() > STOP_RETRY_FOR {
            bail!("reading bot {id} answered {status}");
        }
        *retries.entry(status).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// Every journal line it holds, by id.
    lines: BTreeMap<u64, Line>,
    /// Ids delivered on a connection at or below one that connection had already delivered.
    wire_repeats: u64,
    /// Ids on a connection that skipped some after the one before (or after its resume point).
    wire_gaps: u64,
    /// Lines seen both live and by catch-up whose kind or time differ.
    mismatches: u64,
    /// Connections opened (1 + resumptions).
    connections: u64,
    /// Lines read over HTTP because a resume was too far back for the WebSocket.
    read_over_http: u64,
    /// Market events received.
    market_events: u64,
    /// `lagged` notices.
    lagged: u64,
    /// Whether the bot's `stopped` line has arrived.
    stopped: bool,
    /// How the connections ended.
    closes: BTreeMap<String, u64>,
}

impl Seen {
    /// The last journal id held (0 for none).
    fn last(&self) -> u64 {
        self.lines.keys().next_back().copied().unwrap_or(0)
    }

    fn add(&mut self, id: u64, line: Line) {
        if let Some(old) = self.lines.get(&id) {
            if *old != line {
                self.mismatches += 1;
            }
        } else {
            if line.0 == "status:stopped" {
                self.stopped = true;
            }
            self.lines.insert(id, line);
        }
    }
}

/// Shared state of the run.
struct Shared {
    ws_url: String,
    base: String,
    http: reqwest::Client,
    stop: AtomicBool,
    /// Connections currently open.
    open: AtomicU64,
    /// Fill lines the clients received: the bots' activity, printed per minute beside RSS.
    fills: AtomicU64,
}

/// One client: connects, reads, resumes after a loss, until `stop`.
async fn client(
    shared: Arc<Shared>,
    token: String,
    bot: u64,
    symbol: &'static str,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let mut lost_since: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut ws = match open(&shared, &token, bot, symbol, &seen).await {
            Ok(ws) => ws,
            Err(err) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_LIMIT {
                    bail!(
                        "bot {bot}'s client could not reconnect within {RECONNECT_LIMIT:?}: {err:#}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        lost_since = None;
        shared.open.fetch_add(1, Ordering::Relaxed);
        seen.lock().unwrap_or_else(PoisonError::into_inner).connections += 1;
        let ended = read(&shared, &mut ws, &seen).await;
        shared.open.fetch_sub(1, Ordering::Relaxed);
        *seen.lock().unwrap_or_else(PoisonError::into_inner).closes.entry(ended).or_insert(0) += 1;
    }
    Ok(())
}

/// Reads one connection until it ends or the run stops; returns how it ended.
async fn read(shared: &Shared, ws: &mut Ws, seen: &Mutex<Seen>) -> String {
    // The resume point this connection subscribed with: its lines must follow on from it.
    let mut last_id = seen.lock().unwrap_or_else(PoisonError::into_inner).last();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            return "closed by the client".to_owned();
        }
        let next = tokio::select! {
            next = ws.next() => next,
            () = tokio::time::sleep(Duration::from_millis(500)) => continue,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or("close (no code)".to_owned(), |f| {
                    format!("close {}", u16::from(f.code))
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => return format!("error: {err}"),
            None => return "eof".to_owned(),
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
        match value["type"].as_str() {
            Some("event") => {}
            Some("lagged") => {
                seen.lock().unwrap_or_else(PoisonError::into_inner).lagged += 1;
                continue;
            }
            _ => continue,
        }
        let channel = value["channel"].as_str().unwrap_or("");
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if channel.starts_with("market:") {
            seen.market_events += 1;
            continue;
        }
        let data = &value["data"];
        // Indicator values are not journal lines (their seq repeats the last one).
        if data["kind"] == "indicator" {
            continue;
        }
        let Some(id) = data["id"].as_u64() else { continue };
        if id > last_id && data["kind"] == "fill" {
            shared.fills.fetch_add(1, Ordering::Relaxed);
        }
        if id <= last_id {
            seen.wire_repeats += 1;
        } else if id != last_id + 1 {
            seen.wire_gaps += 1;
        }
        last_id = last_id.max(id);
        seen.add(id, line_of(data));
    }
}

/// Opens one connection, waits for `authenticated`, subscribes and waits for `subscribed`, as a
/// resuming client does (docs/WEBSOCKET.md, "Resuming"): the bot channel with `since` set to the
/// last journal id held (0 on the first connection: the whole journal), so the server sends what
/// was missed and then the live lines, with no gap and none twice. A resume too far back
/// (`RESUME_TOO_FAR`) reads the missed lines over HTTP first and asks again.
async fn open(
    shared: &Shared,
    token: &str,
    bot: u64,
    symbol: &str,
    seen: &Mutex<Seen>,
) -> anyhow::Result<Ws> {
    let mut request = shared.ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (mut ws, _) =
        tokio::time::timeout(REQUEST_TIMEOUT, connect).await.context("upgrade timed out")??;
    let bot_channel = format!("bot:{bot}");
    let channels = [bot_channel.clone(), format!("market:sim:{symbol}:trades")];
    let mut subscribed = false;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while !subscribed {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, ws.next())
            .await
            .context("no subscription answer")?
            .context("closed during set-up")??;
        let Message::Text(text) = message else { continue };
        let value: Value = serde_json::from_str(&text)?;
        let subscribe = |seen: &Mutex<Seen>| {
            let last = seen.lock().unwrap_or_else(PoisonError::into_inner).last();
            json!({"op": "subscribe", "channels": channels, "since": {&bot_channel: last}})
        };
        match value["type"].as_str() {
            Some("authenticated") => ws.send(Message::text(subscribe(seen).to_string())).await?,
            Some("subscribed") => subscribed = true,
            Some("error") if value["code"] == "RESUME_TOO_FAR" => {
                let after = seen.lock().unwrap_or_else(PoisonError::into_inner).last();
                let lines = journal(&shared.http, &shared.base, token, bot, after).await?;
                {
                    let mut held = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    held.read_over_http += lines.len() as u64;
                    for (id, line) in lines {
                        held.add(id, line);
                    }
                }
                ws.send(Message::text(subscribe(seen).to_string())).await?;
            }
            Some("error") => bail!("subscribe refused: {value}"),
            _ => {}
        }
    }
    Ok(ws)
}

/// One sample of the server.
#[derive(Clone, Copy)]
struct Sample {
    /// Seconds since this process started.
    at: f64,
    rss_kib: u64,
    fds: u64,
    /// Client connections open.
    open: u64,
}

/// The flatness check of one process's samples after warm-up.
struct Flat {
    reference: f64,
    min: u64,
    max: u64,
    last: u64,
    samples: usize,
}

impl Flat {
    /// The median of the first minute after warm-up as the reference, and the range of every
    /// sample after warm-up.
    fn of(samples: &[Sample], warmup: f64, value: fn(&Sample) -> u64) -> Option<Self> {
        let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warmup).collect();
        let first = after.first()?.at;
        let mut minute: Vec<u64> =
            after.iter().filter(|s| s.at < first + 60.0).map(|s| value(s)).collect();
        minute.sort_unstable();
        let reference = minute[minute.len() / 2] as f64;
        let values = after.iter().map(|s| value(s));
        Some(Self {
            reference,
            min: values.clone().min()?,
            max: values.clone().max()?,
            last: values.clone().next_back()?,
            samples: after.len(),
        })
    }

    fn within(&self, band: f64) -> bool {
        (self.min as f64) >= self.reference - band && (self.max as f64) <= self.reference + band
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.users == 0 || args.bots == 0 || args.clients == 0 {
        bail!("--users, --bots and --clients must be at least 1");
    }
    keel_venues::tls::install_crypto_provider();
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
    let base = format!("http://127.0.0.1:{}", args.port);
    let half = Duration::from_secs(args.duration_secs / 2);
    let warmup = args.warmup_secs.unwrap_or((args.duration_secs / 10).clamp(30, 300)) as f64;
    // Private, as an operator's data directory is (Keel warns on every start otherwise).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&args.data_dir)?;
    let began = Instant::now();

    let mut keel = start_keel(&args, &http, 1).await?;
    println!(
        "keel {} started (pid {}), ready in {:.1} s",
        args.keel_bin.display(),
        keel.pid(),
        keel.started.elapsed().as_secs_f64()
    );

    // Accounts and bots.
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut tokens = Vec::with_capacity(args.users);
    for n in 0..args.users {
        let body = json!({"email": format!("soak-{nonce}-{n}@example.com"), "password": PASSWORD});
        let req = http.post(format!("{base}/api/v1/auth/register")).json(&body);
        let answer = call(req, 201, "registering").await?;
        tokens.push(answer["tokens"]["access_token"].as_str().context("no token")?.to_owned());
    }
    let mut bots = Vec::with_capacity(args.bots);
    for n in 0..args.bots {
        let symbol = SYMBOLS[n % SYMBOLS.len()];
        let qty = if symbol == "BTCUSDT" { "0.0001" } else { "0.002" };
        let body = json!({
            "name": format!("soak-{n}"), "venue": "sim", "symbol": symbol, "mode": "paper",
            "strategy": {"kind": "ema_cross",
                         "params": {"fast": args.fast, "slow": args.slow, "qty": qty}},
            "paper": {"starting_quote": "100000", "fee_bps": "10"}
        });
        let token = &tokens[n % args.users];
        let req = http.post(format!("{base}/api/v1/bots")).bearer_auth(token).json(&body);
        let id = call(req, 201, "creating a bot").await?["id"].as_u64().context("no bot id")?;
        let req = http.post(format!("{base}/api/v1/bots/{id}/start")).bearer_auth(token);
        let res = req.send().await?;
        if !res.status().is_success() {
            bail!("starting bot {id} answered {}", res.status());
        }
        bots.push((id, n % args.users, symbol));
    }
    println!("{} users, {} bots created and started", args.users, args.bots);

    // Clients.
    let shared = Arc::new(Shared {
        ws_url: format!("ws://127.0.0.1:{}/api/v1/ws", args.port),
        base: base.clone(),
        http: http.clone(),
        stop: AtomicBool::new(false),
        open: AtomicU64::new(0),
        fills: AtomicU64::new(0),
    });
    let mut seen = Vec::with_capacity(args.clients);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.clients {
        let (bot, user, symbol) = bots[n % bots.len()];
        let s = Arc::new(Mutex::new(Seen::default()));
        seen.push((bot, user, s.clone()));
        tasks.spawn(client(shared.clone(), tokens[user].clone(), bot, symbol, s));
    }
    let connect_began = Instant::now();
    while (shared.open.load(Ordering::Relaxed) as usize) < args.clients {
        if connect_began.elapsed() > RECONNECT_LIMIT {
            bail!(
                "only {} of {} clients connected",
                shared.open.load(Ordering::Relaxed),
                args.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} clients connected in {:.1} s",
        args.clients,
        connect_began.elapsed().as_secs_f64()
    );

    // The two halves.
    let mut halves: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    let mut restart_note = String::new();
    let mut restart_graceful = true;
    // Each process's `/metrics` just before its stop: what its retention sweeps removed.
    let mut metrics_before_stops = Vec::new();
    for (part, samples) in halves.iter_mut().enumerate() {
        let end = if part == 0 { began + half } else { began + 2 * half };
        let mut next_print = Instant::now();
        let mut fills_before = shared.fills.load(Ordering::Relaxed);
        while Instant::now() < end {
            let pid = keel.pid();
            if let Some(status) = keel.child.try_wait()? {
                bail!("keel exited during the run ({status})");
            }
            let sample = Sample {
                at: keel.started.elapsed().as_secs_f64(),
                rss_kib: rss_kib(pid).unwrap_or(0),
                fds: fd_count(pid).unwrap_or(0),
                open: shared.open.load(Ordering::Relaxed),
            };
            samples.push(sample);
            if Instant::now() >= next_print {
                // What Keel holds in memory besides its code: frames queued for the clients,
                // and the rows its store keeps (sled's memory follows them).
                let held = match metrics(&http, &base).await {
                    Ok(text) => format!(
                        "queued frames {:>6.0}, store rows {:>7.0}",
                        counter_total(&text, "keel_ws_outbound_frames"),
                        counter_total(&text, "keel_store_rows")
                    ),
                    Err(err) => format!("/metrics: {err}"),
                };
                let fills = shared.fills.load(Ordering::Relaxed);
                println!(
                    "[{:>5.0} s] pid {pid}: rss {:>7.1} MiB, fds {:>4}, clients open {:>4}, \
                     fills since the last line {:>6}, {held}",
                    began.elapsed().as_secs_f64(),
                    sample.rss_kib as f64 / 1024.0,
                    sample.fds,
                    sample.open,
                    fills - fills_before
                );
                fills_before = fills;
                next_print += Duration::from_secs(60);
            }
            tokio::time::sleep(Duration::from_secs(args.sample_secs)).await;
        }
        if part == 0 {
            metrics_before_stops.push(metrics(&http, &base).await?);
            let stopped_in = stop_keel(keel).await?;
            let down = Instant::now();
            keel = start_keel(&args, &http, 2).await?;
            let ready_in = down.elapsed();
            let limit = Instant::now();
            while (shared.open.load(Ordering::Relaxed) as usize) < args.clients
                && limit.elapsed() < RECONNECT_LIMIT
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            restart_graceful = stopped_in.graceful;
            restart_note = format!(
                "restart at {:.0} s: {stopped_in}, down until ready {:.1} s, \
                 {} of {} clients back {:.1} s after ready",
                began.elapsed().as_secs_f64() - ready_in.as_secs_f64(),
                ready_in.as_secs_f64(),
                shared.open.load(Ordering::Relaxed),
                args.clients,
                limit.elapsed().as_secs_f64()
            );
            println!("{restart_note}");
        }
    }

    // Stop the bots, as their owners would: many at once, each owner retrying while Keel is
    // busy. Every client must see its bot's `stopped` line.
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut stop_retries: BTreeMap<u16, u64> = BTreeMap::new();
    let stops_began = Instant::now();
    let stops = futures_util::stream::iter(bots.iter().map(|(id, user, _)| {
        let (http, base, token) = (&http, &base, &tokens[*user]);
        async move {
            let mut retries = BTreeMap::new();
            let status = bot_status(http, base, token, *id, &mut retries).await?;
            stop_bot(http, base, token, *id, &mut retries).await?;
            anyhow::Ok((status, retries))
        }
    }))
    .buffer_unordered(STOPS_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    for stop in stops {
        let (status, retries) = stop?;
        *statuses.entry(status).or_insert(0) += 1;
        for (code, n) in retries {
            *stop_retries.entry(code).or_insert(0) += n;
        }
    }
    let stops_took = stops_began.elapsed();
    let wait = Instant::now();
    while wait.elapsed() < STOPPED_WAIT
        && !seen.iter().all(|(_, _, s)| s.lock().unwrap_or_else(PoisonError::into_inner).stopped)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined.context("a client panicked")??;
    }

    // Events: each client against its bot's whole journal.
    let mut journals = BTreeMap::new();
    for (id, user, _) in &bots {
        journals.insert(*id, journal(&http, &base, &tokens[*user], *id, 0).await?);
    }
    let (mut missing, mut extra, mut wire_repeats, mut mismatches) = (0u64, 0u64, 0u64, 0u64);
    let mut wire_gaps = 0u64;
    let (mut resumed, mut read_over_http, mut market, mut lagged, mut no_stop) = (0, 0, 0, 0, 0);
    let mut closes: BTreeMap<String, u64> = BTreeMap::new();
    let mut example = None;
    // Every journal line any client or the final journal holds, by bot: the lines retention
    // removed are known from the clients that saw them.
    let mut all_lines: BTreeMap<u64, BTreeMap<u64, Line>> = BTreeMap::new();
    for (bot, lines) in &journals {
        all_lines.entry(*bot).or_default().extend(lines.iter().cloned());
    }
    let mut expired = 0u64;
    for (bot, _, s) in &seen {
        let s = s.lock().unwrap_or_else(PoisonError::into_inner);
        let journal = &journals[bot];
        let held = all_lines.entry(*bot).or_default();
        for (id, line) in &s.lines {
            held.entry(*id).or_insert_with(|| line.clone());
        }
        // Lines before the oldest the journal still holds were removed by retention: the client
        // must have them (no gap on its connections says so), the journal no longer does.
        let first_kept = journal.first().map_or(u64::MAX, |(id, _)| *id);
        expired += s.lines.range(..first_kept).count() as u64;
        let lost: Vec<u64> =
            journal.iter().map(|(id, _)| *id).filter(|id| !s.lines.contains_key(id)).collect();
        for (id, line) in journal {
            if s.lines.get(id).is_some_and(|held| held != line) {
                mismatches += 1;
            }
        }
        let kept: std::collections::BTreeSet<u64> = journal.iter().map(|(id, _)| *id).collect();
        extra += s.lines.range(first_kept..).filter(|(id, _)| !kept.contains(id)).count() as u64;
        if !lost.is_empty() && example.is_none() {
            example = Some(format!(
                "bot {bot}: lost {:?} of {} lines",
                &lost[..lost.len().min(10)],
                journal.len()
            ));
        }
        missing += lost.len() as u64;
        wire_repeats += s.wire_repeats;
        wire_gaps += s.wire_gaps;
        mismatches += s.mismatches;
        resumed += u64::from(s.connections > 1);
        read_over_http += s.read_over_http;
        market += s.market_events;
        lagged += s.lagged;
        no_stop += u64::from(!s.stopped);
        for (how, n) in &s.closes {
            *closes.entry(how.clone()).or_insert(0) += n;
        }
    }
    let journal_lines: usize = journals.values().map(Vec::len).sum();
    let lines_ever: usize = all_lines.values().map(BTreeMap::len).sum();
    let fill_lines =
        all_lines.values().flat_map(BTreeMap::values).filter(|l| l.0 == "fill").count() as u64;
    // Whether every bot had a client, so that every line retention removed was seen by one.
    let every_bot_watched = args.clients >= args.bots;

    metrics_before_stops.push(metrics(&http, &base).await?);
    let stopped_at_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let stopped_in = stop_keel(keel).await?;
    let stats = Command::new(&args.keel_bin)
        .args(["store", "stats", "--json", "--store"])
        .arg(&args.data_dir)
        .env("KEEL__AUTH__JWT_SECRET", JWT_SECRET)
        .env("KEEL__LOG__LEVEL", "warn")
        .output()?;
    if !stats.status.success() {
        bail!("keel store stats failed: {}", String::from_utf8_lossy(&stats.stderr));
    }
    let stats: Value = serde_json::from_slice(&stats.stdout)?;

    // Figures.
    let mut failures = Vec::new();
    println!();
    println!(
        "== soak: {} s, {} bots, {} clients, {} users ==",
        args.duration_secs, args.bots, args.clients, args.users
    );
    println!("{restart_note}");
    println!("final stop: {stopped_in}");
    if !restart_graceful || !stopped_in.graceful {
        failures.push(format!("Keel did not stop within {STOP_TIMEOUT:?} of SIGTERM"));
    }
    for (part, samples) in halves.iter().enumerate() {
        let rss = Flat::of(samples, warmup, |s| s.rss_kib);
        let fds = Flat::of(samples, warmup, |s| s.fds);
        let (Some(rss), Some(fds)) = (rss, fds) else {
            failures.push(format!("process {}: no sample after the {warmup} s warm-up", part + 1));
            continue;
        };
        let band = rss.reference * args.rss_tolerance_pct / 100.0;
        println!(
            "process {}: rss after {warmup:.0} s warm-up: reference {:.1} MiB, min {:.1}, max {:.1}, \
             last {:.1} ({} samples; band ±{:.0} %)",
            part + 1,
            rss.reference / 1024.0,
            rss.min as f64 / 1024.0,
            rss.max as f64 / 1024.0,
            rss.last as f64 / 1024.0,
            rss.samples,
            args.rss_tolerance_pct
        );
        if !rss.within(band) {
            failures.push(format!(
                "process {}: RSS left ±{} % of its reference",
                part + 1,
                args.rss_tolerance_pct
            ));
        }
        let fd_band = (args.fd_slack as f64).max(fds.reference * 0.05);
        println!(
            "process {}: fds reference {:.0}, min {}, max {}, last {} (band ±{fd_band:.0})",
            part + 1,
            fds.reference,
            fds.min,
            fds.max,
            fds.last
        );
        if !fds.within(fd_band) {
            failures.push(format!("process {}: descriptors left ±{fd_band:.0}", part + 1));
        }
    }
    println!(
        "events: {lines_ever} journal lines over {} bots, {journal_lines} still in the journals \
         ({expired} held by clients were removed by retention since); clients resumed {resumed} of {}, \
         {read_over_http} lines read over HTTP (a resume too far back); missing {missing}, not in the journal {extra}, \
         repeated on a connection {wire_repeats}, skipped on a connection {wire_gaps}, differing \
         copies {mismatches}; clients without \
         their bot's stop {no_stop}; bots before the final stop: {statuses:?}",
        args.bots, args.clients
    );
    println!("market events {market}, lagged notices {lagged}; connection ends: {closes:?}");
    println!(
        "bot stops: {} ({STOPS_AT_ONCE} at once) in {:.1} s; answers retried (status: count, 0 \
         for a failed connection) {stop_retries:?}",
        bots.len(),
        stops_took.as_secs_f64()
    );
    if let Some(example) = example {
        println!("first loss: {example}");
    }
    if missing > 0 || extra > 0 || wire_repeats > 0 || wire_gaps > 0 || mismatches > 0 {
        failures.push("WebSocket events lost, duplicated or altered across the run".to_owned());
    }
    // The restart's SIGTERM closes every connection with 1001 (a slow client may also be cut
    // off with 1013, and resumes the same way); a reset or a bare end is a failure.
    let abrupt: u64 = closes
        .iter()
        .filter(|(how, _)| {
            !["closed by the client", "close 1001", "close 1013"].contains(&how.as_str())
        })
        .map(|(_, n)| n)
        .sum();
    if abrupt > 0 {
        failures.push(format!("{abrupt} connections ended without a 1001 or 1013 close"));
    }
    if resumed < args.clients as u64 {
        failures
            .push(format!("only {resumed} of {} clients resumed after the restart", args.clients));
    }
    if no_stop > 0 {
        failures.push(format!("{no_stop} clients never saw their bot's stop"));
    }
    // Running, or paused by their own risk limits; never failed, nor stopped by the restart.
    let alive = statuses.get("running").unwrap_or(&0) + statuses.get("paused").unwrap_or(&0);
    if alive < args.bots {
        failures.push(format!("bots before the final stop: {statuses:?}"));
    }

    // Store against retention.
    let removed_of = |kind: &str| -> u64 {
        metrics_before_stops.iter().map(|text| removed_rows(text, kind)).sum()
    };
    let kinds = stats["kinds"].as_object().context("no kinds in the store's figures")?;
    let rows_of = |kind: &str| kinds.get(kind).and_then(|k| k["rows"].as_u64()).unwrap_or(0);
    let logical: u64 = kinds.values().filter_map(|k| k["bytes"].as_u64()).sum();
    let on_disk = stats["size_on_disk"].as_u64().unwrap_or(0);
    println!(
        "store: {} MiB of sled files for {:.1} MiB of rows ({:.2}×); rows: events {}, orders {}, \
         fills {} ({fill_lines} fill lines seen in the run); removed by retention sweeps \
         (limit {} s): events {}, orders {}, fills {}",
        on_disk / (1 << 20),
        logical as f64 / f64::from(1 << 20),
        on_disk as f64 / logical.max(1) as f64,
        rows_of("events"),
        rows_of("orders"),
        rows_of("fills"),
        args.retention_secs,
        removed_of("events"),
        removed_of("orders"),
        removed_of("fills")
    );
    let (limit_ms, kinds_checked) = if args.retention_secs > 0 {
        // Rows past the limit must have gone: the sweeps ran, and removed rows of each kind.
        for kind in ["events", "orders", "fills"] {
            if removed_of(kind) == 0 {
                failures.push(format!(
                    "{kind}: retention removed nothing under a {} s limit",
                    args.retention_secs
                ));
            }
        }
        // The last sweep ran at most a sweep interval before the stop; a minute of slack for a
        // sweep's own time on a loaded machine. Orders are left out: open orders are kept
        // whatever their age, and the figure is their creation time.
        (args.retention_secs * 1000 + 2 * SWEEP_SECS * 1000, &["fills", "events"][..])
    } else {
        // Keel's limits in days: nothing of the run may have been removed.
        let removed: u64 = ["events", "orders", "fills"].iter().map(|k| removed_of(k)).sum();
        if removed > 0 {
            failures.push(format!("retention removed {removed} rows younger than its limits"));
        }
        (90 * 86_400_000, &["fills", "orders", "events"][..])
    };
    for kind in kinds_checked {
        if let Some(oldest) = kinds.get(*kind).and_then(|k| k["oldest_ms"].as_u64())
            && stopped_at_ms.saturating_sub(oldest) > limit_ms
        {
            failures.push(format!(
                "{kind}: a row {} s old at the stop, past retention's limit",
                stopped_at_ms.saturating_sub(oldest) / 1000
            ));
        }
    }
    // Every fill is one row of its own and one `fill` line of its bot's journal: the fills in the
    // store and those retention removed are the fill lines seen (by a client or in the journal).
    let fills_accounted = rows_of("fills") + removed_of("fills");
    if (every_bot_watched && fills_accounted != fill_lines)
        || (!every_bot_watched && rows_of("fills") > fill_lines)
    {
        failures.push(format!(
            "the store holds {} fills and retention removed {}; {fill_lines} fill lines were seen",
            rows_of("fills"),
            removed_of("fills")
        ));
    }
    if on_disk as f64 > args.max_disk_amplification * logical as f64 + 64.0 * f64::from(1 << 20) {
        failures.push(format!(
            "sled's files ({on_disk} bytes) past {}× the rows' bytes \
            ({logical}) + 64 MiB",
            args.max_disk_amplification
        ));
    }

    if failures.is_empty() {
        println!("soak passed in {:.0} s", began.elapsed().as_secs_f64());
        Ok(())
    } else {
        for failure in &failures {
            println!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
}
