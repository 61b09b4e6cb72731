//! Owners' strategy modules in Postgres (cluster mode with `postgres_url`): the table
//! `keel_strategy_modules` of schema step 5 ([`crate::pg::migrations`]).
//!
//! Postgres is the record; the node holding the owner's lease keeps a working copy in its sled
//! trees (what bots compile and run from), replaced from here when it takes the owner and
//! dropped when it loses them (`bot::supervisor::postgres`). An upload or a delete is made under
//! the owner's [`Fence`] and acknowledged once committed here; only then is the working copy
//! changed. Module ids come from the identity column, so they are unique across nodes and a bot
//! names the same module on whichever node runs it.

use super::{ModuleRecord, Modules, ModulesError};
use crate::cluster::users::{Owner, UserLeases};
use crate::pg::fence::{Fence, Fenced, fenced};
use crate::pg::{PgRecord, RecordError, from_db, to_db};

/// The modules' table.
#[derive(Debug, Clone)]
pub struct PgModules {
    record: PgRecord,
}

fn metadata(module: &ModuleRecord) -> Result<serde_json::Value, RecordError> {
    serde_json::to_value(module).map_err(|err| RecordError::Corrupt(format!("encoding: {err}")))
}

impl PgModules {
    /// The modules of `record` (migrated by [`PgRecord::connect`]).
    pub fn new(record: PgRecord) -> Self {
        Self { record }
    }

    /// `POST /strategies` in cluster mode: checks `bytes` as at upload (on a blocking thread),
    /// stores the module here under the owner's fence, then in this node's working copy;
    /// answered once committed in Postgres.
    ///
    /// # Errors
    /// [`ModulesError::Moving`] when this node does not hold the owner's lease (or lost it
    /// meanwhile); what [`Modules::check_upload`] refuses; Postgres or the store failed.
    pub async fn upload(
        &self,
        modules: &Modules,
        leases: &UserLeases,
        user_id: u64,
        name: String,
        bytes: Vec<u8>,
        now_ms: u64,
    ) -> Result<ModuleRecord, ModulesError> {
        let Owner::Mine(fence) = leases.owner(user_id).await? else {
            return Err(ModulesError::Moving);
        };
        let bytes = std::sync::Arc::<[u8]>::from(bytes);
        let (checking, checked_bytes) = (modules.clone(), bytes.clone());
        let checked = tokio::task::spawn_blocking(move || {
            checking.check_upload(user_id, &name, &checked_bytes, now_ms)
        })
        .await
        .map_err(|err| ModulesError::Host(err.to_string()))??;
        let record = self.create(&checked, &bytes, &fence).await?.map_err(|fenced| {
            tracing::warn!(error = %fenced, "strategy module upload fenced");
            ModulesError::Moving
        })?;
        modules.insert(&record, &bytes)?;
        modules.store.commit().await?;
        Ok(record)
    }

    /// Stores `module` (already checked) with its `bytes` under a fresh id and returns it with
    /// that id; `module.id` is ignored. Committed when this returns `Ok(Ok(_))`.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when this node no longer holds the owner's lease (nothing written);
    /// `Err` when Postgres failed.
    pub async fn create(
        &self,
        module: &ModuleRecord,
        bytes: &[u8],
        fence: &Fence,
    ) -> Result<Result<ModuleRecord, Fenced>, RecordError> {
        let (user_id, created) = (to_db(module.user_id)?, to_db(module.created_at_ms)?);
        let body = metadata(module)?;
        fenced!(self.record, "modules.create", fence, |tx| {
            let row = tx
                .query_one(
                    "INSERT INTO keel_strategy_modules
                         (user_id, name, sha256, wasm, metadata, created_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[&user_id, &module.name, &module.sha256, &bytes, &body, &created],
                )
                .await?;
            let id = from_db(row.try_get(0)?)?;
            ModuleRecord { id, ..module.clone() }
        })
        .await
    }

    /// Deletes one module of the owner's; whether there was one. Committed when this returns.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when this node no longer holds the owner's lease; `Err` when Postgres
    /// failed.
    pub async fn delete(
        &self,
        user_id: u64,
        id: u64,
        fence: &Fence,
    ) -> Result<Result<bool, Fenced>, RecordError> {
        let row = (user_id, id);
        self.record.delete_owned("modules.delete", "keel_strategy_modules", row, fence).await
    }

    /// Every module of the owner's with its bytes, oldest first: what a node taking the owner
    /// copies into its working copy.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn of_user(&self, user_id: u64) -> Result<Vec<(ModuleRecord, Vec<u8>)>, RecordError> {
        let user_id = to_db(user_id)?;
        self.record
            .timed("modules.of_user", async {
                let client = self.record.client().await?;
                let rows = client
                    .query(
                        "SELECT id, metadata, wasm FROM keel_strategy_modules
                         WHERE user_id = $1 ORDER BY id",
                        &[&user_id],
                    )
                    .await?;
                rows.iter()
                    .map(|row| {
                        let mut module: ModuleRecord =
                            serde_json::from_value(row.try_get("metadata")?).map_err(|err| {
                                RecordError::Corrupt(format!("decoding a module: {err}"))
                            })?;
                        module.id = from_db(row.try_get("id")?)?;
                        Ok((module, row.try_get("wasm")?))
                    })
                    .collect()
            })
            .await
    }
}
