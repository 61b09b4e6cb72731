//! Integration tests against the real application, compiled into one binary.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

mod accounts;
mod auth;
mod backtests;
mod backup;
mod bot_recovery;
mod bots;
mod errors;
#[path = "../../actors/tests/fake_binance/mod.rs"]
#[allow(dead_code)] // the fake offers more faults than these tests use
mod fake_binance;
#[path = "../../actors/tests/fake_rest/mod.rs"]
mod fake_rest;
mod health;
mod helpers;
mod live;
mod markets;
mod postgres;
mod process;
mod protection;
mod sink;
mod tampering;
mod ws;
