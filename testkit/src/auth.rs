//! Accounts: registering users, logging in, and what a test needs to act as them.

use reqwest::Method;
use serde_json::Value;

use crate::TestApp;

/// A password that satisfies the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// A registered user's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// User id.
    pub user_id: u64,
    /// Bearer access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
}

impl TestApp {
    /// Registers `email` with [`PASSWORD`] and returns its tokens.
    pub async fn register(&self, email: &str) -> Tokens {
        let res = self
            .post_json(
                "/api/v1/auth/register",
                &serde_json::json!({"email": email, "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(res.status().as_u16(), 201, "register {email}");
        let body: Value = res.json().await.unwrap();
        Tokens {
            user_id: body["user"]["id"].as_u64().unwrap(),
            access: body["tokens"]["access_token"].as_str().unwrap().to_owned(),
            refresh: body["tokens"]["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs in and returns the response.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    /// `GET /api/v1/me` with `token`: its status.
    pub async fn me_status(&self, token: &str) -> u16 {
        self.call(Method::GET, "/api/v1/me", Some(token)).await.status().as_u16()
    }

    /// Logs in and returns the access token.
    pub async fn token(&self, email: &str, password: &str) -> String {
        let res = self.login(email, password).await;
        assert_eq!(res.status().as_u16(), 200, "{email} logs in with the password it had");
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}
