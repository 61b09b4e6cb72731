//! Paper futures in the engine: funding payments at funding times and liquidation when the mark
//! crosses the liquidation price (the model is in [`crate::trading::margin`]). A live bot's
//! funding comes from its venue (`derivatives.rs`).

use rust_decimal::{Decimal, RoundingStrategy};

use super::{BotEngine, BotEventKind, Effects, FundingBooking};
use crate::market::{EventKind, MarketEvent};
use crate::trading::margin::{self, FuturesConfig};
use crate::trading::paper::PaperFill;
use crate::trading::{Liquidity, Order, OrderOrigin, OrderStatus, OrderType, Side};

/// Why a liquidated bot is paused (the journal and the bot's status reason start with it).
pub const LIQUIDATED_REASON: &str = "liquidated";

impl BotEngine {
    /// The paper futures settings (`None` on spot and for live bots' venues without them).
    pub fn futures(&self) -> Option<&FuturesConfig> {
        self.config.futures.as_ref()
    }

    /// The mark price paper futures use: the venue's published mark, else the paper venue's.
    pub fn futures_mark(&self) -> Option<Decimal> {
        self.state.venue_mark.or_else(|| self.venue.mark_price())
    }

    /// The price at which the paper position is liquidated (`None`: spot, flat, or never).
    pub fn liquidation_price(&self) -> Option<Decimal> {
        self.config.futures.as_ref()?.liquidation_price(&self.state.position)
    }

    /// The initial margin the paper position holds, in quote (`None` on spot).
    pub fn position_margin(&self) -> Option<Decimal> {
        Some(self.config.futures.as_ref()?.position_margin(&self.state.position))
    }

    /// Paper futures' work for one market event: a funding payment when a funding time has
    /// passed, the venue's mark and rate taken in, and a liquidation when the mark crossed
    /// the liquidation price. Spot and live bots do nothing here.
    pub(super) fn paper_futures(&mut self, event: &MarketEvent, fx: &mut Effects) {
        if self.config.live {
            return;
        }
        let Some(futures) = self.config.futures.clone() else { return };
        let now = event.exchange_ts;
        if self.state.next_funding_ms == 0 {
            self.state.next_funding_ms = futures.next_funding_after(now);
        } else if now >= self.state.next_funding_ms {
            // The rate published before this event is the one the funding time applies.
            let due = self.state.next_funding_ms;
            self.state.next_funding_ms = futures.next_funding_after(now);
            self.pay_funding(&futures, due, fx);
        }
        if let EventKind::MarkPrice { mark_price, funding_rate, next_funding_ms } = &event.kind {
            self.state.venue_mark = Some(*mark_price);
            if funding_rate.is_some() {
                self.state.funding_rate = *funding_rate;
            }
            if let Some(next) = next_funding_ms
                && *next > now
            {
                self.state.next_funding_ms = *next;
            }
        }
        // The price this event shows: the venue's mark where its feed publishes one (then only
        // mark events count, as on the venue), else the trade or the quote's mid.
        let mark = match &event.kind {
            EventKind::MarkPrice { mark_price, .. } => Some(*mark_price),
            _ if self.state.venue_mark.is_some() => None,
            EventKind::Trade { price, .. } => Some(*price),
            EventKind::Quote { bid, ask, .. } => Some((*bid + *ask) / Decimal::TWO),
            _ => None,
        };
        let Some(mark) = mark else { return };
        let Some(liquidation) = futures.liquidation_price(&self.state.position) else { return };
        if margin::crossed(self.state.position.qty, mark, liquidation) {
            self.liquidate(&futures, liquidation, mark, fx);
        }
    }

    fn pay_funding(&mut self, futures: &FuturesConfig, due: u64, fx: &mut Effects) {
        let qty = self.state.position.qty;
        if qty.is_zero() {
            return;
        }
        let (Some(rate), Some(mark)) =
            (futures.funding_rate.or(self.state.funding_rate), self.futures_mark())
        else {
            return;
        };
        let amount = margin::funding_amount(qty, mark, rate);
        let paid = FundingBooking { id: None, rate: Some(rate), mark_price: Some(mark) };
        self.book_funding(amount, &futures.quote_asset, due, paid, fx);
    }

    /// Cancels the open orders and closes the position at the liquidation price; what is left
    /// of the margin the liquidation may take goes as a clearance fee; the strategy pauses.
    fn liquidate(
        &mut self,
        futures: &FuturesConfig,
        liquidation: Decimal,
        mark: Decimal,
        fx: &mut Effects,
    ) {
        let now = self.now();
        let ids: Vec<u64> = self.open.iter().map(|o| o.id).collect();
        for id in ids {
            self.cancel_open(id, LIQUIDATED_REASON, fx);
        }
        let held = self.state.position.qty;
        let side = if held.is_sign_positive() { Side::Sell } else { Side::Buy };
        // On the tick, against the trader.
        let rounding = match side {
            Side::Sell => RoundingStrategy::ToNegativeInfinity,
            Side::Buy => RoundingStrategy::ToPositiveInfinity,
        };
        let tick = self.config.filters.tick_size;
        let price = if tick > Decimal::ZERO {
            (liquidation / tick).round_dp_with_strategy(0, rounding) * tick
        } else {
            liquidation
        };
        let qty = held.abs();
        let balance_before = futures.liquidation_balance(&self.state.position);
        let realized_before = self.state.position.realized_pnl;
        let fees_before = self.state.position.fees;

        self.state.last_order_id += 1;
        let id = self.state.last_order_id;
        let order = Order {
            id,
            bot_id: self.config.bot_id,
            client_order_id: super::client_order_id(self.config.bot_id, id),
            side,
            order_type: OrderType::Market,
            qty,
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status: OrderStatus::Accepted,
            origin: OrderOrigin::Close,
            tag: 0,
            oco_with: None,
            venue_list: None,
            reason: Some(LIQUIDATED_REASON.to_owned()),
            created_ts: now,
            updated_ts: now,
        };
        self.open.push(order.clone());
        self.views_dirty = true;
        self.record_order(&order, fx);
        let fee =
            margin::round_amount(price * qty * self.config.paper.fee_bps / Decimal::from(10_000));
        let fill = PaperFill {
            order_id: id,
            price,
            qty,
            fee,
            liquidity: Liquidity::Taker,
            ts: now,
            commission: None,
        };
        self.apply_fill(&fill, fx);

        let position = &mut self.state.position;
        let lost = (realized_before - position.realized_pnl) + (position.fees - fees_before);
        let clearance_fee = margin::round_amount(match futures.margin_type {
            // An isolated position loses exactly its margin.
            crate::bot::MarginType::Isolated => (balance_before - lost).max(Decimal::ZERO),
            // A cross position also loses its maintenance margin (what the balance still holds).
            crate::bot::MarginType::Cross => (price * qty * futures.maintenance_margin_rate)
                .min((balance_before - lost).max(Decimal::ZERO)),
        });
        position.quote_balance -= clearance_fee;
        position.fees += clearance_fee;
        let line = BotEventKind::Liquidated {
            qty: held,
            price,
            mark_price: mark,
            clearance_fee,
            margin_type: futures.margin_type,
        };
        self.log(now, line, fx);
        self.log(now, BotEventKind::Position(self.state.position.clone()), fx);
        let reason = format!(
            "{LIQUIDATED_REASON}: the mark {mark} crossed the liquidation price {}; position of {held} closed at {price}",
            liquidation.round_dp(8).normalize()
        );
        self.log(now, BotEventKind::Log { level: "warn".into(), message: reason.clone() }, fx);
        self.strategy_active = false;
        self.intents.clear();
        self.order_updates.clear();
        fx.paused = Some(reason);
    }
}
