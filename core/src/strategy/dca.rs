//! `dca`: dollar-cost averaging. Buys `quote_amount` worth at the first trade and then every
//! `interval_secs` of event time; sells the whole position once the price is `take_profit_pct`
//! above the average entry, and starts the schedule again.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::common::{check_range, field, sized, trade_price};
use super::{Intent, SeriesSpec, Strategy, StrategyContext};
use crate::market::MarketEvent;
use crate::trading::{InstrumentFilters, OrderRequest, Side};
use crate::validation::FieldError;

/// Longest interval: 30 days.
const MAX_INTERVAL_SECS: u64 = 30 * 86_400;

/// A form's label for each parameter (the `title` of its schema).
pub(crate) const TITLES: &[(&str, &str)] = &[
    ("interval_secs", "Interval (s)"),
    ("quote_amount", "Quote per buy"),
    ("take_profit_pct", "Take profit (%)"),
];

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DcaParams)]
pub struct Params {
    /// Seconds of event time between buys.
    #[schema(minimum = 1, maximum = 2_592_000, default = 3600)]
    pub interval_secs: u64,
    /// Quote spent at each buy.
    #[schema(value_type = String, format = "decimal", default = "50")]
    pub quote_amount: Decimal,
    /// Sell everything this many percent above the average entry.
    #[schema(value_type = String, format = "decimal", default = "2")]
    pub take_profit_pct: Decimal,
}

impl Params {
    /// Field errors, all of them.
    pub fn validate(&self, filters: &InstrumentFilters) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_range("interval_secs", self.interval_secs, 1..=MAX_INTERVAL_SECS, &mut errors);
        if self.quote_amount <= Decimal::ZERO
            || self.quote_amount > Decimal::from(1_000_000_000_000u64)
        {
            errors.push(FieldError::new(field("quote_amount"), "must be above 0 and at most 1e12"));
        } else if self.quote_amount < filters.min_notional {
            errors.push(FieldError::new(
                field("quote_amount"),
                format!("must be at least the minimum notional {}", filters.min_notional),
            ));
        }
        if self.take_profit_pct <= Decimal::ZERO || self.take_profit_pct > Decimal::from(1000) {
            errors.push(FieldError::new(
                field("take_profit_pct"),
                "must be above 0 and at most 1000",
            ));
        }
        errors
    }
}

/// The strategy and its state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dca {
    params: Params,
    /// Event time of the next scheduled buy, ms; `None` before the first trade.
    next_buy_ms: Option<u64>,
}

impl Dca {
    /// A fresh instance.
    pub fn new(params: Params) -> Self {
        Self { params, next_buy_ms: None }
    }
}

impl Strategy for Dca {
    fn on_event(&mut self, event: &MarketEvent, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let Some((price, _)) = trade_price(event) else { return };
        let now = ctx.now_ms;
        let held = ctx.position.qty;
        let hundred = Decimal::ONE_HUNDRED;
        if held > Decimal::ZERO {
            let target =
                ctx.position.avg_entry_price * (hundred + self.params.take_profit_pct) / hundred;
            if price >= target {
                let qty = ctx.filters.floor_qty(held);
                if qty > Decimal::ZERO {
                    out.push(Intent::Place(OrderRequest::market(Side::Sell, qty)));
                    self.next_buy_ms = None;
                    return;
                }
            }
        }
        if self.next_buy_ms.is_some_and(|next| now < next) {
            return;
        }
        self.next_buy_ms = Some(now.saturating_add(self.params.interval_secs.saturating_mul(1000)));
        let Some(qty) = self.params.quote_amount.checked_div(price) else { return };
        if let Some(qty) = sized(qty, price, ctx.filters) {
            out.push(Intent::Place(OrderRequest::market(Side::Buy, qty)));
        }
    }

    /// DCA buys at market on a schedule, so it has no buy price to show; what it waits for
    /// while it holds is the take-profit price.
    fn series(&self) -> Vec<SeriesSpec> {
        vec![SeriesSpec::price_level("take_profit")]
    }

    fn series_values(&self, ctx: &StrategyContext<'_>, out: &mut [Option<Decimal>]) {
        if let [target, ..] = out
            && ctx.position.qty > Decimal::ZERO
        {
            let hundred = Decimal::ONE_HUNDRED;
            *target = ctx
                .position
                .avg_entry_price
                .checked_mul(hundred + self.params.take_profit_pct)
                .map(|x| ctx.filters.round_price(x / hundred));
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
        Params { interval_secs: 3, quote_amount: d("100"), take_profit_pct: d("10") }
    }

    fn buy(qty: &str) -> Intent {
        Intent::Place(OrderRequest::market(Side::Buy, d(qty)))
    }

    #[test]
    fn it_buys_on_schedule_in_event_time_and_takes_profit_then_starts_again() {
        // One trade per second. Buys 1 at 100 (0 s) and 1.25 at 80 (3 s): average entry 88.89,
        // so the target is 97.78. 95 at index 4 is short of it; 101 at index 5 takes profit, and
        // the schedule restarts with a buy at the next trade.
        let intents = Harness::new(Dca::new(params())).run(&[100, 90, 95, 80, 95, 101, 100, 100]);
        assert_eq!(
            intents,
            [
                (0, buy("1")),
                (3, buy("1.25")),
                (5, Intent::Place(OrderRequest::market(Side::Sell, d("2.25")))),
                (6, buy("1")),
            ]
        );
    }

    #[test]
    fn params_are_checked_together() {
        let cases = [
            (params(), vec![]),
            (
                Params { interval_secs: 0, quote_amount: d("0"), take_profit_pct: d("0") },
                vec!["interval_secs", "quote_amount", "take_profit_pct"],
            ),
            (
                Params { interval_secs: 31 * 86_400, quote_amount: d("0.5"), ..params() },
                vec!["interval_secs", "quote_amount"],
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
        let prices: Vec<i64> = (0..200).map(|i| 100 + ((i * 29) % 17) - 8).collect();
        crate::strategy::testing::assert_restores(|| Dca::new(params()), &prices);
    }
}
