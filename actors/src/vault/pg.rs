//! The vault's credentials in Postgres (cluster mode with `postgres_url`), the tables of schema
//! step 4 ([`crate::pg::migrations`]).
//!
//! Postgres is the record; the node's `credentials` tree is the owner node's working copy, the
//! one the vault signs from (no Postgres call on the signing path). Adding and removing a
//! credential commit here under the user's [`Fence`] before the answer, then update the working
//! copy. A node that takes a user loads the user's credentials into its working copy before the
//! user's bots start, and drops them when it loses the user (`bot::supervisor::postgres`).
//!
//! Envelopes are bound to (user id, credential id) and opened with the vault's master key, so
//! every node must have the same key: [`PgVault::check_key`] makes a node with another key
//! refuse to start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;

use super::{
    AddCredential, CredentialRecord, CredentialView, Credentials, KeyRing, MasterKey, Vault,
    VaultError,
};
use crate::cluster::users::{Owner, UserLeases};
use crate::mailbox::Replier;
use crate::pg::fence::{Fence, fenced};
use crate::pg::{PgRecord, RecordError, from_db, to_db};

/// The credential tables, and how often each user's working copy changed (cloning shares it).
///
/// The counts order the working copy's writes: the vault applies an add or a remove after its
/// commit, and the node taking a user replaces the working copy with what it read, both under
/// one lock that counts each change; a read is applied only if no change came since it began
/// (else it is read again), so a credential added or removed meanwhile is neither lost nor
/// brought back.
#[derive(Debug, Clone)]
pub struct PgVault {
    record: PgRecord,
    changes: Arc<Mutex<HashMap<u64, u64>>>,
}

/// What the vault actor needs in cluster mode: the tables and this node's user leases.
#[derive(Debug, Clone)]
pub struct VaultRecord {
    /// The credential tables.
    pub vault: PgVault,
    /// This node's user leases (the fence a write is made under).
    pub leases: UserLeases,
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, RecordError> {
    serde_json::to_value(value).map_err(|err| RecordError::Corrupt(format!("encoding: {err}")))
}

fn envelope(value: serde_json::Value) -> Result<super::Envelope, RecordError> {
    serde_json::from_value(value).map_err(|err| RecordError::Corrupt(format!("decoding: {err}")))
}

const COLUMNS: &str =
    "id, user_id, venue, label, api_key_hint, testnet, created_at_ms, api_key, api_secret";

fn from_row(row: &tokio_postgres::Row) -> Result<CredentialRecord, RecordError> {
    Ok(CredentialRecord {
        id: from_db(row.try_get("id")?)?,
        user_id: from_db(row.try_get("user_id")?)?,
        venue: row.try_get("venue")?,
        label: row.try_get("label")?,
        api_key_hint: row.try_get("api_key_hint")?,
        testnet: row.try_get("testnet")?,
        created_at_ms: from_db(row.try_get("created_at_ms")?)?,
        api_key: envelope(row.try_get("api_key")?)?,
        api_secret: envelope(row.try_get("api_secret")?)?,
    })
}

impl PgVault {
    /// The credential tables of `record` (migrated by [`PgRecord::connect`]).
    pub fn new(record: PgRecord) -> Self {
        Self { record, changes: Arc::default() }
    }

    /// How many times `user_id`'s working copy changed: taken before reading the user's
    /// credentials, for [`PgVault::replace_if_unchanged`].
    pub fn changes(&self, user_id: u64) -> u64 {
        let changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        changes.get(&user_id).copied().unwrap_or(0)
    }

    /// Applies `change` to `user_id`'s working copy, counted.
    ///
    /// # Errors
    /// The change failed.
    pub fn change<T>(
        &self,
        user_id: u64,
        change: impl FnOnce() -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        *changes.entry(user_id).or_default() += 1;
        change()
    }

    /// Replaces `user_id`'s working copy with `records`, read after [`PgVault::changes`] was
    /// `seen`; false (nothing done) if it changed since: read again.
    ///
    /// # Errors
    /// The store failed.
    pub fn replace_if_unchanged(
        &self,
        working: &Credentials,
        user_id: u64,
        seen: u64,
        records: &[CredentialRecord],
    ) -> Result<bool, VaultError> {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let count = changes.entry(user_id).or_default();
        if *count != seen {
            return Ok(false);
        }
        *count += 1;
        working.replace_user(user_id, records)?;
        Ok(true)
    }

    /// Refuses a master key other than the cluster's: the first node records the check value
    /// of its key ([`MasterKey::check_value`]), every node compares its own with it.
    ///
    /// # Errors
    /// [`VaultError::KeyMismatch`], or Postgres failed.
    pub async fn check_key(&self, key: &MasterKey) -> Result<(), VaultError> {
        let mine = key.check_value()?;
        let recorded: String = self
            .record
            .timed("vault.check_key", async {
                let client = self.record.client().await?;
                client
                    .execute(
                        "INSERT INTO keel_vault_key (check_value) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&mine],
                    )
                    .await?;
                Ok(client.query_one("SELECT check_value FROM keel_vault_key", &[]).await?.get(0))
            })
            .await?;
        if recorded == mine { Ok(()) } else { Err(VaultError::KeyMismatch) }
    }

    /// Seals and stores a new credential under a fresh id from `keel_credentials`' identity
    /// column, under `fence`, at most `max` per user. Committed when this returns.
    ///
    /// # Errors
    /// [`VaultError::Moving`] when the fence no longer holds, [`VaultError::Limit`], or
    /// Postgres failed (nothing stored).
    pub async fn add(
        &self,
        fence: &Fence,
        ring: &KeyRing,
        add: &AddCredential,
        max: usize,
    ) -> Result<CredentialRecord, VaultError> {
        let user_id = to_db(add.user_id)?;
        let added = fenced!(self.record, "credentials.add", fence, |tx| 'add: {
            let count: i64 = tx
                .query_one("SELECT count(*) FROM keel_credentials WHERE user_id = $1", &[&user_id])
                .await?
                .get(0);
            if usize::try_from(count).unwrap_or(usize::MAX) >= max {
                break 'add Err(VaultError::Limit(max));
            }
            // The id is drawn first: the envelopes are bound to it.
            let id: i64 = tx
                .query_one("SELECT nextval(pg_get_serial_sequence('keel_credentials', 'id'))", &[])
                .await?
                .get(0);
            let record = match Credentials::seal(ring, add, from_db(id)?) {
                Ok(record) => record,
                Err(err) => break 'add Err(err),
            };
            tx.execute(
                &format!(
                    "INSERT INTO keel_credentials ({COLUMNS}) OVERRIDING SYSTEM VALUE
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &id,
                    &user_id,
                    &record.venue,
                    &record.label,
                    &record.api_key_hint,
                    &record.testnet,
                    &to_db(record.created_at_ms)?,
                    &json(&record.api_key)?,
                    &json(&record.api_secret)?,
                ],
            )
            .await?;
            Ok(record)
        })
        .await?;
        added.unwrap_or(Err(VaultError::Moving))
    }

    /// Deletes one credential of a user under `fence`. False if there was none.
    ///
    /// # Errors
    /// [`VaultError::Moving`] when the fence no longer holds, or Postgres failed.
    pub async fn remove(&self, fence: &Fence, credential_id: u64) -> Result<bool, VaultError> {
        let row = (fence.user_id, credential_id);
        let removed =
            self.record.delete_owned("credentials.remove", "keel_credentials", row, fence).await?;
        removed.map_err(|_| VaultError::Moving)
    }

    /// Deletes every credential of a user (account deletion; unfenced: the account is going,
    /// whichever node holds it).
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn remove_user(&self, user_id: u64) -> Result<u64, RecordError> {
        let user_id = to_db(user_id)?;
        self.record
            .timed("credentials.remove_user", async {
                let client = self.record.client().await?;
                Ok(client
                    .execute("DELETE FROM keel_credentials WHERE user_id = $1", &[&user_id])
                    .await?)
            })
            .await
    }

    /// A user's credentials, oldest first.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn of_user(&self, user_id: u64) -> Result<Vec<CredentialRecord>, RecordError> {
        let user_id = to_db(user_id)?;
        self.record
            .timed("credentials.of_user", async {
                let client = self.record.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM keel_credentials WHERE user_id = $1 ORDER BY id"
                        ),
                        &[&user_id],
                    )
                    .await?;
                rows.iter().map(from_row).collect()
            })
            .await
    }
}

impl VaultRecord {
    /// The fence this node holds `user_id` under, or [`VaultError::Moving`].
    async fn fence(&self, user_id: u64) -> Result<Fence, VaultError> {
        match self.leases.owner(user_id).await? {
            Owner::Mine(fence) => Ok(fence),
            Owner::Other { .. } | Owner::Unknown => Err(VaultError::Moving),
        }
    }
}

impl Credentials {
    /// Replaces `user_id`'s working copy with `records` (read from Postgres on taking the user).
    ///
    /// # Errors
    /// The store failed.
    pub fn replace_user(
        &self,
        user_id: u64,
        records: &[CredentialRecord],
    ) -> Result<(), VaultError> {
        self.drop_user(user_id)?;
        records.iter().try_for_each(|record| self.put(record))
    }

    /// Drops `user_id`'s working copy (another node holds the user now). Returns how many.
    ///
    /// # Errors
    /// The store failed.
    pub fn drop_user(&self, user_id: u64) -> Result<usize, VaultError> {
        let keys: Vec<_> = self
            .tree
            .scan_prefix(crate::store::id_key(user_id))
            .keys()
            .collect::<Result<_, _>>()?;
        for key in &keys {
            self.tree.remove(key)?;
        }
        Ok(keys.len())
    }
}

/// The vault's handlers in cluster mode: Postgres first, under the user's fence, then the working
/// copy, then the answer.
impl Vault {
    pub(super) fn add_in_record(
        &self,
        pg: VaultRecord,
        add: AddCredential,
        replier: Replier<Result<CredentialView, VaultError>>,
    ) -> ResponseActFuture<Self, ()> {
        let (ring, max) = (self.ring.clone(), self.max_per_user);
        let (credentials, store) = (self.credentials.clone(), self.store.clone());
        Box::pin(
            async move {
                let answer = async {
                    let fence = pg.fence(add.user_id).await?;
                    let record = pg.vault.add(&fence, &ring, &add, max).await?;
                    pg.vault.change(add.user_id, || credentials.put(&record))?;
                    store.commit().await?;
                    Ok(CredentialView::from(&record))
                };
                replier.send(answer.await);
            }
            .into_actor(self),
        )
    }

    pub(super) fn list_in_record(
        &self,
        pg: VaultRecord,
        user_id: u64,
        replier: Replier<Result<Vec<CredentialView>, VaultError>>,
    ) -> ResponseActFuture<Self, ()> {
        Box::pin(
            async move {
                let answer = pg.vault.of_user(user_id).await;
                replier.send(
                    answer
                        .map(|records| records.iter().map(CredentialView::from).collect())
                        .map_err(VaultError::from),
                );
            }
            .into_actor(self),
        )
    }

    pub(super) fn remove_in_record(
        &self,
        pg: VaultRecord,
        user_id: u64,
        credential_id: u64,
        replier: Replier<Result<(), VaultError>>,
    ) -> ResponseActFuture<Self, ()> {
        let (credentials, store) = (self.credentials.clone(), self.store.clone());
        Box::pin(
            async move {
                let answer = async {
                    let fence = pg.fence(user_id).await?;
                    if !pg.vault.remove(&fence, credential_id).await? {
                        return Err(VaultError::NotFound);
                    }
                    let key = crate::store::pair_key(user_id, credential_id);
                    pg.vault.change(user_id, || Ok(credentials.tree.remove(key)?))?;
                    store.commit().await?;
                    Ok(())
                };
                replier.send(answer.await);
            }
            .into_actor(self),
        )
    }

    pub(super) fn remove_user_in_record(
        &self,
        pg: VaultRecord,
        user_id: u64,
        replier: Replier<Result<usize, VaultError>>,
    ) -> ResponseActFuture<Self, ()> {
        let (credentials, store) = (self.credentials.clone(), self.store.clone());
        Box::pin(
            async move {
                let answer = async {
                    let removed = pg.vault.remove_user(user_id).await?;
                    let dropped = pg.vault.change(user_id, || credentials.drop_user(user_id))?;
                    store.commit().await?;
                    Ok(usize::try_from(removed).unwrap_or(usize::MAX).max(dropped))
                };
                replier.send(answer.await);
            }
            .into_actor(self),
        )
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::pg::migrations;
    use crate::pg::test_db::TestDb;
    use crate::store::Store;

    fn add(user_id: u64, label: &str) -> AddCredential {
        AddCredential {
            user_id,
            venue: "binance".into(),
            label: label.into(),
            api_key: SecretString::from(
                "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
            ),
            api_secret: SecretString::from("a secret that is never stored in plaintext"),
            testnet: false,
        }
    }

    #[tokio::test]
    async fn credentials_are_stored_sealed_under_the_fence_and_a_key_other_than_the_clusters_is_refused()
     {
        let Some(db) = TestDb::create("vault_pg").await else { return };
        let record = PgRecord::new(&db.config).unwrap();
        migrations::migrate(&record).await.unwrap();
        let client = record.client().await.unwrap();
        client
            .batch_execute(
                "INSERT INTO keel_users (email, password_hash, created_at_ms) VALUES ('a@x', 'h', 0);
                 INSERT INTO keel_user_leases (user_id, holder, epoch, expires_at)
                 VALUES (1, 'a', 1, clock_timestamp() + interval '1 minute')",
            )
            .await
            .unwrap();
        let vault = PgVault::new(record.clone());
        let ring = KeyRing::new(MasterKey::generate().unwrap());
        let fence = Fence { user_id: 1, node_id: "a".into(), epoch: 1 };

        let first = vault.add(&fence, &ring, &add(1, "one"), 2).await.unwrap();
        let second = vault.add(&fence, &ring, &add(1, "two"), 2).await.unwrap();
        assert!(second.id > first.id);
        let full = vault.add(&fence, &ring, &add(1, "three"), 2).await;
        assert!(matches!(full, Err(VaultError::Limit(2))), "{full:?}");
        let stale = Fence { epoch: 0, ..fence.clone() };
        let moving = vault.add(&stale, &ring, &add(1, "late"), 5).await;
        assert!(matches!(moving, Err(VaultError::Moving)), "{moving:?}");

        // Read back, it opens with the ring and signs as the vault does; no plaintext is stored.
        let stored = vault.of_user(1).await.unwrap();
        assert_eq!(stored.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        let dump: String = client
            .query_one("SELECT string_agg(t::text, ' ') FROM keel_credentials t", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!dump.contains("never stored in plaintext") && !dump.contains("vmPUZE6m"));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::store::StoreConfig::new(dir.path())).unwrap();
        let working = Credentials::new(store).unwrap();
        working.replace_user(1, &stored).unwrap();
        let sign =
            super::super::Sign { user_id: 1, credential_id: first.id, payload: "a=1".into() };
        assert!(working.sign(&ring, &sign).is_ok());

        assert!(vault.remove(&fence, first.id).await.unwrap());
        assert!(!vault.remove(&fence, first.id).await.unwrap(), "gone");
        assert!(matches!(vault.remove(&stale, second.id).await, Err(VaultError::Moving)));
        assert_eq!(vault.remove_user(1).await.unwrap(), 1);
        assert!(vault.of_user(1).await.unwrap().is_empty());
        assert_eq!(working.drop_user(1).unwrap(), 2);

        // The first key checked is the cluster's; another is refused.
        vault.check_key(ring.current()).await.unwrap();
        vault.check_key(ring.current()).await.unwrap();
        let other = MasterKey::generate().unwrap();
        assert!(matches!(vault.check_key(&other).await, Err(VaultError::KeyMismatch)));
        drop((client, vault, record));
        db.drop_db().await;
    }
}
