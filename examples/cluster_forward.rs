//! Cluster mode, users: what forwarding a request to the user's owner costs, and how long a
//! user is without an owner when that node dies.
//!
//! Starts, all on 127.0.0.1 and bounded in time: a database of its own (`keelload_<pid>_<time>`)
//! on the Postgres at `--postgres-url` (dropped at the end), and two Keel processes
//! (`--keel-bin serve`), each with its own port, data directory and log under `--work-dir`, in a
//! cluster of the same name on `--nats-url` (its NATS stream and buckets are deleted at the end).
//! Then:
//! 1. **Forwarding overhead.** A user is registered; the node that takes the user's lease is the
//!    owner (`keel-node` on its answers). `GET /api/v1/bots` (a user-scoped read, answered by the
//!    owner) is sent `--requests` times to each node in turn, one at a time after
//!    `--warmup` requests each: to the owner (the baseline: served where it lands) and to the
//!    other node (forwarded over NATS request/reply to the owner, which serves it through its own
//!    listener). p50 and p99 of each, and the difference.
//! 2. **Failover.** The user starts a paper bot (`ema_cross` 2/5 on the sim venue, which fills
//!    every few seconds) through the other node, and it fills on the owner. Then kill -9 of the
//!    owner, and three times from the kill: until the other node answers the same request itself
//!    (`keel-node` is its own name: the lease's TTL ran out and the survivor took it at its next
//!    round), until it shows the bot `running` (started there from Postgres), and until the bot
//!    has a fill newer than the newest one read just before the kill (its first fill on the new
//!    node, given the price crosses meanwhile).
//!
//! It prints the figures, then one `RESULT key=value …` line that `scripts/cluster-forward.sh`
//! takes medians of over several runs. Exits 1 if a step fails.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::json;

#[path = "support/http.rs"]
mod http;
#[path = "support/nodes.rs"]
mod nodes;
use http::call;
use nodes::{Node, NodeArgs, percentile, signal, stop_node, wait_ready};

const PASSWORD: &str = "correct horse battery staple";
const NODES: [&str; 2] = ["node-a", "node-b"];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The binary, the work directory, the NATS server.
    #[command(flatten)]
    nodes: NodeArgs,
    /// A Postgres on loopback where this run may create (and drop) a database of its own.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Requests to each node before measuring.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Requests to each node measured.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Longest the failover may take before the run fails, seconds.
    #[arg(long, default_value_t = 30)]
    failover_limit_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (http, cluster) = nodes::prepare(&args.nodes, REQUEST_TIMEOUT)?;

    let (admin, connection) = tokio_postgres::connect(&args.postgres_url, tokio_postgres::NoTls)
        .await
        .context("connecting to --postgres-url")?;
    tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE DATABASE {cluster}")).await?;
    let record_url = keel_actors::pg::with_database(&args.postgres_url, &cluster);

    let mut nodes = Vec::new();
    let mut result = Ok(());
    for name in NODES {
        let env = [
            ("KEEL__CLUSTER__ENABLED", "true"),
            ("KEEL__CLUSTER__NODE_ID", name),
            ("KEEL__CLUSTER__NATS_URL", args.nodes.nats_url.as_str()),
            ("KEEL__CLUSTER__NAME", cluster.as_str()),
            ("KEEL__CLUSTER__POSTGRES_URL", record_url.as_str()),
        ];
        match nodes::start(&args.nodes.keel_bin, &args.nodes.work_dir, name, &env) {
            Ok(node) => nodes.push(node),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    if result.is_ok() {
        result = run(&args, &http, &mut nodes).await;
    }
    for node in &mut nodes {
        stop_node(node).await;
    }
    if let Err(err) = drop_cluster(&args.nodes.nats_url, &cluster).await {
        println!("could not delete the cluster's NATS streams: {err:#}");
    }
    let drop = format!("DROP DATABASE IF EXISTS {cluster} WITH (FORCE)");
    if let Err(err) = admin.batch_execute(&drop).await {
        println!("could not drop the database {cluster}: {err}");
    }
    result
}

async fn run(args: &Args, http: &reqwest::Client, nodes: &mut [Node]) -> anyhow::Result<()> {
    for node in nodes.iter_mut() {
        wait_ready(node, http).await?;
    }
    let body = json!({"email": "forward@example.com", "password": PASSWORD});
    let req = http.post(format!("{}/api/v1/auth/register", nodes[0].base)).json(&body);
    let answer = call(req, 201, "registering").await?;
    let token = answer["tokens"]["access_token"].as_str().context("no token")?.to_owned();

    // Whoever serves the first read owns the user from then on.
    let served_by = bots(http, &nodes[0].base, &token).await?;
    let owner = nodes.iter().position(|n| n.name == served_by).context("unknown keel-node")?;
    let other = 1 - owner;
    println!("owner {}, other {}", nodes[owner].name, nodes[other].name);

    let mut direct = Vec::with_capacity(args.requests);
    let mut forwarded = Vec::with_capacity(args.requests);
    for round in 0..args.warmup + args.requests {
        for (index, samples) in [(owner, &mut direct), (other, &mut forwarded)] {
            let began = Instant::now();
            let served_by = bots(http, &nodes[index].base, &token).await?;
            let took = began.elapsed().as_micros() as u64;
            if served_by != nodes[owner].name {
                bail!("request {round} to {} served by {served_by}", nodes[index].name);
            }
            if round >= args.warmup {
                samples.push(took);
            }
        }
    }
    direct.sort_unstable();
    forwarded.sort_unstable();
    let figures = |sorted: &[u64]| (percentile(sorted, 0.5), percentile(sorted, 0.99));
    let ((d50, d99), (f50, f99)) = (figures(&direct), figures(&forwarded));
    println!("served where it lands: p50 {d50} µs, p99 {d99} µs ({} requests)", direct.len());
    println!("forwarded to the owner: p50 {f50} µs, p99 {f99} µs ({} requests)", forwarded.len());
    println!(
        "forwarding adds: p50 {} µs, p99 {} µs",
        f50 as i64 - d50 as i64,
        f99 as i64 - d99 as i64
    );

    let bot = start_bot(http, &nodes[other].base, &token).await?;
    let bot_base = format!("{}/api/v1/bots/{bot}", nodes[other].base);
    let filled = Instant::now();
    while newest_fill(http, &bot_base, &token).await?.is_none() {
        if filled.elapsed() > Duration::from_secs(60) {
            bail!("bot {bot} did not fill within 60 s on {}", nodes[owner].name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let before = newest_fill(http, &bot_base, &token).await?;
    signal(nodes[owner].pid(), "-KILL")?;
    let killed = Instant::now();
    let _ = nodes[owner].child.wait();
    let limit = Duration::from_secs(args.failover_limit_secs);
    let (mut refused, mut user, mut running, mut fill) = (0u64, None, None, None);
    while killed.elapsed() < limit && fill.is_none() {
        let survivor = &nodes[other].name;
        match bots(http, &nodes[other].base, &token).await {
            Ok(served_by) if served_by == *survivor => {
                user.get_or_insert_with(|| killed.elapsed());
            }
            _ => refused += 1,
        }
        if user.is_some() && running.is_none() {
            let (served_by, status) = bot_status(http, &bot_base, &token).await?;
            if served_by == *survivor && status == "running" {
                running = Some(killed.elapsed());
            }
        }
        if running.is_some() && newest_fill(http, &bot_base, &token).await? > before {
            fill = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (Some(user), Some(running), Some(fill)) = (user, running, fill) else {
        bail!(
            "within {limit:?} of the kill {}: served the user after {user:?}, ran the bot after \
             {running:?}, its first fill after {fill:?}",
            nodes[other].name
        );
    };
    println!(
        "kill -9 of the owner: {} serves the user after {:.2} s ({refused} answers before were \
         not its own), shows the bot running after {:.2} s, its first fill after {:.2} s",
        nodes[other].name,
        user.as_secs_f64(),
        running.as_secs_f64(),
        fill.as_secs_f64()
    );
    println!(
        "RESULT direct_p50_us={d50} direct_p99_us={d99} forwarded_p50_us={f50} \
         forwarded_p99_us={f99} failover_ms={} bot_running_ms={} bot_fill_ms={}",
        user.as_millis(),
        running.as_millis(),
        fill.as_millis()
    );
    Ok(())
}

/// Creates and starts, through `base`, a paper `ema_cross` 2/5 bot on the sim venue (it crosses,
/// and fills, every few seconds): its id.
async fn start_bot(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<u64> {
    let body = json!({
        "name": "failover", "venue": "sim", "symbol": "BTCUSDT", "mode": "paper",
        "strategy": {"kind": "ema_cross", "params": {"fast": 2, "slow": 5, "qty": "0.0001"}},
        "paper": {"starting_quote": "100000", "fee_bps": "10"}
    });
    let req = http.post(format!("{base}/api/v1/bots")).bearer_auth(token).json(&body);
    let id = call(req, 201, "creating a bot").await?["id"].as_u64().context("no bot id")?;
    let req = http.post(format!("{base}/api/v1/bots/{id}/start")).bearer_auth(token);
    call(req, 200, "starting the bot").await?;
    Ok(id)
}

/// `GET {bot}`: the node that served it and the bot's status (empty unless 200).
async fn bot_status(
    http: &reqwest::Client,
    bot: &str,
    token: &str,
) -> anyhow::Result<(String, String)> {
    let res = http.get(bot).bearer_auth(token).send().await?;
    let node = served_by(&res);
    if !res.status().is_success() {
        return Ok((node, String::new()));
    }
    let body: serde_json::Value = res.json().await?;
    Ok((node, body["status"].as_str().unwrap_or_default().to_owned()))
}

/// The bot's newest fill id (`None`: none yet, or the read was not answered).
async fn newest_fill(
    http: &reqwest::Client,
    bot: &str,
    token: &str,
) -> anyhow::Result<Option<u64>> {
    let res = http.get(format!("{bot}/fills?limit=500")).bearer_auth(token).send().await?;
    if !res.status().is_success() {
        return Ok(None);
    }
    let page: serde_json::Value = res.json().await?;
    let items = page["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(items.iter().filter_map(|fill| fill["id"].as_u64()).max())
}

/// The node that served an answer (`keel-node`).
fn served_by(res: &reqwest::Response) -> String {
    res.headers()
        .get("keel-node")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `GET /api/v1/bots` on `base`, which must answer 200: the node that served it (`keel-node`).
async fn bots(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<String> {
    let res = http.get(format!("{base}/api/v1/bots")).bearer_auth(token).send().await?;
    let status = res.status().as_u16();
    let node = served_by(&res);
    let _ = res.bytes().await?;
    if status != 200 {
        bail!("GET /api/v1/bots on {base} answered {status} (from {node:?})");
    }
    Ok(node)
}

/// Deletes what the cluster left on NATS: every stream whose name starts with the cluster's
/// (its market-data stream and its KV buckets' streams).
async fn drop_cluster(url: &str, cluster: &str) -> anyhow::Result<()> {
    use futures_util::TryStreamExt as _;
    let client = async_nats::connect(url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let names: Vec<String> = jetstream.stream_names().try_collect().await?;
    for name in names.into_iter().filter(|n| n.contains(cluster)) {
        jetstream.delete_stream(&name).await?;
    }
    Ok(())
}
