//! The events an owner can be notified of, their names (fixed: the API and the docs use them),
//! and how a bot's journal lines turn into them.

use serde::{Deserialize, Serialize};

use crate::bot::BotStatus;
use crate::engine::{BotEvent, BotEventKind};

/// The reason a bot paused by its venue account's circuit breaker journals (it starts with it).
pub const BREAKER_REASON_PREFIX: &str = "circuit breaker";

/// Longest chat message (Telegram's `sendMessage` takes 4096 characters).
pub const MAX_TEXT_CHARS: usize = 4096;

/// What a channel can subscribe to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = NotificationEvent)]
pub enum EventKind {
    /// A bot's order filled (in part or whole).
    Fill,
    /// A bot changed state (the journaled `status` lines: started, paused, resumed, stopped,
    /// failed), whoever caused it.
    BotStatus,
    /// A bot paused itself: a risk limit (daily loss), venue failures or a slow strategy.
    RiskPause,
    /// A bot was paused because its venue account's circuit breaker opened.
    BreakerPause,
    /// The owner's kill switch ran: what it stopped and canceled.
    KillSwitch,
    /// Once per UTC day: realised and unrealised P&L per bot.
    DailyPnl,
}

impl EventKind {
    /// Every event, in the order the docs list them.
    pub const ALL: [EventKind; 6] = [
        EventKind::Fill,
        EventKind::BotStatus,
        EventKind::RiskPause,
        EventKind::BreakerPause,
        EventKind::KillSwitch,
        EventKind::DailyPnl,
    ];

    /// The name in the API, the payload's `type` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Fill => "fill",
            EventKind::BotStatus => "bot_status",
            EventKind::RiskPause => "risk_pause",
            EventKind::BreakerPause => "breaker_pause",
            EventKind::KillSwitch => "kill_switch",
            EventKind::DailyPnl => "daily_pnl",
        }
    }

    /// The event of this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Event names that are not events, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown events: {}", .0.join(", "))]
pub struct UnknownEvents(pub Vec<String>);

/// A channel's event list, checked: every name known, duplicates dropped, sorted.
///
/// # Errors
/// [`UnknownEvents`] names every name that is not an event.
pub fn parse_events(names: &[String]) -> Result<Vec<EventKind>, UnknownEvents> {
    let mut kinds = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in names {
        match EventKind::parse(name) {
            Some(kind) => kinds.push(kind),
            None => unknown.push(name.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(UnknownEvents(unknown));
    }
    kinds.sort_unstable();
    kinds.dedup();
    Ok(kinds)
}

/// One thing to tell an owner: what happened, to which bot, when, and its details as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyEvent {
    /// Which event.
    pub kind: EventKind,
    /// The bot it is about, when it is about one.
    pub bot_id: Option<u64>,
    /// When it happened, ms since the epoch.
    pub ts: u64,
    /// Its details: the fill, the status line, the kill switch's report, the summary.
    pub data: serde_json::Value,
}

impl NotifyEvent {
    /// The events a journal line gives: a fill; a status line is `bot_status`, and a self-pause
    /// (a status `paused` with a reason) is also `risk_pause` or `breaker_pause`.
    pub fn from_journal(bot_id: u64, line: &BotEvent) -> Vec<NotifyEvent> {
        let event = |kind, data| NotifyEvent { kind, bot_id: Some(bot_id), ts: line.ts, data };
        match &line.kind {
            BotEventKind::Fill(fill) => {
                vec![event(EventKind::Fill, serde_json::to_value(fill).unwrap_or_default())]
            }
            BotEventKind::Status { status, reason } => {
                let data = serde_json::json!({ "status": status, "reason": reason });
                let mut events = vec![event(EventKind::BotStatus, data.clone())];
                if let (BotStatus::Paused, Some(reason)) = (status, reason) {
                    let kind = if reason.starts_with(BREAKER_REASON_PREFIX) {
                        EventKind::BreakerPause
                    } else {
                        EventKind::RiskPause
                    };
                    events.push(event(kind, data));
                }
                events
            }
            _ => Vec::new(),
        }
    }

    /// A short plain-text rendering, for chat messages: at most [`MAX_TEXT_CHARS`] characters.
    pub fn text(&self) -> String {
        let text = self.full_text();
        if text.chars().count() <= MAX_TEXT_CHARS {
            return text;
        }
        let mut cut: String = text.chars().take(MAX_TEXT_CHARS - 1).collect();
        cut.push('…');
        cut
    }

    fn full_text(&self) -> String {
        let bot = self.bot_id.map(|id| format!("bot {id}: ")).unwrap_or_default();
        let field = |name: &str| match &self.data[name] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        match self.kind {
            EventKind::Fill => format!(
                "Keel {bot}fill {} {} @ {} (fee {})",
                field("side"),
                field("qty"),
                field("price"),
                field("fee")
            ),
            EventKind::BotStatus | EventKind::RiskPause | EventKind::BreakerPause => {
                let reason = field("reason");
                let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
                format!("Keel {bot}{}{reason}", field("status"))
            }
            EventKind::KillSwitch => format!(
                "Keel kill switch: {} bots stopped, {} orders canceled, failed: {}",
                field("bots_stopped"),
                field("orders_canceled"),
                field("failed")
            ),
            EventKind::DailyPnl => {
                let mut text = format!(
                    "Keel daily P&L for {}: realised {}, unrealised {}, fees {}, net {}",
                    field("day"),
                    self.data["portfolio"]["realized_pnl"],
                    self.data["portfolio"]["unrealized_pnl"],
                    self.data["portfolio"]["fees"],
                    self.data["portfolio"]["net_pnl"],
                );
                if let Some(items) = self.data["portfolio"]["items"].as_array() {
                    for item in items {
                        text.push_str(&format!(
                            "\n{} ({}): realised {}, unrealised {}",
                            item["name"].as_str().unwrap_or(""),
                            item["bot_id"],
                            item["realized_pnl"],
                            item["unrealized_pnl"],
                        ));
                    }
                }
                text.replace('"', "")
            }
        }
    }
}

/// Days since the Unix epoch of a UTC time in ms: the daily summary's calendar.
pub fn utc_day(ms: u64) -> u64 {
    ms / 86_400_000
}

/// `YYYY-MM-DD` of a day since the epoch (proleptic Gregorian, UTC).
pub fn day_label(day: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day whose summary is due at `now_ms`, given the last day summarised: the day that just
/// ended, once per day. `None` when it was sent already (or on a first start, which only
/// records today).
pub fn summary_due(last_summarised: Option<u64>, now_ms: u64) -> Option<u64> {
    let yesterday = utc_day(now_ms).checked_sub(1)?;
    match last_summarised {
        Some(last) if last >= yesterday => None,
        None => None,
        Some(_) => Some(yesterday),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::trading::{Fill, Liquidity, Side};

    #[test]
    fn event_names_round_trip_and_unknown_ones_are_all_named() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let names: Vec<String> =
            ["fill", "nope", "fill", "daily_pnl", "FILL"].into_iter().map(String::from).collect();
        assert_eq!(parse_events(&names), Err(UnknownEvents(vec!["nope".into(), "FILL".into()])));
        let names: Vec<String> =
            ["daily_pnl", "fill", "fill"].into_iter().map(String::from).collect();
        assert_eq!(parse_events(&names).unwrap(), vec![EventKind::Fill, EventKind::DailyPnl]);
    }

    fn line(kind: BotEventKind) -> BotEvent {
        BotEvent { id: 7, ts: 1_000, kind }
    }

    #[test]
    fn journal_lines_become_the_events_they_are() {
        let fill = Fill {
            id: 1,
            bot_id: 3,
            order_id: 2,
            side: Side::Buy,
            price: Decimal::new(100, 0),
            qty: Decimal::new(1, 1),
            fee: Decimal::new(1, 2),
            liquidity: Liquidity::Taker,
            tag: 0,
            ts: 1_000,
            commission: None,
        };
        let events = NotifyEvent::from_journal(3, &line(BotEventKind::Fill(fill)));
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].kind, events[0].bot_id), (EventKind::Fill, Some(3)));
        assert_eq!(events[0].data["price"], "100");
        assert!(events[0].text().contains("buy 0.1 @ 100"), "{}", events[0].text());

        let status = |status, reason: Option<&str>| {
            NotifyEvent::from_journal(
                3,
                &line(BotEventKind::Status { status, reason: reason.map(String::from) }),
            )
            .into_iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>()
        };
        assert_eq!(status(BotStatus::Running, None), vec![EventKind::BotStatus]);
        assert_eq!(status(BotStatus::Paused, None), vec![EventKind::BotStatus]);
        assert_eq!(
            status(BotStatus::Paused, Some("daily loss limit reached")),
            vec![EventKind::BotStatus, EventKind::RiskPause]
        );
        assert_eq!(
            status(BotStatus::Paused, Some("circuit breaker open: 5 failures")),
            vec![EventKind::BotStatus, EventKind::BreakerPause]
        );
        assert_eq!(status(BotStatus::Failed, Some("crashed")), vec![EventKind::BotStatus]);
        let long = NotifyEvent {
            kind: EventKind::BotStatus,
            bot_id: Some(3),
            ts: 1,
            data: serde_json::json!({"status": "failed", "reason": "x".repeat(10_000)}),
        };
        let text = long.text();
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        assert!(text.starts_with("Keel bot 3: failed: xxx") && text.ends_with('…'));
        let log = BotEventKind::Log { level: "info".into(), message: "hi".into() };
        assert!(NotifyEvent::from_journal(3, &line(log)).is_empty());
    }

    #[test]
    fn the_summary_is_due_once_per_utc_day_for_the_day_that_ended() {
        let day = 86_400_000;
        let now = 20_000 * day + 5;
        assert_eq!(summary_due(None, now), None, "a first start only records today");
        assert_eq!(summary_due(Some(20_000), now), None);
        assert_eq!(summary_due(Some(19_999), now), None, "yesterday's was sent");
        assert_eq!(summary_due(Some(19_998), now), Some(19_999));
        assert_eq!(summary_due(Some(10), now), Some(19_999), "a long stop sends one, not many");
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(20_000), "2024-10-04");
        assert_eq!(day_label(utc_day(1_709_164_800_000)), "2024-02-29");
    }
}
