//! PostgreSQL for tests: the URL from `KEEL_TEST_POSTGRES_URL`, a schema per test, and a
//! loopback TCP proxy in front of the server that a test can cut, restore, or make lose the
//! answer to a `COMMIT`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// Where the tests find PostgreSQL.
const URL_VAR: &str = "KEEL_TEST_POSTGRES_URL";

/// The URL, or `None` after saying why the test is skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    crate::service_url(URL_VAR, test)
}

/// A schema of the test's own in the test database, and a direct client to inspect it.
pub struct TestSchema {
    /// The schema's name, `keel_test_<random>`.
    pub name: String,
    /// A direct connection (not through any proxy).
    pub client: tokio_postgres::Client,
}

impl TestSchema {
    /// A fresh schema name and a client; the sink under test creates the schema.
    pub async fn new(url: &str) -> Self {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("the test connects to PostgreSQL");
        tokio::spawn(connection);
        let name = format!("keel_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self { name, client }
    }

    /// `SELECT count(*) FROM <schema>.<sql_after_from>`.
    pub async fn count(&self, sql_after_from: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.{sql_after_from}", self.name);
        self.client.query_one(&sql, &[]).await.unwrap().get(0)
    }

    /// Drops the schema and everything in it.
    pub async fn remove(self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        self.client.batch_execute(&sql).await.unwrap();
    }
}

/// A TCP proxy on 127.0.0.1 in front of PostgreSQL. `cut` closes every connection through it and
/// its listening socket (new connections are refused); `restore` listens again on the same port.
/// `lose_next_commit_answer` lets the next `COMMIT` through to Postgres but drops everything
/// Postgres says from then on, until `cut`: the sink cannot know that its batch was committed.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Set: the next client chunk holding `COMMIT` mutes the replies.
    arm_commit: Arc<AtomicBool>,
    /// Set: replies from Postgres are dropped.
    muted: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            upstream,
            tasks: Arc::default(),
            arm_commit: Arc::default(),
            muted: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, tasks) = (self.upstream, self.tasks.clone());
        let (arm, muted) = (self.arm_commit.clone(), self.muted.clone());
        let accept = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else { continue };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = Direction::Up { arm: arm.clone(), muted: muted.clone() };
                    let down = Direction::Down { muted: muted.clone() };
                    let up = tokio::spawn(pump(client_read, server_write, up));
                    let down = tokio::spawn(pump(server_read, client_write, down));
                    let mut tasks = tasks.lock().unwrap();
                    tasks.push(up.abort_handle());
                    tasks.push(down.abort_handle());
                }
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Drops every connection, stops listening, and stops losing answers.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        self.arm_commit.store(false, Ordering::SeqCst);
        self.muted.store(false, Ordering::SeqCst);
    }

    /// Lets the next `COMMIT` reach Postgres and loses its answer (and every answer after it).
    pub fn lose_next_commit_answer(&self) {
        self.arm_commit.store(true, Ordering::SeqCst);
    }

    /// Whether a `COMMIT` went through since [`Proxy::lose_next_commit_answer`].
    pub fn answers_lost(&self) -> bool {
        self.muted.load(Ordering::SeqCst)
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket.bind(self.addr).and_then(|()| socket.listen(128)) {
                Ok(listener) => return self.serve(listener),
                Err(err) => {
                    assert!(Instant::now() < until, "cannot listen on {} again: {err}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Which way a [`pump`] copies, and what it watches.
#[derive(Clone)]
enum Direction {
    /// Client to Postgres: when `arm` is set, a chunk holding `COMMIT` sets `muted` (before it
    /// is forwarded, so no part of the answer slips through).
    Up { arm: Arc<AtomicBool>, muted: Arc<AtomicBool> },
    /// Postgres to client: dropped while `muted` is set.
    Down { muted: Arc<AtomicBool> },
}

/// Copies one direction of a proxied connection until either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        match &direction {
            Direction::Up { arm, muted } => {
                if arm.load(Ordering::SeqCst) && chunk.windows(6).any(|w| w == b"COMMIT") {
                    muted.store(true, Ordering::SeqCst);
                    arm.store(false, Ordering::SeqCst);
                }
            }
            Direction::Down { muted } => {
                if muted.load(Ordering::SeqCst) {
                    continue;
                }
            }
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Where the TLS tests find the CA that signed the local server's certificate, and a CA that
/// signed nothing.
const TLS_CA_VAR: &str = "KEEL_TEST_POSTGRES_TLS_CA";
const TLS_OTHER_CA_VAR: &str = "KEEL_TEST_POSTGRES_TLS_OTHER_CA";

/// The database URL and both CA files, or `None` after saying why the test is skipped.
pub fn postgres_tls(test: &str) -> Option<(String, PathBuf, PathBuf)> {
    let url = postgres_url(test)?;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var(TLS_CA_VAR), var(TLS_OTHER_CA_VAR)) {
        (Some(ca), Some(other)) => Some((url, ca.into(), other.into())),
        _ => {
            eprintln!(
                "{test}: skipped: {TLS_CA_VAR} and {TLS_OTHER_CA_VAR} are not set (`.ci/run` \
                 gives the local server a certificate from its own CA and sets them)"
            );
            None
        }
    }
}

/// `url` with its host and port replaced by `addr` (key=value form, which the sink accepts).
pub fn via(url: &str, addr: SocketAddr) -> String {
    with_host(url, &addr.ip().to_string(), None, addr.port())
}

/// `url` in key=value form, connecting to `host` (at `hostaddr` when given: TLS then checks the
/// certificate against `host` while the socket goes to `hostaddr`) on `port`.
pub fn with_host(url: &str, host: &str, hostaddr: Option<IpAddr>, port: u16) -> String {
    let config: tokio_postgres::Config = url.parse().expect("KEEL_TEST_POSTGRES_URL parses");
    let mut out = format!("host={host} port={port}");
    if let Some(addr) = hostaddr {
        out.push_str(&format!(" hostaddr={addr}"));
    }
    if let Some(user) = config.get_user() {
        out.push_str(&format!(" user={user}"));
    }
    if let Some(password) = config.get_password() {
        out.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(" dbname={db}"));
    }
    out
}

/// The database's TCP address from its URL.
pub fn upstream(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("{URL_VAR} must name a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" { "127.0.0.1".to_owned() } else { host };
    format!("{host}:{port}").parse().expect("the test database is on an IP address")
}
