//! Strategies: pure, deterministic decision code behind one trait.
//!
//! # Contract
//!
//! A [`Strategy`] sees market events and its own fills, and answers with [`Intent`]s. It does no
//! I/O, reads no clock (time comes from the events), and keeps no randomness: the same sequence of
//! calls gives the same intents, which is what makes backtests and paper bots agree. It may be
//! called from inside `catch_unwind`, so a panic costs the bot, never the process.
//!
//! Intents are requests, not orders: the order manager runs risk checks and the venue's filters on
//! each one, and may reject it. A strategy learns what happened from [`StrategyContext`] on its
//! next call and from [`Strategy::on_fill`].
//!
//! Indicators are incremental (O(1) per event). A strategy's state can be saved and restored
//! ([`Strategy::save`] / [`Strategy::restore`]), so a restarted bot continues where it was.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::market::MarketEvent;
use crate::trading::{Fill, InstrumentFilters, Order, OrderRequest, Position, Side};

/// What a strategy asks the order manager to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// Place an order.
    Place(OrderRequest),
    /// Cancel every open order this strategy placed.
    CancelAll,
    /// Cancel one open order this strategy placed (by id; anything else is ignored).
    Cancel(u64),
    /// Write a line to the bot's journal.
    Log {
        /// `info`, `warn` or `error`.
        level: String,
        /// The message.
        message: String,
    },
}

/// One of the bot's open orders, as a strategy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrderView {
    /// Order id.
    pub id: u64,
    /// Buy or sell.
    pub side: Side,
    /// Limit price, if a limit order.
    pub price: Option<Decimal>,
    /// Quantity still to fill.
    pub remaining: Decimal,
    /// The tag the strategy gave it.
    pub tag: u32,
}

/// What a strategy may read about its bot at each call.
#[derive(Debug, Clone, Copy)]
pub struct StrategyContext<'a> {
    /// Current position and balances.
    pub position: &'a Position,
    /// The bot's open orders placed by the strategy.
    pub open_orders: &'a [OpenOrderView],
    /// The instrument's tick, step and notional rules.
    pub filters: &'a InstrumentFilters,
    /// Event time of the current call, ms since the epoch.
    pub now_ms: u64,
}

/// A strategy kind with validated parameters, ready to build.
pub trait Strategy: Send + std::fmt::Debug {
    /// Reacts to one market event, pushing any intents into `out`.
    fn on_event(&mut self, event: &MarketEvent, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>);

    /// Reacts to a fill of one of its orders (after the position was updated).
    fn on_fill(&mut self, fill: &Fill, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let _ = (fill, ctx, out);
    }

    /// Whether it is told of its orders' changes ([`Strategy::on_order`]); the engine keeps
    /// nothing for a strategy that is not.
    fn wants_order_updates(&self) -> bool {
        false
    }

    /// Reacts to a change of one of its own orders (accepted, filled in part or in full,
    /// canceled, rejected, expired): each version, in order, once the step that made it is done
    /// (before the next market event, or in the next round of its own intents).
    fn on_order(&mut self, order: &Order, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let _ = (order, ctx, out);
    }

    /// The strategy's internal state, for persistence.
    fn save(&self) -> serde_json::Value;

    /// Restores state produced by [`Strategy::save`] of the same kind and params.
    ///
    /// # Errors
    /// When the value is not such a state; the bot then starts the strategy fresh.
    fn restore(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error>;

    /// The indicator series this strategy publishes, fixed once built (see [`series`]).
    fn series(&self) -> Vec<SeriesSpec> {
        Vec::new()
    }

    /// Writes the latest value of each series into `out` (one slot per [`Strategy::series`]
    /// entry, all `None` on entry); a slot left `None` has no value yet.
    fn series_values(&self, ctx: &StrategyContext<'_>, out: &mut [Option<Decimal>]) {
        let _ = (ctx, out);
    }

    /// Why the strategy cannot go on, once it cannot (a sandboxed module that trapped): the
    /// engine then pauses the bot with this reason instead of calling it again.
    fn failure(&self) -> Option<String> {
        None
    }

    /// The owner resumed the bot: a failed strategy may start over from its last saved state.
    fn resume(&mut self) {}
}

/// A strategy as the API names it: `{"kind": "ema_cross", "params": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// `ema_cross`, `rsi`, `grid`, `dca`, or `wasm` (an uploaded module, `module_id`).
    #[schema(pattern = "^(ema_cross|rsi|grid|dca|wasm)$", example = "ema_cross")]
    pub kind: String,
    /// The uploaded module a `wasm` strategy runs (`POST /strategies`); only with `wasm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64, format = Int64)]
    pub module_id: Option<u64>,
    /// The kind's parameters, by name (an object; its keys depend on `kind`).
    #[serde(default)]
    pub params: serde_json::Value,
}

mod common;
pub mod dca;
pub mod ema_cross;
pub mod grid;
pub mod indicators;
pub mod rsi;
pub mod series;
#[cfg(test)]
pub(crate) mod testing;

pub use series::{IndicatorUpdate, Pane, SeriesSpec, SeriesStyle};

use crate::validation::FieldError;

/// Longest indicator period accepted.
pub const MAX_PERIOD: u32 = 10_000;

/// The strategy kinds `build` knows.
pub const KINDS: [&str; 4] = ["ema_cross", "rsi", "grid", "dca"];

/// A built-in strategy kind as `GET /strategies` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuiltinKind {
    /// Its `kind` in a bot's strategy.
    pub kind: &'static str,
    /// What it does, in a sentence.
    pub description: &'static str,
    /// The JSON Schema of its params, generated from its `Params` type.
    pub params_schema: serde_json::Value,
}

/// The built-in kinds ([`KINDS`], in that order), each with the JSON Schema of its params
/// generated from the type `build` reads them into, so the schema and the check cannot drift.
pub fn builtin_kinds() -> Vec<BuiltinKind> {
    fn schema<P: utoipa::PartialSchema>(titles: &[(&str, &str)]) -> serde_json::Value {
        // A schema is plain data: serialising it cannot fail.
        let mut schema = serde_json::to_value(P::schema()).unwrap_or_default();
        for (name, title) in titles {
            if let Some(prop) = schema["properties"].get_mut(*name).and_then(|p| p.as_object_mut())
            {
                prop.insert("title".into(), (*title).into());
            }
        }
        schema
    }
    vec![
        BuiltinKind {
            kind: "ema_cross",
            description: "Buys when the fast EMA crosses above the slow one, sells on the cross \
                back.",
            params_schema: schema::<ema_cross::Params>(ema_cross::TITLES),
        },
        BuiltinKind {
            kind: "rsi",
            description: "Buys when RSI falls below oversold, sells above overbought.",
            params_schema: schema::<rsi::Params>(rsi::TITLES),
        },
        BuiltinKind {
            kind: "grid",
            description: "Resting orders at evenly spaced levels between lower and upper.",
            params_schema: schema::<grid::Params>(grid::TITLES),
        },
        BuiltinKind {
            kind: "dca",
            description: "Buys a fixed quote amount on a schedule; sells everything at a \
                take-profit.",
            params_schema: schema::<dca::Params>(dca::TITLES),
        },
    ]
}

/// The kind of an owner's uploaded module (`module_id` names it).
pub const WASM_KIND: &str = "wasm";

/// Builds a strategy from its API description, checking every parameter against the
/// instrument's rules.
///
/// # Errors
/// Every problem found, as field errors (`strategy.kind`, `strategy.params.<name>`).
pub fn build(
    spec: &StrategySpec,
    filters: &InstrumentFilters,
) -> Result<Box<dyn Strategy>, Vec<FieldError>> {
    fn checked<P, S: Strategy + 'static>(
        params: &serde_json::Value,
        validate: impl Fn(&P) -> Vec<FieldError>,
        make: impl Fn(P) -> S,
    ) -> Result<Box<dyn Strategy>, Vec<FieldError>>
    where
        P: serde::de::DeserializeOwned,
    {
        let params: P = common::parse(params)?;
        let errors = validate(&params);
        if errors.is_empty() { Ok(Box::new(make(params))) } else { Err(errors) }
    }
    let params = &spec.params;
    match spec.kind.as_str() {
        "ema_cross" => {
            checked(params, |p: &ema_cross::Params| p.validate(filters), ema_cross::EmaCross::new)
        }
        "rsi" => checked(params, |p: &rsi::Params| p.validate(filters), rsi::RsiStrategy::new),
        "grid" => checked(params, |p: &grid::Params| p.validate(filters), grid::Grid::new),
        "dca" => checked(params, |p: &dca::Params| p.validate(filters), dca::Dca::new),
        other => Err(vec![FieldError::new(
            "strategy.kind",
            format!(
                "unknown strategy `{}`; known: {}",
                other.chars().take(40).collect::<String>(),
                KINDS.join(", ")
            ),
        )]),
    }
}

#[cfg(test)]
mod build_tests {
    use super::*;
    use crate::strategy::testing::filters;

    #[test]
    fn builtin_schemas_describe_what_build_reads() {
        let kinds = builtin_kinds();
        assert_eq!(kinds.iter().map(|k| k.kind).collect::<Vec<_>>(), KINDS);
        for kind in kinds {
            let schema = &kind.params_schema;
            assert_eq!(schema["type"], "object", "{}", kind.kind);
            assert_eq!(schema["additionalProperties"], false, "{}", kind.kind);
            // The defaults of every field that has one, plus what grid lacks, build.
            let mut params = serde_json::Map::new();
            for (name, prop) in schema["properties"].as_object().unwrap() {
                assert!(prop["title"].is_string(), "{} {name}", kind.kind);
                if let Some(default) = prop.get("default") {
                    params.insert(name.clone(), default.clone());
                }
            }
            if kind.kind == "grid" {
                params.insert("lower".into(), "90".into());
                params.insert("upper".into(), "110".into());
            }
            let required = schema["required"].as_array().unwrap();
            assert_eq!(required.len(), schema["properties"].as_object().unwrap().len());
            let spec = StrategySpec {
                kind: kind.kind.into(),
                module_id: None,
                params: serde_json::Value::Object(params),
            };
            assert!(build(&spec, &filters()).is_ok(), "{}", kind.kind);
        }
        let ema = &builtin_kinds()[0].params_schema;
        assert_eq!(ema["properties"]["fast"]["maximum"], MAX_PERIOD);
        assert_eq!(ema["properties"]["qty"]["format"], "decimal");
    }

    #[test]
    fn build_names_the_field_of_every_problem() {
        let cases = [
            (r#"{"kind": "ema_cross", "params": {"fast": 5, "slow": 20, "qty": "0.01"}}"#, vec![]),
            (
                r#"{"kind": "rsi", "params": {"period": 14, "oversold": 30, "overbought": 70, "qty": "0.01"}}"#,
                vec![],
            ),
            (
                r#"{"kind": "grid", "params": {"lower": "90", "upper": "110", "levels": 5, "qty_per_level": "0.01"}}"#,
                vec![],
            ),
            (
                r#"{"kind": "dca", "params": {"interval_secs": 60, "quote_amount": "50", "take_profit_pct": "2"}}"#,
                vec![],
            ),
            (r#"{"kind": "martingale", "params": {}}"#, vec!["strategy.kind"]),
            (r#"{"kind": "ema_cross", "params": {"fast": 5}}"#, vec!["strategy.params"]),
            (
                r#"{"kind": "ema_cross", "params": {"fast": 5, "slow": 20, "qty": "0.01", "x": 1}}"#,
                vec!["strategy.params"],
            ),
            (
                r#"{"kind": "ema_cross", "params": {"fast": "five", "slow": 20, "qty": "0.01"}}"#,
                vec!["strategy.params"],
            ),
            (
                r#"{"kind": "ema_cross", "params": {"fast": 50, "slow": 20, "qty": "0.0001"}}"#,
                vec!["strategy.params.fast", "strategy.params.qty"],
            ),
            // Named, never positional: serde's derive would read this array as the struct.
            (r#"{"kind": "ema_cross", "params": [5, 20, "0.01"]}"#, vec!["strategy.params"]),
            (r#"{"kind": "ema_cross", "params": "fast=5"}"#, vec!["strategy.params"]),
            (r#"{"kind": "ema_cross"}"#, vec!["strategy.params"]),
        ];
        for (json, fields) in cases {
            let spec: StrategySpec = serde_json::from_str(json).unwrap();
            let got: Vec<String> = match build(&spec, &filters()) {
                Ok(_) => vec![],
                Err(errors) => errors.into_iter().map(|e| e.field).collect(),
            };
            assert_eq!(got, fields, "{json}");
        }
    }
}
