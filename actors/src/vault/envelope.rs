//! Envelope encryption with XChaCha20-Poly1305.
//!
//! Each secret gets its own random data key (DEK). The DEK encrypts the secret; the master key
//! wraps the DEK. Both encryptions authenticate associated data binding the user id, the
//! credential id and the master key's id, so an envelope copied onto another user's or another
//! credential's record fails to open, and rotating the master key only re-wraps the small DEKs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use orion::hazardous::aead::xchacha20poly1305::{Nonce, SecretKey, XChaCha20Poly1305};
use orion::hazardous::mac::poly1305::POLY1305_OUTSIZE;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::VaultError;
use super::keys::{KeyRing, MasterKey};

/// Length of a data key in bytes.
const DEK_LEN: usize = 32;

/// What an envelope is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// Owner of the credential.
    pub user_id: u64,
    /// The credential.
    pub credential_id: u64,
    /// Which field of the credential (`api_key`, `api_secret`).
    pub field: &'a str,
}

impl Binding<'_> {
    fn associated_data(&self, key_id: &str, part: &str) -> Vec<u8> {
        format!(
            "keel.vault.v1|user={}|credential={}|field={}|key={key_id}|{part}",
            self.user_id, self.credential_id, self.field
        )
        .into_bytes()
    }
}

/// An encrypted secret as stored. Every field but `key_id` is base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Id of the master key that wraps the DEK: the envelope's key version.
    pub key_id: String,
    /// Nonce of the DEK wrapping.
    pub dek_nonce: String,
    /// The wrapped DEK with its tag.
    pub wrapped_dek: String,
    /// Nonce of the secret's encryption.
    pub nonce: String,
    /// The encrypted secret with its tag.
    pub ciphertext: String,
}

fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<(String, String), VaultError> {
    let nonce = Nonce::generate().map_err(|_| VaultError::Crypto)?;
    let mut out = vec![0u8; plaintext.len() + POLY1305_OUTSIZE];
    XChaCha20Poly1305::seal(key, &nonce, plaintext, Some(aad), &mut out)
        .map_err(|_| VaultError::Crypto)?;
    Ok((STANDARD.encode(nonce.as_ref()), STANDARD.encode(out)))
}

fn open(
    key: &SecretKey,
    aad: &[u8],
    nonce: &str,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let nonce = STANDARD.decode(nonce).map_err(|_| VaultError::Tampered)?;
    let nonce = Nonce::try_from(nonce.as_slice()).map_err(|_| VaultError::Tampered)?;
    let sealed = STANDARD.decode(sealed).map_err(|_| VaultError::Tampered)?;
    if sealed.len() < POLY1305_OUTSIZE {
        return Err(VaultError::Tampered);
    }
    let mut out = Zeroizing::new(vec![0u8; sealed.len() - POLY1305_OUTSIZE]);
    XChaCha20Poly1305::open(key, &nonce, &sealed, Some(aad), &mut out)
        .map_err(|_| VaultError::Tampered)?;
    Ok(out)
}

fn wrap_dek(
    master: &MasterKey,
    binding: &Binding<'_>,
    dek: &[u8],
) -> Result<(String, String), VaultError> {
    seal(master.secret(), &binding.associated_data(master.id(), "dek"), dek)
}

impl Envelope {
    /// Encrypts `plaintext` under a fresh DEK wrapped by the ring's current key.
    ///
    /// # Errors
    /// The random source or the cipher failed.
    pub fn seal(
        ring: &KeyRing,
        binding: &Binding<'_>,
        plaintext: &[u8],
    ) -> Result<Self, VaultError> {
        let master = ring.current();
        let dek = SecretKey::generate().map_err(|_| VaultError::Crypto)?;
        let (nonce, ciphertext) =
            seal(&dek, &binding.associated_data(master.id(), "data"), plaintext)?;
        let (dek_nonce, wrapped_dek) = wrap_dek(master, binding, dek.unprotected_as_ref::<[u8]>())?;
        Ok(Self { key_id: master.id().to_owned(), dek_nonce, wrapped_dek, nonce, ciphertext })
    }

    fn data_key(&self, ring: &KeyRing, binding: &Binding<'_>) -> Result<SecretKey, VaultError> {
        let master =
            ring.find(&self.key_id).ok_or_else(|| VaultError::UnknownKey(self.key_id.clone()))?;
        let dek = open(
            master.secret(),
            &binding.associated_data(&self.key_id, "dek"),
            &self.dek_nonce,
            &self.wrapped_dek,
        )?;
        if dek.len() != DEK_LEN {
            return Err(VaultError::Tampered);
        }
        SecretKey::try_from(dek.as_slice()).map_err(|_| VaultError::Tampered)
    }

    /// Decrypts the secret. The result is wiped from memory when dropped.
    ///
    /// # Errors
    /// [`VaultError::UnknownKey`] when no key in the ring wrapped it, [`VaultError::Tampered`]
    /// when it does not authenticate (edited, or bound to another user or credential).
    pub fn open(
        &self,
        ring: &KeyRing,
        binding: &Binding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let dek = self.data_key(ring, binding)?;
        open(&dek, &binding.associated_data(&self.key_id, "data"), &self.nonce, &self.ciphertext)
    }

    /// Whether the ring's current key wraps this envelope.
    pub fn is_current(&self, ring: &KeyRing) -> bool {
        self.key_id == ring.current().id()
    }

    /// Re-wraps the DEK under `to` (opening it with `ring`). The secret is re-encrypted too,
    /// because its associated data names the key id.
    ///
    /// # Errors
    /// As [`Envelope::open`].
    pub fn rewrap(
        &self,
        ring: &KeyRing,
        to: &KeyRing,
        binding: &Binding<'_>,
    ) -> Result<Self, VaultError> {
        let plaintext = self.open(ring, binding)?;
        Self::seal(to, binding, &plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(MasterKey::generate().unwrap())
    }

    const BINDING: Binding<'static> =
        Binding { user_id: 1, credential_id: 10, field: "api_secret" };

    #[test]
    fn a_sealed_secret_opens_under_its_binding() {
        let ring = ring();
        let envelope = Envelope::seal(&ring, &BINDING, b"s3cret").unwrap();
        assert_eq!(envelope.key_id, ring.current().id());
        assert_eq!(envelope.open(&ring, &BINDING).unwrap().as_slice(), b"s3cret");
        assert!(!envelope.ciphertext.contains("s3cret"));
    }

    #[test]
    fn an_envelope_moved_to_another_user_credential_or_field_does_not_open() {
        let ring = ring();
        let envelope = Envelope::seal(&ring, &BINDING, b"s3cret").unwrap();
        for other in [
            Binding { user_id: 2, ..BINDING },
            Binding { credential_id: 11, ..BINDING },
            Binding { field: "api_key", ..BINDING },
        ] {
            assert!(matches!(envelope.open(&ring, &other), Err(VaultError::Tampered)), "{other:?}");
        }
    }

    #[test]
    fn an_edited_envelope_does_not_open() {
        let ring = ring();
        let envelope = Envelope::seal(&ring, &BINDING, b"s3cret").unwrap();
        let mut raw = STANDARD.decode(&envelope.ciphertext).unwrap();
        raw[0] ^= 1;
        let edited = Envelope { ciphertext: STANDARD.encode(raw), ..envelope.clone() };
        assert!(matches!(edited.open(&ring, &BINDING), Err(VaultError::Tampered)));
        let garbage = Envelope { wrapped_dek: "!!".into(), ..envelope };
        assert!(matches!(garbage.open(&ring, &BINDING), Err(VaultError::Tampered)));
    }

    #[test]
    fn another_master_key_cannot_open_it_until_it_is_in_the_ring() {
        let old = ring();
        let envelope = Envelope::seal(&old, &BINDING, b"s3cret").unwrap();
        let new_key = MasterKey::generate().unwrap();
        let new_only = KeyRing::new(MasterKey::from_base64(&new_key.to_base64()).unwrap());
        assert!(matches!(envelope.open(&new_only, &BINDING), Err(VaultError::UnknownKey(_))));
        let rewrapped = envelope.rewrap(&old, &new_only, &BINDING).unwrap();
        assert!(rewrapped.is_current(&new_only));
        assert_eq!(rewrapped.open(&new_only, &BINDING).unwrap().as_slice(), b"s3cret");
        let transition = KeyRing::new(new_key)
            .with_previous(MasterKey::from_base64(&old.current().to_base64()).unwrap());
        assert_eq!(envelope.open(&transition, &BINDING).unwrap().as_slice(), b"s3cret");
    }
}
