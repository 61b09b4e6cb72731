//! The Postgres sink against the real local PostgreSQL, through a loopback proxy the tests cut and
//! restore: every order change, fill and journal line arrives exactly once, whatever happens to
//! the connection; readiness never fails because of Postgres; and with the sink off nothing is
//! queued for it.
//!
//! The tests that need PostgreSQL read its URL from `KEEL_TEST_POSTGRES_URL` and say they were
//! skipped when it is unset. Each works in a schema of its own (`keel_test_<random>`), dropped at
//! the end, so tests running in parallel never see each other's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use keel::configuration::Settings;
use keel_actors::sink::Outbox;
use keel_actors::store::{Store, StoreConfig, trees};
use keel_testkit::{TestApp, Tokens, eventually, spawn_app_with};
use secrecy::SecretString;

use crate::postgres::{Proxy, TestSchema, postgres_url, upstream, via};

/// The sink settings tests use: quick polls and short backoffs so outages heal within seconds.
pub(crate) fn sink_on(settings: &mut Settings, url: &str, schema: &str) {
    let sink = &mut settings.sink.postgres;
    sink.url = Some(SecretString::from(url.to_owned()));
    sink.schema = schema.to_owned();
    sink.batch_size = 25;
    sink.poll_interval_ms = 20;
    sink.max_backoff_ms = 400;
    sink.connect_timeout_ms = 1000;
    sink.wait_timeout_ms = 1000;
    sink.batch_timeout_ms = 3000;
}

/// Postgres holds exactly Keel's rows for `bot`: the same journal lines and fills by id (each
/// once: they are primary keys), one order version per "order" journal line, and the latest
/// version of each order as Keel shows it.
pub(crate) async fn assert_postgres_matches_keel(
    app: &TestApp,
    user: &Tokens,
    bot: u64,
    schema: &TestSchema,
) {
    let events = app.all_pages(user, bot, "events").await;
    let fills = app.all_pages(user, bot, "fills").await;
    let orders = app.all_pages(user, bot, "orders").await;
    let bot_id = i64::try_from(bot).unwrap();
    let s = &schema.name;
    let ids = |sql: String| async move {
        let rows = schema.client.query(&sql, &[&bot_id]).await.unwrap();
        rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect::<Vec<u64>>()
    };
    let pg_events =
        ids(format!("SELECT event_id FROM {s}.keel_bot_events WHERE bot_id = $1")).await;
    let pg_fills = ids(format!("SELECT fill_id FROM {s}.keel_fills WHERE bot_id = $1")).await;
    let keel_events: BTreeSet<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let keel_fills: BTreeSet<u64> = fills.iter().map(|f| f["id"].as_u64().unwrap()).collect();
    assert_eq!(pg_events.len(), keel_events.len(), "one Postgres row per journal line");
    assert_eq!(pg_events.into_iter().collect::<BTreeSet<_>>(), keel_events);
    assert_eq!(pg_fills.into_iter().collect::<BTreeSet<_>>(), keel_fills);

    let versions =
        ids(format!("SELECT seq FROM {s}.keel_order_updates WHERE bot_id = $1")).await.len();
    let order_lines = events.iter().filter(|e| e["kind"] == "order").count();
    assert_eq!(versions, order_lines, "one row per order change");
    let sql = format!("SELECT order_id, data->>'status' FROM {s}.keel_orders WHERE bot_id = $1");
    let latest = schema.client.query(&sql, &[&bot_id]).await.unwrap();
    let pg_latest: BTreeMap<u64, String> =
        latest.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1))).collect();
    let keel_latest: BTreeMap<u64, String> = orders
        .iter()
        .map(|o| (o["id"].as_u64().unwrap(), o["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(pg_latest, keel_latest);
}

#[actix_web::test]
async fn every_row_arrives_exactly_once_across_a_cut_and_restored_connection() {
    let test = "every_row_arrives_exactly_once_across_a_cut_and_restored_connection";
    let Some(url) = postgres_url(test) else { return };
    let schema = TestSchema::new(&url).await;
    let proxy = Proxy::start(upstream(&url)).await;
    let sink_url = via(&url, proxy.addr);
    let app = spawn_app_with(|s| sink_on(s, &sink_url, &schema.name)).await;
    let user = app.register("sink-outage@example.com").await;
    let bot = app.running_bot(&user).await;

    // Connected: rows flow.
    app.market_buy(&user, bot).await;
    for _ in 0..5 {
        app.place_and_cancel(&user, bot).await;
    }
    eventually(Duration::from_secs(10), "the first rows reach Postgres", || async {
        app.sink_report().await["state"] == "ok" && schema.count("keel_fills").await == 1
    })
    .await;

    // The answer to a COMMIT is lost: Postgres has the batch, the sink cannot know it. The rows
    // stay in the outbox and go again later, where Postgres ignores them.
    let rows = || async {
        schema.count("keel_bot_events").await + schema.count("keel_order_updates").await
    };
    let before = rows().await;
    proxy.lose_next_commit_answer();
    app.place_and_cancel(&user, bot).await;
    eventually(Duration::from_secs(15), "a batch committed without an answer", || async {
        proxy.answers_lost()
            && rows().await > before
            && app.sink_report().await["state"] == "degraded"
    })
    .await;
    assert!(app.sink_report().await["backlog"].as_u64().unwrap() > 0, "unanswered rows are kept");
    proxy.cut();
    proxy.restore().await;

    // Cut mid-stream: every connection dropped, new ones refused, while the bot keeps writing.
    for round in 0..30 {
        if round == 3 {
            proxy.cut();
        }
        app.place_and_cancel(&user, bot).await;
    }
    app.market_buy(&user, bot).await;
    eventually(Duration::from_secs(10), "the sink reports Postgres unreachable", || async {
        let sink = app.sink_report().await;
        sink["state"] == "degraded" && sink["last_error"].is_string()
    })
    .await;
    let waiting = app.sink_report().await["backlog"].as_u64().unwrap();
    assert!(waiting > 0, "the rows written during the outage wait in the outbox");

    // Restored: the backlog drains.
    proxy.restore().await;
    for _ in 0..5 {
        app.place_and_cancel(&user, bot).await;
    }
    eventually(Duration::from_secs(20), "the backlog drains after the restore", || async {
        let sink = app.sink_report().await;
        sink["state"] == "ok" && sink["backlog"] == 0
    })
    .await;

    // Exactly once: Postgres holds each of Keel's rows, no more, no fewer.
    assert_postgres_matches_keel(&app, &user, bot, &schema).await;
    let order_versions = schema.count("keel_order_updates").await;
    let orders = schema.count("keel_orders").await;
    assert!(orders >= 40, "the test placed its orders: {orders}");
    assert_eq!(schema.count("keel_fills").await, 2);

    // Every delivery the sink counted is one row in Postgres: nothing delivered twice.
    let total = schema.count("keel_bot_events").await
        + schema.count("keel_fills").await
        + order_versions
        + schema.count("keel_outbox_rejects").await;
    assert_eq!(app.sink_report().await["delivered"], total);
    assert_eq!(schema.count("keel_outbox_rejects").await, 0);
    assert_eq!(schema.count("keel_schema_migrations").await, 1);

    app.stop.stop();
    schema.remove().await;
}

#[actix_web::test]
async fn readiness_stays_200_while_postgres_is_unreachable_and_the_backlog_is_kept() {
    // A port nobody listens on: no PostgreSQL needed for this one.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("postgres://keel@{closed}/keel");
    let app = spawn_app_with(|s| sink_on(s, &url, "keel")).await;
    let user = app.register("sink-down@example.com").await;
    let bot = app.running_bot(&user).await;
    app.place_and_cancel(&user, bot).await;

    eventually(Duration::from_secs(10), "the sink reports its failures", || async {
        let sink = app.sink_report().await;
        sink["state"] == "degraded"
            && sink["consecutive_errors"].as_u64().unwrap_or(0) >= 2
            && sink["last_error"].is_string()
    })
    .await;
    let sink = app.sink_report().await;
    assert!(sink["backlog"].as_u64().unwrap() >= 4, "{sink}");
    assert_eq!(sink["delivered"], 0);
    assert!(sink["last_success_age_secs"].is_null(), "{sink}");
    // The error says why, and the URL (a secret) is not in it.
    let error = sink["last_error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("refused"), "{sink}");
    assert!(!error.contains("postgres://"), "{sink}");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in ["keel_sink_backlog", "keel_sink_errors_total", "keel_sink_up"] {
        assert!(metrics.contains(name), "{name} missing");
    }
    app.stop.stop();
}

#[actix_web::test]
async fn with_the_sink_off_nothing_is_queued_for_it() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register("sink-off@example.com").await;
    let bot = app.running_bot(&user).await;
    app.place_and_cancel(&user, bot).await;
    assert_eq!(app.sink_report().await["state"], "disabled");

    // Stop Keel and look at its store: orders were written, the outbox stayed empty.
    app.stop.stop();
    let config = StoreConfig::new(app.data_dir.path());
    let until = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(&config) {
            Ok(store) => break store,
            Err(err) => {
                assert!(Instant::now() < until, "the store stays locked: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(!store.tree(trees::ORDERS).unwrap().is_empty(), "the bot wrote its orders");
    assert!(!Outbox::holds_rows(&store).unwrap(), "nothing was queued for a sink that is off");
}

#[actix_web::test]
async fn a_backlog_left_by_a_stopped_keel_is_delivered_after_the_restart() {
    let test = "a_backlog_left_by_a_stopped_keel_is_delivered_after_the_restart";
    let Some(url) = postgres_url(test) else { return };
    let schema = TestSchema::new(&url).await;
    let proxy = Proxy::start(upstream(&url)).await;
    proxy.cut();
    let sink_url = via(&url, proxy.addr);
    let name = schema.name.clone();
    let app = spawn_app_with(|s| sink_on(s, &sink_url, &name)).await;
    let user = app.register("sink-restart@example.com").await;
    let bot = app.running_bot(&user).await;
    for _ in 0..3 {
        app.place_and_cancel(&user, bot).await;
    }
    let backlog = app.sink_report().await["backlog"].as_u64().unwrap();
    assert!(backlog >= 12, "orders and journal lines wait: {backlog}");

    // Restart with Postgres reachable: the outbox is counted again and drained.
    proxy.restore().await;
    let app = app.restart_with(|s| sink_on(s, &sink_url, &name)).await;
    eventually(Duration::from_secs(20), "the old backlog drains", || async {
        let sink = app.sink_report().await;
        sink["state"] == "ok" && sink["backlog"] == 0
    })
    .await;
    assert_postgres_matches_keel(&app, &user, bot, &schema).await;
    let rows = schema.count("keel_bot_events").await + schema.count("keel_order_updates").await;
    assert!(rows >= i64::try_from(backlog).unwrap(), "{rows} rows for a backlog of {backlog}");
    app.stop.stop();
    schema.remove().await;
}

#[actix_web::test]
async fn a_second_keel_cannot_feed_a_schema_another_keel_claimed() {
    let test = "a_second_keel_cannot_feed_a_schema_another_keel_claimed";
    let Some(url) = postgres_url(test) else { return };
    let schema = TestSchema::new(&url).await;
    let first = spawn_app_with(|s| sink_on(s, &url, &schema.name)).await;
    eventually(Duration::from_secs(10), "the first Keel claims the schema", || async {
        first.sink_report().await["state"] == "ok"
    })
    .await;

    // Its own store, so its ids would collide with the first one's: refused, and it says why.
    let second = spawn_app_with(|s| sink_on(s, &url, &schema.name)).await;
    eventually(Duration::from_secs(10), "the second Keel is refused", || async {
        let sink = second.sink_report().await;
        sink["state"] == "degraded"
            && sink["last_error"].as_str().is_some_and(|e| e.contains("another Keel"))
    })
    .await;
    assert_eq!(first.sink_report().await["state"], "ok");
    assert_eq!(schema.count("keel_sink_owner").await, 1);
    first.stop.stop();
    second.stop.stop();
    schema.remove().await;
}
