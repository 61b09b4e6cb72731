//! `ema_cross`: buy when the fast EMA of trade prices crosses above the slow one, sell the whole
//! position when it crosses back below. Long only; one entry at a time.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::common::{check_qty, check_range, field, sized, trade_price};
use super::indicators::Ema;
use super::series::value_of;
use super::{Intent, SeriesSpec, Strategy, StrategyContext};
use crate::market::MarketEvent;
use crate::trading::{InstrumentFilters, OrderRequest, Side};
use crate::validation::FieldError;

/// A form's label for each parameter (the `title` of its schema).
pub(crate) const TITLES: &[(&str, &str)] =
    &[("fast", "Fast EMA period"), ("slow", "Slow EMA period"), ("qty", "Quantity")];

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmaCrossParams)]
pub struct Params {
    /// Fast EMA period, in trades.
    #[schema(minimum = 1, maximum = 10_000, default = 5)]
    pub fast: u32,
    /// Slow EMA period, in trades; above `fast`.
    #[schema(minimum = 2, maximum = 10_000, default = 20)]
    pub slow: u32,
    /// Base quantity bought at each entry.
    #[schema(value_type = String, format = "decimal", default = "0.001")]
    pub qty: Decimal,
}

impl Params {
    /// Field errors, all of them.
    pub fn validate(&self, filters: &InstrumentFilters) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_range("fast", self.fast, 1..=super::MAX_PERIOD, &mut errors);
        check_range("slow", self.slow, 2..=super::MAX_PERIOD, &mut errors);
        if self.fast >= self.slow {
            errors.push(FieldError::new(field("fast"), "must be below slow"));
        }
        check_qty("qty", self.qty, filters, &mut errors);
        errors
    }
}

/// The strategy and its state.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmaCross {
    params: Params,
    fast: Ema,
    slow: Ema,
    /// Whether fast was above slow at the last ready sample.
    above: Option<bool>,
}

impl EmaCross {
    /// A fresh instance.
    pub fn new(params: Params) -> Self {
        Self { fast: Ema::new(params.fast), slow: Ema::new(params.slow), params, above: None }
    }
}

impl Strategy for EmaCross {
    fn on_event(&mut self, event: &MarketEvent, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let Some((price, x)) = trade_price(event) else { return };
        let (Some(fast), Some(slow)) = (self.fast.update(x), self.slow.update(x)) else { return };
        let above = fast > slow;
        let crossed = self.above.is_some_and(|was| was != above);
        self.above = Some(above);
        if !crossed {
            return;
        }
        let held = ctx.position.qty;
        if above && held.is_zero() && ctx.open_orders.is_empty() {
            if let Some(qty) = sized(self.params.qty, price, ctx.filters) {
                out.push(Intent::Place(OrderRequest::market(Side::Buy, qty)));
            }
        } else if !above && held > Decimal::ZERO {
            let qty = ctx.filters.floor_qty(held);
            if qty > Decimal::ZERO {
                out.push(Intent::Place(OrderRequest::market(Side::Sell, qty)));
            }
        }
    }

    fn series(&self) -> Vec<SeriesSpec> {
        vec![SeriesSpec::price_line("ema_fast"), SeriesSpec::price_line("ema_slow")]
    }

    fn series_values(&self, _ctx: &StrategyContext<'_>, out: &mut [Option<Decimal>]) {
        if let [fast, slow, ..] = out {
            *fast = self.fast.value().and_then(value_of);
            *slow = self.slow.value().and_then(value_of);
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
    use crate::strategy::testing::{Harness, d};

    fn params(fast: u32, slow: u32) -> Params {
        Params { fast, slow, qty: d("0.01") }
    }

    #[test]
    fn it_buys_at_the_golden_cross_and_sells_at_the_death_cross_only() {
        let prices = [100, 100, 100, 90, 90, 90, 110, 120, 130, 130, 80, 70, 60, 60];
        let mut h = Harness::new(EmaCross::new(params(2, 4)));
        let intents = h.run(&prices);
        // Ready at the 4th price (fast < slow); fast crosses above at 110, below at 80.
        assert_eq!(
            intents,
            [
                (6, Intent::Place(OrderRequest::market(Side::Buy, d("0.01")))),
                (10, Intent::Place(OrderRequest::market(Side::Sell, d("0.01")))),
            ]
        );
    }

    #[test]
    fn params_are_checked_together() {
        let f = crate::strategy::testing::filters();
        let cases = [
            (Params { fast: 10, slow: 30, qty: d("0.01") }, vec![]),
            (Params { fast: 30, slow: 10, qty: d("0.01") }, vec!["fast"]),
            (Params { fast: 10, slow: 10, qty: d("-1") }, vec!["fast", "qty"]),
            (Params { fast: 0, slow: 20_000, qty: d("0.0001") }, vec!["fast", "slow", "qty"]),
        ];
        for (p, fields) in cases {
            let got: Vec<String> = p.validate(&f).into_iter().map(|e| e.field).collect();
            let want: Vec<String> = fields.iter().map(|n| field(n)).collect();
            assert_eq!(got, want, "{p:?}");
        }
    }

    #[test]
    fn a_restored_instance_continues_exactly_like_an_uninterrupted_one() {
        let prices: Vec<i64> = (0..200).map(|i| 100 + ((i * 37) % 23) - 11).collect();
        crate::strategy::testing::assert_restores(|| EmaCross::new(params(3, 7)), &prices);
    }
}
