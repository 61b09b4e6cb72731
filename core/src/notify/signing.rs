//! The webhook signature: `Keel-Signature: t=UNIX_SECONDS,v1=HEX`, where HEX is the lowercase
//! hex HMAC-SHA256, keyed with the channel's signing secret (its UTF-8 bytes, `whsec_` prefix
//! included), of `t + "." + body`. A receiver recomputes it over the raw body, compares in
//! constant time and refuses a `t` too far from its clock (docs/NOTIFICATIONS.md).

use orion::hazardous::mac::hmac::sha256::{HmacSha256, SecretKey, Tag};

/// The header's name.
pub const SIGNATURE_HEADER: &str = "Keel-Signature";

/// The signature scheme's version tag in the header.
pub const SCHEME: &str = "v1";

/// Why a signature could not be made or did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The MAC could not be computed.
    #[error("HMAC failed")]
    Mac,
    /// The header is not `t=…,v1=…`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("signature timestamp outside the tolerance")]
    Stale,
    /// No `v1` signature matches.
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Result<Tag, SignatureError> {
    let key = SecretKey::try_from(secret).map_err(|_| SignatureError::Mac)?;
    let mut state = HmacSha256::new(&key);
    let prefix = format!("{timestamp}.");
    state.update(prefix.as_bytes()).map_err(|_| SignatureError::Mac)?;
    state.update(body).map_err(|_| SignatureError::Mac)?;
    state.finalize().map_err(|_| SignatureError::Mac)
}

/// The `Keel-Signature` value for `body` sent at `timestamp` (Unix seconds).
///
/// # Errors
/// [`SignatureError::Mac`] if the MAC cannot be computed.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> Result<String, SignatureError> {
    let tag = mac(secret, timestamp, body)?;
    Ok(format!("t={timestamp},{SCHEME}={}", hex::encode(tag.unprotected_as_ref())))
}

/// Checks a `Keel-Signature` value as a receiver would: some `v1` matches `body` (compared in
/// constant time) and `t` is within `tolerance_secs` of `now_secs`.
///
/// # Errors
/// What is wrong with it.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some((SCHEME, sig)) => signatures.push(sig),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_secs.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp, body)?;
    for sig in signatures {
        if let Ok(raw) = hex::decode(sig)
            && Tag::try_from(raw.as_slice()).is_ok_and(|tag| tag == expected)
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_t_dot_body_with_hmac_sha256() {
        // `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test`
        let header = sign(b"whsec_test", 1_700_000_000, br#"{"a":1}"#).unwrap();
        assert_eq!(
            header,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn verifies_what_it_signs_and_nothing_else() {
        let body = br#"{"type":"fill"}"#;
        let header = sign(b"s3cret", 100, body).unwrap();
        assert_eq!(verify(b"s3cret", &header, body, 100, 300), Ok(()));
        assert_eq!(verify(b"s3cret", &header, body, 350, 300), Ok(()));
        assert_eq!(verify(b"other", &header, body, 100, 300), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(b"s3cret", &header, br#"{"type":"fil"}"#, 100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"s3cret", &header, body, 401, 300), Err(SignatureError::Stale));
        assert_eq!(verify(b"s3cret", "v1=00", body, 100, 300), Err(SignatureError::Malformed));
        assert_eq!(verify(b"s3cret", "t=100", body, 100, 300), Err(SignatureError::Malformed));
        let rotated = format!("{header},v1=deadbeef");
        assert_eq!(verify(b"s3cret", &rotated, body, 100, 300), Ok(()));
    }
}
