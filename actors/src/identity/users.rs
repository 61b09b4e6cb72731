//! User accounts and the email index.

use keel_core::bot::user_risk::UserRiskLimits;
use serde::{Deserialize, Serialize};

use super::{IdentityError, now_ms};
use crate::store::{Store, StoreError, TxResult, decode, encode, id_key, trees};

/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;

/// A stored user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id.
    pub id: u64,
    /// Normalised email.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// When the account was created, ms since the epoch.
    pub created_at_ms: u64,
    /// The owner's limits over all of their bots (`PUT /me/risk`); none for a user stored
    /// before they existed.
    #[serde(default)]
    pub risk: UserRiskLimits,
}

/// Normalises an email (trimmed, lowercased) and checks its shape.
///
/// # Errors
/// A message for the `email` field.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty".into());
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an email address".into());
    };
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err("must be an email address".into());
    }
    Ok(email)
}

/// The users and their email index.
#[derive(Debug, Clone)]
pub struct Users {
    store: Store,
    users: sled::Tree,
    emails: sled::Tree,
}

impl Users {
    /// Opens the trees.
    ///
    /// # Errors
    /// The store failed.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        Ok(Self {
            users: store.tree(trees::USERS)?,
            emails: store.tree(trees::USER_EMAILS)?,
            store,
        })
    }

    /// Creates a user with an already normalised email. Not durable until `Store::commit`.
    ///
    /// # Errors
    /// [`IdentityError::EmailTaken`], or a store failure.
    pub fn create(&self, email: &str, password_hash: String) -> Result<UserRecord, IdentityError> {
        let user = UserRecord {
            id: self.store.next_id()?,
            email: email.to_owned(),
            password_hash,
            created_at_ms: now_ms(),
            risk: UserRiskLimits::default(),
        };
        let value = encode(&user)?;
        let created =
            self.store.transaction(&[&self.users, &self.emails], |tx| -> TxResult<bool> {
                if tx[1].get(user.email.as_bytes())?.is_some() {
                    return Ok(false);
                }
                tx[1].insert(user.email.as_bytes(), &id_key(user.id))?;
                tx[0].insert(&id_key(user.id), value.as_slice())?;
                Ok(true)
            })?;
        if created { Ok(user) } else { Err(IdentityError::EmailTaken) }
    }

    /// The user with this id.
    ///
    /// # Errors
    /// The store failed or the record does not decode.
    pub fn get(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        self.users.get(id_key(id))?.map(|raw| decode(&raw)).transpose()
    }

    /// Whether a user with this id exists (cheaper than [`Users::get`]).
    ///
    /// # Errors
    /// The store failed.
    pub fn exists(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.users.contains_key(id_key(id))?)
    }

    /// Whether this store holds no user at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user with this normalised email.
    ///
    /// # Errors
    /// The store failed or a record does not decode.
    pub fn by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.emails.get(email.as_bytes())? {
            Some(id) => self.get(crate::store::key_id(&id)?),
            None => Ok(None),
        }
    }

    /// Replaces a user's password hash; false if there is no such user. Not durable until
    /// `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn set_password(&self, id: u64, password_hash: String) -> Result<bool, StoreError> {
        self.modify(id, |user| user.password_hash.clone_from(&password_hash))
    }

    /// Replaces a user's limits over all of their bots; false if there is no such user. Not
    /// durable until `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn set_risk(&self, id: u64, risk: &UserRiskLimits) -> Result<bool, StoreError> {
        self.modify(id, |user| user.risk.clone_from(risk))
    }

    /// Changes one user's record in place, atomically: two changes of different fields at once
    /// (a password and the limits) both land. False if there is no such user.
    fn modify(&self, id: u64, change: impl Fn(&mut UserRecord)) -> Result<bool, StoreError> {
        let mut outcome: Result<bool, StoreError> = Ok(false);
        self.users.update_and_fetch(id_key(id), |old| {
            // sled may call this more than once (a concurrent write): each call starts over.
            let old = old?;
            let changed = decode::<UserRecord>(old).and_then(|mut user| {
                change(&mut user);
                encode(&user)
            });
            match changed {
                Ok(value) => {
                    outcome = Ok(true);
                    Some(value)
                }
                Err(err) => {
                    outcome = Err(err);
                    Some(old.to_vec())
                }
            }
        })?;
        outcome
    }

    /// Deletes a user and frees their email. True if they existed. Not durable until
    /// `Store::commit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn delete(&self, id: u64) -> Result<bool, StoreError> {
        let Some(user) = self.get(id)? else { return Ok(false) };
        self.store.transaction(&[&self.users, &self.emails], |tx| -> TxResult<()> {
            tx[0].remove(&id_key(id))?;
            tx[1].remove(user.email.as_bytes())?;
            Ok(())
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn emails_are_normalised_and_checked() {
        let cases = [
            ("  Alice@Example.COM ", Ok("alice@example.com")),
            ("bob@mail.example.org", Ok("bob@mail.example.org")),
            ("", Err(())),
            ("no-at-sign.example.com", Err(())),
            ("two@@example.com", Err(())),
            ("a@b@example.com", Err(())),
            ("spaced out@example.com", Err(())),
            ("nodot@localhost", Err(())),
            ("dots@example..com", Err(())),
            ("@example.com", Err(())),
        ];
        for (raw, expected) in cases {
            let got = normalize_email(raw);
            match expected {
                Ok(email) => assert_eq!(got.as_deref(), Ok(email), "{raw:?}"),
                Err(()) => assert!(got.is_err(), "{raw:?} was accepted as {got:?}"),
            }
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn an_email_can_belong_to_one_user_only_until_it_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(Store::open(&StoreConfig::new(dir.path())).unwrap()).unwrap();
        let alice = users.create("alice@example.com", "h".into()).unwrap();
        assert!(matches!(
            users.create("alice@example.com", "h".into()),
            Err(IdentityError::EmailTaken)
        ));
        assert_eq!(users.by_email("alice@example.com").unwrap().unwrap().id, alice.id);
        assert!(users.exists(alice.id).unwrap());
        assert!(users.delete(alice.id).unwrap());
        assert!(!users.exists(alice.id).unwrap());
        assert!(users.by_email("alice@example.com").unwrap().is_none());
        let again = users.create("alice@example.com", "h".into()).unwrap();
        assert!(users.set_password(again.id, "h2".into()).unwrap());
        assert_eq!(users.get(again.id).unwrap().unwrap().password_hash, "h2");
        assert!(!users.set_password(alice.id, "h3".into()).unwrap());
    }

    #[test]
    fn limits_are_kept_with_the_user_and_a_password_change_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::new(Store::open(&StoreConfig::new(dir.path())).unwrap()).unwrap();
        let ada = users.create("ada@example.com", "h".into()).unwrap();
        assert_eq!(users.get(ada.id).unwrap().unwrap().risk, UserRiskLimits::default());
        let limits = UserRiskLimits {
            max_leverage: Some(5),
            max_notional: Some(rust_decimal::Decimal::from(2500)),
        };
        assert!(users.set_risk(ada.id, &limits).unwrap());
        assert!(users.set_password(ada.id, "h2".into()).unwrap());
        let stored = users.get(ada.id).unwrap().unwrap();
        assert_eq!((stored.risk, stored.password_hash.as_str()), (limits.clone(), "h2"));
        assert!(!users.set_risk(ada.id + 100, &limits).unwrap());
        // A record written before the limits existed reads as having none.
        let old = serde_json::json!({"id": 9, "email": "old@example.com", "password_hash": "h",
            "created_at_ms": 1});
        let old: UserRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.risk, UserRiskLimits::default());
    }
}
