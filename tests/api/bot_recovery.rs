//! The end-to-end promise: a paper bot trading on the sim venue survives `kill -9` with its
//! fills, position and P&L intact, and is running again after the restart.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_core::trading::{Position, Side};
use serde_json::{Value, json};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Starts the real binary on `port` with `data_dir`, and waits until it listens.
fn start_keel(data_dir: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(KEEL)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEEL__STORE__PATH", data_dir)
        .env("KEEL__SERVER__PORT", port.to_string())
        .env("KEEL__LOG__FORMAT", "json")
        .env("KEEL__LOG__LEVEL", "info")
        .env("KEEL__VENUES__SIM__TRADES_PER_SEC", "200")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("Keel is listening") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("keel did not start listening");
            }
        }
    }
    // Keep draining its logs so it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    child
}

struct Api {
    base: String,
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }
}

async fn login(client: &reqwest::Client, base: &str, register: bool) -> String {
    let creds = json!({"email": "survivor@example.com", "password": keel_testkit::PASSWORD});
    let path = if register { "/api/v1/auth/register" } else { "/api/v1/auth/login" };
    let res = client.post(format!("{base}{path}")).json(&creds).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    body["tokens"]["access_token"]
        .as_str()
        .or_else(|| body["access_token"].as_str())
        .unwrap()
        .to_owned()
}

/// Replays fills with ids up to `through` into a position that started with `quote`.
fn replay(fills: &[Value], through: u64, quote: &str) -> Position {
    let d = |v: &Value| v.as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap();
    let mut position = Position { quote_balance: quote.parse().unwrap(), ..Position::default() };
    for fill in fills.iter().filter(|f| f["id"].as_u64().unwrap() <= through) {
        let side = if fill["side"] == "buy" { Side::Buy } else { Side::Sell };
        position.apply(side, d(&fill["qty"]), d(&fill["price"]), d(&fill["fee"]));
    }
    position
}

/// Asserts the reported position is exactly the replay of the fills it says it covers.
fn assert_position_is_its_fills(reported: &Value, fills: &[Value]) {
    let through = reported["fills_through"].as_u64().unwrap();
    assert!(
        fills.iter().filter(|f| f["id"].as_u64().unwrap() <= through).count() as u64 == through,
        "fills 1..={through} are all listed"
    );
    let expected = serde_json::to_value(replay(fills, through, "10000")).unwrap();
    for key in ["qty", "avg_entry_price", "realized_pnl", "fees", "quote_balance"] {
        assert_eq!(
            reported[key], expected[key],
            "{key}: reported {reported} vs replayed {expected}"
        );
    }
}

#[actix_web::test]
async fn a_paper_bot_survives_sigkill_with_identical_fills_position_and_pnl() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let client = keel_testkit::http_client();

    let mut keel = start_keel(dir.path(), port);
    let api = Api {
        base: base.clone(),
        client: client.clone(),
        token: login(&client, &base, true).await,
    };
    let (status, bot) = api
        .post(
            "/api/v1/bots",
            &json!({
                "name": "survivor", "venue": "sim", "symbol": "BTCUSDT", "mode": "paper",
                "strategy": {"kind": "ema_cross", "params": {"fast": 3, "slow": 8, "qty": "0.001"}},
                "paper": {"starting_quote": "10000", "fee_bps": "10"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{bot}");
    let id = bot["id"].as_u64().unwrap();
    assert_eq!(api.post(&format!("/api/v1/bots/{id}/start"), &json!({})).await.0, 200);

    // Fills appear.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let fills = api.get(&format!("/api/v1/bots/{id}/fills?limit=500")).await;
        if fills["items"].as_array().unwrap().len() >= 3 {
            break;
        }
        assert!(Instant::now() < until, "no fills within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The position first: the fills read after it include every fill it covers.
    let position_before = api.get(&format!("/api/v1/bots/{id}/position")).await;
    let before = api.get(&format!("/api/v1/bots/{id}/fills?limit=500")).await["items"]
        .as_array()
        .unwrap()
        .clone();

    // kill -9: no shutdown code runs.
    keel.kill().unwrap();
    keel.wait().unwrap();

    let mut keel = start_keel(dir.path(), port);
    // A new client: the old one's pooled connections died with the process.
    let client = keel_testkit::http_client();
    let api = Api {
        base: base.clone(),
        client: client.clone(),
        token: login(&client, &base, false).await,
    };
    assert_eq!(api.get(&format!("/api/v1/bots/{id}")).await["status"], "running");
    let after = api.get(&format!("/api/v1/bots/{id}/fills?limit=500")).await["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        after.len() >= before.len(),
        "fills were lost: {} before, {} after",
        before.len(),
        after.len()
    );
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "every fill seen before the kill is there, unchanged"
    );

    // The position is exactly its fills, before the kill and after.
    assert_position_is_its_fills(&position_before, &before);
    let position_after = api.get(&format!("/api/v1/bots/{id}/position")).await;
    let fills_now = api.get(&format!("/api/v1/bots/{id}/fills?limit=500")).await["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_position_is_its_fills(&position_after, &fills_now);
    let through_before = position_before["fills_through"].as_u64().unwrap();
    assert!(position_after["fills_through"].as_u64().unwrap() >= through_before);

    // And it keeps trading.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let fills = api.get(&format!("/api/v1/bots/{id}/fills?limit=500")).await;
        if fills["items"].as_array().unwrap().len() > after.len() {
            break;
        }
        assert!(Instant::now() < until, "the restarted bot did not trade within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    keel.kill().unwrap();
    keel.wait().unwrap();
}
