//! keel-venues: where Keel meets exchanges, behind one seam.
//!
//! The seam is two traits: [`market::MarketConnector`] (what a feed needs: stream names,
//! subscribe requests, frame parsing, limits, reconnect policy, instrument rules) and
//! [`routing::OrderRouter`] (what a live bot needs: place, cancel, query, balances). Each venue
//! is one folder implementing them, listed once in the [`registry`]:
//!
//! - [`sim`]: the built-in simulated market (seeded random walks), the offline default;
//! - [`sim_perp`]: simulated USDT perpetuals over the same walks, with mark price, funding
//!   and (through Keel's paper futures) leverage, shorts and liquidation; offline, paper only;
//! - [`binance`]: Binance spot: public streams, signed REST orders;
//! - [`binance_futures`]: Binance USD-M futures: public streams with liquidations (Binance's
//!   wire format, shared with [`binance`]);
//! - [`bybit`]: Bybit spot (v5): public streams, signed REST orders;
//! - [`bybit_linear`]: Bybit USDT perpetuals: public streams with liquidations (Bybit's wire
//!   format, shared with [`bybit`]).
//!
//! [`bracket_legs`] is the one flow that sends a native bracket's two legs on a venue that does
//! not link them (both futures venues). [`account`] is the seam's account stream (order executions and balances pushed by the
//! venue); [`connection`] is the generic WebSocket driver upstream connectors plug into; [`clock`]
//! keeps a venue's server-time offset for signed requests; [`budget`] is what a connector asks
//! before it sends a new order (the account's order budget, shared between nodes in cluster mode); [`tls`] installs the process-wide
//! rustls provider every outgoing connection uses.

pub mod account;
pub mod binance;
pub mod binance_futures;
pub mod bracket_legs;
pub mod budget;
pub mod bybit;
pub mod bybit_linear;
pub mod clock;
pub mod connection;
pub mod market;
pub mod registry;
pub mod routing;
pub mod sim;
pub mod sim_perp;
pub mod tls;

/// Microseconds since the Unix epoch, now: when Keel received something from a venue.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Percent-encodes a query value (venues' values are ASCII; anything else is escaped). Signed
/// query strings are signed exactly as sent, so one encoder builds both.
pub(crate) fn urlencode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
