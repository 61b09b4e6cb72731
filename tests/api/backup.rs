//! `keel backup` against a running server and `keel restore` into a fresh store: the same users,
//! exchange accounts, bots, fills and positions come back; the admin endpoint is guarded.

use std::time::Duration;

use keel::backup_cli;
use keel::cli::{BackupArgs, RestoreArgs};
use keel::configuration::Settings;
use keel_actors::vault::MasterKey;
use keel_testkit::{PASSWORD, assert_error, quiet_bot, spawn_app_with, test_settings};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};

const ADMIN_TOKEN: &str = "admin-token-admin-token-admin-token!";

fn with_keys(settings: &mut Settings, master_key: &SecretString, store: Option<&std::path::Path>) {
    settings.admin.token = Some(SecretString::from(ADMIN_TOKEN));
    settings.vault.master_key = Some(master_key.clone());
    if let Some(store) = store {
        settings.store.path = store.to_owned();
    }
}

#[actix_web::test]
async fn a_backup_of_a_running_server_restores_users_accounts_bots_fills_and_positions() {
    let master_key = MasterKey::generate().unwrap().to_base64();
    let app = spawn_app_with(|s| with_keys(s, &master_key, None)).await;
    let user = app.register("backup@example.com").await;
    let account = json!({"venue": "binance", "label": "main", "api_key": API_KEY,
        "api_secret": API_SECRET, "testnet": true});
    let res = app.post_json("/api/v1/exchange-accounts", &account, Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 201);
    let bot = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    assert_eq!(app.control(&user.access, bot, "start").await.status().as_u16(), 200);
    let orders = format!("/api/v1/bots/{bot}/orders");
    let buy = json!({"side": "buy", "qty": "0.002", "type": "market"});
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.send(Method::POST, &orders, Some(&buy), &user.access).await;
        if res.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < until, "no market buy filled in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fills = app.get_json(&format!("/api/v1/bots/{bot}/fills"), &user.access).await;
    assert_eq!(fills["items"].as_array().unwrap().len(), 1, "{fills}");
    let position = app.get_json(&format!("/api/v1/bots/{bot}/position"), &user.access).await;

    // Online backup, as `keel backup FILE` does it.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("keel.backup");
    let mut client_settings = test_settings(work.path());
    with_keys(&mut client_settings, &master_key, None);
    let args = BackupArgs { file: file.clone(), offline: false, url: Some(app.address.clone()) };
    backup_cli::backup(&client_settings, &args).await.unwrap();
    assert!(file.exists());
    // Nothing partial is left beside it.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);

    // A truncated copy is refused and restores nothing.
    let bytes = std::fs::read(&file).unwrap();
    let truncated = work.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let bad = RestoreArgs { file: truncated, force: false, store: Some(work.path().join("never")) };
    let err = backup_cli::restore(&client_settings, &bad).unwrap_err();
    assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    assert!(!work.path().join("never").exists());

    // Restoring over the running server's store is refused: it is in use.
    let busy =
        RestoreArgs { file: file.clone(), force: true, store: Some(app.data_dir.path().into()) };
    let err = backup_cli::restore(&client_settings, &busy).unwrap_err();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");

    // Restore into a fresh directory and start Keel on it.
    let restored = work.path().join("restored");
    let args = RestoreArgs { file: file.clone(), force: false, store: Some(restored.clone()) };
    backup_cli::restore(&client_settings, &args).unwrap();
    app.stop.stop();
    let copy = spawn_app_with(|s| with_keys(s, &master_key, Some(&restored))).await;
    let res = copy.login("backup@example.com", PASSWORD).await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let me = copy.get_json("/api/v1/me", &token).await;
    assert_eq!(me["id"].as_u64(), Some(user.user_id), "{me}");
    let accounts = copy.get_json("/api/v1/exchange-accounts", &token).await;
    assert_eq!(accounts["items"][0]["api_key_hint"], "vmPU…Eh8A", "{accounts}");
    let bots = copy.get_json("/api/v1/bots", &token).await;
    assert_eq!(bots["items"][0]["id"].as_u64(), Some(bot), "{bots}");
    let restored_fills = copy.get_json(&format!("/api/v1/bots/{bot}/fills"), &token).await;
    assert_eq!(restored_fills["items"], fills["items"]);
    let restored_position = copy.get_json(&format!("/api/v1/bots/{bot}/position"), &token).await;
    assert_eq!(restored_position["qty"], position["qty"], "{restored_position}");
    assert_eq!(restored_position["qty"], "0.002");
    // New records get ids the backup never had.
    let second = copy.create_bot(&token, &quiet_bot()).await["id"].as_u64().unwrap();
    assert!(second > bot);
    copy.stop.stop();
}

#[actix_web::test]
async fn the_backup_endpoint_needs_the_admin_token() {
    let master_key = MasterKey::generate().unwrap().to_base64();
    let app = spawn_app_with(|s| with_keys(s, &master_key, None)).await;
    let url = format!("{}/admin/backup", app.address);
    let res = app.client.get(&url).send().await.unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    let res = app.client.get(&url).bearer_auth("wrong-token").send().await.unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    // A user's access token is not an admin token.
    let user = app.register("not-admin@example.com").await;
    let res = app.client.get(&url).bearer_auth(&user.access).send().await.unwrap();
    assert_error(res, 401, "UNAUTHORIZED").await;
    let res = app.client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.bytes().await.unwrap().starts_with(b"KEELBKUP"));
    app.stop.stop();

    // Without admin.token the endpoint is off.
    let app = spawn_app_with(|_| {}).await;
    let res = app.client.get(format!("{}/admin/backup", app.address)).send().await;
    assert_error(res.unwrap(), 403, "FORBIDDEN").await;
}
