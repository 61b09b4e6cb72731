//! Durable commits per second through the store's group commit, against a plain single-writer
//! `fdatasync` loop on a file in the same directory, in the same run.
//!
//! Each round runs, for `--secs` each: two baselines, one thread writing `--bytes` to a file and
//! `fdatasync`ing, repeat, once appending (the file grows, so each sync also commits its size) and
//! once overwriting a preallocated 1 MiB in turn (data only, the cheapest a sync gets), then for every count in `--writers` that many tokio tasks that each
//! insert a `--bytes` value into a tree and await `Store::commit()` (sled flush + Keel's
//! `fdatasync`), repeat. A commit counts once it returned: it is what an acknowledged order waits
//! for. Prints every round, then the median of each figure over `--rounds` and its ratio to the
//! baseline; the medians are what to quote, the machine this runs on is shared and noisy.
//!
//!   cargo run --example durable_commits -- --writers 1,16,64 --secs 3 --rounds 5
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use keel_actors::store::{Store, StoreConfig, id_key, trees};

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent writers, one measurement per count.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Rounds; the medians over them are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bytes per write (an order row is a few hundred).
    #[arg(long, default_value_t = 300)]
    bytes: usize,
    /// Directory for the store and the baseline file (a temporary directory when absent). Both
    /// live in it, so both measure the same disk.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&StoreConfig::new(dir.join("store")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let span = Duration::from_secs(args.secs);
    println!(
        "directory {}; {} s per measurement, {} B per write",
        dir.display(),
        args.secs,
        args.bytes
    );

    let mut baseline = Vec::new();
    let mut in_place = Vec::new();
    let mut grouped: Vec<Vec<f64>> = vec![Vec::new(); args.writers.len()];
    let mut per_sync: Vec<Vec<f64>> = vec![Vec::new(); args.writers.len()];
    for round in 1..=args.rounds {
        let rate = fdatasync_loop(&dir.join("fdatasync-append"), args.bytes, span, false)?;
        let fixed = fdatasync_loop(&dir.join("fdatasync-in-place"), args.bytes, span, true)?;
        print!(
            "round {round}: single-writer fdatasync appending {rate:.0}/s, in place {fixed:.0}/s"
        );
        baseline.push(rate);
        in_place.push(fixed);
        for (i, &writers) in args.writers.iter().enumerate() {
            let syncs_before = store.syncs_issued();
            let commits = runtime.block_on(group_commits(&store, writers, args.bytes, span))?;
            let syncs = store.syncs_issued() - syncs_before;
            let rate = commits as f64 / span.as_secs_f64();
            print!(
                "; {writers} writers {rate:.0} commits/s ({:.1} per sync)",
                commits as f64 / syncs.max(1) as f64
            );
            grouped[i].push(rate);
            per_sync[i].push(commits as f64 / syncs.max(1) as f64);
        }
        println!();
    }
    let appending = median(&mut baseline);
    let base = median(&mut in_place);
    println!(
        "median single-writer fdatasync: appending {appending:.0}/s, in place {base:.0}/s (the baseline below: the faster)"
    );
    let base = base.max(appending);
    for (i, writers) in args.writers.iter().enumerate() {
        let rate = median(&mut grouped[i]);
        let shared = median(&mut per_sync[i]);
        println!(
            "median {writers} writers: {rate:.0} durable commits/s = {:.2}x the baseline, {shared:.1} commits per sync",
            rate / base
        );
    }
    Ok(())
}

/// One thread writing `bytes` and `fdatasync`ing, for `span`: syncs per second. Appends, or with
/// `in_place` overwrites a preallocated (written and synced) 1 MiB region in turn.
fn fdatasync_loop(
    path: &std::path::Path,
    bytes: usize,
    span: Duration,
    in_place: bool,
) -> std::io::Result<f64> {
    use std::os::unix::fs::FileExt;
    const REGION: u64 = 1 << 20;
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().create(true).append(!in_place).write(true).open(path)?;
    if in_place {
        file.write_all(&vec![0u8; REGION as usize])?;
        file.sync_all()?;
    }
    let record = vec![0x5au8; bytes];
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < span {
        if in_place {
            file.write_all_at(&record, (done * bytes as u64) % (REGION - bytes as u64))?;
        } else {
            file.write_all(&record)?;
        }
        file.sync_data()?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// `writers` tasks writing and committing for `span`: commits that returned.
async fn group_commits(
    store: &Store,
    writers: usize,
    bytes: usize,
    span: Duration,
) -> Result<u64, Box<dyn std::error::Error>> {
    let tree = store.tree(trees::ORDERS)?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + span;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, tree, done) = (store.clone(), tree.clone(), done.clone());
        let value = vec![0x5au8; bytes];
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                tree.insert(id_key(store.next_id()?), value.clone())?;
                store.commit().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), keel_actors::store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
