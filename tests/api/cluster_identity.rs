//! Identity on the cluster's Postgres (`cluster.postgres_url`): two nodes on one database
//! (`KEEL_TEST_POSTGRES_URL`, a database of the test's own) and one NATS
//! (`KEEL_TEST_NATS_URL`). A user registered on one node logs in on the other, and a session
//! ended on one node is refused on both; a node cut off from Postgres answers 503 in the JSON
//! error shape instead of hanging, and is not ready.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keel_actors::identity::Users;
use keel_actors::store::{Store, StoreConfig};
use keel_testkit::{PASSWORD, TestApp, assert_error, eventually, spawn_app_with};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::postgres::{Proxy, postgres_url, upstream, via};
use crate::ws::{connect, expect_closed, expect_type};

/// The vault master key every test node of a cluster shares (a node whose key differs from the
/// one the cluster recorded refuses to start).
pub(crate) const CLUSTER_MASTER_KEY: &str = "h4ZnLlmaVi6Z/2K3ZvgVLzoEajfN2fCFVeQavCYzYM4=";

/// A database of the test's own, dropped at the end.
pub(crate) struct Database {
    name: String,
    admin: tokio_postgres::Client,
    /// Where it is, without any proxy.
    pub(crate) upstream: SocketAddr,
    url: String,
}

impl Database {
    pub(crate) async fn create(test: &str) -> Option<Self> {
        let url = postgres_url(test)?;
        let (admin, connection) =
            tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connects");
        actix_web::rt::spawn(connection);
        let name = format!("keeltest_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        Some(Self { name, admin, upstream: upstream(&url), url })
    }

    /// The key=value URL of the database through `addr` (the server itself, or a proxy).
    pub(crate) fn url_via(&self, addr: SocketAddr) -> String {
        // `via` keeps the test server's database name; a later `dbname` takes its place.
        format!("{} dbname={}", via(&self.url, addr), self.name)
    }

    pub(crate) async fn drop_db(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        self.admin.batch_execute(&sql).await.unwrap();
    }

    /// The end of a test: its `nodes` stopped, then this database dropped.
    pub(crate) async fn finish(self, nodes: Vec<TestApp>) {
        for app in &nodes {
            app.stop.stop();
        }
        drop(nodes);
        self.drop_db().await;
    }
}

/// A cluster node whose identity lives in the Postgres at `postgres`.
pub(crate) async fn node(id: &str, name: &str, nats: &str, postgres: String) -> TestApp {
    node_with(id, name, nats, postgres, |_| {}).await
}

/// [`node`], with `more` settings on top.
pub(crate) async fn node_with(
    id: &str,
    name: &str,
    nats: &str,
    postgres: String,
    more: impl FnOnce(&mut keel::configuration::Settings) + Send + 'static,
) -> TestApp {
    let (id, name, nats) = (id.to_owned(), name.to_owned(), nats.to_owned());
    spawn_app_with(move |s| {
        s.cluster.enabled = true;
        s.cluster.node_id = id;
        s.cluster.nats_url = nats;
        s.cluster.name = name;
        s.cluster.postgres_url = Some(SecretString::from(postgres));
        s.cluster.advertise_url = "http://127.0.0.1:1".to_owned();
        s.vault.master_key = Some(SecretString::from(CLUSTER_MASTER_KEY));
        more(s);
    })
    .await
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": token}), None).await
}

async fn login_tokens(app: &TestApp, email: &str) -> (String, String) {
    let res = app.login(email, PASSWORD).await;
    assert_eq!(res.status().as_u16(), 200, "{email} logs in on {}", app.address);
    let body: Value = res.json().await.unwrap();
    let token = |key: &str| body[key].as_str().unwrap().to_owned();
    (token("access_token"), token("refresh_token"))
}

#[actix_web::test]
async fn a_user_registered_on_one_node_logs_in_on_another_and_logout_everywhere_ends_both() {
    let test = "cluster_identity";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let one = node("one", &name, &nats, db.url_via(db.upstream)).await;
    let two = node("two", &name, &nats, db.url_via(db.upstream)).await;

    let ada = one.register("ada@example.com").await;
    // The same email on the other node is taken: one UNIQUE constraint for the cluster.
    let again = two
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "ADA@example.com", "password": PASSWORD}),
            None,
        )
        .await;
    assert_error(again, 409, "CONFLICT").await;
    let bob = two.register("bob@example.com").await;
    assert_ne!(bob.user_id, ada.user_id, "ids from one sequence");

    // Ada logs in on node two; its token works there and on node one.
    let (access_two, refresh_two) = login_tokens(&two, "ada@example.com").await;
    let me = two.get_json("/api/v1/me", &access_two).await;
    assert_eq!(
        (me["id"].as_u64(), me["email"].as_str()),
        (Some(ada.user_id), Some("ada@example.com"))
    );
    assert_eq!(one.me_status(&access_two).await, 200);
    assert_eq!(two.me_status(&ada.access).await, 200, "node one's token works on node two");
    // A refresh token from node one rotates on node two.
    let rotated = refresh(&two, &ada.refresh).await;
    assert_eq!(rotated.status().as_u16(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let ada_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();

    // Logout everywhere on node two ends node one's session too.
    let res = two.call(Method::POST, "/api/v1/auth/logout-all", Some(&access_two)).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(two.me_status(&ada.access).await, 401, "at once on the node that revoked it");
    eventually(Duration::from_secs(5), "node one refuses the revoked access token", || async {
        one.me_status(&ada.access).await == 401
    })
    .await;
    assert_eq!(one.me_status(&access_two).await, 401);
    for token in [&ada_refresh, &refresh_two] {
        assert_error(refresh(&one, token).await, 401, "UNAUTHORIZED").await;
    }
    // Bob's session is his own.
    assert_eq!(one.me_status(&bob.access).await, 200);

    // Owners' limits stay with the node's bots: they work for a user kept in Postgres.
    let limits = json!({"max_leverage": 3, "max_notional": "1000"});
    let res = one.send(Method::PUT, "/api/v1/me/risk", Some(&limits), &bob.access).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(one.get_json("/api/v1/me/risk", &bob.access).await, limits);

    // A password change on node one: every other session ends, on node two as well.
    let (other_access, _) = login_tokens(&two, "bob@example.com").await;
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let res = one.send(Method::POST, "/api/v1/me/password", Some(&change), &bob.access).await;
    assert_eq!(res.status().as_u16(), 204);
    eventually(Duration::from_secs(5), "node two refuses bob's other session", || async {
        two.me_status(&other_access).await == 401
    })
    .await;
    assert_eq!(two.login("bob@example.com", PASSWORD).await.status().as_u16(), 401);
    assert_eq!(two.me_status(&bob.access).await, 200, "the session that changed it stays");

    // An operator resets Bob's password while both nodes run: every session ends on both.
    let mut settings = keel_testkit::test_settings(one.data_dir.path());
    settings.cluster.enabled = true;
    settings.cluster.postgres_url = Some(SecretString::from(db.url_via(db.upstream)));
    let args = keel::cli::ResetPasswordArgs {
        email: "Bob@example.com".into(),
        password_stdin: false,
        store: None,
    };
    let reset = keel::admin_cli::reset_password_in_postgres(&settings, &args, None).await.unwrap();
    assert_eq!((reset.user_id, reset.sessions_ended), (bob.user_id, 1));
    let generated = reset.generated.expect("a generated password");
    eventually(Duration::from_secs(5), "both nodes refuse bob's last session", || async {
        one.me_status(&bob.access).await == 401 && two.me_status(&bob.access).await == 401
    })
    .await;
    let res = one.login("bob@example.com", secrecy::ExposeSecret::expose_secret(&generated)).await;
    assert_eq!(res.status().as_u16(), 200, "the new password works on any node");
    let nobody = keel::cli::ResetPasswordArgs { email: "nobody@example.com".into(), ..args };
    let err = keel::admin_cli::reset_password_in_postgres(&settings, &nobody, None).await;
    assert!(format!("{:#}", err.unwrap_err()).contains("no account"));

    let ready: Value = one.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["cluster"]["postgres"], "connected", "{ready}");
    assert_eq!(ready["checks"]["cluster"]["advertise_url"], "http://127.0.0.1:1", "{ready}");

    one.stop.stop();
    two.stop.stop();
    db.drop_db().await;
}

#[actix_web::test]
async fn a_node_cut_off_from_postgres_answers_503_and_is_not_ready_until_it_is_back() {
    let test = "cluster_identity_outage";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let proxy = Proxy::start(db.upstream).await;
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let app = node("one", &name, &nats, db.url_via(proxy.addr)).await;
    let ada = app.register("ada@example.com").await;
    assert_eq!(app.me_status(&ada.access).await, 200);
    let mut socket = connect(&app, Some(&ada.access)).await.unwrap();
    expect_type(&mut socket, "authenticated").await;

    proxy.cut();
    let started = Instant::now();
    let res = app.login("ada@example.com", PASSWORD).await;
    assert!(started.elapsed() < Duration::from_secs(10), "answered, not hung");
    let body = assert_error(res, 503, "UNAVAILABLE").await;
    assert!(!body.to_string().contains("postgres://"), "{body}");
    // `/me` reads the user from Postgres: 503 at once.
    assert_error(app.call(Method::GET, "/api/v1/me", Some(&ada.access)).await, 503, "UNAVAILABLE")
        .await;
    // The bot list does not need Postgres, but the check of the session does: while the
    // revocation list is fresh the token passes; once it is stale (5 s without a read) it is
    // refused with 503, never let through.
    let bots = || async {
        app.call(Method::GET, "/api/v1/bots", Some(&ada.access)).await.status().as_u16()
    };
    eventually(Duration::from_secs(12), "a stale revocation list refuses with 503", || async {
        bots().await == 503
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(4), "not before the list is stale");
    // Nor is a WebSocket kept: closed with 1013, reconnect later.
    assert_eq!(expect_closed(&mut socket, Duration::from_secs(3)).await, Some(1013));
    let ready = app.get("/health/ready").await;
    let ready = assert_error(ready, 503, "NOT_READY").await;
    assert!(ready.to_string().contains("cluster.postgres"), "{ready}");

    proxy.restore().await;
    eventually(Duration::from_secs(10), "the token works again", || async {
        app.me_status(&ada.access).await == 200
    })
    .await;
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status().as_u16(), 200);
    app.stop.stop();
    proxy.cut();
    db.drop_db().await;
}

#[actix_web::test]
async fn a_node_whose_own_store_has_users_refuses_to_take_identity_from_postgres() {
    let test = "cluster_identity_local_users";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        Users::new(store.clone()).unwrap().create("old@example.com", "h".into()).unwrap();
        store.flush_blocking().unwrap();
    }
    let mut settings = keel_testkit::test_settings(dir.path());
    settings.cluster.enabled = true;
    settings.cluster.nats_url = nats;
    settings.cluster.name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    settings.cluster.postgres_url = Some(SecretString::from(db.url_via(db.upstream)));
    // sled lets go of its lock a moment after the last handle is dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match keel::startup::Application::build(settings.clone()).await {
            Ok(_) => panic!("a node with users of its own started on the cluster's Postgres"),
            Err(err) if format!("{err:#}").contains("holds users of its own") => break err,
            Err(err) => {
                assert!(Instant::now() < deadline, "{err:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(format!("{err:#}").contains("store.path"), "{err:#}");
    db.drop_db().await;
}
