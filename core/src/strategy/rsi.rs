//! `rsi`: buy when Wilder's RSI of trade prices crosses down through `oversold` while flat; sell
//! the whole position when it crosses up through `overbought`. Long only.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::common::{check_qty, check_range, field, sized, trade_price};
use super::indicators::Rsi;
use super::series::value_of;
use super::{Intent, SeriesSpec, Strategy, StrategyContext};
use crate::market::MarketEvent;
use crate::trading::{InstrumentFilters, OrderRequest, Side};
use crate::validation::FieldError;

/// A form's label for each parameter (the `title` of its schema).
pub(crate) const TITLES: &[(&str, &str)] = &[
    ("period", "RSI period"),
    ("oversold", "Oversold"),
    ("overbought", "Overbought"),
    ("qty", "Quantity"),
];

/// Parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RsiParams)]
pub struct Params {
    /// RSI period, in price changes.
    #[schema(minimum = 2, maximum = 10_000, default = 14)]
    pub period: u32,
    /// Buy below this (0–100).
    #[schema(exclusive_minimum = 0, exclusive_maximum = 100, default = 30)]
    pub oversold: f64,
    /// Sell above this (0–100), above `oversold`.
    #[schema(exclusive_minimum = 0, exclusive_maximum = 100, default = 70)]
    pub overbought: f64,
    /// Base quantity bought at each entry.
    #[schema(value_type = String, format = "decimal", default = "0.001")]
    pub qty: Decimal,
}

impl Params {
    /// Field errors, all of them.
    pub fn validate(&self, filters: &InstrumentFilters) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_range("period", self.period, 2..=super::MAX_PERIOD, &mut errors);
        for (name, v) in [("oversold", self.oversold), ("overbought", self.overbought)] {
            if !(v > 0.0 && v < 100.0) {
                errors.push(FieldError::new(field(name), "must be above 0 and below 100"));
            }
        }
        if self.oversold >= self.overbought {
            errors.push(FieldError::new(field("oversold"), "must be below overbought"));
        }
        check_qty("qty", self.qty, filters, &mut errors);
        errors
    }
}

/// The strategy and its state.
#[derive(Debug, Serialize, Deserialize)]
pub struct RsiStrategy {
    params: Params,
    rsi: Rsi,
    last: Option<f64>,
}

impl RsiStrategy {
    /// A fresh instance.
    pub fn new(params: Params) -> Self {
        Self { rsi: Rsi::new(params.period), params, last: None }
    }
}

impl Strategy for RsiStrategy {
    fn on_event(&mut self, event: &MarketEvent, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let Some((price, x)) = trade_price(event) else { return };
        let Some(rsi) = self.rsi.update(x) else { return };
        let Some(last) = self.last.replace(rsi) else { return };
        let held = ctx.position.qty;
        if last >= self.params.oversold
            && rsi < self.params.oversold
            && held.is_zero()
            && ctx.open_orders.is_empty()
        {
            if let Some(qty) = sized(self.params.qty, price, ctx.filters) {
                out.push(Intent::Place(OrderRequest::market(Side::Buy, qty)));
            }
        } else if last <= self.params.overbought
            && rsi > self.params.overbought
            && held > Decimal::ZERO
        {
            let qty = ctx.filters.floor_qty(held);
            if qty > Decimal::ZERO {
                out.push(Intent::Place(OrderRequest::market(Side::Sell, qty)));
            }
        }
    }

    fn series(&self) -> Vec<SeriesSpec> {
        vec![SeriesSpec::own_line("rsi", Some(0.0), Some(100.0))]
    }

    fn series_values(&self, _ctx: &StrategyContext<'_>, out: &mut [Option<Decimal>]) {
        if let [rsi, ..] = out {
            *rsi = self.rsi.value().and_then(value_of);
        }
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        super::common::restore(self, state, |s: &Self| &s.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{Harness, d, filters};

    fn params() -> Params {
        Params { period: 2, oversold: 30.0, overbought: 70.0, qty: d("0.5") }
    }

    #[test]
    fn it_buys_on_the_way_into_oversold_and_sells_on_the_way_into_overbought() {
        // RSI(2): 100 at index 2; 7.7 at index 3 (crossed down: buy); 3.0, then 39.6 at index 5;
        // 81.5 at index 6 (crossed up: sell); staying above 70 does not sell again.
        let prices = [100, 101, 102, 90, 80, 85, 100, 110, 120];
        let intents = Harness::new(RsiStrategy::new(params())).run(&prices);
        assert_eq!(
            intents,
            [
                (3, Intent::Place(OrderRequest::market(Side::Buy, d("0.5")))),
                (6, Intent::Place(OrderRequest::market(Side::Sell, d("0.5")))),
            ]
        );
    }

    #[test]
    fn params_are_checked_together() {
        let cases = [
            (params(), vec![]),
            (
                Params { period: 1, oversold: 80.0, overbought: 20.0, ..params() },
                vec!["period", "oversold"],
            ),
            (
                Params { oversold: 0.0, overbought: 100.0, qty: d("0"), ..params() },
                vec!["oversold", "overbought", "qty"],
            ),
        ];
        for (p, fields) in cases {
            let got: Vec<String> = p.validate(&filters()).into_iter().map(|e| e.field).collect();
            let want: Vec<String> = fields.iter().map(|n| field(n)).collect();
            assert_eq!(got, want, "{p:?}");
        }
    }

    #[test]
    fn a_restored_instance_continues_exactly_like_an_uninterrupted_one() {
        let prices: Vec<i64> = (0..300).map(|i| 100 + ((i * 53) % 31) - 15).collect();
        crate::strategy::testing::assert_restores(|| RsiStrategy::new(params()), &prices);
    }
}
