use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use rust_decimal::Decimal;

use super::{Seen, Verdict, valid_name};

fn trade(id: u64) -> MarketEvent {
    MarketEvent {
        venue: VenueId::Binance,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts: 1,
        received_us: 1,
        kind: EventKind::Trade {
            price: Decimal::ONE,
            qty: Decimal::ONE,
            side: Side::Buy,
            trade_id: id,
        },
    }
}

#[test]
fn consecutive_events_are_delivered_and_a_hole_is_a_gap() {
    let mut seen = Seen::default();
    assert_eq!(seen.check(7, 1, &trade(100)), Verdict::Deliver);
    assert_eq!(seen.check(7, 2, &trade(101)), Verdict::Deliver);
    assert_eq!(seen.check(7, 5, &trade(104)), Verdict::AfterGap("2 relayed events missed".into()));
    assert_eq!(seen.check(7, 6, &trade(105)), Verdict::Deliver);
}

#[test]
fn a_trade_seen_before_is_dropped_even_from_a_new_holder() {
    let mut seen = Seen::default();
    assert_eq!(seen.check(7, 1, &trade(100)), Verdict::Deliver);
    assert_eq!(seen.check(7, 1, &trade(100)), Verdict::Duplicate);
    // The next holder relays the same trade again around the handover.
    assert_eq!(seen.check(9, 1, &trade(100)), Verdict::Duplicate);
    assert_eq!(seen.check(9, 2, &trade(101)), Verdict::Deliver);
}

#[test]
fn a_new_holder_is_reported_as_a_gap() {
    let mut seen = Seen::default();
    assert_eq!(seen.check(7, 1, &trade(100)), Verdict::Deliver);
    let verdict = seen.check(12, 1, &trade(103));
    assert!(matches!(verdict, Verdict::AfterGap(_)), "{verdict:?}");
}

#[test]
fn names_must_fit_a_subject_token_a_stream_and_a_bucket() {
    assert!(valid_name("keel-prod_1"));
    for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
        assert!(!valid_name(bad), "{bad:?}");
    }
}
