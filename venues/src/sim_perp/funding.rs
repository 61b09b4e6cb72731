//! The simulated perpetual's index, mark price and funding rate: one [`PerpBook`] per symbol,
//! fed each simulated trade and the quote around it.
//!
//! Binance USD-M's rules, with the parts a one-venue simulation lacks replaced:
//! - **Index.** There is no spot market behind the sim, so the index is the traded price
//!   smoothed over about [`INDEX_LAG_TRADES`] trades (an exponential moving average): the
//!   perpetual leads, the index follows, and the gap between them is the premium.
//! - **Premium index** of one trade: `(max(0, bid − index) − max(0, index − ask)) / index`, with
//!   the best bid and ask standing in for Binance's impact bid and ask prices.
//! - **Funding rate** for the next funding time: `F = P + clamp(I − P, −0.05 %, 0.05 %)`, then
//!   clamped to ±0.75 % (Binance's cap for its large contracts); `P` is the average premium index
//!   since the last funding time and `I` the interest rate, 0.01 % per 8 hours scaled to the
//!   interval (0.03 % a day, as Binance). In a calm market `|I − P| < 0.05 %`, so `F = I`: longs
//!   pay shorts a little. It is rounded to 12 decimals (finer than Binance's 8, so that a short
//!   demo interval's tiny interest is not rounded away).
//! - **Mark price**: the median of `index × (1 + F × time to funding / interval)`,
//!   `index + basis` (the basis `mid − index` smoothed like the index, for Binance's 5-minute
//!   moving average) and the last price; rounded to the tick, as is the published index.
//! - **Funding times**: every `interval` from 00:00 UTC (8 hours by default).

use rust_decimal::{Decimal, RoundingStrategy};

use keel_core::market::EventKind;

/// Trades over which the index (and the basis) follow the traded price.
pub const INDEX_LAG_TRADES: u32 = 32;
/// Interest rate per 8 hours (Binance: 0.03 % a day).
const INTEREST_PER_8H: Decimal = Decimal::from_parts(1, 0, 0, false, 4);
/// How far the interest term may pull the rate from the premium: ±0.05 %.
const INTEREST_CLAMP: Decimal = Decimal::from_parts(5, 0, 0, false, 4);
/// Largest funding rate either way: ±0.75 %.
pub const FUNDING_RATE_CAP: Decimal = Decimal::from_parts(75, 0, 0, false, 4);
/// Eight hours, ms: the interval the interest rate is quoted for.
const EIGHT_HOURS_MS: u64 = 8 * 3_600_000;
/// Decimal places of the published funding rate.
const RATE_DP: u32 = 12;
/// Decimal places the smoothed index and basis are kept to.
const SMOOTH_DP: u32 = 12;

/// One symbol's index, premium average and funding clock.
#[derive(Debug, Clone)]
pub struct PerpBook {
    interval_ms: u64,
    tick: Decimal,
    index: Option<Decimal>,
    basis: Decimal,
    premium_sum: Decimal,
    premium_samples: u32,
    next_funding_ms: u64,
}

impl PerpBook {
    /// A book for an instrument on `tick`, funding every `interval_ms` (at least 1 ms).
    pub fn new(interval_ms: u64, tick: Decimal) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            tick,
            index: None,
            basis: Decimal::ZERO,
            premium_sum: Decimal::ZERO,
            premium_samples: 0,
            next_funding_ms: 0,
        }
    }

    /// Takes in a trade at `price` with the quote `bid`/`ask` around it, at `now_ms`, and returns
    /// the mark price event that follows: mark, funding rate and next funding time. Passing a
    /// funding time starts a new premium average.
    pub fn observe(
        &mut self,
        price: Decimal,
        bid: Decimal,
        ask: Decimal,
        now_ms: u64,
    ) -> EventKind {
        if now_ms >= self.next_funding_ms {
            if self.next_funding_ms != 0 {
                self.premium_sum = Decimal::ZERO;
                self.premium_samples = 0;
            }
            self.next_funding_ms = (now_ms / self.interval_ms + 1) * self.interval_ms;
        }
        let lag = Decimal::from(INDEX_LAG_TRADES);
        let index = match self.index {
            None => price,
            Some(index) => smooth(index + (price - index) / lag),
        };
        self.index = Some(index);
        let mid = (bid + ask) / Decimal::TWO;
        self.basis = smooth(self.basis + ((mid - index) - self.basis) / lag);
        if index > Decimal::ZERO {
            let premium =
                ((bid - index).max(Decimal::ZERO) - (index - ask).max(Decimal::ZERO)) / index;
            self.premium_sum += smooth(premium);
            self.premium_samples += 1;
        }
        let rate = self.funding_rate();
        let left = Decimal::from(self.next_funding_ms - now_ms) / Decimal::from(self.interval_ms);
        let mut prices = [index * (Decimal::ONE + rate * left), index + self.basis, price]
            .map(|p| self.on_tick(p));
        prices.sort();
        EventKind::MarkPrice {
            mark_price: prices[1],
            funding_rate: Some(rate),
            next_funding_ms: Some(self.next_funding_ms),
        }
    }

    /// The index price now (on the tick), once a trade has been seen.
    pub fn index(&self) -> Option<Decimal> {
        self.index.map(|i| self.on_tick(i))
    }

    /// The rate the next funding time applies: `P + clamp(I − P, ±0.05 %)`, capped at ±0.75 %.
    pub fn funding_rate(&self) -> Decimal {
        let premium = if self.premium_samples == 0 {
            Decimal::ZERO
        } else {
            self.premium_sum / Decimal::from(self.premium_samples)
        };
        let interest = interest_rate(self.interval_ms);
        let rate = premium + (interest - premium).clamp(-INTEREST_CLAMP, INTEREST_CLAMP);
        rate.clamp(-FUNDING_RATE_CAP, FUNDING_RATE_CAP)
            .round_dp_with_strategy(RATE_DP, RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    }

    fn on_tick(&self, price: Decimal) -> Decimal {
        if self.tick <= Decimal::ZERO {
            return price;
        }
        (price / self.tick).round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            * self.tick
    }
}

/// The interest rate of one funding interval: 0.01 % per 8 hours, pro rata.
pub fn interest_rate(interval_ms: u64) -> Decimal {
    INTEREST_PER_8H * Decimal::from(interval_ms) / Decimal::from(EIGHT_HOURS_MS)
}

fn smooth(value: Decimal) -> Decimal {
    value.round_dp(SMOOTH_DP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn rate_of(event: &EventKind) -> Decimal {
        let EventKind::MarkPrice { funding_rate: Some(rate), .. } = event else { panic!() };
        *rate
    }

    #[test]
    fn a_calm_market_pays_the_interest_rate_from_longs_to_shorts() {
        let mut book = PerpBook::new(EIGHT_HOURS_MS, d("0.01"));
        for i in 0..100 {
            let event = book.observe(d("100.00"), d("99.99"), d("100.01"), 1_000 + i);
            assert_eq!(rate_of(&event), d("0.0001"), "0.01 % per 8 hours");
        }
        // A one-hour interval pays an eighth of it.
        assert_eq!(interest_rate(3_600_000), d("0.0000125"));
    }

    #[test]
    fn the_rate_follows_the_premium_and_is_capped() {
        let mut book = PerpBook::new(EIGHT_HOURS_MS, d("0.01"));
        book.observe(d("100"), d("99.99"), d("100.01"), 0);
        // The perpetual runs 1 % above its (lagging) index: a positive premium, longs pay more.
        let mut last = Decimal::ZERO;
        for i in 1..=10 {
            last = rate_of(&book.observe(d("101"), d("101.00"), d("101.02"), i));
        }
        assert!(last > d("0.0001") + INTEREST_CLAMP - d("0.00001"), "{last}");
        // Far below: the rate turns negative (shorts pay) but never past the cap.
        for i in 11..2_000 {
            last = rate_of(&book.observe(d("50"), d("49.99"), d("50.01"), i));
        }
        assert!(last < Decimal::ZERO, "{last}");
        book.premium_sum = d("-1000");
        book.premium_samples = 1;
        assert_eq!(book.funding_rate(), -FUNDING_RATE_CAP);
    }

    #[test]
    fn funding_times_are_on_the_interval_and_a_new_one_restarts_the_average() {
        let mut book = PerpBook::new(2_000, d("0.01"));
        let EventKind::MarkPrice { next_funding_ms, .. } =
            book.observe(d("100"), d("99.99"), d("100.01"), 10_500)
        else {
            panic!()
        };
        assert_eq!(next_funding_ms, Some(12_000));
        for ts in [11_000, 11_999] {
            book.observe(d("110"), d("110.00"), d("110.02"), ts);
        }
        let before = book.funding_rate();
        assert!(before > interest_rate(2_000), "{before}");
        // The funding time passes: the premium average starts again from this trade.
        let EventKind::MarkPrice { next_funding_ms, funding_rate, .. } =
            book.observe(d("100"), d("99.99"), d("100.01"), 12_000)
        else {
            panic!()
        };
        assert_eq!(next_funding_ms, Some(14_000));
        assert_eq!(book.premium_samples, 1);
        assert_ne!(funding_rate, Some(before));
    }

    #[test]
    fn the_mark_is_the_median_of_the_three_prices_on_the_tick() {
        let mut book = PerpBook::new(EIGHT_HOURS_MS, d("0.01"));
        let EventKind::MarkPrice { mark_price, .. } =
            book.observe(d("100.00"), d("99.99"), d("100.01"), 0)
        else {
            panic!()
        };
        assert_eq!(mark_price, d("100.00"));
        // A spike trade moves the last price, not the mark: the index and basis lag behind.
        let EventKind::MarkPrice { mark_price, .. } =
            book.observe(d("120.00"), d("119.99"), d("120.01"), 1)
        else {
            panic!()
        };
        assert!(mark_price > d("100") && mark_price < d("102"), "{mark_price}");
        assert_eq!(mark_price % d("0.01"), Decimal::ZERO);
        assert_eq!(book.index(), Some(d("100.63")));
    }
}
