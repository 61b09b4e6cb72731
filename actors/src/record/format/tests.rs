//! The recording format: round trips, torn tails, checksums, damaged input.

use super::*;
use keel_core::market::{Candle, Interval};

fn sym() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn events() -> Vec<MarketEvent> {
    let event = |ts: u64, kind| MarketEvent {
        venue: VenueId::Binance,
        symbol: sym(),
        exchange_ts: ts,
        received_us: ts * 1000 + 7,
        kind,
    };
    vec![
        event(
            1_700_000_000_000,
            EventKind::Trade {
                price: d("98000.12"),
                qty: d("0.00100"),
                side: Side::Buy,
                trade_id: 42,
            },
        ),
        event(
            1_700_000_000_001,
            EventKind::Quote {
                bid: d("98000.11"),
                bid_qty: d("1.5"),
                ask: d("98000.12"),
                ask_qty: d("0.000000000000000000000000001"),
            },
        ),
        event(
            1_700_000_000_002,
            EventKind::Trade {
                price: d("-3.5"),
                qty: d("79228162514264337593543950335"),
                side: Side::Sell,
                trade_id: u64::MAX,
            },
        ),
        event(
            1_700_000_000_003,
            EventKind::Candle(Candle {
                interval: Interval::M1,
                open_time: 1_700_000_000_000,
                open: d("1"),
                high: d("2"),
                low: d("0.5"),
                close: d("1.5"),
                volume: d("10"),
                closed: false,
            }),
        ),
        event(0, EventKind::Gap { reason: "reconnect".into() }),
    ]
}

fn recording(events: &[MarketEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    write_recording(&mut out, VenueId::Binance, &sym(), events).unwrap();
    out
}

fn read_all(bytes: &[u8]) -> (Vec<Result<MarketEvent, RecordError>>, bool) {
    let mut reader = Reader::new(bytes).unwrap();
    let items: Vec<_> = reader.by_ref().collect();
    (items, reader.torn_tail())
}

#[test]
fn every_kind_of_event_round_trips_exactly_including_decimal_scale() {
    let events = events();
    let bytes = recording(&events);
    let (back, torn) = read_all(&bytes);
    let back: Vec<MarketEvent> = back.into_iter().map(Result::unwrap).collect();
    assert_eq!(back, events);
    assert!(!torn);
    let EventKind::Trade { qty, .. } = &back[0].kind else { panic!() };
    assert_eq!(qty.to_string(), "0.00100", "the scale survives");
    // Trades are compact: well under the ~150 bytes of their JSON.
    let mut one = Vec::new();
    encode_event(&events[0], &mut one);
    assert!(one.len() < 40, "{} bytes", one.len());
}

#[test]
fn a_torn_tail_is_detected_and_skipped_wherever_the_write_stopped() {
    let events = events();
    let bytes = recording(&events);
    let whole = bytes.len();
    let mut last_start = Vec::new();
    encode_event(&events[events.len() - 1], &mut last_start);
    let last_record = FRAME + last_start.len();
    // Cut anywhere inside the last record: frame or payload.
    for cut in 1..last_record {
        let (back, torn) = read_all(&bytes[..whole - cut]);
        assert!(torn, "cut {cut}");
        assert_eq!(back.len(), events.len() - 1, "cut {cut}");
        assert!(back.iter().all(Result::is_ok), "cut {cut}");
    }
}

#[test]
fn a_wrong_checksum_is_reported_and_reading_can_go_on_past_it() {
    let events = events();
    let mut bytes = recording(&events);
    // Flip a byte inside the first event's payload (after magic, header and its frame).
    let first = Reader::new(bytes.as_slice()).unwrap().offset() as usize;
    bytes[first + FRAME + 3] ^= 0x40;
    let (back, torn) = read_all(&bytes);
    assert!(!torn);
    assert_eq!(back.len(), events.len());
    assert!(
        matches!(back[0], Err(RecordError::Checksum { offset, .. }) if offset == first as u64),
        "{:?}",
        back[0]
    );
    assert_eq!(back[1..].iter().map(|r| r.clone().unwrap()).collect::<Vec<_>>(), events[1..]);
}

#[test]
fn damaged_headers_and_lengths_are_errors_not_panics() {
    assert!(matches!(Reader::new(&b"ts,price,qty,side\n"[..]), Err(RecordError::NotARecording(_))));
    assert!(matches!(Reader::new(&MAGIC[..]), Err(RecordError::NotARecording(_))));
    let mut bytes = recording(&events());
    let first = Reader::new(bytes.as_slice()).unwrap().offset() as usize;
    bytes[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (back, _) = read_all(&bytes);
    assert!(matches!(back[0], Err(RecordError::Corrupt { .. })), "{:?}", back[0]);
    // Random payloads with a valid checksum still decode to an error, never a panic.
    for seed in 0u8..=255 {
        let payload: Vec<u8> = (0..24).map(|i| seed.wrapping_mul(31).wrapping_add(i * 7)).collect();
        let header = Header { version: VERSION, venue: VenueId::Sim, symbol: sym() };
        let _ = decode_event(&payload, &header);
    }
}
