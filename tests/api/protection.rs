//! No `/api/v1` route ships unprotected: walk the one route table.

use keel::http::{API_PREFIX, Access, api_routes};
use reqwest::Method;

use crate::helpers::{assert_error, spawn_app};

/// Routes anyone may call. Adding to this list is a security decision: review it as one.
const PUBLIC: &[(&str, &str)] =
    &[("POST", "/auth/register"), ("POST", "/auth/login"), ("POST", "/auth/refresh")];

fn concrete(path: &str) -> String {
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
