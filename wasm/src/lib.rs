//! keel-wasm: owners' strategies as sandboxed WebAssembly modules.
//!
//! A module speaks the ABI in docs/STRATEGY_ABI.md (the `keel` imports in [`abi`], its exports
//! checked by [`WasmHost::inspect`]). The host ([`WasmHost`]) runs every module on one wasmtime
//! engine with no WASI: each module is compiled once per SHA-256 and cached, instances come from
//! the pooling allocator with caps on memory, tables and instances, and every call gets a fresh
//! fuel budget, so a module cannot loop, grow or recurse without bound. A [`WasmStrategy`]
//! implements keel-core's `Strategy`, so paper, live and backtest run a module through the same
//! engine as the built-ins; a module that traps, runs out of fuel or exceeds its memory reports
//! a `failure` and the engine pauses only its bot.
//!
//! This crate is the only place wasmtime lives: keel-core stays pure, keel-actors asks it for
//! strategies.

pub mod abi;
pub mod config;
pub mod host;
pub mod params;
pub mod strategy;

pub use abi::ABI_VERSION;
pub use config::WasmConfig;
pub use host::{ModuleError, ModuleInfo, WasmHost, sha256_hex};
pub use strategy::WasmStrategy;
