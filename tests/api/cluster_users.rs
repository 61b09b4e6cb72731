//! User leases and forwarding (cluster mode with `cluster.postgres_url`): three nodes on one
//! Postgres (`KEEL_TEST_POSTGRES_URL`, a database of the test's own) and one NATS
//! (`KEEL_TEST_NATS_URL`). A user's requests on any node are served by the node holding the
//! user's lease (`keel-node`), and when that node stops another takes the user over.

use std::time::Duration;

use keel_testkit::{TestApp, assert_error, eventually, quiet_bot};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster_identity::{Database, node, node_with};

/// Waits until `count` nodes heartbeat in `db` (a node's first round heartbeats at once).
pub(crate) async fn all_heartbeat(db: &Database, count: usize) {
    let (sql, connection) =
        tokio_postgres::connect(&db.url_via(db.upstream), tokio_postgres::NoTls)
            .await
            .expect("connects");
    actix_web::rt::spawn(connection);
    eventually(Duration::from_secs(5), "every node heartbeats", || async {
        let row = sql.query_one("SELECT count(*) FROM keel_nodes", &[]).await.unwrap();
        usize::try_from(row.get::<_, i64>(0)).is_ok_and(|n| n == count)
    })
    .await;
}

/// The node that served an answer.
pub(crate) fn served_by(res: &reqwest::Response) -> String {
    res.headers()
        .get("keel-node")
        .and_then(|v| v.to_str().ok())
        .expect("every answer in cluster mode names its node")
        .to_owned()
}

/// `GET /api/v1/bots` on `app`: its status, the node that served it, and the body.
pub(crate) async fn bots(app: &TestApp, token: &str) -> (u16, String, Value) {
    let res = app.send(Method::GET, "/api/v1/bots", None, token).await;
    let (status, by) = (res.status().as_u16(), served_by(&res));
    (status, by, res.json().await.unwrap_or(Value::Null))
}

/// Nodes `ids` of a fresh cluster on `db`, once every one of them heartbeats: a user
/// registered then is owned by the rendezvous winner of them all (a node's first round
/// heartbeats at once).
pub(crate) async fn live_nodes(ids: &[&str], nats: &str, db: &Database) -> Vec<TestApp> {
    live_nodes_with(ids, nats, db, |_| {}).await
}

/// [`live_nodes`], with `more` settings on every node (the venues' fakes, say).
pub(crate) async fn live_nodes_with(
    ids: &[&str],
    nats: &str,
    db: &Database,
    more: impl Fn(&mut keel::configuration::Settings) + Clone + Send + 'static,
) -> Vec<TestApp> {
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(node_with(id, &name, nats, db.url_via(db.upstream), more.clone()).await);
    }
    all_heartbeat(db, ids.len()).await;
    nodes
}

#[actix_web::test]
async fn a_users_requests_on_any_node_are_served_by_its_owner_and_another_takes_over_when_it_stops()
{
    let test = "cluster_users";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let ids = ["n1", "n2", "n3"];
    let nodes = live_nodes(&ids, &nats, &db).await;
    let ada = nodes[0].register("ada@example.com").await;

    // Any node answers for Ada, and all of them through one owner.
    eventually(Duration::from_secs(15), "ada's requests are served", || async {
        bots(&nodes[0], &ada.access).await.0 == 200
    })
    .await;
    let (_, owner, _) = bots(&nodes[0], &ada.access).await;
    for app in &nodes {
        let (status, by, body) = bots(app, &ada.access).await;
        assert_eq!((status, by.as_str(), &body), (200, owner.as_str(), &json!({"items": []})));
    }
    let owner_at = ids.iter().position(|id| *id == owner).expect("one of the nodes");
    let other_at = (owner_at + 1) % ids.len();
    let (on_owner, elsewhere) = (&nodes[owner_at], &nodes[other_at]);

    // A paper bot created on a node that does not own Ada lives on the owner.
    let res = elsewhere.send(Method::POST, "/api/v1/bots", Some(&quiet_bot()), &ada.access).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (201, owner.clone()));
    let bot: Value = res.json().await.unwrap();
    let id = bot["id"].as_u64().expect("a bot id");
    let (status, by, list) = bots(elsewhere, &ada.access).await;
    assert_eq!((status, by.as_str()), (200, owner.as_str()));
    assert_eq!(list, bots(on_owner, &ada.access).await.2, "the same list on either node");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    // The path as routed decides, not as spelled.
    let res = elsewhere.send(Method::GET, "/api/v1/%62ots", None, &ada.access).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (200, owner.clone()));
    let path = format!("/api/v1/bots/{id}");
    let forwarded = elsewhere.send(Method::GET, &path, None, &ada.access).await;
    assert_eq!(served_by(&forwarded), owner);
    let forwarded: Value = forwarded.json().await.unwrap();
    assert_eq!(forwarded, on_owner.get_json(&path, &ada.access).await);
    assert_eq!(forwarded["name"], bot["name"]);

    // A bad request gets the owner's error as it is, under the id the client sent.
    let bad = json!({"name": "no venue"});
    let res = elsewhere
        .client
        .post(format!("{}/api/v1/bots", elsewhere.address))
        .bearer_auth(&ada.access)
        .header("x-request-id", "forwarded-bad-request-1")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), owner);
    let there = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(there["request_id"], "forwarded-bad-request-1");
    let res = on_owner.send(Method::POST, "/api/v1/bots", Some(&bad), &ada.access).await;
    let here = assert_error(res, 422, "VALIDATION_FAILED").await;
    for field in ["code", "message", "details", "path"] {
        assert_eq!(there[field], here[field], "{field}");
    }
    // Without a token nothing is forwarded: 401 from the node reached.
    let res = elsewhere.call(Method::GET, "/api/v1/bots", None).await;
    assert_eq!(served_by(&res), ids[other_at]);
    assert_error(res, 401, "UNAUTHORIZED").await;
    // A request already forwarded is never forwarded again: a node that does not own the user
    // answers that ownership is moving.
    let res = elsewhere
        .client
        .get(format!("{}/api/v1/bots", elsewhere.address))
        .bearer_auth(&ada.access)
        .header("keel-forwarded", "n0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let moving = assert_error(res, 503, "UNAVAILABLE").await;
    assert_eq!(moving["message"], "ownership is moving, retry");

    // A body larger than a NATS message is refused where it arrives, naming the owner.
    let res = elsewhere
        .client
        .post(format!("{}/api/v1/backtests/uploads", elsewhere.address))
        .bearer_auth(&ada.access)
        .header("content-type", "text/csv")
        .body(vec![b'1'; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), ids[other_at]);
    let large = assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
    assert!(large["message"].as_str().unwrap().contains(&owner), "{large}");

    // The owner stops: it releases Ada's lease, and another node owns her within seconds. Her
    // bot lives in Postgres, so the new owner lists it as it was.
    on_owner.stop.stop();
    eventually(Duration::from_secs(15), "another node owns ada", || async {
        let (status, by, body) = bots(elsewhere, &ada.access).await;
        status == 200 && by != owner && body == list
    })
    .await;
    let (_, new_owner, _) = bots(elsewhere, &ada.access).await;
    for (at, app) in nodes.iter().enumerate().filter(|(at, _)| *at != owner_at) {
        let (status, by, _) = bots(app, &ada.access).await;
        assert_eq!((status, by.as_str()), (200, new_owner.as_str()), "node {}", ids[at]);
    }
    db.finish(nodes).await;
}

#[actix_web::test]
async fn a_request_for_an_owner_that_does_not_answer_is_503_at_once_and_the_user_is_taken_once_its_lease_expires()
 {
    let test = "cluster_users_ghost";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let app = node("n1", &name, &nats, db.url_via(db.upstream)).await;
    let ada = app.register("ada@example.com").await;
    // A node that heartbeats in Postgres and holds Ada's lease, but does not listen on NATS (hung,
    // or cut off from NATS): its lease takes Ada from n1 at a higher epoch.
    let (sql, connection) =
        tokio_postgres::connect(&db.url_via(db.upstream), tokio_postgres::NoTls)
            .await
            .expect("connects");
    actix_web::rt::spawn(connection);
    let user = i64::try_from(ada.user_id).unwrap();
    sql.execute(
        "INSERT INTO keel_nodes (node_id, advertise_url) VALUES ('ghost', 'http://g')",
        &[],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO keel_user_leases (user_id, holder, epoch, expires_at)
         VALUES ($1, 'ghost', 7, clock_timestamp() + interval '1 hour')
         ON CONFLICT (user_id) DO UPDATE
         SET holder = 'ghost', epoch = 7, expires_at = clock_timestamp() + interval '1 hour'",
        &[&user],
    )
    .await
    .unwrap();
    // n1 notices at its next renewal at the latest; then every request for Ada is refused at
    // once (nothing answers on the ghost's subject), never held.
    eventually(Duration::from_secs(10), "n1 forwards ada's requests to the ghost", || async {
        let res = app.send(Method::GET, "/api/v1/bots", None, &ada.access).await;
        res.status().as_u16() == 503
    })
    .await;
    let started = std::time::Instant::now();
    let res = app.send(Method::GET, "/api/v1/bots", None, &ada.access).await;
    assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());
    assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let refused = assert_error(res, 503, "UNAVAILABLE").await;
    assert!(refused["message"].as_str().unwrap().contains("ghost"), "{refused}");

    // The ghost's lease runs out and its heartbeat stops: n1 takes Ada over, at a higher epoch.
    sql.execute("UPDATE keel_nodes SET heartbeat_at = clock_timestamp() - interval '1 minute' WHERE node_id = 'ghost'", &[])
        .await
        .unwrap();
    sql.execute(
        "UPDATE keel_user_leases SET expires_at = clock_timestamp() WHERE user_id = $1",
        &[&user],
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(15), "n1 owns ada again", || async {
        let (status, by, _) = bots(&app, &ada.access).await;
        status == 200 && by == "n1"
    })
    .await;
    let row = sql
        .query_one("SELECT holder, epoch FROM keel_user_leases WHERE user_id = $1", &[&user])
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("n1".to_owned(), 8));
    app.stop.stop();
    drop((sql, app));
    db.drop_db().await;
}

#[actix_web::test]
async fn a_forwarded_request_is_counted_and_logged_on_the_owner_under_its_clients_address() {
    let test = "cluster_forward_client";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    // The test is the clients' proxy, at 127.0.0.2 (not the nodes' own loopback address, from
    // which the owner receives forwarded requests); each node logs to a file of its own.
    let logs = tempfile::tempdir().unwrap();
    let ids = ["cip1", "cip2"];
    let mut nodes = Vec::new();
    for id in ids {
        let file = logs.path().join(format!("{id}.log")).display().to_string();
        let settings = move |s: &mut keel::configuration::Settings| {
            s.protection.trusted_proxies = vec!["127.0.0.2".into()];
            s.access_log.output = file;
        };
        nodes.push(node_with(id, &name, &nats, db.url_via(db.upstream), settings).await);
    }
    all_heartbeat(&db, ids.len()).await;
    let ada = nodes[0].register("ada-client@example.com").await;
    eventually(Duration::from_secs(15), "ada's requests are served", || async {
        bots(&nodes[0], &ada.access).await.0 == 200
    })
    .await;
    let (_, owner, _) = bots(&nodes[0], &ada.access).await;
    let owner_at = ids.iter().position(|id| *id == owner).expect("one of the nodes");
    let other = &nodes[1 - owner_at];

    // Through the other node, for a client at 203.0.113.7 (the client's own claim of another
    // address, 198.51.100.1, comes before the proxy's and is not believed).
    let proxy = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let res = proxy
        .get(format!("{}/api/v1/bots", other.address))
        .bearer_auth(&ada.access)
        .header("x-request-id", "forwarded-1")
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!((res.status().as_u16(), served_by(&res)), (200, owner.clone()));
    // The owner counts and logs the client, not the node that forwarded it (loopback).
    let owner_log = logs.path().join(format!("{owner}.log"));
    let line = crate::access_log::line_for(&owner_log, "forwarded-1").await;
    assert_eq!(line["client_ip"], "203.0.113.7", "{line}");
    let other_log = logs.path().join(format!("{}.log", ids[1 - owner_at]));
    let line = crate::access_log::line_for(&other_log, "forwarded-1").await;
    assert_eq!(line["client_ip"], "203.0.113.7", "{line}");

    db.finish(nodes).await;
}
