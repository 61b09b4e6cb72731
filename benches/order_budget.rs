//! What the shared order budget adds to each new order (docs/CLUSTER.md, "Order budgets"),
//! against what a new order costs anyway, in the same run.
//!
//! - `order_budget/off`: what a router asks when no shared budget is set (a single node, or
//!   cluster mode off): the check's whole cost when it is off.
//! - `order_budget/nats_block_1`: the cluster budget on NATS (`KEEL_TEST_NATS_URL`), one KV
//!   compare-and-set per order (`cluster.order_budget_block = 1`, the default).
//! - `order_budget/nats_block_10`: the same reserving orders ten at a time (at most a tenth of
//!   the window's cap: 9 of Binance spot's 95), one round trip per nine orders.
//! - `order_budget/place_on_loopback_fake`: one signed new order through Binance's router to the
//!   loopback fake exchange, budget off: the floor of a new order's cost, for scale (a real
//!   exchange adds its network round trip, milliseconds).
//!
//! The budget cases ask with a synthetic venue time that moves 150 ms per order, so each 10 s
//! window takes about 67 orders, below the cap, and nothing is held back. The NATS cases are
//! skipped (and say so) without `KEEL_TEST_NATS_URL`.
//!
//! `KEEL_TEST_NATS_URL=nats://127.0.0.1:4222 cargo bench --bench order_budget`

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keel_actors::cluster::{BudgetConfig, Cluster, ClusterConfig};
use keel_core::market::{Symbol, VenueId};
use keel_core::trading::{OrderType, Side};
use keel_testkit::fake_rest::{API_KEY, FakeRest, SECRET_KEY};
use keel_testkit::routing::{new_order, signer};
use keel_venues::binance::connector::BinanceRouter;
use keel_venues::binance::rest::RestClient;
use keel_venues::budget::{AccountKey, BudgetAsk, BudgetSlot, RateLimit};
use keel_venues::routing::OrderRouter;
use rust_decimal::Decimal;
use tokio::runtime::Runtime;

/// Binance spot's limit, as the routers ask it.
const LIMITS: [RateLimit; 1] = [RateLimit::aligned(10_000, 100)];
/// How far the synthetic venue time moves per order, ms.
const STEP_MS: u64 = 150;

/// Asks `slot` for one order per iteration, the venue time moving [`STEP_MS`] each time.
fn time_takes(rt: &Runtime, slot: &BudgetSlot, clock: &AtomicU64, iters: u64) -> Duration {
    let account = AccountKey::new(VenueId::Binance, API_KEY);
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            let now_ms = clock.fetch_add(STEP_MS, Ordering::Relaxed);
            let ask = BudgetAsk {
                account: &account,
                limits: &LIMITS,
                orders: 1,
                now_ms,
                uncertainty_ms: 0,
            };
            slot.take(ask).await.expect("below the cap, nothing is held back");
        }
        started.elapsed()
    })
}

/// A slot holding a fresh cluster's budget (its own cluster name), or `None` without NATS.
fn cluster_slot(rt: &Runtime, block: u32) -> Option<BudgetSlot> {
    let url = std::env::var("KEEL_TEST_NATS_URL").ok().filter(|u| !u.trim().is_empty())?;
    let config = ClusterConfig {
        node_id: "bench".to_owned(),
        nats_url: url,
        name: format!("keelbench_{}", uuid::Uuid::new_v4().simple()),
        order_budget: BudgetConfig { block, fallback_nodes: 2 },
        users_in_postgres: false,
    };
    let cluster = rt.block_on(Cluster::connect(config)).expect("joining the bench cluster");
    let slot = BudgetSlot::default();
    slot.set(cluster.order_budget());
    Some(slot)
}

fn order_budget(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("order_budget");
    group.measurement_time(Duration::from_secs(5));
    // Venue time starts far from any real window, so runs never share a key.
    let clock = AtomicU64::new(1_000_000_000_000);

    let off = BudgetSlot::default();
    group.bench_function("off", |b| b.iter_custom(|iters| time_takes(&rt, &off, &clock, iters)));
    for block in [1, 10] {
        let Some(slot) = cluster_slot(&rt, block) else {
            eprintln!("order_budget/nats_block_{block}: skipped: KEEL_TEST_NATS_URL is not set");
            continue;
        };
        group.bench_function(format!("nats_block_{block}"), |b| {
            b.iter_custom(|iters| time_takes(&rt, &slot, &clock, iters))
        });
    }

    let fake = rt.block_on(FakeRest::start());
    let rest = RestClient::new(&keel_venues::binance::SPOT, &fake.url()).expect("an HTTP client");
    let router = BinanceRouter::new(Arc::new(rest));
    let sign = signer(API_KEY, SECRET_KEY);
    let symbol = Symbol::parse("BTCUSDT").expect("a symbol");
    let orders = AtomicU64::new(0);
    rt.block_on(router.sync_clock()).expect("the fake's clock");
    group.bench_function("place_on_loopback_fake", |b| {
        b.iter_custom(|iters| {
            // The fake's weight total never resets; near the budget the client would pause.
            fake.set_used_weight(0);
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let id = format!("keel-1-{:06}", orders.fetch_add(1, Ordering::Relaxed));
                    let order = new_order(&id, Side::Buy, OrderType::Market, Decimal::ONE);
                    black_box(
                        router.place(&symbol, &order, &*sign).await.expect("the fake fills it"),
                    );
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, order_budget);
criterion_main!(benches);
