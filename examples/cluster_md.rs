//! Cluster mode, market data: the latency the JetStream hop adds, and failover times.
//!
//! Starts, all on 127.0.0.1 and bounded in time:
//! - a fake Binance (`keel_testkit::fake_binance`, with the fake REST API for the instrument
//!   list) that publishes BTCUSDT trades at `--rate` a second, noting when it sent each;
//! - three Keel processes (`--keel-bin serve`), each with its own port, data directory and log
//!   under `--work-dir`, all in the cluster `keelload_<pid>_<time>` on `--nats-url` (a name of
//!   their own, so nothing else on that NATS is touched; its stream and bucket are deleted at
//!   the end);
//! - one WebSocket client per node, subscribed to `market:binance:BTCUSDT:trades`.
//!
//! Node A's client subscribes first, so A takes the symbol's lease and connects to the exchange;
//! B and C follow it through JetStream. Then:
//! 1. **Hop latency.** After `--warmup-secs`, for `--measure-secs`: for every trade, the client's
//!    receive time minus the fake's send time, per node (one process holds both clocks). The
//!    holder's figures are the baseline (exchange → Keel → client); the followers' add the hop
//!    (Keel → NATS JetStream → Keel). p50 and p99 of each, and the followers' minus the holder's.
//! 2. **kill -9 of the holder.** The time until the exchange sees a new connection (another node
//!    took the lease once it expired and connected), and until each surviving node's client
//!    receives a trade sent after the kill.
//!    For the survivor that stays a follower: the longest pause between two trades it received
//!    around the kill, and how many trades sent meanwhile it never received.
//! 3. **SIGTERM of the new holder.** It relays until its feed stops, then releases its lease, so
//!    the last node takes it at its next lease round instead of waiting for the lease to expire:
//!    the time to its exit and to the new exchange connection, and the last node's longest pause
//!    and missed trades.
//!
//! It prints the figures, then one `RESULT key=value …` line that `scripts/cluster-md.sh` takes
//! medians of over several runs. Exits 1 if a step fails (a node not ready, no takeover within
//! `--failover-limit-secs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use keel_testkit::fake_binance::FakeBinance;
use keel_testkit::fake_rest::FakeRest;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[path = "support/http.rs"]
mod http;
#[path = "support/nodes.rs"]
mod nodes;
use http::{call, counter_total};
use nodes::{Node, NodeArgs, percentile, signal, stop_node, wait_ready};

const PASSWORD: &str = "correct horse battery staple";
const CHANNEL: &str = "market:binance:BTCUSDT:trades";
const STREAM: &str = "btcusdt@trade";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The binary, the work directory, the NATS server.
    #[command(flatten)]
    nodes: NodeArgs,
    /// Trades a second from the fake exchange.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of trades before the latency window.
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Seconds of the latency window.
    #[arg(long, default_value_t = 20)]
    measure_secs: u64,
    /// Longest a takeover may take before the run fails, seconds.
    #[arg(long, default_value_t = 20)]
    failover_limit_secs: u64,
}

/// Trades the fake sent (index = trade id − 1) and what each node's client received.
#[derive(Default)]
struct Clock {
    sent: Mutex<Vec<Instant>>,
    /// Per node: (trade id, receive time).
    received: [Mutex<Vec<(u64, Instant)>>; 3],
}

impl Clock {
    fn next_id(&self) -> u64 {
        lock(&self.sent).len() as u64 + 1
    }

    /// Latencies at `node`, µs, of the trades with ids in `ids`.
    fn latencies(&self, node: usize, ids: std::ops::Range<u64>) -> Vec<u64> {
        let sent = lock(&self.sent).clone();
        let mut out: Vec<u64> = lock(&self.received[node])
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .filter_map(|(id, at)| {
                let sent = sent.get(usize::try_from(*id).ok()?.checked_sub(1)?)?;
                u64::try_from(at.saturating_duration_since(*sent).as_micros()).ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Around an event at `from`: the longest pause between two trades `node` received (the
    /// later one at or after `from`, both before `to`), and how many of the trades sent between
    /// `from` and `to` it never received (of how many).
    fn pause(&self, node: usize, from: Instant, to: Instant) -> (Duration, u64, u64) {
        let (first, end) = {
            let sent = lock(&self.sent);
            let first = sent.partition_point(|sent| *sent < from) as u64 + 1;
            (first, sent.partition_point(|sent| *sent < to) as u64 + 1)
        };
        let received = lock(&self.received[node]);
        let mut longest = Duration::ZERO;
        let mut previous: Option<Instant> = None;
        let mut got = std::collections::HashSet::new();
        for (id, at) in received.iter().filter(|(_, at)| *at < to) {
            if (first..end).contains(id) {
                got.insert(*id);
            }
            if let Some(previous) = previous
                && *at >= from
            {
                longest = longest.max(at.duration_since(previous));
            }
            previous = Some(*at);
        }
        let sent = end - first;
        (longest, sent - got.len() as u64, sent)
    }

    /// When `node` first received a trade sent after `after`.
    fn resumed(&self, node: usize, after: Instant) -> Option<Instant> {
        // Ids are sent in order: the first one sent after `after`, and every later one.
        let first = lock(&self.sent).partition_point(|sent| *sent <= after) as u64 + 1;
        lock(&self.received[node]).iter().filter(|(id, _)| *id >= first).map(|(_, at)| *at).min()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `node` holds the symbol's lease, from its own `/metrics`.
async fn holds(node: &Node, http: &reqwest::Client) -> anyhow::Result<bool> {
    let text = http.get(format!("{}/metrics", node.base)).send().await?.text().await?;
    Ok(text.lines().any(|line| {
        line.starts_with("keel_cluster_leases_held{")
            && line.contains(r#"venue="binance""#)
            && line.ends_with(" 1")
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (http, cluster) = nodes::prepare(&args.nodes, REQUEST_TIMEOUT)?;

    let fake = Arc::new(FakeBinance::start().await);
    let rest = FakeRest::start().await;
    let mut nodes = Vec::new();
    for name in NODES {
        nodes.push(start_node(&args, name, &cluster, &fake.url, &rest.url())?);
    }
    let result = run(&args, &http, &fake, &mut nodes).await;
    for node in &mut nodes {
        stop_node(node).await;
    }
    if let Err(err) = drop_cluster(&args.nodes.nats_url, &cluster).await {
        println!("could not delete the cluster's stream and bucket: {err:#}");
    }
    result
}

async fn run(
    args: &Args,
    http: &reqwest::Client,
    fake: &Arc<FakeBinance>,
    nodes: &mut [Node],
) -> anyhow::Result<()> {
    for node in nodes.iter_mut() {
        wait_ready(node, http).await?;
    }
    println!(
        "host: {} cores, load {}; rate {}/s; nodes {:?} (pids {:?})",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        args.rate,
        NODES,
        nodes.iter().map(Node::pid).collect::<Vec<_>>()
    );
    let clock = Arc::new(Clock::default());
    let emitting = Arc::new(AtomicBool::new(true));
    let emitter = tokio::spawn(emit(fake.clone(), clock.clone(), args.rate, emitting.clone()));

    // A subscribes first and takes the lease; B and C follow.
    let mut clients = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let token = register(http, node).await?;
        clients.push(tokio::spawn(client(node.base.clone(), token, index, clock.clone())));
        if index == 0 {
            wait_until("A subscribes at the exchange", Duration::from_secs(30), || {
                fake.subscriptions().contains(STREAM)
            })
            .await?;
        }
    }
    let receiving = || (0..3).all(|n| !lock(&clock.received[n]).is_empty());
    wait_until("every client receives trades", Duration::from_secs(30), receiving).await?;
    // The gauge is set at each lease round (every second), so it may lag the taking by one.
    if holder_of(http, &nodes[..1]).await.is_err() {
        bail!("node A does not hold the lease it took first");
    }
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    // 1. The hop's latency.
    let first = clock.next_id();
    tokio::time::sleep(Duration::from_secs(args.measure_secs)).await;
    let last = clock.next_id();
    // Let the window's last trades arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window = first..last;
    let sent = last - first;
    let mut figures: Vec<(String, String)> = Vec::new();
    let holder = clock.latencies(0, window.clone());
    let (base50, base99) = (percentile(&holder, 0.5), percentile(&holder, 0.99));
    println!(
        "latency window: {sent} trades in {} s; exchange send -> client receive:",
        args.measure_secs
    );
    println!(
        "  {} (holder, baseline): {} received, p50 {base50} us, p99 {base99} us, max {} us",
        NODES[0],
        holder.len(),
        holder.last().copied().unwrap_or(0)
    );
    figures.push(("holder_p50_us".into(), base50.to_string()));
    figures.push(("holder_p99_us".into(), base99.to_string()));
    figures.push(("holder_received".into(), format!("{}/{sent}", holder.len())));
    let mut followers: Vec<u64> = Vec::new();
    for (node, name) in NODES.iter().enumerate().skip(1) {
        let lat = clock.latencies(node, window.clone());
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!(
            "  {name} (follower): {} received, p50 {p50} us ({:+}), p99 {p99} us ({:+}), max {} us",
            lat.len(),
            diff(p50, base50),
            diff(p99, base99),
            lat.last().copied().unwrap_or(0)
        );
        figures.push((format!("{}_received", &name[5..]), format!("{}/{sent}", lat.len())));
        followers.extend(lat);
    }
    followers.sort_unstable();
    let (f50, f99) = (percentile(&followers, 0.5), percentile(&followers, 0.99));
    println!(
        "  followers together: p50 {f50} us, p99 {f99} us; the hop adds p50 {} us, p99 {} us",
        diff(f50, base50),
        diff(f99, base99)
    );
    for node in &nodes[1..] {
        let text = http.get(format!("{}/metrics", node.base)).send().await?.text().await?;
        println!(
            "  {}: relayed events received {}, duplicates dropped {}, gaps {}",
            node.name,
            counter_total(&text, "keel_cluster_md_received_total") + 0.0,
            counter_total(&text, "keel_cluster_md_duplicates_total") + 0.0,
            counter_total(&text, "keel_cluster_md_gaps_total") + 0.0
        );
    }
    figures.push(("follower_p50_us".into(), f50.to_string()));
    figures.push(("follower_p99_us".into(), f99.to_string()));
    figures.push(("hop_p50_us".into(), diff(f50, base50).to_string()));
    figures.push(("hop_p99_us".into(), diff(f99, base99).to_string()));

    // 2. kill -9 of the holder.
    let limit = Duration::from_secs(args.failover_limit_secs);
    let connections = fake.connections();
    let killed = Instant::now();
    nodes[0].child.kill().context("kill -9 of node A")?;
    nodes[0].child.wait()?;
    wait_until("a new exchange connection after kill -9", limit, || {
        fake.connections() > connections
    })
    .await?;
    let connected = killed.elapsed();
    let (new_holder, other) = holder_of(http, &nodes[1..]).await?;
    let (new_holder, other) = (new_holder + 1, other + 1);
    wait_until("both survivors receive trades again", limit, || {
        clock.resumed(new_holder, killed).is_some() && clock.resumed(other, killed).is_some()
    })
    .await?;
    let since = |at: Option<Instant>| at.map_or(0, |at| at.duration_since(killed).as_millis());
    let (holder_back, other_back) =
        (since(clock.resumed(new_holder, killed)), since(clock.resumed(other, killed)));
    // A second of trades through the new holder, then what the remaining follower missed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (pause, missed, of) = clock.pause(other, killed, Instant::now());
    println!(
        "kill -9 of {}: new exchange connection (by {}) after {} ms; trades again at {} after {holder_back} ms, at {} (follower) after {other_back} ms; {} paused {} ms, missed {missed} of {of} trades",
        NODES[0],
        NODES[new_holder],
        connected.as_millis(),
        NODES[new_holder],
        NODES[other],
        NODES[other],
        pause.as_millis()
    );
    figures.push(("kill9_connect_ms".into(), connected.as_millis().to_string()));
    figures.push(("kill9_holder_trades_ms".into(), holder_back.to_string()));
    figures.push(("kill9_follower_trades_ms".into(), other_back.to_string()));
    figures.push(("kill9_pause_ms".into(), pause.as_millis().to_string()));
    figures.push(("kill9_missed".into(), missed.to_string()));

    // 3. SIGTERM of the new holder: it relays until its feed stops, then releases its lease.
    let connections = fake.connections();
    let stopping = Instant::now();
    signal(nodes[new_holder].pid(), "-TERM")?;
    let (mut connected, mut exited) = (None, None);
    while connected.is_none() || exited.is_none() {
        if stopping.elapsed() > limit {
            bail!("SIGTERM: new connection {connected:?}, exit {exited:?} within {limit:?}");
        }
        if connected.is_none() && fake.connections() > connections {
            connected = Some(stopping.elapsed());
        }
        if exited.is_none() && nodes[new_holder].child.try_wait()?.is_some() {
            exited = Some(stopping.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (connected, exited) = (connected.unwrap_or_default(), exited.unwrap_or_default());
    wait_until("the last node receives trades again", limit, || {
        clock.resumed(other, stopping).is_some()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (pause, missed, of) = clock.pause(other, stopping, Instant::now());
    println!(
        "SIGTERM of {}: it exited after {} ms; new exchange connection (by {}) after {} ms; {} paused {} ms, missed {missed} of {of} trades",
        NODES[new_holder],
        exited.as_millis(),
        NODES[other],
        connected.as_millis(),
        NODES[other],
        pause.as_millis()
    );
    figures.push(("term_exit_ms".into(), exited.as_millis().to_string()));
    figures.push(("term_connect_ms".into(), connected.as_millis().to_string()));
    figures.push(("term_pause_ms".into(), pause.as_millis().to_string()));
    figures.push(("term_missed".into(), missed.to_string()));

    emitting.store(false, Ordering::SeqCst);
    emitter.await?;
    for client in clients {
        client.abort();
    }
    let line: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(" "));
    Ok(())
}

/// `a − b`, signed.
fn diff(a: u64, b: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

/// Publishes trades at `rate` a second (in 1 ms batches), noting each one's send time.
async fn emit(fake: Arc<FakeBinance>, clock: Arc<Clock>, rate: u64, emitting: Arc<AtomicBool>) {
    let started = Instant::now();
    let mut published = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while emitting.load(Ordering::SeqCst) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while published < due {
            published += 1;
            let payload = format!(
                r#"{{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":{published},"p":"98234.51","q":"0.0012","T":1732307467122,"m":true,"M":true}}"#
            );
            lock(&clock.sent).push(Instant::now());
            fake.publish(STREAM, &payload);
        }
    }
}

/// Reads trades from `base`'s WebSocket into the clock until aborted (or the node goes away).
async fn client(base: String, token: String, node: usize, clock: Arc<Clock>) {
    let Err(err) = read_trades(&base, &token, node, &clock).await else { return };
    println!("client of {} ended: {err:#}", NODES[node]);
}

async fn read_trades(base: &str, token: &str, node: usize, clock: &Clock) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/ws", base.replacen("http", "ws", 1));
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (mut ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, connect).await.context("upgrade")??;
    while let Some(message) = ws.next().await {
        let at = Instant::now();
        let Message::Text(text) = message? else { continue };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("authenticated") => {
                let op = json!({"op": "subscribe", "channels": [CHANNEL]});
                ws.send(Message::text(op.to_string())).await?;
            }
            Some("event") if value["data"]["kind"] == "trade" => {
                if let Some(id) = value["data"]["trade_id"].as_u64() {
                    lock(&clock.received[node]).push((id, at));
                }
            }
            Some("error") => bail!("{value}"),
            _ => {}
        }
    }
    Ok(())
}

async fn register(http: &reqwest::Client, node: &Node) -> anyhow::Result<String> {
    let body = json!({"email": format!("load-{}@example.com", node.name), "password": PASSWORD});
    let req = http.post(format!("{}/api/v1/auth/register", node.base)).json(&body);
    let answer = call(req, 201, "registering").await?;
    Ok(answer["tokens"]["access_token"].as_str().context("no token")?.to_owned())
}

/// Which of `nodes` holds the lease now (index), and the other.
async fn holder_of(http: &reqwest::Client, nodes: &[Node]) -> anyhow::Result<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (index, node) in nodes.iter().enumerate() {
            if holds(node, http).await? {
                return Ok((index, 1 - index.min(1)));
            }
        }
        if Instant::now() > deadline {
            bail!("no surviving node reports the lease");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_node(
    args: &Args,
    name: &'static str,
    cluster: &str,
    ws_url: &str,
    rest_url: &str,
) -> anyhow::Result<Node> {
    let env = [
        ("KEEL__VENUES__BINANCE__ENABLED", "true"),
        ("KEEL__VENUES__BINANCE__WS_URL", ws_url),
        ("KEEL__VENUES__BINANCE__REST_URL", rest_url),
        ("KEEL__CLUSTER__ENABLED", "true"),
        ("KEEL__CLUSTER__NODE_ID", name),
        ("KEEL__CLUSTER__NATS_URL", &args.nodes.nats_url),
        ("KEEL__CLUSTER__NAME", cluster),
    ];
    nodes::start(&args.nodes.keel_bin, &args.nodes.work_dir, name, &env)
}

async fn wait_until(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Deletes the cluster's market-data stream and lease bucket (memory storage on the server).
async fn drop_cluster(url: &str, cluster: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream.delete_stream(format!("{cluster}_md")).await?;
    jetstream.delete_stream(format!("KV_{cluster}_md_leases")).await?;
    Ok(())
}
