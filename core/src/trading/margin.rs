//! Paper futures: the margin, liquidation and funding model of a leveraged bot (USDT-margined
//! linear perpetuals, one-way mode), the same for a paper bot and a backtest.
//!
//! - **Balance.** `Position.quote_balance` stays the cash balance (starting quote, minus buys,
//!   plus sells, minus fees, plus funding), so equity is `quote_balance + qty × mark` as on spot.
//!   The *wallet balance* is `quote_balance + qty × entry` (starting quote plus realised P&L,
//!   less fees, plus funding).
//! - **Margin.** A position holds `|qty| × entry / leverage` of initial margin; an open order
//!   that adds to it holds `qty × price / leverage`. An order is refused with
//!   `INSUFFICIENT_MARGIN` when what it adds needs more than is available: the wallet balance,
//!   less the unrealised loss, less the margin of the position and of open orders.
//! - **Liquidation price** (Binance's formula for one position, without the maintenance amount
//!   of higher brackets): `LP = (WB − side × qty × entry) / (qty × MMR − side × qty)` with `side`
//!   1 for a long and −1 for a short, `qty` absolute, `MMR` the maintenance margin rate and `WB`
//!   the margin the position may lose: its initial margin when isolated, the whole wallet
//!   balance when cross.
//! - **Liquidation.** When the mark crosses the liquidation price the bot's open orders are
//!   canceled and the position is closed at that price (a taker fill, charged the paper fee);
//!   what remains of its maintenance margin goes to the venue as a clearance fee. An isolated
//!   position thus loses exactly its margin; a cross position loses its loss at the
//!   liquidation price plus its maintenance margin.
//! - **Funding.** At each funding time (every 8 hours from 00:00 UTC, or the venue's
//!   `nextFundingTime`) a position is paid `−qty × mark × rate`: a long pays and a short receives
//!   a positive rate.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::Position;
use crate::bot::MarginType;

/// Binance USD-M's lowest maintenance margin rate (0.40 % for BTCUSDT's first bracket):
/// the default for paper futures.
pub const DEFAULT_MAINTENANCE_MARGIN_RATE: Decimal = Decimal::from_parts(4, 0, 0, false, 3);
/// Funding every 8 hours (00:00, 08:00, 16:00 UTC) unless the venue says otherwise.
pub const FUNDING_INTERVAL_MS: u64 = 8 * 3_600_000;
/// Decimal places funding and clearance fees are rounded to.
const AMOUNT_DP: u32 = 8;

/// A leveraged paper bot's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuturesConfig {
    /// Notional over initial margin (1 to 125).
    pub leverage: u32,
    /// Whether a liquidation may take the position's margin only, or the whole balance.
    pub margin_type: MarginType,
    /// Maintenance margin over notional below which the position is liquidated.
    pub maintenance_margin_rate: Decimal,
    /// Milliseconds between funding times, counted from 00:00 UTC (8 hours).
    pub funding_interval_ms: u64,
    /// A fixed funding rate per interval (backtests); `None`: the rate the venue's feed
    /// publishes, and no payment until it has published one.
    pub funding_rate: Option<Decimal>,
    /// The asset margin and funding are in (`USDT`).
    pub quote_asset: String,
}

impl FuturesConfig {
    /// Isolated or cross at `leverage`, with the default maintenance rate and funding times.
    pub fn new(leverage: u32, margin_type: MarginType) -> Self {
        Self {
            leverage: leverage.max(1),
            margin_type,
            maintenance_margin_rate: DEFAULT_MAINTENANCE_MARGIN_RATE,
            funding_interval_ms: FUNDING_INTERVAL_MS,
            funding_rate: None,
            quote_asset: "USDT".to_owned(),
        }
    }

    /// A leveraged bot's settings: its leverage and margin type, its paper maintenance margin
    /// rate (or the default), its symbol's quote asset; funding from the venue's feed. `None`
    /// for a bot without leverage (spot).
    pub fn for_bot(record: &crate::bot::BotRecord) -> Option<Self> {
        let leverage = record.leverage?;
        let mut futures = Self::new(leverage, record.margin_type.unwrap_or(MarginType::Isolated));
        if let Some(rate) = record.paper.maintenance_margin_rate {
            futures.maintenance_margin_rate = rate;
        }
        if let Some(quote) = crate::bot::funding::quote_asset(record.symbol.as_str()) {
            quote.clone_into(&mut futures.quote_asset);
        }
        Some(futures)
    }

    /// Margin `notional` needs at this leverage.
    pub fn initial_margin(&self, notional: Decimal) -> Decimal {
        notional / Decimal::from(self.leverage.max(1))
    }

    /// The initial margin the position holds.
    pub fn position_margin(&self, position: &Position) -> Decimal {
        self.initial_margin(position.qty.abs() * position.avg_entry_price)
    }

    /// What a liquidation may take: the position's margin (isolated) or the whole wallet
    /// balance (cross).
    pub fn liquidation_balance(&self, position: &Position) -> Decimal {
        match self.margin_type {
            MarginType::Isolated => self.position_margin(position),
            MarginType::Cross => wallet_balance(position),
        }
    }

    /// The mark price at which the position is liquidated; `None` when flat or never (a long
    /// whose balance covers its whole notional, say).
    pub fn liquidation_price(&self, position: &Position) -> Option<Decimal> {
        liquidation_price(
            position.qty,
            position.avg_entry_price,
            self.liquidation_balance(position),
            self.maintenance_margin_rate,
        )
    }

    /// The next funding time strictly after `ts`.
    pub fn next_funding_after(&self, ts: u64) -> u64 {
        let interval = self.funding_interval_ms.max(1);
        (ts / interval + 1) * interval
    }
}

/// Starting quote plus realised P&L, less fees, plus funding: `quote_balance + qty × entry`.
pub fn wallet_balance(position: &Position) -> Decimal {
    position.quote_balance + position.qty * position.avg_entry_price
}

/// Binance's liquidation price of one USDT-margined position in one-way mode (maintenance
/// amount 0, the lowest bracket): `(WB − side × qty × entry) / (qty × MMR − side × qty)`,
/// rounded to 8 decimals; `qty` is signed here. `None` when flat, or when no positive price liquidates it.
pub fn liquidation_price(
    qty: Decimal,
    entry: Decimal,
    balance: Decimal,
    maintenance_margin_rate: Decimal,
) -> Option<Decimal> {
    if qty.is_zero() {
        return None;
    }
    let side = if qty.is_sign_positive() { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
    let size = qty.abs();
    let numerator = balance.checked_sub(side * size.checked_mul(entry)?)?;
    let denominator = size.checked_mul(maintenance_margin_rate)?.checked_sub(side * size)?;
    if denominator.is_zero() {
        return None;
    }
    let price = round_amount(numerator.checked_div(denominator)?);
    (price > Decimal::ZERO).then_some(price)
}

/// Whether `mark` reached the liquidation price of a position of `qty` (signed).
pub fn crossed(qty: Decimal, mark: Decimal, liquidation: Decimal) -> bool {
    if qty.is_sign_positive() { mark <= liquidation } else { mark >= liquidation }
}

/// A funding payment for holding `qty` (signed) at `mark` when the rate is `rate`: positive
/// when received. A long pays a positive rate; a short receives it.
pub fn funding_amount(qty: Decimal, mark: Decimal, rate: Decimal) -> Decimal {
    (-(qty * mark * rate))
        .round_dp_with_strategy(AMOUNT_DP, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// Rounds a quote amount as fees are.
pub fn round_amount(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(AMOUNT_DP, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_maintenance_rate_is_binances_lowest_bracket() {
        assert_eq!(DEFAULT_MAINTENANCE_MARGIN_RATE, d("0.004"));
    }

    /// Binance's formula ("How to Calculate Liquidation Price of USDⓈ-M Futures Contracts":
    /// `LP = (WB − TMM1 + UPNL1 + cumB − Side × Position × EP) / (Position × MMR − Side ×
    /// Position)`, with TMM1 = UPNL1 = 0 when isolated and cumB = 0 in the first bracket),
    /// worked for an isolated long of 1 BTCUSDT at 10,000 USDT with 10x leverage holds 1,000 USDT of margin;
    /// at the 0.4 % maintenance rate it is liquidated at
    /// (1000 − 10000) / (0.004 − 1) = 9036.1446 USDT.
    #[test]
    fn isolated_liquidation_price_follows_binances_formula() {
        let config = FuturesConfig::new(10, MarginType::Isolated);
        let long = Position {
            qty: d("1"),
            avg_entry_price: d("10000"),
            quote_balance: d("10000") - d("10000"),
            ..Position::default()
        };
        assert_eq!(config.position_margin(&long), d("1000"));
        let lp = config.liquidation_price(&long).unwrap();
        assert_eq!(lp.round_dp(4), d("9036.1446"));
        // At that price the margin left is the maintenance margin: 1000 − 963.86 = 36.14.
        let left = d("1000") + (lp - d("10000"));
        assert_eq!(left.round_dp(6), (lp * d("0.004")).round_dp(6));

        // The same short: (1000 + 10000) / (0.004 + 1) = 10956.1753.
        let short = Position { qty: d("-1"), quote_balance: d("10000") + d("10000"), ..long };
        assert_eq!(config.liquidation_price(&short).unwrap().round_dp(4), d("10956.1753"));
    }

    #[test]
    fn cross_margin_can_lose_the_whole_wallet() {
        let config = FuturesConfig::new(10, MarginType::Cross);
        // 5,000 USDT of wallet behind a 1 BTC long at 10,000: (5000 − 10000) / (0.004 − 1).
        let long = Position {
            qty: d("1"),
            avg_entry_price: d("10000"),
            quote_balance: d("5000") - d("10000"),
            ..Position::default()
        };
        assert_eq!(wallet_balance(&long), d("5000"));
        assert_eq!(config.liquidation_price(&long).unwrap().round_dp(4), d("5020.0803"));
        // A long that is fully covered is never liquidated.
        let covered = Position { quote_balance: d("20000") - d("10000"), ..long };
        assert_eq!(config.liquidation_price(&covered), None);
        assert_eq!(config.liquidation_price(&Position::default()), None);
    }

    #[test]
    fn a_long_pays_a_positive_rate_and_a_short_receives_it() {
        assert_eq!(funding_amount(d("2"), d("100"), d("0.0001")), d("-0.02"));
        assert_eq!(funding_amount(d("-2"), d("100"), d("0.0001")), d("0.02"));
        assert_eq!(funding_amount(d("2"), d("100"), d("-0.0001")), d("0.02"));
    }

    #[test]
    fn funding_times_are_every_eight_hours_from_midnight_utc() {
        let config = FuturesConfig::new(1, MarginType::Isolated);
        let day = 1_700_006_400_000; // 2023-11-15T00:00:00Z
        assert_eq!(config.next_funding_after(day), day + FUNDING_INTERVAL_MS);
        assert_eq!(config.next_funding_after(day + 1), day + FUNDING_INTERVAL_MS);
        assert_eq!(config.next_funding_after(day - 1), day);
    }

    #[test]
    fn mark_crossing_is_below_for_a_long_and_above_for_a_short() {
        assert!(crossed(d("1"), d("90"), d("90")));
        assert!(!crossed(d("1"), d("91"), d("90")));
        assert!(crossed(d("-1"), d("110"), d("110")));
        assert!(!crossed(d("-1"), d("109"), d("110")));
    }
}
