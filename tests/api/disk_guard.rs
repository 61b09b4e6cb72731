//! The disk guard on a real small file system: a tmpfs filled until writes fail. Below
//! `store.min_free_bytes` Keel refuses new orders and bot starts with 507, pauses its bots
//! (their open orders stay live and can still be canceled) and says so in `/health/ready`; it
//! recovers when space returns. A disk filled to the last byte refuses writes but never corrupts
//! the store: every acknowledged change is there when Keel starts again with room.
//!
//! Mounting needs root (as here and in CI); where the mount fails the test says it was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel_testkit::{
    PASSWORD, TestApp, Tokens, assert_error, eventually, quiet_bot, spawn_app_with,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Size of the file system the store lives on.
const TMPFS_BYTES: u64 = 64 * 1024 * 1024;
/// The floor under test.
const FLOOR: u64 = 16 * 1024 * 1024;

/// A tmpfs mounted for one test, unmounted when dropped (lazily, so a failed test still lets go).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_BYTES}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes zeros into `path` until the file system refuses (ENOSPC), then gives back `leave`
/// bytes; returns the file's size.
fn fill_until_writes_fail(path: &Path, leave: u64) -> u64 {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = file.metadata().unwrap().len();
    let error = loop {
        match file.write(&chunk) {
            Ok(0) => break std::io::Error::other("wrote nothing"),
            Ok(n) => written += n as u64,
            Err(err) => break err,
        }
    };
    assert_eq!(error.raw_os_error(), Some(28), "the fill stops at ENOSPC: {error}");
    let size = written.saturating_sub(leave);
    file.set_len(size).unwrap();
    size
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().nth(1).unwrap().trim().parse().unwrap()
}

fn store_dir(mount: &Path) -> PathBuf {
    mount.join("data")
}

async fn bot_status(app: &TestApp, user: &Tokens, bot: u64) -> Value {
    app.get_json(&format!("/api/v1/bots/{bot}"), &user.access).await
}

/// A resting buy far below the market: stays open.
async fn rest_order(app: &TestApp, user: &Tokens, bot: u64) -> reqwest::Response {
    let limit = json!({"side": "buy", "qty": "0.01", "type": "limit", "price": "1000.00"});
    app.send(Method::POST, &format!("/api/v1/bots/{bot}/orders"), Some(&limit), &user.access).await
}

#[actix_web::test]
async fn below_the_floor_keel_refuses_with_507_pauses_bots_and_recovers_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount() else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    let data = store_dir(tmpfs.path());
    let app = spawn_app_with(|s| {
        s.store.path = data.clone();
        s.store.min_free_bytes = FLOOR;
    })
    .await;
    let user = app.register("disk@example.com").await;
    let bot = app.running_bot(&user).await;
    let idle = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    let res = rest_order(&app, &user, bot).await;
    assert_eq!(res.status().as_u16(), 200);
    let open: Value = res.json().await.unwrap();

    // Fill the file system until a write fails, then give back half the floor.
    let filler = tmpfs.path().join("filler");
    fill_until_writes_fail(&filler, FLOOR / 2);
    assert!(free_bytes(tmpfs.path()) < FLOOR);

    eventually(Duration::from_secs(10), "readiness reports the disk", || async {
        let res = app.get("/health/ready").await;
        let body: Value = res.json().await.unwrap();
        body["error"]["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|p| p["field"] == "store.disk"))
    })
    .await;
    let res = app.get("/health/ready").await;
    assert_error(res, 503, "NOT_READY").await;
    assert_error(rest_order(&app, &user, bot).await, 507, "INSUFFICIENT_STORAGE").await;
    assert_error(app.control(&user.access, idle, "start").await, 507, "INSUFFICIENT_STORAGE").await;
    eventually(Duration::from_secs(10), "the running bot is paused", || async {
        bot_status(&app, &user, bot).await["status"] == "paused"
    })
    .await;
    let paused = bot_status(&app, &user, bot).await;
    assert!(paused["status_reason"].as_str().unwrap().contains("min_free_bytes"), "{paused}");
    assert_error(app.control(&user.access, bot, "resume").await, 507, "INSUFFICIENT_STORAGE").await;
    // The open order was not orphaned: the paused bot still holds it, and it can be canceled
    // (written into the reserve).
    let cancel = format!("/api/v1/bots/{bot}/orders/{}", open["id"]);
    let res = app.send(Method::DELETE, &cancel, None, &user.access).await;
    assert_eq!(res.status().as_u16(), 200, "cancel below the floor");

    // Space returns: ready again, the bot the guard paused runs again, orders are taken.
    std::fs::remove_file(&filler).unwrap();
    eventually(Duration::from_secs(10), "ready once space is back", || async {
        app.get("/health/ready").await.status().as_u16() == 200
    })
    .await;
    eventually(Duration::from_secs(10), "the bot resumes", || async {
        let record = bot_status(&app, &user, bot).await;
        record["status"] == "running" && record["status_reason"].is_null()
    })
    .await;
    assert_eq!(rest_order(&app, &user, bot).await.status().as_u16(), 200);
    assert_eq!(app.control(&user.access, idle, "start").await.status().as_u16(), 200);
    app.stop.stop();
}

#[actix_web::test]
async fn a_disk_filled_to_the_last_byte_never_corrupts_the_store() {
    let Some(tmpfs) = Tmpfs::mount() else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    let data = store_dir(tmpfs.path());
    // No floor: the writes themselves must meet the full disk.
    let adjust = move |s: &mut keel::configuration::Settings| {
        s.store.path = data.clone();
        s.store.min_free_bytes = 0;
    };
    let app = spawn_app_with(adjust.clone()).await;
    let user = app.register("full@example.com").await;
    let bot = app.running_bot(&user).await;
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let res = rest_order(&app, &user, bot).await;
        assert_eq!(res.status().as_u16(), 200);
        acknowledged.push(res.json::<Value>().await.unwrap()["id"].as_u64().unwrap());
    }

    let filler = tmpfs.path().join("filler");
    fill_until_writes_fail(&filler, 0);
    // Keep writing: whatever is answered 2xx must be there after the restart; the rest must be
    // refused in the error shape, never a hang or a panic.
    let mut refused = 0;
    for _ in 0..20 {
        // Top the disk up again: sled may have taken a block the filler gave back.
        let _ = fill_until_writes_fail(&filler, 0);
        let res = rest_order(&app, &user, bot).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 200 {
            acknowledged.push(body["id"].as_u64().unwrap());
        } else {
            assert!(body["error"]["code"].is_string(), "{status}: {body}");
            refused += 1;
        }
    }
    assert!(refused > 0, "a full disk refused no write");
    let res = app.get("/health/ready").await;
    assert_eq!(res.status().as_u16(), 503, "not ready on a full disk");

    // Space returns; Keel starts again on the same files with everything it acknowledged.
    std::fs::remove_file(&filler).unwrap();
    let app = app.restart_with(adjust).await;
    eventually(Duration::from_secs(20), "ready after the restart", || async {
        app.get("/health/ready").await.status().as_u16() == 200
    })
    .await;
    let token = app.token("full@example.com", PASSWORD).await;
    let user = Tokens { access: token, ..user };
    let orders = app.all_pages(&user, bot, "orders").await;
    for id in &acknowledged {
        assert!(orders.iter().any(|o| o["id"] == *id), "acknowledged order {id} is gone");
    }
    assert_eq!(rest_order(&app, &user, bot).await.status().as_u16(), 200);
    app.stop.stop();
}
