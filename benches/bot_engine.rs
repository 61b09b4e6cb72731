//! Events per second through one bot: strategy, risk, order manager and paper fills, alone and
//! inside a running `BotActor`, each next to a baseline measured in the same run.
//!
//! Every bench handles the same 100k sim events (BTCUSDT trades and quotes, alternating, from
//! the seeded random walk of the sim venue) and reports time per 100k events. The bot runs
//! `ema_cross(5, 20)` with paper fills, in two flavours over the same events:
//!
//! - `trading`: `qty` 0.001 BTC. The fast EMA crosses the slow one every 15 trades or so, so the
//!   bot buys or sells on 3.3 % of events (3,255 market orders filled per 100k events): each
//!   time an order, its fill, journal lines and the bot's state are written to the store in one
//!   sled transaction; one flush at a time runs in the background and covers every write made
//!   before it started (the next one starts when it ends).
//! - `quiet`: `qty` 0.00001 BTC, below the 5 USDT minimum order value at this price, so the same
//!   crossings happen but the strategy never places an order: nothing is written.
//!
//! Groups:
//!
//! - `bot_engine`: `BotEngine::on_market` called directly, no actor: the bot's own work.
//! - `bot_actor_cross_arbiter`: the events sent with `try_send` (as the feed does) from a task on
//!   the System arbiter into a `BotActor` running on another `Arbiter` (thread), as the bot
//!   supervisor runs bots. Timed until the bot has handled the last event: an
//!   [`keel_actors::mailbox::ask`] for `GetLive` follows the events and is answered after them.
//!   The bot is built as `BotSupervisor::launch` builds it: a `BotRepo` over a `Store` in a
//!   temporary directory (so fills are really persisted), an empty feed slot, a lifeline and a
//!   supervisor recipient (a stub actor). Baselines, same events, same sender, same arbiter:
//!   - `baseline_actix_counter`: a bare actix actor that only counts `MarketData`, with the bot's
//!     mailbox capacity, finished by the same `ask`;
//!   - `baseline_mpsc_counter`: a tokio `mpsc` channel of the same capacity into a task that
//!     only counts, finished by a sentinel carrying a `oneshot`.
//! - `bot_actor_same_arbiter`: the same four with the receivers on the sender's own arbiter, so
//!   sending and handling share one thread (no pipelining across cores).
//!
//! The trading bot's writes become durable in the background (group commits it spawns). After
//! each of its iterations the bench waits, untimed, until the bot's durable fill id has stopped
//! moving, so that every iteration starts with no commit in flight; it prints the median time
//! from "handled" to "durable". Without that wait, commits pile up from one iteration to the
//! next, and each iteration is slower than the one before.
//!
//! When a mailbox (or channel) is full the sender yields and retries, so every event is handled:
//! a bench that dropped events would measure nothing.
//!
//! `cargo bench --bench bot_engine`; docs/PERFORMANCE.md records the numbers.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::SystemRunner;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keel_actors::bot::actor::{
    BOT_MAILBOX, BotActor, BotActorArgs, BotPaused, BotReconciled, BotResumed, GetLive,
};
use keel_actors::bot::repo::BotRepo;
use keel_actors::feed::{FeedAddress, MarketData};
use keel_actors::mailbox::{Ask, Query, ask};
use keel_actors::store::{Store, StoreConfig};
use keel_actors::supervisor::{ChildExited, Lifeline};
use keel_core::engine::{BotEngine, BotState, Effects, EngineConfig};
use keel_core::market::{MarketEvent, Symbol};
use keel_core::strategy::StrategySpec;
use keel_core::trading::InstrumentFilters;
use keel_core::trading::paper::PaperConfig;
use keel_core::trading::risk::RiskLimits;
use keel_venues::sim::{Instrument, SimMarket};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};

/// Events per iteration.
const EVENTS: usize = 100_000;
/// How long the end-of-iteration question may take; never reached unless the bot is stuck.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long a bot's durable fill id must stay put to count as settled.
const SETTLE_QUIET: Duration = Duration::from_millis(500);
/// Id of the bot under test.
const BOT_ID: u64 = 1;

fn events() -> Vec<Arc<MarketEvent>> {
    let symbol = Symbol::parse("BTCUSDT").expect("valid");
    let mut market = SimMarket::new(7, vec![Instrument::for_symbol(symbol.clone())]);
    let mut out = Vec::with_capacity(EVENTS);
    let mut ts = 1_732_000_000_000u64;
    while out.len() < EVENTS {
        ts += 5;
        for event in market.step(&symbol, ts, ts * 1000).expect("known symbol") {
            out.push(Arc::new(event));
        }
    }
    out
}

fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: Decimal::new(1, 2),
        step_size: Decimal::new(1, 5),
        min_qty: Decimal::new(1, 5),
        max_qty: Decimal::from(9000),
        min_notional: Decimal::from(5),
    }
}

/// The two bots of every group: the same strategy and events, trading or not.
#[derive(Debug, Clone, Copy)]
enum Flavour {
    /// Orders and fills on about 2.5 % of events.
    Trading,
    /// The same crossings, an order size below the minimum: no order, nothing written.
    Quiet,
}

impl Flavour {
    const ALL: [Flavour; 2] = [Flavour::Trading, Flavour::Quiet];

    fn name(self) -> &'static str {
        match self {
            Flavour::Trading => "trading",
            Flavour::Quiet => "quiet",
        }
    }

    fn qty(self) -> &'static str {
        match self {
            Flavour::Trading => "0.001",
            Flavour::Quiet => "0.00001",
        }
    }
}

fn engine(flavour: Flavour) -> BotEngine {
    let spec = StrategySpec {
        kind: "ema_cross".into(),
        params: serde_json::json!({"fast": 5, "slow": 20, "qty": flavour.qty()}),
        module_id: None,
    };
    let strategy = keel_core::strategy::build(&spec, &filters()).expect("valid params");
    let config = EngineConfig {
        bot_id: BOT_ID,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: Decimal::TEN, slippage_bps: Decimal::from(5) },
        allow_short: false,
        futures: None,
        live: false,
    };
    let state = BotState {
        position: keel_core::trading::Position {
            quote_balance: Decimal::from(1_000_000_000),
            ..Default::default()
        },
        ..Default::default()
    };
    BotEngine::new(config, state, strategy, Vec::new())
}

/// Runs the engine once over `events` and checks that the flavour does what it says: how many
/// events left something to store, and how many fills there were.
fn check_flavour(flavour: Flavour, events: &[Arc<MarketEvent>]) {
    let mut engine = engine(flavour);
    let mut fx = Effects::default();
    let (mut writes, mut fills) = (0, 0);
    for event in events {
        engine.on_market(event, &mut fx);
        writes += usize::from(!fx.is_empty());
        fills += fx.fills.len();
        fx.clear();
    }
    eprintln!(
        "{}: {writes} of {} events leave effects to store, {fills} fills",
        flavour.name(),
        events.len()
    );
    match flavour {
        Flavour::Trading => assert!(fills > 100, "the trading bot hardly trades"),
        Flavour::Quiet => assert_eq!(writes, 0, "the quiet bot writes"),
    }
}

fn bench_engine(c: &mut Criterion, events: &[Arc<MarketEvent>]) {
    let mut group = c.benchmark_group("bot_engine");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for flavour in Flavour::ALL {
        check_flavour(flavour, events);
        group.bench_function(flavour.name(), |b| {
            b.iter_batched(
                || engine(flavour),
                |mut engine| {
                    let mut fx = Effects::default();
                    let mut fills = 0;
                    for event in events {
                        engine.on_market(event, &mut fx);
                        fills += fx.fills.len();
                        fx.clear();
                    }
                    black_box(fills)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Stands in for the bot supervisor: a bot that pauses or exits during a bench is a bug.
struct SupervisorStub;

impl Actor for SupervisorStub {
    type Context = Context<Self>;
}

impl Handler<BotPaused> for SupervisorStub {
    type Result = ();

    fn handle(&mut self, paused: BotPaused, _: &mut Context<Self>) {
        eprintln!("bot {} paused itself during the bench: {}", paused.bot_id, paused.reason);
    }
}

impl Handler<BotResumed> for SupervisorStub {
    type Result = ();

    fn handle(&mut self, _: BotResumed, _: &mut Context<Self>) {}
}

impl Handler<BotReconciled> for SupervisorStub {
    type Result = ();

    fn handle(&mut self, _: BotReconciled, _: &mut Context<Self>) {}
}

impl Handler<ChildExited> for SupervisorStub {
    type Result = ();

    fn handle(&mut self, exited: ChildExited, _: &mut Context<Self>) {
        if exited.reason.is_requested() {
            return; // the end of a group
        }
        eprintln!("bot {} exited during the bench: {}", exited.child, exited.reason);
    }
}

/// A paper bot actor as `BotSupervisor::launch` builds it, over a store in `dir`, started on
/// `arbiter`. Call inside the System.
fn start_bot(
    flavour: Flavour,
    dir: &Path,
    arbiter: &ArbiterHandle,
    supervisor: &Addr<SupervisorStub>,
) -> Addr<BotActor> {
    let store = Store::open(&StoreConfig::new(dir)).expect("the store opens");
    let repo = BotRepo::new(&store).expect("the bot trees open");
    let args = BotActorArgs {
        bot_id: BOT_ID,
        symbol: Symbol::parse("BTCUSDT").expect("valid"),
        engine: engine(flavour),
        paused: false,
        repo,
        feed: FeedAddress::default(),
        lifeline: Lifeline::new(BOT_ID, 1, supervisor.clone().recipient()),
        supervisor: supervisor.clone().recipient(),
        reconciled: supervisor.clone().recipient(),
        resumed: supervisor.clone().recipient(),
        breaker_paused: false,
        live: None,
        prepared: false,
        leverage: None,
        exposure: None,
        user_id: 1,
        sessions: Default::default(),
        mailbox: BOT_MAILBOX,
        start_reason: None,
        postgres: None,
        indicators: Default::default(),
    };
    BotActor::start_in_arbiter(arbiter, move |_| BotActor::new(args))
}

/// How many events a [`Counter`] has handled.
#[derive(Debug, Clone, Copy)]
struct Count;

impl Query for Count {
    type Answer = u64;
}

/// Baseline: a bare actix actor that counts market data, nothing else.
struct Counter {
    seen: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(BOT_MAILBOX);
    }
}

impl Handler<MarketData> for Counter {
    type Result = ();

    fn handle(&mut self, data: MarketData, _: &mut Context<Self>) {
        black_box(&data.0.exchange_ts);
        self.seen += 1;
    }
}

impl Handler<Ask<Count>> for Counter {
    type Result = ();

    fn handle(&mut self, ask: Ask<Count>, _: &mut Context<Self>) {
        ask.reply(self.seen);
    }
}

/// What the baseline channel carries: an event, or the question that ends an iteration.
enum Item {
    Event(MarketData),
    Done(oneshot::Sender<u64>),
}

/// Baseline: a task that counts what comes through a tokio channel.
async fn count_task(mut items: mpsc::Receiver<Item>) {
    let mut seen = 0u64;
    while let Some(item) = items.recv().await {
        match item {
            Item::Event(data) => {
                black_box(&data.0.exchange_ts);
                seen += 1;
            }
            Item::Done(reply) => {
                let _ = reply.send(seen);
            }
        }
    }
}

/// Asks `addr`, yielding and asking again while its mailbox is full (the events just sent may
/// still fill it).
async fn ask_when_room<A, Q>(addr: &Addr<A>, query: impl Fn() -> Q) -> Q::Answer
where
    A: Actor<Context = Context<A>> + Handler<Ask<Q>>,
    Q: Query,
{
    loop {
        match ask(addr, query(), DEADLINE, "under test").await {
            Ok(answer) => return answer,
            Err(keel_actors::mailbox::AskError::Full { .. }) => tokio::task::yield_now().await,
            Err(err) => panic!("no answer: {err}"),
        }
    }
}

/// Where a bench sends its events.
#[derive(Clone)]
enum Sink {
    /// A bot, and for a bot that writes, where the time from "handled" to "durable" of each
    /// iteration is recorded (each iteration then waits, untimed, for its writes).
    Bot(Addr<BotActor>, Option<Lags>),
    Actor(Addr<Counter>),
    Channel(mpsc::Sender<Item>),
}

impl Sink {
    /// Offers one event without waiting; gives it back when the mailbox is full.
    fn offer(&self, data: MarketData) -> Option<MarketData> {
        let full = |data| Some(data);
        match self {
            Sink::Bot(addr, _) => match addr.try_send(data) {
                Ok(()) => None,
                Err(SendError::Full(data)) => full(data),
                Err(SendError::Closed(_)) => panic!("the bot stopped"),
            },
            Sink::Actor(addr) => match addr.try_send(data) {
                Ok(()) => None,
                Err(SendError::Full(data)) => full(data),
                Err(SendError::Closed(_)) => panic!("the counter stopped"),
            },
            Sink::Channel(sender) => match sender.try_send(Item::Event(data)) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(Item::Event(data))) => full(data),
                Err(_) => panic!("the counting task stopped"),
            },
        }
    }

    /// Returns once the receiver has handled everything sent before.
    async fn settle(&self) {
        match self {
            Sink::Bot(addr, _) => {
                black_box(ask_when_room(addr, || GetLive).await);
            }
            Sink::Actor(addr) => {
                black_box(ask_when_room(addr, || Count).await);
            }
            Sink::Channel(sender) => {
                let (reply, answer) = oneshot::channel();
                sender.send(Item::Done(reply)).await.unwrap_or_else(|_| panic!("task stopped"));
                black_box(answer.await.expect("the counting task answers"));
            }
        }
    }
}

/// Durability lags of a writing bot's iterations.
type Lags = Arc<std::sync::Mutex<Vec<Duration>>>;

/// Sends `iters` × the events to `sink` from a task on `system`'s arbiter, yielding whenever
/// the mailbox is full, and returns the time until the receiver has handled the last one of each
/// iteration. For a writing bot, each iteration then waits (untimed) until its writes are
/// durable and records how long after "handled" that was, so every iteration starts with no
/// commit in flight.
fn time_events(
    system: &SystemRunner,
    sink: &Sink,
    events: &Arc<Vec<Arc<MarketEvent>>>,
    iters: u64,
) -> Duration {
    let (sink, events) = (sink.clone(), events.clone());
    system.block_on(async move {
        actix_rt::spawn(async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for event in events.iter() {
                    let mut data = MarketData(event.clone());
                    while let Some(back) = sink.offer(data) {
                        data = back;
                        tokio::task::yield_now().await;
                    }
                }
                sink.settle().await;
                timed += start.elapsed();
                if let Sink::Bot(bot, Some(lags)) = &sink {
                    let lag = settle_durable(bot).await;
                    lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(lag);
                }
            }
            timed
        })
        .await
        .expect("the sending task runs to the end")
    })
}

/// Temporary directories of the bots' stores, removed at the end.
struct Stores(Vec<tempfile::TempDir>);

impl Stores {
    fn dir(&mut self) -> std::path::PathBuf {
        let dir = tempfile::tempdir().expect("temporary store directory");
        let path = dir.path().to_owned();
        self.0.push(dir);
        path
    }
}

/// The four actor benches with receivers on `arbiter`: two bots, the two baselines.
fn actor_group(
    c: &mut Criterion,
    name: &str,
    system: &SystemRunner,
    arbiter: &ArbiterHandle,
    events: &Arc<Vec<Arc<MarketEvent>>>,
    stores: &mut Stores,
) {
    let supervisor = system.block_on(async { SupervisorStub.start() });
    let mut sinks = Vec::new();
    let counter =
        system.block_on(async { Counter::start_in_arbiter(arbiter, |_| Counter { seen: 0 }) });
    sinks.push(("baseline_actix_counter".to_owned(), Sink::Actor(counter)));
    let (sender, items) = mpsc::channel(BOT_MAILBOX);
    arbiter.spawn(count_task(items));
    sinks.push(("baseline_mpsc_counter".to_owned(), Sink::Channel(sender)));
    // The quiet bot before the trading one: a trading bot leaves commits in flight that would
    // take CPU from whatever is measured next (see `settle_durable`).
    for flavour in [Flavour::Quiet, Flavour::Trading] {
        let dir = stores.dir();
        let bot = system.block_on(async { start_bot(flavour, &dir, arbiter, &supervisor) });
        let lags = matches!(flavour, Flavour::Trading).then(Lags::default);
        sinks.push((format!("actor_{}", flavour.name()), Sink::Bot(bot, lags)));
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (bench, sink) in &sinks {
        group.bench_function(bench.as_str(), |b| {
            b.iter_custom(|iters| time_events(system, sink, events, iters))
        });
        if let Sink::Bot(_, Some(lags)) = sink {
            let mut lags = lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            lags.sort_unstable();
            if let (Some(median), Some(max)) = (lags.get(lags.len() / 2), lags.last()) {
                eprintln!(
                    "{name}/{bench}: last write durable {median:.2?} after the last event was \
                     handled (median of {} iterations, max {max:.2?})",
                    lags.len()
                );
            }
        }
    }
    group.finish();
    // Stop the bots (they save their state) before their arbiter goes away.
    for (_, sink) in &sinks {
        if let Sink::Bot(bot, _) = sink {
            system.block_on(async {
                let _ = bot.send(keel_actors::supervisor::Stop).await;
                let deadline = Instant::now() + DEADLINE;
                while bot.connected() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    }
    drop(sinks);
    drop(supervisor);
}

/// Waits until a bot has no commit left in flight: its durable fill id has not moved for
/// [`SETTLE_QUIET`]. Returns when it last moved, from the call (at most [`DEADLINE`]).
///
/// A trading bot keeps one flush in flight and queues what its writes leave to do behind it;
/// the flush that covers the last write may still be running when the last event has been
/// handled, and would take CPU from whatever is measured next.
async fn settle_durable(bot: &Addr<BotActor>) -> Duration {
    let start = Instant::now();
    let mut last = None;
    let mut since = Instant::now();
    while start.elapsed() < DEADLINE {
        let durable = ask_when_room(bot, || GetLive).await;
        if last != Some(durable.durable_fill_id) {
            last = Some(durable.durable_fill_id);
            since = Instant::now();
        } else if since.elapsed() >= SETTLE_QUIET {
            return since - start;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let events = Arc::new(events());
    bench_engine(c, &events);

    let mut stores = Stores(Vec::new());
    let system = actix_rt::System::new();
    let arbiter = Arbiter::new();
    actor_group(c, "bot_actor_cross_arbiter", &system, &arbiter.handle(), &events, &mut stores);
    let own = system.block_on(async { Arbiter::current() });
    actor_group(c, "bot_actor_same_arbiter", &system, &own, &events, &mut stores);
    arbiter.stop();
    arbiter.join().expect("bot arbiter");
}

criterion_group! {
    name = bot;
    // Two noisy cores: enough samples for a stable median, few enough to finish in minutes.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    targets = benches
}
criterion_main!(bot);
