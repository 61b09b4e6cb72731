//! When a failed delivery is tried again: exponential backoff with full jitter, capped.

use std::time::Duration;

/// The retry schedule of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure (before jitter).
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Attempts in all, the first included; past it a delivery is `failed`.
    pub max_attempts: u32,
}

impl Backoff {
    /// The wait after `attempts` failed attempts (1 after the first), with `jitter` in [0, 1)
    /// drawn by the caller: between half and all of `base × 2^(attempts−1)`, capped at `max`.
    /// `None` once `attempts` reaches the cap: give up.
    pub fn next_delay(&self, attempts: u32, jitter: f64) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        Some(full.mul_f64(0.5 + jitter / 2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_up_to_the_cap_then_gives_up() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: 6,
        };
        assert_eq!(b.next_delay(1, 0.0), Some(Duration::from_millis(50)));
        assert_eq!(b.next_delay(1, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(b.next_delay(2, 1.0), Some(Duration::from_millis(200)));
        assert_eq!(b.next_delay(3, 0.5), Some(Duration::from_millis(300)));
        assert_eq!(b.next_delay(5, 1.0), Some(Duration::from_secs(1)), "capped");
        assert_eq!(b.next_delay(6, 0.0), None);
        assert_eq!(b.next_delay(60, 0.0), None);
        let long = Backoff { max_attempts: 100, ..b };
        assert_eq!(long.next_delay(90, 1.0), Some(Duration::from_secs(1)), "no overflow");
    }
}
