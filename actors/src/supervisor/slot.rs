//! Where a supervised actor's current address is published.
//!
//! A restarted actor has a new address. Its `ChildSpec` writes each new address into an
//! [`AddressSlot`]; callers (HTTP handlers, other actors) read it at the moment they need it, so
//! they never hold a dead address for long.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use actix::{Actor, Addr};

/// The current address of a supervised actor. Cheap to clone; all clones share the slot.
pub struct AddressSlot<A: Actor>(Arc<RwLock<Option<Addr<A>>>>);

impl<A: Actor> Clone for AddressSlot<A> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<A: Actor> Default for AddressSlot<A> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<A: Actor> fmt::Debug for AddressSlot<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AddressSlot")
    }
}

impl<A: Actor> AddressSlot<A> {
    /// The address, if the actor is running now.
    pub fn get(&self) -> Option<Addr<A>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone().filter(Addr::connected)
    }

    /// Publishes a (new) address.
    pub fn set(&self, addr: Addr<A>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }
}
