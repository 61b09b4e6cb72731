//! Test support: feeds a strategy trade prices and fills its orders like an ideal venue
//! (market orders at the trade price, limits when a later trade crosses them).

use rust_decimal::Decimal;

use super::{Intent, OpenOrderView, Strategy, StrategyContext};
use crate::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use crate::trading::{Fill, InstrumentFilters, Liquidity, OrderType, Position};

pub fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: d("0.01"),
        step_size: d("0.001"),
        min_qty: d("0.001"),
        max_qty: d("1000"),
        min_notional: d("1"),
    }
}

pub fn trade(ts: u64, price: Decimal) -> MarketEvent {
    MarketEvent {
        venue: VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts: ts,
        received_us: 0,
        kind: EventKind::Trade { price, qty: d("1"), side: Side::Buy, trade_id: ts },
    }
}

/// A strategy, its position and its resting limit orders.
pub struct Harness<S> {
    pub strategy: S,
    pub position: Position,
    pub open: Vec<OpenOrderView>,
    next_id: u64,
    filters: InstrumentFilters,
}

impl<S: Strategy> Harness<S> {
    pub fn new(strategy: S) -> Self {
        Self {
            strategy,
            position: Position { quote_balance: d("1000000"), ..Position::default() },
            open: Vec::new(),
            next_id: 1,
            filters: filters(),
        }
    }

    /// Feeds whole-number prices, one per second; returns (index, intent) of everything asked.
    pub fn run(&mut self, prices: &[i64]) -> Vec<(usize, Intent)> {
        let mut all = Vec::new();
        for (i, p) in prices.iter().enumerate() {
            for intent in self.step(i as u64 * 1000, Decimal::from(*p)) {
                all.push((i, intent));
            }
        }
        all
    }

    /// One trade: resting limits it crosses fill first, then the strategy sees it.
    pub fn step(&mut self, ts: u64, price: Decimal) -> Vec<Intent> {
        let mut asked = Vec::new();
        let crossed: Vec<OpenOrderView> = self
            .open
            .iter()
            .filter(|o| {
                o.price.is_some_and(|l| if o.side == Side::Buy { price < l } else { price > l })
            })
            .cloned()
            .collect();
        self.open.retain(|o| !crossed.contains(o));
        for o in crossed {
            let mut out = Vec::new();
            self.fill(ts, o.id, o.side, o.remaining, o.price.unwrap_or(price), o.tag, &mut out);
            asked.extend(self.apply(ts, price, out));
        }
        let mut out = Vec::new();
        let ctx = StrategyContext {
            position: &self.position,
            open_orders: &self.open,
            filters: &self.filters,
            now_ms: ts,
        };
        self.strategy.on_event(&trade(ts, price), &ctx, &mut out);
        asked.extend(self.apply(ts, price, out));
        asked
    }

    fn apply(&mut self, ts: u64, price: Decimal, intents: Vec<Intent>) -> Vec<Intent> {
        let mut asked = Vec::new();
        for intent in intents {
            asked.push(intent.clone());
            match intent {
                Intent::Place(req) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    match req.order_type {
                        OrderType::Limit { price: limit, .. } => {
                            self.open.push(OpenOrderView {
                                id,
                                side: req.side,
                                price: Some(limit),
                                remaining: req.qty,
                                tag: req.tag,
                            });
                        }
                        _ => {
                            let mut out = Vec::new();
                            self.fill(ts, id, req.side, req.qty, price, req.tag, &mut out);
                            asked.extend(self.apply(ts, price, out));
                        }
                    }
                }
                Intent::CancelAll => self.open.clear(),
                Intent::Cancel(id) => self.open.retain(|o| o.id != id),
                Intent::Log { .. } => {}
            }
        }
        asked
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        ts: u64,
        order_id: u64,
        side: Side,
        qty: Decimal,
        price: Decimal,
        tag: u32,
        out: &mut Vec<Intent>,
    ) {
        self.position.apply(side, qty, price, Decimal::ZERO);
        let fill = Fill {
            id: order_id,
            bot_id: 1,
            order_id,
            side,
            price,
            qty,
            fee: Decimal::ZERO,
            liquidity: Liquidity::Taker,
            tag,
            ts,
            commission: None,
        };
        let ctx = StrategyContext {
            position: &self.position,
            open_orders: &self.open,
            filters: &self.filters,
            now_ms: ts,
        };
        self.strategy.on_fill(&fill, &ctx, out);
    }
}

/// Runs `prices` twice: straight through, and saved halfway into a fresh instance; the intents
/// must be identical (and running twice must be deterministic).
pub fn assert_restores<S: Strategy>(make: impl Fn() -> S, prices: &[i64]) {
    let mut straight = Harness::new(make());
    let expected = straight.run(prices);
    assert_eq!(Harness::new(make()).run(prices), expected, "deterministic");
    let half = prices.len() / 2;
    let mut first = Harness::new(make());
    let mut got = first.run(&prices[..half]);
    let mut second = Harness::new(make());
    second.strategy.restore(first.strategy.save()).unwrap();
    second.position = first.position.clone();
    second.open = first.open.clone();
    second.next_id = first.next_id;
    for (i, p) in prices[half..].iter().enumerate() {
        for intent in second.step((half + i) as u64 * 1000, Decimal::from(*p)) {
            got.push((half + i, intent));
        }
    }
    assert_eq!(got, expected, "restored run differs");
}
