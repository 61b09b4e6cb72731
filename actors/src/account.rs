//! Exchange accounts at run time: one user data stream per (venue, exchange account), shared by
//! every live bot trading on that account, and the account's balances.
//!
//! The first live bot of an account to start [attaches](Accounts::attach) and so opens the
//! account's stream (the router's [`OrderRouter::account_stream`], signed by the vault) and reads
//! its balances; the last one to stop closes it. What the stream says goes where it belongs:
//! - an order's update to the bot whose client order id it carries (`keel-{bot}-{order}`), once
//!   per venue trade id (a repeated trade is dropped here; the engine derives fills from the
//!   cumulative quantity, so a trade a poll already counted adds nothing either);
//! - `Connected` and `Disconnected` to every bot of the account: while the stream is down a bot
//!   polls at [`LIVE_POLL`](crate::bot::actor::LIVE_POLL), and when it is back it reconciles
//!   every open order at once (nothing is replayed);
//! - balances into the account's [`BalanceBook`], which the API shows; they are read again from
//!   the venue after every (re)connection, since changes meanwhile were not pushed;
//! - a derivatives position's change and a funding payment to the account's bots trading that
//!   symbol (each bot books a payment once, by its venue id, and reads positions and missed
//!   payments from the venue itself after every (re)connection).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use rust_decimal::Decimal;

use keel_core::market::VenueId;
use keel_venues::account::{AccountEvent, OrderUpdate, OwnedSigner, TaskGuard};
use keel_venues::routing::{Balance, FundingPayment, OrderRouter, VenuePosition};

/// How many venue trade ids an account remembers to drop repeats.
const SEEN_TRADES: usize = 10_000;

/// What an account's stream tells one of its bots.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum AccountNews {
    /// The stream is up (again): reconcile open orders now, poll only as a safety net.
    StreamUp,
    /// The stream is down: poll.
    StreamDown,
    /// One of the bot's orders changed.
    Order(OrderUpdate),
    /// The account's derivatives position in the bot's symbol changed (as it is now).
    Position(VenuePosition),
    /// A funding payment on the account's position in the bot's symbol.
    Funding(FundingPayment),
}

/// An account's balances as Keel last learned them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceBook {
    /// Per asset.
    pub assets: std::collections::BTreeMap<String, Balance>,
    /// When they were last changed, ms since the epoch; 0 when never read.
    pub updated_ms: u64,
    /// Where the last change came from: `rest` (a read) or `stream` (a pushed update).
    pub source: &'static str,
}

impl BalanceBook {
    fn set(&mut self, balances: Vec<Balance>, source: &'static str) {
        for b in balances {
            self.assets.insert(b.asset.clone(), b);
        }
        self.touch(source);
    }

    fn add(&mut self, asset: &str, delta: Decimal) {
        let entry = self.assets.entry(asset.to_owned()).or_insert_with(|| Balance {
            asset: asset.to_owned(),
            free: Decimal::ZERO,
            locked: Decimal::ZERO,
        });
        entry.free += delta;
        self.touch("stream");
    }

    fn touch(&mut self, source: &'static str) {
        self.updated_ms = keel_venues::now_us() / 1000;
        self.source = source;
    }

    /// The free amount of `asset` (zero when the account has none).
    pub fn free(&self, asset: &str) -> Decimal {
        self.assets.get(asset).map_or(Decimal::ZERO, |b| b.free)
    }
}

/// One exchange account's run-time state.
#[derive(Debug)]
pub struct Account {
    venue: VenueId,
    account_id: u64,
    balances: Mutex<BalanceBook>,
    stream_up: AtomicBool,
    bots: Mutex<HashMap<u64, Recipient<AccountNews>>>,
    /// Each attached bot's symbol, in the venue's spelling.
    symbols: Mutex<HashMap<u64, String>>,
    seen_trades: Mutex<(HashSet<u64>, VecDeque<u64>)>,
    stream: Mutex<Option<TaskGuard>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Account {
    fn new(venue: VenueId, account_id: u64) -> Self {
        Self {
            venue,
            account_id,
            balances: Mutex::default(),
            stream_up: AtomicBool::new(false),
            bots: Mutex::default(),
            symbols: Mutex::default(),
            seen_trades: Mutex::default(),
            stream: Mutex::default(),
        }
    }

    /// The balances as last learned.
    pub fn balances(&self) -> BalanceBook {
        lock(&self.balances).clone()
    }

    /// Whether the account's stream is subscribed now.
    pub fn stream_up(&self) -> bool {
        self.stream_up.load(Ordering::Relaxed)
    }

    /// Records balances read from the venue.
    pub fn set_balances(&self, balances: Vec<Balance>) {
        lock(&self.balances).set(balances, "rest");
    }

    /// Applies one stream event.
    fn on_event(&self, event: AccountEvent) {
        match event {
            AccountEvent::Connected => {
                self.stream_up.store(true, Ordering::Relaxed);
                self.broadcast(&AccountNews::StreamUp);
            }
            AccountEvent::Disconnected(why) => {
                tracing::info!(venue = %self.venue, account_id = self.account_id, %why, "account stream down; bots poll");
                self.stream_up.store(false, Ordering::Relaxed);
                self.broadcast(&AccountNews::StreamDown);
            }
            AccountEvent::Balances(balances) => lock(&self.balances).set(balances, "stream"),
            AccountEvent::BalanceDelta { asset, delta } => lock(&self.balances).add(&asset, delta),
            AccountEvent::Order(update) => {
                if let Some(trade) = update.trade_id
                    && !self.first_sight(trade)
                {
                    return;
                }
                let Some(bot_id) = bot_of(&update.report.client_order_id) else { return };
                if let Some(bot) = lock(&self.bots).get(&bot_id) {
                    bot.do_send(AccountNews::Order(update));
                }
            }
            AccountEvent::Position(position) => {
                tracing::debug!(venue = %self.venue, account_id = self.account_id, ?position, "position");
                let symbol = position.symbol.clone();
                self.tell_symbol(&symbol, &AccountNews::Position(position));
            }
            AccountEvent::Funding(payment) => {
                tracing::debug!(venue = %self.venue, account_id = self.account_id, ?payment, "funding");
                metrics::counter!("keel_funding_payments_total").increment(1);
                let symbol = payment.symbol.clone();
                self.tell_symbol(&symbol, &AccountNews::Funding(payment));
            }
        }
    }

    /// Whether `trade` is new (and remembers it).
    fn first_sight(&self, trade: u64) -> bool {
        let mut seen = lock(&self.seen_trades);
        if !seen.0.insert(trade) {
            return false;
        }
        seen.1.push_back(trade);
        if seen.1.len() > SEEN_TRADES
            && let Some(old) = seen.1.pop_front()
        {
            seen.0.remove(&old);
        }
        true
    }

    /// The attached bots trading `symbol` (the venue's spelling, any case).
    fn bots_on(&self, symbol: &str) -> Vec<u64> {
        lock(&self.symbols)
            .iter()
            .filter(|(_, s)| s.eq_ignore_ascii_case(symbol))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many of the account's running bots trade `symbol`: a venue position in it is theirs
    /// together (one-way mode), so a bot adopts the venue's quantity only when it is alone.
    pub fn bots_trading(&self, symbol: &str) -> usize {
        self.bots_on(symbol).len()
    }

    /// Passes `news` to the bots trading `symbol`.
    fn tell_symbol(&self, symbol: &str, news: &AccountNews) {
        let targets = self.bots_on(symbol);
        let bots = lock(&self.bots);
        for bot_id in targets {
            if let Some(bot) = bots.get(&bot_id) {
                bot.do_send(news.clone());
            }
        }
    }

    fn broadcast(&self, news: &AccountNews) {
        for bot in lock(&self.bots).values() {
            bot.do_send(news.clone());
        }
    }
}

/// The bot a client order id belongs to: Keel's ids are `keel-{bot}-{order:06}`.
pub fn bot_of(client_order_id: &str) -> Option<u64> {
    let rest = client_order_id.strip_prefix("keel-")?;
    rest.split('-').next()?.parse().ok()
}

/// What the API needs to show an account's balances and check a start: each live venue's router
/// and the accounts with a running bot.
#[derive(Debug, Clone, Default)]
pub struct LiveAccounts {
    /// The order router of every venue that takes live orders.
    pub routers: std::collections::BTreeMap<VenueId, Arc<dyn OrderRouter>>,
    /// Accounts with a running live bot.
    pub accounts: Accounts,
}

/// Whether an account's stream runs, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Subscribed: balances follow the venue's pushes.
    Up,
    /// A bot of the account runs but the stream is reconnecting (bots poll).
    Down,
    /// No live bot of the account runs: the balances were read just now.
    Idle,
}

impl StreamStatus {
    /// `up`, `down`, `idle`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Up => "up",
            StreamStatus::Down => "down",
            StreamStatus::Idle => "idle",
        }
    }
}

/// Why balances could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum BalancesError {
    /// The venue takes no live orders here (not enabled, or not a venue with accounts).
    #[error("{0} is not enabled for live trading here")]
    NotLive(VenueId),
    /// The venue did not answer.
    #[error("the venue did not give the balances: {0}")]
    Venue(keel_venues::routing::RouteError),
}

impl LiveAccounts {
    /// The balances of `user_id`'s exchange account `account_id` on `venue`: as the account's
    /// stream keeps them while a live bot of it runs and they have been read, otherwise read
    /// from the venue now (signed by the vault).
    ///
    /// # Errors
    /// The venue takes no live orders, or did not answer.
    pub async fn balances(
        &self,
        vault: &crate::vault::VaultAddress,
        venue: VenueId,
        user_id: u64,
        account_id: u64,
    ) -> Result<(BalanceBook, StreamStatus), BalancesError> {
        let router = self.routers.get(&venue).ok_or(BalancesError::NotLive(venue))?;
        if let Some(account) = self.accounts.get(venue, account_id) {
            let book = account.balances();
            if book.updated_ms > 0 {
                let status =
                    if account.stream_up() { StreamStatus::Up } else { StreamStatus::Down };
                return Ok((book, status));
            }
        }
        let signer = crate::bot::live::vault_signer(vault, user_id, account_id);
        let read = router.balances(signer.as_ref()).await.map_err(BalancesError::Venue)?;
        let mut book = BalanceBook::default();
        book.set(read, "rest");
        Ok((book, StreamStatus::Idle))
    }
}

/// The running accounts by (venue, exchange account id).
type AccountMap = HashMap<(VenueId, u64), Arc<Account>>;

/// Every account with a running live bot. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    inner: Arc<Mutex<AccountMap>>,
}

impl Accounts {
    /// The account, if a live bot of it is running.
    pub fn get(&self, venue: VenueId, account_id: u64) -> Option<Arc<Account>> {
        lock(&self.inner).get(&(venue, account_id)).cloned()
    }

    /// Adds `bot_id` (trading `symbol`, in the venue's spelling) to the account's bots, opening
    /// the account's stream (through `router`, signed by `signer`) if it is the first. Call from
    /// within a tokio runtime.
    pub fn attach(
        &self,
        router: &Arc<dyn OrderRouter>,
        account_id: u64,
        signer: OwnedSigner,
        (bot_id, symbol): (u64, &str),
        bot: Recipient<AccountNews>,
    ) -> Arc<Account> {
        let venue = router.venue();
        let account = lock(&self.inner)
            .entry((venue, account_id))
            .or_insert_with(|| Arc::new(Account::new(venue, account_id)))
            .clone();
        if account.stream_up() {
            bot.do_send(AccountNews::StreamUp);
        }
        lock(&account.bots).insert(bot_id, bot);
        lock(&account.symbols).insert(bot_id, symbol.to_owned());
        let mut stream = lock(&account.stream);
        if stream.is_none() {
            // Balances are read at start whether or not the venue has a stream.
            spawn_balances_read(router.clone(), signer.clone(), account.clone());
            if let Some(opened) = router.account_stream(signer.clone()) {
                let (mut events, guard) = (opened.events, opened.guard);
                let pumped = account.clone();
                let (router, signer) = (router.clone(), signer);
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        if event == AccountEvent::Connected {
                            spawn_balances_read(router.clone(), signer.clone(), pumped.clone());
                        }
                        pumped.on_event(event);
                    }
                });
                *stream = Some(guard);
            }
            // Without a stream the slot stays empty: the next bot to attach reads the
            // balances again.
        }
        drop(stream);
        account
    }

    /// Removes `bot` (`bot_id`'s actor) from the account's bots; the last one closes the
    /// stream. A newer incarnation of the bot that attached meanwhile stays.
    pub fn detach(
        &self,
        venue: VenueId,
        account_id: u64,
        bot_id: u64,
        bot: &Recipient<AccountNews>,
    ) {
        let mut accounts = lock(&self.inner);
        let Some(account) = accounts.get(&(venue, account_id)).cloned() else { return };
        let mut bots = lock(&account.bots);
        if bots.get(&bot_id) == Some(bot) {
            bots.remove(&bot_id);
            lock(&account.symbols).remove(&bot_id);
        }
        if bots.is_empty() {
            drop(bots);
            // Dropping the guard stops the stream task; its pump ends with it.
            lock(&account.stream).take();
            account.stream_up.store(false, Ordering::Relaxed);
            accounts.remove(&(venue, account_id));
        }
    }
}

fn spawn_balances_read(router: Arc<dyn OrderRouter>, signer: OwnedSigner, account: Arc<Account>) {
    tokio::spawn(async move {
        match router.balances(signer.as_ref()).await {
            Ok(balances) => account.set_balances(balances),
            Err(err) => {
                tracing::warn!(venue = %account.venue, account_id = account.account_id, error = %err, "balances not read")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_ids_name_their_bot() {
        assert_eq!(bot_of("keel-42-000017"), Some(42));
        assert_eq!(bot_of("web_8a7f"), None);
        assert_eq!(bot_of("keel-x-1"), None);
    }

    #[test]
    fn a_trade_is_passed_on_once_and_balances_follow_the_stream() {
        let account = Account::new(VenueId::Binance, 1);
        assert!(account.first_sight(7));
        assert!(!account.first_sight(7));
        let usdt = |free: i64| Balance {
            asset: "USDT".into(),
            free: Decimal::from(free),
            locked: Decimal::ZERO,
        };
        account.set_balances(vec![usdt(100)]);
        account.on_event(AccountEvent::BalanceDelta {
            asset: "USDT".into(),
            delta: Decimal::from(-30),
        });
        assert_eq!(account.balances().free("USDT"), Decimal::from(70));
        account.on_event(AccountEvent::Balances(vec![usdt(5)]));
        let book = account.balances();
        assert_eq!((book.free("USDT"), book.source), (Decimal::from(5), "stream"));
        assert_eq!(book.free("BTC"), Decimal::ZERO);
    }
}
