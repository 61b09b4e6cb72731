//! `keel store seed`: fills a stopped Keel's empty store with users, running paper bots and a
//! trading history, to measure start-up on a store of a given size.
//!
//! The store it writes is the one trading would have written, because it is written the same
//! way: users through [`Users`] with a real Argon2id hash each; bot definitions through
//! [`BotRepo::put_bot`] with the sim venue's instrument rules, as admission fills them in; and the
//! history by the bot engine itself ([`engine_for`], as a bot resumes), fed the sim venue's own
//! random walk, its effects written by [`BotRepo::persist_calls`] (one journal row per engine
//! call, the open-order index, the position and counters after each batch, and the outbox copies
//! when the Postgres sink is on). Positions therefore follow from the fills, and fills from the
//! orders.
//!
//! What differs from a store made over the API: the orders are the owner's (`manual`) rather
//! than the strategy's, so their number is exact; each bot's strategy (a slow `ema_cross`) was
//! not called while seeding; and its history is spaced [`ORDER_SPACING_MS`] apart, ending now.
//!
//! Each order is one engine call: a market order (buys and sells in turn, each filled at once),
//! except the last [`OPEN_PER_BOT`] of each bot, limit buys at half the price that stay open.
//! Engine calls are written [`CALLS_PER_WRITE`] to a transaction, bots spread over threads.

use std::sync::atomic::{AtomicU64, Ordering};

use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::Serialize;

use crate::bot::BotRepo;
use crate::bot::supervisor::engine_for;
use crate::identity::{IdentityError, Users, hash_password_blocking};
use crate::store::{Store, StoreError, trees};
use keel_core::bot::{BotMode, BotRecord, BotStatus, PaperSettings};
use keel_core::engine::{BotState, Effects};
use keel_core::market::{Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{OrderRequest, OrderStatus, Side};
use keel_venues::sim::{Instrument, SimMarket};

/// Every seeded user's password.
pub const SEED_PASSWORD: &str = "keel-seed-password";
/// Open orders each bot is left with (fewer when it has fewer orders in all).
pub const OPEN_PER_BOT: u64 = 3;
/// Engine calls written per transaction: large enough that seeding a million orders takes
/// minutes, small enough that one transaction stays a few megabytes.
pub const CALLS_PER_WRITE: usize = 256;
/// Market time between two orders of one bot.
pub const ORDER_SPACING_MS: u64 = 1_000;
/// Value of each seeded order, in quote: above the sim venue's 5-quote minimum at half price.
const ORDER_VALUE: Decimal = Decimal::from_parts(20, 0, 0, false, 0);
/// The sim walk's seed for a bot is this mixed with the bot id.
const WALK_SEED: u64 = 0x5EED;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// Users to create.
    pub users: usize,
    /// Paper bots on the sim venue, marked running, spread round-robin over the users.
    pub bots: usize,
    /// Orders in all, spread evenly over the bots, [`OPEN_PER_BOT`] of each bot's left open.
    pub orders: u64,
    /// Sim symbols the bots trade, in turn.
    pub symbols: Vec<Symbol>,
    /// `bots.max_per_user`: the seed refuses more bots than the users may hold.
    pub max_bots_per_user: usize,
    /// `bots.paper_slippage_bps`.
    pub paper_slippage_bps: Decimal,
    /// Threads writing history (at least one).
    pub threads: usize,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeedReport {
    /// Users created (emails `seed-N@example.com`, password [`SEED_PASSWORD`]).
    pub users: usize,
    /// Bots created, all running.
    pub bots: usize,
    /// Orders written.
    pub orders: u64,
    /// Of those, still open.
    pub open_orders: u64,
    /// Fills written.
    pub fills: u64,
}

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The plan cannot be carried out (nothing was written).
    #[error("{0}")]
    Plan(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user could not be created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The engine refused an order it should have taken: a bug in the seed.
    #[error("bot {bot}: {reason}")]
    Engine {
        /// The bot.
        bot: u64,
        /// What went wrong.
        reason: String,
    },
}

/// The email of seeded user `n` (from 1).
pub fn seed_email(n: usize) -> String {
    format!("seed-{n}@example.com")
}

/// Writes `plan` into `store`, which must hold no users and no bots, and flushes it.
///
/// # Errors
/// The plan is impossible or the store is not empty (nothing written), or a write failed
/// (what was written so far stays).
pub fn seed(store: &Store, repo: &BotRepo, plan: &SeedPlan) -> Result<SeedReport, SeedError> {
    check(store, plan)?;
    let users = create_users(store, plan)?;
    let now = keel_venues::now_us() / 1000;
    let mut bots = Vec::with_capacity(plan.bots);
    for n in 0..plan.bots {
        let record = bot_record(store, plan, users[n % users.len()], n, now)?;
        repo.put_bot(&record)?;
        bots.push(record);
    }
    let report = SeedReport { users: users.len(), bots: bots.len(), ..SeedReport::default() };
    let orders = AtomicU64::new(0);
    let open = AtomicU64::new(0);
    let fills = AtomicU64::new(0);
    let threads = plan.threads.clamp(1, bots.len().max(1));
    std::thread::scope(|scope| -> Result<(), SeedError> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (bots, orders, open, fills) = (&bots, &orders, &open, &fills);
                scope.spawn(move || -> Result<(), SeedError> {
                    for (n, record) in bots.iter().enumerate().skip(t).step_by(threads) {
                        let count = orders_of(plan, n);
                        let written = trade(repo, record, count, plan.paper_slippage_bps, now)?;
                        orders.fetch_add(count, Ordering::Relaxed);
                        open.fetch_add(written.open, Ordering::Relaxed);
                        fills.fetch_add(written.fills, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| SeedError::Plan("a seeding thread panicked".into()))??;
        }
        Ok(())
    })?;
    store.flush_blocking()?;
    Ok(SeedReport {
        orders: orders.into_inner(),
        open_orders: open.into_inner(),
        fills: fills.into_inner(),
        ..report
    })
}

/// Refuses a plan that cannot be carried out, or a store that is not empty.
fn check(store: &Store, plan: &SeedPlan) -> Result<(), SeedError> {
    let refuse = |why: String| Err(SeedError::Plan(why));
    if plan.users == 0 || plan.bots == 0 {
        return refuse("--users and --bots must be at least 1".into());
    }
    if plan.bots > plan.users.saturating_mul(plan.max_bots_per_user) {
        return refuse(format!(
            "{} bots need at least {} users at bots.max_per_user = {}",
            plan.bots,
            plan.bots.div_ceil(plan.max_bots_per_user.max(1)),
            plan.max_bots_per_user
        ));
    }
    if plan.symbols.is_empty() {
        return refuse("venues.sim.symbols is empty".into());
    }
    for name in [trees::USERS, trees::BOTS] {
        if !store.tree(name)?.is_empty() {
            return refuse(format!("the store already holds {name}; seed an empty store"));
        }
    }
    Ok(())
}

/// Creates the users, each with its own hash of [`SEED_PASSWORD`]; returns their ids.
fn create_users(store: &Store, plan: &SeedPlan) -> Result<Vec<u64>, SeedError> {
    let users = Users::new(store.clone())?;
    let password = SecretString::from(SEED_PASSWORD);
    let threads = plan.threads.clamp(1, plan.users);
    // Argon2id costs tens of milliseconds a hash: spread them over the threads too.
    let hashes: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let password = &password;
                scope.spawn(move || {
                    (t..plan.users)
                        .step_by(threads)
                        .map(|_| hash_password_blocking(password))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut hashes = Vec::with_capacity(plan.users);
        for worker in workers {
            hashes.extend(worker.join().map_err(|_| IdentityError::Hashing)??);
        }
        Ok::<_, IdentityError>(hashes)
    })?;
    let mut ids = Vec::with_capacity(plan.users);
    for (n, hash) in hashes.into_iter().enumerate() {
        ids.push(users.create(&seed_email(n + 1), hash)?.id);
    }
    Ok(ids)
}

/// Orders of bot `n`: an even share, the first bots taking the remainder.
fn orders_of(plan: &SeedPlan, n: usize) -> u64 {
    let bots = plan.bots as u64;
    plan.orders / bots + u64::from((n as u64) < plan.orders % bots)
}

/// The quantity worth about [`ORDER_VALUE`] at `price`, in whole lots.
fn order_qty(instrument: &Instrument, price: Decimal) -> Decimal {
    let lots = (ORDER_VALUE / (price * instrument.step_size)).ceil().max(Decimal::ONE);
    lots * instrument.step_size
}

/// Seeded bot `n`'s definition, as `POST /bots` and a start would leave it.
fn bot_record(
    store: &Store,
    plan: &SeedPlan,
    user_id: u64,
    n: usize,
    now: u64,
) -> Result<BotRecord, SeedError> {
    let symbol = plan.symbols[n % plan.symbols.len()].clone();
    let instrument = Instrument::for_symbol(symbol.clone());
    let qty = order_qty(&instrument, instrument.start_price);
    // A slow EMA cross: it trades rarely once running, as a bot left alone does.
    let params = serde_json::json!({"fast": 5000, "slow": 9000, "qty": qty.to_string()});
    let created = now.saturating_sub(orders_of(plan, n) * ORDER_SPACING_MS + ORDER_SPACING_MS);
    Ok(BotRecord {
        // As `CreateBot` numbers bots.
        id: store.next_id()? + 1,
        user_id,
        name: format!("seed-{}", n + 1),
        venue: VenueId::Sim,
        symbol,
        mode: BotMode::Paper,
        exchange_account_id: None,
        strategy: StrategySpec { kind: "ema_cross".into(), params, module_id: None },
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperSettings::default(),
        leverage: None,
        margin_type: None,
        filters: instrument.filters(),
        status: BotStatus::Running,
        status_reason: None,
        created_ts: created,
        updated_ts: created,
    })
}

/// What one bot's history holds.
struct Written {
    open: u64,
    fills: u64,
}

/// Trades `count` orders for `record` through its engine, writing the effects as a bot would.
fn trade(
    repo: &BotRepo,
    record: &BotRecord,
    count: u64,
    slippage_bps: Decimal,
    now: u64,
) -> Result<Written, SeedError> {
    let bot = record.id;
    let engine_error = |reason: String| SeedError::Engine { bot, reason };
    let mut engine = engine_for(record, BotState::default(), Vec::new(), slippage_bps, None)
        .map_err(engine_error)?;
    // The owner's orders only: the strategy is not called while seeding.
    engine.set_strategy_active(false);
    let instrument = Instrument::for_symbol(record.symbol.clone());
    let mut market = SimMarket::new(WALK_SEED ^ bot, vec![instrument.clone()]);
    let open_from = count.saturating_sub(OPEN_PER_BOT);
    let start = now.saturating_sub(count * ORDER_SPACING_MS);
    let mut calls: Vec<Effects> = Vec::with_capacity(CALLS_PER_WRITE);
    let mut written = Written { open: 0, fills: 0 };
    for k in 0..count {
        let ts = start + k * ORDER_SPACING_MS;
        let events = market
            .step(&record.symbol, ts, ts * 1000)
            .ok_or_else(|| engine_error(format!("the sim does not simulate {}", record.symbol)))?;
        let mut fx = Effects::default();
        for event in &events {
            engine.on_market(event, &mut fx);
        }
        let price = engine.mark_price().unwrap_or(instrument.start_price);
        let qty = order_qty(&instrument, price);
        let request = if k >= open_from {
            let half = (price / Decimal::TWO / instrument.tick_size).floor() * instrument.tick_size;
            OrderRequest::limit(Side::Buy, order_qty(&instrument, half), half)
        } else if engine.position().qty.is_zero() {
            OrderRequest::market(Side::Buy, qty)
        } else {
            OrderRequest::market(Side::Sell, engine.position().qty)
        };
        let order = engine
            .place_manual(request, &mut fx)
            .map_err(|r| engine_error(format!("order {k} refused: {}", r.reason)))?;
        if order.status.is_open() {
            written.open += 1;
        } else if order.status != OrderStatus::Filled {
            return Err(engine_error(format!("order {k} ended {:?}", order.status)));
        }
        written.fills += fx.fills.len() as u64;
        calls.push(fx);
        if calls.len() == CALLS_PER_WRITE {
            repo.persist_calls(bot, &calls, &engine.snapshot())?;
            calls.clear();
        }
    }
    if !calls.is_empty() {
        repo.persist_calls(bot, &calls, &engine.snapshot())?;
    }
    Ok(written)
}

/// A store in a fresh temporary directory, seeded with one user, two paper bots on BTCUSDT and
/// `orders` historical orders (one a second, ending now): what store tests start from.
#[cfg(test)]
pub(crate) fn seeded_store(orders: u64) -> (tempfile::TempDir, Store, BotRepo, SeedReport) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&crate::store::StoreConfig::new(dir.path().join("db"))).unwrap();
    let repo = BotRepo::new(&store).unwrap();
    let plan = SeedPlan {
        users: 1,
        bots: 2,
        orders,
        symbols: vec![keel_core::market::Symbol::parse("BTCUSDT").unwrap()],
        max_bots_per_user: 10,
        paper_slippage_bps: rust_decimal::Decimal::from(5),
        threads: 1,
    };
    let report = seed(&store, &repo, &plan).unwrap();
    (dir, store, repo, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn plan(users: usize, bots: usize, orders: u64) -> SeedPlan {
        SeedPlan {
            users,
            bots,
            orders,
            symbols: vec![Symbol::parse("BTCUSDT").unwrap(), Symbol::parse("ETHUSDT").unwrap()],
            max_bots_per_user: 50,
            paper_slippage_bps: Decimal::from(5),
            threads: 2,
        }
    }

    #[test]
    fn a_seeded_store_holds_running_bots_whose_positions_follow_from_their_fills() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let repo = BotRepo::new(&store).unwrap();
        let report = seed(&store, &repo, &plan(2, 3, 40)).unwrap();
        assert_eq!((report.users, report.bots, report.orders), (2, 3, 40));
        assert_eq!(report.open_orders, 9);
        assert_eq!(report.fills, 31);
        let users = Users::new(store.clone()).unwrap();
        let bots = repo.all_bots().unwrap();
        assert_eq!(bots.len(), 3);
        let owners: Vec<u64> = bots.iter().map(|b| b.user_id).collect();
        assert_eq!(owners[0], owners[2]);
        assert_ne!(owners[0], owners[1]);
        let mut orders = 0;
        for bot in &bots {
            assert_eq!(bot.status, BotStatus::Running);
            assert!(users.get(bot.user_id).unwrap().is_some());
            let open = repo.open_orders(bot.id).unwrap();
            assert_eq!(open.len(), 3, "bot {}", bot.id);
            assert!(open.iter().all(|o| o.status == OrderStatus::Accepted));
            let all = repo.orders(bot.id, 0, u64::MAX, 500).unwrap().items;
            orders += all.len();
            // The position is what the fills add up to, and the counters match the rows.
            let fills = repo.all_fills(bot.id, u64::MAX).unwrap();
            let state = repo.state(bot.id).unwrap();
            let mut position = keel_core::trading::Position {
                quote_balance: bot.paper.starting_quote,
                ..Default::default()
            };
            for fill in &fills {
                position.apply(fill.side, fill.qty, fill.price, fill.fee);
            }
            assert_eq!(state.position, position, "bot {}", bot.id);
            assert_eq!(state.last_order_id, all.len() as u64);
            assert_eq!(state.last_fill_id, fills.len() as u64);
            let journal = repo.events(bot.id, 0, u64::MAX, 500).unwrap().items;
            assert_eq!(journal.len() as u64, state.last_event_id);
        }
        assert_eq!(orders, 40);
    }

    #[test]
    fn seeding_refuses_a_store_that_is_not_empty_and_too_many_bots_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let repo = BotRepo::new(&store).unwrap();
        let crowded = SeedPlan { max_bots_per_user: 2, ..plan(1, 3, 3) };
        assert!(matches!(seed(&store, &repo, &crowded), Err(SeedError::Plan(_))));
        assert!(store.tree(trees::USERS).unwrap().is_empty());
        seed(&store, &repo, &plan(1, 1, 1)).unwrap();
        assert!(matches!(seed(&store, &repo, &plan(1, 1, 1)), Err(SeedError::Plan(_))));
    }
}
