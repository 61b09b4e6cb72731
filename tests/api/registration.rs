//! Registration modes (`auth.registration`: open, invite, closed), operator invites, and the
//! per-IP registration rate.

use keel::configuration::Registration;
use keel_testkit::{PASSWORD, TestApp, assert_error, spawn_app_with};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-admin-token-admin-token!";

async fn register(app: &TestApp, email: &str, invite: Option<&str>) -> reqwest::Response {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(invite) = invite {
        body["invite"] = json!(invite);
    }
    app.post_json("/api/v1/auth/register", &body, None).await
}

async fn invite(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(format!("{}/admin/invites", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[actix_web::test]
async fn a_closed_server_takes_no_registration() {
    let app = spawn_app_with(|s| s.auth.registration = Registration::Closed).await;
    assert_error(register(&app, "no@example.com", None).await, 403, "REGISTRATION_CLOSED").await;
}

#[actix_web::test]
async fn an_invite_only_server_takes_each_operator_invite_once() {
    let app = spawn_app_with(|s| {
        s.auth.registration = Registration::Invite;
        s.admin.token = Some(ADMIN_TOKEN.to_owned().into());
    })
    .await;
    assert_error(register(&app, "a@example.com", None).await, 403, "INVITE_REQUIRED").await;
    let guess = register(&app, "a@example.com", Some("kinv_guessed")).await;
    assert_error(guess, 403, "INVALID_INVITE").await;
    assert_eq!(invite(&app, None).await.status().as_u16(), 401);
    assert_eq!(
        invite(&app, Some("not-the-admin-token-at-all-xxxxxxx")).await.status().as_u16(),
        401
    );

    let res = invite(&app, Some(ADMIN_TOKEN)).await;
    assert_eq!(res.status().as_u16(), 201);
    let created: Value = res.json().await.unwrap();
    let token = created["invite"].as_str().unwrap().to_owned();
    assert!(created["expires_at"].as_str().is_some());
    // A registration that fails for another reason leaves the invite usable.
    let bad = json!({"email": "b@example.com", "password": "short", "invite": token});
    let res = app.post_json("/api/v1/auth/register", &bad, None).await;
    assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(register(&app, "b@example.com", Some(&token)).await.status().as_u16(), 201);
    let again = register(&app, "c@example.com", Some(&token)).await;
    assert_error(again, 403, "INVALID_INVITE").await;
}

#[actix_web::test]
async fn registrations_are_limited_per_ip() {
    let app = spawn_app_with(|s| s.auth.registrations_per_hour_per_ip = 2).await;
    assert_eq!(register(&app, "one@example.com", None).await.status().as_u16(), 201);
    assert_eq!(register(&app, "two@example.com", None).await.status().as_u16(), 201);
    let res = register(&app, "three@example.com", None).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "RATE_LIMITED").await;
    // Logging in is another budget.
    assert_eq!(app.login("one@example.com", PASSWORD).await.status().as_u16(), 200);
}
