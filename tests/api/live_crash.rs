//! `kill -9` of the real `keel` binary while a live order, or a bracket's OCO order list, is in
//! flight: the venue took it but Keel died before its answer came. On restart it is settled from
//! the venue (the fill applied once, the list's legs found open) and never sent again.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use keel_testkit::PASSWORD;
use keel_testkit::quiet_bot;
use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};
use crate::fake_binance::FakeBinance;
use crate::fake_rest::{FakeRest, Fault};
use crate::process::{free_port, keel};

/// A `keel` process on `port` over `data_dir`, trading on the fakes.
fn start(data_dir: &std::path::Path, port: u16, ws: &FakeBinance, rest: &FakeRest) -> Child {
    keel(data_dir)
        .env("KEEL__SERVER__PORT", port.to_string())
        .env("KEEL__LOG__LEVEL", "warn")
        .env("KEEL__AUTH__JWT_SECRET", keel_testkit::JWT_SECRET)
        .env("KEEL__VENUES__BINANCE__ENABLED", "true")
        .env("KEEL__VENUES__BINANCE__WS_URL", &ws.url)
        .env("KEEL__VENUES__BINANCE__REST_URL", rest.url())
        .env("KEEL__VENUES__BINANCE__RECV_WINDOW_MS", "500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel starts")
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("keel answers");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `/health/ready` answers 200: every bot back with its orders reconciled.
    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = self.http.get(format!("{}/health/ready", self.base)).send().await;
            if res.is_ok_and(|r| r.status().as_u16() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "keel never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The bot's orders, waiting until `done` holds for them.
    async fn orders_until(&self, bot: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, page) =
                self.send(Method::GET, &format!("/api/v1/bots/{bot}/orders?limit=100"), None).await;
            let orders = page["items"].as_array().cloned().unwrap_or_default();
            if done(&orders) {
                return orders;
            }
            assert!(Instant::now() < deadline, "orders never settled: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[actix_web::test]
async fn after_kill_9_an_order_in_flight_is_settled_from_the_venue_and_not_resent() {
    crash_with_in_flight(false).await;
}

#[actix_web::test]
async fn after_kill_9_an_oco_list_in_flight_is_found_at_the_venue_and_not_resent() {
    crash_with_in_flight(true).await;
}

/// Kills Keel while the venue has taken a request whose answer never comes: the entry's
/// placement, or (`list`) its bracket's order list; restarts it and checks both were settled
/// from the venue and sent once.
async fn crash_with_in_flight(list: bool) {
    let ws = FakeBinance::start().await;
    let rest = FakeRest::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Killed(start(dir.path(), port, &ws, &rest));
    let mut client = Client {
        http: keel_testkit::http_client(),
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    };
    client.ready().await;

    let (status, body) = client
        .send(
            Method::POST,
            "/api/v1/auth/register",
            Some(&json!({"email": "crash@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    client.token = body["tokens"]["access_token"].as_str().unwrap().to_owned();
    let account = json!({"venue": "binance", "label": "live", "api_key": API_KEY,
        "api_secret": API_SECRET, "testnet": false});
    let (status, body) =
        client.send(Method::POST, "/api/v1/exchange-accounts", Some(&account)).await;
    assert_eq!(status, 201, "{body}");
    let mut bot = quiet_bot();
    bot["venue"] = json!("binance");
    bot["mode"] = json!("live");
    bot["exchange_account_id"] = body["id"].clone();
    bot["bracket"] = json!({"take_profit_pct": "2", "stop_loss_pct": "1"});
    let deadline = Instant::now() + Duration::from_secs(10);
    let bot_id = loop {
        let (status, body) = client.send(Method::POST, "/api/v1/bots", Some(&bot)).await;
        if status == 201 {
            break body["id"].as_u64().unwrap();
        }
        assert!(status == 503 && Instant::now() < deadline, "{status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, _) =
        client.send(Method::POST, &format!("/api/v1/bots/{bot_id}/start"), None).await;
    assert_eq!(status, 200);

    // The venue takes the buy (or its bracket's list), but its answer never comes.
    if list {
        rest.fail_lists_next(1, Fault::AcceptThenHang);
    } else {
        rest.fail_next(1, Fault::AcceptThenHang);
    }
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        ws.publish(
            "btcusdt@bookTicker",
            r#"{"u":1,"s":"BTCUSDT","b":"99.99000000","B":"5.00000000","a":"100.00000000","A":"5.00000000"}"#,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let path = format!("/api/v1/bots/{bot_id}/orders");
        let (status, body) = client.send(Method::POST, &path, Some(&buy)).await;
        if status == 202 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status}: {body}");
    };
    let entry_id = entry["id"].as_u64().unwrap();
    let client_order_id = entry["client_order_id"].as_str().unwrap().to_owned();
    let list_id = format!("keel-{bot_id}-{:06}-oco", entry_id + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rest.order(&client_order_id).is_none() || (list && rest.order_list(&list_id).is_none()) {
        assert!(Instant::now() < deadline, "the request never reached the venue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rest.order(&client_order_id).unwrap()["status"], "FILLED");

    // kill -9 while Keel waits for the answer.
    let mut child = child;
    child.0.kill().expect("SIGKILL");
    child.0.wait().unwrap();

    let _child = Killed(start(dir.path(), port, &ws, &rest));
    client.ready().await;
    let orders = client
        .orders_until(bot_id, |orders| {
            let status =
                |id: u64| orders.iter().find(|o| o["id"] == id).map(|o| o["status"].clone());
            status(entry_id) == Some(json!("filled"))
                && status(entry_id + 1) == Some(json!("accepted"))
                && status(entry_id + 2) == Some(json!("accepted"))
        })
        .await;
    let settled = orders.iter().find(|o| o["id"] == entry_id).unwrap();
    assert_eq!(settled["filled_qty"], "0.1", "{settled}");
    assert_eq!(rest.posts(), 1, "the order in flight was not sent again");
    assert_eq!(rest.list_posts(), 1, "its bracket went out once, as one OCO list");
    assert_eq!(rest.order_list(&list_id).unwrap()["listOrderStatus"], "EXECUTING");
    let (_, position) =
        client.send(Method::GET, &format!("/api/v1/bots/{bot_id}/position"), None).await;
    assert_eq!(
        position["qty"].as_str().and_then(|q| q.parse::<f64>().ok()),
        Some(0.1),
        "{position}"
    );
}
