//! The store's durability promise, tested the hard way: a writer process is killed with SIGKILL
//! again and again on the same data directory, and after every kill the store must still hold
//! every write the writer acknowledged, with each multi-tree transaction whole or absent.
//!
//! The writer is this same test binary, re-executed to run the ignored
//! [`child_writes_and_acknowledges_until_killed`] test with [`CHILD_DIR_ENV`] set, so no extra
//! binary is needed. It prints `ACK <id>` only after the transaction for `id` went through
//! [`Store::commit`], exactly as the façade answers 2xx only after a commit.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use keel_actors::store::{Store, StoreConfig, id_key, key_id, trees};

/// Environment variable that turns the child test on and names its data directory.
const CHILD_DIR_ENV: &str = "KEEL_DURABILITY_CHILD_DIR";
/// Name of the test the child process runs.
const CHILD_TEST: &str = "child_writes_and_acknowledges_until_killed";
/// How many times the writer is killed; the data directory accumulates across all of them.
const ROUNDS: u64 = 30;
/// Concurrent writer tasks in the child, so that kills land while several transactions and a
/// shared group flush are in flight.
const WRITERS: usize = 4;
/// Trees every transaction writes the same key into.
const TX_TREES: [&str; 3] = [trees::ORDERS, trees::FILLS, trees::EVENTS];
/// Shortest time the writer runs after its first acknowledgement before it is killed.
const KILL_AFTER_MIN: Duration = Duration::from_millis(100);
/// Longest time the writer runs after its first acknowledgement before it is killed.
const KILL_AFTER_MAX: Duration = Duration::from_millis(400);
/// How long the child may take to start, recover the store and acknowledge its first write.
const FIRST_ACK_DEADLINE: Duration = Duration::from_secs(15);
/// Prefix of an acknowledgement line on the child's stdout.
const ACK_PREFIX: &str = "ACK ";

#[test]
fn every_acknowledged_write_survives_sigkill_and_no_transaction_is_half_applied() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut delays = KillDelays::new();
    let mut acked_so_far = BTreeSet::new();
    let started = Instant::now();

    for round in 1..=ROUNDS {
        let kill_after = delays.next();
        let acks = run_writer_and_kill(dir.path(), kill_after, round);
        assert!(!acks.is_empty(), "round {round}: the writer acknowledged nothing");
        for id in acks {
            assert!(
                acked_so_far.insert(id),
                "round {round}: id {id} was acknowledged twice; Store::next_id reused it"
            );
        }
        check_store(dir.path(), &acked_so_far, round);
    }

    println!(
        "{ROUNDS} SIGKILLs, {} acknowledged transactions, all present and whole, in {:.1?}",
        acked_so_far.len(),
        started.elapsed()
    );
}

/// Starts a writer on `dir`, lets it run for `kill_after` past its first acknowledgement, kills
/// it with SIGKILL and returns every id it acknowledged on a complete line.
fn run_writer_and_kill(dir: &Path, kill_after: Duration, round: u64) -> Vec<u64> {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the writer process");
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut stderr = child.stderr.take().expect("child stderr is piped");

    let (first_ack_tx, first_ack_rx) = mpsc::channel();
    let ack_reader = thread::spawn(move || read_acks(stdout, first_ack_tx));
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        // A child killed mid-write may leave invalid UTF-8; what was read is still useful.
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let first_ack = first_ack_rx.recv_timeout(FIRST_ACK_DEADLINE);
    if first_ack.is_ok() {
        thread::sleep(kill_after);
    }
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no atexit in the child.
    child.kill().expect("kill the writer");
    let status = child.wait().expect("reap the writer");
    let acks = ack_reader.join().expect("stdout reader thread");
    let stderr = stderr_reader.join().expect("stderr reader thread");

    assert!(
        first_ack.is_ok(),
        "round {round}: the writer acknowledged nothing within {FIRST_ACK_DEADLINE:?} \
         (exit {status}); its stderr:\n{stderr}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: the writer stopped on its own (exit {status}) instead of being killed; \
         its stderr:\n{stderr}"
    );
    acks
}

/// Reads the child's stdout to the end, signalling `first_ack` at the first acknowledgement.
/// Only complete lines count: the kill may cut the last one short.
fn read_acks(stdout: ChildStdout, first_ack: mpsc::Sender<()>) -> Vec<u64> {
    let mut reader = BufReader::new(stdout);
    let mut acks = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return acks,
            Ok(_) => {}
        }
        let Some(complete) = line.strip_suffix(b"\n") else {
            return acks;
        };
        // libtest prints its own lines around the child test; only acknowledgements matter.
        let Some(id) =
            std::str::from_utf8(complete).ok().and_then(|text| text.strip_prefix(ACK_PREFIX))
        else {
            continue;
        };
        let id = id.parse().unwrap_or_else(|_| panic!("malformed acknowledgement line {id:?}"));
        if acks.is_empty() {
            // The parent may have given up waiting already; then nobody listens.
            let _ = first_ack.send(());
        }
        acks.push(id);
    }
}

/// Reopens the store (running recovery, as a restarted Keel would) and checks that every id in
/// `acked` is in every transaction tree and that each tree holds exactly the same keys.
fn check_store(dir: &Path, acked: &BTreeSet<u64>, round: u64) {
    let store = Store::open(&StoreConfig::new(dir))
        .unwrap_or_else(|e| panic!("round {round}: the store does not reopen after SIGKILL: {e}"));
    let mut key_sets = Vec::new();
    for name in TX_TREES {
        let tree = store.tree(name).expect("open tree");
        let mut ids = BTreeSet::new();
        for entry in tree.iter() {
            let (key, value) = entry.expect("read tree entry");
            let id = key_id(&key).expect("a key written as an id");
            assert_eq!(
                value.as_ref(),
                row(name, id).as_slice(),
                "round {round}: {name}/{id} holds a value nobody wrote"
            );
            ids.insert(id);
        }
        let lost: Vec<_> = acked.difference(&ids).take(10).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {name} lost acknowledged ids (first ones: {lost:?})"
        );
        key_sets.push((name, ids));
    }
    let (first_name, first_ids) = &key_sets[0];
    for (name, ids) in &key_sets[1..] {
        let half: Vec<_> = first_ids.symmetric_difference(ids).take(10).collect();
        assert!(
            half.is_empty(),
            "round {round}: transactions half applied; ids in only one of {first_name} and \
             {name}: {half:?}"
        );
    }
}

/// What the writer stores under `id` in tree `name`.
fn row(name: &str, id: u64) -> Vec<u8> {
    format!("{name}:{id}").into_bytes()
}

/// Kill delays spread over [`KILL_AFTER_MIN`, `KILL_AFTER_MAX`), different on every run so that
/// kills keep landing at new points of the write path.
struct KillDelays {
    state: u64,
}

impl KillDelays {
    fn new() -> Self {
        Self { state: RandomState::new().hash_one("keel durability") }
    }

    fn next(&mut self) -> Duration {
        // splitmix64: plenty for spreading delays, and it needs no dependency.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let span = (KILL_AFTER_MAX - KILL_AFTER_MIN).as_millis() as u64;
        KILL_AFTER_MIN + Duration::from_millis(z % span)
    }
}

/// The writer. Does nothing unless started by the test above with [`CHILD_DIR_ENV`] set; then it
/// writes until it is killed.
#[test]
#[ignore = "run in a child process by the durability test, which kills it"]
fn child_writes_and_acknowledges_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(write_until_killed(PathBuf::from(dir)));
    // Reaching this line means a writer failed: report it, and the parent sees a normal exit
    // where it expected SIGKILL.
    panic!("the writer stopped before it was killed: {result:?}");
}

/// Why the writer stopped.
type WriterError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the store and runs [`WRITERS`] writer tasks until one of them fails.
async fn write_until_killed(dir: PathBuf) -> Result<(), WriterError> {
    let store = Store::open(&StoreConfig::new(dir))?;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        writers.spawn(write_forever(store.clone()));
    }
    match writers.join_next().await {
        Some(result) => result?,
        None => Ok(()),
    }
}

/// One writer: new id, one transaction over [`TX_TREES`], group commit, then the acknowledgement.
async fn write_forever(store: Store) -> Result<(), WriterError> {
    let tx_trees = TX_TREES.iter().map(|name| store.tree(name)).collect::<Result<Vec<_>, _>>()?;
    let tx_refs: Vec<&sled::Tree> = tx_trees.iter().collect();
    loop {
        let id = store.next_id()?;
        store.transaction(&tx_refs, |txs| {
            for (tx, name) in txs.iter().zip(TX_TREES) {
                tx.insert(&id_key(id), row(name, id))?;
            }
            Ok(())
        })?;
        store.commit().await?;
        acknowledge(id)?;
    }
}

/// Tells the parent that `id` is durable: one whole line, flushed at once.
fn acknowledge(id: u64) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ACK_PREFIX}{id}")?;
    stdout.flush()
}
