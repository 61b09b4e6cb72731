//! The Postgres sink over TLS (`sink.postgres.sslmode = "verify-full"`) against the local server,
//! whose certificate `.ci/run` issues from a CA of its own for DNS `localhost` and IP `127.0.0.1`
//! only: with that CA rows arrive over TLS; with another CA, or under a name the certificate does
//! not hold, the connection is refused, the sink says why and reports itself down, and Keel goes
//! on serving.
//!
//! They read the CAs from `KEEL_TEST_POSTGRES_TLS_CA` and `KEEL_TEST_POSTGRES_TLS_OTHER_CA` (and
//! the server from `KEEL_TEST_POSTGRES_URL`), and say they were skipped when those are unset.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use keel::configuration::{PgSslMode, Settings};
use keel_testkit::{TestApp, eventually, spawn_app_with};

use crate::postgres::{TestSchema, postgres_tls, upstream, with_host};
use crate::sink::{assert_postgres_matches_keel, sink_on};

/// The sink on `url` with TLS verified against `ca_file`.
fn sink_tls(settings: &mut Settings, url: &str, schema: &str, ca_file: &Path) {
    sink_on(settings, url, schema);
    settings.sink.postgres.sslmode = PgSslMode::VerifyFull;
    settings.sink.postgres.ca_file = ca_file.to_owned();
}

/// Whether every connection with this application name is encrypted (and there is one).
async fn encrypted(schema: &TestSchema, application: &str) -> bool {
    let sql = "SELECT coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a \
               JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1";
    schema.client.query_one(sql, &[&application]).await.unwrap().get(0)
}

/// The sink refuses the server's certificate: it is degraded on readiness, `/metrics` counts the
/// failures as `tls`, says why in words that contain `expect`, keeps the rows, and the bots
/// go on trading.
async fn assert_refused(app: &TestApp, expect: &str) {
    let user = app.register("sink-tls-refused@example.com").await;
    let bot = app.running_bot(&user).await;
    app.place_and_cancel(&user, bot).await;
    eventually(Duration::from_secs(10), "the sink reports the refused certificate", || async {
        let sink = app.sink_report().await;
        sink["state"] == "degraded"
            && sink["consecutive_errors"].as_u64().unwrap_or(0) >= 2
            && sink["last_error"].as_str().is_some_and(|e| e.contains(expect))
    })
    .await;
    let sink = app.sink_report().await;
    assert_eq!(sink["delivered"], 0, "{sink}");
    assert!(!sink["last_error"].as_str().unwrap().contains("postgres://"), "{sink}");
    // Keel is not held up by it: readiness answered 200 above, and the bot still trades.
    app.place_and_cancel(&user, bot).await;
    // Two orders placed and cancelled: four order versions and four journal lines wait.
    eventually(Duration::from_secs(10), "the rows wait in the outbox", || async {
        app.sink_report().await["backlog"].as_u64().unwrap_or(0) >= 8
    })
    .await;
    // The metrics registry is one per process, shared with the tests running beside this one
    // (whose sinks are up): `keel_sink_up` is not this app's alone, the `tls` reason is.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("keel_sink_up"), "keel_sink_up missing");
    assert!(
        metrics.lines().any(|l| l.starts_with("keel_sink_errors_total{reason=\"tls\"}")),
        "no keel_sink_errors_total{{reason=\"tls\"}}"
    );
}

#[actix_web::test]
async fn rows_arrive_over_tls_verified_against_the_configured_ca() {
    let test = "rows_arrive_over_tls_verified_against_the_configured_ca";
    let Some((url, ca, _)) = postgres_tls(test) else { return };
    let schema = TestSchema::new(&url).await;
    let port = upstream(&url).port();
    // Under the certificate's DNS name, with an application name to find the connection by.
    let application = format!("keel_tls_{}", &schema.name["keel_test_".len()..]);
    let sink_url = format!(
        "{} application_name={application}",
        with_host(&url, "localhost", Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), port)
    );
    let app = spawn_app_with(|s| sink_tls(s, &sink_url, &schema.name, &ca)).await;
    let user = app.register("sink-tls@example.com").await;
    let bot = app.running_bot(&user).await;
    app.market_buy(&user, bot).await;
    for _ in 0..3 {
        app.place_and_cancel(&user, bot).await;
    }
    eventually(Duration::from_secs(15), "the rows reach Postgres over TLS", || async {
        let sink = app.sink_report().await;
        sink["state"] == "ok" && sink["backlog"] == 0 && schema.count("keel_fills").await == 1
    })
    .await;
    assert_postgres_matches_keel(&app, &user, bot, &schema).await;
    assert!(encrypted(&schema, &application).await, "the sink's connection is not encrypted");
    app.stop.stop();

    // The certificate's IP SAN: 127.0.0.1 by address verifies too.
    let by_ip =
        format!("{} application_name={application}", with_host(&url, "127.0.0.1", None, port));
    let name = schema.name.clone();
    let app = app.restart_with(|s| sink_tls(s, &by_ip, &name, &ca)).await;
    app.place_and_cancel(&user, bot).await;
    eventually(Duration::from_secs(15), "the rows reach Postgres by IP address", || async {
        let sink = app.sink_report().await;
        sink["state"] == "ok" && sink["backlog"] == 0
    })
    .await;
    assert_postgres_matches_keel(&app, &user, bot, &schema).await;
    app.stop.stop();
    schema.remove().await;
}

#[actix_web::test]
async fn a_server_certificate_from_another_ca_is_refused_and_the_sink_reports_it() {
    let test = "a_server_certificate_from_another_ca_is_refused_and_the_sink_reports_it";
    let Some((url, _, other_ca)) = postgres_tls(test) else { return };
    let schema = TestSchema::new(&url).await;
    let sink_url = with_host(&url, "localhost", None, upstream(&url).port());
    let app = spawn_app_with(|s| sink_tls(s, &sink_url, &schema.name, &other_ca)).await;
    assert_refused(&app, "does not chain to a CA in sink.postgres.ca_file").await;
    let tables = "SELECT count(*) FROM pg_namespace WHERE nspname = $1";
    let found: i64 = schema.client.query_one(tables, &[&schema.name]).await.unwrap().get(0);
    assert_eq!(found, 0, "nothing was sent to a server that was not verified");
    app.stop.stop();
}

#[actix_web::test]
async fn a_host_name_the_server_certificate_does_not_hold_is_refused() {
    let test = "a_host_name_the_server_certificate_does_not_hold_is_refused";
    let Some((url, ca, _)) = postgres_tls(test) else { return };
    let schema = TestSchema::new(&url).await;
    // The right server and the right CA, under a name the certificate does not hold: the socket
    // goes to 127.0.0.1, the certificate is checked against `keel-wrong-name.invalid`.
    let loopback = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sink_url = with_host(&url, "keel-wrong-name.invalid", loopback, upstream(&url).port());
    let app = spawn_app_with(|s| sink_tls(s, &sink_url, &schema.name, &ca)).await;
    assert_refused(&app, "does not name the host of sink.postgres.url").await;
    app.stop.stop();
}
