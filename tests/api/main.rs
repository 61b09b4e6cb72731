//! Integration tests against the real application, compiled into one binary.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

mod accounts;
mod auth;
mod bot_recovery;
mod bots;
mod errors;
mod health;
mod helpers;
mod markets;
mod process;
mod protection;
mod tampering;
