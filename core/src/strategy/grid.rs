//! `grid`: evenly spaced levels from `lower` to `upper`. On the first trade it places a buy limit
//! at every level below the price; each buy that fills places a sell one level up, and each sell
//! that fills places a buy one level down, for the quantity filled. Orders are tagged with their
//! level, and a level never gets a second order while one is open.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::common::{check_qty, check_range, field, sized, trade_price};
use super::{Intent, SeriesSpec, Strategy, StrategyContext};
use crate::market::MarketEvent;
use crate::trading::{Fill, InstrumentFilters, OrderRequest, Side};
use crate::validation::FieldError;

/// Most levels a grid may have.
const MAX_LEVELS: u32 = 200;

/// A form's label for each parameter (the `title` of its schema).
pub(crate) const TITLES: &[(&str, &str)] = &[
    ("lower", "Lowest level"),
    ("upper", "Highest level"),
    ("levels", "Levels"),
    ("qty_per_level", "Quantity per level"),
];

/// Parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GridParams)]
pub struct Params {
    /// Lowest level price (on the tick).
    #[schema(value_type = String, format = "decimal")]
    pub lower: Decimal,
    /// Highest level price (on the tick), above `lower`.
    #[schema(value_type = String, format = "decimal")]
    pub upper: Decimal,
    /// Number of levels, `lower` and `upper` included.
    #[schema(minimum = 2, maximum = 200, default = 10)]
    pub levels: u32,
    /// Base quantity at each level.
    #[schema(value_type = String, format = "decimal",
        default = "0.001")]
    pub qty_per_level: Decimal,
}

impl Params {
    /// Field errors, all of them.
    pub fn validate(&self, filters: &InstrumentFilters) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (name, price) in [("lower", self.lower), ("upper", self.upper)] {
            if price <= Decimal::ZERO {
                errors.push(FieldError::new(field(name), "must be above 0"));
            } else if !filters.price_on_tick(price) {
                errors.push(FieldError::new(
                    field(name),
                    format!("must be a multiple of the tick size {}", filters.tick_size),
                ));
            }
        }
        if self.lower >= self.upper {
            errors.push(FieldError::new(field("lower"), "must be below upper"));
        }
        check_range("levels", self.levels, 2..=MAX_LEVELS, &mut errors);
        check_qty("qty_per_level", self.qty_per_level, filters, &mut errors);
        errors
    }

    /// Level prices, lowest first, on the tick.
    fn prices(&self, filters: &InstrumentFilters) -> Vec<Decimal> {
        let steps = Decimal::from(self.levels.max(2) - 1);
        let gap = (self.upper - self.lower) / steps;
        (0..self.levels).map(|i| filters.round_price(self.lower + gap * Decimal::from(i))).collect()
    }
}

/// The strategy and its state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Grid {
    params: Params,
    /// Level prices; computed at the first trade (they need the tick size).
    prices: Vec<Decimal>,
    started: bool,
}

impl Grid {
    /// A fresh instance.
    pub fn new(params: Params) -> Self {
        Self { params, prices: Vec::new(), started: false }
    }

    fn place(
        &self,
        side: Side,
        level: usize,
        qty: Decimal,
        ctx: &StrategyContext<'_>,
        out: &mut Vec<Intent>,
    ) {
        let Some(&price) = self.prices.get(level) else { return };
        let tag = level as u32;
        let taken = ctx.open_orders.iter().any(|o| o.tag == tag)
            || out.iter().any(|i| matches!(i, Intent::Place(r) if r.tag == tag));
        if taken {
            return;
        }
        if let Some(qty) = sized(qty, price, ctx.filters) {
            out.push(Intent::Place(OrderRequest::limit(side, qty, price).tagged(tag)));
        }
    }
}

impl Strategy for Grid {
    fn on_event(&mut self, event: &MarketEvent, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        if self.started {
            return;
        }
        let Some((price, _)) = trade_price(event) else { return };
        self.started = true;
        self.prices = self.params.prices(ctx.filters);
        for level in 0..self.prices.len() {
            if self.prices[level] < price {
                self.place(Side::Buy, level, self.params.qty_per_level, ctx, out);
            }
        }
    }

    fn on_fill(&mut self, fill: &Fill, ctx: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        let level = fill.tag as usize;
        match fill.side {
            Side::Buy if level + 1 < self.prices.len() => {
                self.place(Side::Sell, level + 1, fill.qty, ctx, out)
            }
            Side::Sell if level >= 1 => self.place(Side::Buy, level - 1, fill.qty, ctx, out),
            _ => {}
        }
    }

    fn series(&self) -> Vec<SeriesSpec> {
        (0..self.params.levels)
            .map(|i| SeriesSpec::price_level(format!("grid_level_{i}")))
            .collect()
    }

    fn series_values(&self, _ctx: &StrategyContext<'_>, out: &mut [Option<Decimal>]) {
        for (slot, price) in out.iter_mut().zip(&self.prices) {
            *slot = Some(*price);
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
        Params { lower: d("90"), upper: d("110"), levels: 5, qty_per_level: d("1") }
    }

    fn limit(side: Side, price: &str, tag: u32) -> Intent {
        Intent::Place(OrderRequest::limit(side, d("1"), d(price)).tagged(tag))
    }

    #[test]
    fn it_lays_buys_below_the_price_and_places_counter_orders_as_levels_fill() {
        // Levels 90, 95, 100, 105, 110.
        let intents = Harness::new(Grid::new(params())).run(&[102, 99, 96, 94, 97, 101, 106, 104]);
        assert_eq!(
            intents,
            [
                (0, limit(Side::Buy, "90", 0)),
                (0, limit(Side::Buy, "95", 1)),
                (0, limit(Side::Buy, "100", 2)),
                // 99 trades through 100: sell one level up.
                (1, limit(Side::Sell, "105", 3)),
                // 94 through 95: sell at 100.
                (3, limit(Side::Sell, "100", 2)),
                // 101 through the 100 sell: buy back at 95.
                (5, limit(Side::Buy, "95", 1)),
                // 106 through the 105 sell: buy back at 100.
                (6, limit(Side::Buy, "100", 2)),
            ]
        );
    }

    #[test]
    fn params_are_checked_together() {
        let cases = [
            (params(), vec![]),
            (Params { lower: d("110"), upper: d("90"), ..params() }, vec!["lower"]),
            (
                Params { lower: d("90.001"), levels: 1, qty_per_level: d("0.0001"), ..params() },
                vec!["lower", "levels", "qty_per_level"],
            ),
            (Params { upper: d("-1"), levels: 500, ..params() }, vec!["upper", "lower", "levels"]),
        ];
        for (p, fields) in cases {
            let got: Vec<String> = p.validate(&filters()).into_iter().map(|e| e.field).collect();
            let want: Vec<String> = fields.iter().map(|n| field(n)).collect();
            assert_eq!(got, want, "{p:?}");
        }
    }

    #[test]
    fn a_restored_instance_continues_exactly_like_an_uninterrupted_one() {
        let prices: Vec<i64> = (0..200).map(|i| 100 + ((i * 41) % 25) - 12).collect();
        crate::strategy::testing::assert_restores(|| Grid::new(params()), &prices);
    }
}
