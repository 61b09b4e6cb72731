//! Derivatives in the runtime, against a test double of a derivatives venue's router (the
//! venue's own fakes test its wire format): a bot's leverage and margin type are set at the
//! venue before it runs, and a refusal is its start's answer; the venue's position is kept
//! beside the bot's book and adopted when they differ; a funding payment is booked into the
//! bot's P&L once, by its id, whether the stream pushes it again or a catch-up after a restart
//! reads it again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_actors::bot::supervisor::{ControlBot, CreateBot, GetLiveBot};
use keel_actors::bot::{BotError, BotMode, BotRecord, BotStatus, LiveView, PaperSettings};
use keel_actors::mailbox::ask;
use keel_actors::runtime::{Runtime, stop_tree};
use keel_core::bot::{Control, MarginType};
use keel_core::engine::{BotEvent, BotEventKind};
use keel_core::market::{Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::{InstrumentFilters, Order};
use keel_venues::account::{AccountEvent, AccountStream, OwnedSigner, TaskGuard};
use keel_venues::market::InstrumentMap;
use keel_venues::routing::{
    Balance, FundingPayment, OrderReport, OrderRouter, RouteError, RouteErrorKind, RouteFuture,
    Signer, VenuePosition,
};
use rust_decimal::Decimal;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const USER: u64 = 7;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn now_ms() -> u64 {
    keel_venues::now_us() / 1000
}

/// What the double was asked and what it answers.
#[derive(Debug, Default)]
struct Venue {
    /// Every `prepare`: symbol, leverage, margin type.
    prepared: Vec<(String, u32, MarginType)>,
    /// `prepare` answers this refusal when set.
    refuse: Option<RouteError>,
    positions: Vec<VenuePosition>,
    /// The account's funding history; `funding` answers those from `since_ms` on.
    history: Vec<FundingPayment>,
    /// Every `funding` request's `since_ms`.
    funding_asked: Vec<u64>,
    /// The open account stream's sender.
    stream: Option<mpsc::Sender<AccountEvent>>,
}

/// A derivatives venue's router, as the runtime sees it, under `bybit_linear` (a venue with
/// leverage).
#[derive(Debug, Clone, Default)]
struct FakeFutures(Arc<Mutex<Venue>>);

impl FakeFutures {
    fn with<T>(&self, f: impl FnOnce(&mut Venue) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    async fn push(&self, event: AccountEvent) {
        let tx = self.with(|v| v.stream.clone()).expect("the account stream is open");
        tx.send(event).await.unwrap();
    }
}

fn no_orders() -> RouteError {
    RouteError { kind: RouteErrorKind::Rejected, message: "no orders in this test".into() }
}

impl OrderRouter for FakeFutures {
    fn venue(&self) -> VenueId {
        VenueId::BybitLinear
    }

    fn place<'a>(
        &'a self,
        _: &'a Symbol,
        _: &'a Order,
        _: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        Box::pin(async { Err(no_orders()) })
    }

    fn cancel<'a>(
        &'a self,
        _: &'a Symbol,
        _: &'a str,
        _: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        Box::pin(async { Err(no_orders()) })
    }

    fn query<'a>(
        &'a self,
        _: &'a Symbol,
        _: &'a str,
        _: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        Box::pin(async {
            Err(RouteError { kind: RouteErrorKind::NoSuchOrder, message: "unknown".into() })
        })
    }

    fn sync_clock(&self) -> RouteFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn accept_delay(&self) -> Duration {
        Duration::ZERO
    }

    fn balances<'a>(&'a self, _: Signer<'a>) -> RouteFuture<'a, Vec<Balance>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn instruments(&self) -> RouteFuture<'_, InstrumentMap> {
        Box::pin(async { Ok(InstrumentMap::new()) })
    }

    fn prepare<'a>(
        &'a self,
        symbol: &'a Symbol,
        leverage: u32,
        margin_type: MarginType,
        _: Signer<'a>,
    ) -> RouteFuture<'a, ()> {
        let refusal = self.with(|v| {
            v.prepared.push((symbol.as_str().to_owned(), leverage, margin_type));
            v.refuse.clone()
        });
        Box::pin(async move { refusal.map_or(Ok(()), Err) })
    }

    fn positions<'a>(&'a self, _: Signer<'a>) -> RouteFuture<'a, Vec<VenuePosition>> {
        let positions = self.with(|v| v.positions.clone());
        Box::pin(async move { Ok(positions) })
    }

    fn funding<'a>(
        &'a self,
        symbol: &'a Symbol,
        since_ms: u64,
        _: Signer<'a>,
    ) -> RouteFuture<'a, Vec<FundingPayment>> {
        let payments = self.with(|v| {
            v.funding_asked.push(since_ms);
            v.history
                .iter()
                .filter(|p| p.symbol == symbol.as_str() && p.time_ms >= since_ms)
                .cloned()
                .collect()
        });
        Box::pin(async move { Ok(payments) })
    }

    fn account_stream(&self, _: OwnedSigner) -> Option<AccountStream> {
        let (tx, events) = mpsc::channel(64);
        self.with(|v| v.stream = Some(tx));
        let guard = TaskGuard(tokio::spawn(std::future::pending::<()>()));
        Some(AccountStream { events, guard })
    }
}

struct Keel {
    runtime: Runtime,
    venue: FakeFutures,
    dir: tempfile::TempDir,
}

/// The runtime as Keel builds it from its test settings, with the double as `bybit_linear`'s
/// router.
async fn keel() -> Keel {
    keel_in(tempfile::tempdir().unwrap(), FakeFutures::default()).await
}

/// [`keel`] on the data directory `dir` (another Keel's, to restart it).
async fn keel_in(dir: tempfile::TempDir, venue: FakeFutures) -> Keel {
    // A Keel stopped just before releases the store's lock as its last actors stop.
    let deadline = Instant::now() + WAIT;
    let runtime = loop {
        let settings = keel_testkit::test_settings(dir.path());
        let secrets = keel::secrets::resolve(&settings).unwrap();
        let mut config = settings.runtime_config(secrets.key_ring).unwrap();
        let router: Arc<dyn OrderRouter> = Arc::new(venue.clone());
        config.routers = BTreeMap::from([(VenueId::BybitLinear, router)]);
        match Runtime::start(config).await {
            Ok(runtime) => break runtime,
            Err(err) => assert!(Instant::now() < deadline, "no start on the data: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Keel { runtime, venue, dir }
}

impl Keel {
    /// The bot supervisor, once it has started.
    async fn bots(&self) -> actix::Addr<keel_actors::bot::BotSupervisor> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(bots) = self.runtime.bots.get() {
                return bots;
            }
            assert!(Instant::now() < deadline, "the bot supervisor never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn create(&self, leverage: u32, margin_type: MarginType) -> BotRecord {
        let record = BotRecord {
            id: 0,
            user_id: USER,
            name: "perp".into(),
            venue: VenueId::BybitLinear,
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            mode: BotMode::Live,
            exchange_account_id: Some(3),
            strategy: StrategySpec {
                kind: "ema_cross".into(),
                module_id: None,
                params: serde_json::json!({"fast": 5000, "slow": 9000, "qty": "0.001"}),
            },
            risk: Default::default(),
            bracket: None,
            paper: PaperSettings { starting_quote: d("1000"), ..PaperSettings::default() },
            leverage: Some(leverage),
            margin_type: Some(margin_type),
            filters: InstrumentFilters {
                tick_size: d("0.01"),
                step_size: d("0.001"),
                min_qty: d("0.001"),
                max_qty: d("1000"),
                min_notional: d("1"),
            },
            status: BotStatus::Created,
            status_reason: None,
            created_ts: now_ms(),
            updated_ts: now_ms(),
        };
        let bots = self.bots().await;
        ask(&bots, CreateBot(record), WAIT, "bots").await.unwrap().unwrap()
    }

    async fn control(&self, bot_id: u64, control: Control) -> Result<BotRecord, BotError> {
        let bots = self.bots().await;
        ask(&bots, ControlBot { user_id: USER, bot_id, control }, WAIT, "bots").await.unwrap()
    }

    async fn live(&self, bot_id: u64) -> (BotRecord, Option<LiveView>) {
        self.try_live(bot_id).await.unwrap()
    }

    /// [`Self::live`], or the error of a bot actor restarting in between.
    async fn try_live(&self, bot_id: u64) -> Result<(BotRecord, Option<LiveView>), BotError> {
        let bots = self.bots().await;
        ask(&bots, GetLiveBot { user_id: USER, bot_id }, WAIT, "bots").await.unwrap()
    }

    /// Waits until the running bot's live view satisfies `ok`; returns it.
    async fn live_until(
        &self,
        bot_id: u64,
        what: &str,
        ok: impl Fn(&LiveView) -> bool,
    ) -> LiveView {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((_, Some(view))) = self.try_live(bot_id).await
                && ok(&view)
            {
                return view;
            }
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn journal(&self, bot_id: u64) -> Vec<BotEvent> {
        let repo = keel_actors::bot::BotRepo::new(&self.runtime.store).unwrap();
        repo.events(bot_id, 0, u64::MAX, 10_000).unwrap().items
    }

    async fn stop(self) {
        self.shut().await;
    }

    /// Stops Keel as its shutdown does; answers what a restart needs.
    async fn shut(self) -> (tempfile::TempDir, FakeFutures) {
        stop_tree(&self.runtime.root, Duration::from_secs(5)).await.unwrap();
        let Keel { runtime, venue, dir } = self;
        drop(runtime);
        (dir, venue)
    }

    /// Keel stopped and started again on its data directory.
    async fn restart(self) -> Keel {
        let (dir, venue) = self.shut().await;
        keel_in(dir, venue).await
    }

    /// Waits until the bot's record satisfies `ok`; returns it.
    async fn record_until(
        &self,
        bot_id: u64,
        what: &str,
        ok: impl Fn(&BotRecord) -> bool,
    ) -> BotRecord {
        let deadline = Instant::now() + WAIT;
        loop {
            let record = self.try_live(bot_id).await.map(|(record, _)| record);
            if let Ok(record) = &record
                && ok(record)
            {
                return record.clone();
            }
            assert!(Instant::now() < deadline, "never: {what}: {record:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn funding_lines(journal: &[BotEvent]) -> Vec<(Decimal, Option<String>)> {
    journal
        .iter()
        .filter_map(|e| match &e.kind {
            BotEventKind::Funding { amount, id, .. } => Some((*amount, id.clone())),
            _ => None,
        })
        .collect()
}

fn payment(id: &str, amount: &str, time_ms: u64) -> FundingPayment {
    FundingPayment {
        symbol: "BTCUSDT".into(),
        asset: "USDT".into(),
        amount: d(amount),
        time_ms,
        id: id.into(),
    }
}

fn long(qty: &str, mark: &str, liquidation: &str) -> VenuePosition {
    VenuePosition {
        symbol: "BTCUSDT".into(),
        qty: d(qty),
        entry_price: d("100"),
        mark_price: Some(d(mark)),
        liquidation_price: Some(d(liquidation)),
        unrealized_pnl: (d(mark) - d("100")) * d(qty),
        leverage: Some(10),
        margin_type: Some(MarginType::Cross),
        updated_ms: now_ms(),
    }
}

#[actix_web::test]
async fn a_start_the_venue_refuses_leverage_for_answers_with_its_words_and_runs_nothing() {
    let keel = keel().await;
    let bot = keel.create(50, MarginType::Isolated).await;
    keel.venue.with(|v| {
        v.refuse = Some(RouteError {
            kind: RouteErrorKind::Rejected,
            message: "-4028: Leverage 50 is not valid".into(),
        })
    });
    let refused = keel.control(bot.id, Control::Start).await.unwrap_err();
    let BotError::Venue { refused: true, message } = &refused else {
        panic!("not a venue refusal: {refused:?}")
    };
    assert!(message.contains("-4028: Leverage 50 is not valid"), "{message}");
    assert!(message.contains("50x isolated on BTCUSDT"), "{message}");
    assert_eq!(
        keel.venue.with(|v| v.prepared.clone()),
        [("BTCUSDT".into(), 50, MarginType::Isolated)]
    );
    let (record, live) = keel.live(bot.id).await;
    assert_eq!(record.status, BotStatus::Created, "the bot stays as it was");
    assert!(live.is_none(), "no actor runs");
    assert!(keel.venue.with(|v| v.stream.is_none()), "nothing else went to the venue");

    // A venue that does not answer is not a refusal: the start may be asked again.
    keel.venue.with(|v| {
        v.refuse =
            Some(RouteError { kind: RouteErrorKind::NotSent, message: "connection refused".into() })
    });
    let err = keel.control(bot.id, Control::Start).await.unwrap_err();
    assert!(matches!(err, BotError::Venue { refused: false, .. }), "{err:?}");

    keel.venue.with(|v| v.refuse = None);
    let started = keel.control(bot.id, Control::Start).await.unwrap();
    assert_eq!(started.status, BotStatus::Running);
    keel.stop().await;
}

#[actix_web::test]
async fn venue_positions_are_shown_and_adopted_and_funding_is_booked_once_across_restarts() {
    let keel = keel().await;
    let bot = keel.create(10, MarginType::Cross).await;
    // The venue holds a position the bot's book does not (filled while Keel was down).
    keel.venue.with(|v| v.positions = vec![long("0.5", "110", "60")]);
    keel.control(bot.id, Control::Start).await.unwrap();
    assert_eq!(
        keel.venue.with(|v| v.prepared.clone()),
        [("BTCUSDT".into(), 10, MarginType::Cross)],
        "set once, before the start's answer"
    );

    let view = keel
        .live_until(bot.id, "the venue's quantity adopted", |l| l.position.qty == d("0.5"))
        .await;
    assert_eq!(view.position.avg_entry_price, d("100"));
    let venue = view.venue_position.expect("the venue's view is kept");
    assert_eq!(
        (venue.liquidation_price, venue.mark_price, venue.unrealized_pnl),
        (Some(d("60")), Some(d("110")), d("5.0"))
    );
    assert_eq!((venue.leverage, venue.margin_type), (Some(10), Some(MarginType::Cross)));
    let journal = keel.journal(bot.id);
    assert!(
        journal.iter().any(|e| matches!(&e.kind, BotEventKind::Log { level, message }
            if level == "warn" && message.contains("adopts the venue's"))),
        "the adoption is a warning in the journal: {journal:?}"
    );
    assert!(journal.iter().any(|e| matches!(e.kind, BotEventKind::VenuePosition(_))));

    // The stream pushes a move of the mark: kept and journaled.
    let mut moved = long("0.5", "120", "60");
    moved.unrealized_pnl = d("10");
    keel.venue.push(AccountEvent::Position(moved)).await;
    keel.live_until(bot.id, "the pushed position", |l| {
        l.venue_position.as_ref().is_some_and(|p| p.mark_price == Some(d("120")))
    })
    .await;

    // A payment pushed twice (a reconnecting stream may) is booked once.
    let paid_at = now_ms() + 1_000;
    let (realized, funded) = (view.position.realized_pnl, view.position.funding);
    keel.venue.push(AccountEvent::Funding(payment("tran-1", "-1.5", paid_at))).await;
    keel.venue.push(AccountEvent::Funding(payment("tran-1", "-1.5", paid_at))).await;
    // Another symbol's payment is not this bot's.
    let mut other = payment("tran-9", "-7", paid_at);
    other.symbol = "ETHUSDT".into();
    keel.venue.push(AccountEvent::Funding(other)).await;
    let view = keel
        .live_until(bot.id, "the payment booked", |l| l.position.funding == funded - d("1.5"))
        .await;
    assert_eq!(view.position.quote_balance, d("1000") - d("1.5"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = keel.live(bot.id).await;
    let position = view.unwrap().position;
    assert_eq!(position.funding, funded - d("1.5"), "booked once");
    assert_eq!(position.realized_pnl, realized, "funding is not trading profit");
    assert_eq!(funding_lines(&keel.journal(bot.id)), [(d("-1.5"), Some("tran-1".into()))]);

    // Stopped, then started again: the catch-up reads the history from the last payment
    // booked, which has that payment again and one made meanwhile.
    keel.control(bot.id, Control::Stop).await.unwrap();
    keel.venue.with(|v| {
        v.history = vec![payment("tran-1", "-1.5", paid_at), payment("tran-2", "0.25", paid_at + 8)]
    });
    keel.control(bot.id, Control::Start).await.unwrap();
    let view = keel
        .live_until(bot.id, "the missed payment booked", |l| {
            l.position.funding == funded - d("1.25")
        })
        .await;
    assert_eq!(view.position.qty, d("0.5"), "the book agrees with the venue: nothing adopted");
    assert!(keel.venue.with(|v| v.funding_asked.contains(&paid_at)), "asked from the last payment");
    assert_eq!(
        funding_lines(&keel.journal(bot.id)),
        [(d("-1.5"), Some("tran-1".into())), (d("0.25"), Some("tran-2".into()))]
    );
    assert_eq!(keel.venue.with(|v| v.prepared.len()), 2, "once per start");
    keel.stop().await;
}

#[actix_web::test]
async fn a_restarted_bot_sets_its_leverage_again_first_and_fails_with_the_venues_words_if_refused()
{
    let keel = keel().await;
    let bot = keel.create(20, MarginType::Isolated).await;
    keel.control(bot.id, Control::Start).await.unwrap();
    keel.live_until(bot.id, "running", |_| true).await;

    // Keel restarts with the bot running: the bot sets them again before anything else.
    let keel = keel.restart().await;
    keel.live_until(bot.id, "running again", |_| true).await;
    let prepared = keel.venue.with(|v| v.prepared.clone());
    assert_eq!(prepared, vec![("BTCUSDT".to_owned(), 20, MarginType::Isolated); 2]);

    // The venue now refuses (a margin type it will not change while a position is open).
    let words = "-4048: Margin type cannot be changed if there exists position.";
    keel.venue.with(|v| {
        v.refuse = Some(RouteError { kind: RouteErrorKind::Rejected, message: words.into() })
    });
    let keel = keel.restart().await;
    let failed = keel.record_until(bot.id, "failed", |r| r.status == BotStatus::Failed).await;
    assert!(failed.status_reason.as_deref().is_some_and(|r| r.contains(words)), "{failed:?}");
    let journal = keel.journal(bot.id);
    assert!(
        journal.iter().any(|e| matches!(&e.kind, BotEventKind::Log { level, message }
            if level == "error" && message.contains(words))),
        "the refusal is in the journal: {journal:?}"
    );
    keel.stop().await;
}
