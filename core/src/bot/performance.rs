//! Performance figures from a bot's fills: the same arithmetic for live bots and backtests.
//!
//! Definitions (so owners can check them by hand):
//! - a **trade** is a fill that reduces the position (a round trip closing, in whole or part);
//!   its result is the P&L it realised minus its own fee; **win rate** is winning trades over
//!   trades;
//! - **equity** after each fill is quote balance plus the position marked at that fill's price;
//!   **max drawdown** is the largest fall from an equity peak, in quote and as a fraction;
//! - **exposure** is the fraction of time from the first fill to `now` with a non-zero position.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::trading::{Fill, Position};

/// A bot's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Performance {
    /// P&L realised by closing quantity, before fees.
    pub realized_pnl: Decimal,
    /// P&L of the open position at the mark price (zero without a mark).
    pub unrealized_pnl: Decimal,
    /// Fees paid.
    pub fees: Decimal,
    /// Realised plus unrealised, minus fees.
    pub net_pnl: Decimal,
    /// Fills.
    pub fill_count: usize,
    /// Position-reducing fills.
    pub trade_count: usize,
    /// Of those, the ones that made money after their fee.
    pub winning_trades: usize,
    /// `winning_trades / trade_count`, 0 without trades.
    pub win_rate: f64,
    /// Largest peak-to-trough fall of equity, in quote.
    pub max_drawdown: Decimal,
    /// That fall as a fraction of the peak.
    pub max_drawdown_pct: f64,
    /// Fraction of time with an open position.
    pub exposure: f64,
    /// The mark price used.
    pub mark_price: Option<Decimal>,
}

/// Computes figures from fills (in order) and the starting quote balance.
pub fn compute(
    fills: &[Fill],
    starting_quote: Decimal,
    mark: Option<Decimal>,
    now_ms: u64,
) -> Performance {
    let mut position = Position { quote_balance: starting_quote, ..Position::default() };
    let mut perf =
        Performance { fill_count: fills.len(), mark_price: mark, ..Performance::default() };
    let mut peak = starting_quote;
    let mut exposed_ms: u64 = 0;
    let mut open_since: Option<u64> = None;
    for fill in fills {
        let realized_before = position.realized_pnl;
        let reduces = !position.qty.is_zero()
            && position.qty.is_sign_positive() != (fill.side == crate::trading::Side::Buy);
        position.apply_fill(fill);
        if reduces {
            perf.trade_count += 1;
            if position.realized_pnl - realized_before - fill.fee > Decimal::ZERO {
                perf.winning_trades += 1;
            }
        }
        match (open_since, position.qty.is_zero()) {
            (None, false) => open_since = Some(fill.ts),
            (Some(since), true) => {
                exposed_ms += fill.ts.saturating_sub(since);
                open_since = None;
            }
            _ => {}
        }
        let equity = position.quote_balance + position.qty * fill.price;
        peak = peak.max(equity);
        let drawdown = peak - equity;
        if drawdown > perf.max_drawdown {
            perf.max_drawdown = drawdown;
            perf.max_drawdown_pct = ratio(drawdown, peak);
        }
    }
    if let Some(since) = open_since {
        exposed_ms += now_ms.saturating_sub(since);
    }
    let span = fills.first().map_or(0, |f| now_ms.saturating_sub(f.ts));
    perf.exposure = if span == 0 { 0.0 } else { (exposed_ms as f64 / span as f64).min(1.0) };
    perf.realized_pnl = position.realized_pnl;
    perf.fees = position.fees;
    perf.unrealized_pnl = mark.map_or(Decimal::ZERO, |m| position.unrealized_pnl(m));
    perf.net_pnl = perf.realized_pnl + perf.unrealized_pnl - perf.fees;
    perf.win_rate = if perf.trade_count == 0 {
        0.0
    } else {
        perf.winning_trades as f64 / perf.trade_count as f64
    };
    perf
}

fn ratio(part: Decimal, whole: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    if whole <= Decimal::ZERO {
        return 0.0;
    }
    (part / whole).to_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trading::{Liquidity, Side};

    fn fill(id: u64, side: Side, qty: &str, price: &str, fee: &str, ts: u64) -> Fill {
        Fill {
            id,
            bot_id: 1,
            order_id: id,
            side,
            price: price.parse().unwrap(),
            qty: qty.parse().unwrap(),
            fee: fee.parse().unwrap(),
            liquidity: Liquidity::Taker,
            tag: 0,
            ts,
            commission: None,
        }
    }

    #[test]
    fn figures_follow_their_documented_definitions() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let fills = [
            fill(1, Side::Buy, "1", "100", "0.1", 0),
            fill(2, Side::Sell, "1", "110", "0.1", 1_000), // +10 - 0.1: a win
            fill(3, Side::Buy, "1", "110", "0.1", 2_000),
            fill(4, Side::Sell, "1", "90", "0.1", 3_000), // -20: a loss
        ];
        let perf = compute(&fills, d("1000"), None, 4_000);
        assert_eq!(perf.realized_pnl, d("-10"));
        assert_eq!(perf.fees, d("0.4"));
        assert_eq!(perf.net_pnl, d("-10.4"));
        assert_eq!((perf.trade_count, perf.winning_trades), (2, 1));
        assert!((perf.win_rate - 0.5).abs() < 1e-9);
        // Equity peaks at 1009.8 after fill 2, and falls to 989.6 after fill 4.
        assert_eq!(perf.max_drawdown, d("20.2"));
        // Open 0–1000 and 2000–3000 of 4000 ms.
        assert!((perf.exposure - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_open_position_is_marked_and_counts_as_exposure_until_now() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let perf =
            compute(&[fill(1, Side::Buy, "2", "100", "0", 0)], d("1000"), Some(d("105")), 1_000);
        assert_eq!(perf.unrealized_pnl, d("10"));
        assert_eq!(perf.trade_count, 0);
        assert!((perf.exposure - 1.0).abs() < 1e-9);
        assert_eq!(compute(&[], d("1000"), None, 5).exposure, 0.0);
    }
}
