//! Master keys: parsing, generation, identification, and the key ring used while rotating.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use orion::hazardous::aead::xchacha20poly1305::SecretKey;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::VaultError;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// Domain separation for key ids, so an id never equals a hash of the key used elsewhere.
const KEY_ID_CONTEXT: &[u8] = b"keel.vault.key-id.v1";
/// The label MACed into the key check value ([`MasterKey::check_value`]).
const KEY_CHECK_LABEL: &[u8] = b"keel.vault.key-check.v1";

/// A master key and its id. The id is stored in every envelope it wraps (the envelope's key
/// version) and tells the vault which key opens it.
pub struct MasterKey {
    key: SecretKey,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Parses the configuration form: base64 (standard alphabet) of exactly 32 bytes.
    ///
    /// # Errors
    /// [`VaultError::InvalidMasterKey`] saying what is wrong, never echoing the value.
    pub fn from_base64(encoded: &SecretString) -> Result<Self, VaultError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded.expose_secret().trim())
                .map_err(|_| VaultError::InvalidMasterKey("is not valid base64".into()))?,
        );
        if bytes.len() != MASTER_KEY_LEN {
            return Err(VaultError::InvalidMasterKey(format!(
                "decodes to {} bytes; it must be {MASTER_KEY_LEN}",
                bytes.len()
            )));
        }
        Self::from_bytes(&bytes)
    }

    /// A new random key.
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn generate() -> Result<Self, VaultError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        orion::util::secure_rand_bytes(bytes.as_mut_slice()).map_err(|_| VaultError::Crypto)?;
        Self::from_bytes(bytes.as_slice())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let mut material = Zeroizing::new(KEY_ID_CONTEXT.to_vec());
        material.extend_from_slice(bytes);
        let digest = orion::hash::digest(&material).map_err(|_| VaultError::Crypto)?;
        let id = hex::encode(&digest.as_ref()[..8]);
        let key = SecretKey::try_from(bytes).map_err(|_| VaultError::Crypto)?;
        Ok(Self { key, id })
    }

    /// The configuration form of this key, for `keel vault keygen` and the development key file.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.key.unprotected_as_ref::<[u8]>()))
    }

    /// The key's id (16 hex digits), recorded as the key version of every envelope.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key check value: HMAC-SHA256 of a fixed label under the key, hex. It tells whether
    /// two nodes have the same key without revealing it (the cluster records the first node's).
    ///
    /// # Errors
    /// The MAC cannot be computed.
    pub fn check_value(&self) -> Result<String, VaultError> {
        super::hmac_sha256_hex(self.key.unprotected_as_ref(), KEY_CHECK_LABEL)
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.key
    }
}

/// The key new envelopes are sealed with, and optionally the one a rotation is moving away
/// from, so every credential stays readable while some are wrapped under each.
#[derive(Debug)]
pub struct KeyRing {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl KeyRing {
    /// A ring with only `current`.
    pub fn new(current: MasterKey) -> Self {
        Self { current, previous: None }
    }

    /// Also accepts envelopes wrapped under `previous`.
    pub fn with_previous(mut self, previous: MasterKey) -> Self {
        if previous.id != self.current.id {
            self.previous = Some(previous);
        }
        self
    }

    /// The key new envelopes use.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The key with this id, if the ring has it.
    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref()).find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_base64_with_a_stable_id() {
        let key = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.id(), again.id());
        assert_eq!(key.id().len(), 16);
        assert_ne!(key.id(), MasterKey::generate().unwrap().id());
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for (value, expected) in [
            ("not base64 at all!", "base64"),
            ("c2hvcnQ=", "5 bytes"),
            (&STANDARD.encode([7u8; 33])[..], "33 bytes"),
        ] {
            let err = MasterKey::from_base64(&SecretString::from(value.to_owned())).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains(value), "the key leaked into {text}");
        }
    }
}
