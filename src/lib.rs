//! The `keel` binary's library: CLI, configuration, HTTP façade, telemetry and start-up.
//!
//! Domain types, actors and storage live in the `keel_actors` crate; this crate turns HTTP into
//! actor messages and runs the process.

pub mod auth;
pub mod backtest_cli;
pub mod backup_cli;
pub mod cli;
pub mod configuration;
pub mod http;
pub mod secrets;
pub mod startup;
pub mod store_cli;
pub mod telemetry;
pub mod vault_cli;
pub mod venues;
pub mod ws;
