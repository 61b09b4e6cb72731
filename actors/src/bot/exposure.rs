//! Per-user exposure across bots, for the operator's `bots.max_user_exposure` limit and each
//! owner's own `max_notional` (`PUT /me/risk`).
//!
//! Each running bot publishes its exposure (position notional at mark plus the notional of its
//! open orders that would add to the position) after every change it stores, and reads the sum
//! of its owner's *other* bots on a short interval, with both limits. Its own exposure is always
//! exact; the others' may lag by up to [`REFRESH`], so two bots of one user trading in the same
//! instant can overshoot a limit by at most one order each.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rust_decimal::Decimal;

use keel_core::bot::{BotId, UserId};
use keel_core::trading::risk::UserNotional;

/// How often a bot re-reads its owner's other bots' exposure.
pub const REFRESH: Duration = Duration::from_millis(250);

/// Every user's bots' exposures, shared by the bot actors.
#[derive(Debug, Default)]
pub struct ExposureBook {
    limit: Option<Decimal>,
    by_user: Mutex<HashMap<UserId, HashMap<BotId, Decimal>>>,
    /// Owners' own `max_notional`, for the owners who set one.
    owner_limits: Mutex<HashMap<UserId, Decimal>>,
}

impl ExposureBook {
    /// A book enforcing `limit` (quote currency) per user; `None` tracks without limiting.
    pub fn new(limit: Option<Decimal>) -> Self {
        Self { limit, ..Self::default() }
    }

    /// Sets (or, with `None`, lifts) `user`'s own limit over all their bots.
    pub fn set_owner_limit(&self, user: UserId, limit: Option<Decimal>) {
        let mut limits = self.owner_limits.lock().unwrap_or_else(PoisonError::into_inner);
        match limit {
            Some(limit) => limits.insert(user, limit),
            None => limits.remove(&user),
        };
    }

    /// `user`'s own limit over all their bots, and what their bots other than `bot` hold.
    pub fn owner_notional(&self, user: UserId, bot: BotId) -> Option<UserNotional> {
        let limit = *self.owner_limits.lock().unwrap_or_else(PoisonError::into_inner).get(&user)?;
        Some(UserNotional { limit, others: self.others(user, bot) })
    }

    /// The per-user limit.
    pub fn limit(&self) -> Option<Decimal> {
        self.limit
    }

    /// Records `bot`'s current exposure.
    pub fn publish(&self, user: UserId, bot: BotId, exposure: Decimal) {
        let mut map = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(user).or_default().insert(bot, exposure);
    }

    /// Forgets a bot that stopped (its exposure is no longer managed).
    pub fn remove(&self, user: UserId, bot: BotId) {
        let mut map = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bots) = map.get_mut(&user) {
            bots.remove(&bot);
            if bots.is_empty() {
                map.remove(&user);
            }
        }
    }

    /// The sum over `user`'s bots other than `bot`.
    pub fn others(&self, user: UserId, bot: BotId) -> Decimal {
        let map = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&user)
            .map(|bots| bots.iter().filter(|(id, _)| **id != bot).map(|(_, e)| *e).sum())
            .unwrap_or_default()
    }

    /// What `bot` may hold at most: the limit less the other bots' exposure.
    pub fn budget(&self, user: UserId, bot: BotId) -> Option<Decimal> {
        self.limit.map(|limit| limit - self.others(user, bot))
    }
}

/// A bot's place in the book.
#[derive(Debug, Clone)]
pub struct ExposureLink {
    /// The shared book.
    pub book: std::sync::Arc<ExposureBook>,
    /// The bot's owner.
    pub user_id: UserId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bots_budget_is_the_limit_less_its_siblings_and_users_are_separate() {
        let book = ExposureBook::new(Some(Decimal::from(1000)));
        book.publish(1, 10, Decimal::from(300));
        book.publish(1, 11, Decimal::from(200));
        book.publish(2, 20, Decimal::from(900));
        assert_eq!(book.budget(1, 10), Some(Decimal::from(800)));
        assert_eq!(book.budget(1, 12), Some(Decimal::from(500)));
        assert_eq!(book.budget(2, 20), Some(Decimal::from(1000)));
        book.remove(1, 11);
        assert_eq!(book.budget(1, 10), Some(Decimal::from(1000)));
        assert_eq!(ExposureBook::new(None).budget(1, 1), None);
    }

    #[test]
    fn an_owners_own_limit_sees_the_same_siblings_and_can_be_lifted() {
        let book = ExposureBook::new(None);
        book.publish(1, 10, Decimal::from(300));
        book.publish(1, 11, Decimal::from(200));
        assert_eq!(book.owner_notional(1, 10), None);
        book.set_owner_limit(1, Some(Decimal::from(1000)));
        let seen = book.owner_notional(1, 10).unwrap();
        assert_eq!((seen.limit, seen.others), (Decimal::from(1000), Decimal::from(200)));
        assert_eq!(book.owner_notional(2, 20), None, "another owner has no limit");
        book.set_owner_limit(1, None);
        assert_eq!(book.owner_notional(1, 10), None);
    }
}
