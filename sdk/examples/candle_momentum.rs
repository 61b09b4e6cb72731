//! `candle_momentum`: on candles of `interval_secs` built from trades, buys `qty` when a candle
//! closes more than `move_pct` above its open while flat, and sells the whole position
//! `hold_secs` later (a timer, in event time). Publishes each closed candle's close as
//! `candle_close` and the move in percent as `move_pct` (own pane).

use keel_strategy::{Decimal, Host, Order, Pane, SeriesId, Side, Strategy, Style, export_strategy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    interval_secs: u32,
    move_pct: Decimal,
    hold_secs: u32,
    qty: Decimal,
}

struct Momentum {
    params: Params,
    close: SeriesId,
    moved: SeriesId,
}

impl Strategy for Momentum {
    type Params = Params;

    const PARAMS_SCHEMA: &'static str = r#"{
        "type": "object",
        "properties": {
            "interval_secs": {"type": "integer", "minimum": 1, "maximum": 86400},
            "move_pct": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            "hold_secs": {"type": "integer", "minimum": 1, "maximum": 2592000},
            "qty": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}
        },
        "required": ["interval_secs", "move_pct", "hold_secs", "qty"],
        "additionalProperties": false
    }"#;

    fn init(params: Params, host: &mut Host) -> Result<Self, String> {
        let filters = host.context().filters;
        if params.qty <= Decimal::ZERO || !filters.qty_on_step(params.qty) {
            return Err(format!("qty: must be above 0 and a multiple of {}", filters.step_size));
        }
        if !(1..=86_400).contains(&params.interval_secs) {
            return Err("interval_secs: must be between 1 and 86400".into());
        }
        host.candles(params.interval_secs);
        let close = host.series("candle_close", Pane::Price, Style::Line, None, None);
        let moved = host.series("move_pct", Pane::Own, Style::Line, None, None);
        Ok(Self { params, close, moved })
    }

    fn on_event(&mut self, host: &mut Host, event: &serde_json::Value) {
        let decimal = |key: &str| event[key].as_str().and_then(|s| s.parse::<Decimal>().ok());
        match event["type"].as_str() {
            Some("candle") => {
                let (Some(open), Some(close)) = (decimal("open"), decimal("close")) else { return };
                host.publish_decimal(self.close, close);
                if open.is_zero() {
                    return;
                }
                let moved = (close - open) / open * Decimal::ONE_HUNDRED;
                host.publish_decimal(self.moved, moved.round_dp(4));
                let ctx = host.context();
                if moved > self.params.move_pct
                    && ctx.position.qty.is_zero()
                    && ctx.open_orders.is_empty()
                {
                    host.place(Side::Buy, self.params.qty, Order::Market, 0);
                    host.set_timer(ctx.now_ms + u64::from(self.params.hold_secs) * 1000);
                    host.log(0, &format!("candle moved {}%: bought", moved.round_dp(2)));
                }
            }
            Some("timer") => {
                let ctx = host.context();
                let qty = ctx.filters.floor_qty(ctx.position.qty);
                if qty > Decimal::ZERO {
                    host.place(Side::Sell, qty, Order::Market, 0);
                }
            }
            _ => {}
        }
    }
}

export_strategy!(Momentum);
