//! Durable acknowledged orders per second, end to end (HTTP, the bot supervisor, the bot actor,
//! the engine, the sled transaction, the group commit and its `fdatasync`), against a plain
//! single-writer `fdatasync` loop on a file in the same data directory, in the same run.
//!
//! The real application runs in this process on port 0 (as the API tests start it), with its
//! store in a temporary directory. For every count in `--clients`, that many HTTP clients each
//! drive a paper bot of their own on the sim venue with market orders (buy, then sell, so the
//! position stays flat) for `--secs`; an order counts once its 200 `filled` answer arrived, which
//! the server sends only after the order and its fill were committed and fdatasynced. Each round
//! first measures the baseline: one thread appending 300 B to a file in the data directory and
//! `fdatasync`ing, repeat. Prints each round, then the medians and their ratio to the baseline.
//!
//!   cargo run --example durable_orders -- --clients 1,16,64 --secs 3 --rounds 3
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use keel_testkit::{TestApp, Tokens, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients (one bot each), one measurement per count.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Rounds; the medians over them are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Bots one user may hold (`bots.max_per_user`'s default is 50).
const BOTS_PER_USER: usize = 40;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = spawn_app_with(|s| {
        s.bots.max_per_user = BOTS_PER_USER;
        // Sized for the load: every client's requests pass the bot supervisor's mailbox.
        s.server.workers = 2;
    })
    .await;
    let most = args.clients.iter().copied().max().unwrap_or(1);
    let mut bots = Vec::with_capacity(most);
    let mut user = None::<Tokens>;
    for n in 0..most {
        if n % BOTS_PER_USER == 0 {
            user = Some(app.register(&format!("load-{n}@example.com")).await);
        }
        let user = user.clone().expect("a user");
        let bot = app.running_bot(&user).await;
        bots.push((user, bot));
    }
    // The sim venue quotes after its first ticks: wait for one filled order.
    app.market_buy(&bots[0].0, bots[0].1).await;
    let app = Arc::new(app);
    let span = Duration::from_secs(args.secs);
    println!("data directory {}; {} s per measurement", app.data_dir.path().display(), args.secs);

    let mut baseline = Vec::new();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); args.clients.len()];
    for round in 1..=args.rounds {
        let path = app.data_dir.path().join("fdatasync-append");
        let base = tokio::task::spawn_blocking(move || fdatasync_loop(&path, 300, span)).await??;
        let mut line = format!("round {round}: single-writer fdatasync {base:.0}/s");
        baseline.push(base);
        for (i, &clients) in args.clients.iter().enumerate() {
            let done = orders(&app, &bots[..clients], span).await;
            let rate = done as f64 / span.as_secs_f64();
            line += &format!(", {clients} clients {rate:.0}/s");
            rates[i].push(rate);
        }
        println!("{line}");
    }
    let base = median(&mut baseline);
    println!("median single-writer fdatasync: {base:.0}/s (the baseline)");
    for (i, &clients) in args.clients.iter().enumerate() {
        let rate = median(&mut rates[i]);
        println!(
            "median durable orders, {clients} clients: {rate:.0}/s = {:.2}x the baseline",
            rate / base
        );
    }
    app.stop.stop();
    Ok(())
}

/// `clients` clients placing market orders on their own bots for `span`: orders acknowledged
/// filled.
async fn orders(app: &Arc<TestApp>, bots: &[(Tokens, u64)], span: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + span;
    let mut tasks = Vec::new();
    for (user, bot) in bots.iter().cloned() {
        let (app, done) = (app.clone(), done.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let path = format!("/api/v1/bots/{bot}/orders");
            let mut side = "buy";
            while Instant::now() < deadline {
                let order = json!({"side": side, "qty": "0.001", "type": "market"});
                let res = app.send(Method::POST, &path, Some(&order), &user.access).await;
                let ok = res.status().as_u16() == 200;
                let body: Value = res.json().await.unwrap_or_default();
                if ok && body["status"] == "filled" && Instant::now() <= deadline {
                    done.fetch_add(1, Ordering::Relaxed);
                    side = if side == "buy" { "sell" } else { "buy" };
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed)
}

/// One thread appending `bytes` and `fdatasync`ing, for `span`: syncs per second.
fn fdatasync_loop(path: &std::path::Path, bytes: usize, span: Duration) -> std::io::Result<f64> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let record = vec![0x5au8; bytes];
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < span {
        file.write_all(&record)?;
        file.sync_data()?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
