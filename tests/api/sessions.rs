//! Session lifetime: logout everywhere, password changes, revocation that survives a restart,
//! WebSockets closed within a second of their session ending, and account deletion that leaves
//! nothing of the account in the store.

use std::time::{Duration, Instant};

use keel_actors::store::{Store, StoreConfig, decode, id_key, trees};
use keel_testkit::{PASSWORD, TestApp, Tokens, assert_error, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::backtests::synth_csv;
use crate::ws::{connect, expect_closed, expect_type};

const NEW_PASSWORD: &str = "an entirely different passphrase";

async fn refresh_status(app: &TestApp, refresh: &str) -> u16 {
    let body = json!({"refresh_token": refresh});
    app.post_json("/api/v1/auth/refresh", &body, None).await.status().as_u16()
}

async fn second_session(app: &TestApp, email: &str, password: &str) -> Tokens {
    let res = app.login(email, password).await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    Tokens {
        user_id: 0,
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

#[actix_web::test]
async fn logout_all_ends_every_session_and_spares_other_users() {
    let app = spawn_app().await;
    let user = app.register("everywhere@example.com").await;
    let laptop = second_session(&app, "everywhere@example.com", PASSWORD).await;
    let other = app.register("bystander@example.com").await;

    let res = app.call(Method::POST, "/api/v1/auth/logout-all", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 204);
    for tokens in [&user, &laptop] {
        assert_eq!(app.me_status(&tokens.access).await, 401);
        assert_eq!(refresh_status(&app, &tokens.refresh).await, 401);
    }
    assert_eq!(app.me_status(&other.access).await, 200);
    assert_eq!(refresh_status(&app, &other.refresh).await, 200);
    // The password still works: a new session starts.
    assert_eq!(app.login("everywhere@example.com", PASSWORD).await.status().as_u16(), 200);
}

#[actix_web::test]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let app = spawn_app().await;
    let user = app.register("rotate@example.com").await;
    let phone = second_session(&app, "rotate@example.com", PASSWORD).await;

    let wrong =
        json!({"current_password": "not the password at all", "new_password": NEW_PASSWORD});
    let res = app.send(Method::POST, "/api/v1/me/password", Some(&wrong), &user.access).await;
    assert_error(res, 403, "WRONG_PASSWORD").await;
    let short = json!({"current_password": PASSWORD, "new_password": "short"});
    let res = app.send(Method::POST, "/api/v1/me/password", Some(&short), &user.access).await;
    let body = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(body["details"][0]["field"], "new_password");
    // Nothing changed so far.
    assert_eq!(app.me_status(&phone.access).await, 200);

    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let res = app.send(Method::POST, "/api/v1/me/password", Some(&change), &user.access).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(app.me_status(&user.access).await, 200, "the caller's session stays");
    assert_eq!(app.me_status(&phone.access).await, 401, "the others end");
    assert_eq!(refresh_status(&app, &phone.refresh).await, 401);
    assert_eq!(refresh_status(&app, &user.refresh).await, 200);
    assert_error(app.login("rotate@example.com", PASSWORD).await, 401, "UNAUTHORIZED").await;
    assert_eq!(app.login("rotate@example.com", NEW_PASSWORD).await.status().as_u16(), 200);
}

#[actix_web::test]
async fn a_revoked_session_stays_revoked_across_a_restart() {
    let app = spawn_app().await;
    let user = app.register("restart-out@example.com").await;
    let kept = second_session(&app, "restart-out@example.com", PASSWORD).await;
    let res = app.call(Method::POST, "/api/v1/auth/logout", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 204);
    let app = app.restart_with(|_| {}).await;
    assert_eq!(app.me_status(&user.access).await, 401, "a restart does not un-revoke");
    assert_eq!(refresh_status(&app, &user.refresh).await, 401);
    assert_eq!(app.me_status(&kept.access).await, 200);
}

/// Opens a WebSocket with `token` and waits for its `authenticated` frame.
async fn open_socket(app: &TestApp, token: &str) -> crate::ws::Socket {
    let mut socket = connect(app, Some(token)).await.unwrap();
    expect_type(&mut socket, "authenticated").await;
    socket
}

#[actix_web::test]
async fn websockets_of_a_revoked_session_close_within_a_second() {
    let app = spawn_app().await;
    let user = app.register("sockets@example.com").await;
    let tablet = second_session(&app, "sockets@example.com", PASSWORD).await;
    let mut mine = open_socket(&app, &user.access).await;
    let mut theirs = open_socket(&app, &tablet.access).await;

    // Logout closes the sockets of that session only.
    let started = Instant::now();
    let res = app.call(Method::POST, "/api/v1/auth/logout", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(expect_closed(&mut mine, Duration::from_secs(1)).await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // The other session's socket is still served.
    theirs
        .send(tokio_tungstenite::tungstenite::Message::Text(r#"{"op":"ping"}"#.into()))
        .await
        .unwrap();
    expect_type(&mut theirs, "pong").await;

    // A password change from a third session closes the rest.
    let third = second_session(&app, "sockets@example.com", PASSWORD).await;
    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let started = Instant::now();
    let res = app.send(Method::POST, "/api/v1/me/password", Some(&change), &third.access).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(expect_closed(&mut theirs, Duration::from_secs(1)).await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    // Account deletion closes the caller's own sockets too.
    let mut last = open_socket(&app, &third.access).await;
    let started = Instant::now();
    let res = app.call(Method::DELETE, "/api/v1/me", Some(&third.access)).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(expect_closed(&mut last, Duration::from_secs(1)).await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

use futures_util::SinkExt as _;

/// Every row of `tree` whose key starts with `prefix`.
fn rows_with_prefix(store: &Store, tree: &str, prefix: &[u8]) -> usize {
    store.tree(tree).unwrap().scan_prefix(prefix).count()
}

/// Rows of `tree` whose JSON value names `field: id`.
fn rows_naming(store: &Store, tree: &str, field: &str, id: u64) -> usize {
    store
        .tree(tree)
        .unwrap()
        .iter()
        .values()
        .filter(|raw| decode::<Value>(raw.as_ref().unwrap()).unwrap()[field] == json!(id))
        .count()
}

#[actix_web::test]
async fn deleting_an_account_stops_its_bots_and_leaves_nothing_of_it_in_the_store() {
    let app = spawn_app_with(|s| s.backtests.workers = 1).await;
    let user = app.register("leaving@example.com").await;
    let stays = app.register("staying@example.com").await;
    let account = json!({"venue": "binance", "label": "main", "testnet": true,
        "api_key": crate::accounts::API_KEY, "api_secret": crate::accounts::API_SECRET});
    let res = app.post_json("/api/v1/exchange-accounts", &account, Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 201);
    // A running bot with a resting order and a fill, an idle bot, an upload; and a bystander's bot.
    let running = app.running_bot(&user).await;
    app.market_buy(&user, running).await;
    let orders = format!("/api/v1/bots/{running}/orders");
    let limit = json!({"side": "buy", "qty": "0.01", "type": "limit", "price": "1000.00"});
    let res = app.send(Method::POST, &orders, Some(&limit), &user.access).await;
    assert_eq!(res.status().as_u16(), 200);
    let idle =
        app.create_bot(&user.access, &keel_testkit::quiet_bot()).await["id"].as_u64().unwrap();
    app.upload(&user.access, synth_csv(50)).await;
    let theirs = app.running_bot(&stays).await;
    let mut socket = open_socket(&app, &user.access).await;

    let res = app.call(Method::DELETE, "/api/v1/me", Some(&user.access)).await;
    let status = res.status().as_u16();
    let report: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["bots"]["bots_deleted"], 2, "{report}");
    assert_eq!(report["bots"]["orders_canceled"], 1, "{report}");
    assert_eq!(report["bots"]["cancel_failures"], json!([]), "{report}");
    assert_eq!(report["exchange_accounts_removed"], 1, "{report}");
    assert_eq!(report["sessions_ended"], 1, "{report}");
    assert_eq!(expect_closed(&mut socket, Duration::from_secs(1)).await, Some(4401));
    assert_eq!(app.me_status(&user.access).await, 401);
    assert_eq!(refresh_status(&app, &user.refresh).await, 401);
    // The other user's bot runs on.
    let listed = app.get_json("/api/v1/bots", &stays.access).await;
    assert_eq!(listed["items"][0]["id"], theirs);
    assert_eq!(listed["items"][0]["status"], "running");
    assert!(!app.data_dir.path().join("uploads").join(user.user_id.to_string()).exists());

    // Offline, every tree is searched for what was the account's.
    app.stop.stop();
    let config = StoreConfig::new(app.data_dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(&config) {
            Ok(store) => break store,
            Err(err) => {
                assert!(Instant::now() < deadline, "the store stays locked: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let uid = user.user_id;
    assert_eq!(rows_with_prefix(&store, trees::USERS, &id_key(uid)), 0, "users");
    assert_eq!(rows_with_prefix(&store, trees::USER_EMAILS, b"leaving@"), 0, "user_emails");
    assert_eq!(rows_with_prefix(&store, trees::SESSIONS, &id_key(uid)), 0, "sessions");
    assert_eq!(rows_naming(&store, trees::REFRESH_TOKENS, "user_id", uid), 0, "refresh_tokens");
    assert_eq!(rows_naming(&store, trees::CREDENTIALS, "user_id", uid), 0, "credentials");
    assert_eq!(rows_naming(&store, trees::BOTS, "user_id", uid), 0, "bots");
    for bot in [running, idle] {
        assert_eq!(rows_with_prefix(&store, trees::BOTS, &id_key(bot)), 0, "bots {bot}");
        assert_eq!(rows_with_prefix(&store, trees::POSITIONS, &id_key(bot)), 0, "positions");
        for tree in [trees::ORDERS, trees::FILLS, trees::EVENTS, trees::OPEN_ORDERS] {
            assert_eq!(rows_with_prefix(&store, tree, &id_key(bot)), 0, "{tree} of bot {bot}");
        }
    }
    // The bystander's rows are all there.
    assert_eq!(rows_with_prefix(&store, trees::USERS, &id_key(stays.user_id)), 1);
    assert_eq!(rows_with_prefix(&store, trees::BOTS, &id_key(theirs)), 1);
}

/// `keel admin reset-password` on the stopped Keel's store, retried while the store is still
/// being released.
async fn reset(
    app: &TestApp,
    email: &str,
    password: Option<&str>,
) -> anyhow::Result<keel::admin_cli::Reset> {
    let settings = keel_testkit::test_settings(app.data_dir.path());
    let args = ResetPasswordArgs { email: email.into(), password_stdin: false, store: None };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let given = password.map(|p| secrecy::SecretString::from(p.to_owned()));
        match keel::admin_cli::reset_password(&settings, &args, given) {
            Err(err) if format!("{err:#}").contains("lock") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

use keel::cli::ResetPasswordArgs;

#[actix_web::test]
async fn an_operator_password_reset_ends_every_session_of_the_account() {
    let app = spawn_app().await;
    let user = app.register("forgot@example.com").await;
    let laptop = second_session(&app, "forgot@example.com", PASSWORD).await;
    let other = app.register("unaffected@example.com").await;
    app.stop.stop();

    let err = reset(&app, "nobody@example.com", Some(NEW_PASSWORD)).await.unwrap_err();
    assert!(format!("{err:#}").contains("no account"), "{err:#}");
    let err = reset(&app, "forgot@example.com", Some("short")).await.unwrap_err();
    assert!(format!("{err:#}").contains("at least 12"), "{err:#}");
    let done = reset(&app, " Forgot@Example.com ", None).await.unwrap();
    assert_eq!(done.user_id, user.user_id);
    assert_eq!(done.sessions_ended, 2);
    let generated = done.generated.expect("a password is generated without --password-stdin");

    let app = app.restart_with(|_| {}).await;
    for tokens in [&user, &laptop] {
        assert_eq!(app.me_status(&tokens.access).await, 401);
        assert_eq!(refresh_status(&app, &tokens.refresh).await, 401);
    }
    assert_eq!(app.me_status(&other.access).await, 200);
    assert_error(app.login("forgot@example.com", PASSWORD).await, 401, "UNAUTHORIZED").await;
    use secrecy::ExposeSecret as _;
    let res = app.login("forgot@example.com", generated.expose_secret()).await;
    assert_eq!(res.status().as_u16(), 200);
}
