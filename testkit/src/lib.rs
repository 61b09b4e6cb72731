//! keel-testkit: helpers shared by Keel's tests, benches and examples (dev-only, never in the
//! binary).
//!
//! - [`fake_binance`]: a loopback fake of Binance's combined-stream WebSocket, with faults;
//! - [`fake_rest`]: a loopback fake of Binance's spot REST API (signed orders), with faults;
//! - [`hmac_sha256_hex`]: request signing done independently of Keel's vault, so the fakes check
//!   Keel's signatures rather than agree with them by construction.
//!
//! `fixtures/` holds verbatim copies of the venues' documented wire-format samples.

#![allow(clippy::unwrap_used)] // test support: a panic is a failed test with its line

pub mod fake_binance;
pub mod fake_rest;

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
