//! keel-testkit: helpers shared by Keel's tests, benches and examples (dev-only, never in the
//! binary).
//!
//! - [`fake_binance`]: a loopback fake of Binance's combined-stream WebSocket, with faults;
//! - [`fake_rest`]: a loopback fake of Binance's spot REST API (signed orders), with faults;
//! - [`fake_futures`]: a loopback fake of Binance's USD-M futures REST API (orders, conditional
//!   orders of the Algo Order API, leverage, margin type, positions, funding) and user data
//!   stream, strict like the venue;
//! - [`fake_user_stream`]: a loopback fake of Binance's WebSocket API user data stream
//!   (signature subscriptions, pushed account events), with faults;
//! - [`hmac_sha256_hex`]: request signing done independently of Keel's vault, so the fakes check
//!   Keel's signatures rather than agree with them by construction.
//!
//! With the `app` feature (on by default), the real application for integration tests:
//! - `app`: [`spawn_app`] starts Keel on port 0 with its own data directory and gives a
//!   [`TestApp`] with the plain HTTP calls;
//! - `auth`, `bots`, `backtests`, `health`: typed helpers for one area of the API each
//!   (`app.register(..)`, `app.create_bot(..)`, [`quiet_bot`], ...);
//! - `asserts`: [`assert_error`] for the one error shape and [`eventually`] for polling.
//!
//! `app` depends on the root `keel` package, which dev-depends on this crate: cargo allows that
//! cycle for dev-dependencies, and `keel`'s integration tests then link one `keel` library, so
//! a `keel::configuration::Settings` in a test is the one [`spawn_app_with`] adjusts. The feature
//! keeps `keel-venues` and `keel-actors`, which only need the fakes, from building the whole
//! application for their own tests.
//!
//! `fixtures/` holds verbatim copies of the venues' documented wire-format samples.

#![allow(clippy::unwrap_used)] // test support: a panic is a failed test with its line

pub mod fake_binance;
pub mod fake_bybit;
pub mod fake_bybit_private;
pub mod fake_bybit_stream;
pub mod fake_futures;
pub mod fake_hook;
pub mod fake_rest;
pub mod fake_user_stream;
mod http_wire;
pub mod routing;

#[cfg(feature = "app")]
mod app;
#[cfg(feature = "app")]
mod asserts;
#[cfg(feature = "app")]
mod auth;
#[cfg(feature = "app")]
mod backtests;
#[cfg(feature = "app")]
mod bots;
#[cfg(feature = "app")]
mod health;
#[cfg(feature = "app")]
pub mod linear;
#[cfg(feature = "app")]
mod strategies;

#[cfg(feature = "app")]
pub use app::{JWT_SECRET, TestApp, http_client, spawn_app, spawn_app_with, test_settings};
#[cfg(feature = "app")]
pub use asserts::{assert_error, error_fields, eventually};
#[cfg(feature = "app")]
pub use auth::{PASSWORD, Tokens};
#[cfg(feature = "app")]
pub use bots::quiet_bot;

use orion::hazardous::mac::hmac::sha256::{HmacSha256, SecretKey};

/// HMAC-SHA256 of `payload` under `secret`, lower-case hex: Binance's `signature` parameter.
///
/// # Panics
/// Never for a secret of any length (HMAC accepts every key length); an empty secret panics.
pub fn hmac_sha256_hex(secret: &[u8], payload: &[u8]) -> String {
    let key = SecretKey::try_from(secret).expect("an HMAC key of at least one byte");
    let tag = HmacSha256::hmac(&key, payload).expect("HMAC over any payload");
    hex::encode(tag.unprotected_as_ref::<[u8]>())
}

#[cfg(test)]
mod tests {
    /// Binance's documented example (`fixtures/binance/signing.txt`).
    #[test]
    fn signs_binances_documented_example() {
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            super::hmac_sha256_hex(secret.as_bytes(), payload.as_bytes()),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }
}
