//! The sandbox's limits.

/// Limits every module runs under (`[wasm]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmConfig {
    /// Fuel (roughly, WebAssembly instructions) one call may burn: `keel_init`, one event, one
    /// save. A call that runs out traps, and the bot pauses.
    pub fuel_per_call: u64,
    /// Most linear memory one instance may have, in bytes.
    pub max_memory_bytes: usize,
    /// Most elements one table may have.
    pub max_table_elements: usize,
    /// Most instances alive at once in this host (running wasm bots, uploads being checked,
    /// backtests); the pool's size.
    pub max_instances: u32,
    /// Largest module accepted, in bytes.
    pub max_module_bytes: usize,
    /// Most native stack a guest may use, in bytes (deep recursion traps past it).
    pub max_stack_bytes: usize,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            fuel_per_call: 10_000_000,
            max_memory_bytes: 16 << 20,
            max_table_elements: 10_000,
            max_instances: 1_100,
            max_module_bytes: 4 << 20,
            max_stack_bytes: 512 << 10,
        }
    }
}
