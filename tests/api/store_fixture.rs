//! On-disk compatibility: a data directory written by an earlier Keel opens with its users,
//! exchange accounts, bots, orders, fills and positions intact.
//!
//! `tests/fixtures/store-bdb1687/` was written by the binary at commit `bdb1687` (before the
//! crates were split) with `scripts/make-store-fixture.sh`; `expected.json` is what that binary's
//! API answered just before it stopped. Each fixture is copied into a fresh directory first, so
//! the committed one is never modified.

use std::path::Path;
use std::time::{Duration, Instant};

use keel_testkit::{TestApp, spawn_app_with};
use serde_json::Value;

/// Copies a directory tree (files and folders only; a fixture has nothing else).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Starts Keel on a copy of `tests/fixtures/<name>/data`, with the fixture's expectations.
async fn open_fixture(name: &str) -> (TestApp, Value) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    let app =
        spawn_app_with(|settings| copy_tree(&fixture.join("data"), &settings.store.path)).await;
    (app, expected)
}

/// A position without the fields that move with the market (the mark price and what follows
/// from it), which a reopened store cannot be expected to repeat.
fn booked(position: &Value) -> Value {
    let mut position = position.clone();
    for moving in ["mark_price", "unrealized_pnl", "exposure"] {
        position.as_object_mut().unwrap().remove(moving);
    }
    position
}

/// Fields the API gained after the fixture was written, with the value an old record reads back
/// with: they may appear in an answer where the fixture has none, and must hold exactly that.
const ADDED_SINCE: [(&str, &str); 3] =
    [("risk.max_leverage", "null"), ("risk.max_notional", "null"), ("funding", "\"0\"")];

/// `now` without the fields added since the fixture (checked to hold their default first).
fn as_served_then(now: &Value, was: &Value) -> Value {
    let mut now = now.clone();
    for (path, default) in ADDED_SINCE {
        let (parent, key) = path.rsplit_once('.').map_or(("", path), |(p, k)| (p, k));
        let (now_parent, was_parent) = if parent.is_empty() {
            (Some(&mut now), Some(was))
        } else {
            (now.get_mut(parent), was.get(parent))
        };
        let (Some(now_parent), Some(was_parent)) = (now_parent, was_parent) else { continue };
        if was_parent.get(key).is_none()
            && let Some(value) = now_parent.as_object_mut().and_then(|o| o.remove(key))
        {
            let expected: Value = serde_json::from_str(default).unwrap();
            assert_eq!(value, expected, "{path} of a record from before it");
        }
    }
    now
}

#[actix_web::test]
async fn a_data_directory_from_before_the_crate_split_opens_with_everything_intact() {
    let (app, expected) = open_fixture("store-bdb1687").await;
    let password = expected["password"].as_str().unwrap();
    let users = expected["users"].as_object().unwrap();
    assert_eq!(users.len(), 2);
    for (email, was) in users {
        let token = app.token(email, password).await;
        assert_eq!(app.get_json("/api/v1/me", &token).await, was["me"], "{email}: the user");
        assert_eq!(
            app.get_json("/api/v1/exchange-accounts", &token).await,
            was["exchange_accounts"],
            "{email}: the exchange accounts"
        );
        let bots = was["bots"]["items"].as_array().unwrap();
        assert!(!bots.is_empty());
        for bot in bots {
            let id = bot["id"].as_u64().unwrap();
            let path = format!("/api/v1/bots/{id}");
            // A bot that was running comes back running (its actor restarts on open).
            let deadline = Instant::now() + Duration::from_secs(10);
            let now = loop {
                let now = app.get_json(&path, &token).await;
                if now["status"] == bot["status"] || Instant::now() > deadline {
                    break now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(as_served_then(&now, bot), *bot, "{email}: bot {id}");
            let per_bot = &was["per_bot"][id.to_string()];
            for report in ["orders", "fills"] {
                assert_eq!(
                    app.get_json(&format!("{path}/{report}?limit=500"), &token).await,
                    per_bot[report],
                    "{email}: bot {id}'s {report}"
                );
            }
            let position = app.get_json(&format!("{path}/position"), &token).await;
            assert_eq!(
                booked(&as_served_then(&position, &per_bot["position"])),
                booked(&per_bot["position"]),
                "{email}: bot {id}'s position"
            );
        }
    }
    // The fixture really holds trading history, so the comparisons above compared something.
    let alice = &users["alice@example.com"]["per_bot"];
    let fills: usize = alice
        .as_object()
        .unwrap()
        .values()
        .map(|bot| bot["fills"]["items"].as_array().unwrap().len())
        .sum();
    assert!(fills >= 6, "the fixture has fills: {fills}");
}
