//! The host: one wasmtime engine, each module compiled once per content hash and cached, and
//! instances allocated from a pool with per-instance caps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Module,
    PoolingAllocationConfig, Store, Trap,
};

use crate::abi::{
    self, ABI_VERSION, Failed, HostState, IMPORTS, MAX_SCHEMA_BYTES, OPTIONAL_EXPORTS,
    REQUIRED_EXPORTS,
};
use crate::config::WasmConfig;
use crate::strategy::{Instance, WasmStrategy};
use keel_core::trading::InstrumentFilters;

/// What an uploaded module is, as checked at upload.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleInfo {
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// The ABI version it speaks.
    pub abi_version: u32,
    /// JSON Schema of its params (`{"type":"object"}` when it exports none).
    pub params_schema: serde_json::Value,
}

/// Why a module was refused, or could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Over the size cap.
    #[error("the module is {size} bytes, over the cap of {cap} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        cap: usize,
    },
    /// Not a valid WebAssembly module.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// Imports or exports that do not follow the ABI.
    #[error("{0}")]
    Abi(String),
    /// The module cannot be instantiated under the caps, or its start function failed.
    #[error("{0}")]
    Instantiate(String),
    /// `keel_init` refused the params.
    #[error("{0}")]
    Params(String),
}

/// A compiled module, ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) sha256: String,
    pub(crate) has_trade: bool,
    pub(crate) has_schema: bool,
    pub(crate) has_save: bool,
    pub(crate) has_restore: bool,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("sha256", &self.sha256).finish_non_exhaustive()
    }
}

/// The WebAssembly strategy host. Cheap to clone; clones share the engine and the cache.
#[derive(Clone)]
pub struct WasmHost {
    engine: Engine,
    linker: Arc<wasmtime::Linker<HostState>>,
    cache: Arc<Mutex<HashMap<String, Arc<Compiled>>>>,
    pub(crate) config: WasmConfig,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost").field("config", &self.config).finish_non_exhaustive()
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl WasmHost {
    /// A host with `config`'s caps: fuel metering, NaN canonicalisation (the same answers on
    /// every machine), the pooling allocator sized to `max_instances`.
    ///
    /// # Errors
    /// wasmtime refuses the configuration (for example, the pool cannot be reserved).
    pub fn new(config: WasmConfig) -> anyhow::Result<Self> {
        let mut c = Config::new();
        c.consume_fuel(true);
        c.cranelift_nan_canonicalization(true);
        c.max_wasm_stack(config.max_stack_bytes);
        // Each memory's slot is its cap: explicit bounds checks instead of 4 GiB reservations,
        // so a pool of a thousand instances reserves gigabytes of address space, not terabytes.
        c.memory_reservation(config.max_memory_bytes as u64);
        c.memory_guard_size(64 << 10);
        c.memory_reservation_for_growth(0);
        c.memory_may_move(false);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory_bytes)
            .table_elements(config.max_table_elements);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&c)?;
        let linker = Arc::new(abi::linker(&engine)?);
        Ok(Self { engine, linker, cache: Arc::default(), config })
    }

    /// The caps this host runs modules under.
    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    /// Compiles `bytes` (once per content hash) after checking its imports and exports.
    pub(crate) fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>, ModuleError> {
        if bytes.len() > self.config.max_module_bytes {
            return Err(ModuleError::TooLarge {
                size: bytes.len(),
                cap: self.config.max_module_bytes,
            });
        }
        let sha256 = sha256_hex(bytes);
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&sha256) {
            return Ok(hit.clone());
        }
        let module =
            Module::new(&self.engine, bytes).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        for import in module.imports() {
            if import.module() != "keel" || !IMPORTS.contains(&import.name()) {
                return Err(ModuleError::Abi(format!(
                    "unknown import `{}.{}`: a strategy may import only these functions from \
                     `keel`: {}",
                    import.module(),
                    import.name(),
                    IMPORTS.join(", ")
                )));
            }
        }
        let mut exports: HashMap<&str, ExternType> =
            module.exports().map(|e| (e.name(), e.ty())).collect();
        match exports.remove("memory") {
            Some(ExternType::Memory(_)) => {}
            _ => return Err(ModuleError::Abi("missing export `memory` (a memory)".into())),
        }
        for (name, params, results) in REQUIRED_EXPORTS {
            check_export(&exports, name, params, results, true)?;
        }
        let mut present = [false; 4];
        for (i, (name, params, results)) in OPTIONAL_EXPORTS.into_iter().enumerate() {
            present[i] = check_export(&exports, name, params, results, false)?;
        }
        let pre =
            self.linker.instantiate_pre(&module).map_err(|e| ModuleError::Abi(format!("{e:#}")))?;
        let compiled = Arc::new(Compiled {
            pre,
            sha256: sha256.clone(),
            has_trade: present[0],
            has_schema: present[1],
            has_save: present[2],
            has_restore: present[3],
        });
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(sha256, compiled.clone());
        Ok(compiled)
    }

    /// Instantiates a compiled module (running its start function under the fuel cap).
    pub(crate) fn instantiate(
        &self,
        compiled: &Arc<Compiled>,
        filters: InstrumentFilters,
    ) -> Result<Instance, ModuleError> {
        let state =
            HostState::new(self.config.max_memory_bytes, self.config.max_table_elements, filters);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store
            .set_fuel(self.config.fuel_per_call)
            .map_err(|e| ModuleError::Instantiate(e.to_string()))?;
        let instance = compiled.pre.instantiate(&mut store).map_err(|e| {
            ModuleError::Instantiate(format!(
                "the module cannot start: {}",
                describe(&e, store.data(), self.config.fuel_per_call)
            ))
        })?;
        Instance::new(store, instance, compiled.clone(), self.config.fuel_per_call)
    }

    /// Checks a module as at upload: size, bytes, imports, exports, that it instantiates under
    /// the caps (its start function returns within the fuel of one call), its ABI version and
    /// its params schema.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn inspect(&self, bytes: &[u8]) -> Result<ModuleInfo, ModuleError> {
        let compiled = self.compile(bytes)?;
        let mut instance = self.instantiate(&compiled, InstrumentFilters::default())?;
        let abi_version = instance.abi_version()?;
        if abi_version != ABI_VERSION {
            return Err(ModuleError::Abi(format!(
                "keel_abi_version returned {abi_version}; this host speaks {ABI_VERSION}"
            )));
        }
        let params_schema = if compiled.has_schema {
            let bytes = instance.params_schema()?;
            let schema: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ModuleError::Abi(format!("keel_params_schema is not JSON: {e}")))?;
            if !schema.is_object() {
                return Err(ModuleError::Abi("keel_params_schema is not a JSON object".into()));
            }
            crate::params::check_schema(&schema).map_err(|why| {
                ModuleError::Abi(format!("keel_params_schema is not a valid JSON Schema: {why}"))
            })?;
            schema
        } else {
            serde_json::json!({"type": "object"})
        };
        Ok(ModuleInfo {
            sha256: compiled.sha256.clone(),
            size: bytes.len(),
            abi_version,
            params_schema,
        })
    }

    /// A strategy running `bytes` with `params`, for an instrument with `filters`.
    ///
    /// # Errors
    /// The module is refused (see [`WasmHost::inspect`]), the pool is full, or `keel_init`
    /// refused the params ([`ModuleError::Params`], with the module's reason).
    pub fn strategy(
        &self,
        bytes: &[u8],
        params: &serde_json::Value,
        filters: &InstrumentFilters,
    ) -> Result<WasmStrategy, ModuleError> {
        let compiled = self.compile(bytes)?;
        WasmStrategy::start(self.clone(), compiled, params.clone(), filters.clone())
    }
}

fn check_export(
    exports: &HashMap<&str, ExternType>,
    name: &str,
    params: &[wasmtime::ValType],
    results: &[wasmtime::ValType],
    required: bool,
) -> Result<bool, ModuleError> {
    let wanted = signature(params.iter(), results.iter());
    match exports.get(name) {
        None if required => {
            Err(ModuleError::Abi(format!("missing export `{name}`: a function {wanted}")))
        }
        None => Ok(false),
        Some(ExternType::Func(f)) => {
            let got = signature(
                f.params().collect::<Vec<_>>().iter(),
                f.results().collect::<Vec<_>>().iter(),
            );
            if got == wanted {
                Ok(true)
            } else {
                Err(ModuleError::Abi(format!("export `{name}` is {got}; it must be {wanted}")))
            }
        }
        Some(_) => Err(ModuleError::Abi(format!("export `{name}` is not a function {wanted}"))),
    }
}

fn signature<'a>(
    params: impl Iterator<Item = &'a wasmtime::ValType>,
    results: impl Iterator<Item = &'a wasmtime::ValType>,
) -> String {
    let list = |it: &mut dyn Iterator<Item = &'a wasmtime::ValType>| {
        it.map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let mut params = params;
    let mut results = results;
    format!("({}) -> ({})", list(&mut params), list(&mut results))
}

/// Why a call failed, in words for the owner.
pub(crate) fn describe(err: &anyhow::Error, state: &HostState, fuel: u64) -> String {
    if let Some(Failed(message)) = err.downcast_ref::<Failed>() {
        return format!("the module failed: {message}");
    }
    if let Some(why) = &state.refused {
        return why.clone();
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("ran out of fuel ({fuel} per call)"),
        Some(Trap::StackOverflow) => "stack overflow (recursion too deep)".into(),
        Some(trap) => format!("trapped: {trap}"),
        None => format!("{err:#}"),
    }
}

/// The schema bytes a module's `keel_params_schema` points at must fit this cap.
pub(crate) const SCHEMA_CAP: usize = MAX_SCHEMA_BYTES;
