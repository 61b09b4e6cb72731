//! Store write and space amplification per fill, without the server.
//!
//! Drives `--bots` paper `ema_cross` engines (alternating BTCUSDT and ETHUSDT, the sizes
//! `scripts/bots-rss.sh` uses) over the sim venue's seeded walk, and writes what they change
//! exactly as a running bot does: one `BotRepo::persist` per event that left effects, a group
//! commit after every `--writes-per-flush` writes, and every `--snapshot-every` events of a
//! symbol (about 10 s of the sim feed) the strategy snapshot of every bot that saw events. Stops
//! after `--fills` fills and prints, every `--report-every` fills: bytes handed to `write(2)`
//! (`wchar` in `/proc/self/io`) per fill, the store's size on disk, and VmRSS. At the end it
//! prints the live bytes (keys and values) in each tree, per fill.
//!
//! With `--keep-secs N`, a retention sweep (`store::retention::sweep`) runs at each report and
//! removes the fills, final orders and journal rows more than N seconds older than the market's
//! clock, as `retention.*_max_age_secs` does in a server: the store then holds a steady size,
//! and RSS shows whether sled's memory follows the rows it holds or the rows ever written.
//! Pointed at an existing `--data-dir` with `--fills 0`, it measures what opening that store
//! costs (the first line's RSS).
//!
//!   cargo run --release --example store_amp -- --bots 1000 --fills 200000
//!   cargo run --example store_amp -- --bots 200 --fills 600000 --report-every 50000 --cache-mb 16
//!   cargo run --example store_amp -- --bots 200 --fills 600000 --report-every 50000 --cache-mb 16 --keep-secs 120
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use keel_actors::bot::repo::BotRepo;
use keel_actors::store::retention::{self, RetentionConfig};
use keel_actors::store::{Store, StoreConfig, trees};
use keel_core::engine::{BotEngine, BotState, Effects, EngineConfig};
use keel_core::market::{MarketEvent, Symbol};
use keel_core::strategy::StrategySpec;
use keel_core::trading::Position;
use keel_core::trading::paper::PaperConfig;
use keel_core::trading::risk::RiskLimits;
use keel_venues::sim::{Instrument, SimMarket};
use rust_decimal::Decimal;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Bots, alternating BTCUSDT and ETHUSDT.
    #[arg(long, default_value_t = 1000)]
    bots: usize,
    /// Stop after this many fills.
    #[arg(long, default_value_t = 100_000)]
    fills: u64,
    /// EMA periods.
    #[arg(long, default_value_t = 5)]
    fast: u32,
    #[arg(long, default_value_t = 20)]
    slow: u32,
    /// Writes between two group commits.
    #[arg(long, default_value_t = 10)]
    writes_per_flush: u64,
    /// Sim events per symbol between strategy snapshots of every bot.
    #[arg(long, default_value_t = 2000)]
    snapshot_every: u64,
    /// Print a line every this many fills.
    #[arg(long, default_value_t = 20_000)]
    report_every: u64,
    /// sled cache, MiB.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
    /// Remove fills, final orders and journal rows older than this many seconds of market time
    /// at each report (0: keep everything).
    #[arg(long, default_value_t = 0)]
    keep_secs: u64,
    /// Run the engines but write nothing (what the driver itself holds).
    #[arg(long)]
    dry: bool,
    /// Where the store goes (a temporary directory when absent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn proc_field(file: &str, name: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn engine(bot_id: u64, instrument: &Instrument, qty: &str, args: &Args) -> BotEngine {
    let spec = StrategySpec {
        kind: "ema_cross".into(),
        params: serde_json::json!({"fast": args.fast, "slow": args.slow, "qty": qty}),
        module_id: None,
    };
    let filters = instrument.filters();
    let strategy = keel_core::strategy::build(&spec, &filters).expect("valid params");
    let config = EngineConfig {
        bot_id,
        filters,
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: Decimal::TEN, slippage_bps: Decimal::from(5) },
        allow_short: false,
        futures: None,
        live: false,
    };
    let state = BotState {
        position: Position { quote_balance: Decimal::from(10_000), ..Default::default() },
        ..Default::default()
    };
    BotEngine::new(config, state, strategy, Vec::new())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile_dir()?;
    let path = args.data_dir.clone().unwrap_or_else(|| temp.clone());
    let mut config = StoreConfig::new(&path);
    config.cache_capacity_bytes = args.cache_mb * 1024 * 1024;
    let store = Store::open(&config)?;
    let repo = BotRepo::new(&store)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let symbols =
        [Symbol::parse("BTCUSDT").expect("valid"), Symbol::parse("ETHUSDT").expect("valid")];
    let instruments: Vec<Instrument> =
        symbols.iter().map(|s| Instrument::for_symbol(s.clone())).collect();
    let mut market = SimMarket::new(7, instruments.clone());
    let mut bots: Vec<(u64, usize, BotEngine)> = (0..args.bots)
        .map(|n| {
            let which = n % 2;
            let qty = if which == 0 { "0.0001" } else { "0.002" };
            let id = n as u64 + 1;
            (id, which, engine(id, &instruments[which], qty, &args))
        })
        .collect();

    if args.keep_secs > 0 {
        // The sweep goes over the bots the `bots` tree lists; only their ids matter to it.
        let listed = store.tree(trees::BOTS)?;
        for (id, _, _) in &bots {
            listed.insert(keel_actors::store::id_key(*id), &[][..])?;
        }
    }
    let wchar_start = proc_field("/proc/self/io", "wchar:");
    println!(
        "store open, bots built: RSS {:.1} MiB",
        proc_field("/proc/self/status", "VmRSS:") as f64 / 1024.0
    );
    let started = std::time::Instant::now();
    let mut fx = Effects::default();
    let (mut fills, mut writes, mut next_report) = (0u64, 0u64, args.report_every);
    let mut ts = 1_732_000_000_000u64;
    let mut steps = 0u64;
    println!(
        "{:>9} {:>9} {:>12} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "fills", "writes", "wchar/fill", "wchar MiB", "disk MiB", "RSS MiB", "anon MiB", "removed"
    );
    while fills < args.fills {
        ts += 5;
        steps += 1;
        for (which, symbol) in symbols.iter().enumerate() {
            let events: Vec<Arc<MarketEvent>> = market
                .step(symbol, ts, ts * 1000)
                .expect("known symbol")
                .into_iter()
                .map(Arc::new)
                .collect();
            for (id, _, engine) in bots.iter_mut().filter(|(_, w, _)| *w == which) {
                for event in &events {
                    engine.on_market(event, &mut fx);
                }
                if !fx.is_empty() {
                    fills += fx.fills.len() as u64;
                    if !args.dry {
                        repo.persist(*id, &fx, &engine.snapshot())?;
                    }
                    fx.clear();
                    writes += 1;
                    if writes.is_multiple_of(args.writes_per_flush) {
                        runtime.block_on(store.commit())?;
                    }
                }
            }
        }
        if steps.is_multiple_of(args.snapshot_every) && !args.dry {
            for (id, _, engine) in &bots {
                repo.put_state(*id, &engine.snapshot())?;
            }
        }
        if fills >= next_report {
            next_report += args.report_every;
            let mut removed = 0;
            if args.keep_secs > 0 {
                let keep = std::time::Duration::from_secs(args.keep_secs);
                let config = RetentionConfig {
                    fills_max_age: keep,
                    orders_max_age: keep,
                    bot_events_max_age: keep,
                    recordings_days: 0,
                    archive_dir: None,
                    record_dir: None,
                    every: keep,
                };
                let report = retention::sweep(&store, &config, ts, None)?;
                removed = report.removed.values().sum::<u64>();
                runtime.block_on(store.commit())?;
            }
            let wchar = proc_field("/proc/self/io", "wchar:") - wchar_start;
            println!(
                "{fills:>9} {writes:>9} {:>12.0} {:>11.1} {:>9.1} {:>9.1} {:>9.1} {removed:>9}",
                wchar as f64 / fills as f64,
                mib(wchar),
                mib(store.size_on_disk()?),
                proc_field("/proc/self/status", "VmRSS:") as f64 / 1024.0,
                proc_field("/proc/self/smaps_rollup", "Anonymous:") as f64 / 1024.0,
            );
        }
    }
    runtime.block_on(store.commit())?;
    let wchar = proc_field("/proc/self/io", "wchar:") - wchar_start;
    println!(
        "done: {fills} fills, {writes} writes in {:.1} s ({:.0} s of market time); {:.0} bytes written per fill; {:.1} MiB on disk ({:.0} bytes per fill)",
        started.elapsed().as_secs_f64(),
        (ts - 1_732_000_000_000) as f64 / 1000.0,
        wchar as f64 / fills as f64,
        mib(store.size_on_disk()?),
        store.size_on_disk()? as f64 / fills as f64,
    );
    let mut total = 0;
    for name in [trees::BOTS, trees::ORDERS, trees::FILLS, trees::POSITIONS, trees::EVENTS] {
        let tree = store.tree(name)?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        for row in tree.iter() {
            let (k, v) = row?;
            rows += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        total += bytes;
        println!(
            "tree {name:<10} {rows:>9} rows {:>9.1} MiB live  {:>7.1} bytes per fill  {:>6.0} bytes per row",
            mib(bytes),
            bytes as f64 / fills as f64,
            bytes as f64 / rows.max(1) as f64
        );
    }
    println!("live total {:.1} MiB, {:.0} bytes per fill", mib(total), total as f64 / fills as f64);
    drop(store);
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keel-store-amp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
