//! Owners' own limits over all of their bots (`GET/PUT /api/v1/me/risk`): stored with the user
//! (`users` tree), read once per user and kept in memory, and handed to the [`ExposureBook`] so
//! every bot of the owner sees their `max_notional` on its next refresh. When the users are in
//! the cluster's Postgres, the record is `keel_user_limits` there (`bot::pg::limits`, written
//! by the supervisor under the user's fence) and the `user_limits` tree is the owner node's
//! working copy, set when it takes the user and forgotten when it loses them.
//!
//! Nothing is read at start-up: an owner's limits are loaded the first time one of their bots
//! launches or they are asked for, so start-up reads only the running bots' owners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::bot::UserId;
use keel_core::bot::user_risk::UserRiskLimits;

use super::exposure::ExposureBook;
use crate::identity::Users;
use crate::store::{Store, StoreError, decode, encode, id_key, trees};

/// Where owners' limits are stored.
#[derive(Debug, Clone)]
enum Stored {
    /// In each user's `users` row.
    WithUser(Users),
    /// In the `user_limits` tree, by user id (the users are in the cluster's Postgres).
    OnTheirOwn(sled::Tree),
}

/// Owners' limits, cached; cloning shares the cache.
#[derive(Debug, Clone)]
pub struct UserLimits {
    stored: Stored,
    book: Arc<ExposureBook>,
    cache: Arc<Mutex<HashMap<UserId, UserRiskLimits>>>,
}

impl UserLimits {
    /// Limits read from `users`, their notional enforced through `book`.
    pub fn new(users: Users, book: Arc<ExposureBook>) -> Self {
        Self { stored: Stored::WithUser(users), book, cache: Arc::default() }
    }

    /// Limits kept in `store`'s `user_limits` tree, by user id: for a node whose users are in
    /// the cluster's Postgres, so have no `users` row here.
    ///
    /// # Errors
    /// The tree cannot be opened.
    pub fn on_their_own(store: &Store, book: Arc<ExposureBook>) -> Result<Self, StoreError> {
        let tree = store.tree(trees::USER_LIMITS)?;
        Ok(Self { stored: Stored::OnTheirOwn(tree), book, cache: Arc::default() })
    }

    fn read(&self, user: UserId) -> Result<UserRiskLimits, StoreError> {
        match &self.stored {
            Stored::WithUser(users) => Ok(users.get(user)?.map(|u| u.risk).unwrap_or_default()),
            Stored::OnTheirOwn(tree) => tree
                .get(id_key(user))?
                .map(|raw| decode(&raw))
                .transpose()
                .map(Option::unwrap_or_default),
        }
    }

    fn write(&self, user: UserId, limits: &UserRiskLimits) -> Result<bool, StoreError> {
        match &self.stored {
            Stored::WithUser(users) => users.set_risk(user, limits),
            // The caller is authenticated: the user exists in Postgres.
            Stored::OnTheirOwn(tree) => {
                tree.insert(id_key(user), encode(limits)?)?;
                Ok(true)
            }
        }
    }

    /// The book every bot publishes its exposure to.
    pub fn book(&self) -> &Arc<ExposureBook> {
        &self.book
    }

    /// `user`'s limits (none for a user without any, or who no longer exists).
    ///
    /// # Errors
    /// The store failed.
    pub fn get(&self, user: UserId) -> Result<UserRiskLimits, StoreError> {
        // Read under the lock, so a `set` meanwhile cannot be overwritten by an older read.
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(limits) = cache.get(&user) {
            return Ok(limits.clone());
        }
        let limits = self.read(user)?;
        self.book.set_owner_limit(user, limits.max_notional);
        cache.insert(user, limits.clone());
        Ok(limits)
    }

    /// Stores `user`'s limits and applies them: bots see a new `max_notional` on their next
    /// refresh. False if there is no such user. Not durable until `Store::commit`.
    ///
    /// # Errors
    /// The store failed; nothing changed.
    pub fn set(&self, user: UserId, limits: &UserRiskLimits) -> Result<bool, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.write(user, limits)? {
            return Ok(false);
        }
        self.book.set_owner_limit(user, limits.max_notional);
        cache.insert(user, limits.clone());
        Ok(true)
    }

    /// Forgets a user whose account is being deleted (and, kept on their own, their stored
    /// limits; durable with the deletion's commit).
    pub fn forget(&self, user: UserId) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(&user);
        self.book.set_owner_limit(user, None);
        if let Stored::OnTheirOwn(tree) = &self.stored
            && let Err(err) = tree.remove(id_key(user))
        {
            tracing::warn!(user_id = user, error = %err, "removing an owner's limits failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::store::{Store, StoreConfig};

    #[test]
    fn limits_are_loaded_once_set_through_and_reach_the_book() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let users = Users::new(store.clone()).unwrap();
        let ada = users.create("ada@example.com", "h".into()).unwrap();
        let stored = UserRiskLimits { max_leverage: Some(3), max_notional: Some(Decimal::TEN) };
        users.set_risk(ada.id, &stored).unwrap();

        let limits = UserLimits::new(users.clone(), Arc::new(ExposureBook::new(None)));
        assert_eq!(limits.get(ada.id).unwrap(), stored);
        assert_eq!(limits.book().owner_notional(ada.id, 1).unwrap().limit, Decimal::TEN);
        assert_eq!(limits.get(ada.id + 50).unwrap(), UserRiskLimits::default());

        let lifted = UserRiskLimits { max_leverage: Some(3), max_notional: None };
        assert!(limits.set(ada.id, &lifted).unwrap());
        assert_eq!(limits.book().owner_notional(ada.id, 1), None);
        assert_eq!(users.get(ada.id).unwrap().unwrap().risk, lifted);
        // A fresh cache over the same store reads what was stored.
        let again = UserLimits::new(users, Arc::new(ExposureBook::new(None)));
        assert_eq!(again.get(ada.id).unwrap(), lifted);
        assert!(!limits.set(ada.id + 50, &lifted).unwrap());
    }

    #[test]
    fn limits_kept_on_their_own_need_no_user_row_and_go_with_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let book = || Arc::new(ExposureBook::new(None));
        let limits = UserLimits::on_their_own(&store, book()).unwrap();
        assert_eq!(limits.get(42).unwrap(), UserRiskLimits::default());
        let set = UserRiskLimits { max_leverage: Some(2), max_notional: Some(Decimal::ONE) };
        assert!(limits.set(42, &set).unwrap(), "no users row is needed");
        assert_eq!(limits.book().owner_notional(42, 1).unwrap().limit, Decimal::ONE);
        assert!(Users::new(store.clone()).unwrap().is_empty(), "no users row is made");
        let again = UserLimits::on_their_own(&store, book()).unwrap();
        assert_eq!(again.get(42).unwrap(), set, "read back from the store");
        again.forget(42);
        let after = UserLimits::on_their_own(&store, book()).unwrap();
        assert_eq!(after.get(42).unwrap(), UserRiskLimits::default());
    }
}
