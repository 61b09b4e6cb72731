//! The `keel` binary's library: CLI, configuration, HTTP façade, telemetry and start-up.
//!
//! The domain is `keel_core`, exchange connectors are `keel_venues`, the actor runtime and the
//! store are `keel_actors`; this crate loads configuration, turns HTTP and WebSocket requests
//! into actor messages and core calls, and runs the process.

pub mod admin_cli;
pub mod auth;
pub mod backtest_cli;
pub mod backup_cli;
pub mod cli;
pub mod configuration;
pub mod http;
pub mod secrets;
pub mod startup;
pub mod state;
pub mod store_cli;
pub mod telemetry;
pub mod vault_cli;
pub mod venues;
pub mod ws;
