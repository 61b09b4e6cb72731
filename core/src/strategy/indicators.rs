//! Incremental indicators: O(1) work and no allocation per update.
//!
//! They run on `f64` (DESIGN.md allows it for indicators; orders stay exact decimals). Their
//! state serialises, so a restarted bot continues where it was.

use serde::{Deserialize, Serialize};

/// Exponential moving average with `alpha = 2 / (n + 1)`, seeded with the simple average of the
/// first `n` samples (so it does not start biased towards the first one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    period: u32,
    alpha: f64,
    seen: u32,
    sum: f64,
    value: f64,
}

impl Ema {
    /// An EMA over `period` samples (at least 1).
    pub fn new(period: u32) -> Self {
        let period = period.max(1);
        Self { period, alpha: 2.0 / (f64::from(period) + 1.0), seen: 0, sum: 0.0, value: 0.0 }
    }

    /// Adds a sample; returns the value once ready.
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.seen < self.period {
            self.seen += 1;
            self.sum += x;
            if self.seen == self.period {
                self.value = self.sum / f64::from(self.period);
            }
        } else {
            self.value += self.alpha * (x - self.value);
        }
        self.value()
    }

    /// The value, once `period` samples were seen.
    pub fn value(&self) -> Option<f64> {
        (self.seen >= self.period).then_some(self.value)
    }
}

/// Wilder's relative strength index over `period` price changes (0 to 100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rsi {
    period: u32,
    last: Option<f64>,
    changes: u32,
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    /// An RSI over `period` changes (at least 1).
    pub fn new(period: u32) -> Self {
        Self { period: period.max(1), last: None, changes: 0, avg_gain: 0.0, avg_loss: 0.0 }
    }

    /// Adds a price; returns the RSI once `period + 1` prices were seen.
    pub fn update(&mut self, price: f64) -> Option<f64> {
        let last = self.last.replace(price)?;
        let change = price - last;
        let (gain, loss) = (change.max(0.0), (-change).max(0.0));
        let n = f64::from(self.period);
        if self.changes < self.period {
            // Seed with the simple average of the first `period` changes.
            self.changes += 1;
            self.avg_gain += gain / n;
            self.avg_loss += loss / n;
        } else {
            self.avg_gain = (self.avg_gain * (n - 1.0) + gain) / n;
            self.avg_loss = (self.avg_loss * (n - 1.0) + loss) / n;
        }
        self.value()
    }

    /// The RSI, once ready: 100 with only gains, 50 when flat.
    pub fn value(&self) -> Option<f64> {
        if self.changes < self.period {
            return None;
        }
        let (gain, loss) = (self.avg_gain, self.avg_loss);
        Some(if loss == 0.0 {
            if gain == 0.0 { 50.0 } else { 100.0 }
        } else {
            100.0 - 100.0 / (1.0 + gain / loss)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ema_is_seeded_with_the_simple_average_then_smooths() {
        let mut ema = Ema::new(3);
        assert_eq!(ema.update(1.0), None);
        assert_eq!(ema.update(2.0), None);
        assert!(close(ema.update(3.0).unwrap(), 2.0));
        // alpha = 0.5: 2 + 0.5 × (6 − 2) = 4.
        assert!(close(ema.update(6.0).unwrap(), 4.0));
        assert!(close(ema.update(4.0).unwrap(), 4.0));
    }

    #[test]
    fn rsi_matches_hand_computed_values_and_its_edge_cases() {
        let cases: [(&[f64], Option<f64>); 5] = [
            (&[1.0, 2.0], None),
            // Changes +1, +1: only gains.
            (&[1.0, 2.0, 3.0], Some(100.0)),
            (&[3.0, 3.0, 3.0], Some(50.0)),
            // Changes +2, −1: gain 1, loss 0.5, RS 2, RSI 66.67.
            (&[10.0, 12.0, 11.0], Some(100.0 - 100.0 / 3.0)),
            // Then −1.5: gain (1 × 1 + 0) / 2 = 0.5, loss (0.5 + 1.5) / 2 = 1, RS 0.5, RSI 33.33.
            (&[10.0, 12.0, 11.0, 9.5], Some(100.0 - 100.0 / 1.5)),
        ];
        for (prices, expected) in cases {
            let mut rsi = Rsi::new(2);
            let mut got = None;
            for p in prices {
                got = rsi.update(*p);
            }
            match (got, expected) {
                (Some(g), Some(e)) => assert!(close(g, e), "{prices:?}: {g} vs {e}"),
                (g, e) => assert_eq!(g, e, "{prices:?}"),
            }
        }
    }
}
