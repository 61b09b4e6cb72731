//! Login throttling per account and per client IP (governor keyed rate limiters).
//!
//! Every login attempt spends one cell of both the account's and the IP's budget; when either is
//! spent the attempt is refused with 429 and `Retry-After` before any password is hashed, so a
//! guessing attack costs the attacker time and costs Keel no CPU.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keyed login limiters.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    accounts: Arc<DefaultKeyedRateLimiter<String>>,
    ips: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    registrations: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl LoginThrottle {
    /// Limiters allowing `per_account` and `per_ip` attempts per minute (with that burst).
    pub fn new(per_account: u32, per_ip: u32) -> Self {
        Self {
            accounts: Arc::new(RateLimiter::keyed(per_minute(per_account))),
            ips: Arc::new(RateLimiter::keyed(per_minute(per_ip))),
            registrations: Arc::new(RateLimiter::keyed(per_minute(100))),
        }
    }

    /// Allows `per_hour` registrations per client IP (with that burst).
    #[must_use]
    pub fn with_registrations(mut self, per_hour: u32) -> Self {
        let quota = Quota::per_hour(NonZeroU32::new(per_hour).unwrap_or(NonZeroU32::MIN));
        self.registrations = Arc::new(RateLimiter::keyed(quota));
        self
    }

    /// Spends one registration of `ip`'s budget; `Err` carries how long to wait.
    ///
    /// # Errors
    /// The wait until the next registration is allowed.
    pub fn register(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        // An IPv6 address counts by its /64, like every per-address limit.
        let Some(ip) = ip.map(crate::http::limits::ip_key) else { return Ok(()) };
        let now = self.registrations.clock().now();
        self.registrations.check_key(&ip).map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Spends one attempt for `email` from `ip` (an IPv6 address by its /64); `Err` carries how
    /// long to wait.
    ///
    /// # Errors
    /// The wait until the next attempt is allowed.
    pub fn attempt(&self, email: &str, ip: Option<IpAddr>) -> Result<(), Duration> {
        let now = self.ips.clock().now();
        // An IPv6 address counts by its /64, like every per-address limit.
        if let Some(ip) = ip.map(crate::http::limits::ip_key)
            && let Err(not_until) = self.ips.check_key(&ip)
        {
            return Err(not_until.wait_time_from(now));
        }
        self.accounts
            .check_key(&email.to_owned())
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Forgets keys whose budget has fully refilled, so memory stays bounded.
    pub fn prune(&self) {
        self.accounts.retain_recent();
        self.ips.retain_recent();
        self.registrations.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_throttled_after_its_budget_and_others_are_not() {
        let throttle = LoginThrottle::new(3, 100);
        let ip = Some("127.0.0.1".parse().unwrap());
        for _ in 0..3 {
            assert!(throttle.attempt("a@example.com", ip).is_ok());
        }
        let wait = throttle.attempt("a@example.com", ip).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(throttle.attempt("b@example.com", ip).is_ok());
    }

    #[test]
    fn registrations_are_limited_per_ip() {
        let throttle = LoginThrottle::new(5, 20).with_registrations(2);
        let ip = Some("10.0.0.9".parse().unwrap());
        assert!(throttle.register(ip).is_ok());
        assert!(throttle.register(ip).is_ok());
        let wait = throttle.register(ip).unwrap_err();
        assert!(wait > Duration::from_secs(60), "{wait:?}");
        assert!(throttle.register(Some("10.0.0.10".parse().unwrap())).is_ok());
    }

    #[test]
    fn an_ip_is_throttled_across_accounts() {
        let throttle = LoginThrottle::new(100, 2);
        let ip = Some("10.0.0.1".parse().unwrap());
        assert!(throttle.attempt("a@example.com", ip).is_ok());
        assert!(throttle.attempt("b@example.com", ip).is_ok());
        assert!(throttle.attempt("c@example.com", ip).is_err());
        assert!(throttle.attempt("c@example.com", Some("10.0.0.2".parse().unwrap())).is_ok());
    }

    #[test]
    fn an_ipv6_network_is_throttled_by_its_64() {
        let throttle = LoginThrottle::new(100, 2);
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(throttle.attempt("a@example.com", ip("2001:db8:0:1::1")).is_ok());
        assert!(throttle.attempt("b@example.com", ip("2001:db8:0:1::2")).is_ok());
        assert!(throttle.attempt("c@example.com", ip("2001:db8:0:1:ffff::3")).is_err());
        assert!(throttle.attempt("c@example.com", ip("2001:db8:0:2::1")).is_ok());
    }
}
