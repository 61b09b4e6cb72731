//! The engine's order manager: brackets and OCO, exits replacing brackets, cancels, closing,
//! rejections recorded with reasons, the daily-loss pause, and the position always equal to the
//! fills.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::*;
use crate::bot::Bracket;
use crate::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use crate::strategy::{Intent, Strategy, StrategyContext};
use crate::trading::paper::PaperConfig;
use crate::trading::risk::RiskLimits;
use crate::trading::{
    Commission, FeeAsset, Fill, InstrumentFilters, OrderOrigin, OrderStatus, OrderType, Position,
};

mod derivatives;
mod fees;
mod futures;
mod live;
mod native_half;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A strategy that does exactly what the test queues, once per event.
#[derive(Debug, Default)]
struct Scripted {
    queue: Arc<std::sync::Mutex<Vec<Intent>>>,
}

impl Strategy for Scripted {
    fn on_event(&mut self, _: &MarketEvent, _: &StrategyContext<'_>, out: &mut Vec<Intent>) {
        out.append(&mut self.queue.lock().unwrap());
    }
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore(&mut self, _: serde_json::Value) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: d("0.01"),
        step_size: d("0.001"),
        min_qty: d("0.001"),
        max_qty: d("1000"),
        min_notional: d("1"),
    }
}

fn engine(
    risk: RiskLimits,
    bracket: Option<Bracket>,
) -> (BotEngine, Arc<std::sync::Mutex<Vec<Intent>>>) {
    engine_for(risk, bracket, false)
}

fn engine_for(
    risk: RiskLimits,
    bracket: Option<Bracket>,
    live: bool,
) -> (BotEngine, Arc<std::sync::Mutex<Vec<Intent>>>) {
    let strategy = Scripted::default();
    let queue = strategy.queue.clone();
    let config = EngineConfig {
        bot_id: 7,
        filters: filters(),
        risk,
        bracket,
        paper: PaperConfig { fee_bps: d("10"), slippage_bps: d("0") },
        allow_short: false,
        futures: None,
        live,
    };
    let state = BotState {
        position: Position { quote_balance: d("10000"), ..Position::default() },
        ..BotState::default()
    };
    (BotEngine::new(config, state, Box::new(strategy), Vec::new()), queue)
}

fn quote(bid: &str, ask: &str, ts: u64) -> MarketEvent {
    MarketEvent {
        venue: VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts: ts,
        received_us: ts * 1000,
        kind: EventKind::Quote { bid: d(bid), bid_qty: d("10"), ask: d(ask), ask_qty: d("10") },
    }
}

fn trade(price: &str, ts: u64) -> MarketEvent {
    MarketEvent {
        venue: VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts: ts,
        received_us: ts * 1000,
        kind: EventKind::Trade { price: d(price), qty: d("10"), side: Side::Buy, trade_id: ts },
    }
}

fn assert_position_matches_fills(engine: &BotEngine, fills: &[Fill]) {
    let mut replay = Position { quote_balance: d("10000"), ..Position::default() };
    for f in fills {
        replay.apply_fill(f);
    }
    assert_eq!(engine.position(), &replay);
}

#[test]
fn a_filled_entry_gets_a_bracket_and_one_leg_filling_cancels_the_other() {
    let bracket = Bracket { take_profit_pct: d("2"), stop_loss_pct: d("1") };
    let (mut engine, queue) = engine(RiskLimits::default(), Some(bracket));
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Buy, d("1"))));
    engine.on_market(&quote("99.99", "100.00", 2), &mut fx);

    assert_eq!(engine.position().qty, d("1"));
    let open = engine.open_orders();
    assert_eq!(open.len(), 2, "{open:#?}");
    let tp = open.iter().find(|o| o.origin == OrderOrigin::TakeProfit).unwrap();
    let sl = open.iter().find(|o| o.origin == OrderOrigin::StopLoss).unwrap();
    assert_eq!(tp.order_type, OrderType::limit(d("102.00")));
    assert_eq!(sl.order_type, OrderType::Stop { stop_price: d("99.00") });
    assert_eq!((tp.oco_with, sl.oco_with), (Some(sl.id), Some(tp.id)));
    assert_eq!(tp.client_order_id, format!("keel-7-{:06}", tp.id));

    // The market trades through the take-profit: it fills and the stop is canceled.
    engine.on_market(&trade("102.50", 3), &mut fx);
    assert!(engine.position().qty.is_zero());
    assert!(engine.open_orders().is_empty(), "{:#?}", engine.open_orders());
    let canceled = fx.orders.iter().rev().find(|o| o.origin == OrderOrigin::StopLoss).unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
    assert_eq!(canceled.reason.as_deref(), Some("other bracket leg filled"));
    assert_position_matches_fills(&engine, &fx.fills);
    assert!(engine.position().realized_pnl > Decimal::ZERO);
}

#[test]
fn an_exit_order_replaces_the_bracket_instead_of_being_refused() {
    let bracket = Bracket { take_profit_pct: d("5"), stop_loss_pct: d("5") };
    let (mut engine, queue) = engine(RiskLimits::default(), Some(bracket));
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Buy, d("1"))));
    engine.on_market(&quote("99.99", "100.00", 2), &mut fx);
    assert_eq!(engine.open_orders().len(), 2);

    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Sell, d("1"))));
    engine.on_market(&quote("100.99", "101.00", 3), &mut fx);
    assert!(engine.position().qty.is_zero(), "{:?}", engine.position());
    assert!(engine.open_orders().is_empty());
    assert!(fx.orders.iter().all(|o| o.status != OrderStatus::Rejected), "{:#?}", fx.orders);
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn rejections_are_recorded_with_their_reason_and_cancel_and_close_work() {
    let risk = RiskLimits { max_order_notional: Some(d("500")), ..RiskLimits::default() };
    let (mut engine, _) = engine(risk, None);
    let mut fx = Effects::default();
    // No price yet: a market order cannot be valued.
    assert!(engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).is_err());
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    fx.clear();

    let err = engine.place_manual(OrderRequest::market(Side::Buy, d("6")), &mut fx).unwrap_err();
    assert_eq!(err.code, "MAX_ORDER_NOTIONAL");
    let rejected = fx.orders.last().unwrap();
    assert_eq!(rejected.status, OrderStatus::Rejected);
    assert!(rejected.reason.as_deref().unwrap().starts_with("MAX_ORDER_NOTIONAL"), "{rejected:?}");

    let resting =
        engine.place_manual(OrderRequest::limit(Side::Buy, d("1"), d("90.00")), &mut fx).unwrap();
    assert_eq!(resting.status, OrderStatus::Accepted);
    let canceled = engine.cancel(resting.id, "by test", &mut fx).unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
    assert_eq!(engine.cancel(resting.id, "again", &mut fx), Err(CancelError::NotOpen(resting.id)));

    let bought = engine.place_manual(OrderRequest::market(Side::Buy, d("2")), &mut fx).unwrap();
    assert_eq!((bought.status, bought.avg_fill_price), (OrderStatus::Filled, d("100.00")));
    let closed = engine.close_position(&mut fx).unwrap().unwrap();
    assert_eq!((closed.side, closed.status), (Side::Sell, OrderStatus::Filled));
    assert!(engine.position().qty.is_zero());
    assert_eq!(engine.close_position(&mut fx).unwrap(), None, "flat: nothing to close");
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn reaching_the_daily_loss_limit_pauses_the_strategy_with_a_reason() {
    let risk = RiskLimits { max_daily_loss: Some(d("50")), ..RiskLimits::default() };
    let (mut engine, queue) = engine(risk, None);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Buy, d("10"))));
    engine.on_market(&quote("99.99", "100.00", 2), &mut fx);
    assert!(fx.paused.is_none());
    // Marked 10 lower on 10 units: 100 down, past the 50 limit.
    engine.on_market(&quote("89.99", "90.00", 3), &mut fx);
    let reason = fx.paused.clone().expect("paused");
    assert!(reason.contains("max_daily_loss"), "{reason}");
    // Paused: the strategy's further intents are not acted on.
    fx.clear();
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Buy, d("1"))));
    engine.on_market(&quote("89.99", "90.00", 4), &mut fx);
    assert!(fx.orders.is_empty());
}

#[test]
fn restarting_from_a_snapshot_keeps_the_position_and_re_arms_open_orders() {
    let (mut engine, _) = engine(RiskLimits::default(), None);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    let resting =
        engine.place_manual(OrderRequest::limit(Side::Buy, d("1"), d("95.00")), &mut fx).unwrap();
    let snapshot = engine.snapshot();

    let (fresh, _) = self::engine(RiskLimits::default(), None);
    let config = fresh.config.clone();
    let mut revived = BotEngine::new(
        config,
        snapshot,
        Box::new(Scripted::default()),
        engine.open_orders().to_vec(),
    );
    assert_eq!(revived.position(), engine.position());
    let mut fx2 = Effects::default();
    revived.on_market(&trade("94.00", 5), &mut fx2);
    assert_eq!(fx2.fills.len(), 1, "the re-armed limit fills");
    assert_eq!(fx2.fills[0].order_id, resting.id);
    assert_eq!(fx2.fills[0].id, fx.fills.last().unwrap().id + 1, "fill ids continue");
    assert_eq!(revived.position().qty, d("2"));
}

fn trade_of(price: &str, qty: &str, ts: u64) -> MarketEvent {
    let mut event = trade(price, ts);
    if let EventKind::Trade { qty: q, .. } = &mut event.kind {
        *q = d(qty);
    }
    event
}

#[test]
fn closing_cancels_the_resting_sells_that_would_take_a_spot_bot_short() {
    let (mut engine, _) = engine(RiskLimits::default(), None);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    engine.place_manual(OrderRequest::market(Side::Buy, d("2")), &mut fx).unwrap();
    let exit =
        engine.place_manual(OrderRequest::limit(Side::Sell, d("1"), d("105.00")), &mut fx).unwrap();
    let resting_buy =
        engine.place_manual(OrderRequest::limit(Side::Buy, d("1"), d("90.00")), &mut fx).unwrap();

    let closed = engine.close_position(&mut fx).unwrap().unwrap();
    assert_eq!((closed.side, closed.qty, closed.status), (Side::Sell, d("2"), OrderStatus::Filled));
    engine.on_market(&trade("106", 2), &mut fx);

    assert!(engine.position().qty.is_zero(), "{:?}", engine.position());
    let last = |id| fx.orders.iter().rev().find(|o| o.id == id).unwrap();
    assert_eq!(last(exit.id).status, OrderStatus::Canceled);
    assert_eq!(last(exit.id).reason.as_deref(), Some("position closed"));
    assert!(engine.open_orders().iter().any(|o| o.id == resting_buy.id), "buys stay");
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn a_take_profit_filled_in_part_shrinks_its_stop_loss_to_what_is_left() {
    let bracket = Bracket { take_profit_pct: d("1.5"), stop_loss_pct: d("2") };
    let (mut engine, _) = engine(RiskLimits::default(), Some(bracket));
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    let stop = engine.open_orders().iter().find(|o| o.origin == OrderOrigin::StopLoss).unwrap().id;

    engine.on_market(&trade_of("101.60", "0.3", 2), &mut fx);
    assert_eq!(engine.position().qty, d("0.7"));
    let shrunk = engine.open_orders().iter().find(|o| o.id == stop).unwrap().clone();
    assert_eq!(shrunk.remaining(), d("0.7"));
    assert_eq!(fx.orders.iter().rev().find(|o| o.id == stop), Some(&shrunk), "persisted");

    engine.on_market(&trade("97", 3), &mut fx);
    assert!(engine.position().qty.is_zero(), "{:?}", engine.position());
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn an_entry_completing_after_a_close_brackets_only_what_no_other_bracket_covers() {
    // Found by the spot property test: an entry filled in part, a close that sold that part, a
    // second entry with its bracket, then the first entry completing. A bracket for the whole
    // first entry would make the two pairs exit more than is held.
    let bracket = Bracket { take_profit_pct: d("1.5"), stop_loss_pct: d("2") };
    let (mut engine, _) = engine(RiskLimits::default(), Some(bracket));
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let first = engine.place_manual(OrderRequest::limit(Side::Buy, d("1"), d("99.50")), &mut fx);
    let first = first.unwrap();
    engine.on_market(&trade_of("99.40", "0.3", 2), &mut fx);
    engine.close_position(&mut fx).unwrap();
    assert!(engine.position().qty.is_zero());
    engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    engine.on_market(&trade_of("99.40", "0.7", 3), &mut fx);
    assert_eq!(
        fx.orders.iter().rev().find(|o| o.id == first.id).unwrap().status,
        OrderStatus::Filled
    );
    assert_eq!(engine.position().qty, d("1.7"));

    let stops: Decimal = engine
        .open_orders()
        .iter()
        .filter(|o| o.origin == OrderOrigin::StopLoss)
        .map(Order::remaining)
        .sum();
    assert_eq!(stops, d("1.7"), "{:?}", engine.open_orders());
    engine.on_market(&trade("97", 4), &mut fx);
    assert!(engine.position().qty.is_zero(), "{:?}", engine.position());
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn an_ioc_limit_ends_canceled_with_what_it_could_fill() {
    let (mut engine, _) = engine(RiskLimits::default(), None);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let req = OrderRequest {
        side: Side::Buy,
        qty: d("20"),
        order_type: OrderType::Limit {
            price: d("100.00"),
            time_in_force: crate::trading::TimeInForce::Ioc,
        },
        tag: 0,
    };
    let order = engine.place_manual(req, &mut fx).unwrap();
    let last = fx.orders.iter().rev().find(|o| o.id == order.id).unwrap();
    assert_eq!((last.status, last.filled_qty), (OrderStatus::Canceled, d("10")));
    assert!(last.reason.as_deref().unwrap().contains("IOC"), "{last:?}");
    assert!(engine.open_orders().is_empty());
    assert_eq!(engine.position().qty, d("10"));
}

#[test]
fn built_in_strategies_publish_their_series_once_per_changing_call() {
    use crate::strategy::{Pane, SeriesStyle, StrategySpec, build};
    let spec: StrategySpec = serde_json::from_value(serde_json::json!({
        "kind": "ema_cross", "params": {"fast": 2, "slow": 3, "qty": "0.01"}
    }))
    .unwrap();
    let strategy = build(&spec, &filters()).unwrap();
    let (template, _) = engine(RiskLimits::default(), None);
    let mut engine = BotEngine::new(template.config.clone(), BotState::default(), strategy, vec![]);
    let names: Vec<&str> = engine.series().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ema_fast", "ema_slow"]);
    assert!(engine.series().iter().all(|s| s.pane == Pane::Price && s.style == SeriesStyle::Line));

    let mut fx = Effects::default();
    // fast ready after 2 trades, slow after 3.
    engine.on_market(&trade("100", 1), &mut fx);
    assert_eq!(fx.indicators, None);
    engine.on_market(&trade("102", 2), &mut fx);
    let update = fx.indicators.take().unwrap();
    assert_eq!((update.ts, update.values), (2, vec![(0, d("101"))]));
    engine.on_market(&trade("104", 3), &mut fx);
    let update = fx.indicators.take().unwrap();
    // fast: 101 + 2/3 * (104 - 101) = 103; slow: (100 + 102 + 104) / 3 = 102.
    assert_eq!(update.values, vec![(0, d("103")), (1, d("102"))]);
    // A quote changes no value: nothing is published.
    engine.on_market(&quote("103", "104", 4), &mut fx);
    assert_eq!(fx.indicators, None);

    let rsi: StrategySpec = serde_json::from_value(serde_json::json!({
        "kind": "rsi", "params": {"period": 2, "oversold": 30, "overbought": 70, "qty": "0.01"}
    }))
    .unwrap();
    let rsi = build(&rsi, &filters()).unwrap().series();
    assert_eq!(
        (rsi[0].name.as_str(), rsi[0].pane, rsi[0].min, rsi[0].max),
        ("rsi", Pane::Own, Some(0.0), Some(100.0))
    );

    let grid: StrategySpec = serde_json::from_value(serde_json::json!({
        "kind": "grid", "params": {"lower": "90", "upper": "110", "levels": 3, "qty_per_level": "0.01"}
    }))
    .unwrap();
    let strategy = build(&grid, &filters()).unwrap();
    let mut engine =
        BotEngine::new(template.config.clone(), template.state.clone(), strategy, vec![]);
    assert!(engine.series().iter().all(|s| s.style == SeriesStyle::Level));
    engine.on_market(&trade("100", 1), &mut fx);
    let update = fx.indicators.take().unwrap();
    assert_eq!(update.values, vec![(0, d("90")), (1, d("100")), (2, d("110"))]);
    // Levels do not move: published once.
    engine.on_market(&trade("95", 2), &mut fx);
    assert_eq!(fx.indicators, None);
}

fn venue_report(order_id: u64, status: &str, executed: &str, quote: &str) -> ExecReport {
    ExecReport {
        order_id,
        outcome: ExecOutcome::Venue {
            status: status.into(),
            executed_qty: d(executed),
            cum_quote: d(quote),
            fills: Vec::new(),
            ts: 10,
        },
    }
}

fn commission(asset: &str, amount: &str, charged_to: FeeAsset) -> Commission {
    Commission { asset: asset.into(), amount: d(amount), charged_to, quote_value_estimated: false }
}
