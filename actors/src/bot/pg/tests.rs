//! The Postgres bot store against the server at `KEEL_TEST_POSTGRES_URL`, each test in a
//! database of its own (skipped, and saying so, without the variable).

use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::pg::test_db::TestDb;
use crate::store::retention::RetentionConfig;
use crate::store::trees;
use keel_core::bot::{BotMode, BotStatus, PaperSettings};
use keel_core::engine::BotEventKind;
use keel_core::market::{Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{InstrumentFilters, Liquidity, OrderOrigin, OrderStatus, OrderType, Side};

/// A migrated database and a pool on it.
async fn record(test: &str) -> Option<(TestDb, PgRecord)> {
    let db = TestDb::create(test).await?;
    let record = PgRecord::connect(&db.config).await.expect("connects and migrates");
    Some((db, record))
}

/// Adds a user and returns its id.
async fn user(record: &PgRecord, email: &str) -> u64 {
    let client = record.client().await.unwrap();
    let row = client
        .query_one(
            "INSERT INTO keel_users (email, password_hash, created_at_ms) VALUES ($1, 'x', 0)
             RETURNING id",
            &[&email],
        )
        .await
        .unwrap();
    from_db(row.get(0)).unwrap()
}

/// Gives `user`'s lease to `holder` at `epoch`, for ten seconds.
async fn lease(record: &PgRecord, user: u64, holder: &str, epoch: i64) {
    let client = record.client().await.unwrap();
    client
        .execute(
            "INSERT INTO keel_user_leases (user_id, holder, epoch, expires_at)
             VALUES ($1, $2, $3, clock_timestamp() + interval '10 seconds')
             ON CONFLICT (user_id) DO UPDATE
             SET holder = $2, epoch = $3, expires_at = clock_timestamp() + interval '10 seconds'",
            &[&to_db(user).unwrap(), &holder, &epoch],
        )
        .await
        .unwrap();
}

fn definition(user_id: u64, name: &str) -> BotRecord {
    BotRecord {
        id: 0,
        user_id,
        name: name.into(),
        venue: VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        mode: BotMode::Paper,
        exchange_account_id: None,
        strategy: StrategySpec {
            kind: "dca".into(),
            params: json!({"qty": "0.001"}),
            module_id: None,
        },
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperSettings::default(),
        leverage: None,
        margin_type: None,
        filters: InstrumentFilters::default(),
        status: BotStatus::Running,
        status_reason: None,
        created_ts: 1,
        updated_ts: 1,
    }
}

fn order(bot_id: BotId, id: u64, status: OrderStatus) -> Order {
    Order {
        id,
        bot_id,
        client_order_id: format!("keel-{bot_id}-{id:06}"),
        side: Side::Buy,
        order_type: OrderType::limit(Decimal::new(100_001, 1)),
        qty: Decimal::new(1, 3),
        filled_qty: Decimal::ZERO,
        avg_fill_price: Decimal::ZERO,
        status,
        origin: OrderOrigin::Strategy,
        tag: 0,
        oco_with: None,
        venue_list: None,
        reason: None,
        created_ts: id,
        updated_ts: id * 1000,
    }
}

fn fill(bot_id: BotId, id: u64, order_id: u64) -> Fill {
    Fill {
        id,
        bot_id,
        order_id,
        side: Side::Buy,
        // Exact decimals that a float would not keep.
        price: Decimal::new(1_000_012_345_678_901, 10),
        qty: Decimal::new(1, 3),
        fee: Decimal::new(1, 8),
        liquidity: Liquidity::Taker,
        tag: 0,
        ts: id * 1000,
        commission: None,
    }
}

fn line(id: u64, message: &str) -> BotEvent {
    BotEvent {
        id,
        ts: id * 1000,
        kind: BotEventKind::Log { level: "info".into(), message: message.into() },
    }
}

/// One flush of a bot that placed orders 1 and 2, had 1 filled (fill 1), and logged lines 1-2.
fn trade(bot_id: BotId) -> (Effects, BotState) {
    let mut fx = Effects::default();
    fx.orders.push(order(bot_id, 1, OrderStatus::Accepted));
    let mut filled = order(bot_id, 1, OrderStatus::Filled);
    filled.filled_qty = filled.qty;
    fx.orders.push(filled);
    fx.orders.push(order(bot_id, 2, OrderStatus::Accepted));
    fx.fills.push(fill(bot_id, 1, 1));
    fx.events.extend([line(1, "placed"), line(2, "filled")]);
    let mut state = BotState::default();
    state.position.quote_balance = Decimal::new(9_999_899_998_765, 9);
    (state.last_order_id, state.last_fill_id, state.last_event_id) = (2, 1, 2);
    state.strategy = Some(json!({"next_buy_ms": 123}));
    (fx, state)
}

async fn count(record: &PgRecord, table: &str) -> i64 {
    let client = record.client().await.unwrap();
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

const TABLES: [&str; 4] =
    ["keel_bot_orders", "keel_bot_fills", "keel_bot_journal", "keel_bot_positions"];

#[tokio::test]
async fn bots_are_created_listed_edited_and_deleted() {
    let Some((db, record)) = record("pg_bots_crud").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let (ada, bob) =
        (user(&record, "ada@example.com").await, user(&record, "bob@example.com").await);
    let one = repo.create_bot(&definition(ada, "one"), None).await.unwrap();
    let two = repo.create_bot(&definition(bob, "two"), None).await.unwrap();
    let three = repo.create_bot(&definition(ada, "three"), None).await.unwrap();
    assert!(one.id >= 1 && two.id > one.id && three.id > two.id, "{one:?} {two:?} {three:?}");
    assert_eq!(repo.bot(one.id).await.unwrap().as_ref(), Some(&one));
    assert_eq!(repo.bot(one.id).await.unwrap().unwrap().id, one.id, "the stored id is the new one");
    assert_eq!(repo.bots_of(ada).await.unwrap(), [one.clone(), three.clone()]);
    assert_eq!(repo.bots_of(bob).await.unwrap(), [two]);
    assert_eq!(repo.all_bots().await.unwrap().len(), 3);
    // An edit replaces the definition.
    let mut edited = one.clone();
    edited.name = "renamed".into();
    assert!(repo.put_bot(&edited, None).await.unwrap());
    assert_eq!(repo.bot(one.id).await.unwrap().unwrap().name, "renamed");
    let mut missing = edited.clone();
    missing.id = 999;
    assert!(!repo.put_bot(&missing, None).await.unwrap());
    // An owner who does not exist is refused, not invented.
    let orphan = repo.create_bot(&definition(424_242, "orphan"), None).await;
    assert!(matches!(orphan, Err(PgBotError::Record(_))), "{orphan:?}");
    // Deleting takes the bot's records with it.
    let (fx, state) = trade(one.id);
    repo.persist(one.id, &fx, &state, None).await.unwrap();
    assert!(repo.delete_bot(one.id, None).await.unwrap());
    assert!(!repo.delete_bot(one.id, None).await.unwrap());
    assert_eq!(repo.bot(one.id).await.unwrap(), None);
    for table in TABLES {
        assert_eq!(count(&record, table).await, 0, "{table}");
    }
    assert_eq!(repo.bots_of(ada).await.unwrap(), [three]);
    drop((repo, record));
    db.drop_db().await;
}

#[tokio::test]
async fn a_flush_is_stored_whole_and_read_back_by_another_node() {
    let Some((db, record)) = record("pg_bots_flush").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    let bot = repo.create_bot(&definition(ada, "one"), None).await.unwrap();
    let (fx, state) = trade(bot.id);
    repo.persist(bot.id, &fx, &state, None).await.unwrap();
    // A second flush: order 2 is canceled, another line is logged.
    let mut more = Effects::default();
    more.orders.push(order(bot.id, 2, OrderStatus::Canceled));
    more.orders.push(order(bot.id, 3, OrderStatus::New));
    more.events.push(line(3, "canceled"));
    let mut later = state.clone();
    (later.last_order_id, later.last_event_id) = (3, 3);
    repo.persist(bot.id, &more, &later, None).await.unwrap();

    // A restarted node: its own pool, nothing in memory, everything from Postgres.
    let restarted = PgBotRepo::new(PgRecord::new(&db.config).unwrap());
    assert_eq!(restarted.all_bots().await.unwrap(), std::slice::from_ref(&bot));
    assert_eq!(restarted.state(bot.id).await.unwrap(), later);
    assert_eq!(restarted.open_orders(bot.id).await.unwrap(), [order(bot.id, 3, OrderStatus::New)]);
    let mut filled = order(bot.id, 1, OrderStatus::Filled);
    filled.filled_qty = filled.qty;
    assert_eq!(restarted.order(bot.id, 1).await.unwrap(), Some(filled), "as it ended");
    assert_eq!(restarted.all_fills(bot.id, u64::MAX).await.unwrap(), fx.fills);
    assert_eq!(
        restarted.all_fills(bot.id, u64::MAX).await.unwrap()[0].price.to_string(),
        "100001.2345678901",
        "exact"
    );
    // Pages: cut at `upto`, continued with `after`.
    let ids = |page: &Page<BotEvent>| page.items.iter().map(|e| e.id).collect::<Vec<_>>();
    let page = restarted.events(bot.id, 0, u64::MAX, 2).await.unwrap();
    assert_eq!((ids(&page), page.next_after), (vec![1, 2], Some(2)));
    let page = restarted.events(bot.id, 2, u64::MAX, 2).await.unwrap();
    assert_eq!((ids(&page), page.next_after), (vec![3], None));
    let page = restarted.events(bot.id, 0, 2, 10).await.unwrap();
    assert_eq!((ids(&page), page.next_after), (vec![1, 2], None), "not past the watermark");
    let orders = restarted.orders(bot.id, 0, u64::MAX, 10).await.unwrap();
    assert_eq!(orders.items.iter().map(|o| o.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(restarted.fills(bot.id + 1, 0, u64::MAX, 10).await.unwrap().items.is_empty());
    assert!(restarted.fills(bot.id, u64::MAX, u64::MAX, 10).await.unwrap().items.is_empty());
    assert_eq!(restarted.state(bot.id + 1).await.unwrap(), BotState::default());
    drop((repo, restarted, record));
    db.drop_db().await;
}

#[tokio::test]
async fn a_flush_that_fails_half_way_leaves_nothing() {
    let Some((db, record)) = record("pg_bots_atomic").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    let bot = repo.create_bot(&definition(ada, "one"), None).await.unwrap();
    let (mut fx, state) = trade(bot.id);
    // One statement cannot upsert a row twice: the journal statement fails (a second line 2)
    // after the orders and the fills were inserted in the same transaction.
    fx.events.push(line(2, "line 2 again"));
    let err = repo.persist(bot.id, &fx, &state, None).await.unwrap_err();
    let code = match &err {
        PgBotError::Record(err) => err.code().cloned(),
        PgBotError::Fenced(_) => None,
    };
    assert_eq!(code, Some(tokio_postgres::error::SqlState::CARDINALITY_VIOLATION), "{err:?}");
    for table in TABLES {
        assert_eq!(count(&record, table).await, 0, "{table}");
    }
    assert_eq!(repo.state(bot.id).await.unwrap(), BotState::default());
    // After a good flush, a failing one leaves the good one as it was.
    fx.events.pop();
    repo.persist(bot.id, &fx, &state, None).await.unwrap();
    let mut more = Effects::default();
    more.orders.push(order(bot.id, 2, OrderStatus::Canceled));
    more.fills.push(fill(bot.id, 2, 2));
    more.events.extend([line(3, "three"), line(3, "three again")]);
    let mut later = state.clone();
    later.last_fill_id = 2;
    assert!(repo.persist(bot.id, &more, &later, None).await.is_err());
    assert_eq!(repo.state(bot.id).await.unwrap(), state);
    assert_eq!(repo.open_orders(bot.id).await.unwrap(), [order(bot.id, 2, OrderStatus::Accepted)]);
    assert_eq!(repo.all_fills(bot.id, u64::MAX).await.unwrap(), fx.fills);
    drop((repo, record));
    db.drop_db().await;
}

#[tokio::test]
async fn bot_ids_are_unique_across_nodes() {
    let Some((db, record)) = record("pg_bots_ids").await else { return };
    let ada = user(&record, "ada@example.com").await;
    let (a, b) =
        (PgBotRepo::new(record.clone()), PgBotRepo::new(PgRecord::new(&db.config).unwrap()));
    let create = |repo: PgBotRepo| async move {
        let mut ids = Vec::new();
        for n in 0..10 {
            ids.push(repo.create_bot(&definition(ada, &format!("b{n}")), None).await.unwrap().id);
        }
        ids
    };
    let (mut ids, from_b) = tokio::join!(create(a.clone()), create(b));
    ids.extend(from_b);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 20, "{ids:?}");
    // Each stored definition carries the id it is stored under.
    for bot in a.all_bots().await.unwrap() {
        assert!(ids.contains(&bot.id));
    }
    drop((a, record));
    db.drop_db().await;
}

#[tokio::test]
async fn a_fenced_write_is_refused_and_leaves_nothing() {
    let Some((db, record)) = record("pg_bots_fence").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    lease(&record, ada, "node-a", 1).await;
    let fence = Fence { user_id: ada, node_id: "node-a".into(), epoch: 1 };
    let bot = repo.create_bot(&definition(ada, "one"), Some(&fence)).await.unwrap();
    let (fx, state) = trade(bot.id);
    repo.persist(bot.id, &fx, &state, Some(&fence)).await.unwrap();
    // Node b takes the user over at a higher epoch: node a's writes are refused.
    lease(&record, ada, "node-b", 2).await;
    let mut more = Effects::default();
    more.orders.push(order(bot.id, 3, OrderStatus::New));
    more.fills.push(fill(bot.id, 2, 2));
    more.events.push(line(3, "too late"));
    let mut later = state.clone();
    later.last_order_id = 3;
    let err = repo.persist(bot.id, &more, &later, Some(&fence)).await.unwrap_err();
    assert!(err.is_fenced(), "{err:?}");
    assert!(err.to_string().starts_with(PgBotError::FENCED_REASON), "{err}");
    assert_eq!(repo.state(bot.id).await.unwrap(), state, "the state is the last unfenced one");
    assert_eq!(repo.order(bot.id, 3).await.unwrap(), None);
    assert_eq!(repo.all_fills(bot.id, u64::MAX).await.unwrap(), fx.fills);
    assert_eq!(repo.events(bot.id, 0, u64::MAX, 10).await.unwrap().items, fx.events);
    // Definitions are fenced too.
    assert!(repo.create_bot(&definition(ada, "two"), Some(&fence)).await.unwrap_err().is_fenced());
    assert!(repo.delete_bot(bot.id, Some(&fence)).await.unwrap_err().is_fenced());
    assert_eq!(repo.bots_of(ada).await.unwrap(), std::slice::from_ref(&bot));
    // The new holder writes under its own fence.
    let fence_b = Fence { user_id: ada, node_id: "node-b".into(), epoch: 2 };
    repo.persist(bot.id, &more, &later, Some(&fence_b)).await.unwrap();
    assert_eq!(repo.state(bot.id).await.unwrap(), later);
    drop((repo, record));
    db.drop_db().await;
}

#[tokio::test]
async fn retention_removes_old_rows_but_never_open_orders_or_state_and_figures_follow() {
    let Some((db, record)) = record("pg_bots_prune").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    let bot = repo.create_bot(&definition(ada, "one"), None).await.unwrap();
    let (fx, state) = trade(bot.id);
    repo.persist(bot.id, &fx, &state, None).await.unwrap();
    // Order 1 (final) was updated at 1000, order 2 (open) at 2000; fill 1 at 1000; lines at
    // 1000 and 2000.
    let pruned = repo.prune(Some(1001), Some(5000), Some(1500)).await.unwrap();
    assert_eq!(pruned, Some(Pruned { fills: 1, orders: 1, events: 1 }));
    assert_eq!(repo.open_orders(bot.id).await.unwrap(), [order(bot.id, 2, OrderStatus::Accepted)]);
    assert!(repo.all_fills(bot.id, u64::MAX).await.unwrap().is_empty());
    let left = repo.events(bot.id, 0, u64::MAX, 10).await.unwrap().items;
    assert_eq!(left, [line(2, "filled")]);
    assert_eq!(repo.state(bot.id).await.unwrap(), state);
    assert_eq!(repo.prune(None, None, None).await.unwrap(), Some(Pruned::default()));
    // The figures count what is left; the day before 1500 + a day holds the rows at 2000.
    let figures = repo.figures(1500 + DAY_MS).await.unwrap();
    let rows = |kind: &str| figures[kind].rows;
    let (orders, fills, events) =
        (&figures[trees::ORDERS], &figures[trees::FILLS], &figures[trees::EVENTS]);
    assert_eq!((rows(trees::BOTS), rows(trees::POSITIONS)), (1, 1));
    assert_eq!((orders.rows, fills.rows, events.rows), (1, 0, 1));
    assert_eq!(
        (orders.oldest_ms, fills.oldest_ms, events.oldest_ms),
        (Some(2000), None, Some(2000))
    );
    assert_eq!(fills.growth_bytes_per_day, Some(0));
    assert!(events.growth_bytes_per_day.unwrap() > 0 && events.bytes > 0);
    assert!(orders.growth_bytes_per_day.unwrap() > 0);
    assert_eq!(figures[trees::BOTS].growth_bytes_per_day, None);
    let later = repo.figures(2500 + DAY_MS).await.unwrap();
    assert_eq!(later[trees::EVENTS].growth_bytes_per_day, Some(0), "older than a day");
    drop((repo, record));
    db.drop_db().await;
}

/// A paper bot's engine trades on the sim market (market orders that fill, limit orders left
/// open), each call written to sled and to Postgres alike; a restarted node then rebuilds the
/// engine from Postgres alone, as the supervisor rebuilds it from sled.
#[tokio::test]
async fn a_trading_engine_is_rebuilt_from_postgres_as_from_sled() {
    use crate::bot::BotRepo;
    use crate::bot::supervisor::engine_for;
    use crate::store::{Store, StoreConfig};
    use keel_core::trading::OrderRequest;
    use keel_venues::sim::{Instrument, SimMarket};

    let Some((db, record)) = record("pg_bots_rebuild").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    let instrument = Instrument::for_symbol(Symbol::parse("BTCUSDT").unwrap());
    let mut bot = definition(ada, "trader");
    bot.strategy = StrategySpec {
        kind: "ema_cross".into(),
        params: json!({"fast": 5, "slow": 9, "qty": "0.001"}),
        module_id: None,
    };
    bot.filters = instrument.filters();
    let bot = repo.create_bot(&bot, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    let sled = BotRepo::new(&store).unwrap();
    sled.put_bot(&bot).unwrap();

    let slippage = Decimal::from(5);
    let mut engine = engine_for(&bot, BotState::default(), Vec::new(), slippage, None).unwrap();
    engine.set_strategy_active(false);
    let mut market = SimMarket::new(7, vec![instrument.clone()]);
    let qty = Decimal::new(1, 3);
    for k in 0..12u64 {
        let ts = 1_700_000_000_000 + k * 1000;
        let mut fx = Effects::default();
        for event in market.step(&bot.symbol, ts, ts * 1000).unwrap() {
            engine.on_market(&event, &mut fx);
        }
        let price = engine.mark_price().unwrap_or(instrument.start_price);
        let request = if k % 4 == 3 {
            // Far below the market: stays open.
            let half = (price / Decimal::TWO / instrument.tick_size).floor() * instrument.tick_size;
            OrderRequest::limit(Side::Buy, qty, half)
        } else if engine.position().qty.is_zero() {
            OrderRequest::market(Side::Buy, qty)
        } else {
            OrderRequest::market(Side::Sell, engine.position().qty)
        };
        engine.place_manual(request, &mut fx).unwrap();
        let state = engine.snapshot();
        sled.persist(bot.id, &fx, &state).unwrap();
        repo.persist(bot.id, &fx, &state, None).await.unwrap();
    }
    let fills = sled.all_fills(bot.id, u64::MAX).unwrap();
    assert!(fills.len() >= 6, "the market orders filled: {}", fills.len());
    assert_eq!(engine.open_orders().len(), 3);
    let lines = sled.events(bot.id, 0, u64::MAX, 500).unwrap().items.len();
    assert!(lines > 10, "the engine journaled its orders and fills: {lines}");

    // The restarted node: a pool of its own, and nothing but Postgres.
    let restarted = PgBotRepo::new(PgRecord::new(&db.config).unwrap());
    let stored = restarted.bot(bot.id).await.unwrap().unwrap();
    let state = restarted.state(bot.id).await.unwrap();
    let open = restarted.open_orders(bot.id).await.unwrap();
    let rebuilt = engine_for(&stored, state, open, slippage, None).unwrap();
    assert_eq!(rebuilt.snapshot(), engine.snapshot());
    assert_eq!(rebuilt.open_orders(), engine.open_orders());
    // Every read answers as sled's does.
    assert_eq!(restarted.all_fills(bot.id, u64::MAX).await.unwrap(), fills);
    for (after, limit) in [(0, 500), (0, 5), (5, 5), (20, 5)] {
        let (pg, sl) = (
            restarted.orders(bot.id, after, u64::MAX, limit).await.unwrap(),
            sled.orders(bot.id, after, u64::MAX, limit).unwrap(),
        );
        assert_eq!((pg.items, pg.next_after), (sl.items, sl.next_after), "orders {after} {limit}");
        let (pg, sl) = (
            restarted.events(bot.id, after, 10, limit).await.unwrap(),
            sled.events(bot.id, after, 10, limit).unwrap(),
        );
        assert_eq!((pg.items, pg.next_after), (sl.items, sl.next_after), "events {after} {limit}");
    }
    assert_eq!(restarted.open_orders(bot.id).await.unwrap(), sled.open_orders(bot.id).unwrap());
    drop((repo, restarted, record));
    db.drop_db().await;
}

/// One day, in milliseconds.
const DAY_MS: u64 = 86_400_000;

#[tokio::test]
async fn one_node_at_a_time_sweeps_with_the_retention_settings() {
    let Some((db, record)) = record("pg_bots_sweep_lock").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    let bot = repo.create_bot(&definition(ada, "one"), None).await.unwrap();
    let (fx, state) = trade(bot.id);
    repo.persist(bot.id, &fx, &state, None).await.unwrap();
    let config = RetentionConfig {
        fills_max_age: RetentionConfig::days(1),
        orders_max_age: RetentionConfig::days(1),
        bot_events_max_age: std::time::Duration::ZERO,
        recordings_days: 0,
        archive_dir: None,
        record_dir: None,
        every: std::time::Duration::from_secs(60),
    };
    // Another node is sweeping (holds the lock on its own connection): this one skips.
    let other = record.client().await.unwrap();
    other.execute("SELECT pg_advisory_lock($1)", &[&SWEEP_LOCK]).await.unwrap();
    assert_eq!(repo.sweep(&config, 5000 + DAY_MS).await.unwrap(), None);
    assert_eq!(count(&record, "keel_bot_fills").await, 1, "nothing removed while skipped");
    other.execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK]).await.unwrap();
    // Now it sweeps: the final order and the fill, never the open order nor the state; zero
    // keeps the journal, as in the sled sweep.
    let swept = repo.sweep(&config, 5000 + DAY_MS).await.unwrap();
    assert_eq!(swept, Some(Pruned { fills: 1, orders: 1, events: 0 }));
    assert_eq!(repo.open_orders(bot.id).await.unwrap(), [order(bot.id, 2, OrderStatus::Accepted)]);
    assert_eq!(count(&record, "keel_bot_journal").await, 2);
    assert_eq!(repo.state(bot.id).await.unwrap(), state);
    // The sweep's connection was closed with its lock: another session takes it at once.
    let taken: bool =
        other.query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK]).await.unwrap().get(0);
    assert!(taken, "the sweep left its lock held");
    drop((other, repo, record));
    db.drop_db().await;
}

#[tokio::test]
async fn a_nul_in_a_journal_line_or_a_venue_message_is_written_replaced() {
    let Some((db, record)) = record("pg_bots_nul").await else { return };
    let repo = PgBotRepo::new(record.clone());
    let ada = user(&record, "ada@example.com").await;
    let mut defined = definition(ada, "one");
    defined.strategy.params = json!({"note\u{0}": "a\u{0}b"});
    let bot = repo.create_bot(&defined, None).await.unwrap();
    let (mut fx, state) = trade(bot.id);
    fx.events.push(line(3, "venue said: bad\u{0}symbol"));
    fx.orders[2].reason = Some("rejected\u{0}".into());
    repo.persist(bot.id, &fx, &state, None).await.expect("written despite the NULs");
    let lines = repo.events(bot.id, 0, u64::MAX, 10).await.unwrap().items;
    assert_eq!(lines.last(), Some(&line(3, "venue said: bad\u{FFFD}symbol")));
    let open = repo.open_orders(bot.id).await.unwrap();
    assert_eq!(open[0].reason.as_deref(), Some("rejected\u{FFFD}"));
    let stored = repo.bot(bot.id).await.unwrap().unwrap();
    assert_eq!(stored.strategy.params, json!({"note\u{FFFD}": "a\u{FFFD}b"}));
    drop((repo, record));
    db.drop_db().await;
}
