//! What a bot is: its definition, its lifecycle state machine, and validation of what owners send.
//!
//! - [`admission`]: the pure checks a new or edited bot definition must pass;
//! - [`performance`]: P&L, win rate, drawdown and exposure from a bot's fills.
//! - [`report`]: the position and portfolio views of one user's bots.
//! - [`user_risk`]: an owner's limits over all of their bots, and the leverage caps.

pub mod admission;
pub mod funding;
pub mod performance;
pub mod report;
pub mod user_risk;

#[cfg(test)]
pub(crate) mod testing;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::market::{Symbol, VenueId};
use crate::strategy::StrategySpec;
use crate::trading::InstrumentFilters;
use crate::trading::risk::RiskLimits;
use crate::validation::FieldError;

/// A bot's id: unique across users, increasing.
pub type BotId = u64;
/// A user's id.
pub type UserId = u64;

/// Where a bot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotStatus {
    /// Defined, never started.
    Created,
    /// Its actor runs the strategy on live events.
    Running,
    /// Its actor keeps orders and marks up to date but the strategy is not called.
    Paused,
    /// No actor; open orders were canceled when it stopped.
    Stopped,
    /// Gave up: its actor crashed past the restart budget, or it cannot load.
    Failed,
}

impl BotStatus {
    /// Whether a bot in this state has a running actor.
    pub fn is_active(self) -> bool {
        matches!(self, BotStatus::Running | BotStatus::Paused)
    }

    /// Whether its definition may be edited or deleted.
    pub fn is_idle(self) -> bool {
        !self.is_active()
    }

    /// The state after `control`, or `None` when the transition is not allowed.
    pub fn after(self, control: Control) -> Option<BotStatus> {
        use BotStatus::*;
        match (self, control) {
            (Created | Stopped | Failed, Control::Start) => Some(Running),
            (Running, Control::Pause) => Some(Paused),
            (Paused, Control::Resume) => Some(Running),
            (Running | Paused | Failed, Control::Stop) => Some(Stopped),
            _ => None,
        }
    }
}

/// The lifecycle commands an owner sends (`POST /bots/{id}/start|stop|pause|resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Start (or restart after a stop or failure).
    Start,
    /// Stop: cancel open orders and stop the actor.
    Stop,
    /// Keep the actor, stop calling the strategy.
    Pause,
    /// Call the strategy again.
    Resume,
}

impl Control {
    /// Parses `start`, `stop`, `pause`, `resume`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => Control::Start,
            "stop" => Control::Stop,
            "pause" => Control::Pause,
            "resume" => Control::Resume,
            _ => return None,
        })
    }
}

/// Paper or real money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotMode {
    /// Simulated fills against live market data.
    Paper,
    /// Real orders on the venue, signed in the vault.
    Live,
}

crate::deserialize_from_names!(BotMode { "paper" => BotMode::Paper, "live" => BotMode::Live });

/// An OCO bracket placed around every filled entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bracket {
    /// Take profit this many percent beyond the entry price.
    pub take_profit_pct: Decimal,
    /// Stop out this many percent against the entry price.
    pub stop_loss_pct: Decimal,
}

/// Paper account settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaperSettings {
    /// Quote balance the bot starts with.
    pub starting_quote: Decimal,
    /// Fee per fill in basis points.
    #[serde(default = "default_fee_bps")]
    pub fee_bps: Decimal,
    /// Paper futures (a bot with `leverage`): the maintenance margin rate, as a fraction of
    /// notional, below which the position is liquidated. Defaults to 0.004 (Binance USD-M's
    /// lowest bracket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_margin_rate: Option<Decimal>,
}

fn default_fee_bps() -> Decimal {
    Decimal::TEN
}

impl Default for PaperSettings {
    fn default() -> Self {
        Self {
            starting_quote: Decimal::from(10_000),
            fee_bps: default_fee_bps(),
            maintenance_margin_rate: None,
        }
    }
}

/// How a derivatives position's margin is held at the venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarginType {
    /// The position has its own margin: a liquidation loses that margin and no more.
    Isolated,
    /// The position draws on the account's whole margin balance.
    Cross,
}

/// Most leverage a bot may ask for. A venue may allow less for a symbol or a position size
/// (Binance USD-M's brackets, Bybit's risk limits); it then refuses the bot's start.
pub const MAX_LEVERAGE: u32 = 125;

/// A bot's definition and lifecycle state, as stored in the `bots` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BotRecord {
    /// Id.
    pub id: BotId,
    /// Owner.
    pub user_id: UserId,
    /// Owner's label.
    pub name: String,
    /// Venue it trades on.
    pub venue: VenueId,
    /// Instrument.
    pub symbol: Symbol,
    /// Paper or live.
    pub mode: BotMode,
    /// The exchange account (credential id) a live bot trades with.
    pub exchange_account_id: Option<u64>,
    /// The strategy and its parameters.
    pub strategy: StrategySpec,
    /// Pre-trade limits.
    pub risk: RiskLimits,
    /// OCO bracket around entries.
    pub bracket: Option<Bracket>,
    /// Paper account.
    pub paper: PaperSettings,
    /// Leverage on a derivatives venue, set there before the bot's first order (and modelled by
    /// paper futures). Defaults to 1 on such a venue; absent on spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 125)]
    pub leverage: Option<u32>,
    /// Margin type on a derivatives venue, set there before the bot's first order. Defaults to
    /// `isolated` on such a venue; absent on spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_type: Option<MarginType>,
    /// The venue's rules for the symbol, as they were when the bot was defined (or last edited).
    pub filters: InstrumentFilters,
    /// Lifecycle state.
    pub status: BotStatus,
    /// Why it is paused or failed, when the runtime decided it.
    pub status_reason: Option<String>,
    /// Created, ms since the epoch.
    pub created_ts: u64,
    /// Last changed, ms since the epoch.
    pub updated_ts: u64,
}

/// Checks the parts of a bot definition that need no venue data.
pub fn validate_static(
    name: &str,
    mode: BotMode,
    exchange_account_id: Option<u64>,
    risk: &RiskLimits,
    bracket: Option<&Bracket>,
    paper: &PaperSettings,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name_len = name.chars().count();
    if name.trim().is_empty() || name_len > 64 || name.chars().any(char::is_control) {
        errors.push(FieldError::new("name", "must be 1 to 64 printable characters"));
    }
    if mode == BotMode::Live && exchange_account_id.is_none() {
        errors.push(FieldError::new("exchange_account_id", "is required for a live bot"));
    }
    errors.extend(risk.validate());
    let pct_range = Decimal::ZERO..=Decimal::ONE_HUNDRED;
    if let Some(b) = bracket {
        if b.take_profit_pct <= Decimal::ZERO || b.take_profit_pct > Decimal::from(1000) {
            errors.push(FieldError::new(
                "bracket.take_profit_pct",
                "must be above 0 and at most 1000",
            ));
        }
        if !pct_range.contains(&b.stop_loss_pct)
            || b.stop_loss_pct.is_zero()
            || b.stop_loss_pct == Decimal::ONE_HUNDRED
        {
            errors.push(FieldError::new("bracket.stop_loss_pct", "must be above 0 and below 100"));
        }
    }
    if paper.starting_quote <= Decimal::ZERO
        || paper.starting_quote > Decimal::from(1_000_000_000_000u64)
    {
        errors.push(FieldError::new("paper.starting_quote", "must be above 0 and at most 1e12"));
    }
    if paper.fee_bps < Decimal::ZERO || paper.fee_bps > Decimal::from(1000) {
        errors.push(FieldError::new("paper.fee_bps", "must be between 0 and 1000"));
    }
    if let Some(rate) = paper.maintenance_margin_rate
        && (rate <= Decimal::ZERO || rate >= Decimal::ONE)
    {
        errors
            .push(FieldError::new("paper.maintenance_margin_rate", "must be above 0 and below 1"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_exactly_the_documented_transitions() {
        use BotStatus::*;
        use Control::*;
        let cases = [
            (Created, Start, Some(Running)),
            (Created, Stop, None),
            (Created, Pause, None),
            (Created, Resume, None),
            (Running, Start, None),
            (Running, Pause, Some(Paused)),
            (Running, Resume, None),
            (Running, Stop, Some(Stopped)),
            (Paused, Resume, Some(Running)),
            (Paused, Pause, None),
            (Paused, Stop, Some(Stopped)),
            (Stopped, Start, Some(Running)),
            (Stopped, Stop, None),
            (Failed, Start, Some(Running)),
            (Failed, Stop, Some(Stopped)),
            (Failed, Resume, None),
        ];
        for (from, control, to) in cases {
            assert_eq!(from.after(control), to, "{from:?} + {control:?}");
        }
    }

    #[test]
    fn static_validation_names_every_bad_field() {
        let errors = validate_static(
            "",
            BotMode::Live,
            None,
            &RiskLimits::default(),
            Some(&Bracket { take_profit_pct: Decimal::ZERO, stop_loss_pct: Decimal::ONE_HUNDRED }),
            &PaperSettings {
                starting_quote: Decimal::NEGATIVE_ONE,
                fee_bps: Decimal::from(-1),
                maintenance_margin_rate: Some(Decimal::ONE),
            },
        );
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "exchange_account_id",
                "bracket.take_profit_pct",
                "bracket.stop_loss_pct",
                "paper.starting_quote",
                "paper.fee_bps",
                "paper.maintenance_margin_rate"
            ]
        );
        let ok = validate_static(
            "my bot",
            BotMode::Paper,
            None,
            &RiskLimits::default(),
            None,
            &PaperSettings::default(),
        );
        assert!(ok.is_empty(), "{ok:?}");
    }
}
