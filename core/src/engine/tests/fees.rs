//! Commission as the venue charges it: in the base received, the quote, or another asset (BNB);
//! a strategy's sell cut to what is held; trade lists counted once.

use super::*;

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
