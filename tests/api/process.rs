//! The real `keel` binary: CLI, configuration errors, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

pub(crate) fn keel(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(KEEL);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEEL__STORE__PATH", data_dir)
        .env("KEEL__LOG__FORMAT", "json")
        .stdin(Stdio::null());
    cmd
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(KEEL).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        keel(dir.path()).env("KEEL__SERVER__PORT", "9123").arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("port = 9123"), "{text}");
    assert!(text.contains("[store]"), "{text}");
}

#[test]
fn an_invalid_configuration_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, key) in [
        ("KEEL__SERVER__PORT", "http", "server.port"),
        ("KEEL__ENVIRONMENT", "prod", "environment"),
        ("KEEL__STORE__CACHE_CAPACITY_MB", "0", "store.cache_capacity_mb"),
    ] {
        for subcommand in [&["check-config"][..], &[][..]] {
            let out = keel(dir.path()).env(var, value).args(subcommand).output().unwrap();
            assert!(!out.status.success(), "{var}={value} was accepted");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(key), "{var}={value}: `{stderr}` does not name {key}");
        }
    }
}

#[test]
fn sigterm_stops_the_server_with_status_0_within_10_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = keel(dir.path())
        .env("KEEL__SERVER__PORT", port.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the log line that says it is listening.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(until.saturating_duration_since(Instant::now()));
        match line {
            Ok(line) if line.contains("Keel is listening") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("keel did not start listening");
            }
        }
    }
    // A request in flight: the server must still answer it.
    let health = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(health.is_ok(), "the port is open");

    let stopped_at = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if stopped_at.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("keel did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "exit status");
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("Keel stopped")), "{logs:#?}");
    // The port is released.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}
