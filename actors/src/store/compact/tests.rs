use std::str::FromStr;

use super::*;
use crate::store::{encode, encode_packed};
use keel_core::bot::BotStatus;

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// Decimals a row can hold, down to the awkward ones: trailing zeros (the scale is part of what
/// the API shows), negative zero, the extremes, 28 decimal places.
fn decimals() -> Vec<Decimal> {
    let mut negative_zero = d("0.00");
    negative_zero.set_sign_negative(true);
    vec![
        Decimal::ZERO,
        d("1.50"),
        d("0.00100000"),
        d("-123456.789"),
        d("98765.4321000"),
        negative_zero,
        Decimal::MAX,
        Decimal::MIN,
        d("0.0000000000000000000000000001"),
        d("-7.9228162514264337593543950335"),
    ]
}

fn order(id: u64, order_type: OrderType, status: OrderStatus, origin: OrderOrigin) -> Order {
    Order {
        id,
        bot_id: 4_000_000_017,
        client_order_id: format!("keel-17-{id:06}"),
        side: if id.is_multiple_of(2) { Side::Buy } else { Side::Sell },
        order_type,
        qty: d("0.00100"),
        filled_qty: d("0.001"),
        avg_fill_price: d("97123.45"),
        status,
        origin,
        tag: id as u32,
        oco_with: id.is_multiple_of(3).then_some(id + 1),
        venue_list: id.is_multiple_of(3).then(|| format!("keel-17-{id:06}-oco")),
        reason: (!id.is_multiple_of(2)).then(|| "risk: max position ümlaut".to_string()),
        created_ts: 1_764_000_000_000 + id,
        updated_ts: 1_764_000_000_500 + id,
    }
}

fn orders() -> Vec<Order> {
    let types = [
        OrderType::Market,
        OrderType::Limit { price: d("100.10"), time_in_force: TimeInForce::Gtc },
        OrderType::Limit { price: d("0.5"), time_in_force: TimeInForce::Ioc },
        OrderType::Limit { price: d("7"), time_in_force: TimeInForce::Fok },
        OrderType::Limit { price: d("7.000"), time_in_force: TimeInForce::PostOnly },
        OrderType::Stop { stop_price: d("-1.25") },
        OrderType::StopLimit { stop_price: d("99"), price: d("98.5") },
        OrderType::TrailingStop { trailing_bps: 2000 },
    ];
    let statuses = [
        OrderStatus::New,
        OrderStatus::Accepted,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Canceled,
        OrderStatus::Rejected,
        OrderStatus::Unknown,
        OrderStatus::Reconciled,
    ];
    let origins = [
        OrderOrigin::Strategy,
        OrderOrigin::Manual,
        OrderOrigin::TakeProfit,
        OrderOrigin::StopLoss,
        OrderOrigin::Close,
    ];
    let mut all = Vec::new();
    for (i, order_type) in types.into_iter().enumerate() {
        for (j, status) in statuses.into_iter().enumerate() {
            let id = (i * statuses.len() + j) as u64 + 1;
            all.push(order(id, order_type, status, origins[(i + j) % origins.len()]));
        }
    }
    for (k, value) in decimals().into_iter().enumerate() {
        let mut o =
            order(100 + k as u64, OrderType::Market, OrderStatus::Filled, OrderOrigin::Close);
        (o.qty, o.filled_qty, o.avg_fill_price) = (value, value, value);
        all.push(o);
    }
    all
}

fn fill(id: u64, price: Decimal, commission: Option<Commission>) -> Fill {
    Fill {
        id,
        bot_id: 17,
        order_id: id * 2,
        side: if id.is_multiple_of(2) { Side::Buy } else { Side::Sell },
        price,
        qty: d("0.00100"),
        fee: d("0.0971234500"),
        liquidity: if id.is_multiple_of(2) { Liquidity::Maker } else { Liquidity::Taker },
        tag: 3,
        ts: 1_764_000_000_000 + id,
        commission,
    }
}

fn fills() -> Vec<Fill> {
    let mut all: Vec<Fill> =
        decimals().into_iter().enumerate().map(|(i, p)| fill(i as u64 + 1, p, None)).collect();
    for (i, charged_to) in
        [FeeAsset::Quote, FeeAsset::Base, FeeAsset::Other].into_iter().enumerate()
    {
        all.push(fill(
            50 + i as u64,
            d("97000.1"),
            Some(Commission {
                asset: "BNB".into(),
                amount: d("0.00012300"),
                charged_to,
                quote_value_estimated: i == 2,
            }),
        ));
    }
    all
}

fn journal() -> Vec<BotEvent> {
    let kinds = vec![
        BotEventKind::Order(orders()[1].clone()),
        BotEventKind::Fill(fills()[9].clone()),
        BotEventKind::Position(Position {
            qty: d("-0.00300"),
            avg_entry_price: d("97000.10"),
            realized_pnl: d("-12.5"),
            fees: d("0.29"),
            quote_balance: d("10000.00"),
            funding: Decimal::ZERO,
        }),
        // A position with funding goes as JSON (the binary form predates the field).
        BotEventKind::Position(Position {
            qty: d("0.5"),
            avg_entry_price: d("100"),
            realized_pnl: d("0"),
            fees: d("0.05"),
            quote_balance: d("49.95"),
            funding: d("-0.005"),
        }),
        BotEventKind::Funding {
            amount: d("-0.005"),
            asset: "USDT".into(),
            id: None,
            rate: Some(d("0.0001")),
            mark_price: Some(d("100")),
        },
        BotEventKind::Liquidated {
            qty: d("0.5"),
            price: d("90.37"),
            mark_price: d("90.2"),
            clearance_fee: d("0.18"),
            margin_type: keel_core::bot::MarginType::Isolated,
        },
        BotEventKind::Status { status: BotStatus::Paused, reason: Some("disk".into()) },
        BotEventKind::Breaker {
            venue: "binance".into(),
            account_id: 7,
            state: "open".into(),
            reason: None,
        },
        BotEventKind::Log { level: "warn".into(), message: "a \"quoted\" line\n".into() },
        BotEventKind::Funding {
            asset: "USDT".into(),
            amount: d("-0.01250"),
            id: Some("9".into()),
            rate: None,
            mark_price: None,
        },
        BotEventKind::VenuePosition(keel_core::engine::VenuePositionView {
            symbol: "BTCUSDT".into(),
            qty: d("-0.500"),
            entry_price: d("97000.10"),
            mark_price: Some(d("97100.00")),
            liquidation_price: None,
            unrealized_pnl: d("-49.95"),
            leverage: Some(20),
            margin_type: Some(keel_core::bot::MarginType::Cross),
            updated_ms: 1_764_000_000_000,
        }),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| BotEvent { id: i as u64 + 40, ts: 1_764_000_000_000 + i as u64, kind })
        .collect()
}

/// Equal as values and as the API shows them: `1.50 == 1.5` for `Decimal`, so compare the JSON.
fn same_json<T: Serialize>(a: &T, b: &T) {
    assert_eq!(serde_json::to_string(a).unwrap(), serde_json::to_string(b).unwrap());
}

#[test]
fn orders_round_trip_exactly_through_the_compact_form() {
    for order in orders() {
        let raw = order.encode_row().unwrap();
        assert_eq!(raw[0], COMPACT_V1);
        let back = Order::decode_row(&raw).unwrap();
        assert_eq!(back, order);
        same_json(&back, &order);
    }
}

#[test]
fn fills_round_trip_exactly_through_the_compact_form() {
    for fill in fills() {
        let back = Fill::decode_row(&fill.encode_row().unwrap()).unwrap();
        assert_eq!(back, fill);
        same_json(&back, &fill);
    }
}

#[test]
fn decimals_keep_their_scale_and_the_sign_of_zero() {
    for value in decimals() {
        let f = fill(1, value, None);
        let back = Fill::decode_row(&f.encode_row().unwrap()).unwrap().price;
        assert_eq!(
            (back.to_string(), back.scale(), back.is_sign_negative()),
            (value.to_string(), value.scale(), value.is_sign_negative())
        );
    }
}

#[test]
fn journal_rows_of_every_kind_round_trip() {
    let lines = journal();
    let raw = encode_journal(&lines).unwrap();
    assert_eq!(raw[0], COMPACT_V1);
    let back = decode_journal(&raw).unwrap();
    assert_eq!(back, lines);
    same_json(&back, &lines);
    assert!(decode_journal(&encode_journal(&[]).unwrap()).unwrap().is_empty());
}

#[test]
fn rows_an_older_keel_wrote_still_read() {
    let (order, fill, lines) = (orders().remove(9), fills().remove(10), journal());
    // Plain JSON (schemas 1–2) and deflated JSON (schemas 3–4).
    for raw in [encode(&order).unwrap(), encode_packed(&order).unwrap()] {
        assert_eq!(Order::decode_row(&raw).unwrap(), order);
    }
    for raw in [encode(&fill).unwrap(), encode_packed(&fill).unwrap()] {
        assert_eq!(Fill::decode_row(&raw).unwrap(), fill);
    }
    for raw in [encode(&lines).unwrap(), encode_packed(&lines).unwrap()] {
        assert_eq!(decode_journal(&raw).unwrap(), lines);
    }
    // One journal line per row, before schema 3.
    assert_eq!(decode_journal(&encode(&lines[0]).unwrap()).unwrap(), lines[..1]);
}

#[test]
fn damaged_rows_are_errors_not_panics() {
    let raw = orders()[20].encode_row().unwrap();
    for cut in 1..raw.len() {
        assert!(Order::decode_row(&raw[..cut]).is_err(), "{cut} of {} bytes read", raw.len());
    }
    // A side code past the last one, and a decimal scale past 28.
    assert!(Order::decode_row(&[COMPACT_V1, 1, 1, 0, 9]).is_err());
    let mut bad_scale = fill(1, d("1"), None).encode_row().unwrap();
    bad_scale[5] = 29; // version, id, bot, order, side, then the price's flags
    assert!(matches!(Fill::decode_row(&bad_scale), Err(StoreError::Corrupt(_))));
    assert!(decode_journal(&[COMPACT_V1, 1, 0xff]).is_err());
    assert!(Fill::decode_row(&[]).is_err());
}

/// What a fill costs in each form: the order as it ended, the fill, and the journal row of the
/// engine call that made them (the order's two versions, the fill, the position).
#[test]
fn a_fill_takes_under_half_the_bytes_of_packed_json() {
    let mut placed = order(12_345, OrderType::Market, OrderStatus::New, OrderOrigin::Strategy);
    placed.reason = None;
    placed.oco_with = None;
    let mut filled = placed.clone();
    filled.status = OrderStatus::Filled;
    let fill = fill(9_876, d("97123.45"), None);
    let position = Position {
        qty: d("0.002"),
        avg_entry_price: d("97100.225"),
        realized_pnl: d("-3.1"),
        fees: d("0.388"),
        quote_balance: d("9802.15"),
        funding: Decimal::ZERO,
    };
    let lines: Vec<BotEvent> = [
        BotEventKind::Order(placed),
        BotEventKind::Order(filled.clone()),
        BotEventKind::Fill(fill.clone()),
        BotEventKind::Position(position),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, kind)| BotEvent { id: 50_000 + i as u64, ts: 1_764_000_000_000, kind })
    .collect();
    let packed = encode_packed(&filled).unwrap().len()
        + encode_packed(&fill).unwrap().len()
        + encode_packed(&lines).unwrap().len();
    let compact = filled.encode_row().unwrap().len()
        + fill.encode_row().unwrap().len()
        + encode_journal(&lines).unwrap().len();
    assert!(compact * 2 < packed, "compact {compact} B against packed JSON {packed} B");
}

#[test]
fn a_second_line_about_an_order_keeps_only_what_changed_and_reads_back_whole() {
    let placed = order(
        7,
        OrderType::Limit { price: d("100.50"), time_in_force: TimeInForce::Ioc },
        OrderStatus::Accepted,
        OrderOrigin::Manual,
    );
    let mut filled = placed.clone();
    (filled.status, filled.filled_qty, filled.avg_fill_price) =
        (OrderStatus::Filled, d("0.00100"), d("100.4000"));
    (filled.reason, filled.updated_ts) = (Some("done".into()), placed.updated_ts + 9);
    // The same order with another OCO partner, then a different order: written whole.
    let mut relinked = filled.clone();
    relinked.oco_with = Some(99);
    let other = order(8, OrderType::Market, OrderStatus::New, OrderOrigin::Strategy);
    let line = |id, order: &Order| BotEvent { id, ts: 5, kind: BotEventKind::Order(order.clone()) };
    let whole = encode_journal(&[line(1, &placed)]).unwrap().len();
    let lines = [line(1, &placed), line(2, &filled), line(3, &relinked), line(4, &other)];
    let raw = encode_journal(&lines).unwrap();
    let back = decode_journal(&raw).unwrap();
    assert_eq!(back, lines);
    same_json(&back, &lines.to_vec());
    let two = encode_journal(&lines[..2]).unwrap().len();
    assert!(two - whole < whole / 2, "the change took {} B, the order {whole} B", two - whole);
    // A change whose order is not earlier in its row is damage, not a panic.
    let alone = encode_journal(&lines[..2]).unwrap();
    let change_only = [&[COMPACT_V1, 1][..], &alone[1 + 1 + (whole - 2)..]].concat();
    assert!(matches!(decode_journal(&change_only), Err(StoreError::Corrupt(_))));
}
