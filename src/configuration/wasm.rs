//! `[wasm]`: the sandbox owners' WebAssembly strategy modules run in (docs/STRATEGY_ABI.md).

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[wasm]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WasmSettings {
    /// Fuel (about one unit per WebAssembly instruction) one call into a module may burn.
    pub fuel_per_call: u64,
    /// Most linear memory one module instance may have, in bytes.
    pub max_memory_bytes: usize,
    /// Most module instances alive at once (running wasm bots and uploads being checked).
    pub max_instances: u32,
    /// Largest module `POST /api/v1/strategies` accepts, in bytes (larger: 413).
    pub max_module_bytes: usize,
}

impl WasmSettings {
    /// Checks `[wasm]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !(10_000..=10_000_000_000).contains(&self.fuel_per_call) {
            return Err(invalid("wasm.fuel_per_call", "must be between 10000 and 10000000000"));
        }
        if !((1 << 16)..=(1 << 30)).contains(&self.max_memory_bytes) {
            return Err(invalid(
                "wasm.max_memory_bytes",
                "must be between 65536 (one page) and 1073741824 (1 GiB)",
            ));
        }
        if !(1..=100_000).contains(&self.max_instances) {
            return Err(invalid("wasm.max_instances", "must be between 1 and 100000"));
        }
        if !(1024..=(64 << 20)).contains(&self.max_module_bytes) {
            return Err(invalid(
                "wasm.max_module_bytes",
                "must be between 1024 and 67108864 (64 MiB)",
            ));
        }
        Ok(())
    }

    /// The sandbox's caps (the rest at keel-wasm's defaults).
    pub fn config(&self) -> keel_wasm::WasmConfig {
        keel_wasm::WasmConfig {
            fuel_per_call: self.fuel_per_call,
            max_memory_bytes: self.max_memory_bytes,
            max_instances: self.max_instances,
            max_module_bytes: self.max_module_bytes,
            ..keel_wasm::WasmConfig::default()
        }
    }
}
