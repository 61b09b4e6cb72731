//! An owner's own limits over all of their bots (`GET/PUT /api/v1/me/risk`), and the leverage
//! caps a bot must fit under.
//!
//! A bot's leverage is capped three times over: by its own `risk.max_leverage`, by its owner's
//! `max_leverage` (one setting for all their bots) and by the operator's `bots.max_leverage`
//! (every bot of every owner). [`leverage_error`] checks all three with the same message shape,
//! at create, edit and start. The owner's `max_notional` caps the notional of all their bots
//! together; it is enforced before each order (`MAX_USER_NOTIONAL`, in
//! [`check_order`](crate::trading::risk::check_order)).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{BotId, BotRecord, MAX_LEVERAGE};
use crate::trading::risk::MAX_LIMIT;
use crate::validation::FieldError;

/// An owner's limits over all of their bots. Each is optional; an absent limit does not apply.
/// A user stored before these limits existed reads as having none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRiskLimits {
    /// Highest leverage any of the owner's bots may be given, 1 to 125. A bot asking for more is
    /// refused at create, edit and start; the operator's `bots.max_leverage` still applies when
    /// it is lower.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 125)]
    pub max_leverage: Option<u32>,
    /// Largest notional (quote) all of the owner's running bots may hold together: each bot's
    /// position at the mark price plus its open orders that add to it, the measure of a bot's
    /// `risk.max_notional`. An order that would take the sum past it is refused
    /// (`MAX_USER_NOTIONAL`). Above 0.
    #[serde(default)]
    #[schema(example = "5000")]
    pub max_notional: Option<Decimal>,
}

impl UserRiskLimits {
    /// Field errors for a leverage outside 1 to 125 and a notional that is not above 0 (or is
    /// absurd).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(n) = self.max_leverage
            && !(1..=MAX_LEVERAGE).contains(&n)
        {
            errors.push(FieldError::new("max_leverage", format!("must be 1 to {MAX_LEVERAGE}")));
        }
        if let Some(v) = self.max_notional
            && (v <= Decimal::ZERO || v > Decimal::from(MAX_LIMIT))
        {
            errors.push(FieldError::new(
                "max_notional",
                format!("must be above 0 and at most {MAX_LIMIT}"),
            ));
        }
        errors
    }
}

/// The leverage caps above a bot's own `risk.max_leverage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeverageCaps {
    /// The owner's `max_leverage` (`PUT /me/risk`), when set.
    pub owner: Option<u32>,
    /// The operator's `bots.max_leverage`.
    pub server: u32,
}

impl Default for LeverageCaps {
    fn default() -> Self {
        Self { owner: None, server: MAX_LEVERAGE }
    }
}

/// The `leverage` field error of a bot whose leverage is out of range or above one of its caps
/// (the first one it breaks, each naming its limit); `None` when it fits or has no leverage.
pub fn leverage_error(record: &BotRecord, caps: LeverageCaps) -> Option<FieldError> {
    let leverage = record.leverage?;
    let refuse = |message: String| Some(FieldError::new("leverage", message));
    if !(1..=MAX_LEVERAGE).contains(&leverage) {
        return refuse(format!("must be 1 to {MAX_LEVERAGE}"));
    }
    if let Some(max) = record.risk.max_leverage
        && leverage > max
    {
        return refuse(format!("{leverage}x exceeds risk.max_leverage {max}x"));
    }
    if let Some(max) = caps.owner
        && leverage > max
    {
        return refuse(format!(
            "{leverage}x exceeds your max_leverage {max}x for all your bots (GET /api/v1/me/risk)"
        ));
    }
    if leverage > caps.server {
        return refuse(format!(
            "{leverage}x exceeds this server's limit for every bot, bots.max_leverage {}x",
            caps.server
        ));
    }
    None
}

/// The bots among `bots` that run (or are paused) with a leverage above `max`: an owner's
/// `max_leverage` is not lowered under them, so a running bot never trades above its owner's
/// limit.
pub fn running_above<'a>(
    bots: impl IntoIterator<Item = &'a BotRecord>,
    max: u32,
) -> Vec<(BotId, u32)> {
    bots.into_iter()
        .filter(|b| b.status.is_active())
        .filter_map(|b| b.leverage.filter(|l| *l > max).map(|l| (b.id, l)))
        .collect()
}

/// Why an owner's `max_leverage` cannot be lowered to `max` now, naming the bots in the way.
pub fn running_above_message(max: u32, bots: &[(BotId, u32)]) -> String {
    let listed: Vec<String> = bots.iter().map(|(id, l)| format!("bot {id} ({l}x)")).collect();
    format!(
        "max_leverage {max}x is below the leverage of running bots: {}; stop them (or give them \
         a lower leverage) first",
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bot::BotStatus;
    use crate::bot::testing::record;
    use crate::market::VenueId;

    fn bot(id: BotId, leverage: Option<u32>, status: BotStatus) -> BotRecord {
        BotRecord { venue: VenueId::BybitLinear, leverage, ..record(id, status) }
    }

    #[test]
    fn limits_are_checked_field_by_field_and_absent_ones_are_fine() {
        assert!(UserRiskLimits::default().validate().is_empty());
        let good = UserRiskLimits { max_leverage: Some(125), max_notional: Some(Decimal::ONE) };
        assert!(good.validate().is_empty());
        let cases = [
            (Some(0), None, vec!["max_leverage"]),
            (Some(126), Some(Decimal::ZERO), vec!["max_leverage", "max_notional"]),
            (None, Some(Decimal::NEGATIVE_ONE), vec!["max_notional"]),
            (None, Some(Decimal::from(MAX_LIMIT) + Decimal::ONE), vec!["max_notional"]),
        ];
        for (max_leverage, max_notional, fields) in cases {
            let limits = UserRiskLimits { max_leverage, max_notional };
            let found: Vec<_> = limits.validate().into_iter().map(|e| e.field).collect();
            assert_eq!(found, fields, "{limits:?}");
        }
    }

    #[test]
    fn a_user_stored_without_limits_reads_as_none_and_unknown_fields_are_refused() {
        let old: UserRiskLimits = serde_json::from_value(json!({})).unwrap();
        assert_eq!(old, UserRiskLimits::default());
        let set: UserRiskLimits =
            serde_json::from_value(json!({"max_leverage": 5, "max_notional": "250.5"})).unwrap();
        assert_eq!(set.max_notional, Some(Decimal::new(2505, 1)));
        assert!(serde_json::from_value::<UserRiskLimits>(json!({"max_levrage": 5})).is_err());
    }

    #[test]
    fn each_leverage_cap_is_named_when_it_is_the_one_broken() {
        let mut record = bot(1, Some(20), BotStatus::Created);
        let caps = LeverageCaps { owner: Some(10), server: 50 };
        let error = leverage_error(&record, caps).unwrap();
        assert_eq!(error.field, "leverage");
        assert!(error.message.contains("your max_leverage 10x"), "{}", error.message);

        record.risk.max_leverage = Some(15);
        let error = leverage_error(&record, caps).unwrap();
        assert!(error.message.contains("risk.max_leverage 15x"), "{}", error.message);

        record.risk.max_leverage = None;
        let error = leverage_error(&record, LeverageCaps { owner: None, server: 5 }).unwrap();
        assert!(error.message.contains("bots.max_leverage 5x"), "{}", error.message);

        assert_eq!(leverage_error(&record, LeverageCaps { owner: Some(20), server: 20 }), None);
        record.leverage = None;
        assert_eq!(leverage_error(&record, LeverageCaps { owner: Some(1), server: 1 }), None);
        record.leverage = Some(0);
        let error = leverage_error(&record, LeverageCaps::default()).unwrap();
        assert_eq!(error.message, "must be 1 to 125");
    }

    #[test]
    fn only_active_bots_above_the_new_limit_stand_in_its_way() {
        let bots = [
            bot(1, Some(20), BotStatus::Running),
            bot(2, Some(20), BotStatus::Stopped),
            bot(3, Some(8), BotStatus::Paused),
            bot(4, Some(5), BotStatus::Running),
            bot(5, None, BotStatus::Running),
        ];
        let found = running_above(&bots, 5);
        assert_eq!(found, [(1, 20), (3, 8)]);
        let message = running_above_message(5, &found);
        assert!(message.contains("bot 1 (20x), bot 3 (8x)"), "{message}");
        assert!(running_above(&bots, 20).is_empty());
    }
}
