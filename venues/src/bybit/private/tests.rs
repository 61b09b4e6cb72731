//! The private stream's parser and requests against Bybit's documented samples.

use super::*;
use crate::bybit::SPOT;
use crate::bybit_linear::LINEAR;

const FIXTURES: &str = include_str!("../../../../testkit/fixtures/bybit/ws_private.jsonl");

fn fixture(name: &str) -> String {
    FIXTURES
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["name"] == name)
        .map(|v| v["frame"].to_string())
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

fn events(parser: &mut PrivateParser, name: &str) -> Vec<AccountEvent> {
    match parser.parse(&fixture(name)).unwrap() {
        Frame::Events(events) => events,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn answers_are_read_and_a_refused_auth_says_why() {
    let mut parser = PrivateParser::new(&LINEAR);
    assert_eq!(
        parser.parse(&fixture("auth_ok")).unwrap(),
        Frame::Op { op: "auth".into(), success: true, msg: String::new() }
    );
    let Frame::Op { success, msg, .. } = parser.parse(&fixture("auth_refused")).unwrap() else {
        panic!("not an answer");
    };
    assert!(!success);
    assert!(!msg.is_empty());
    assert!(matches!(parser.parse(&fixture("pong")).unwrap(), Frame::Op { success: true, .. }));
    assert!(parser.parse("not json").is_err());
    assert!(parser.parse(r#"{"topic":"order","data":[{"category":"linear"}]}"#).is_err());
}

#[test]
fn the_auth_signs_get_realtime_and_expires() {
    assert_eq!(auth_payload(1_662_350_400_000), "GET/realtime1662350400000");
    let request: serde_json::Value =
        serde_json::from_str(&auth_request("r1", "KEY", 1_662_350_400_000, "abc")).unwrap();
    assert_eq!(request["op"], "auth");
    assert_eq!(request["args"], serde_json::json!(["KEY", 1_662_350_400_000u64, "abc"]));
    let subscribe: serde_json::Value = serde_json::from_str(&subscribe_request("r2")).unwrap();
    assert_eq!(subscribe["args"], serde_json::json!(TOPICS));
}

#[test]
fn an_execution_carries_its_fill_fee_and_trade_id_and_the_order_update_adds_nothing() {
    let mut parser = PrivateParser::new(&LINEAR);
    // The order's "Filled" before its execution: held back, the execution tells it.
    assert!(events(&mut parser, "order_linear_filled").is_empty());
    let [AccountEvent::Order(update)] = &events(&mut parser, "execution_linear")[..] else {
        panic!("not one order update");
    };
    assert_eq!(update.report.client_order_id, "keel-7-000003");
    assert_eq!(update.report.status, "FILLED");
    assert_eq!(update.report.executed_qty, "0.01".parse::<Decimal>().unwrap());
    let fill = &update.report.fills[0];
    assert_eq!(fill.fee, "0.1728".parse::<Decimal>().unwrap());
    assert_eq!(fill.fee_asset, "USDT");
    assert_eq!(update.trade_id, Some(trade_id("7e2ae69c-4edf-5800-a352-893d52b446aa")));
    // The same order's "Filled" after it: the figures agree, nothing new.
    let [AccountEvent::Order(after)] = &events(&mut parser, "order_linear_filled")[..] else {
        panic!("not one order update");
    };
    assert!(after.report.fills.is_empty());
    assert_eq!(after.report.executed_qty, update.report.executed_qty);
}

#[test]
fn a_spot_execution_is_charged_in_its_fee_coin_and_other_categories_are_skipped() {
    let mut spot = PrivateParser::new(&SPOT);
    let [AccountEvent::Order(update)] = &events(&mut spot, "execution_spot")[..] else {
        panic!("not one order update");
    };
    assert_eq!(update.report.fills[0].fee_asset, "BTC");
    assert_eq!(update.report.status, "PARTIALLY_FILLED");
    assert!(events(&mut spot, "execution_linear").is_empty());
    assert!(events(&mut spot, "position_linear").is_empty());
    assert_eq!(spot_fee_coin("BTCUSDT", "Buy"), "BTC");
    assert_eq!(spot_fee_coin("BTCUSDT", "Sell"), "USDT");
}

#[test]
fn positions_funding_and_wallet_are_read() {
    let mut parser = PrivateParser::new(&LINEAR);
    let [AccountEvent::Position(position)] = &events(&mut parser, "position_linear")[..] else {
        panic!("not one position");
    };
    assert_eq!(position.symbol, "BTCUSDT");
    assert_eq!(position.qty, "-0.01".parse::<Decimal>().unwrap());
    assert_eq!(position.leverage, Some(10));
    assert!(position.liquidation_price.is_some());
    let [AccountEvent::Funding(payment)] = &events(&mut parser, "execution_funding")[..] else {
        panic!("not one funding payment");
    };
    // execFee 0.0023 paid: the payment is -0.0023.
    assert_eq!(payment.amount, "-0.0023".parse::<Decimal>().unwrap());
    assert_eq!(payment.asset, "USDT");
    let [AccountEvent::Balances(balances)] = &events(&mut parser, "wallet")[..] else {
        panic!("not balances");
    };
    let usdt = balances.iter().find(|b| b.asset == "USDT").unwrap();
    assert_eq!(usdt.locked, "127.86".parse::<Decimal>().unwrap());
    assert_eq!(coin_amounts("100", "10", "5", "20"), (Decimal::from(65), Decimal::from(35)));
    assert_eq!(coin_amounts("100", "", "", ""), (Decimal::from(100), Decimal::ZERO));
}

#[test]
fn a_cancel_after_fills_seen_elsewhere_is_sent_as_it_is() {
    let mut parser = PrivateParser::new(&LINEAR);
    let [AccountEvent::Order(update)] = &events(&mut parser, "order_linear_cancelled")[..] else {
        panic!("not one order update");
    };
    assert_eq!(update.report.status, "CANCELED");
    assert_eq!(update.report.executed_qty, "0.004".parse::<Decimal>().unwrap());
}

#[test]
fn trade_ids_are_stable_and_distinct() {
    assert_eq!(trade_id("a"), trade_id("a"));
    assert_ne!(trade_id("a"), trade_id("b"));
}

#[test]
fn a_conditional_stops_life_is_its_legs_order_updates_then_its_fill() {
    let mut parser = PrivateParser::new(&LINEAR);
    let status = |events: &[AccountEvent]| match events {
        [AccountEvent::Order(update)] => {
            (update.report.client_order_id.clone(), update.report.status.clone())
        }
        other => panic!("not one order update: {other:?}"),
    };
    // Resting, then fired: both still an open order for the stop-loss leg.
    let stop = "keel-7-000006".to_owned();
    let untriggered = events(&mut parser, "order_linear_stop_untriggered");
    assert_eq!(status(&untriggered), (stop.clone(), "NEW".to_owned()));
    let triggered = events(&mut parser, "order_linear_stop_triggered");
    assert_eq!(status(&triggered), (stop.clone(), "NEW".to_owned()));
    // The market order it became fills: the execution carries the fill and its fee.
    let [AccountEvent::Order(fill)] = &events(&mut parser, "execution_linear_stop")[..] else {
        panic!("not one order update");
    };
    assert_eq!(
        (fill.report.client_order_id.as_str(), fill.report.status.as_str()),
        ("keel-7-000006", "FILLED")
    );
    assert_eq!(fill.report.fills[0].price, "16490".parse::<Decimal>().unwrap());
    assert_eq!(fill.report.fills[0].fee, "0.090695".parse::<Decimal>().unwrap());
    let after = events(&mut parser, "order_linear_stop_filled");
    assert_eq!(status(&after), (stop, "FILLED".to_owned()));
    // The take-profit leg cancelled before it fired is Deactivated: ended, nothing filled.
    let [AccountEvent::Order(tp)] = &events(&mut parser, "order_linear_tp_deactivated")[..] else {
        panic!("not one order update");
    };
    assert_eq!(
        (tp.report.client_order_id.as_str(), tp.report.status.as_str()),
        ("keel-7-000005", "EXPIRED")
    );
    assert!(tp.report.executed_qty.is_zero());
}
