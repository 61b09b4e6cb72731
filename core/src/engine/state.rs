//! What an engine is built from: its fixed settings ([`EngineConfig`]) and the durable record it
//! resumes from and keeps up to date ([`BotState`]).

use serde::{Deserialize, Serialize};

use crate::bot::{BotId, Bracket};
use crate::trading::margin::FuturesConfig;
use crate::trading::paper::PaperConfig;
use crate::trading::risk::{DailyLoss, RiskLimits};
use crate::trading::{InstrumentFilters, Position};

/// A bot's durable counters and position: one record, rewritten with every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BotState {
    /// Position and balances.
    pub position: Position,
    /// Last order id handed out.
    pub last_order_id: u64,
    /// Last fill id handed out.
    pub last_fill_id: u64,
    /// Last journal event id handed out.
    pub last_event_id: u64,
    /// The strategy's saved state.
    pub strategy: Option<serde_json::Value>,
    /// The day's P&L tracker for `max_daily_loss`.
    pub daily: DailyLoss,
    /// Paper futures: the next funding time, ms (0 until the first event sets it).
    #[serde(default)]
    pub next_funding_ms: u64,
    /// Paper futures: the funding rate the venue's feed last published.
    #[serde(default)]
    pub funding_rate: Option<rust_decimal::Decimal>,
    /// Paper futures: the mark price the venue's feed last published.
    #[serde(default)]
    pub venue_mark: Option<rust_decimal::Decimal>,
    /// Event time of the last market event seen, ms.
    pub last_event_ms: u64,
    /// Venue funding payments booked (live derivatives bots).
    #[serde(default)]
    pub funding: super::FundingLedger,
}

/// The fixed settings of one bot's engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The bot.
    pub bot_id: BotId,
    /// The instrument's filters.
    pub filters: InstrumentFilters,
    /// Pre-trade limits.
    pub risk: RiskLimits,
    /// Bracket around entries.
    pub bracket: Option<Bracket>,
    /// Paper fees and slippage.
    pub paper: PaperConfig,
    /// Whether the venue allows short positions (futures).
    pub allow_short: bool,
    /// Leverage, margin type, liquidation and funding of a paper bot on a derivatives venue
    /// (`None` on spot; see [`margin`](crate::trading::margin)).
    pub futures: Option<FuturesConfig>,
    /// Real orders on the venue (sent through [`Effects::outbound`](super::Effects::outbound)) instead of paper fills.
    pub live: bool,
}
