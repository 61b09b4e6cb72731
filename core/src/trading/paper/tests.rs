//! Paper fills: each documented rule, and a seeded property run (position = Σ fills, nothing
//! over-fills, same input → same fills).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::market::Symbol;
use crate::trading::{OrderOrigin, OrderStatus, Position};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn venue() -> PaperVenue {
    let filters = InstrumentFilters {
        tick_size: d("0.01"),
        step_size: d("0.001"),
        min_qty: d("0.001"),
        max_qty: d("1000"),
        min_notional: d("0"),
    };
    PaperVenue::new(PaperConfig { fee_bps: d("10"), slippage_bps: d("50") }, filters)
}

fn order(id: u64, side: Side, qty: &str, order_type: OrderType) -> Order {
    Order {
        id,
        bot_id: 1,
        client_order_id: format!("keel-1-{id:06}"),
        side,
        order_type,
        qty: d(qty),
        filled_qty: Decimal::ZERO,
        avg_fill_price: Decimal::ZERO,
        status: OrderStatus::Accepted,
        origin: OrderOrigin::Manual,
        tag: 0,
        oco_with: None,
        venue_list: None,
        reason: None,
        created_ts: 0,
        updated_ts: 0,
    }
}

fn event(ts: u64, kind: EventKind) -> MarketEvent {
    MarketEvent {
        venue: crate::market::VenueId::Sim,
        symbol: Symbol::parse("BTCUSDT").unwrap(),
        exchange_ts: ts,
        received_us: 0,
        kind,
    }
}

fn trade(ts: u64, price: &str, qty: &str) -> MarketEvent {
    event(ts, EventKind::Trade { price: d(price), qty: d(qty), side: Side::Buy, trade_id: ts })
}

fn quote(ts: u64, bid: &str, ask: &str, qty: &str) -> MarketEvent {
    event(ts, EventKind::Quote { bid: d(bid), bid_qty: d(qty), ask: d(ask), ask_qty: d(qty) })
}

fn limit(price: &str) -> OrderType {
    OrderType::limit(d(price))
}

fn stop(price: &str) -> OrderType {
    OrderType::Stop { stop_price: d(price) }
}

#[test]
fn market_orders_take_the_quote_or_the_slipped_last_trade_or_are_refused() {
    let mut v = venue();
    let mut out = Vec::new();
    let err = v.submit(&order(1, Side::Buy, "1", OrderType::Market), 0, &mut out).unwrap_err();
    assert_eq!(err, "no market price yet");
    v.on_market(&trade(1, "100.00", "5"), &mut out);
    // No quote: last trade ± 50 bps, rounded against the trader.
    v.submit(&order(2, Side::Buy, "1", OrderType::Market), 2, &mut out).unwrap();
    v.submit(&order(3, Side::Sell, "1", OrderType::Market), 2, &mut out).unwrap();
    assert_eq!((out[0].price, out[1].price), (d("100.50"), d("99.50")));
    v.on_market(&quote(3, "99.90", "100.10", "5"), &mut out);
    out.clear();
    v.submit(&order(4, Side::Buy, "2", OrderType::Market), 4, &mut out).unwrap();
    v.submit(&order(5, Side::Sell, "2", OrderType::Market), 4, &mut out).unwrap();
    let got: Vec<_> = out.iter().map(|f| (f.order_id, f.price, f.qty, f.liquidity, f.ts)).collect();
    assert_eq!(
        got,
        [
            (4, d("100.10"), d("2"), Liquidity::Taker, 4),
            (5, d("99.90"), d("2"), Liquidity::Taker, 4)
        ]
    );
    // Fee: 100.10 × 2 × 10 bps.
    assert_eq!(out[0].fee, d("0.2002"));
}

#[test]
fn limits_fill_at_once_when_marketable_and_otherwise_when_traded_through_in_parts() {
    let mut v = venue();
    let mut out = Vec::new();
    v.on_market(&quote(1, "99.90", "100.10", "5"), &mut out);
    v.submit(&order(1, Side::Buy, "1", limit("100.50")), 1, &mut out).unwrap();
    assert_eq!(
        (out[0].price, out[0].liquidity),
        (d("100.10"), Liquidity::Taker),
        "marketable: at the ask"
    );
    out.clear();
    v.submit(&order(2, Side::Buy, "3", limit("99.00")), 1, &mut out).unwrap();
    assert!(out.is_empty());
    // Trading at the limit is not through it.
    v.on_market(&trade(2, "99.00", "10"), &mut out);
    assert!(out.is_empty());
    // Through it: fills at the limit, at most the trade's quantity.
    v.on_market(&trade(3, "98.99", "1.5"), &mut out);
    v.on_market(&trade(4, "98.50", "10"), &mut out);
    let got: Vec<_> = out.iter().map(|f| (f.price, f.qty, f.liquidity, f.ts)).collect();
    assert_eq!(
        got,
        [(d("99.00"), d("1.5"), Liquidity::Maker, 3), (d("99.00"), d("1.5"), Liquidity::Maker, 4)]
    );
    assert_eq!(v.open_order_ids().count(), 0);
    // A quote reaching a resting sell fills it too.
    out.clear();
    v.submit(&order(3, Side::Sell, "1", limit("101.00")), 5, &mut out).unwrap();
    v.on_market(&quote(6, "101.00", "101.20", "0.4"), &mut out);
    assert_eq!((out[0].price, out[0].qty), (d("101.00"), d("0.4")));
    assert!(v.cancel(3));
    assert!(!v.cancel(3));
}

#[test]
fn stops_trigger_at_or_through_their_price_and_fill_at_the_market() {
    let mut v = venue();
    let mut out = Vec::new();
    v.on_market(&quote(1, "99.90", "100.10", "5"), &mut out);
    v.submit(&order(1, Side::Sell, "2", stop("95.00")), 1, &mut out).unwrap();
    v.submit(&order(2, Side::Buy, "1", stop("105.00")), 1, &mut out).unwrap();
    v.on_market(&trade(2, "95.01", "1"), &mut out);
    assert!(out.is_empty());
    v.on_market(&quote(3, "94.90", "95.10", "5"), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].order_id, out[0].price, out[0].qty, out[0].liquidity),
        (1, d("94.90"), d("2"), Liquidity::Taker)
    );
    v.on_market(&trade(4, "105.00", "1"), &mut out);
    assert_eq!((out[1].order_id, out[1].price), (2, d("95.10")), "fills at the ask in full");
}

#[test]
fn matching_is_by_price_priority_then_id_and_restore_rearms_open_orders() {
    let mut v = venue();
    let mut out = Vec::new();
    v.submit(&order(1, Side::Buy, "1", limit("99.00")), 0, &mut out).unwrap();
    v.submit(&order(2, Side::Buy, "1", limit("99.50")), 0, &mut out).unwrap();
    v.submit(&order(3, Side::Buy, "1", limit("99.50")), 0, &mut out).unwrap();
    v.on_market(&trade(1, "98.00", "2.5"), &mut out);
    let got: Vec<_> = out.iter().map(|f| (f.order_id, f.qty)).collect();
    assert_eq!(got, [(2, d("1")), (3, d("1")), (1, d("0.5"))]);

    let mut partly = order(4, Side::Sell, "2", limit("101.00"));
    partly.filled_qty = d("1.5");
    partly.status = OrderStatus::PartiallyFilled;
    let mut done = order(5, Side::Sell, "1", limit("101.00"));
    done.status = OrderStatus::Filled;
    let mut revived = venue();
    revived.restore([partly, done]);
    assert_eq!(revived.open_order_ids().collect::<Vec<_>>(), [4]);
    out.clear();
    revived.on_market(&trade(2, "102.00", "9"), &mut out);
    assert_eq!((out[0].order_id, out[0].qty), (4, d("0.5")));
}

/// Runs a random session and returns its fills.
fn random_session(seed: u64) -> (Vec<PaperFill>, Vec<Order>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut v = venue();
    let mut orders: Vec<Order> = Vec::new();
    let mut fills = Vec::new();
    let mut price: i64 = 10_000;
    for ts in 0..400u64 {
        price = (price + rng.random_range(-30..=30)).max(100);
        let p = Decimal::new(price, 2);
        let q = Decimal::new(rng.random_range(1..=3000), 3);
        let event = if rng.random_bool(0.5) {
            event(ts, EventKind::Trade { price: p, qty: q, side: Side::Buy, trade_id: ts })
        } else {
            event(
                ts,
                EventKind::Quote { bid: p - Decimal::new(1, 2), bid_qty: q, ask: p, ask_qty: q },
            )
        };
        v.on_market(&event, &mut fills);
        if rng.random_bool(0.2) {
            let side = if rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
            let offset = Decimal::new(rng.random_range(-100..=100), 2);
            let order_type = match rng.random_range(0..3) {
                0 => OrderType::Market,
                1 => OrderType::limit(p + offset),
                _ => OrderType::Stop { stop_price: p + offset },
            };
            let o = order(
                orders.len() as u64 + 1,
                side,
                &format!("{}", Decimal::new(rng.random_range(1..=2000), 3)),
                order_type,
            );
            let _ = v.submit(&o, ts, &mut fills);
            orders.push(o);
        }
        if rng.random_bool(0.05) {
            let first = v.open_order_ids().next();
            if let Some(id) = first {
                v.cancel(id);
            }
        }
    }
    (fills, orders)
}

#[test]
fn position_always_equals_the_sum_of_fills_and_nothing_overfills() {
    for seed in 0..300 {
        let (fills, orders) = random_session(seed);
        let mut position = Position { quote_balance: d("1000000"), ..Position::default() };
        let (mut signed, mut fees, mut cash) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        for f in &fills {
            let side = orders[(f.order_id - 1) as usize].side;
            position.apply(side, f.qty, f.price, f.fee);
            signed += side.sign() * f.qty;
            fees += f.fee;
            cash += side.sign() * f.qty * f.price;
            assert_eq!(position.qty, signed, "seed {seed}");
        }
        assert_eq!(position.fees, fees);
        assert_eq!(position.quote_balance, d("1000000") - cash - fees, "seed {seed}");
        for o in &orders {
            let filled: Decimal = fills.iter().filter(|f| f.order_id == o.id).map(|f| f.qty).sum();
            assert!(filled <= o.qty, "seed {seed}: order {} filled {filled} of {}", o.id, o.qty);
        }
        assert_eq!(random_session(seed).0, fills, "seed {seed} is deterministic");
    }
}

fn limit_tif(price: &str, time_in_force: TimeInForce) -> OrderType {
    OrderType::Limit { price: d(price), time_in_force }
}

#[test]
fn ioc_takes_what_the_quote_offers_and_fok_all_or_nothing() {
    let mut v = venue();
    let mut out = Vec::new();
    v.on_market(&quote(1, "99.90", "100.10", "0.5"), &mut out);
    let ioc = order(1, Side::Buy, "2", limit_tif("100.50", TimeInForce::Ioc));
    assert_eq!(v.submit(&ioc, 2, &mut out).unwrap(), Submitted::Done);
    assert_eq!((out[0].price, out[0].qty), (d("100.10"), d("0.5")), "what the ask offered");
    let fok = order(2, Side::Buy, "2", limit_tif("100.50", TimeInForce::Fok));
    assert_eq!(v.submit(&fok, 2, &mut out).unwrap(), Submitted::Done);
    assert_eq!(out.len(), 1, "not all of it: none of it");
    let fok = order(3, Side::Buy, "0.5", limit_tif("100.50", TimeInForce::Fok));
    v.submit(&fok, 2, &mut out).unwrap();
    assert_eq!((out[1].order_id, out[1].qty), (3, d("0.5")));
    // Not marketable: neither rests.
    let ioc = order(4, Side::Buy, "1", limit_tif("99.00", TimeInForce::Ioc));
    assert_eq!(v.submit(&ioc, 2, &mut out).unwrap(), Submitted::Done);
    assert_eq!(v.open_order_ids().count(), 0);
}

#[test]
fn post_only_rests_as_a_maker_or_is_refused() {
    let mut v = venue();
    let mut out = Vec::new();
    v.on_market(&quote(1, "99.90", "100.10", "5"), &mut out);
    let taking = order(1, Side::Buy, "1", limit_tif("100.10", TimeInForce::PostOnly));
    let err = v.submit(&taking, 2, &mut out).unwrap_err();
    assert!(err.contains("post-only"), "{err}");
    let resting = order(2, Side::Buy, "1", limit_tif("100.00", TimeInForce::PostOnly));
    assert_eq!(v.submit(&resting, 2, &mut out).unwrap(), Submitted::Working);
    v.on_market(&trade(3, "99.99", "5"), &mut out);
    assert_eq!((out[0].price, out[0].liquidity), (d("100.00"), Liquidity::Maker));
}

#[test]
fn a_stop_limit_becomes_a_limit_when_its_stop_is_crossed() {
    let mut v = venue();
    let mut out = Vec::new();
    v.on_market(&trade(1, "100.00", "5"), &mut out);
    let sl = OrderType::StopLimit { stop_price: d("99.00"), price: d("98.50") };
    assert_eq!(v.submit(&order(1, Side::Sell, "1", sl), 1, &mut out).unwrap(), Submitted::Working);
    v.on_market(&trade(2, "98.40", "5"), &mut out);
    // Below the limit: triggered, but a sell limit at 98.50 does not fill at 98.40.
    assert!(out.is_empty(), "{out:?}");
    v.on_market(&trade(3, "98.60", "5"), &mut out);
    assert_eq!(
        (out[0].price, out[0].qty, out[0].liquidity),
        (d("98.50"), d("1"), Liquidity::Maker)
    );
    // A buy stop-limit triggers at or above its stop.
    out.clear();
    let bl = OrderType::StopLimit { stop_price: d("101.00"), price: d("101.50") };
    v.submit(&order(2, Side::Buy, "1", bl), 3, &mut out).unwrap();
    v.on_market(&trade(4, "100.90", "5"), &mut out);
    assert!(out.is_empty(), "below its stop: armed");
    // Triggered at 101.20, it works as a buy limit at 101.50, which that trade is under.
    v.on_market(&trade(5, "101.20", "5"), &mut out);
    assert_eq!((out[0].order_id, out[0].price), (2, d("101.50")));
}

#[test]
fn a_trailing_stop_follows_the_best_price_and_fires_on_the_retracement() {
    let mut v = venue();
    let mut out = Vec::new();
    v.on_market(&trade(1, "100.00", "5"), &mut out);
    let trailing = OrderType::TrailingStop { trailing_bps: 100 };
    v.submit(&order(1, Side::Sell, "1", trailing), 1, &mut out).unwrap();
    for (ts, price) in [(2, "103.00"), (3, "105.00"), (4, "104.00"), (5, "103.96")] {
        v.on_market(&trade(ts, price, "5"), &mut out);
    }
    assert!(out.is_empty(), "1 % below 105 is 103.95: {out:?}");
    v.on_market(&trade(6, "103.95", "5"), &mut out);
    assert_eq!((out[0].order_id, out[0].liquidity), (1, Liquidity::Taker));
    // A buy trails the lowest price up.
    out.clear();
    let trailing = OrderType::TrailingStop { trailing_bps: 200 };
    v.submit(&order(2, Side::Buy, "1", trailing), 6, &mut out).unwrap();
    v.on_market(&trade(7, "100.00", "5"), &mut out);
    v.on_market(&trade(8, "101.99", "5"), &mut out);
    assert!(out.is_empty());
    v.on_market(&trade(9, "102.00", "5"), &mut out);
    assert_eq!(out[0].order_id, 2);
}
