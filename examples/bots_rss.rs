//! Resident memory of a running Keel with many paper bots trading on the sim venue.
//!
//! Drives a Keel that is already running on this machine (its pid is needed to read
//! `/proc/<pid>/status`):
//!
//! 1. idle: samples the server's memory before anything else (the baseline);
//! 2. registers `--users` accounts (the default limit is 50 bots per user, so the default 20
//!    users × 50 bots needs no configuration change);
//! 3. creates `--bots` `ema_cross` paper bots on venue `sim`, alternating BTCUSDT and ETHUSDT,
//!    spread round-robin over the users, and starts them all;
//! 4. lets them run for `--run-secs`, sampling memory every second, and reads the fill and order
//!    counters from `/metrics` before and after, so "running" means trading.
//!
//! Memory is `VmRSS` (resident now) and `VmHWM` (the peak resident size since the process
//! started) from `/proc/<pid>/status`. It prints every phase, the median and the largest RSS
//! while the bots run, the server's CPU use meanwhile, and exits 2 when the largest RSS while
//! running exceeds `--max-rss-mb`.
//!
//! `scripts/bots-rss.sh` starts a fresh release Keel and runs this against it; by hand:
//!
//! `cargo run --release --example bots_rss -- http://127.0.0.1:8080 --pid $(pgrep -x keel)`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[path = "support/http.rs"]
mod http;
use http::{call, counter_total};

/// The password every account uses (it satisfies the policy).
const PASSWORD: &str = "correct horse battery staple";
/// How long any one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Symbols the bots alternate between (both listed by the sim venue's defaults).
const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "RSS of a running Keel with many paper bots on the sim venue")]
struct Args {
    /// Base URL of a running Keel.
    #[arg(default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// Process id of that Keel (its memory is read from /proc).
    #[arg(long)]
    pid: u32,
    /// Bots to create and start.
    #[arg(long, default_value_t = 1000)]
    bots: usize,
    /// Accounts the bots are spread over; at most `bots.max_per_user` bots each.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// How long the bots run before the final sample, in seconds.
    #[arg(long, default_value_t = 30)]
    run_secs: u64,
    /// Print a memory sample every this many seconds while the bots run (0: only the last).
    #[arg(long, default_value_t = 10)]
    print_every: u64,
    /// Keel's data directory, to print the store's size on disk beside memory (optional).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Fast EMA period, in trades.
    #[arg(long, default_value_t = 5)]
    fast: u32,
    /// Slow EMA period, in trades.
    #[arg(long, default_value_t = 20)]
    slow: u32,
    /// Requests in flight while creating and starting bots.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Exit 2 if the largest RSS while the bots run is above this, in MiB.
    #[arg(long, default_value_t = 256.0)]
    max_rss_mb: f64,
}

/// Memory of the server at one moment, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
    /// Of `rss_kib`: anonymous memory (heap, stacks) and file-backed pages (the binary, libs).
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

impl Memory {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (is Keel running?)"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().split(' ').next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
            threads: field("Threads:")?,
        })
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<28} VmRSS {:>6.1} MiB (anon {:>6.1}, file {:>4.1})   VmHWM {:>6.1} MiB   \
             threads {}",
            mib(self.rss_kib),
            mib(self.anon_kib),
            mib(self.file_kib),
            mib(self.hwm_kib),
            self.threads
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').context("malformed /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/<pid>/stat")?
        .iter()
        .try_fold(0u64, |sum, f| -> anyhow::Result<u64> { Ok(sum + f.parse::<u64>()?) })?;
    // The kernel reports in USER_HZ, 100 on every Linux this runs on.
    Ok(Duration::from_millis(ticks * 10))
}

/// Bytes of the regular files under `dir`, recursively.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The store's size, for a sample line, when the data directory is known.
fn store_note(data_dir: Option<&std::path::Path>) -> String {
    data_dir.map_or_else(String::new, |dir| {
        format!("   store {:>6.1} MiB", dir_size(dir) as f64 / (1024.0 * 1024.0))
    })
}

/// The cumulative buckets of a Prometheus histogram: `(le, count)` in order.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once('"')?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The bucket bound under which `p` of the observations between two scrapes fall.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, n)| *n);
            (le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    (total > 0.0).then(|| delta.iter().find(|(_, n)| *n >= p * total).map_or(f64::NAN, |x| x.0))
}

/// An HTTP/1.1 client for loopback.
fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    keel_venues::tls::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .build()?)
}

/// Registers `count` fresh accounts and returns their access tokens.
async fn register(
    client: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut tokens = Vec::with_capacity(count);
    for n in 0..count {
        let email = format!("bots-rss-{nonce}-{n}@example.com");
        let body = json!({"email": email, "password": PASSWORD});
        let req = client.post(format!("{base}/api/v1/auth/register")).json(&body);
        let answer = call(req, 201, &format!("registering {email}")).await?;
        let token = answer["tokens"]["access_token"].as_str().context("no access token")?;
        tokens.push(token.to_owned());
    }
    Ok(tokens)
}

/// The definition of bot number `n`.
fn bot_body(n: usize, fast: u32, slow: u32) -> Value {
    let symbol = SYMBOLS[n % SYMBOLS.len()];
    // About 5 quote of the instrument: above the 5 USDT minimum order value at sim prices.
    let qty = if symbol == "BTCUSDT" { "0.0001" } else { "0.002" };
    json!({
        "name": format!("rss-{n}"),
        "venue": "sim",
        "symbol": symbol,
        "mode": "paper",
        "strategy": {"kind": "ema_cross", "params": {"fast": fast, "slow": slow, "qty": qty}},
        "paper": {"starting_quote": "10000", "fee_bps": "10"}
    })
}

/// Runs `jobs` with at most `concurrency` in flight; fails on the first error.
async fn run_all<T: Send + 'static>(
    concurrency: usize,
    jobs: Vec<impl Future<Output = anyhow::Result<T>> + Send + 'static>,
) -> anyhow::Result<Vec<T>> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (n, job) in jobs.into_iter().enumerate() {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            job.await.map(|v| (n, v))
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        out.push(joined.context("a request task panicked")??);
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// The server's `/metrics` text.
async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(client.get(format!("{base}/metrics")).send().await?.text().await?)
}

/// How many of every user's bots report each status.
async fn statuses(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let mut counts = std::collections::BTreeMap::new();
    for token in tokens {
        let req = client.get(format!("{base}/api/v1/bots")).bearer_auth(token);
        let list = call(req, 200, "listing bots").await?;
        for bot in list["items"].as_array().context("no items")? {
            let status = bot["status"].as_str().unwrap_or("?").to_owned();
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.base_url.trim_end_matches('/').to_owned();
    if args.users == 0 || args.bots == 0 {
        bail!("--users and --bots must be at least 1");
    }
    let pid = args.pid;
    let http = client(args.concurrency)?;
    println!(
        "target {base} (pid {pid}): {} ema_cross({}, {}) paper bots over {} accounts, {} s",
        args.bots, args.fast, args.slow, args.users, args.run_secs
    );

    let idle = Memory::read(pid)?;
    println!("{}", idle.line("idle, before anything"));

    let tokens = register(&http, &base, args.users).await?;
    println!("{}", Memory::read(pid)?.line("users registered"));

    let started = Instant::now();
    let jobs = (0..args.bots)
        .map(|n| {
            let req = http
                .post(format!("{base}/api/v1/bots"))
                .bearer_auth(&tokens[n % tokens.len()])
                .json(&bot_body(n, args.fast, args.slow));
            async move {
                let bot = call(req, 201, "creating a bot").await?;
                bot["id"].as_u64().context("created bot without an id")
            }
        })
        .collect();
    let ids = run_all(args.concurrency, jobs).await?;
    println!("created {} bots in {:.1} s", ids.len(), started.elapsed().as_secs_f64());
    println!("{}", Memory::read(pid)?.line("bots created, not running"));

    let started = Instant::now();
    let jobs = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let req = http
                .post(format!("{base}/api/v1/bots/{id}/start"))
                .bearer_auth(&tokens[n % tokens.len()]);
            async move { call(req, 200, "starting a bot").await.map(drop) }
        })
        .collect();
    run_all(args.concurrency, jobs).await?;
    println!("started {} bots in {:.1} s", ids.len(), started.elapsed().as_secs_f64());
    let at_start = Memory::read(pid)?;
    println!("{}", at_start.line("bots just started"));

    let data_dir = args.data_dir.as_deref();
    let before = scrape(&http, &base).await?;
    let cpu_before = cpu_time(pid)?;
    let run_started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    for second in 1..=args.run_secs {
        tick.tick().await;
        let memory = Memory::read(pid)?;
        if args.print_every > 0 && second % args.print_every == 0 && second != args.run_secs {
            let line = memory.line(&format!("running, {second} s"));
            println!("{line}{}", store_note(data_dir));
        }
        samples.push(memory);
    }
    let ran = run_started.elapsed();
    let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let after = scrape(&http, &base).await?;
    let delta = |name| counter_total(&after, name) - counter_total(&before, name);
    let (fills, orders) = (delta("keel_fills_total"), delta("keel_orders_total"));
    let (deliveries, dropped) =
        (delta("keel_feed_deliveries_total"), delta("keel_feed_dropped_total"));
    let end = Memory::read(pid)?;
    let line = end.line(&format!("after {} s running", args.run_secs));
    println!("{line}{}", store_note(data_dir));

    let mut rss: Vec<u64> = samples.iter().map(|m| m.rss_kib).collect();
    rss.sort_unstable();
    let median = rss.get(rss.len() / 2).copied().unwrap_or(end.rss_kib);
    let largest = rss.last().copied().unwrap_or(end.rss_kib).max(end.rss_kib);
    let per_bot_kib = (median as f64 - idle.rss_kib as f64) / args.bots as f64;
    println!(
        "RSS while running        median {:.1} MiB, largest {:.1} MiB ({} samples, 1/s); \
         idle baseline {:.1} MiB; {:.1} KiB per bot above idle",
        mib(median),
        mib(largest),
        rss.len(),
        mib(idle.rss_kib),
        per_bot_kib
    );
    println!(
        "server CPU while running {:.2} s in {:.1} s = {:.0} % of one core",
        cpu.as_secs_f64(),
        ran.as_secs_f64(),
        cpu.as_secs_f64() / ran.as_secs_f64() * 100.0
    );
    println!(
        "trading while running    {fills:.0} fills, {orders:.0} order updates \
         ({:.1} fills/s)",
        fills / ran.as_secs_f64()
    );
    let lag = |p| {
        let name = "keel_tick_to_strategy_seconds";
        bucket_quantile(&buckets(&before, name), &buckets(&after, name), p)
            .map_or_else(|| "?".to_owned(), |s| format!("≤ {:.1} ms", s * 1e3))
    };
    println!(
        "feed while running       {deliveries:.0} deliveries to bots ({:.0}/s), \
         {dropped:.0} trades dropped at full mailboxes; tick to strategy p50 {}, p99 {} \
         (histogram bucket bounds, 1 event in 64)",
        deliveries / ran.as_secs_f64(),
        lag(0.5),
        lag(0.99)
    );
    let counts = statuses(&http, &base, &tokens).await?;
    println!("bot statuses at the end  {counts:?}");

    let running = counts.get("running").copied().unwrap_or(0);
    let within = mib(largest) <= args.max_rss_mb;
    let verdict = if within && running == args.bots { "PASS" } else { "FAIL" };
    println!(
        "verdict                  {verdict}: largest RSS {:.1} MiB (limit {} MiB), \
         {running} of {} bots running, peak (VmHWM) {:.1} MiB",
        mib(largest),
        args.max_rss_mb,
        args.bots,
        mib(end.hwm_kib)
    );
    if verdict != "PASS" {
        std::process::exit(2);
    }
    Ok(())
}
