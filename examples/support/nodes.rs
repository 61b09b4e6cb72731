//! Keel nodes as child processes of a load example: started on a free loopback port with a data
//! directory and a log of their own under a work directory, waited for, signalled and stopped.

#![allow(dead_code)] // each example uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The JWT secret every node of a load run shares (so a token is good on any node).
pub const JWT_SECRET: &str = "load-run-only-secret-0123456789abcdef";
/// The vault master key every node of a load run shares.
pub const MASTER_KEY: &str = "NRyji4JgfCAvZo6o4zsyrAPmkJFbr/b9KoL0sE/rpow=";
/// Longest a node may take to answer `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a node may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The command-line options every run of Keel nodes takes.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The keel binary.
    #[arg(long)]
    pub keel_bin: PathBuf,
    /// Where the nodes' data directories and logs go (created; left for the caller to remove).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// The NATS server (JetStream on), on loopback.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// What every cluster run does first: TLS's crypto provider, the work directory, an HTTP client
/// with `timeout`, and the run's own cluster name, `keelload_<pid>_<ms>` (so nothing else on the
/// NATS or Postgres it uses is touched).
///
/// # Errors
/// The directory or the client could not be made.
pub fn prepare(args: &NodeArgs, timeout: Duration) -> anyhow::Result<(reqwest::Client, String)> {
    keel_venues::tls::install_crypto_provider();
    std::fs::create_dir_all(&args.work_dir)?;
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    Ok((http, format!("keelload_{}_{nonce}", std::process::id())))
}

/// One Keel node.
pub struct Node {
    /// Its name (its `cluster.node_id`, and the name of its data directory and log).
    pub name: &'static str,
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Node {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `keel_bin serve` as node `name`: loopback, a free port, `work_dir/name` as its data
/// directory (0700), `work_dir/name.log` for its output, rate limits out of the way, and `env`
/// on top. Its pid goes to `work_dir/name.pid`, so a script can stop it whatever happens here.
///
/// # Errors
/// The directory, the log or the process could not be made.
pub fn start(
    keel_bin: &Path,
    work_dir: &Path,
    name: &'static str,
    env: &[(&str, &str)],
) -> anyhow::Result<Node> {
    let data = work_dir.join(name);
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&data)?;
    let port = free_port()?;
    let log = std::fs::File::create(work_dir.join(format!("{name}.log")))?;
    let mut command = Command::new(keel_bin);
    command
        .arg("serve")
        .env_remove("RUST_LOG")
        .env("KEEL__SERVER__HOST", "127.0.0.1")
        .env("KEEL__SERVER__PORT", port.to_string())
        .env("KEEL__STORE__PATH", &data)
        .env("KEEL__LOG__LEVEL", "info")
        .env("KEEL__ACCESS_LOG__OUTPUT", "off")
        .env("KEEL__AUTH__JWT_SECRET", JWT_SECRET)
        // One vault key for all nodes: a cluster node with another key refuses to start.
        .env("KEEL__VAULT__MASTER_KEY", MASTER_KEY)
        .env("KEEL__PROTECTION__PER_IP_PER_MINUTE", "100000")
        .env("KEEL__PROTECTION__PER_USER_PER_MINUTE", "100000")
        .env("KEEL__AUTH__REGISTRATIONS_PER_HOUR_PER_IP", "100000");
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", keel_bin.display()))?;
    std::fs::write(work_dir.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(Node { name, child, base: format!("http://127.0.0.1:{port}") })
}

/// A loopback port nothing listens on now (Keel fails to start, and says so, if it is taken
/// in between).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `node` answers `/health/ready` with 200.
///
/// # Errors
/// It exited, or was not ready in time.
pub async fn wait_ready(node: &mut Node, http: &reqwest::Client) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = node.child.try_wait()? {
            bail!("{} exited during start-up ({status}); see {}.log", node.name, node.name);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{} not ready within {READY_TIMEOUT:?}", node.name);
        }
        if let Ok(res) = http.get(format!("{}/health/ready", node.base)).send().await
            && res.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` (`-TERM`) to a child of this process (not yet reaped, so still Keel).
///
/// # Errors
/// `kill` failed.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill {signal} {pid} failed ({status})");
    }
    Ok(())
}

/// Waits for a signalled child to exit; how long it took.
///
/// # Errors
/// It did not exit in time.
pub async fn wait_exit(child: &mut Child) -> anyhow::Result<Duration> {
    let began = Instant::now();
    while began.elapsed() < STOP_TIMEOUT {
        if child.try_wait()?.is_some() {
            return Ok(began.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no exit within {STOP_TIMEOUT:?} of SIGTERM")
}

/// SIGTERM to a node still running, SIGKILL if it does not exit in time.
pub async fn stop_node(node: &mut Node) {
    if node.child.try_wait().ok().flatten().is_some() {
        return;
    }
    if signal(node.pid(), "-TERM").is_ok() && wait_exit(&mut node.child).await.is_ok() {
        return;
    }
    let _ = node.child.kill();
    let _ = node.child.wait();
}

/// The `p` quantile (0–1) of `sorted`: the sample at rank `p × (n − 1)`, rounded.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
