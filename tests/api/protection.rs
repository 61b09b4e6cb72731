//! No `/api/v1` route ships unprotected: walk the one route table.

use keel::http::{API_PREFIX, Access, api_routes};
use keel_testkit::{assert_error, spawn_app};
use reqwest::Method;

/// Routes anyone may call. Adding to this list is a security decision: review it as one.
const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("GET", "/openapi.json"),
];

pub(crate) fn concrete(path: &str) -> String {
    // Every `{param}` becomes 1: the request must be refused before the id matters.
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push('1');
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

#[actix_web::test]
async fn every_api_route_but_the_public_allowlist_answers_401_without_a_token() {
    let app = spawn_app().await;
    let routes = api_routes();
    assert!(routes.len() >= 12, "the route table is suspiciously small: {routes:?}");
    for route in &routes {
        let declared_public = route.access == Access::Public;
        let allowlisted = PUBLIC.contains(&(route.method.as_str(), route.path));
        assert_eq!(declared_public, allowlisted, "{route:?}: Access and the allowlist disagree");
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let url = format!("{}{API_PREFIX}{}", app.address, concrete(route.path));
        for token in [None, Some("garbage"), Some("krt_not-an-access-token")] {
            let mut req = app.client.request(method.clone(), &url).json(&serde_json::json!({}));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let res = req.send().await.unwrap();
            if allowlisted {
                assert_ne!(res.status().as_u16(), 401, "{route:?} is public");
            } else {
                assert_error(res, 401, "UNAUTHORIZED").await;
            }
        }
    }
}

#[actix_web::test]
async fn api_responses_carry_security_headers_and_no_store() {
    let app = keel_testkit::spawn_app_with(|s| s.protection.hsts = true).await;
    for path in ["/api/v1/me", "/health/live", "/api/v1/nowhere"] {
        let res = app.get(path).await;
        let headers = res.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert!(headers["strict-transport-security"].to_str().unwrap().contains("max-age="));
        if path.starts_with("/api/") {
            assert_eq!(headers["cache-control"], "no-store", "{path}");
        }
    }
}

#[actix_web::test]
async fn rate_limits_are_per_ip_and_per_user_and_trust_only_listed_proxies() {
    let app = keel_testkit::spawn_app_with(|s| {
        s.protection.per_ip_per_minute = 3;
        s.protection.per_user_per_minute = 5;
        s.protection.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // Behind the trusted proxy (loopback), each forwarded client has its own budget.
    let call = |ip: &'static str| {
        app.client.get(format!("{}/api/v1/me", app.address)).header("x-forwarded-for", ip).send()
    };
    for _ in 0..3 {
        assert_eq!(call("203.0.113.7").await.unwrap().status().as_u16(), 401);
    }
    let limited = call("203.0.113.7").await.unwrap();
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "Retry-After {wait}");
    assert_error(limited, 429, "RATE_LIMITED").await;
    assert_eq!(call("203.0.113.8").await.unwrap().status().as_u16(), 401, "another client");
    // Spoofing the proxy's own address gets no fresh budget: the right-most untrusted hop counts.
    let spoofed = app
        .client
        .get(format!("{}/api/v1/me", app.address))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status().as_u16(), 429);
    // Health checks are never limited.
    for _ in 0..10 {
        assert_eq!(app.get("/health/live").await.status().as_u16(), 200);
    }
}

#[actix_web::test]
async fn an_untrusted_peer_cannot_pick_its_address_and_users_have_their_own_budget() {
    let app = keel_testkit::spawn_app_with(|s| {
        s.protection.per_ip_per_minute = 100;
        s.protection.per_user_per_minute = 3;
    })
    .await;
    let user = app.register("limits@example.com").await;
    for _ in 0..3 {
        let res = app.call(Method::GET, "/api/v1/me", Some(&user.access)).await;
        assert_eq!(res.status().as_u16(), 200);
    }
    assert_error(
        app.call(Method::GET, "/api/v1/me", Some(&user.access)).await,
        429,
        "RATE_LIMITED",
    )
    .await;
    // No proxy is trusted here, so X-Forwarded-For changes nothing for anonymous callers either.
    let app = keel_testkit::spawn_app_with(|s| s.protection.per_ip_per_minute = 2).await;
    for ip in ["192.0.2.1", "192.0.2.2"] {
        let res =
            app.client.get(format!("{}/api/v1/me", app.address)).header("x-forwarded-for", ip);
        assert_eq!(res.send().await.unwrap().status().as_u16(), 401);
    }
    let res =
        app.client.get(format!("{}/api/v1/me", app.address)).header("x-forwarded-for", "192.0.2.3");
    assert_eq!(res.send().await.unwrap().status().as_u16(), 429);
}

#[actix_web::test]
async fn cors_allows_only_configured_origins_in_production_style_settings() {
    let app = keel_testkit::spawn_app_with(|s| {
        s.protection.cors_allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/api/v1/me", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}
