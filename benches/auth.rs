//! What authentication costs: checking an access token on every request, and checking a
//! password on every login.
//!
//! - `access_token`: per-request cost, cheapest part first. `hmac_sha256_baseline` is a bare
//!   HMAC-SHA256 (orion's portable implementation) over the token's signing input;
//!   `jwt_signature_check` is `jsonwebtoken::crypto::verify` on the same token, the signature
//!   check alone as `decode` runs it (RustCrypto `hmac` + `sha2`, which use the CPU's SHA
//!   extensions where present, plus the signature's base64); `token_issuer_verify` is
//!   [`TokenIssuer::verify`] (header and claims base64 and JSON, signature, claim checks);
//!   `users_exists` and `sessions_is_active` are the extractor's two sled lookups alone;
//!   `auth_user_from_token` is the real [`AuthUser::from_token`] on a real [`AppState`], all of it
//!   together. The store holds [`USERS`] users with [`SESSIONS_PER_USER`] sessions each, so the
//!   lookups walk trees of realistic size (in sled's page cache, as a live server's would be).
//! - `password_verify`: login cost at the production Argon2id parameters (`COST` in
//!   `actors/src/identity/password.rs`: m = 19 MiB, t = 2, p = 1), through
//!   [`PasswordHasher::verify`] as the login handler calls it (semaphore, `spawn_blocking`): a
//!   correct password, a wrong one, and an unknown email (the decoy hash), which must cost the
//!   same.
//!
//! `cargo bench --bench auth`; docs/PERFORMANCE.md discusses the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor as _;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey};
use keel::auth::{AuthUser, LoginThrottle, TokenIssuer};
use keel::configuration::Settings;
use keel::state::{AppState, Identity};
use keel_actors::identity::{
    InviteStore, PasswordHasher, SessionStore, Sessions, UserStore, Users,
};
use keel_actors::store::{Store, StoreConfig};
use keel_actors::supervisor::{RestartPolicy, Supervisor};
use keel_actors::vault::VaultAddress;
use orion::hazardous::mac::hmac::sha256::{HmacSha256, SecretKey};
use secrecy::SecretString;

/// The signing secret (the configuration's minimum is 32 bytes).
const JWT_SECRET: &str = "bench-secret-bench-secret-bench-secret";
/// A password that satisfies the policy.
const PASSWORD: &str = "correct horse battery staple";
/// Users in the store.
const USERS: u64 = 1_000;
/// Sessions per user (logins pile up sessions until they expire).
const SESSIONS_PER_USER: u64 = 10;
/// Password hashes at once, as `auth.hash_concurrency = 0` gives on a 2-core machine.
const HASH_CONCURRENCY: usize = 1;
/// Password hashes allowed to wait (the default `auth.hash_queue`).
const HASH_QUEUE: usize = 256;

/// A real `AppState` over a populated store, and a valid token of one of its users.
struct Fixture {
    state: AppState,
    token: String,
    user_id: u64,
    session_id: u64,
    password_hash: String,
    /// The sled trees behind `state.identity` (the single-node backend), read directly.
    users: Users,
    sessions: Sessions,
    // Held for the bench's duration: the System runs the supervisor, the directory holds sled.
    _system: actix_rt::SystemRunner,
    _data_dir: tempfile::TempDir,
}

impl Fixture {
    /// Builds the `AppState` the way `Application::build` does, minus HTTP, secrets resolution,
    /// the vault actor and the feeds (none of which `AuthUser::from_token` touches).
    fn new() -> Self {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let vars = [
            ("KEEL__STORE__PATH", data_dir.path().display().to_string()),
            ("KEEL__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ];
        let settings = Settings::load_with_env(None, vars.map(|(k, v)| (k.to_owned(), v)))
            .expect("bench settings are valid");
        let store = Store::open(&StoreConfig::new(data_dir.path())).expect("the store opens");
        let users = Users::new(store.clone()).expect("the users tree opens");
        let sessions = Sessions::new(store.clone()).expect("the sessions tree opens");
        let identity = Identity {
            tokens: TokenIssuer::new(&settings.auth, &SecretString::from(JWT_SECRET)),
            users: UserStore::Sled(users.clone()),
            sessions: SessionStore::Sled(sessions.clone()),
            hasher: PasswordHasher::new(HASH_CONCURRENCY, HASH_QUEUE).expect("the decoy hashes"),
            throttle: LoginThrottle::new(
                settings.auth.login_attempts_per_minute_per_account,
                settings.auth.login_attempts_per_minute_per_ip,
            ),
            invites: InviteStore::Sled(
                keel_actors::identity::Invites::new(&store).expect("the invites tree opens"),
            ),
            refresh_ttl: Duration::from_secs(settings.auth.refresh_ttl_secs),
        };

        let system = actix_rt::System::new();
        let policy = RestartPolicy { max_restarts: 3, period: Duration::from_secs(10) };
        let root = system.block_on(async { Supervisor::new("root", policy).start() });

        // One real hash, shared by every user: the lookups do not read it, and login benches
        // need one real PHC string.
        let password_hash = system
            .block_on(identity.hasher.hash(SecretString::from(PASSWORD)))
            .expect("the password hashes");
        let mut target = None;
        for n in 0..USERS {
            let user = users
                .create(&format!("user{n}@example.com"), password_hash.clone())
                .expect("the user is created");
            for _ in 0..SESSIONS_PER_USER {
                let (session, _) =
                    sessions.start(user.id, identity.refresh_ttl).expect("the session starts");
                if n == USERS / 2 {
                    target = Some((user.id, session.id));
                }
            }
        }
        system.block_on(store.commit()).expect("the store commits");
        let (user_id, session_id) = target.expect("the middle user has sessions");
        let token =
            identity.tokens.issue(user_id, session_id, u64::MAX).expect("the token signs").token;

        let protection =
            Arc::new(keel::http::protect::Protection::new(&settings.protection, false));
        let store_handle = store.clone();
        let notify_store = store.clone();
        let state = AppState {
            store,
            root,
            settings: Arc::new(settings),
            identity: Arc::new(identity),
            vault: VaultAddress::default(),
            // No feeds: the extractor never touches them.
            feeds: Arc::default(),
            bots: keel_actors::bot::BotsAddress::default(),
            bots_view: Default::default(),
            sessions: Default::default(),
            ws_limits: Arc::new(keel::ws::Limits::new(1, 1, 1)),
            protection,
            sink: None,
            cluster: None,
            record: None,
            leases: None,
            user_events: None,
            backtests: keel_actors::backtest::jobs::Jobs::start(
                keel_actors::backtest::jobs::JobsConfig {
                    workers: 1,
                    queue: 1,
                    max_per_user: 1,
                    keep_finished: 1,
                },
            )
            .expect("the backtest pool starts"),
            strategies: keel_actors::strategies::Modules::open(
                &store_handle,
                keel_wasm::WasmConfig::default(),
            )
            .expect("the modules' trees open"),
            user_limits: keel_actors::bot::UserLimits::new(
                keel_actors::identity::Users::new(store_handle.clone())
                    .expect("the users tree opens"),
                Arc::new(keel_actors::bot::exposure::ExposureBook::new(None)),
            ),
            notifications: keel_actors::notify::Notifications::open(&notify_store)
                .expect("the notification trees open"),
            live: Default::default(),
        };
        Self {
            state,
            token,
            user_id,
            session_id,
            password_hash,
            users,
            sessions,
            _system: system,
            _data_dir: data_dir,
        }
    }
}

fn access_token(c: &mut Criterion, fixture: &Fixture) {
    let identity = &fixture.state.identity;
    let token = fixture.token.as_str();
    let (signing_input, signature) = token.rsplit_once('.').expect("a JWT has three parts");
    let key = SecretKey::try_from(JWT_SECRET.as_bytes()).expect("an HMAC key");
    let decoding = DecodingKey::from_secret(JWT_SECRET.as_bytes());

    // The fixture must be what it claims before any number is believed.
    let user = AuthUser::from_token(&fixture.state, token).expect("the token is accepted");
    assert_eq!((user.user_id, user.session_id), (fixture.user_id, fixture.session_id));

    let mut group = c.benchmark_group("access_token");
    group.bench_function("hmac_sha256_baseline", |b| {
        b.iter(|| HmacSha256::hmac(&key, black_box(signing_input.as_bytes())).expect("HMAC"))
    });
    group.bench_function("jwt_signature_check", |b| {
        b.iter(|| {
            let valid = jsonwebtoken::crypto::verify(
                black_box(signature),
                black_box(signing_input.as_bytes()),
                &decoding,
                Algorithm::HS256,
            );
            assert!(valid.expect("the signature decodes"), "the signature is valid");
        })
    });
    group.bench_function("token_issuer_verify", |b| {
        b.iter(|| identity.tokens.verify(black_box(token)).expect("the token verifies"))
    });
    group.bench_function("users_exists", |b| {
        b.iter(|| fixture.users.exists(black_box(fixture.user_id)).expect("the store answers"))
    });
    group.bench_function("sessions_is_active", |b| {
        b.iter(|| {
            fixture
                .sessions
                .is_active(black_box(fixture.user_id), black_box(fixture.session_id))
                .expect("the store answers")
        })
    });
    group.bench_function("auth_user_from_token", |b| {
        b.iter(|| {
            AuthUser::from_token(black_box(&fixture.state), black_box(token))
                .expect("the token is accepted")
        })
    });
    group.finish();
}

fn password_verify(c: &mut Criterion, fixture: &Fixture) {
    // A current-thread runtime, as each actix-web worker runs; hashes go to its blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let hasher = &fixture.state.identity.hasher;
    let hash = &fixture.password_hash;

    let mut group = c.benchmark_group("password_verify");
    // ~30 ms per iteration: criterion's minimum of 10 samples still gives a stable median.
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("correct_password", |b| {
        b.to_async(&runtime).iter(|| async {
            let ok = hasher.verify(Some(hash.clone()), SecretString::from(PASSWORD)).await;
            assert!(ok.expect("not overloaded"), "the right password matches");
        })
    });
    group.bench_function("wrong_password", |b| {
        b.to_async(&runtime).iter(|| async {
            let ok =
                hasher.verify(Some(hash.clone()), SecretString::from("wrong horse battery")).await;
            assert!(!ok.expect("not overloaded"), "a wrong password does not match");
        })
    });
    group.bench_function("unknown_email_decoy", |b| {
        b.to_async(&runtime).iter(|| async {
            let ok = hasher.verify(None, SecretString::from(PASSWORD)).await;
            assert!(!ok.expect("not overloaded"), "an unknown email never matches");
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let fixture = Fixture::new();
    access_token(c, &fixture);
    password_verify(c, &fixture);
}

criterion_group!(auth, benches);
criterion_main!(auth);
