//! The paper venue: deterministic simulated execution of one bot's orders against market events.
//!
//! Rules (the same for a paper bot and a backtest, so both fill identically):
//! - **Market orders** fill in full at once: a buy at the best ask, a sell at the best bid. With no
//!   quote yet, at the last trade moved `slippage_bps` against the trader (rounded to the tick,
//!   away from the trader). With neither, they are refused ("no market price yet"). Taker.
//! - **Limit orders** marketable against the current quote when submitted (a buy at or above the
//!   ask, a sell at or below the bid) fill in full at once at the quote (taker, never worse than
//!   the limit). Otherwise they rest. A resting buy fills when a trade prints strictly below its
//!   price or the ask falls to it; a resting sell when a trade prints strictly above or the bid
//!   rises to it. They fill at their own price (maker), for at most the trade's (or the quote's)
//!   quantity, so large orders fill in parts.
//! - **Stop orders** (stop-market, for bracket stop-losses) arm on submit. A sell stop triggers
//!   when a trade prints at or below the stop or the bid falls to it; a buy stop at or above, or
//!   the ask. Triggered, it fills in full like a market order, at the quote when there is one,
//!   else at the triggering trade price.
//! - **Fees** are price × quantity × `fee_bps` / 10 000 in quote, rounded half-up to 8 decimals.
//! - **Time**: a fill carries the event's exchange time (or the submit time), never the wall clock.
//! - Resting orders match in price priority (best for the market first), then by id.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use super::{InstrumentFilters, Liquidity, Order, OrderType, Side, TimeInForce};
use crate::market::{EventKind, MarketEvent};

/// Decimal places fees are rounded to.
const FEE_DP: u32 = 8;

/// Paper execution settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaperConfig {
    /// Fee per fill in basis points of notional.
    pub fee_bps: Decimal,
    /// How much worse than the last trade a market order fills when there is no quote.
    pub slippage_bps: Decimal,
}

/// One simulated execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperFill {
    /// The order.
    pub order_id: u64,
    /// Execution price.
    pub price: Decimal,
    /// Quantity.
    pub qty: Decimal,
    /// Fee in quote.
    pub fee: Decimal,
    /// Maker or taker.
    pub liquidity: Liquidity,
    /// Event time of the fill, ms.
    pub ts: u64,
    /// The venue's commission in its own asset (live fills; `None` here: `fee` is in quote).
    pub commission: Option<super::Commission>,
}

/// An order working at the paper venue.
#[derive(Debug, Clone)]
struct Working {
    id: u64,
    side: Side,
    /// What it does now: a triggered stop-limit works as a limit, a triggered trailing stop as
    /// a market order.
    order_type: OrderType,
    remaining: Decimal,
    /// A trailing stop's best price since it was placed (highest for a sell, lowest for a buy).
    extreme: Option<Decimal>,
}

/// What became of a submitted order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// It works at the venue (resting, or armed) for what did not fill at once.
    Working,
    /// Done with: filled at once, or its time in force (IOC, FOK) let the rest expire.
    Done,
}

/// One bot's simulated venue.
#[derive(Debug)]
pub struct PaperVenue {
    config: PaperConfig,
    filters: InstrumentFilters,
    bid: Option<(Decimal, Decimal)>,
    ask: Option<(Decimal, Decimal)>,
    last: Option<Decimal>,
    working: Vec<Working>,
    /// Orders triggered or matched during one event (reused, so events that fill nothing
    /// allocate nothing).
    scratch: Vec<usize>,
}

impl PaperVenue {
    /// A venue with no market data yet.
    pub fn new(config: PaperConfig, filters: InstrumentFilters) -> Self {
        Self {
            config,
            filters,
            bid: None,
            ask: None,
            last: None,
            working: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Last trade price.
    pub fn last_price(&self) -> Option<Decimal> {
        self.last
    }

    /// Best bid.
    pub fn best_bid(&self) -> Option<Decimal> {
        self.bid.map(|(p, _)| p)
    }

    /// Best ask.
    pub fn best_ask(&self) -> Option<Decimal> {
        self.ask.map(|(p, _)| p)
    }

    /// Mid of the quote, else the last trade.
    pub fn mark_price(&self) -> Option<Decimal> {
        match (self.bid, self.ask) {
            (Some((b, _)), Some((a, _))) => Some((b + a) / Decimal::TWO),
            _ => self.last,
        }
    }

    /// Ids of the orders still working.
    pub fn open_order_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.working.iter().map(|w| w.id)
    }

    /// Re-arms orders that were open before a restart (final ones are skipped).
    pub fn restore(&mut self, orders: impl IntoIterator<Item = Order>) {
        for order in orders {
            if order.status.is_open() && order.remaining() > Decimal::ZERO {
                self.working.push(Working {
                    id: order.id,
                    side: order.side,
                    order_type: order.order_type,
                    remaining: order.remaining(),
                    extreme: None,
                });
            }
        }
    }

    /// Accepts an order; market orders and marketable limits fill into `out` at once, as far
    /// as their time in force allows.
    ///
    /// # Errors
    /// A reason when it cannot be accepted: no price for a market order, a non-positive quantity,
    /// a post-only limit that would trade at once.
    pub fn submit(
        &mut self,
        order: &Order,
        now_ms: u64,
        out: &mut Vec<PaperFill>,
    ) -> Result<Submitted, String> {
        let qty = order.remaining();
        if qty <= Decimal::ZERO {
            return Err("nothing left to fill".into());
        }
        let rest = |venue: &mut Self, extreme| {
            venue.working.push(Working {
                id: order.id,
                side: order.side,
                order_type: order.order_type,
                remaining: qty,
                extreme,
            });
            Ok(Submitted::Working)
        };
        match order.order_type {
            OrderType::Market => {
                let price = self.market_price(order.side, None).ok_or("no market price yet")?;
                self.fill(order.id, price, qty, Liquidity::Taker, now_ms, out)?;
                Ok(Submitted::Done)
            }
            OrderType::Limit { price, time_in_force } => {
                let marketable = match order.side {
                    Side::Buy => self.ask.filter(|(ask, _)| *ask <= price),
                    Side::Sell => self.bid.filter(|(bid, _)| *bid >= price),
                };
                match (time_in_force, marketable) {
                    (TimeInForce::PostOnly, Some((quote, _))) => Err(format!(
                        "post-only order at {price} would trade at once against {quote}"
                    )),
                    (TimeInForce::Gtc | TimeInForce::PostOnly, None) => rest(self, None),
                    (TimeInForce::Gtc, Some((quote, _))) => {
                        self.fill(order.id, quote, qty, Liquidity::Taker, now_ms, out)?;
                        Ok(Submitted::Done)
                    }
                    (TimeInForce::Ioc, Some((quote, available))) => {
                        let take = qty.min(available);
                        if take > Decimal::ZERO {
                            self.fill(order.id, quote, take, Liquidity::Taker, now_ms, out)?;
                        }
                        Ok(Submitted::Done)
                    }
                    (TimeInForce::Fok, Some((quote, available))) if available >= qty => {
                        self.fill(order.id, quote, qty, Liquidity::Taker, now_ms, out)?;
                        Ok(Submitted::Done)
                    }
                    (TimeInForce::Ioc | TimeInForce::Fok, _) => Ok(Submitted::Done),
                }
            }
            OrderType::Stop { .. } | OrderType::StopLimit { .. } => rest(self, None),
            OrderType::TrailingStop { .. } => {
                let reference = match order.side {
                    Side::Sell => self.bid.map(|(b, _)| b).or(self.last),
                    Side::Buy => self.ask.map(|(a, _)| a).or(self.last),
                };
                rest(self, reference)
            }
        }
    }

    /// Lowers what a working order still has to fill to `remaining` (never raises it); false when
    /// it was not working.
    pub fn reduce(&mut self, order_id: u64, remaining: Decimal) -> bool {
        match self.working.iter_mut().find(|w| w.id == order_id) {
            Some(working) => {
                working.remaining = working.remaining.min(remaining);
                true
            }
            None => false,
        }
    }

    /// Cancels a working order; false when it was not working.
    pub fn cancel(&mut self, order_id: u64) -> bool {
        let before = self.working.len();
        self.working.retain(|w| w.id != order_id);
        self.working.len() != before
    }

    /// Updates the market and fills whatever it reaches.
    pub fn on_market(&mut self, event: &MarketEvent, out: &mut Vec<PaperFill>) {
        match &event.kind {
            EventKind::Trade { price, qty, .. } => {
                self.last = Some(*price);
                if !self.working.is_empty() {
                    self.trigger(|_| Some(*price));
                    self.match_trade(*price, *qty, event.exchange_ts, out);
                }
            }
            EventKind::Quote { bid, bid_qty, ask, ask_qty } => {
                self.bid = Some((*bid, *bid_qty));
                self.ask = Some((*ask, *ask_qty));
                if !self.working.is_empty() {
                    let (bid, ask) = (*bid, *ask);
                    self.trigger(|side| Some(if side == Side::Sell { bid } else { ask }));
                    self.match_quote(event.exchange_ts, out);
                }
            }
            _ => {}
        }
    }

    /// Turns triggered stop-limits into the limits they become and triggered trailing stops into
    /// market orders, after moving each trailing stop's best price; `price` is where a `side`
    /// order sees the market now (the trade, or its side of the quote).
    fn trigger(&mut self, price: impl Fn(Side) -> Option<Decimal>) {
        let bps = Decimal::from(10_000);
        for w in &mut self.working {
            let Some(p) = price(w.side) else { continue };
            match (w.order_type, w.side) {
                (OrderType::StopLimit { stop_price, price }, side) => {
                    let crossed =
                        if side == Side::Sell { p <= stop_price } else { p >= stop_price };
                    if crossed {
                        w.order_type = OrderType::limit(price);
                    }
                }
                (OrderType::TrailingStop { trailing_bps }, side) => {
                    let delta = Decimal::from(trailing_bps) / bps;
                    let best = match (w.extreme, side) {
                        (None, _) => p,
                        (Some(e), Side::Sell) => e.max(p),
                        (Some(e), Side::Buy) => e.min(p),
                    };
                    w.extreme = Some(best);
                    let triggered = match side {
                        Side::Sell => p <= best * (Decimal::ONE - delta),
                        Side::Buy => p >= best * (Decimal::ONE + delta),
                    };
                    if triggered {
                        w.order_type = OrderType::Market;
                    }
                }
                _ => {}
            }
        }
    }

    /// Where a market order of `side` fills now; `trigger` is a stop's triggering trade price.
    fn market_price(&self, side: Side, trigger: Option<Decimal>) -> Option<Decimal> {
        let quote = match side {
            Side::Buy => self.ask,
            Side::Sell => self.bid,
        };
        if let Some((price, _)) = quote {
            return Some(price);
        }
        let last = trigger.or(self.last)?;
        let slip =
            last.checked_mul(self.config.slippage_bps)?.checked_div(Decimal::from(10_000))?;
        let (price, rounding) = match side {
            Side::Buy => (last.checked_add(slip)?, RoundingStrategy::ToPositiveInfinity),
            Side::Sell => (last.checked_sub(slip)?, RoundingStrategy::ToNegativeInfinity),
        };
        Some(round_to_tick(price, self.filters.tick_size, rounding))
    }

    fn match_trade(&mut self, price: Decimal, qty: Decimal, ts: u64, out: &mut Vec<PaperFill>) {
        self.collect(|w| match (w.side, w.order_type) {
            (Side::Buy, OrderType::Limit { price: limit, .. }) => price < limit,
            (Side::Sell, OrderType::Limit { price: limit, .. }) => price > limit,
            (Side::Sell, OrderType::Stop { stop_price }) => price <= stop_price,
            (Side::Buy, OrderType::Stop { stop_price }) => price >= stop_price,
            (_, OrderType::Market) => true,
            (_, OrderType::StopLimit { .. } | OrderType::TrailingStop { .. }) => false,
        });
        let mut available = qty;
        self.execute(
            ts,
            out,
            |w| match w.order_type {
                OrderType::Limit { price: limit, .. } => {
                    let take = w.remaining.min(available);
                    available -= take;
                    (take > Decimal::ZERO).then_some((limit, take, Liquidity::Maker))
                }
                _ => Some((Decimal::ZERO, w.remaining, Liquidity::Taker)),
            },
            Some(price),
        );
    }

    fn match_quote(&mut self, ts: u64, out: &mut Vec<PaperFill>) {
        let (bid, ask) = (self.bid, self.ask);
        self.collect(|w| match (w.side, w.order_type) {
            (Side::Buy, OrderType::Limit { price, .. }) => ask.is_some_and(|(a, _)| a <= price),
            (Side::Sell, OrderType::Limit { price, .. }) => bid.is_some_and(|(b, _)| b >= price),
            (Side::Sell, OrderType::Stop { stop_price }) => {
                bid.is_some_and(|(b, _)| b <= stop_price)
            }
            (Side::Buy, OrderType::Stop { stop_price }) => {
                ask.is_some_and(|(a, _)| a >= stop_price)
            }
            (_, OrderType::Market) => true,
            (_, OrderType::StopLimit { .. } | OrderType::TrailingStop { .. }) => false,
        });
        let mut bid_left = bid.map_or(Decimal::ZERO, |(_, q)| q);
        let mut ask_left = ask.map_or(Decimal::ZERO, |(_, q)| q);
        self.execute(
            ts,
            out,
            |w| match w.order_type {
                OrderType::Limit { price, .. } => {
                    let left = if w.side == Side::Buy { &mut ask_left } else { &mut bid_left };
                    let take = w.remaining.min(*left);
                    *left -= take;
                    (take > Decimal::ZERO).then_some((price, take, Liquidity::Maker))
                }
                _ => Some((Decimal::ZERO, w.remaining, Liquidity::Taker)),
            },
            None,
        );
    }

    /// Puts the indexes of matching working orders into `scratch`, best price first, then by id.
    fn collect(&mut self, mut hit: impl FnMut(&Working) -> bool) {
        self.scratch.clear();
        for (i, w) in self.working.iter().enumerate() {
            if hit(w) {
                self.scratch.push(i);
            }
        }
        if self.scratch.len() > 1 {
            let working = &self.working;
            self.scratch.sort_by(|&a, &b| {
                let (wa, wb) = (&working[a], &working[b]);
                priority(wa).cmp(&priority(wb)).then(wa.id.cmp(&wb.id))
            });
        }
    }

    /// Fills the collected orders. `plan` gives (price, qty, liquidity) for each, or `None` to
    /// skip; a zero price means "at the market" (triggered stops).
    fn execute(
        &mut self,
        ts: u64,
        out: &mut Vec<PaperFill>,
        mut plan: impl FnMut(&Working) -> Option<(Decimal, Decimal, Liquidity)>,
        trigger: Option<Decimal>,
    ) {
        if self.scratch.is_empty() {
            return;
        }
        let hits = std::mem::take(&mut self.scratch);
        for &i in &hits {
            let w = self.working[i].clone();
            let Some((mut price, qty, liquidity)) = plan(&w) else { continue };
            if price.is_zero() {
                match self.market_price(w.side, trigger) {
                    Some(p) => price = p,
                    None => continue,
                }
            }
            if self.fill(w.id, price, qty, liquidity, ts, out).is_ok() {
                self.working[i].remaining -= qty;
            }
        }
        self.working.retain(|w| w.remaining > Decimal::ZERO);
        self.scratch = hits;
        self.scratch.clear();
    }

    fn fill(
        &self,
        order_id: u64,
        price: Decimal,
        qty: Decimal,
        liquidity: Liquidity,
        ts: u64,
        out: &mut Vec<PaperFill>,
    ) -> Result<(), String> {
        let fee = price
            .checked_mul(qty)
            .and_then(|n| n.checked_mul(self.config.fee_bps))
            .and_then(|n| n.checked_div(Decimal::from(10_000)))
            .ok_or("order value overflows")?
            .round_dp_with_strategy(FEE_DP, RoundingStrategy::MidpointAwayFromZero);
        out.push(PaperFill { order_id, price, qty, fee, liquidity, ts, commission: None });
        Ok(())
    }
}

/// Sort key for matching: the buy with the highest price, or the sell with the lowest, first.
fn priority(w: &Working) -> Decimal {
    let price = match w.order_type {
        OrderType::Limit { price, .. } => price,
        OrderType::Stop { stop_price } | OrderType::StopLimit { stop_price, .. } => stop_price,
        OrderType::Market | OrderType::TrailingStop { .. } => Decimal::ZERO,
    };
    if w.side == Side::Buy { -price } else { price }
}

fn round_to_tick(price: Decimal, tick: Decimal, strategy: RoundingStrategy) -> Decimal {
    if tick <= Decimal::ZERO {
        return price;
    }
    match price.checked_div(tick) {
        Some(ticks) => ticks.round_dp_with_strategy(0, strategy) * tick,
        None => price,
    }
}

#[cfg(test)]
mod tests;
