//! `ema_cross` as a module: the same logic and params as Keel's built-in (buy when the fast EMA
//! of trade prices crosses above the slow one, sell the whole position when it crosses back
//! below; long only, one entry at a time), and the same `ema_fast` / `ema_slow` series.

use keel_strategy::{
    Decimal, Filters, Host, Order, Pane, SeriesId, Side, Strategy, Style, Trade, export_strategy,
    runtime::price_f64,
};
use serde::{Deserialize, Serialize};

/// Longest period, as the built-in.
const MAX_PERIOD: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    fast: u32,
    slow: u32,
    qty: Decimal,
}

/// The built-in's EMA: `alpha = 2 / (n + 1)`, seeded with the simple average of the first `n`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ema {
    period: u32,
    alpha: f64,
    seen: u32,
    sum: f64,
    value: f64,
}

impl Ema {
    fn new(period: u32) -> Self {
        let period = period.max(1);
        Self { period, alpha: 2.0 / (f64::from(period) + 1.0), seen: 0, sum: 0.0, value: 0.0 }
    }

    fn update(&mut self, x: f64) -> Option<f64> {
        if self.seen < self.period {
            self.seen += 1;
            self.sum += x;
            if self.seen == self.period {
                self.value = self.sum / f64::from(self.period);
            }
        } else {
            self.value += self.alpha * (x - self.value);
        }
        (self.seen >= self.period).then_some(self.value)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    fast: Ema,
    slow: Ema,
    above: Option<bool>,
}

struct EmaCross {
    params: Params,
    filters: Filters,
    state: State,
    series: (SeriesId, SeriesId),
}

fn check(params: &Params, filters: &Filters) -> Result<(), String> {
    let mut errors = Vec::new();
    if !(1..=MAX_PERIOD).contains(&params.fast) {
        errors.push(format!("fast: must be between 1 and {MAX_PERIOD}"));
    }
    if !(2..=MAX_PERIOD).contains(&params.slow) {
        errors.push(format!("slow: must be between 2 and {MAX_PERIOD}"));
    }
    if params.fast >= params.slow {
        errors.push("fast: must be below slow".into());
    }
    let qty = params.qty;
    if qty <= Decimal::ZERO {
        errors.push("qty: must be above 0".into());
    } else if !filters.qty_on_step(qty) {
        errors.push(format!("qty: must be a multiple of the step size {}", filters.step_size));
    } else if qty < filters.min_qty {
        errors.push(format!("qty: must be at least the minimum quantity {}", filters.min_qty));
    } else if filters.max_qty > Decimal::ZERO && qty > filters.max_qty {
        errors.push(format!("qty: must be at most the maximum quantity {}", filters.max_qty));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

impl Strategy for EmaCross {
    type Params = Params;

    const PARAMS_SCHEMA: &'static str = r#"{
        "type": "object",
        "properties": {
            "fast": {"type": "integer", "minimum": 1, "maximum": 10000,
                     "description": "Fast EMA period, in trades."},
            "slow": {"type": "integer", "minimum": 2, "maximum": 10000,
                     "description": "Slow EMA period, in trades; above fast."},
            "qty": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$",
                    "description": "Base quantity bought at each entry."}
        },
        "required": ["fast", "slow", "qty"],
        "additionalProperties": false
    }"#;

    fn init(params: Params, host: &mut Host) -> Result<Self, String> {
        let filters = host.context().filters;
        check(&params, &filters)?;
        let series = (
            host.series("ema_fast", Pane::Price, Style::Line, None, None),
            host.series("ema_slow", Pane::Price, Style::Line, None, None),
        );
        let state = State { fast: Ema::new(params.fast), slow: Ema::new(params.slow), above: None };
        Ok(Self { params, filters, state, series })
    }

    fn on_trade(&mut self, host: &mut Host, trade: &Trade) {
        let x = price_f64(trade.price);
        let fast = self.state.fast.update(x);
        let slow = self.state.slow.update(x);
        if let Some(fast) = fast {
            host.publish(self.series.0, fast);
        }
        if let Some(slow) = slow {
            host.publish(self.series.1, slow);
        }
        let (Some(fast), Some(slow)) = (fast, slow) else { return };
        let above = fast > slow;
        let crossed = self.state.above.is_some_and(|was| was != above);
        self.state.above = Some(above);
        if !crossed {
            return;
        }
        let ctx = host.context();
        let held = ctx.position.qty;
        if above && held.is_zero() && ctx.open_orders.is_empty() {
            if let Some(qty) = self.filters.sized(self.params.qty, trade.price) {
                host.place(Side::Buy, qty, Order::Market, 0);
            }
        } else if !above && held > Decimal::ZERO {
            let qty = self.filters.floor_qty(held);
            if qty > Decimal::ZERO {
                host.place(Side::Sell, qty, Order::Market, 0);
            }
        }
    }

    fn save(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.state = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        Ok(())
    }
}

export_strategy!(EmaCross);
