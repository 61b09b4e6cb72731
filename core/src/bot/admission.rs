//! Admission of a bot definition: the checks a new or edited bot must pass before it is stored.
//! These are the pure ones; the runtime (`keel_actors::bot::admission`) asks the venue's feed
//! for the instrument's rules and the vault for the exchange account, then calls them.
//!
//! Field errors are collected, not returned at the first, so an owner sees every bad field at
//! once.

use super::user_risk::{LeverageCaps, leverage_error};
use super::{BotId, BotRecord, BotStatus, MarginType, validate_static};
use crate::market::{Symbol, VenueId};
use crate::trading::InstrumentFilters;
use crate::validation::FieldError;

/// The venue and symbol a new bot names, or field errors for them. `enabled` lists the venues
/// that run, in the order the error message names them.
pub fn parse_market(
    enabled: &[VenueId],
    raw_venue: &str,
    raw_symbol: &str,
    details: &mut Vec<FieldError>,
) -> Option<(VenueId, Symbol)> {
    let venue = VenueId::parse(raw_venue).filter(|v| enabled.contains(v));
    if venue.is_none() {
        let enabled: Vec<&str> = enabled.iter().map(|v| v.as_str()).collect();
        details.push(FieldError::new(
            "venue",
            format!("must be an enabled venue: {}", enabled.join(", ")),
        ));
    }
    let symbol = Symbol::parse(raw_symbol);
    if symbol.is_none() {
        details.push(FieldError::new("symbol", "must be 2 to 20 letters and digits"));
    }
    venue.zip(symbol)
}

/// The checks of a whole definition that need no venue data.
pub fn static_errors(record: &BotRecord) -> Vec<FieldError> {
    validate_static(
        &record.name,
        record.mode,
        record.exchange_account_id,
        &record.risk,
        record.bracket.as_ref(),
        &record.paper,
    )
}

/// Checks a bot's `leverage` and `margin_type` against its venue: only a venue with leverage
/// takes them, and there they default to 1 and `isolated`, so the venue never trades a bot at
/// whatever leverage its account happened to hold. The leverage must fit under the bot's own
/// `risk.max_leverage` and `caps` (its owner's and the operator's).
pub fn check_derivatives(
    record: &mut BotRecord,
    leverage_venue: bool,
    caps: LeverageCaps,
    details: &mut Vec<FieldError>,
) {
    if !leverage_venue {
        let venue = record.venue;
        if record.leverage.is_some() {
            details.push(FieldError::new(
                "leverage",
                format!("{venue} has no leverage: leave it out for a spot venue"),
            ));
        }
        if record.margin_type.is_some() {
            details.push(FieldError::new(
                "margin_type",
                format!("{venue} has no margin types: leave it out for a spot venue"),
            ));
        }
        return;
    }
    record.leverage.get_or_insert(1);
    record.margin_type.get_or_insert(MarginType::Isolated);
    details.extend(leverage_error(record, caps));
}

/// The field error for a symbol the venue does not list.
pub fn unknown_symbol(venue: VenueId, symbol: &Symbol) -> FieldError {
    FieldError::new("symbol", format!("{venue} has no symbol {symbol}"))
}

/// Takes the instrument's rules into the record and checks its strategy against them.
pub fn check_strategy(
    record: &mut BotRecord,
    filters: InstrumentFilters,
    details: &mut Vec<FieldError>,
) {
    record.filters = filters;
    let strategy = &record.strategy;
    if strategy.kind == crate::strategy::WASM_KIND {
        // The module and its params are checked by the runtime, which holds the modules.
        if strategy.module_id.is_none() {
            details.push(FieldError::new(
                "strategy.module_id",
                "required with kind wasm: the id of one of your modules (POST /strategies)",
            ));
        }
        return;
    }
    if strategy.module_id.is_some() {
        details.push(FieldError::new("strategy.module_id", "only with kind wasm"));
    }
    if let Err(errors) = crate::strategy::build(strategy, &record.filters) {
        details.extend(errors);
    }
}

/// Checks a live bot's exchange account: `held_testnet` is whether the user's account of that
/// id on the bot's venue holds a testnet key (`None`: the user has no such account), and
/// `venue_testnet` whether the venue is configured for its testnet.
pub fn check_account(
    account: u64,
    venue: VenueId,
    held_testnet: Option<bool>,
    venue_testnet: bool,
    details: &mut Vec<FieldError>,
) {
    let Some(testnet) = held_testnet else {
        details.push(FieldError::new(
            "exchange_account_id",
            format!("no exchange account {account} of yours on {venue}"),
        ));
        return;
    };
    if testnet != venue_testnet {
        // A testnet key on mainnet (or the reverse) is refused by the venue on every order.
        let (key, server) =
            if testnet { ("a testnet", "mainnet") } else { ("a mainnet", "testnet") };
        details.push(FieldError::new(
            "exchange_account_id",
            format!("account {account} holds {key} key but {venue} is configured for {server}"),
        ));
    }
}

/// A running or paused bot's definition cannot change under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bot {id} is {status:?}; stop it before editing")]
pub struct NotEditable {
    /// The bot.
    pub id: BotId,
    /// Its state.
    pub status: BotStatus,
}

/// Whether the bot may be edited now.
///
/// # Errors
/// [`NotEditable`] while it runs or is paused.
pub fn check_editable(record: &BotRecord) -> Result<(), NotEditable> {
    if record.status.is_active() {
        return Err(NotEditable { id: record.id, status: record.status });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;
    use crate::bot::{BotMode, MAX_LEVERAGE};
    use crate::strategy::StrategySpec;

    fn record() -> BotRecord {
        BotRecord {
            name: "grid".into(),
            strategy: StrategySpec {
                kind: "ema_cross".into(),
                params: json!({"fast": 5, "slow": 20, "qty": "0.001"}),
                module_id: None,
            },
            ..crate::bot::testing::record(3, BotStatus::Created)
        }
    }

    #[test]
    fn a_disabled_venue_and_a_bad_symbol_are_both_reported() {
        let mut details = Vec::new();
        let enabled = [VenueId::Sim, VenueId::Binance];
        assert_eq!(parse_market(&enabled, "binance_futures", "BTC-USDT", &mut details), None);
        let messages: Vec<_> = details.iter().map(|d| (d.field.as_str(), &*d.message)).collect();
        assert_eq!(
            messages,
            [
                ("venue", "must be an enabled venue: sim, binance"),
                ("symbol", "must be 2 to 20 letters and digits")
            ]
        );
        let mut details = Vec::new();
        let parsed = parse_market(&enabled, "sim", "ETHUSDT", &mut details);
        assert_eq!(parsed, Some((VenueId::Sim, Symbol::parse("ETHUSDT").unwrap())));
        assert!(details.is_empty());
    }

    #[test]
    fn static_errors_check_the_record_as_validate_static_does() {
        let mut bot = record();
        assert!(static_errors(&bot).is_empty());
        bot.name = " ".into();
        bot.mode = BotMode::Live;
        bot.paper.starting_quote = Decimal::ZERO;
        let fields: Vec<_> = static_errors(&bot).into_iter().map(|d| d.field).collect();
        assert_eq!(fields, ["name", "exchange_account_id", "paper.starting_quote"]);
    }

    #[test]
    fn leverage_and_margin_type_belong_to_derivatives_venues_and_default_there() {
        let mut spot = record();
        spot.leverage = Some(3);
        spot.margin_type = Some(MarginType::Cross);
        let mut details = Vec::new();
        check_derivatives(&mut spot, false, LeverageCaps::default(), &mut details);
        let fields: Vec<_> = details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["leverage", "margin_type"]);

        let mut perp = record();
        let mut details = Vec::new();
        check_derivatives(&mut perp, true, LeverageCaps::default(), &mut details);
        assert!(details.is_empty(), "{details:?}");
        assert_eq!((perp.leverage, perp.margin_type), (Some(1), Some(MarginType::Isolated)));

        perp.leverage = Some(MAX_LEVERAGE + 1);
        perp.margin_type = Some(MarginType::Cross);
        check_derivatives(&mut perp, true, LeverageCaps::default(), &mut details);
        assert_eq!(details.len(), 1);
        assert_eq!(details[0].field, "leverage");
        assert_eq!(perp.margin_type, Some(MarginType::Cross), "an owner's choice is kept");

        // The bot's own leverage cap.
        let mut capped = record();
        capped.leverage = Some(20);
        capped.risk.max_leverage = Some(10);
        let mut details = Vec::new();
        check_derivatives(&mut capped, true, LeverageCaps::default(), &mut details);
        assert_eq!(details.len(), 1);
        assert_eq!(details[0].field, "leverage");
        capped.leverage = Some(10);
        let mut details = Vec::new();
        check_derivatives(&mut capped, true, LeverageCaps::default(), &mut details);
        assert!(details.is_empty(), "{details:?}");

        // Its owner's cap for all their bots, then the server's.
        for caps in
            [LeverageCaps { owner: Some(5), server: 125 }, LeverageCaps { owner: None, server: 8 }]
        {
            let mut details = Vec::new();
            check_derivatives(&mut capped, true, caps, &mut details);
            assert_eq!(details.len(), 1, "{caps:?}");
            assert!(details[0].message.contains("max_leverage"), "{details:?}");
        }
    }

    #[test]
    fn the_strategy_is_checked_against_the_instruments_rules() {
        let mut bot = record();
        let mut details = Vec::new();
        let filters = crate::strategy::testing::filters();
        check_strategy(&mut bot, filters.clone(), &mut details);
        assert!(details.is_empty(), "{details:?}");
        assert_eq!(bot.filters, filters);
        bot.strategy.params = json!({"fast": 20, "slow": 5, "qty": "0.001"});
        check_strategy(&mut bot, filters, &mut details);
        assert!(!details.is_empty());
    }

    #[test]
    fn an_account_must_exist_and_match_the_venues_network() {
        let cases = [
            (None, false, Some("no exchange account 9 of yours on binance")),
            (Some(false), false, None),
            (Some(true), true, None),
            (Some(true), false, Some("holds a testnet key but binance is configured for mainnet")),
            (Some(false), true, Some("holds a mainnet key but binance is configured for testnet")),
        ];
        for (held, venue_testnet, expected) in cases {
            let mut details = Vec::new();
            check_account(9, VenueId::Binance, held, venue_testnet, &mut details);
            match expected {
                None => assert!(details.is_empty(), "{held:?}: {details:?}"),
                Some(message) => {
                    assert_eq!(details.len(), 1);
                    assert_eq!(details[0].field, "exchange_account_id");
                    assert!(details[0].message.contains(message), "{:?}", details[0]);
                }
            }
        }
    }

    #[test]
    fn only_an_idle_bot_may_be_edited() {
        let mut bot = record();
        for status in [BotStatus::Created, BotStatus::Stopped, BotStatus::Failed] {
            bot.status = status;
            assert!(check_editable(&bot).is_ok());
        }
        bot.status = BotStatus::Paused;
        let err = check_editable(&bot).unwrap_err();
        assert_eq!(err.to_string(), "bot 3 is Paused; stop it before editing");
    }
}
