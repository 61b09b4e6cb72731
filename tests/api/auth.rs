//! Register, login, refresh, logout, me.

use keel_testkit::{PASSWORD, assert_error, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

#[actix_web::test]
async fn register_then_me_shows_the_normalised_email() {
    let app = spawn_app().await;
    let res = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "  Ada@Example.COM ", "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["tokens"]["token_type"], "Bearer");
    assert_eq!(body["tokens"]["expires_in"], 900);
    let token = body["tokens"]["access_token"].as_str().unwrap();
    let me: Value = app.call(Method::GET, "/api/v1/me", Some(token)).await.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert!(me.get("password_hash").is_none());
}

#[actix_web::test]
async fn a_taken_email_is_a_conflict_whatever_its_case() {
    let app = spawn_app().await;
    app.register("dup@example.com").await;
    let res = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "DUP@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_error(res, 409, "CONFLICT").await;
}

#[actix_web::test]
async fn bad_registrations_get_field_errors() {
    let app = spawn_app().await;
    let cases = [
        (json!({"email": "nope", "password": PASSWORD}), vec!["email"]),
        (json!({"email": "a@example.com", "password": "short"}), vec!["password"]),
        (json!({"email": "a@example.com", "password": "x".repeat(129)}), vec!["password"]),
        (json!({"email": "", "password": ""}), vec!["email", "password"]),
    ];
    for (body, fields) in cases {
        let res = app.post_json("/api/v1/auth/register", &body, None).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        let got: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(got, fields, "{body}");
    }
}

#[actix_web::test]
async fn malformed_wrong_typed_oversized_and_untyped_bodies_get_the_error_shape() {
    let app = spawn_app().await;
    let path = "/api/v1/auth/register";
    let malformed = app.post_raw(path, "application/json", b"{\"email\": ".to_vec()).await;
    assert_error(malformed, 400, "MALFORMED_JSON").await;
    let wrong_type =
        app.post_raw(path, "application/json", br#"{"email": 5, "password": []}"#.to_vec()).await;
    assert_error(wrong_type, 422, "VALIDATION_FAILED").await;
    let unknown_field = app
        .post_json(
            path,
            &json!({"email": "a@example.com", "password": PASSWORD, "admin": true}),
            None,
        )
        .await;
    assert_error(unknown_field, 422, "VALIDATION_FAILED").await;
    let huge = app.post_raw(path, "application/json", vec![b' '; 200_000]).await;
    assert_error(huge, 413, "PAYLOAD_TOO_LARGE").await;
    let not_json = app.post_raw(path, "text/plain", b"hello".to_vec()).await;
    assert_error(not_json, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[actix_web::test]
async fn login_works_and_a_wrong_password_or_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("lin@example.com").await;
    let ok = app.login("LIN@example.com", PASSWORD).await;
    assert_eq!(ok.status().as_u16(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(app.me_status(body["access_token"].as_str().unwrap()).await, 200);

    let wrong =
        assert_error(app.login("lin@example.com", "not the password!").await, 401, "UNAUTHORIZED")
            .await;
    let unknown =
        assert_error(app.login("nobody@example.com", PASSWORD).await, 401, "UNAUTHORIZED").await;
    assert_eq!(wrong["message"], unknown["message"]);
}

#[actix_web::test]
async fn repeated_failed_logins_are_throttled_with_retry_after() {
    let app = spawn_app_with(|s| s.auth.login_attempts_per_minute_per_account = 3).await;
    app.register("brute@example.com").await;
    for _ in 0..3 {
        assert_eq!(app.login("brute@example.com", "wrong password!!").await.status().as_u16(), 401);
    }
    let res = app.login("brute@example.com", PASSWORD).await;
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_error(res, 429, "RATE_LIMITED").await;
}

#[actix_web::test]
async fn refresh_rotates_and_reusing_an_old_token_revokes_the_session() {
    let app = spawn_app().await;
    let user = app.register("rot@example.com").await;
    let res =
        app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": user.refresh}), None).await;
    assert_eq!(res.status().as_u16(), 200);
    let next: Value = res.json().await.unwrap();
    let next_access = next["access_token"].as_str().unwrap().to_owned();
    let next_refresh = next["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next_refresh, user.refresh);
    assert_eq!(app.me_status(&next_access).await, 200);

    // The old refresh token again: theft detected, the whole session dies.
    let reuse =
        app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": user.refresh}), None).await;
    assert_error(reuse, 401, "UNAUTHORIZED").await;
    let after =
        app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": next_refresh}), None).await;
    assert_error(after, 401, "UNAUTHORIZED").await;
    assert_eq!(app.me_status(&next_access).await, 401);
    assert_eq!(app.me_status(&user.access).await, 401);
    // Logging in again starts a fresh session.
    assert_eq!(app.login("rot@example.com", PASSWORD).await.status().as_u16(), 200);
}

#[actix_web::test]
async fn logout_ends_the_session_for_access_and_refresh_tokens() {
    let app = spawn_app().await;
    let user = app.register("out@example.com").await;
    let other_session: Value = app.login("out@example.com", PASSWORD).await.json().await.unwrap();
    let res = app.call(Method::POST, "/api/v1/auth/logout", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(app.me_status(&user.access).await, 401);
    let refresh =
        app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": user.refresh}), None).await;
    assert_error(refresh, 401, "UNAUTHORIZED").await;
    // Another device's session is untouched.
    assert_eq!(app.me_status(other_session["access_token"].as_str().unwrap()).await, 200);
}

#[actix_web::test]
async fn tokens_survive_a_restart_with_the_generated_development_secret() {
    // No configured secret: development generates one into the data directory and must reuse it.
    let first = spawn_app_with(|s| s.auth.jwt_secret = None).await;
    let user = first.register("persist@example.com").await;
    let second = first.restart_with(|s| s.auth.jwt_secret = None).await;
    let res = second.call(Method::GET, "/api/v1/me", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 200);
}
