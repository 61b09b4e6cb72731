//! Owners' notifications, the pure parts: which events exist and which journal lines they come
//! from ([`events`]), the webhook signature ([`signing`]), which target addresses are refused
//! ([`address`]) and when a failed delivery is tried again ([`backoff`]). The runtime side (the
//! channels, the outbox, the delivery actor) is `keel_actors::notify`.

pub mod address;
pub mod backoff;
pub mod events;
pub mod signing;

pub use events::{EventKind, NotifyEvent, UnknownEvents, parse_events};
