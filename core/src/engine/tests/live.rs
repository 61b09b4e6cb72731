//! A live engine: orders wait for the venue, fills come from its cumulative totals, unknown
//! outcomes wait for a query, stops are armed here, and native brackets go out as one order list.

use super::*;

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

/// A live engine on a venue with native brackets that bought 1 at 100: returns it with the
/// order list its bracket asked for (take-profit, stop-loss), and the effects of the fill.
pub(super) fn native_bracketed() -> (BotEngine, Order, Order, Effects) {
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

/// On a venue that does not link the legs, the partner's cancel may be lost (Keel stopped as
/// the stop filled): a leg the venue still reports open while the position is flat is canceled.
#[test]
fn a_native_leg_still_open_once_the_position_is_flat_is_canceled() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    engine.on_exec(venue_report(sl.id, "NEW", "0", "0"), &mut fx);
    fx.clear();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    assert!(fx.outbound.is_empty(), "the position is held: {:?}", fx.outbound);
    engine.on_exec(venue_report(sl.id, "FILLED", "1", "99"), &mut fx);
    assert!(engine.position().qty.is_zero());
    // The cancel went nowhere (a restart forgets it): the next report of the leg asks again.
    engine.cancel_failed(tp.id);
    fx.clear();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    assert_eq!(fx.outbound, vec![Outbound::Cancel(engine.open_orders()[0].clone())]);
    fx.clear();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    assert!(fx.outbound.is_empty(), "one cancel in flight at a time");
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
