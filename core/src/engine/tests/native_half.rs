//! Half a native bracket: one leg of a list ended with nothing executed while its partner rests
//! at the venue and the position still holds. At the next market event (every answer of the
//! batch in) the missing leg is placed again the emulated way and linked to the one still
//! working, so the position never stays without its stop.

use super::live::native_bracketed;
use super::*;

fn unknown(order_id: u64) -> ExecReport {
    ExecReport { order_id, outcome: ExecOutcome::Unknown("connection reset".into()) }
}

fn warned(fx: &Effects, words: &str) -> bool {
    fx.events.iter().any(|e| {
        matches!(&e.kind, BotEventKind::Log { level, message } if level == "warn" && message.contains(words))
    })
}

/// The next market event, which is when a half list is looked at (every answer of the batch
/// applied by then); its price crosses no stop.
fn tick(engine: &mut BotEngine, fx: &mut Effects) {
    engine.on_market(&quote("99.99", "100.00", 4), fx);
}

fn armed(engine: &BotEngine) -> Vec<Order> {
    engine.open_orders().iter().filter(|o| is_armed_stop(o)).cloned().collect()
}

/// Issue 22: the list's answer is lost, and its look-up finds the take-profit resting and the
/// stop-loss never received (reported expired). The stop is armed here, linked to the
/// take-profit, and a stop that triggers closes the position and cancels the take-profit.
#[test]
fn a_stop_loss_never_received_beside_a_resting_take_profit_is_armed_here() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(unknown(tp.id), &mut fx);
    engine.on_exec(unknown(sl.id), &mut fx);
    fx.clear();
    // One look-up of the list answers for both legs, the take-profit's first.
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    engine.on_exec(venue_report(sl.id, "EXPIRED", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    assert!(fx.outbound.is_empty(), "a stop is armed, nothing is sent: {:?}", fx.outbound);
    let stops = armed(&engine);
    assert_eq!(stops.len(), 1, "{:?}", engine.open_orders());
    let stop = &stops[0];
    assert_eq!(stop.order_type, sl.order_type);
    assert_eq!((stop.side, stop.qty, stop.origin), (Side::Sell, d("1"), OrderOrigin::StopLoss));
    assert_eq!(stop.venue_list, None);
    assert_eq!(stop.oco_with, Some(tp.id));
    let resting = engine.open_orders().iter().find(|o| o.id == tp.id).unwrap();
    assert_eq!(resting.oco_with, Some(stop.id));
    assert!(warned(&fx, "the stop is now held by Keel"));

    // The same answers again (the next poll) arm nothing more.
    fx.clear();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    assert_eq!(armed(&engine).len(), 1);
    assert!(fx.events.is_empty() && fx.outbound.is_empty(), "{fx:?}");

    // The price falls through the stop: Keel sends it, and its fill cancels the take-profit.
    engine.on_market(&trade("98.50", 5), &mut fx);
    let sent = match fx.outbound.as_slice() {
        [Outbound::Place(order)] => order.clone(),
        other => panic!("expected the stop sent, got {other:?}"),
    };
    assert_eq!(sent.id, stop.id);
    fx.clear();
    engine.on_exec(venue_report(stop.id, "FILLED", "1", "98.5"), &mut fx);
    assert!(engine.position().qty.is_zero());
    assert!(
        fx.outbound.iter().any(|o| matches!(o, Outbound::Cancel(o) if o.id == tp.id)),
        "{:?}",
        fx.outbound
    );
}

/// The look-up may answer for the stop-loss first while the take-profit is still unknown: the
/// stop is armed once the take-profit is confirmed in the same batch of answers.
#[test]
fn the_stop_is_armed_whichever_legs_answer_comes_first() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(unknown(tp.id), &mut fx);
    engine.on_exec(unknown(sl.id), &mut fx);
    engine.on_exec(venue_report(sl.id, "EXPIRED", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    assert!(armed(&engine).is_empty(), "the take-profit's outcome is still unknown");
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    let stops = armed(&engine);
    assert_eq!(stops.len(), 1, "{:?}", engine.open_orders());
    assert_eq!((stops[0].order_type, stops[0].oco_with), (sl.order_type, Some(tp.id)));
}

/// A take-profit refused while its stop-loss rests at the venue: the position has its stop,
/// and the take-profit goes out again as a plain limit linked to it.
#[test]
fn a_take_profit_missing_beside_a_resting_stop_loss_is_placed_again_as_a_plain_limit() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(venue_report(sl.id, "NEW", "0", "0"), &mut fx);
    fx.clear();
    engine.on_exec(venue_report(tp.id, "REJECTED", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    let placed = match fx.outbound.as_slice() {
        [Outbound::Place(order)] => order.clone(),
        other => panic!("expected the take-profit placed again, got {other:?}"),
    };
    assert_eq!((placed.order_type, placed.qty), (tp.order_type, d("1")));
    assert_eq!(placed.venue_list, None);
    let linked = engine.open_orders().iter().find(|o| o.id == placed.id).unwrap();
    assert_eq!(linked.oco_with, Some(sl.id));
    assert!(armed(&engine).is_empty(), "the venue still holds the stop");
    assert!(warned(&fx, "placed again as a plain limit"));
}

/// Nothing is placed again when Keel asked for the leg's cancel, when the position is already
/// flat, or while the partner's own answer is still to come (a list refused whole is
/// `native_list_refused`'s).
#[test]
fn a_leg_keel_canceled_or_a_flat_position_or_an_unanswered_partner_places_nothing() {
    // Keel canceled the stop-loss itself (an owner's cancel); the take-profit still rests.
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    engine.on_exec(venue_report(sl.id, "NEW", "0", "0"), &mut fx);
    engine.cancel(sl.id, "owner", &mut fx).unwrap();
    fx.clear();
    engine.on_exec(venue_report(sl.id, "CANCELED", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    assert!(armed(&engine).is_empty() && fx.outbound.is_empty(), "{:?}", fx.outbound);

    // The position is gone (closed elsewhere): nothing to protect.
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    engine.state.position.qty = Decimal::ZERO;
    fx.clear();
    engine.on_exec(venue_report(sl.id, "EXPIRED", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    assert!(armed(&engine).is_empty());
    assert!(!fx.outbound.iter().any(|o| matches!(o, Outbound::Place(_))), "{:?}", fx.outbound);

    // The list's place is still unanswered for the take-profit.
    let (mut engine, _, sl, mut fx) = native_bracketed();
    fx.clear();
    engine.on_exec(venue_report(sl.id, "REJECTED", "0", "0"), &mut fx);
    tick(&mut engine, &mut fx);
    assert!(armed(&engine).is_empty() && fx.outbound.is_empty(), "{:?}", fx.outbound);
}

/// A look-up after a restart finds the take-profit expired by the venue because the stop-loss
/// filled, the take-profit's answer first: once the batch is in, nothing is missing.
#[test]
fn a_leg_expired_because_its_partner_filled_in_the_same_batch_is_not_placed_again() {
    let (mut engine, tp, sl, mut fx) = native_bracketed();
    engine.on_exec(venue_report(tp.id, "NEW", "0", "0"), &mut fx);
    engine.on_exec(venue_report(sl.id, "NEW", "0", "0"), &mut fx);
    fx.clear();
    engine.on_exec(venue_report(tp.id, "EXPIRED", "0", "0"), &mut fx);
    engine.on_exec(venue_report(sl.id, "FILLED", "1", "99"), &mut fx);
    tick(&mut engine, &mut fx);
    assert!(engine.position().qty.is_zero());
    assert!(engine.open_orders().is_empty(), "{:?}", engine.open_orders());
    assert!(!fx.outbound.iter().any(|o| matches!(o, Outbound::Place(_))), "{:?}", fx.outbound);
}
