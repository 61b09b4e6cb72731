//! keel-venues: where Keel meets exchanges. Each venue is one folder behind the connector seam:
//!
//! - [`sim`]: the built-in simulated market (seeded random walks), the offline default;
//! - [`binance`]: Binance spot and USD-M futures: public streams, signed REST orders.
//!
//! [`tls`] installs the process-wide rustls provider every outgoing connection uses.

pub mod binance;
pub mod sim;
pub mod tls;

/// Microseconds since the Unix epoch, now: when Keel received something from a venue.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
