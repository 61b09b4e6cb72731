//! Keel's library crate: the pieces every part of the runtime shares.
//!
//! - [`store`]: the sled handle, its trees, migrations and group commit.
//! - [`supervisor`]: OTP-style supervision over actix actors (restart budget, escalation).
//! - [`mailbox`]: request/response with a deadline that answers "full" at once instead of queueing.
//! - [`fanout`]: non-blocking delivery of one event to many subscribers.
//! - [`sink`]: the optional Postgres sink and the outbox it drains.
//! - [`record`]: recording market data to compact, checksummed daily files.
//! - [`backtest`]: strategies over recorded or historical trades, and backtest jobs.
//!
//! The HTTP and WebSocket façade lives in the `keel` binary crate and only talks to this crate
//! through messages and the [`store::Store`] handle.

pub mod backtest;
pub mod bot;
pub mod fanout;
pub mod feed;
pub mod identity;
pub mod mailbox;
pub mod market;
pub mod record;
pub mod session;
pub mod sink;
pub mod store;
pub mod strategy;
pub mod supervisor;
pub mod tls;
pub mod trading;
pub mod validation;
pub mod vault;
pub mod venues;
