//! Owners' own limits over all of their bots (`GET/PUT /api/v1/me/risk`): stored with the user
//! (`users` tree), read once per user and kept in memory, and handed to the [`ExposureBook`] so
//! every bot of the owner sees their `max_notional` on its next refresh.
//!
//! Nothing is read at start-up: an owner's limits are loaded the first time one of their bots
//! launches or they are asked for, so start-up reads only the running bots' owners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::bot::UserId;
use keel_core::bot::user_risk::UserRiskLimits;

use super::exposure::ExposureBook;
use crate::identity::Users;
use crate::store::StoreError;

/// Owners' limits, cached; cloning shares the cache.
#[derive(Debug, Clone)]
pub struct UserLimits {
    users: Users,
    book: Arc<ExposureBook>,
    cache: Arc<Mutex<HashMap<UserId, UserRiskLimits>>>,
}

impl UserLimits {
    /// Limits read from `users`, their notional enforced through `book`.
    pub fn new(users: Users, book: Arc<ExposureBook>) -> Self {
        Self { users, book, cache: Arc::default() }
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
        let limits = self.users.get(user)?.map(|u| u.risk).unwrap_or_default();
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
        if !self.users.set_risk(user, limits)? {
            return Ok(false);
        }
        self.book.set_owner_limit(user, limits.max_notional);
        cache.insert(user, limits.clone());
        Ok(true)
    }

    /// Forgets a user whose account is being deleted.
    pub fn forget(&self, user: UserId) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(&user);
        self.book.set_owner_limit(user, None);
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
}
