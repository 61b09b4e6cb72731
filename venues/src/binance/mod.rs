//! Binance spot and USD-M futures public market streams.
//!
//! Follows <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams> and
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>.

pub mod connection;
pub mod parse;
pub mod rest;
pub mod streams;
