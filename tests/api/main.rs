//! Integration tests against the real application, compiled into one binary.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

mod access_log;
mod accounts;
mod auth;
mod backtests;
mod backup;
mod bot_recovery;
mod bots;
mod browser;
mod cluster_budget;
mod cluster_failover;
mod cluster_identity;
mod cluster_md;
mod cluster_modules;
mod cluster_process;
mod cluster_upkeep;
mod cluster_users;
mod cluster_vault;
mod cluster_ws;
mod derivatives;
mod disk_guard;
mod errors;
mod health;
mod indicators;
mod limits;
mod live;
mod live_bybit;
mod live_bybit_linear;
mod live_crash;
mod live_futures;
mod live_oco;
mod live_stream;
mod markets;
mod notifications;
mod paper_futures;
mod postgres;
mod process;
mod protection;
mod registration;
mod restart;
mod sessions;
mod sim_perp;
mod sink;
mod sink_tls;
mod status_events;
mod store_fixture;
mod store_stats;
mod strategies;
mod strict_input;
mod tampering;
mod user_risk;
mod ws;

use keel_testkit::{fake_binance, fake_rest};

/// The URL of an external service a test needs, from the environment variable `var`, or `None`
/// after saying that `test` is skipped (`.ci/run` sets these to the local servers).
pub(crate) fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("{test}: skipped: {var} is not set (`.ci/run` sets it to the local server)");
            None
        }
    }
}
