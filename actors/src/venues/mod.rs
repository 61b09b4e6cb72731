//! Venue connectors: one module per venue.

pub mod sim;
