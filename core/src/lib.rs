//! keel-core: Keel's pure domain. Everything here is plain, deterministic code with no runtime
//! underneath: no actors, no async, no clock, no store, no network. The same inputs always give
//! the same outputs, so it is unit- and property-tested on its own, and a backtest makes exactly
//! the decisions a live bot makes.
//!
//! - [`market`]: venues, symbols, stream names and market events (exact decimals);
//! - [`trading`]: orders and their state machine, fills, positions, instrument filters, the paper
//!   venue and pre-trade risk;
//! - [`strategy`]: the `Strategy` trait, its incremental indicators and the built-in strategies;
//! - [`validation`]: field errors, the shape every "this input is wrong" takes;
//! - [`bot`]: what a bot is (definition, lifecycle) and its performance math;
//! - [`engine`]: the sans-IO bot engine: strategy → risk → order manager → paper venue;
//! - [`backtest`]: the backtest run loop over the same engine.
//!
//! Runtime crates (`keel-venues`, `keel-actors`, the `keel` binary) depend on this one, never the
//! other way round.

pub mod backtest;
pub mod bot;
pub mod engine;
pub mod market;
pub mod notify;
pub mod strategy;
pub mod trading;
pub mod validation;
