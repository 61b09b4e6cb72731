//! Paper futures: margin instead of notional, funding at funding times (a long pays a positive
//! rate), and liquidation at the liquidation price with the open orders canceled and the
//! strategy paused.

use super::*;
use crate::bot::MarginType;
use crate::trading::margin::FuturesConfig;

const HOUR: u64 = 3_600_000;
/// 2023-11-15T00:00:00Z, a funding time.
const DAY: u64 = 1_700_006_400_000;

fn futures_engine(
    margin_type: MarginType,
    leverage: u32,
    starting: &str,
) -> (BotEngine, Arc<std::sync::Mutex<Vec<Intent>>>) {
    let strategy = Scripted::default();
    let queue = strategy.queue.clone();
    let mut futures = FuturesConfig::new(leverage, margin_type);
    futures.funding_rate = Some(d("0.0001"));
    let config = EngineConfig {
        bot_id: 7,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: d("0"), slippage_bps: d("0") },
        allow_short: true,
        futures: Some(futures),
        live: false,
    };
    let state = BotState {
        position: Position { quote_balance: d(starting), ..Position::default() },
        ..BotState::default()
    };
    (BotEngine::new(config, state, Box::new(strategy), Vec::new()), queue)
}

fn place(
    engine: &mut BotEngine,
    side: Side,
    qty: &str,
    fx: &mut Effects,
) -> Result<Order, RiskRejection> {
    engine.place_manual(OrderRequest::market(side, d(qty)), fx)
}

#[test]
fn ten_times_leverage_opens_ten_times_the_balance_either_way() {
    let (mut engine, _) = futures_engine(MarginType::Isolated, 10, "100");
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.00", DAY + 1), &mut fx);
    let refused = place(&mut engine, Side::Buy, "10.01", &mut fx).unwrap_err();
    assert_eq!(refused.code, "INSUFFICIENT_MARGIN");
    place(&mut engine, Side::Sell, "5", &mut fx).unwrap();
    assert_eq!(engine.position().qty, d("-5"));
    // 49.995 of margin held (and 0.025 of unrealised loss at the mid): the rest opens about
    // 5 more.
    assert_eq!(engine.position_margin(), Some(d("49.995")));
    assert_eq!(
        place(&mut engine, Side::Sell, "5", &mut fx).unwrap_err().code,
        "INSUFFICIENT_MARGIN"
    );
    place(&mut engine, Side::Sell, "4.99", &mut fx).unwrap();
    assert_eq!(engine.position().qty, d("-9.99"));
}

#[test]
fn funding_is_paid_by_a_long_at_each_funding_time_and_counted_in_pnl() {
    let (mut engine, _) = futures_engine(MarginType::Isolated, 5, "1000");
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.01", DAY + HOUR), &mut fx);
    place(&mut engine, Side::Buy, "2", &mut fx).unwrap();
    let balance = engine.position().quote_balance;
    fx.clear();
    // Before 08:00 nothing is due.
    engine.on_market(&quote("99.99", "100.01", DAY + 8 * HOUR - 1), &mut fx);
    assert!(fx.events.iter().all(|e| !matches!(e.kind, BotEventKind::Funding { .. })));
    // At 08:00 the long pays 2 × 100 (the mark, mid of the quote) × 0.0001 = 0.02.
    engine.on_market(&quote("99.99", "100.01", DAY + 8 * HOUR), &mut fx);
    let paid: Vec<_> = fx
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            BotEventKind::Funding { amount, asset, rate, .. } => {
                Some((e.ts, *amount, asset.clone(), *rate))
            }
            _ => None,
        })
        .collect();
    assert_eq!(paid, [(DAY + 8 * HOUR, d("-0.02"), "USDT".to_owned(), Some(d("0.0001")))]);
    assert_eq!(engine.position().funding, d("-0.02"));
    assert_eq!(engine.position().quote_balance, balance - d("0.02"));
    // Once per funding time, however many events follow.
    fx.clear();
    engine.on_market(&quote("99.99", "100.01", DAY + 9 * HOUR), &mut fx);
    assert!(fx.events.iter().all(|e| !matches!(e.kind, BotEventKind::Funding { .. })));
}

#[test]
fn a_short_receives_the_rate_the_venue_publishes_at_its_funding_time() {
    let (mut engine, _) = futures_engine(MarginType::Isolated, 5, "1000");
    let mut fx = Effects::default();
    engine.on_market(&quote("99.99", "100.01", DAY + HOUR), &mut fx);
    place(&mut engine, Side::Sell, "1", &mut fx).unwrap();
    // The venue's feed: mark 100, rate 0.0003, next funding at 04:00 (a 4-hour market).
    let mark = MarketEvent {
        kind: EventKind::MarkPrice {
            mark_price: d("100"),
            funding_rate: Some(d("0.0003")),
            next_funding_ms: Some(DAY + 4 * HOUR),
        },
        ..quote("99.99", "100.01", DAY + 2 * HOUR)
    };
    let mut engine_fixed = engine;
    engine_fixed.config.futures.as_mut().unwrap().funding_rate = None;
    engine_fixed.on_market(&mark, &mut fx);
    fx.clear();
    engine_fixed.on_market(&quote("99.99", "100.01", DAY + 4 * HOUR), &mut fx);
    assert_eq!(engine_fixed.position().funding, d("0.03"), "{:#?}", fx.events);
}

#[test]
fn an_isolated_long_is_liquidated_at_its_price_loses_its_margin_and_pauses() {
    let (mut engine, queue) = futures_engine(MarginType::Isolated, 10, "1100");
    let mut fx = Effects::default();
    engine.on_market(&quote("9999.99", "10000.00", DAY + 1), &mut fx);
    place(&mut engine, Side::Buy, "1", &mut fx).unwrap();
    // A resting take-profit that the liquidation cancels.
    engine.place_manual(OrderRequest::limit(Side::Sell, d("0.5"), d("11000")), &mut fx).unwrap();
    // Binance's formula: (1000 − 10000) / (0.004 − 1) = 9036.1445…
    let lp = engine.liquidation_price().unwrap();
    assert_eq!(lp.round_dp(4), d("9036.1446"));
    fx.clear();
    engine.on_market(&trade("9100.00", DAY + 2), &mut fx);
    assert_eq!(engine.position().qty, d("1"), "not yet");
    queue.lock().unwrap().push(Intent::Place(OrderRequest::market(Side::Buy, d("0.001"))));
    engine.on_market(&trade("9030.00", DAY + 3), &mut fx);
    assert!(engine.position().qty.is_zero());
    assert!(engine.open_orders().is_empty());
    let canceled = fx.orders.iter().find(|o| o.status == OrderStatus::Canceled).unwrap();
    assert_eq!(canceled.reason.as_deref(), Some("liquidated"));
    let line = fx.events.iter().find_map(|e| match &e.kind {
        BotEventKind::Liquidated { price, clearance_fee, .. } => Some((*price, *clearance_fee)),
        _ => None,
    });
    // Closed on the tick below the liquidation price; the maintenance margin left is taken.
    let (price, clearance) = line.expect("a liquidated line");
    assert_eq!(price, d("9036.14"));
    assert_eq!(clearance, d("36.14"));
    // The whole margin (1,000) is lost, no more: the wallet went from 1,100 to 100.
    let p = engine.position();
    assert_eq!(p.realized_pnl - p.fees, d("-1000"));
    assert_eq!(p.quote_balance, d("100"));
    assert!(fx.paused.as_deref().unwrap().starts_with("liquidated"));
    // The strategy was not called after the liquidation: its buy is still queued.
    assert_eq!(queue.lock().unwrap().len(), 1);
    assert!(fx.fills.iter().all(|f| f.price == d("9036.14") || f.price == d("10000.00")));
}

#[test]
fn a_cross_short_is_liquidated_when_the_mark_rises_to_its_price() {
    let (mut engine, _) = futures_engine(MarginType::Cross, 10, "500");
    let mut fx = Effects::default();
    engine.on_market(&quote("100.00", "100.01", DAY + 1), &mut fx);
    place(&mut engine, Side::Sell, "20", &mut fx).unwrap();
    // The whole 500 backs the short of 2,000: (500 + 2000) / (0.08 + 20) = 124.5019…
    let lp = engine.liquidation_price().unwrap();
    assert_eq!(lp.round_dp(4), d("124.5020"));
    engine.on_market(&quote("124.00", "124.01", DAY + 2), &mut fx);
    assert_eq!(engine.position().qty, d("-20"));
    // The published mark crosses it even though the quote did not move.
    let mark = MarketEvent {
        kind: EventKind::MarkPrice {
            mark_price: d("124.6"),
            funding_rate: None,
            next_funding_ms: None,
        },
        ..quote("124.00", "124.01", DAY + 3)
    };
    engine.on_market(&mark, &mut fx);
    assert!(engine.position().qty.is_zero());
    let close = fx.fills.last().unwrap();
    assert_eq!((close.side, close.price), (Side::Buy, d("124.51")));
    // Cross: the loss at the liquidation price plus what is left of the maintenance margin
    // (0.4 % of 2,490.2 is 9.96; the wallet has 9.80 left): the whole wallet, never more.
    let p = engine.position();
    assert_eq!(p.realized_pnl, d("-490.2"));
    assert_eq!(p.fees, d("9.80"));
    assert_eq!(crate::trading::margin::wallet_balance(p), d("0"));
}
