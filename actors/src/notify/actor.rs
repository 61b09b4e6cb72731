//! The [`Notifier`]: the supervised actor that delivers the outbox.
//!
//! Its delivery loop (a future in its context, so stopping the actor stops it) keeps the due
//! times of pending deliveries in memory, read from the outbox at start and added to as rows are
//! written. Fresh rows are sent only after a store commit covers them. Each attempt's outcome is
//! written back to the row: delivered, due again after a jittered exponential backoff (or the
//! receiver's `retry_after`), or failed past the attempt cap or when refused for good. Finished
//! rows stay listed for `keep_finished`, then a sweep removes them.
//!
//! In cluster mode with `postgres_url` the loop is `pg_deliver`'s, over the Postgres outbox.
//!
//! A second future sends the daily P&L summary: once per UTC day, for the day that ended, to
//! every owner with a channel that wants `daily_pnl` (the marker in `meta` makes it once).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use keel_core::bot::report::{self, Portfolio, PortfolioRow};
use keel_core::notify::events::{day_label, summary_due, utc_day};
use keel_core::notify::{EventKind, NotifyEvent};
use rand::Rng;
use tokio::task::JoinSet;

use super::deliver::{Outcome, Sender};
use super::outbox::{DeliveryRecord, DeliveryState, Notifications};
use super::{NOTIFIER_CHILD_NAME, NotifyConfig};
use crate::bot::supervisor::{GetLiveBot, ListBots};
use crate::bot::{BotRepo, BotsAddress};
use crate::identity::now_ms;
use crate::mailbox::ask;
use crate::store::{StoreError, trees};
use crate::supervisor::{ChildHandle, ChildSpec, Lifeline, StartError, Stop};
use crate::vault::VaultAddress;

/// Longest sleep with nothing due (new rows wake the loop anyway).
const IDLE: Duration = Duration::from_secs(60);
/// How often finished rows past `keep_finished` are removed.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How often the daily summary's marker is looked at.
const DAILY_CHECK_EVERY: Duration = Duration::from_secs(60);
/// How long the bot supervisor may take to answer the summary's questions.
const BOTS_DEADLINE: Duration = Duration::from_secs(10);
/// The `meta` key of the last UTC day summarised (days since the epoch, big-endian).
pub const DAILY_MARKER: &[u8] = b"notify_daily_pnl_day";

/// The notifier. It handles only [`Stop`]; its work happens in its loops.
pub struct Notifier {
    notifications: Notifications,
    config: Arc<NotifyConfig>,
    sender: Sender,
    bots: BotsAddress,
    _lifeline: Lifeline,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (notifications, sender, config) =
            (self.notifications.clone(), self.sender.clone(), self.config.clone());
        match notifications.record().cloned() {
            // Cluster mode with `postgres_url`: the outbox is in Postgres.
            Some(record) => ctx.spawn(
                super::pg_deliver::deliver(notifications, record, sender, config).into_actor(self),
            ),
            None => ctx.spawn(deliver(notifications, sender, config).into_actor(self)),
        };
        ctx.spawn(daily(self.notifications.clone(), self.bots.clone()).into_actor(self));
    }
}

impl Handler<Stop> for Notifier {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // An attempt cut short is still pending in the outbox and is made again after a start.
        ctx.stop();
    }
}

/// Starts the notifier under a supervisor.
pub struct NotifierSpec {
    notifications: Notifications,
    config: Arc<NotifyConfig>,
    vault: VaultAddress,
    bots: BotsAddress,
}

impl std::fmt::Debug for NotifierSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierSpec").finish_non_exhaustive()
    }
}

impl NotifierSpec {
    /// A spec delivering `notifications` with `config`, signing through `vault`, reading bots'
    /// positions through `bots` for the daily summary.
    pub fn new(
        notifications: Notifications,
        config: NotifyConfig,
        vault: VaultAddress,
        bots: BotsAddress,
    ) -> Self {
        Self { notifications, config: Arc::new(config), vault, bots }
    }
}

impl ChildSpec for NotifierSpec {
    fn name(&self) -> &str {
        NOTIFIER_CHILD_NAME
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let notifier = Notifier {
            notifications: self.notifications.clone(),
            config: self.config.clone(),
            sender: Sender::new(self.config.clone(), self.vault.clone()),
            bots: self.bots.clone(),
            _lifeline: lifeline,
        };
        Ok(Box::new(notifier.start()))
    }
}

/// Due time (ms since the epoch) and key of a pending delivery.
type Due = (u64, [u8; 16]);

/// The delivery loop.
async fn deliver(notifications: Notifications, sender: Sender, config: Arc<NotifyConfig>) {
    let mut due: BTreeSet<Due> = BTreeSet::new();
    let reading = notifications.clone();
    match tokio::task::spawn_blocking(move || reading.pending()).await {
        Ok(Ok(pending)) => {
            for record in pending {
                due.insert((record.next_attempt_ms.unwrap_or(0), record.key()));
            }
        }
        Ok(Err(err)) => tracing::error!(error = %err, "reading the notification outbox failed"),
        Err(err) => tracing::error!(error = %err, "reading the notification outbox panicked"),
    }
    let mut in_flight: JoinSet<([u8; 16], Option<u64>)> = JoinSet::new();
    let mut busy: HashSet<[u8; 16]> = HashSet::new();
    let mut last_prune = Instant::now();
    loop {
        let fresh = notifications.take_fresh();
        if !fresh.is_empty() {
            // Nothing leaves before it is durable: a delivery a crash could take back is never
            // sent.
            if let Err(err) = notifications.store().commit().await {
                tracing::warn!(error = %err, "store commit failed; deliveries wait");
            }
            let now = now_ms();
            due.extend(fresh.into_iter().map(|key| (now, key)));
        }
        let now = now_ms();
        while in_flight.len() < config.max_in_flight {
            let Some(&(at, key)) = due.first() else { break };
            if at > now {
                break;
            }
            due.pop_first();
            if !busy.insert(key) {
                continue;
            }
            let (notifications, sender, config) =
                (notifications.clone(), sender.clone(), config.clone());
            in_flight.spawn_local(async move {
                (key, attempt(&notifications, &sender, &config, key).await)
            });
        }
        metrics::gauge!("keel_notify_pending").set((due.len() + in_flight.len()) as f64);
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            prune(&notifications, config.keep_finished).await;
        }
        let wait =
            due.first().map_or(IDLE, |(at, _)| Duration::from_millis(at.saturating_sub(now)));
        tokio::select! {
            () = notifications.woken() => {}
            () = tokio::time::sleep(wait.min(IDLE)) => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                match done {
                    Ok((key, next)) => {
                        busy.remove(&key);
                        if let Some(at) = next {
                            due.insert((at, key));
                        }
                    }
                    // The row is still pending: the next start tries it again.
                    Err(err) => tracing::error!(error = %err, "a delivery attempt panicked"),
                }
            }
        }
    }
}

/// Removes finished deliveries older than `keep`.
async fn prune(notifications: &Notifications, keep: Duration) {
    let pruning = notifications.clone();
    let cutoff = now_ms().saturating_sub(keep.as_millis() as u64);
    match tokio::task::spawn_blocking(move || pruning.prune(cutoff)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::debug!(removed, "old notification deliveries removed"),
        Ok(Err(err)) => tracing::warn!(error = %err, "pruning notification deliveries failed"),
        Err(err) => tracing::warn!(error = %err, "pruning notification deliveries panicked"),
    }
}

/// Makes one attempt at the delivery under `key` and records its outcome; its next due time
/// when it stays pending.
async fn attempt(
    notifications: &Notifications,
    sender: &Sender,
    config: &NotifyConfig,
    key: [u8; 16],
) -> Option<u64> {
    let mut record = match notifications.delivery(&key) {
        Ok(Some(record)) if record.state == DeliveryState::Pending => record,
        // Gone (the account was deleted) or finished meanwhile.
        Ok(_) => return None,
        Err(err) => {
            tracing::warn!(error = %err, "reading a delivery failed");
            return Some(now_ms() + config.backoff.base.as_millis() as u64);
        }
    };
    let channel = notifications.channels().get(record.user_id, record.channel_id);
    let next =
        attempt_on(sender, config, &mut record, channel.map_err(|err| err.to_string())).await;
    // A row removed meanwhile (account deletion) is not brought back.
    if matches!(notifications.delivery(&key), Ok(Some(_))) {
        if let Err(err) = notifications.put_delivery(&record) {
            tracing::warn!(error = %err, "recording a delivery's outcome failed");
        } else if let Err(err) = notifications.store().commit().await {
            tracing::warn!(error = %err, "committing a delivery's outcome failed");
        }
    }
    next
}

/// Makes one attempt at `row` on its channel as read (`Ok(None)`: deleted; `Err`: could not be
/// read, why), applies the outcome to `row` (counted, and logged unless delivered); its next due
/// time when it stays pending. Recording `row` is the caller's.
pub(super) async fn attempt_on(
    sender: &Sender,
    config: &NotifyConfig,
    row: &mut DeliveryRecord,
    channel: Result<Option<super::ChannelRecord>, String>,
) -> Option<u64> {
    let started = Instant::now();
    let (outcome, kind) = match channel {
        Ok(Some(channel)) => (sender.attempt(&channel, row).await, channel.target.kind()),
        Ok(None) => (Outcome::Refused { status: None, error: "channel deleted".into() }, "deleted"),
        Err(err) => (
            Outcome::Retry {
                status: None,
                error: format!("reading the channel: {err}"),
                after: None,
            },
            "unknown",
        ),
    };
    metrics::histogram!("keel_notify_attempt_seconds", "channel" => kind)
        .record(started.elapsed().as_secs_f64());
    let next = apply(row, &outcome, config, rand::rng().random::<f64>(), now_ms());
    let result = match row.state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
        DeliveryState::Pending => "retry",
    };
    metrics::counter!("keel_notify_deliveries_total", "channel" => kind, "outcome" => result)
        .increment(1);
    if result != "delivered" {
        tracing::info!(
            delivery = row.id,
            channel = row.channel_id,
            attempts = row.attempts,
            error = row.last_error.as_deref().unwrap_or(""),
            state = result,
            "notification attempt failed"
        );
    }
    next
}

/// Applies an attempt's `outcome` to `record` at `now`, with `jitter` in [0, 1); the next due
/// time when it stays pending.
pub(super) fn apply(
    record: &mut DeliveryRecord,
    outcome: &Outcome,
    config: &NotifyConfig,
    jitter: f64,
    now: u64,
) -> Option<u64> {
    record.attempts += 1;
    let finish = |record: &mut DeliveryRecord, state| {
        record.state = state;
        record.next_attempt_ms = None;
        record.finished_at_ms = Some(now);
    };
    match outcome {
        Outcome::Delivered { status } => {
            record.last_status = Some(*status);
            record.last_error = None;
            record.delivered_at_ms = Some(now);
            finish(record, DeliveryState::Delivered);
            None
        }
        Outcome::Refused { status, error } => {
            record.last_status = *status;
            record.last_error = Some(error.clone());
            finish(record, DeliveryState::Failed);
            None
        }
        Outcome::Retry { status, error, after } => {
            record.last_status = *status;
            record.last_error = Some(error.clone());
            match config.backoff.next_delay(record.attempts, jitter) {
                Some(delay) => {
                    let wait = after.unwrap_or(delay);
                    let at = now + wait.as_millis() as u64;
                    record.next_attempt_ms = Some(at);
                    Some(at)
                }
                None => {
                    record.last_error =
                        Some(format!("gave up after {} attempts: {error}", record.attempts));
                    finish(record, DeliveryState::Failed);
                    None
                }
            }
        }
    }
}

/// The daily summary's loop.
async fn daily(notifications: Notifications, bots: BotsAddress) {
    let mut ticks = tokio::time::interval(DAILY_CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = summarise(&notifications, &bots).await {
            tracing::warn!(error = %err, "daily P&L summary failed; retried in a minute");
        }
    }
}

/// Sends the summary of the day that ended, if not sent yet.
async fn summarise(notifications: &Notifications, bots: &BotsAddress) -> Result<(), StoreError> {
    let meta = notifications.store().tree(trees::META)?;
    let last = meta
        .get(DAILY_MARKER)?
        .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
        .map(u64::from_be_bytes);
    let now = now_ms();
    let Some(day) = summary_due(last, now) else {
        if last.is_none() {
            // First start: nothing to summarise yet; the first summary is today's, tomorrow.
            let yesterday = utc_day(now).saturating_sub(1);
            meta.insert(DAILY_MARKER, &yesterday.to_be_bytes())?;
        }
        return Ok(());
    };
    let Some(supervisor) = bots.get() else { return Ok(()) };
    let repo = BotRepo::new(notifications.store())?;
    for user_id in notifications.channels().users_wanting(EventKind::DailyPnl) {
        let Ok(records) = ask(&supervisor, ListBots { user_id }, BOTS_DEADLINE, "bots").await
        else {
            return Ok(());
        };
        let mut rows: Vec<PortfolioRow> = Vec::with_capacity(records.len());
        for record in records {
            let query = GetLiveBot { user_id, bot_id: record.id };
            let live = match ask(&supervisor, query, BOTS_DEADLINE, "bots").await {
                Ok(Ok((_, live))) => live,
                _ => None,
            };
            rows.push(match live {
                Some(live) => (record, live.position, live.mark_price, live.durable_fill_id),
                None => {
                    let stored = repo.state(record.id)?;
                    let position =
                        report::stored_position(&record, stored.position, stored.last_order_id);
                    (record, position, None, stored.last_fill_id)
                }
            });
        }
        let portfolio = serde_json::to_value(Portfolio::new(rows)).unwrap_or_default();
        let data = serde_json::json!({ "day": day_label(day), "portfolio": portfolio });
        let event = NotifyEvent { kind: EventKind::DailyPnl, bot_id: None, ts: now, data };
        notifications.enqueue(user_id, event)?;
    }
    meta.insert(DAILY_MARKER, &day.to_be_bytes())?;
    notifications.store().commit().await
}

#[cfg(test)]
mod tests {
    use keel_core::notify::NotifyEvent;
    use serde_json::json;

    use super::*;

    fn pending() -> DeliveryRecord {
        DeliveryRecord {
            id: 9,
            user_id: 1,
            channel_id: 2,
            event: NotifyEvent { kind: EventKind::Fill, bot_id: Some(3), ts: 5, data: json!({}) },
            state: DeliveryState::Pending,
            attempts: 0,
            created_at_ms: 0,
            next_attempt_ms: Some(0),
            last_status: None,
            last_error: None,
            delivered_at_ms: None,
            finished_at_ms: None,
        }
    }

    #[test]
    fn outcomes_move_a_delivery_on_and_the_cap_fails_it() {
        let mut config = NotifyConfig::default();
        config.backoff.max_attempts = 3;
        let error = || Outcome::Retry { status: Some(500), error: "HTTP 500".into(), after: None };
        let mut r = pending();
        assert_eq!(apply(&mut r, &error(), &config, 1.0, 1_000), Some(2_000));
        assert_eq!((r.state, r.attempts, r.last_status), (DeliveryState::Pending, 1, Some(500)));
        assert_eq!(apply(&mut r, &error(), &config, 1.0, 2_000), Some(4_000));
        assert_eq!(apply(&mut r, &error(), &config, 1.0, 4_000), None);
        assert_eq!(r.state, DeliveryState::Failed);
        assert_eq!(r.last_error.as_deref(), Some("gave up after 3 attempts: HTTP 500"));
        assert_eq!((r.next_attempt_ms, r.finished_at_ms), (None, Some(4_000)));

        let mut r = pending();
        let asked = Outcome::Retry {
            status: Some(429),
            error: "slow down".into(),
            after: Some(Duration::from_secs(7)),
        };
        assert_eq!(apply(&mut r, &asked, &config, 0.0, 1_000), Some(8_000), "retry_after wins");
        assert_eq!(apply(&mut r, &Outcome::Delivered { status: 200 }, &config, 0.0, 9_000), None);
        assert_eq!(
            (r.state, r.delivered_at_ms, r.last_error),
            (DeliveryState::Delivered, Some(9_000), None)
        );

        let mut r = pending();
        let refused = Outcome::Refused { status: None, error: "loopback".into() };
        assert_eq!(apply(&mut r, &refused, &config, 0.0, 1_000), None);
        assert_eq!((r.state, r.attempts), (DeliveryState::Failed, 1));
    }
}
