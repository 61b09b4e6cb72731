//! Owners' strategy modules: the WebAssembly modules users upload (`POST /api/v1/strategies`),
//! stored durably per owner, and the one WebAssembly host every wasm bot of this process runs on
//! (so a module is compiled once, whoever uploads or runs it).
//!
//! Two trees, written together in one transaction: `strategies` holds each module's record
//! (`pair_key(owner, id)` → JSON) and `strategy_modules` its bytes under the same key, so a list
//! reads no module bytes and a module of another owner is never found by id alone. A bot of kind
//! `wasm` names its module by id; the bot supervisor refuses to delete a module while a bot of
//! its owner uses it (`bot::supervisor::modules`).
//!
//! In cluster mode with `postgres_url` the record is Postgres ([`pg`]): these trees are the
//! working copy of the modules of the users whose lease this node holds.

pub mod pg;

use std::sync::{Arc, OnceLock};

use keel_core::bot::BotRecord;
use keel_core::strategy::{Strategy, StrategySpec, WASM_KIND};
use keel_core::trading::InstrumentFilters;
use keel_core::validation::FieldError;
use keel_wasm::{ModuleError, ModuleInfo, WasmConfig, WasmHost};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, TxResult, decode, encode_tx, pair_key, trees};

/// Most modules one owner may keep.
pub const MAX_MODULES_PER_USER: usize = 50;
/// Longest module name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// One uploaded module, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// Its id.
    pub id: u64,
    /// Its owner.
    pub user_id: u64,
    /// The owner's name for it.
    pub name: String,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The ABI version it speaks.
    pub abi_version: u32,
    /// The JSON Schema of its params.
    pub params_schema: serde_json::Value,
    /// When it was uploaded, ms since the epoch.
    pub created_at_ms: u64,
}

/// Why a module operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// The module was checked and refused (what is wrong with it).
    #[error(transparent)]
    Refused(#[from] ModuleError),
    /// The request names something wrong (`name`): field errors.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// No such module of this owner's.
    #[error("no strategy module {0} of yours")]
    NotFound(u64),
    /// Bots of the owner still run it.
    #[error("strategy module {module} is used by bots {bots:?}; delete those bots first")]
    InUse {
        /// The module.
        module: u64,
        /// The bots that name it.
        bots: Vec<u64>,
    },
    /// The owner keeps as many modules as allowed.
    #[error("a user may keep at most {MAX_MODULES_PER_USER} strategy modules")]
    Limit,
    /// The WebAssembly host could not be started.
    #[error("the WebAssembly host is unavailable: {0}")]
    Host(String),
    /// Storage failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode with `postgres_url`: this node does not hold the owner's lease (it is
    /// moving); nothing changed, retry.
    #[error("the owner's lease is moving")]
    Moving,
    /// Cluster mode with `postgres_url`: the system of record failed; nothing changed.
    #[error(transparent)]
    Record(#[from] crate::pg::RecordError),
}

/// The modules' trees and the process's WebAssembly host. Cheap to clone.
#[derive(Clone)]
pub struct Modules {
    store: Store,
    records: sled::Tree,
    bytes: sled::Tree,
    config: WasmConfig,
    /// Started on first use: most processes never run a module, and the host reserves its
    /// instance pool's address space up front.
    host: Arc<OnceLock<Result<WasmHost, String>>>,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Modules {
    /// Opens the trees; the host starts on first use with `config`'s caps.
    ///
    /// # Errors
    /// The store failed.
    pub fn open(store: &Store, config: WasmConfig) -> Result<Self, StoreError> {
        Ok(Self {
            records: store.tree(trees::STRATEGIES)?,
            bytes: store.tree(trees::STRATEGY_MODULES)?,
            store: store.clone(),
            config,
            host: Arc::default(),
        })
    }

    /// The caps modules run under.
    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    /// The WebAssembly host (started on the first call).
    ///
    /// # Errors
    /// wasmtime refused the configuration.
    pub fn host(&self) -> Result<&WasmHost, ModulesError> {
        self.host
            .get_or_init(|| WasmHost::new(self.config).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|why| ModulesError::Host(why.clone()))
    }

    /// Checks `bytes` as at upload and stores them as a module of `user_id` named `name`. Blocks
    /// (it compiles and runs the module under its caps): call it on a blocking thread. Not
    /// durable until `Store::commit`.
    ///
    /// # Errors
    /// A bad name, the module's refusal, the per-owner cap, storage.
    pub fn upload(
        &self,
        user_id: u64,
        name: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<ModuleRecord, ModulesError> {
        let checked = self.check_upload(user_id, name, bytes, now_ms)?;
        let record = ModuleRecord { id: self.store.next_id()? + 1, ..checked };
        self.insert(&record, bytes)?;
        Ok(record)
    }

    /// Checks `bytes` as at upload (the name, the module in the sandbox, the per-owner cap)
    /// and answers its record with no id yet (`0`): the caller gives it one. Blocks: call it on
    /// a blocking thread.
    ///
    /// # Errors
    /// A bad name, the module's refusal, the per-owner cap, storage.
    pub fn check_upload(
        &self,
        user_id: u64,
        name: &str,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<ModuleRecord, ModulesError> {
        let name = check_name(name)?;
        let ModuleInfo { sha256, size, abi_version, params_schema } =
            self.host()?.inspect(bytes)?;
        if self.list(user_id)?.len() >= MAX_MODULES_PER_USER {
            return Err(ModulesError::Limit);
        }
        Ok(ModuleRecord {
            id: 0,
            user_id,
            name,
            sha256,
            size: size as u64,
            abi_version,
            params_schema,
            created_at_ms: now_ms,
        })
    }

    /// Stores a checked module under its id (its record and bytes in one transaction). Not
    /// durable until `Store::commit`.
    ///
    /// # Errors
    /// Storage.
    pub fn insert(&self, record: &ModuleRecord, bytes: &[u8]) -> Result<(), ModulesError> {
        let key = pair_key(record.user_id, record.id);
        self.store.transaction(&[&self.records, &self.bytes], |tx| -> TxResult<()> {
            tx[0].insert(&key, encode_tx(record)?)?;
            tx[1].insert(&key, bytes)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Replaces the owner's modules with `modules` (cluster mode: this node's working copy
    /// of what Postgres holds, on taking the owner). Not durable until `Store::commit`.
    ///
    /// # Errors
    /// Storage.
    pub fn replace_user(
        &self,
        user_id: u64,
        modules: &[(ModuleRecord, Vec<u8>)],
    ) -> Result<(), ModulesError> {
        self.remove_user(user_id)?;
        for (record, bytes) in modules.iter().filter(|(m, _)| m.user_id == user_id) {
            self.insert(record, bytes)?;
        }
        Ok(())
    }

    /// The owner's modules, oldest first.
    ///
    /// # Errors
    /// Storage.
    pub fn list(&self, user_id: u64) -> Result<Vec<ModuleRecord>, ModulesError> {
        let range = pair_key(user_id, 0)..=pair_key(user_id, u64::MAX);
        self.records
            .range(range)
            .values()
            .map(|raw| Ok(decode(&raw.map_err(StoreError::from)?)?))
            .collect()
    }

    /// One module of the owner's.
    ///
    /// # Errors
    /// [`ModulesError::NotFound`] for another owner's or an unknown id; storage.
    pub fn get(&self, user_id: u64, id: u64) -> Result<ModuleRecord, ModulesError> {
        let raw = self.records.get(pair_key(user_id, id)).map_err(StoreError::from)?;
        Ok(decode(&raw.ok_or(ModulesError::NotFound(id))?)?)
    }

    /// Removes one module of the owner's. Not durable until `Store::commit`. The bot
    /// supervisor calls it once no bot of the owner names the module.
    ///
    /// # Errors
    /// [`ModulesError::NotFound`]; storage.
    pub fn remove(&self, user_id: u64, id: u64) -> Result<(), ModulesError> {
        let key = pair_key(user_id, id);
        let removed = self.store.transaction(&[&self.records, &self.bytes], |tx| {
            let removed = tx[0].remove(&key)?.is_some();
            tx[1].remove(&key)?;
            Ok(removed)
        })?;
        if removed { Ok(()) } else { Err(ModulesError::NotFound(id)) }
    }

    /// Removes every module of the owner's (the account is being deleted); how many. Not
    /// durable until `Store::commit`.
    ///
    /// # Errors
    /// Storage.
    pub fn remove_user(&self, user_id: u64) -> Result<usize, ModulesError> {
        let ids: Vec<u64> = self.list(user_id)?.into_iter().map(|m| m.id).collect();
        for &id in &ids {
            self.remove(user_id, id)?;
        }
        Ok(ids.len())
    }

    /// Removes every module (cluster mode: the working copies an earlier run left; the users
    /// this node takes are read again from Postgres). Not durable until `Store::commit`.
    ///
    /// # Errors
    /// Storage.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.records.clear()?;
        self.bytes.clear()?;
        Ok(())
    }

    /// Checks a bot's `wasm` strategy for its owner: the module is theirs, the params meet its
    /// schema (each problem by its path, `strategy.params.<path>`), and the module's own
    /// `keel_init` accepts them for the instrument's `filters`. Blocks: run it on a blocking
    /// thread. Field errors are added to `details`.
    ///
    /// # Errors
    /// Storage, or the host cannot start.
    pub fn check_bot(
        &self,
        user_id: u64,
        spec: &StrategySpec,
        filters: &InstrumentFilters,
        details: &mut Vec<FieldError>,
    ) -> Result<(), ModulesError> {
        let Some(id) = spec.module_id.filter(|_| spec.kind == WASM_KIND) else { return Ok(()) };
        let module = match self.get(user_id, id) {
            Ok(module) => module,
            Err(ModulesError::NotFound(_)) => {
                details.push(FieldError::new(
                    "strategy.module_id",
                    format!("no strategy module {id} of yours"),
                ));
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let problems = keel_wasm::params::validate(&module.params_schema, &spec.params)
            .map_err(|why| ModuleError::Abi(format!("the module's params schema: {why}")))?;
        if !problems.is_empty() {
            details.extend(problems.into_iter().map(|p| {
                let field = if p.path.is_empty() {
                    "strategy.params".to_owned()
                } else {
                    format!("strategy.params.{}", p.path)
                };
                FieldError::new(field, p.message)
            }));
            return Ok(());
        }
        match self.strategy(user_id, spec, filters) {
            Ok(_) => Ok(()),
            Err(ModulesError::Refused(ModuleError::Params(why))) => {
                details.push(FieldError::new("strategy.params", why));
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The strategy a bot of kind `wasm` runs: its owner's module with its params, for its
    /// instrument. Compiles the module on its first use in this process (cached by SHA-256).
    ///
    /// # Errors
    /// The module is gone, refused, the instance pool is full, or `keel_init` refused the params.
    pub fn strategy(
        &self,
        user_id: u64,
        spec: &StrategySpec,
        filters: &InstrumentFilters,
    ) -> Result<Box<dyn Strategy>, ModulesError> {
        let id = spec.module_id.ok_or(ModulesError::NotFound(0))?;
        let bytes = self
            .bytes
            .get(pair_key(user_id, id))
            .map_err(StoreError::from)?
            .ok_or(ModulesError::NotFound(id))?;
        Ok(Box::new(self.host()?.strategy(&bytes, &spec.params, filters)?))
    }

    /// Whether `record` runs one of its owner's modules, and which.
    pub fn module_of(record: &BotRecord) -> Option<u64> {
        record.strategy.module_id.filter(|_| record.strategy.kind == WASM_KIND)
    }
}

/// A module's name, trimmed: 1 to [`MAX_NAME_CHARS`] characters, no control characters.
fn check_name(raw: &str) -> Result<String, ModulesError> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ModulesError::Invalid(vec![FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters, none of them control characters"),
        )]));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    /// The smallest module the ABI accepts: it does nothing.
    const IDLE: &str = r#"(module
        (memory (export "memory") 1)
        (func (export "keel_abi_version") (result i32) (i32.const 1))
        (func (export "keel_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
        (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0)))"#;

    fn modules(dir: &std::path::Path) -> Modules {
        let store = Store::open(&StoreConfig::new(dir)).unwrap();
        Modules::open(&store, WasmConfig { max_instances: 4, ..WasmConfig::default() }).unwrap()
    }

    #[test]
    fn modules_are_private_to_their_owner_and_leave_no_bytes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let modules = modules(dir.path());
        let bytes = wat::parse_str(IDLE).unwrap();
        let mine = modules.upload(1, " idle ", &bytes, 7).unwrap();
        assert_eq!(mine.name, "idle");
        assert_eq!(mine.size, bytes.len() as u64);
        assert_eq!(mine.params_schema, serde_json::json!({"type": "object"}));
        let theirs = modules.upload(2, "idle", &bytes, 8).unwrap();
        assert_eq!(modules.list(1).unwrap(), vec![mine.clone()]);
        assert!(matches!(modules.get(2, mine.id), Err(ModulesError::NotFound(_))));
        assert!(matches!(modules.remove(2, mine.id), Err(ModulesError::NotFound(_))));
        modules.remove(1, mine.id).unwrap();
        assert!(modules.list(1).unwrap().is_empty());
        assert!(modules.bytes.get(pair_key(1, mine.id)).unwrap().is_none());
        assert_eq!(modules.remove_user(2).unwrap(), 1);
        assert!(modules.get(2, theirs.id).is_err());
        assert!(modules.bytes.is_empty());
    }

    #[test]
    fn a_bad_name_or_module_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let modules = modules(dir.path());
        let bytes = wat::parse_str(IDLE).unwrap();
        assert!(matches!(modules.upload(1, " ", &bytes, 0), Err(ModulesError::Invalid(_))));
        assert!(matches!(
            modules.upload(1, "x", b"\0asm junk", 0),
            Err(ModulesError::Refused(ModuleError::Invalid(_)))
        ));
        assert!(modules.list(1).unwrap().is_empty() && modules.bytes.is_empty());
    }
}
