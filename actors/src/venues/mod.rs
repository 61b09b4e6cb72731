//! Venue connectors: one module per venue.

pub mod binance;
pub mod sim;
