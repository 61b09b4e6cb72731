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

#[test]
fn live_orders_wait_for_the_venue_and_fills_come_from_its_cumulative_totals() {
    let (mut engine, _) = engine_for(RiskLimits::default(), None, true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let order =
        engine.place_manual(OrderRequest::limit(Side::Buy, d("2"), d("99.00")), &mut fx).unwrap();
    assert_eq!(order.status, OrderStatus::New, "not acknowledged yet");
    assert_eq!(fx.outbound, vec![Outbound::Place(order.clone())]);
    // A live limit is never filled by the paper venue.
    engine.on_market(&trade("98.00", 2), &mut fx);
    assert!(fx.fills.is_empty());

    fx.clear();
    engine.on_exec(venue_report(order.id, "NEW", "0", "0"), &mut fx);
    assert_eq!(engine.open_orders()[0].status, OrderStatus::Accepted);
    engine.on_exec(venue_report(order.id, "PARTIALLY_FILLED", "0.5", "49.5"), &mut fx);
    // The same report again (a poll racing an answer) adds nothing.
    engine.on_exec(venue_report(order.id, "PARTIALLY_FILLED", "0.5", "49.5"), &mut fx);
    assert_eq!(fx.fills.len(), 1);
    engine.on_exec(venue_report(order.id, "FILLED", "2", "197.25"), &mut fx);
    assert_eq!(fx.fills.len(), 2);
    assert_eq!((fx.fills[1].qty, fx.fills[1].price), (d("1.5"), d("98.5")));
    assert!(engine.open_orders().is_empty());
    assert_eq!(fx.orders.last().unwrap().status, OrderStatus::Filled);
    assert_eq!(engine.position().qty, d("2"));
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn an_unknown_outcome_stays_open_until_a_query_reconciles_it() {
    let (mut engine, _) = engine_for(RiskLimits::default(), None, true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let order = engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    engine.on_exec(
        ExecReport { order_id: order.id, outcome: ExecOutcome::Unknown("503".into()) },
        &mut fx,
    );
    assert_eq!(engine.open_orders()[0].status, OrderStatus::Unknown);
    // It still counts: the quantity it may have bought is not forgotten.
    engine.on_exec(venue_report(order.id, "FILLED", "1", "100.01"), &mut fx);
    let last = fx.orders.last().unwrap();
    assert_eq!((last.status, last.filled_qty), (OrderStatus::Reconciled, d("1")));
    assert_eq!(engine.position().qty, d("1"));

    // Never received: reconciled with nothing filled.
    let lost = engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    engine.on_exec(
        ExecReport { order_id: lost.id, outcome: ExecOutcome::Unknown("timeout".into()) },
        &mut fx,
    );
    engine.on_exec(ExecReport { order_id: lost.id, outcome: ExecOutcome::NotFound }, &mut fx);
    let last = fx.orders.last().unwrap();
    assert_eq!((last.status, last.filled_qty), (OrderStatus::Reconciled, d("0")));
    assert!(engine.open_orders().is_empty());
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn live_stops_are_armed_locally_and_sent_as_market_orders_when_crossed() {
    let bracket = Bracket { take_profit_pct: d("2"), stop_loss_pct: d("1") };
    let (mut engine, _) = engine_for(RiskLimits::default(), Some(bracket), true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let entry = engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    fx.clear();
    engine.on_exec(
        ExecReport {
            order_id: entry.id,
            outcome: ExecOutcome::Venue {
                status: "FILLED".into(),
                executed_qty: d("1"),
                cum_quote: d("100"),
                fills: vec![VenueFillReport {
                    price: d("100"),
                    qty: d("1"),
                    commission: Some(commission("USDT", "0.1", FeeAsset::Quote)),
                }],
                ts: 2,
            },
        },
        &mut fx,
    );
    assert_eq!(fx.fills[0].fee, d("0.1"), "the venue's fee is kept");
    let tp = engine.open_orders().iter().find(|o| o.origin == OrderOrigin::TakeProfit).cloned();
    let sl = engine.open_orders().iter().find(|o| o.origin == OrderOrigin::StopLoss).cloned();
    let (tp, sl) = (tp.unwrap(), sl.unwrap());
    let placed: Vec<u64> = fx
        .outbound
        .iter()
        .map(|o| match o {
            Outbound::Place(o) => o.id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(placed, vec![tp.id], "only the limit goes to the venue");
    assert_eq!(sl.status, OrderStatus::Accepted);

    fx.clear();
    engine.on_market(&trade("99.50", 3), &mut fx);
    assert!(fx.outbound.is_empty());
    engine.on_market(&trade("98.90", 4), &mut fx);
    let sent = match fx.outbound.as_slice() {
        [Outbound::Place(o)] => o.clone(),
        other => panic!("expected the stop to be sent, got {other:?}"),
    };
    assert_eq!((sent.id, sent.status), (sl.id, OrderStatus::New));

    // The stop fills: the take-profit at the venue is asked to cancel, and ends when it says so.
    fx.clear();
    engine.on_exec(venue_report(sl.id, "FILLED", "1", "98.9"), &mut fx);
    assert!(engine.position().qty.is_zero());
    assert_eq!(fx.outbound, vec![Outbound::Cancel(tp.clone())]);
    assert_eq!(engine.open_orders().len(), 1);
    engine.on_exec(venue_report(tp.id, "CANCELED", "0", "0"), &mut fx);
    assert!(engine.open_orders().is_empty());
    assert_eq!(fx.orders.last().unwrap().status, OrderStatus::Canceled);
}

fn commission(asset: &str, amount: &str, charged_to: FeeAsset) -> Commission {
    Commission { asset: asset.into(), amount: d(amount), charged_to, quote_value_estimated: false }
}

/// A live engine that bought 1 at 100 with `fee` charged by the venue.
fn bought_with(fee: Commission) -> (BotEngine, Effects, Arc<std::sync::Mutex<Vec<Intent>>>) {
    let (mut engine, queue) = engine_for(RiskLimits::default(), None, true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let entry = engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    let fills = vec![VenueFillReport { price: d("100"), qty: d("1"), commission: Some(fee) }];
    let outcome = ExecOutcome::Venue {
        status: "FILLED".into(),
        executed_qty: d("1"),
        cum_quote: d("100"),
        fills,
        ts: 2,
    };
    engine.on_exec(ExecReport { order_id: entry.id, outcome }, &mut fx);
    (engine, fx, queue)
}

fn logs(fx: &Effects) -> Vec<String> {
    fx.events
        .iter()
        .filter_map(|e| match &e.kind {
            BotEventKind::Log { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn commission_in_the_base_asset_is_taken_from_the_base_received() {
    let (mut engine, mut fx, _) = bought_with(commission("BTC", "0.00075", FeeAsset::Base));
    let p = engine.position().clone();
    assert_eq!(p.qty, d("0.99925"), "the account holds what it received");
    assert_eq!(p.quote_balance, d("9900"), "the quote paid is the price, no fee on top");
    assert_eq!(p.fees, d("0.075"), "the fee's value in quote");
    let fill = fx.fills.last().unwrap().clone();
    assert_eq!(fill.fee, d("0.075"));
    let c = fill.commission.clone().unwrap();
    assert_eq!((c.asset.as_str(), c.amount, c.charged_to), ("BTC", d("0.00075"), FeeAsset::Base));
    assert_position_matches_fills(&engine, &fx.fills);

    // The close never asks for more than is held: rounded down to the step, the dust reported.
    fx.clear();
    let close = engine.close_position(&mut fx).unwrap().unwrap();
    assert_eq!((close.side, close.qty), (Side::Sell, d("0.999")));
    assert!(logs(&fx).iter().any(|m| m.contains("0.00025 left as dust")), "{:?}", logs(&fx));
}

#[test]
fn commission_in_the_quote_asset_is_paid_from_the_quote_balance() {
    let (mut engine, mut fx, _) = bought_with(commission("USDT", "0.1", FeeAsset::Quote));
    let p = engine.position().clone();
    assert_eq!((p.qty, p.quote_balance, p.fees), (d("1"), d("9899.9"), d("0.1")));
    assert_eq!(fx.fills.last().unwrap().fee, d("0.1"));
    assert_position_matches_fills(&engine, &fx.fills);
    fx.clear();
    let close = engine.close_position(&mut fx).unwrap().unwrap();
    assert_eq!(close.qty, d("1"));
    assert!(logs(&fx).iter().all(|m| !m.contains("dust")), "nothing left over");
}

#[test]
fn commission_in_bnb_touches_neither_base_nor_quote_and_its_value_is_marked_estimated() {
    let (engine, fx, _) = bought_with(commission("BNB", "0.00018", FeeAsset::Other));
    let p = engine.position().clone();
    assert_eq!((p.qty, p.quote_balance), (d("1"), d("9900")));
    let fill = fx.fills.last().unwrap();
    // 10 bps of 100: the bot's rate, since Keel has no BNB price.
    assert_eq!(fill.fee, d("0.1"));
    assert_eq!(p.fees, d("0.1"));
    let c = fill.commission.clone().unwrap();
    assert_eq!((c.asset.as_str(), c.amount), ("BNB", d("0.00018")));
    assert!(c.quote_value_estimated);
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn a_strategy_sell_is_cut_to_what_the_account_holds() {
    let (mut engine, mut fx, queue) = bought_with(commission("BTC", "0.001", FeeAsset::Base));
    assert_eq!(engine.position().qty, d("0.999"));
    fx.clear();
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Sell, d("1"))));
    engine.on_market(&quote("99.99", "100.00", 3), &mut fx);
    let sent = match fx.outbound.as_slice() {
        [Outbound::Place(o)] => o.clone(),
        other => panic!("expected one sell, got {other:?}"),
    };
    assert_eq!((sent.side, sent.qty), (Side::Sell, d("0.999")));
    assert!(logs(&fx).iter().any(|m| m.contains("cut to 0.999")), "{:?}", logs(&fx));

    // The owner's own orders are not changed: too much is refused with the reason.
    fx.clear();
    let refused = engine.place_manual(OrderRequest::market(Side::Sell, d("1")), &mut fx);
    assert_eq!(refused.unwrap_err().code, "NO_SHORTING");
}

#[test]
fn a_full_trade_list_adds_only_the_trades_not_yet_counted_each_with_its_commission() {
    let (mut engine, _) = engine_for(RiskLimits::default(), None, true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let order =
        engine.place_manual(OrderRequest::limit(Side::Buy, d("2"), d("99.00")), &mut fx).unwrap();
    let trade = |qty: &str, fee: &str| VenueFillReport {
        price: d("99"),
        qty: d(qty),
        commission: Some(commission("BTC", fee, FeeAsset::Base)),
    };
    let report = |status: &str, executed: &str, quote: &str, fills| ExecReport {
        order_id: order.id,
        outcome: ExecOutcome::Venue {
            status: status.into(),
            executed_qty: d(executed),
            cum_quote: d(quote),
            fills,
            ts: 5,
        },
    };
    // A stream report of the first trade, then the order's whole trade list.
    engine
        .on_exec(report("PARTIALLY_FILLED", "0.5", "49.5", vec![trade("0.5", "0.0005")]), &mut fx);
    engine.on_exec(
        report("FILLED", "2", "198", vec![trade("0.5", "0.0005"), trade("1.5", "0.0015")]),
        &mut fx,
    );
    // The same list again adds nothing.
    engine.on_exec(
        report("FILLED", "2", "198", vec![trade("0.5", "0.0005"), trade("1.5", "0.0015")]),
        &mut fx,
    );
    let qtys: Vec<Decimal> = fx.fills.iter().map(|f| f.qty).collect();
    assert_eq!(qtys, vec![d("0.5"), d("1.5")]);
    assert_eq!(engine.position().qty, d("1.998"));
    assert_position_matches_fills(&engine, &fx.fills);
}

#[test]
fn a_fill_reported_without_its_commission_is_estimated_and_said() {
    let (mut engine, _) = engine_for(RiskLimits::default(), None, true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let order = engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    engine.on_exec(venue_report(order.id, "FILLED", "1", "100"), &mut fx);
    let fill = fx.fills.last().unwrap();
    assert_eq!((fill.fee, fill.commission.clone()), (d("0.1"), None));
    assert!(logs(&fx).iter().any(|m| m.contains("without its commission")));
}

#[test]
fn commission_assets_are_classified_against_the_symbol() {
    assert_eq!(Commission::classify("BTCUSDT", "USDT"), FeeAsset::Quote);
    assert_eq!(Commission::classify("BTCUSDT", "BTC"), FeeAsset::Base);
    assert_eq!(Commission::classify("BTCUSDT", "BNB"), FeeAsset::Other);
    assert_eq!(Commission::classify("BNBUSDT", "BNB"), FeeAsset::Base);
    assert_eq!(Commission::classify("BTCUSDT", ""), FeeAsset::Other);
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

/// A live engine on a venue with native brackets that bought 1 at 100: returns it with the
/// order list its bracket asked for (take-profit, stop-loss), and the effects of the fill.
fn native_bracketed() -> (BotEngine, Order, Order, Effects) {
    let bracket = Bracket { take_profit_pct: d("2"), stop_loss_pct: d("1") };
    let (mut engine, _) = engine_for(RiskLimits::default(), Some(bracket), true);
    engine.set_native_brackets(true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    let entry = engine.place_manual(OrderRequest::market(Side::Buy, d("1")), &mut fx).unwrap();
    fx.clear();
    engine.on_exec(venue_report(entry.id, "FILLED", "1", "100"), &mut fx);
    let (tp, sl) = match fx.outbound.as_slice() {
        [Outbound::PlaceList { take_profit, stop_loss }] => {
            (take_profit.as_ref().clone(), stop_loss.as_ref().clone())
        }
        other => panic!("expected one order list, got {other:?}"),
    };
    (engine, tp, sl, fx)
}

/// On a venue with native brackets, both legs go out as one order list that the venue holds:
/// nothing is armed here, a crossing price sends nothing, and when the venue reports one leg
/// filled and the other expired, the position settles and the partner ends.
#[test]
fn a_native_bracket_goes_to_the_venue_as_one_order_list_and_nothing_is_armed_here() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    let list = list_client_order_id(7, tp.id);
    assert_eq!(list, format!("keel-7-{:06}-oco", tp.id));
    assert!(list.len() <= 36);
    for leg in [&tp, &sl] {
        assert_eq!(leg.venue_list.as_deref(), Some(list.as_str()));
        assert_eq!(leg.status, OrderStatus::New);
        assert_eq!(leg.qty, d("1"));
    }
    assert_eq!((tp.oco_with, sl.oco_with), (Some(sl.id), Some(tp.id)));
    assert_eq!(tp.order_type, OrderType::limit(d("102")));
    assert_eq!(sl.order_type, OrderType::Stop { stop_price: d("99") });

    fx.clear();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    engine.on_exec(venue_report(sl.id, "NEW", "0", "0"), &mut fx);
    let armed = engine.open_orders().iter().filter(|o| is_armed_stop(o)).count();
    assert_eq!(armed, 0, "the venue holds the stop");
    engine.on_market(&trade("98.00", 3), &mut fx);
    assert!(fx.outbound.is_empty(), "the venue triggers the stop, not Keel: {:?}", fx.outbound);

    // The venue reports the stop filled and the take-profit expired by the list.
    engine.on_exec(venue_report(sl.id, "FILLED", "1", "99"), &mut fx);
    assert!(engine.position().qty.is_zero());
    assert_eq!(fx.outbound, vec![Outbound::Cancel(engine.open_orders()[0].clone())]);
    engine.on_exec(venue_report(tp.id, "EXPIRED", "0", "0"), &mut fx);
    assert!(engine.open_orders().is_empty());
    assert_eq!(fx.orders.last().unwrap().status, OrderStatus::Canceled);
}

#[test]
fn paper_engines_never_place_native_brackets() {
    let bracket = Bracket { take_profit_pct: d("2"), stop_loss_pct: d("1") };
    let (mut engine, queue) = engine(RiskLimits::default(), Some(bracket));
    engine.set_native_brackets(true);
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", 1), &mut fx);
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Buy, d("1"))));
    engine.on_market(&quote("99.99", "100.00", 2), &mut fx);
    assert!(fx.outbound.is_empty());
    assert!(engine.open_orders().iter().all(|o| o.venue_list.is_none()));
    assert_eq!(engine.open_orders().len(), 2);
}

/// A list the venue refuses leaves the position unprotected: the same exits are placed again
/// as an emulated bracket (the take-profit at the venue, the stop armed here), and the journal
/// says the stop now only works while Keel runs.
#[test]
fn a_refused_native_list_falls_back_to_an_emulated_bracket() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    let (tp, sl) = (tp.id, sl.id);
    fx.clear();
    let refused = |id| ExecReport {
        order_id: id,
        outcome: ExecOutcome::Rejected("-2010 price relationship".into()),
    };
    engine.on_exec(refused(tp), &mut fx);
    assert!(fx.outbound.is_empty(), "waits for the other leg's answer");
    engine.on_exec(refused(sl), &mut fx);
    let placed: Vec<&Order> = fx
        .outbound
        .iter()
        .map(|o| match o {
            Outbound::Place(o) => o,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(placed.len(), 1, "only the take-profit goes to the venue: {placed:?}");
    assert_eq!(placed[0].order_type, OrderType::limit(d("102")));
    assert!(placed[0].venue_list.is_none());
    let armed: Vec<&Order> = engine.open_orders().iter().filter(|o| is_armed_stop(o)).collect();
    assert_eq!(armed.len(), 1);
    assert_eq!(armed[0].order_type, OrderType::Stop { stop_price: d("99") });
    assert_eq!(armed[0].oco_with, Some(placed[0].id));
    let warned = fx.events.iter().any(|e| {
        matches!(&e.kind, BotEventKind::Log { message, .. } if message.contains("emulated instead"))
    });
    assert!(warned);
}
