//! Every way of forging or bending an access token gets 401.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use keel_testkit::{JWT_SECRET, TestApp, Tokens, assert_error, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// The claims of `token`, decoded without checking anything.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

async fn assert_refused(app: &TestApp, token: &str, case: &str) {
    let res = app.call(Method::GET, "/api/v1/me", Some(token)).await;
    assert_eq!(res.status().as_u16(), 401, "{case} was accepted");
    assert_eq!(res.headers()["www-authenticate"], "Bearer", "{case}");
    assert_error(res, 401, "UNAUTHORIZED").await;
}

async fn setup() -> (TestApp, Tokens, Value) {
    let app = spawn_app().await;
    let user = app.register("victim@example.com").await;
    let claims = claims_of(&user.access);
    assert_eq!(app.me_status(&user.access).await, 200, "the genuine token works");
    (app, user, claims)
}

#[actix_web::test]
async fn a_properly_signed_token_with_our_claims_is_accepted() {
    // The control case: the forging helpers below produce valid tokens when nothing is bent.
    let (app, _, claims) = setup().await;
    assert_eq!(app.me_status(&sign(Algorithm::HS256, &claims)).await, 200);
    let mut within_leeway = claims.clone();
    within_leeway["exp"] = json!(now() - 5);
    assert_eq!(app.me_status(&sign(Algorithm::HS256, &within_leeway)).await, 200);
}

#[actix_web::test]
async fn alg_none_is_refused() {
    let (app, _, claims) = setup().await;
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.{}.", b64(&json!({"alg": alg, "typ": "JWT"})), b64(&claims));
        assert_refused(&app, &token, alg).await;
    }
}

#[actix_web::test]
async fn an_algorithm_swap_is_refused() {
    let (app, _, claims) = setup().await;
    assert_refused(&app, &sign(Algorithm::HS512, &claims), "HS512").await;
    assert_refused(&app, &sign(Algorithm::HS384, &claims), "HS384").await;
    // An RS256 header over an HMAC signature (the classic key-confusion attack).
    let genuine = sign(Algorithm::HS256, &claims);
    let signature = genuine.rsplit('.').next().unwrap();
    let forged =
        format!("{}.{}.{signature}", b64(&json!({"alg": "RS256", "typ": "JWT"})), b64(&claims));
    assert_refused(&app, &forged, "RS256 header").await;
}

#[actix_web::test]
async fn a_bad_signature_or_another_key_is_refused() {
    let (app, user, claims) = setup().await;
    let mut parts: Vec<String> = user.access.split('.').map(str::to_owned).collect();
    let sig = parts[2].clone();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    parts[2] = format!("{flipped}{}", &sig[1..]);
    assert_refused(&app, &parts.join("."), "flipped signature").await;
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
    )
    .unwrap();
    assert_refused(&app, &other_key, "other key").await;
}

#[actix_web::test]
async fn an_edited_payload_is_refused() {
    let (app, user, mut claims) = setup().await;
    let someone_else = app.register("someone@example.com").await;
    claims["sub"] = json!(someone_else.user_id.to_string());
    let parts: Vec<&str> = user.access.split('.').collect();
    let edited = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_refused(&app, &edited, "edited sub").await;
}

#[actix_web::test]
async fn expiry_problems_are_refused() {
    let (app, _, claims) = setup().await;
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 3600);
    assert_refused(&app, &sign(Algorithm::HS256, &expired), "expired beyond leeway").await;
    let mut as_string = claims.clone();
    as_string["exp"] = json!((now() + 600).to_string());
    assert_refused(&app, &sign(Algorithm::HS256, &as_string), "exp as a string").await;
    let mut missing = claims.clone();
    missing.as_object_mut().unwrap().remove("exp");
    assert_refused(&app, &sign(Algorithm::HS256, &missing), "missing exp").await;
}

#[actix_web::test]
async fn the_wrong_issuer_or_audience_is_refused() {
    let (app, _, claims) = setup().await;
    for (field, value) in [("iss", "someone-else"), ("aud", "another-api")] {
        let mut bent = claims.clone();
        bent[field] = json!(value);
        assert_refused(&app, &sign(Algorithm::HS256, &bent), field).await;
        let mut missing = claims.clone();
        missing.as_object_mut().unwrap().remove(field);
        assert_refused(&app, &sign(Algorithm::HS256, &missing), &format!("missing {field}")).await;
    }
}

#[actix_web::test]
async fn the_token_of_a_deleted_user_is_refused() {
    let (app, user, _) = setup().await;
    let res = app.call(Method::DELETE, "/api/v1/me", Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_refused(&app, &user.access, "deleted user").await;
    assert_error(
        app.login("victim@example.com", keel_testkit::PASSWORD).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[actix_web::test]
async fn a_refresh_token_is_not_an_access_token() {
    let (app, user, _) = setup().await;
    assert_refused(&app, &user.refresh, "refresh token as bearer").await;
}

#[actix_web::test]
async fn malformed_authorization_headers_are_refused() {
    let (app, user, _) = setup().await;
    for header in
        [user.access.clone(), format!("Basic {}", user.access), "Bearer".into(), "Bearer ".into()]
    {
        let res = app
            .client
            .get(format!("{}/api/v1/me", app.address))
            .header("authorization", header.clone())
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "UNAUTHORIZED").await;
    }
}

#[actix_web::test]
async fn a_token_stamped_in_the_future_or_without_iat_is_refused() {
    let (app, _, claims) = setup().await;
    // Keel's own tokens carry both, stamped now.
    assert_eq!(claims["nbf"], claims["iat"], "{claims}");
    assert!(claims["iat"].as_u64().unwrap().abs_diff(now()) <= 5, "{claims}");
    // Far beyond the default 30 s leeway.
    let later = json!(now() + 3600);
    let mut future_iat = claims.clone();
    future_iat["iat"] = later.clone();
    future_iat.as_object_mut().unwrap().remove("nbf");
    assert_refused(&app, &sign(Algorithm::HS256, &future_iat), "iat in the future").await;
    let mut future_nbf = claims.clone();
    future_nbf["nbf"] = later;
    assert_refused(&app, &sign(Algorithm::HS256, &future_nbf), "nbf in the future").await;
    let mut no_iat = claims.clone();
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_refused(&app, &sign(Algorithm::HS256, &no_iat), "no iat").await;
    // A few seconds of skew is within the leeway.
    let mut skewed = claims.clone();
    skewed["iat"] = json!(now() + 5);
    skewed["nbf"] = json!(now() + 5);
    assert_eq!(app.me_status(&sign(Algorithm::HS256, &skewed)).await, 200, "within the leeway");
}
