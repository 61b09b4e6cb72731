//! [`Position::apply`] against a plain ledger of the same fills, and the filters' rounding.

use keel_core::market::Side;
use keel_core::trading::Position;
use proptest::prelude::*;
use rust_decimal::Decimal;

use crate::filters;

/// Differences allowed where a division is involved (the average entry price): far below any
/// amount a venue shows, far above `Decimal`'s 28-digit rounding.
fn close(a: Decimal, b: Decimal) -> bool {
    (a - b).abs() <= Decimal::new(1, 12)
}

/// A fill: side, quantity in thousandths (up to 5), price in cents (1.00 to 200.00), fee in
/// hundredths of a cent.
fn fill() -> impl Strategy<Value = (Side, Decimal, Decimal, Decimal)> {
    (any::<bool>(), 1i64..=5_000, 100i64..=20_000, 0i64..=1_000).prop_map(|(buy, q, p, f)| {
        let side = if buy { Side::Buy } else { Side::Sell };
        (side, Decimal::new(q, 3), Decimal::new(p, 2), Decimal::new(f, 4))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Quantity is the signed sum of the fills, fees their sum, the quote balance the start
    /// minus what buys paid plus what sells got minus fees; realised plus unrealised P&L at any
    /// mark is what the cash flows and the holding are worth there; and the entry price is a
    /// price that was paid (between the lowest and highest fill), zero exactly when flat.
    #[test]
    fn applying_fills_keeps_the_books_of_a_plain_ledger(
        fills in prop::collection::vec(fill(), 1..60),
        mark_cents in 100i64..=20_000,
    ) {
        let start = Decimal::from(10_000);
        let mark = Decimal::new(mark_cents, 2);
        let mut p = Position { quote_balance: start, ..Position::default() };
        let (mut qty, mut fees, mut cash) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let (mut low, mut high) = (Decimal::MAX, Decimal::MIN);
        for &(side, q, price, fee) in &fills {
            p.apply(side, q, price, fee);
            qty += side.sign() * q;
            fees += fee;
            cash -= side.sign() * q * price;
            low = low.min(price);
            high = high.max(price);
            prop_assert_eq!(p.qty, qty);
            prop_assert_eq!(p.fees, fees);
            prop_assert_eq!(p.quote_balance, start + cash - fees);
            // Worth at the mark: what was paid and received, plus the holding.
            let pnl = p.realized_pnl + p.unrealized_pnl(mark);
            prop_assert!(close(pnl, cash + qty * mark), "{pnl} vs {}", cash + qty * mark);
            if p.qty.is_zero() {
                prop_assert_eq!(p.avg_entry_price, Decimal::ZERO);
            } else {
                prop_assert!(p.avg_entry_price >= low - Decimal::new(1, 12));
                prop_assert!(p.avg_entry_price <= high + Decimal::new(1, 12));
            }
        }
    }

    /// `floor_qty` lands on the step, at most one step below; `round_price` lands on the tick,
    /// at most half a tick away.
    #[test]
    fn filters_round_onto_their_grid(raw in 0i64..=100_000_000, scale in 0u32..=8) {
        let f = filters();
        let x = Decimal::new(raw, scale);
        let q = f.floor_qty(x);
        prop_assert!(f.qty_on_step(q));
        prop_assert!(q <= x && x - q < f.step_size);
        let p = f.round_price(x);
        prop_assert!(f.price_on_tick(p));
        prop_assert!((p - x).abs() * Decimal::TWO <= f.tick_size);
    }
}
