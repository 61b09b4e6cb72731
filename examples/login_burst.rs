//! A burst of concurrent logins against a running Keel, watching `GET /health/live` meanwhile.
//!
//! Argon2id costs tens of milliseconds of CPU per login. Keel runs it on a bounded blocking pool,
//! never on the HTTP worker threads, so a burst of logins should slow logins (they queue for the
//! pool) but not anything else. This measures that claim from outside:
//!
//! 1. idle: polls `/health/live` every `--health-interval-ms` for `--idle-secs`, no other load;
//! 2. registers `--users` accounts (one at a time, untimed);
//! 3. burst: fires `--logins` concurrent `POST /api/v1/auth/login`, spread over the accounts,
//!    while the same poller runs; only probes that start inside the burst are counted.
//!
//! 4. saturation (with `--api-clients N`): N tasks, each with an account's access token, call
//!    `GET /api/v1/bots` back to back for `--api-secs`, as many as the server answers, while the
//!    poller runs: the API at capacity (answers 200, or fast 503 `OVERLOADED` past
//!    `protection.max_in_flight`).
//!
//! It prints latency percentiles of both, login outcomes, the burst's duration and the server's
//! own mean hash time (from `/metrics`), the saturation's request rate and outcomes, and exits 2
//! when the health p99 during the burst or the saturation is not under `--max-health-p99-ms`. The poller runs on its own thread and runtime with its own
//! connection, so the 200 login tasks cannot delay it on the client side.
//!
//! Keel's login throttle (5/min per account, 20/min per IP by default) would turn most of the
//! burst into 429s; start Keel with both raised (`scripts/login-burst.sh` does) so the burst
//! measures hashing.
//!
//! `cargo run --release --example login_burst -- http://127.0.0.1:8080`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::json;
use tokio::task::JoinSet;

/// The password every burst account uses (it satisfies the policy).
const PASSWORD: &str = "correct horse battery staple";
/// How long any one request may take before it counts as failed; far above any expected
/// latency (200 logins × ~30 ms on one hashing thread is ~6 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The health poller stops by itself after this long even if nobody tells it to.
const PROBE_LIMIT: Duration = Duration::from_secs(300);

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Concurrent logins against a running Keel, with /health/live latency")]
struct Args {
    /// Base URL of a running Keel.
    #[arg(default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Concurrent logins in the burst.
    #[arg(long, default_value_t = 200)]
    logins: usize,
    /// Accounts to register; logins are spread over them round-robin.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Pause between health probes, in milliseconds.
    #[arg(long, default_value_t = 5)]
    health_interval_ms: u64,
    /// Length of the idle baseline, in seconds (0 skips it).
    #[arg(long, default_value_t = 3)]
    idle_secs: u64,
    /// Exit 2 unless the health p99 during the burst is below this, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    max_health_p99_ms: f64,
    /// Concurrent API callers in the saturation phase (0 skips it).
    #[arg(long, default_value_t = 0)]
    api_clients: usize,
    /// Length of the saturation phase, in seconds (at most 300).
    #[arg(long, default_value_t = 10)]
    api_secs: u64,
}

/// One health probe: when it started, how long it took, whether it answered 200.
#[derive(Debug, Clone, Copy)]
struct Probe {
    started: Instant,
    took: Duration,
    ok: bool,
}

/// A `/health/live` poller on its own thread.
struct HealthPoller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<Probe>>>,
}

impl HealthPoller {
    /// Starts polling; returns once the poller's connection is open and it is probing.
    fn start(url: String, interval: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("health-poller".into()).spawn({
            let stop = stop.clone();
            move || -> anyhow::Result<Vec<Probe>> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let client = client(1)?;
                    // The first request opens the connection; it is not a sample.
                    client.get(&url).send().await?.bytes().await?;
                    let _ = ready_tx.send(());
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let limit = Instant::now() + PROBE_LIMIT;
                    let mut probes = Vec::new();
                    while !stop.load(Ordering::Acquire) && Instant::now() < limit {
                        tick.tick().await;
                        let started = Instant::now();
                        let ok = match client.get(&url).send().await {
                            Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        probes.push(Probe { started, took: started.elapsed(), ok });
                    }
                    Ok(probes)
                })
            }
        })?;
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            stop.store(true, Ordering::Release);
            let err = match thread.join() {
                Ok(Err(err)) => err,
                _ => anyhow::anyhow!("no answer within 10 s"),
            };
            return Err(err.context("the health poller could not reach Keel"));
        }
        Ok(Self { stop, thread })
    }

    /// Stops polling and returns every probe made.
    fn finish(self) -> anyhow::Result<Vec<Probe>> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().map_err(|_| anyhow::anyhow!("the health poller panicked"))?
    }
}

/// An HTTP/1.1 client for loopback, keeping up to `connections` idle connections.
fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    keel_venues::tls::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .build()?)
}

/// Nearest-rank percentiles of a set of durations.
struct Summary(Vec<Duration>);

impl Summary {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0.get(rank.saturating_sub(1)).copied().unwrap_or_default()
    }

    fn line(&self, what: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{what:<22} n={:<5} p50={:>8.2} ms  p95={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
            self.0.len(),
            ms(self.percentile(50.0)),
            ms(self.percentile(95.0)),
            ms(self.percentile(99.0)),
            ms(self.0.last().copied().unwrap_or_default()),
        )
    }
}

/// Health probes that started inside `[from, to]`: their summary and how many failed.
fn health_summary(probes: &[Probe], from: Instant, to: Instant) -> (Summary, usize) {
    let inside: Vec<_> = probes.iter().filter(|p| p.started >= from && p.started <= to).collect();
    let failed = inside.iter().filter(|p| !p.ok).count();
    (Summary::new(inside.iter().map(|p| p.took).collect()), failed)
}

/// `keel_password_hash_seconds` sum and count from `/metrics`.
async fn hash_totals(client: &reqwest::Client, base: &str) -> anyhow::Result<(f64, f64)> {
    let text = client.get(format!("{base}/metrics")).send().await?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((value("keel_password_hash_seconds_sum"), value("keel_password_hash_seconds_count")))
}

/// Registers `count` fresh accounts and returns their emails and access tokens.
async fn register(
    client: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut accounts = Vec::with_capacity(count);
    for n in 0..count {
        let email = format!("burst-{nonce}-{n}@example.com");
        let res = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .context("registering")?;
        let status = res.status();
        if status.as_u16() != 201 {
            bail!(
                "registering {email} answered {status}: {}",
                res.text().await.unwrap_or_default()
            );
        }
        let body: serde_json::Value = res.json().await.context("the registration answer")?;
        let token = body["tokens"]["access_token"].as_str().context("no access_token")?.to_owned();
        accounts.push((email, token));
    }
    Ok(accounts)
}

/// Saturation: `clients` tasks calling `GET /api/v1/bots` back to back for `secs`; returns the
/// count by status (0 for transport errors) and the requests' latencies.
async fn saturate(
    base: &str,
    accounts: &Arc<Vec<(String, String)>>,
    clients: usize,
    secs: u64,
) -> anyhow::Result<(std::collections::BTreeMap<u16, usize>, Vec<Duration>)> {
    let http = client(clients)?;
    let until = Instant::now() + Duration::from_secs(secs.min(300));
    let mut tasks = JoinSet::new();
    for n in 0..clients {
        let (http, accounts, url) = (http.clone(), accounts.clone(), format!("{base}/api/v1/bots"));
        tasks.spawn(async move {
            let token = &accounts[n % accounts.len()].1;
            let mut seen = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let status = match http.get(&url).bearer_auth(token).send().await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        res.bytes().await.map_or(0, |_| status)
                    }
                    Err(_) => 0,
                };
                seen.push((status, sent.elapsed()));
            }
            seen
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        for (status, took) in joined.context("an API task panicked")? {
            *statuses.entry(status).or_insert(0) += 1;
            latencies.push(took);
        }
    }
    Ok((statuses, latencies))
}

/// Login outcomes by status.
#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    unauthorized: usize,
    throttled: usize,
    overloaded: usize,
    other: usize,
    transport_errors: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.base_url.trim_end_matches('/').to_owned();
    let health_url = format!("{base}/health/live");
    let interval = Duration::from_millis(args.health_interval_ms);
    if args.users == 0 || args.logins == 0 {
        bail!("--users and --logins must be at least 1");
    }

    println!("target {base}: {} logins over {} accounts", args.logins, args.users);
    if args.idle_secs > 0 {
        let poller = HealthPoller::start(health_url.clone(), interval)?;
        let from = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
        let to = Instant::now();
        let (idle, failed) = health_summary(&poller.finish()?, from, to);
        println!("{}  failed={failed}", idle.line("health, idle"));
    }

    let setup = client(4)?;
    let accounts = Arc::new(register(&setup, &base, args.users).await?);
    let (hash_sum_before, hash_count_before) = hash_totals(&setup, &base).await?;

    let logins = client(args.logins)?;
    let poller = HealthPoller::start(health_url, interval)?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..args.logins {
        let (client, accounts, url) =
            (logins.clone(), accounts.clone(), format!("{base}/api/v1/auth/login"));
        tasks.spawn(async move {
            let body = json!({"email": accounts[n % accounts.len()].0, "password": PASSWORD});
            let sent = Instant::now();
            let status = match client.post(url).json(&body).send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    res.bytes().await.ok().map(|_| status)
                }
                Err(_) => None,
            };
            (status, sent.elapsed())
        });
    }
    let mut outcomes = Outcomes::default();
    let mut latencies = Vec::with_capacity(args.logins);
    while let Some(joined) = tasks.join_next().await {
        let (status, took) = joined.context("a login task panicked")?;
        match status {
            Some(200) => outcomes.ok += 1,
            Some(401) => outcomes.unauthorized += 1,
            Some(429) => outcomes.throttled += 1,
            Some(503) => outcomes.overloaded += 1,
            Some(_) => outcomes.other += 1,
            None => outcomes.transport_errors += 1,
        }
        if status.is_some() {
            latencies.push(took);
        }
    }
    let end = Instant::now();
    let (burst, failed) = health_summary(&poller.finish()?, start, end);
    let (hash_sum_after, hash_count_after) = hash_totals(&setup, &base).await?;

    let hashes = hash_count_after - hash_count_before;
    let mean_hash_ms =
        if hashes > 0.0 { (hash_sum_after - hash_sum_before) / hashes * 1e3 } else { f64::NAN };
    let health_p99_ms = burst.percentile(99.0).as_secs_f64() * 1e3;
    println!("burst duration         {:.3} s", (end - start).as_secs_f64());
    println!("{}  failed={failed}", burst.line("health, during burst"));
    println!("{}", Summary::new(latencies).line("login"));
    println!(
        "login outcomes         200={} 401={} 429={} 503={} other={} transport_errors={}",
        outcomes.ok,
        outcomes.unauthorized,
        outcomes.throttled,
        outcomes.overloaded,
        outcomes.other,
        outcomes.transport_errors
    );
    println!(
        "server hash time       {hashes:.0} hashes, mean {mean_hash_ms:.2} ms (from /metrics)"
    );
    if outcomes.ok != args.logins {
        println!(
            "note                   not every login succeeded: the burst hashed less than asked"
        );
    }
    let mut held = health_p99_ms < args.max_health_p99_ms && failed == 0;

    if args.api_clients > 0 {
        let poller = HealthPoller::start(format!("{base}/health/live"), interval)?;
        let start = Instant::now();
        let (statuses, latencies) =
            saturate(&base, &accounts, args.api_clients, args.api_secs).await?;
        let end = Instant::now();
        let (health, failed) = health_summary(&poller.finish()?, start, end);
        let total: usize = statuses.values().sum();
        let secs = (end - start).as_secs_f64();
        println!(
            "saturation             {} clients × {secs:.1} s: {total} requests ({:.0}/s)",
            args.api_clients,
            total as f64 / secs
        );
        let outcomes: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}={n}")).collect();
        println!("api outcomes           {} (0 = transport error)", outcomes.join(" "));
        println!("{}", Summary::new(latencies).line("api"));
        println!("{}  failed={failed}", health.line("health, saturated"));
        let p99 = health.percentile(99.0).as_secs_f64() * 1e3;
        let saturated_held = p99 < args.max_health_p99_ms && failed == 0;
        println!(
            "saturation verdict     {}: health p99 {p99:.2} ms (limit {} ms)",
            if saturated_held { "PASS" } else { "FAIL" },
            args.max_health_p99_ms
        );
        held &= saturated_held;
    }

    let limit = args.max_health_p99_ms;
    let verdict = if held { "PASS" } else { "FAIL" };
    println!(
        "verdict                {verdict}: health p99 {health_p99_ms:.2} ms (limit {limit} ms), \
         {failed} probes failed"
    );
    if !held {
        std::process::exit(2);
    }
    Ok(())
}
