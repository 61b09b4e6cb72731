//! A bot definition for the tests of this module's parts.

use serde_json::json;

use super::{BotMode, BotRecord, BotStatus, PaperSettings};
use crate::market::{Symbol, VenueId};
use crate::strategy::StrategySpec;
use crate::trading::InstrumentFilters;
use crate::trading::risk::RiskLimits;

/// A paper `dca` bot `id` of user 1 on sim BTCUSDT, in `status`.
pub(crate) fn record(id: u64, status: BotStatus) -> BotRecord {
    BotRecord {
        id,
        user_id: 1,
        name: format!("bot {id}"),
        venue: VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        mode: BotMode::Paper,
        exchange_account_id: None,
        strategy: StrategySpec { kind: "dca".into(), params: json!({}), module_id: None },
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperSettings::default(),
        leverage: None,
        margin_type: None,
        filters: InstrumentFilters::default(),
        status,
        status_reason: None,
        created_ts: 0,
        updated_ts: 0,
    }
}
