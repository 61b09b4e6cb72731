//! Cluster mode with real `keel` processes (issue 24, docs/CLUSTER.md): three nodes on loopback,
//! each with its own port and data directory, on one Postgres (`KEEL_TEST_POSTGRES_URL`, a
//! database of the test's own), one NATS (`KEEL_TEST_NATS_URL`, a cluster name of the test's
//! own) and a fake Binance. The exchange sees one connection; a user's requests work on every
//! node; a WebSocket on a node that does not own her gets her paper bot's fills; after `kill -9`
//! of her owner another node runs the bot within 15 s, no acknowledged order lost or repeated;
//! and an owner paused (SIGSTOP) past its lease is fenced when it resumes.

use std::collections::BTreeSet;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_actors::cluster::users::LEASE_TTL;
use keel_testkit::{PASSWORD, Tokens, eventually, quiet_bot};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};
use crate::cluster_identity::Database;
use crate::cluster_users::all_heartbeat;
use crate::fake_binance::FakeBinance;
use crate::fake_rest::FakeRest;
use crate::process::{free_port, keel};
use crate::ws::{Socket, connect_to, expect_type, send};

/// One of these tests at a time: three `keel` processes are already much for a loaded 2-core
/// machine, and a starved node misses its lease renewals.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODE_IDS: [&str; 3] = ["p1", "p2", "p3"];
const TRADES: &str = "market:binance:BTCUSDT:trades";
/// The quantity of every order but the one sent to a stale node, which must never be written.
const QTY: &str = "0.1";
const STALE_QTY: &str = "0.2";

/// One `keel` process of the cluster, killed (SIGKILL, which ends a stopped process too) when
/// dropped, however the test ends; its log is printed then if the test failed.
struct Node {
    id: &'static str,
    address: String,
    child: Child,
    /// Its data directory (`data/`) and its log (`keel.log`).
    dir: tempfile::TempDir,
}

impl Node {
    fn start(id: &'static str, cluster: &str, nats: &str, postgres: &str, md: &Fakes) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let log = File::create(dir.path().join("keel.log")).unwrap();
        let child = keel(&dir.path().join("data"))
            .env("KEEL__SERVER__PORT", port.to_string())
            .env("KEEL__SERVER__WORKERS", "1")
            .env("KEEL__LOG__LEVEL", "warn")
            .env("KEEL__ACCESS_LOG__OUTPUT", "off")
            .env("KEEL__AUTH__JWT_SECRET", keel_testkit::JWT_SECRET)
            // Every request comes from loopback; the limits have tests of their own.
            .env("KEEL__PROTECTION__PER_IP_PER_MINUTE", "100000")
            .env("KEEL__PROTECTION__PER_USER_PER_MINUTE", "100000")
            .env("KEEL__AUTH__REGISTRATIONS_PER_HOUR_PER_IP", "100000")
            .env("KEEL__VENUES__BINANCE__ENABLED", "true")
            .env("KEEL__VENUES__BINANCE__WS_URL", &md.ws.url)
            .env("KEEL__VENUES__BINANCE__REST_URL", md.rest.url())
            .env("KEEL__CLUSTER__ENABLED", "true")
            .env("KEEL__CLUSTER__NODE_ID", id)
            .env("KEEL__CLUSTER__NATS_URL", nats)
            .env("KEEL__CLUSTER__NAME", cluster)
            .env("KEEL__CLUSTER__POSTGRES_URL", postgres)
            .env("KEEL__CLUSTER__ADVERTISE_URL", &address)
            // One key for the cluster: a node with another refuses to start.
            .env("KEEL__VAULT__MASTER_KEY", crate::cluster_identity::CLUSTER_MASTER_KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel starts");
        Self { id, address, child, dir }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("keel.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- the last lines of {}'s log ---", self.id);
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The fake Binance (market data and exchange information), fed a quote and a trade every
/// 100 ms, stamped with the time they are sent, so that paper bots have prices and a strategy
/// on a schedule of event time runs, until dropped.
struct Fakes {
    ws: Arc<FakeBinance>,
    rest: FakeRest,
    feed: tokio::task::JoinHandle<()>,
}

impl Fakes {
    async fn start() -> Self {
        let ws = Arc::new(FakeBinance::start().await);
        let rest = FakeRest::start().await;
        let fake = ws.clone();
        let feed = tokio::spawn(async move {
            for id in 1.. {
                let now = keel_venues::now_us() / 1000;
                fake.publish(
                    "btcusdt@bookTicker",
                    &format!(
                        r#"{{"u":{id},"s":"BTCUSDT","b":"99.99000000","B":"5.00000000","a":"100.00000000","A":"5.00000000"}}"#
                    ),
                );
                fake.publish(
                    "btcusdt@trade",
                    &format!(
                        r#"{{"e":"trade","E":{now},"s":"BTCUSDT","t":{id},"p":"100.00000000","q":"0.00100000","T":{now},"m":true,"M":true}}"#
                    ),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { ws, rest, feed }
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

/// An answer: its status (0 when none came), the node that served it, its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    by: String,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request`; a request that got no answer (a killed or paused node) is status 0.
async fn answer(request: RequestBuilder) -> Answer {
    let Ok(res) = request.send().await else {
        return Answer { status: 0, by: String::new(), body: Value::Null };
    };
    let status = res.status().as_u16();
    let by = res.headers().get("keel-node").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let by = by.to_owned();
    Answer { status, by, body: res.json().await.unwrap_or(Value::Null) }
}

/// Three nodes, the fakes and the database, in the order they must go at the end.
struct Cluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
    md: Fakes,
    db: Option<Database>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// The three nodes, ready and heartbeating; `None` (skipped) without NATS or Postgres.
    async fn start(test: &str) -> Option<Self> {
        let nats = crate::service_url("KEEL_TEST_NATS_URL", test)?;
        let turn = ONE_AT_A_TIME.lock().await;
        let db = Database::create(test).await?;
        let md = Fakes::start().await;
        let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
        let postgres = db.url_via(db.upstream);
        let nodes =
            NODE_IDS.iter().map(|id| Node::start(id, &name, &nats, &postgres, &md)).collect();
        let cluster =
            Self { nodes, http: keel_testkit::http_client(), md, db: Some(db), _turn: turn };
        for node in &cluster.nodes {
            let ready = format!("{}/health/ready", node.address);
            eventually(Duration::from_secs(60), "the node is ready", || async {
                cluster.http.get(&ready).send().await.is_ok_and(|r| r.status().as_u16() == 200)
            })
            .await;
        }
        all_heartbeat(cluster.db.as_ref().unwrap(), NODE_IDS.len()).await;
        Some(cluster)
    }

    fn request(&self, at: usize, method: Method, path: &str, token: &str) -> RequestBuilder {
        let url = format!("{}{path}", self.nodes[at].address);
        self.http.request(method, url).bearer_auth(token)
    }

    async fn get(&self, at: usize, path: &str, token: &str) -> Answer {
        answer(self.request(at, Method::GET, path, token)).await
    }

    async fn post(&self, at: usize, path: &str, body: &Value, token: &str) -> Answer {
        answer(self.request(at, Method::POST, path, token).json(body)).await
    }

    async fn register(&self, at: usize, email: &str) -> Tokens {
        let body = json!({"email": email, "password": PASSWORD});
        let res = self.post(at, "/api/v1/auth/register", &body, "").await;
        assert_eq!(res.status, 201, "register {email}: {res:?}");
        let token = |key: &str| res.body["tokens"][key].as_str().unwrap().to_owned();
        Tokens {
            user_id: res.body["user"]["id"].as_u64().unwrap(),
            access: token("access_token"),
            refresh: token("refresh_token"),
        }
    }

    /// Creates a bot from `definition` through node `at` (retried while the venue's instrument
    /// rules are loading) and starts it; its id.
    async fn start_bot(&self, at: usize, token: &str, definition: &Value) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let created = loop {
            let res = self.post(at, "/api/v1/bots", definition, token).await;
            if res.status == 201 {
                break res;
            }
            assert!(res.status == 503 && Instant::now() < deadline, "{res:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let bot = created.body["id"].as_u64().expect("a bot id");
        let start = self.post(at, &format!("/api/v1/bots/{bot}/start"), &json!({}), token).await;
        assert_eq!(start.status, 200, "{start:?}");
        bot
    }

    /// A market buy of `qty` for `bot` through node `at`.
    async fn buy(&self, at: usize, token: &str, bot: u64, qty: &str) -> Answer {
        let buy = json!({"side": "buy", "qty": qty, "type": "market"});
        self.post(at, &format!("/api/v1/bots/{bot}/orders"), &buy, token).await
    }

    /// Buys through node `at` until one is acknowledged (retried while the bot has no price);
    /// its answer.
    async fn bought(&self, at: usize, token: &str, bot: u64) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let res = self.buy(at, token, bot, QTY).await;
            if res.ok() {
                return res;
            }
            assert!(Instant::now() < deadline, "no order taken: {res:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The items of `GET path?limit=500` through node `at`.
    async fn items(&self, at: usize, path: &str, token: &str) -> Vec<Value> {
        let res = self.get(at, &format!("{path}?limit=500"), token).await;
        assert_eq!(res.status, 200, "{path}: {res:?}");
        res.body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the node serving `bot` through node `at` is not `old_owner` and runs it
    /// there; that node's index.
    async fn runs_elsewhere(&self, at: usize, token: &str, bot: u64, old_owner: usize) -> usize {
        let path = format!("/api/v1/bots/{bot}");
        let old = NODE_IDS[old_owner];
        eventually(Duration::from_secs(40), "the bot runs on another node", || async {
            let res = self.get(at, &path, token).await;
            res.status == 200 && res.by != old && res.body["status"] == "running"
        })
        .await;
        node_index(&self.get(at, &path, token).await.by)
    }

    /// Stops every process, then drops the database.
    async fn finish(mut self) {
        self.nodes.clear();
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
    }
}

fn node_index(id: &str) -> usize {
    NODE_IDS.iter().position(|n| *n == id).unwrap_or_else(|| panic!("`{id}` is not a node"))
}

/// A paper bot on Binance: market data from the fake, fills simulated, no credentials; it trades
/// only when told. ([`ada_with_a_running_bot`] makes it live on her exchange account.)
fn paper_bot_on_binance() -> Value {
    let mut bot = quiet_bot();
    bot["venue"] = json!("binance");
    bot
}

/// [`paper_bot_on_binance`] buying by itself at every second of market time (`dca`), so that it
/// writes as soon as market data reaches it.
fn buying_bot_on_binance() -> Value {
    let mut bot = paper_bot_on_binance();
    bot["strategy"] = json!({"kind": "dca",
        "params": {"interval_secs": 1, "quote_amount": "10", "take_profit_pct": "500"}});
    bot
}

/// A cluster, Ada registered on node 0 with a bot of `definition` made through a node that does
/// not own her, running and filled twice: the cluster, her tokens, the bot, her owner. `live`:
/// on her exchange account at the fake Binance (added through that node too), not on paper.
async fn ada_with_a_running_bot(
    test: &str,
    definition: &Value,
    live: bool,
) -> Option<(Cluster, Tokens, u64, usize)> {
    let cluster = Cluster::start(test).await?;
    let ada = cluster.register(0, "ada@example.com").await;
    eventually(Duration::from_secs(15), "ada's requests are served", || async {
        cluster.get(0, "/api/v1/bots", &ada.access).await.status == 200
    })
    .await;
    let owner = node_index(&cluster.get(0, "/api/v1/bots", &ada.access).await.by);
    let via = (owner + 1) % 3;
    let mut definition = definition.clone();
    if live {
        let account = json!({"venue": "binance", "label": "live", "api_key": API_KEY,
                             "api_secret": API_SECRET});
        let added = cluster.post(via, "/api/v1/exchange-accounts", &account, &ada.access).await;
        assert_eq!((added.status, added.by.as_str()), (201, NODE_IDS[owner]), "{added:?}");
        definition["mode"] = json!("live");
        definition["exchange_account_id"] = added.body["id"].clone();
    }
    let bot = cluster.start_bot(via, &ada.access, &definition).await;
    for _ in 0..2 {
        cluster.bought(via, &ada.access, bot).await;
    }
    Some((cluster, ada, bot, owner))
}

/// Reads `socket` until an event on `channel` whose `data.kind` is `kind`; that event.
async fn event_of_kind(socket: &mut Socket, channel: &str, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no {kind} on {channel}");
        let event = expect_type(socket, "event").await;
        if event["channel"] == channel && event["data"]["kind"] == kind {
            return event;
        }
    }
}

/// Every order of `kept` (acknowledged, or listed earlier) is listed as it was there, by the
/// fields that never change once it is made (none lost, none overwritten by another node), and
/// no id or client order id appears twice among `orders`.
fn check_orders(orders: &[Value], kept: &[Value]) {
    check_kept(orders, kept, &["client_order_id", "qty", "origin", "created_ts"]);
    let client_ids: BTreeSet<&str> =
        orders.iter().filter_map(|o| o["client_order_id"].as_str()).collect();
    assert_eq!(client_ids.len(), orders.len(), "a client order id twice: {orders:#?}");
}

/// Every item of `kept` is among `items` with the same `fields`, and no id appears twice there.
fn check_kept(items: &[Value], kept: &[Value], fields: &[&str]) {
    let ids: BTreeSet<u64> = items.iter().filter_map(|o| o["id"].as_u64()).collect();
    assert_eq!(ids.len(), items.len(), "an id twice: {items:#?}");
    let key = |item: &Value| fields.iter().map(|f| item[*f].clone()).collect::<Vec<_>>();
    for item in kept {
        let listed = items.iter().find(|o| o["id"] == item["id"]);
        let listed = listed.unwrap_or_else(|| panic!("lost: {item}"));
        assert_eq!(key(listed), key(item), "was {item}, listed as {listed}");
    }
}

#[actix_web::test]
async fn three_processes_share_one_exchange_connection_and_serve_a_user_and_her_fills_anywhere() {
    let Some((cluster, ada, bot, owner)) =
        ada_with_a_running_bot("cluster_process", &paper_bot_on_binance(), false).await
    else {
        return;
    };
    // Every node wants BTCUSDT: the bot on its owner, a market channel on each of the others,
    // which get the trades the holder relays.
    let others = [(owner + 1) % 3, (owner + 2) % 3];
    let mut markets = Vec::new();
    for at in others {
        let mut socket = connect_to(&cluster.nodes[at].address, Some(&ada.access)).await.unwrap();
        send(&mut socket, json!({"op": "subscribe", "channels": [TRADES]})).await;
        expect_type(&mut socket, "subscribed").await;
        event_of_kind(&mut socket, TRADES, "trade").await;
        markets.push(socket);
    }
    // Two more lease rounds: still the one connection.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.md.ws.connections(), 1, "the exchange sees one connection");
    assert!(cluster.md.ws.subscriptions().contains("btcusdt@trade"));

    // Registered on node 0, Ada is served through every node, by her owner.
    let path = format!("/api/v1/bots/{bot}");
    for at in 0..3 {
        let res = cluster.get(at, &path, &ada.access).await;
        assert_eq!((res.status, res.by.as_str()), (200, NODE_IDS[owner]), "through {at}");
        assert_eq!(res.body["status"], "running");
        let me = cluster.get(at, "/api/v1/me", &ada.access).await;
        assert_eq!(me.body["id"].as_u64(), Some(ada.user_id), "through {at}: {me:?}");
    }

    // A WebSocket on a node that does not own her gets her bot's fills, relayed.
    let channel = format!("bot:{bot}");
    let mut socket =
        connect_to(&cluster.nodes[others[1]].address, Some(&ada.access)).await.unwrap();
    send(&mut socket, json!({"op": "subscribe", "channels": [&channel], "since": {&channel: 0}}))
        .await;
    expect_type(&mut socket, "subscribed").await;
    event_of_kind(&mut socket, &channel, "fill").await; // one from before, caught up
    let order = cluster.bought(others[0], &ada.access, bot).await;
    assert_eq!(order.by, NODE_IDS[owner]);
    loop {
        let fill = event_of_kind(&mut socket, &channel, "fill").await;
        if fill["data"]["data"]["order_id"] == order.body["id"] {
            break;
        }
    }
    drop((socket, markets));
    cluster.finish().await;
}

/// Buys through node `at` every 100 ms until told to stop, keeping the orders acknowledged.
struct Trader {
    acked: Arc<Mutex<Vec<Value>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Trader {
    fn start(cluster: &Cluster, at: usize, token: &str, bot: u64) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let request = {
            let (http, token) = (cluster.http.clone(), token.to_owned());
            let url = format!("{}/api/v1/bots/{bot}/orders", cluster.nodes[at].address);
            move || http.post(&url).bearer_auth(&token)
        };
        let kept = acked.clone();
        let task = tokio::spawn(async move {
            let buy = json!({"side": "buy", "qty": QTY, "type": "market"});
            while !*stopped.borrow() {
                let res = answer(request().json(&buy)).await;
                if res.ok() {
                    kept.lock().unwrap().push(res.body);
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), stopped.changed()).await;
            }
        });
        Self { acked, stop, task }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn until(&self, count: usize, what: &str) {
        eventually(Duration::from_secs(30), what, || async { self.count() >= count }).await;
    }

    /// Stops; the orders acknowledged.
    async fn stop(self) -> Vec<Value> {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

#[actix_web::test]
async fn after_kill_9_of_her_owner_another_process_runs_her_bot_within_15_s_with_no_order_lost() {
    kill_9_of_her_owner("cluster_kill", false).await;
}

#[actix_web::test]
async fn after_kill_9_of_her_owner_her_live_bot_runs_elsewhere_with_no_order_lost_or_sent_twice() {
    kill_9_of_her_owner("cluster_kill_live", true).await;
}

/// kill -9 of Ada's owner while orders are placed through another node: her bot (`live`: on
/// the fake Binance with her credentials, read from Postgres by the next owner) runs elsewhere
/// within 15 s, every acknowledged order is kept, and none is sent to the venue twice.
async fn kill_9_of_her_owner(test: &str, live: bool) {
    let Some((mut cluster, ada, bot, owner)) =
        ada_with_a_running_bot(test, &paper_bot_on_binance(), live).await
    else {
        return;
    };
    let via = (owner + 1) % 3;
    let fills = format!("/api/v1/bots/{bot}/fills");
    let orders = format!("/api/v1/bots/{bot}/orders");

    // Orders go on being placed through another node, before, during and after the kill.
    let trader = Trader::start(&cluster, via, &ada.access, bot);
    trader.until(3, "orders are taken before the kill").await;
    let fills_before = cluster.items(via, &fills, &ada.access).await.len();
    let killed = Instant::now();
    let owner_node = &mut cluster.nodes[owner];
    owner_node.child.kill().expect("SIGKILL");
    owner_node.child.wait().unwrap();
    let acked_before = trader.count();

    // Another node takes Ada and runs her bot within 15 s.
    let new_owner = cluster.runs_elsewhere(via, &ada.access, bot, owner).await;
    let failover = killed.elapsed();
    eprintln!(
        "cluster_kill: the bot ran on {} {failover:?} after kill -9 of its owner {}",
        NODE_IDS[new_owner], NODE_IDS[owner]
    );
    assert!(failover <= Duration::from_secs(15), "failover took {failover:?}");
    for at in (0..3).filter(|at| *at != owner) {
        let res = cluster.get(at, &format!("/api/v1/bots/{bot}"), &ada.access).await;
        assert_eq!(
            (res.by.as_str(), &res.body["status"]),
            (NODE_IDS[new_owner], &json!("running"))
        );
    }

    // It goes on taking orders and filling them there.
    trader.until(acked_before + 3, "orders are taken after the failover").await;
    let acked = trader.stop().await;
    let listed = cluster.items(via, &orders, &ada.access).await;
    check_orders(&listed, &acked);
    let after = cluster.items(via, &fills, &ada.access).await;
    assert!(after.len() >= fills_before + 3, "{} fills, {fills_before} before", after.len());
    let fill_ids: BTreeSet<u64> = after.iter().filter_map(|f| f["id"].as_u64()).collect();
    assert_eq!(fill_ids.len(), after.len(), "a fill id twice: {after:#?}");
    // Every market order filled once, at most: none executed twice.
    let filled: BTreeSet<u64> = after.iter().filter_map(|f| f["order_id"].as_u64()).collect();
    assert_eq!(filled.len(), after.len(), "an order filled twice: {after:#?}");
    if live {
        // The venue took each order once: every new-order request made an order (a client
        // order id sent again is refused, -2010, and would count here), and each acknowledged
        // order is one of them.
        let venue = &cluster.md.rest;
        let at_venue = venue.client_order_ids();
        assert_eq!(venue.posts(), at_venue.len(), "an order was sent twice: {at_venue:?}");
        for order in &acked {
            let id = order["client_order_id"].as_str().expect("a client order id");
            assert!(at_venue.iter().any(|v| v == id), "{id} never reached the venue");
        }
        assert!(at_venue.len() >= acked.len() + 2, "{} at the venue", at_venue.len());
    }
    cluster.finish().await;
}

/// Counter `name` (over its labels) in node `at`'s `/metrics`.
async fn counter(cluster: &Cluster, at: usize, name: &str) -> u64 {
    let url = format!("{}/metrics", cluster.nodes[at].address);
    let Ok(res) = cluster.http.get(url).send().await else { return 0 };
    let text = res.text().await.unwrap_or_default();
    let values = text.lines().filter(|l| l.starts_with(name));
    values.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>() as u64
}

#[actix_web::test]
async fn an_owner_paused_past_its_lease_is_fenced_when_it_resumes_and_forwards_her_requests() {
    let definition = buying_bot_on_binance();
    let Some((cluster, ada, bot, owner)) =
        ada_with_a_running_bot("cluster_sigstop", &definition, false).await
    else {
        return;
    };
    let via = (owner + 1) % 3;
    let orders = format!("/api/v1/bots/{bot}/orders");
    let fills = format!("/api/v1/bots/{bot}/fills");

    // Her owner is paused longer than its lease: another node takes her and runs the bot,
    // which buys there, by itself and when told.
    let stale = &cluster.nodes[owner];
    stale.signal("STOP");
    let paused = Instant::now();
    let new_owner = cluster.runs_elsewhere(via, &ada.access, bot, owner).await;
    eprintln!(
        "cluster_sigstop: the bot ran on {} {:?} after its owner {} was paused",
        NODE_IDS[new_owner],
        paused.elapsed(),
        NODE_IDS[owner]
    );
    for _ in 0..2 {
        cluster.bought(via, &ada.access, bot).await;
    }
    tokio::time::sleep((LEASE_TTL + Duration::from_secs(4)).saturating_sub(paused.elapsed())).await;
    let orders_before = cluster.items(via, &orders, &ada.access).await;
    let fills_before = cluster.items(via, &fills, &ada.access).await;

    // The paused node's lease round is held up when it resumes: the test locks its heartbeat
    // row, which the round writes first (it gives up after its 5 s deadline). So it resumes
    // believing it still owns Ada, as a node does whose lease task lags behind (a partition,
    // a slow database), and its bot goes on at once with the market data that reaches it: the
    // writes that fencing exists to refuse.
    let db = cluster.db.as_ref().unwrap();
    let (sql, connection) =
        tokio_postgres::connect(&db.url_via(db.upstream), tokio_postgres::NoTls).await.unwrap();
    actix_web::rt::spawn(connection);
    let lock = format!("BEGIN; SELECT 1 FROM keel_nodes WHERE node_id = '{}' FOR UPDATE", stale.id);
    sql.batch_execute(&lock).await.unwrap();
    // An order reaches it as it resumes, marked as forwarded so that it answers it itself rather
    // than forward it: it must refuse it, whichever of its guards comes first (its revocation
    // list, stale after the pause; the fence; the ownership it gave up).
    let order = cluster
        .request(owner, Method::POST, &orders, &ada.access)
        .header("keel-forwarded", "test")
        .json(&json!({"side": "buy", "qty": STALE_QTY, "type": "market"}));
    let stale_order = tokio::spawn(answer(order));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stale.signal("CONT");
    // Whichever comes first stops its bot: a write refused by the fence (what the lock makes
    // likely), or its lease round giving the lease up once it sees it expired (on a loaded
    // machine the bot may get no market data before that). Either way nothing it wrote may
    // be in Postgres: checked below.
    let fenced = std::cell::Cell::new(0);
    eventually(Duration::from_secs(30), "the resumed node stops her bot", || async {
        fenced.set(counter(&cluster, owner, "keel_bot_fenced_total").await);
        let lost = counter(&cluster, owner, "keel_cluster_user_lease_losses_total").await;
        fenced.get() >= 1 || lost >= 1
    })
    .await;
    eprintln!("cluster_sigstop: writes the resumed node's fence refused: {}", fenced.get());
    sql.batch_execute("ROLLBACK").await.unwrap();
    let stale_order = stale_order.await.unwrap();
    eprintln!("cluster_sigstop: the order sent to the resumed node: {stale_order:?}");
    assert!(stale_order.status >= 500, "a node that lost her lease took her order");

    // It stops serving her: her requests there go to the new owner, where the bot runs on.
    let path = format!("/api/v1/bots/{bot}");
    eventually(Duration::from_secs(15), "the resumed node forwards her requests", || async {
        let res = cluster.get(owner, &path, &ada.access).await;
        res.status == 200 && res.by == NODE_IDS[new_owner] && res.body["status"] == "running"
    })
    .await;
    let acked = cluster.bought(owner, &ada.access, bot).await;
    assert_eq!(acked.by, NODE_IDS[new_owner]);

    // Postgres holds nothing of the resumed node's: every order and fill written before it
    // resumed is there as it was, none twice, none of the refused order's quantity, and the
    // position is the sum of the fills.
    let listed = cluster.items(via, &orders, &ada.access).await;
    check_orders(&listed, &orders_before);
    check_orders(&listed, &[acked.body]);
    assert!(listed.iter().all(|o| o["qty"] != STALE_QTY), "{listed:#?}");
    let fills = cluster.items(via, &fills, &ada.access).await;
    check_kept(&fills, &fills_before, &["order_id", "qty", "ts"]);
    assert!(fills.iter().all(|f| f["qty"] != STALE_QTY), "{fills:#?}");
    let bought: f64 = fills.iter().filter_map(|f| f["qty"].as_str()?.parse::<f64>().ok()).sum();
    let position = cluster.get(via, &format!("/api/v1/bots/{bot}/position"), &ada.access).await;
    let qty = position.body["qty"].as_str().and_then(|q| q.parse::<f64>().ok());
    assert!(qty.is_some_and(|q| (q - bought).abs() < 1e-9), "{position:?} after {bought}");
    cluster.finish().await;
}
