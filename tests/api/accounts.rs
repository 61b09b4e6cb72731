//! Exchange accounts: stored encrypted, listed with a hint, scoped to their owner.

use keel_testkit::{TestApp, assert_error, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

pub const API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
pub const API_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

fn account(label: &str) -> Value {
    json!({"venue": "binance", "label": label, "api_key": API_KEY, "api_secret": API_SECRET, "testnet": true})
}

async fn create(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.post_json("/api/v1/exchange-accounts", body, Some(token)).await
}

#[actix_web::test]
async fn an_account_is_created_listed_with_a_hint_and_deleted() {
    let app = spawn_app().await;
    let user = app.register("acc@example.com").await;
    let res = create(&app, &user.access, &account("main")).await;
    assert_eq!(res.status().as_u16(), 201);
    let text = res.text().await.unwrap();
    assert!(!text.contains(API_SECRET) && !text.contains(API_KEY), "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["api_key_hint"], "vmPU…Eh8A");
    assert_eq!(created["testnet"], true);

    let res = app.call(Method::GET, "/api/v1/exchange-accounts", Some(&user.access)).await;
    let text = res.text().await.unwrap();
    assert!(!text.contains(API_SECRET) && !text.contains(API_KEY), "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["label"], "main");

    let id = created["id"].as_u64().unwrap();
    let path = format!("/api/v1/exchange-accounts/{id}");
    assert_eq!(app.call(Method::DELETE, &path, Some(&user.access)).await.status().as_u16(), 204);
    let again = app.call(Method::DELETE, &path, Some(&user.access)).await;
    assert_error(again, 404, "EXCHANGE_ACCOUNT_NOT_FOUND").await;
}

#[actix_web::test]
async fn invalid_accounts_get_field_errors() {
    let app = spawn_app().await;
    let user = app.register("val@example.com").await;
    let cases = [
        (json!({"venue": "kraken", "label": "x", "api_key": "k", "api_secret": "s"}), "venue"),
        (json!({"venue": "sim", "label": "x", "api_key": "k", "api_secret": "s"}), "venue"),
        (json!({"venue": "binance", "label": "", "api_key": "k", "api_secret": "s"}), "label"),
        (
            json!({"venue": "binance", "label": "x".repeat(65), "api_key": "k", "api_secret": "s"}),
            "label",
        ),
        (json!({"venue": "binance", "label": "x", "api_key": "", "api_secret": "s"}), "api_key"),
        (
            json!({"venue": "binance", "label": "x", "api_key": "has space", "api_secret": "s"}),
            "api_key",
        ),
        (
            json!({"venue": "binance", "label": "x", "api_key": "k", "api_secret": "s".repeat(513)}),
            "api_secret",
        ),
        // A missing or mistyped field is named, not just "body".
        (json!({"venue": "binance", "label": "x", "api_key": "k"}), "api_secret"),
        (json!({"venue": "binance", "label": "x", "api_key": 12, "api_secret": "s"}), "api_key"),
    ];
    for (body, field) in cases {
        let error =
            assert_error(create(&app, &user.access, &body).await, 422, "VALIDATION_FAILED").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
        assert!(!error.to_string().contains("sssss"), "a secret was echoed: {error}");
    }
}

#[actix_web::test]
async fn another_users_account_answers_404_never_403() {
    let app = spawn_app().await;
    let alice = app.register("alice@example.com").await;
    let mallory = app.register("mallory@example.com").await;
    let created: Value = create(&app, &alice.access, &account("alice")).await.json().await.unwrap();
    let id = created["id"].as_u64().unwrap();
    let path = format!("/api/v1/exchange-accounts/{id}");
    let stolen = app.call(Method::DELETE, &path, Some(&mallory.access)).await;
    let theirs = assert_error(stolen, 404, "EXCHANGE_ACCOUNT_NOT_FOUND").await;
    let missing =
        app.call(Method::DELETE, "/api/v1/exchange-accounts/999999", Some(&mallory.access)).await;
    let nothing = assert_error(missing, 404, "EXCHANGE_ACCOUNT_NOT_FOUND").await;
    assert_eq!(theirs["message"], nothing["message"], "no existence oracle");
    let listed: Value = app
        .call(Method::GET, "/api/v1/exchange-accounts", Some(&mallory.access))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
    // Alice still has it.
    let listed: Value = app
        .call(Method::GET, "/api/v1/exchange-accounts", Some(&alice.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let bad_id = app
        .call(Method::DELETE, "/api/v1/exchange-accounts/not-a-number", Some(&alice.access))
        .await;
    assert_error(bad_id, 404, "NOT_FOUND").await;
}

#[actix_web::test]
async fn the_secret_never_lands_in_the_data_directory_in_plain_text() {
    let app = spawn_app().await;
    let user = app.register("disk@example.com").await;
    for label in ["one", "two"] {
        assert_eq!(create(&app, &user.access, &account(label)).await.status().as_u16(), 201);
    }
    // The 201s came after a flush, so everything is on disk now. Stop the app to be sure the
    // store's files are complete, then search every byte of every file.
    app.stop.stop();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut files = 0;
    let mut stack = vec![app.data_dir.path().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for needle in [API_SECRET, API_KEY] {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "{} holds a plaintext credential", path.display());
            }
        }
    }
    assert!(files >= 3, "the search looked at {files} files only");
}

#[actix_web::test]
async fn deleting_the_account_deletes_its_exchange_accounts() {
    let app = spawn_app().await;
    let user = app.register("gone@example.com").await;
    create(&app, &user.access, &account("main")).await;
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/me", Some(&user.access)).await.status().as_u16(),
        200
    );
    let again = app.register("gone@example.com").await;
    let listed: Value = app
        .call(Method::GET, "/api/v1/exchange-accounts", Some(&again.access))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
}
