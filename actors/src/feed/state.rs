//! What the feed remembers per symbol: last trade, best bid/ask, rolling candles.

use std::collections::{HashMap, VecDeque};

use rust_decimal::Decimal;
use serde::Serialize;

use keel_core::market::{Candle, EventKind, Interval, MarketEvent, Side};

/// Candles kept per interval.
pub const CANDLES_KEPT: usize = 1_000;

/// The last trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LastTrade {
    /// Price.
    pub price: Decimal,
    /// Quantity.
    pub qty: Decimal,
    /// Aggressor side.
    pub side: Side,
    /// Exchange time, ms.
    pub ts: u64,
}

/// Best bid and ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BestQuote {
    /// Bid.
    pub bid: Decimal,
    /// Bid quantity.
    pub bid_qty: Decimal,
    /// Ask.
    pub ask: Decimal,
    /// Ask quantity.
    pub ask_qty: Decimal,
    /// Exchange time, ms.
    pub ts: u64,
}

/// One symbol's state.
#[derive(Debug, Default)]
pub struct SymbolState {
    /// The last trade seen.
    pub last_trade: Option<LastTrade>,
    /// The last quote seen.
    pub quote: Option<BestQuote>,
    candles: HashMap<Interval, VecDeque<Candle>>,
}

impl SymbolState {
    /// Whether anything has arrived.
    pub fn has_data(&self) -> bool {
        self.last_trade.is_some() || self.quote.is_some()
    }

    /// Folds an event in. Trades also build every interval's candles, so candles exist for any
    /// venue whether or not it streams klines.
    pub fn apply(&mut self, event: &MarketEvent) {
        match &event.kind {
            EventKind::Trade { price, qty, side, .. } => {
                self.last_trade = Some(LastTrade {
                    price: *price,
                    qty: *qty,
                    side: *side,
                    ts: event.exchange_ts,
                });
                for interval in Interval::ALL {
                    self.fold_trade(interval, event.exchange_ts, *price, *qty);
                }
            }
            EventKind::Quote { bid, bid_qty, ask, ask_qty } => {
                self.quote = Some(BestQuote {
                    bid: *bid,
                    bid_qty: *bid_qty,
                    ask: *ask,
                    ask_qty: *ask_qty,
                    ts: event.exchange_ts,
                });
            }
            EventKind::Candle(_)
            | EventKind::Depth { .. }
            | EventKind::Liquidation { .. }
            | EventKind::MarkPrice { .. }
            | EventKind::Gap { .. } => {}
        }
    }

    fn fold_trade(&mut self, interval: Interval, ts: u64, price: Decimal, qty: Decimal) {
        let open_time = ts - ts % interval.millis();
        let candles = self.candles.entry(interval).or_default();
        match candles.back_mut() {
            Some(last) if last.open_time == open_time => {
                last.high = last.high.max(price);
                last.low = last.low.min(price);
                last.close = price;
                last.volume += qty;
            }
            Some(last) if last.open_time > open_time => {} // late trade for a finished candle
            last => {
                if let Some(last) = last {
                    last.closed = true;
                }
                candles.push_back(Candle {
                    interval,
                    open_time,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: qty,
                    closed: false,
                });
                if candles.len() > CANDLES_KEPT {
                    candles.pop_front();
                }
            }
        }
    }

    /// The latest `limit` candles of `interval`, oldest first.
    pub fn candles(&self, interval: Interval, limit: usize) -> Vec<Candle> {
        self.candles
            .get(&interval)
            .map(|c| c.iter().skip(c.len().saturating_sub(limit)).cloned().collect())
            .unwrap_or_default()
    }

    /// The current (possibly open) candle of `interval`.
    pub fn current_candle(&self, interval: Interval) -> Option<&Candle> {
        self.candles.get(&interval).and_then(|c| c.back())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::market::{Symbol, VenueId};

    fn trade(ts: u64, price: i64, qty: i64) -> MarketEvent {
        MarketEvent {
            venue: VenueId::Sim,
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            exchange_ts: ts,
            received_us: 0,
            kind: EventKind::Trade {
                price: price.into(),
                qty: qty.into(),
                side: Side::Buy,
                trade_id: 1,
            },
        }
    }

    #[test]
    fn trades_build_candles_per_interval() {
        let mut state = SymbolState::default();
        for (ts, price, qty) in
            [(0, 10, 1), (30_000, 12, 2), (59_999, 9, 1), (60_000, 11, 5), (299_999, 13, 1)]
        {
            state.apply(&trade(ts, price, qty));
        }
        let m1 = state.candles(Interval::M1, 10);
        assert_eq!(m1.len(), 3);
        assert_eq!(
            (m1[0].open, m1[0].high, m1[0].low, m1[0].close),
            (10.into(), 12.into(), 9.into(), 9.into())
        );
        assert_eq!(m1[0].volume, Decimal::from(4));
        assert!(m1[0].closed && m1[1].closed && !m1[2].closed);
        let m5 = state.candles(Interval::M5, 10);
        assert_eq!(m5.len(), 1);
        assert_eq!((m5[0].high, m5[0].volume), (13.into(), 10.into()));
        assert_eq!(state.candles(Interval::M1, 1).len(), 1);
        assert_eq!(state.last_trade.as_ref().unwrap().price, Decimal::from(13));
    }

    #[test]
    fn candle_history_is_bounded() {
        let mut state = SymbolState::default();
        for i in 0..(CANDLES_KEPT as u64 + 50) {
            state.apply(&trade(i * 60_000, 10, 1));
        }
        assert_eq!(state.candles(Interval::M1, usize::MAX).len(), CANDLES_KEPT);
    }
}
