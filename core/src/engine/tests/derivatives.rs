//! Funding booked once by id (also from a restored state), and the venue's quantity adopted.

use super::*;

fn funding_lines(fx: &Effects) -> Vec<(Decimal, Option<String>)> {
    fx.events
        .iter()
        .filter_map(|e| match &e.kind {
            BotEventKind::Funding { amount, id, .. } => Some((*amount, id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_venue_funding_payment_is_booked_once_into_the_pnl_even_after_a_restart() {
    let (mut engine, _) = engine_for(RiskLimits::default(), None, true);
    engine.start_funding_clock(1_000);
    let mut fx = Effects::default();
    assert!(engine.apply_venue_funding("t1", d("-1.5"), "USDT", 2_000, &mut fx));
    assert!(!engine.apply_venue_funding("t1", d("-1.5"), "USDT", 2_000, &mut fx));
    assert_eq!(funding_lines(&fx), [(d("-1.5"), Some("t1".into()))]);
    assert!(
        matches!(fx.events.last().map(|e| &e.kind), Some(BotEventKind::Position(p)) if p.funding == d("-1.5"))
    );
    assert_eq!(engine.position().funding, d("-1.5"));
    assert_eq!(engine.position().realized_pnl, d("0"), "funding is not trading profit");
    assert_eq!(engine.position().quote_balance, d("9998.5"));
    assert_eq!(engine.funding_ledger().since_ms, 2_000);
    assert_eq!(engine.funding_ledger().total, d("-1.5"));

    // The ledger is part of the durable state, and older states without one read as empty.
    let json = serde_json::to_value(engine.snapshot()).unwrap();
    let state: BotState = serde_json::from_value(json.clone()).unwrap();
    let config = EngineConfig {
        bot_id: 7,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: d("10"), slippage_bps: d("0") },
        allow_short: true,
        live: true,
        futures: None,
    };
    let mut again = BotEngine::new(config, state, Box::new(Scripted::default()), Vec::new());
    let mut fx = Effects::default();
    assert!(!again.apply_venue_funding("t1", d("-1.5"), "USDT", 2_000, &mut fx));
    assert!(again.apply_venue_funding("t2", d("0.25"), "USDT", 3_000, &mut fx));
    assert_eq!(again.position().funding, d("-1.25"));
    let mut old = json;
    old.as_object_mut().unwrap().remove("funding");
    let old: BotState = serde_json::from_value(old).unwrap();
    assert_eq!(old.funding, FundingLedger::default());
}

#[test]
fn the_ledger_keeps_the_latest_ids_and_a_paper_payment_has_none() {
    let (mut engine, _) = engine(RiskLimits::default(), None);
    let mut fx = Effects::default();
    for n in 0..(FUNDING_IDS_KEPT as u64 + 5) {
        engine.apply_venue_funding(&format!("t{n}"), d("0.01"), "USDT", n, &mut fx);
    }
    let ledger = engine.funding_ledger();
    assert_eq!(ledger.ids.len(), FUNDING_IDS_KEPT);
    assert!(!ledger.has("t0") && ledger.has(&format!("t{}", FUNDING_IDS_KEPT + 4)));
    let mut fx = Effects::default();
    engine.apply_funding(d("-2"), "USDT", 9_000, &mut fx);
    assert_eq!(funding_lines(&fx), [(d("-2"), None)]);
    let line = serde_json::to_value(&fx.events[0]).unwrap();
    assert_eq!(line["kind"], "funding");
    assert_eq!(line["data"], serde_json::json!({"asset": "USDT", "amount": "-2"}));
}

#[test]
fn the_venues_quantity_is_adopted_with_a_warning_only_when_it_differs() {
    let (mut engine, _) = engine_for(RiskLimits::default(), None, true);
    let mut fx = Effects::default();
    assert!(!engine.adopt_venue_position(Decimal::ZERO, Decimal::ZERO, 5, &mut fx));
    assert!(fx.events.is_empty());
    assert!(engine.adopt_venue_position(d("-0.5"), d("100"), 5, &mut fx));
    assert_eq!((engine.position().qty, engine.position().avg_entry_price), (d("-0.5"), d("100")));
    assert!(matches!(&fx.events[0].kind, BotEventKind::Log { level, message }
        if level == "warn" && message.contains("-0.5 at 100")));
    let mut fx = Effects::default();
    assert!(engine.adopt_venue_position(Decimal::ZERO, d("100"), 6, &mut fx));
    assert_eq!((engine.position().qty, engine.position().avg_entry_price), (d("0"), d("0")));
}
