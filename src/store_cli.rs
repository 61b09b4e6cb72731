//! `keel store seed` and `keel store stats`: the operator's side of seeding a store (the work is
//! `keel_actors::seed`) and of reading its figures (`keel_actors::store::stats`). Keel must be
//! stopped: sled holds a lock on its directory (a running Keel shows the same figures on
//! `/metrics`). In cluster mode with `postgres_url`, the stats add the bot tables' figures in
//! Postgres.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use keel_actors::bot::BotRepo;
use keel_actors::bot::pg::PgBotRepo;
use keel_actors::pg::PgRecord;
use keel_actors::seed::{SEED_PASSWORD, SeedPlan, seed, seed_email};
use keel_actors::sink::Outbox;
use keel_actors::store::stats::{KindStats, POSTGRES_PREFIX};
use keel_actors::store::{Store, StoreConfig};
use keel_core::market::Symbol;

use crate::cli::{SeedArgs, StatsArgs};
use crate::configuration::Settings;

/// `keel store seed`.
///
/// # Errors
/// The store cannot be opened (Keel is running, or the directory is unusable), is not empty, or
/// a write failed.
pub fn seed_store(settings: &Settings, args: &SeedArgs) -> anyhow::Result<()> {
    let dir = args.store.clone().unwrap_or_else(|| settings.store.path.clone());
    let started = Instant::now();
    let config = StoreConfig { path: dir.clone(), ..settings.store_config() };
    let store = Store::open(&config)
        .with_context(|| format!("opening the store at {} (is Keel stopped?)", dir.display()))?;
    let mut repo = BotRepo::new(&store)?;
    if settings.sink.postgres.sink_config().is_some() {
        // As a running Keel would: every change also goes to the outbox for the sink.
        repo = repo.with_outbox(Outbox::open(&store)?);
    }
    let plan = SeedPlan {
        users: args.users,
        bots: args.bots,
        orders: args.orders,
        symbols: settings.venues.sim.symbols.iter().filter_map(|s| Symbol::parse(s)).collect(),
        max_bots_per_user: settings.bots.max_per_user,
        paper_slippage_bps: settings.bots.paper_slippage_bps,
        threads: match args.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
    };
    let report = seed(&store, &repo, &plan)
        .with_context(|| format!("seeding the store at {}", dir.display()))?;
    let bytes = store.size_on_disk().unwrap_or_default();
    println!(
        "keel: seeded {} in {:.1} s: {} users ({} … {}, password {SEED_PASSWORD}), {} running \
         bots, {} orders ({} open), {} fills; {:.1} MB on disk",
        dir.display(),
        started.elapsed().as_secs_f64(),
        report.users,
        seed_email(1),
        seed_email(report.users),
        report.bots,
        report.orders,
        report.open_orders,
        report.fills,
        bytes as f64 / 1e6,
    );
    Ok(())
}

/// `keel store seed` into `dir` with `settings`, for tests that start Keel on a seeded store.
///
/// # Errors
/// As [`seed_store`].
pub fn seed_dir(
    settings: &Settings,
    dir: &std::path::Path,
    users: usize,
    bots: usize,
    orders: u64,
) -> anyhow::Result<()> {
    let args = SeedArgs { users, bots, orders, store: Some(dir.to_owned()), threads: 0 };
    seed_store(settings, &args)
}

/// `keel store stats`: the figures as a table (or JSON), returned as text.
///
/// # Errors
/// The store cannot be opened (Keel is running, or the directory is unusable) or read.
pub fn stats(settings: &Settings, args: &StatsArgs) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let dir = args.store.clone().unwrap_or_else(|| settings.store.path.clone());
    let config = StoreConfig { path: dir.clone(), ..settings.store_config() };
    let store = Store::open(&config)
        .with_context(|| format!("opening the store at {} (is Keel stopped?)", dir.display()))?;
    let now = keel_venues::now_us() / 1000;
    let record_dir = settings.record_dir();
    let mut figures = keel_actors::store::stats::collect(&store, Some(&record_dir), now)?;
    figures.kinds.extend(postgres_figures(settings, now)?);
    if args.json {
        return Ok(serde_json::to_string_pretty(&figures)? + "\n");
    }
    let mut out = format!(
        "{:<16} {:>12} {:>14} {:>16}  {}\n",
        "kind", "rows", "bytes", "growth/day", "oldest (UTC)"
    );
    for (kind, f) in &figures.kinds {
        let growth = f.growth_bytes_per_day.map_or_else(|| "-".to_owned(), |g| g.to_string());
        let oldest = f.oldest_ms.map_or_else(
            || "-".to_owned(),
            |ms| {
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                humantime::format_rfc3339_seconds(time).to_string()
            },
        );
        writeln!(out, "{kind:<16} {:>12} {:>14} {growth:>16}  {oldest}", f.rows, f.bytes)?;
    }
    writeln!(out, "sled files: {} bytes on disk", figures.size_on_disk)?;
    Ok(out)
}

/// In cluster mode with `postgres_url`: the bot tables' figures there (the cluster's, the same
/// from every node), by kind named [`POSTGRES_PREFIX`] then the sled tree it mirrors. Nothing
/// otherwise. Read through a pool that does not migrate: a stats command changes nothing.
///
/// # Errors
/// Postgres cannot be reached or failed.
fn postgres_figures(
    settings: &Settings,
    now_ms: u64,
) -> anyhow::Result<BTreeMap<String, KindStats>> {
    let Some(config) = settings.cluster.record_config() else { return Ok(BTreeMap::new()) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let kinds = runtime
        .block_on(async {
            let repo = PgBotRepo::new(PgRecord::new(&config)?);
            repo.figures(now_ms).await
        })
        .map_err(|err| anyhow::anyhow!(err.detail()))
        .context("reading the bot tables' figures in Postgres (cluster.postgres_url)")?;
    Ok(kinds.into_iter().map(|(kind, stats)| (format!("{POSTGRES_PREFIX}{kind}"), stats)).collect())
}
