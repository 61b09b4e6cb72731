//! keel-actors: Keel's runtime. The supervisor tree and its actors (feeds, bots, sessions, the
//! vault), the store they persist to, and the plumbing between them. Domain logic lives in
//! `keel-core`; exchange connectors in `keel-venues`.
//!
//! - [`store`]: the sled handle, its trees, migrations and group commit.
//! - [`supervisor`]: OTP-style supervision over actix actors (restart budget, escalation).
//! - [`mailbox`]: request/response with a deadline that answers "full" at once instead of queueing.
//! - [`fanout`]: non-blocking delivery of one event to many subscribers.
//! - [`breaker`]: a circuit breaker per venue account, shared by the live bots on it.
//! - [`sink`]: the optional Postgres sink and the outbox it drains.
//! - [`record`]: recording market data to compact, checksummed daily files.
//! - [`backtest`]: strategies over recorded or historical trades, and backtest jobs.
//! - [`seed`]: `keel store seed`, a trading history written as bots write it, for benches.
//!
//! The HTTP and WebSocket façade lives in the `keel` binary crate and only talks to this crate
//! through messages and the [`store::Store`] handle.

pub mod account;
pub mod backtest;
pub mod bot;
pub mod breaker;
pub mod cluster;
pub mod fanout;
pub mod feed;
pub mod identity;
pub mod mailbox;
pub mod notify;
pub mod pg;
pub mod record;
pub mod runtime;
pub mod seed;
pub mod session;
pub mod sink;
pub mod startup_clock;
pub mod store;
pub mod strategies;
pub mod supervisor;
pub mod vault;
