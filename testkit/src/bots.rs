//! Bots: a bot that never trades by itself, and the calls that create, control and trade one.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{TestApp, Tokens};

/// An `ema_cross` paper bot on sim BTCUSDT whose slow EMA needs so many trades that it never
/// trades by itself in a test: manual orders are all that happen.
pub fn quiet_bot() -> Value {
    json!({
        "name": "quiet",
        "venue": "sim",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}},
        "paper": {"starting_quote": "10000", "fee_bps": "10"}
    })
}

impl TestApp {
    /// Adds an exchange account (mainnet keys) on `venue`; returns its id.
    pub async fn add_exchange_account(
        &self,
        token: &str,
        venue: &str,
        api_key: &str,
        api_secret: &str,
    ) -> u64 {
        let account = json!({"venue": venue, "label": "live", "api_key": api_key,
            "api_secret": api_secret, "testnet": false});
        let res = self.post_json("/api/v1/exchange-accounts", &account, Some(token)).await;
        assert_eq!(res.status().as_u16(), 201);
        res.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
    }

    /// Creates a quiet live bot on `venue` BTCUSDT trading with `account_id`, waiting out the 503
    /// the API answers until the venue's instrument rules are loaded; returns its id.
    pub async fn create_live_bot(&self, token: &str, venue: &str, account_id: u64) -> u64 {
        self.create_live_bot_with(token, venue, account_id, |_| ()).await
    }

    /// [`create_live_bot`](Self::create_live_bot) with its definition changed by `edit` (a
    /// bracket, say).
    pub async fn create_live_bot_with(
        &self,
        token: &str,
        venue: &str,
        account_id: u64,
        edit: impl FnOnce(&mut Value),
    ) -> u64 {
        let mut body = quiet_bot();
        edit(&mut body);
        body["name"] = json!("live");
        body["venue"] = json!(venue);
        body["mode"] = json!("live");
        body["exchange_account_id"] = json!(account_id);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let res = self.send(Method::POST, "/api/v1/bots", Some(&body), token).await;
            let status = res.status().as_u16();
            let json: Value = res.json().await.unwrap();
            if status == 201 {
                return json["id"].as_u64().unwrap();
            }
            assert_eq!(status, 503, "{json}");
            assert!(Instant::now() < deadline, "instrument rules never loaded: {json}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until order `id` of `bot` reaches `status` in `GET /orders`; returns it.
    pub async fn wait_for_order(&self, token: &str, bot: u64, id: u64, status: &str) -> Value {
        let path = format!("/api/v1/bots/{bot}/orders?limit=100");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.get_json(&path, token).await;
            let order = page["items"].as_array().unwrap().iter().find(|o| o["id"] == id).cloned();
            if let Some(order) = order.filter(|o| o["status"] == status) {
                return order;
            }
            assert!(Instant::now() < deadline, "order {id} never became {status}: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a bot and returns its JSON.
    pub async fn create_bot(&self, token: &str, body: &Value) -> Value {
        let res = self.send(Method::POST, "/api/v1/bots", Some(body), token).await;
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "create bot: {json}");
        json
    }

    /// `POST /bots/{id}/{action}` and its status.
    pub async fn control(&self, token: &str, id: u64, action: &str) -> reqwest::Response {
        self.send(Method::POST, &format!("/api/v1/bots/{id}/{action}"), None, token).await
    }

    /// Places `order` on `bot`, calling `quote` (which publishes a price on the venue's fake
    /// stream) before each attempt until the bot has a price to value it at; returns the 202
    /// answer.
    pub async fn place_quoted(
        &self,
        token: &str,
        bot: u64,
        order: &Value,
        quote: impl Fn(),
    ) -> Value {
        let path = format!("/api/v1/bots/{bot}/orders");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            quote();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let res = self.send(Method::POST, &path, Some(order), token).await;
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            if status == 202 {
                return body;
            }
            assert!(Instant::now() < deadline, "{status}: {body}");
        }
    }

    /// A running quiet paper bot; returns its id.
    pub async fn running_bot(&self, user: &Tokens) -> u64 {
        let bot = self.create_bot(&user.access, &quiet_bot()).await;
        let id = bot["id"].as_u64().unwrap();
        assert_eq!(self.control(&user.access, id, "start").await.status().as_u16(), 200);
        id
    }

    /// Places a resting limit far below the market and cancels it: two order versions and two
    /// journal lines.
    pub async fn place_and_cancel(&self, user: &Tokens, bot: u64) {
        let orders = format!("/api/v1/bots/{bot}/orders");
        let limit = json!({"side": "buy", "qty": "0.01", "type": "limit", "price": "1000.00"});
        let res = self.send(Method::POST, &orders, Some(&limit), &user.access).await;
        let status = res.status().as_u16();
        let order: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "place: {order}");
        let cancel = format!("{orders}/{}", order["id"]);
        let res = self.send(Method::DELETE, &cancel, None, &user.access).await;
        assert_eq!(res.status().as_u16(), 200, "cancel");
    }

    /// A market buy, retried until the sim has quoted (its first seconds): adds a fill.
    pub async fn market_buy(&self, user: &Tokens, bot: u64) {
        self.market_buy_of(user, bot, "0.001").await;
    }

    /// [`market_buy`](Self::market_buy) of `qty`.
    pub async fn market_buy_of(&self, user: &Tokens, bot: u64, qty: &str) {
        let orders = format!("/api/v1/bots/{bot}/orders");
        let buy = json!({"side": "buy", "qty": qty, "type": "market"});
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let res = self.send(Method::POST, &orders, Some(&buy), &user.access).await;
            let body: Value = res.json().await.unwrap();
            if body["status"] == "filled" {
                return;
            }
            assert!(Instant::now() < until, "no market buy filled in 10 s: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every row of a paged report (`orders`, `fills`, `events`).
    pub async fn all_pages(&self, user: &Tokens, bot: u64, report: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut after = 0;
        loop {
            let path = format!("/api/v1/bots/{bot}/{report}?after={after}&limit=500");
            let page = self.get_json(&path, &user.access).await;
            rows.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => return rows,
            }
        }
    }
}
