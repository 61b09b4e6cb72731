//! Fencing: a node acts for a user only while it holds the user's lease at the epoch it took it
//! with (`keel_user_leases`, docs/CLUSTER.md). Every write a node makes for a user checks its
//! [`Fence`] in the same transaction, so a node that lost the lease (paused, cut off, its lease
//! expired and taken by another node, which raised the epoch) has that write refused and
//! rolled back, and sends nothing on it.

use super::{RecordError, to_db};

/// The proof that this node holds a user's lease: the user, the node, and the epoch the lease
/// was taken at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The user the lease is for.
    pub user_id: u64,
    /// The node holding it (`cluster.node_id`).
    pub node_id: String,
    /// The epoch it was taken at; a user's epoch only rises.
    pub epoch: i64,
}

/// A write was refused: the node no longer holds the user's lease at its epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {user_id}'s lease is no longer node {node_id}'s at epoch {epoch}")]
pub struct Fenced {
    /// The user.
    pub user_id: u64,
    /// The node that tried to write.
    pub node_id: String,
    /// The epoch it wrote under.
    pub epoch: i64,
}

impl Fence {
    /// Checks, inside `tx`, that the lease is still this node's at this epoch and unexpired by
    /// Postgres's clock, and holds the row (`FOR SHARE`) until `tx` ends, so the lease cannot
    /// be taken over between the check and the commit.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when the lease has moved, expired or changed epoch; `Err` when
    /// Postgres failed.
    pub async fn check(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<Result<(), Fenced>, RecordError> {
        let row = tx
            .query_opt(
                "SELECT 1 FROM keel_user_leases
                 WHERE user_id = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
                 FOR SHARE",
                &[&to_db(self.user_id)?, &self.node_id, &self.epoch],
            )
            .await?;
        Ok(match row {
            Some(_) => Ok(()),
            None => Err(Fenced {
                user_id: self.user_id,
                node_id: self.node_id.clone(),
                epoch: self.epoch,
            }),
        })
    }
}

/// The shape of every write a node makes for a user: `fenced!(record, what, fence, |tx| body)`
/// runs `body` (an expression that may use `tx`, the transaction, and `?` on [`RecordError`])
/// in one transaction that first checks `fence`, and commits once `body` has succeeded, within
/// the call deadline as `what` ([`PgRecord::timed`](super::PgRecord::timed)). A future of
/// `Result<Result<T, Fenced>, RecordError>`: `Ok(Err(Fenced))` when the lease has moved
/// (nothing ran, nothing written); `Err` when Postgres or `body` failed (rolled back). A macro
/// rather than a function taking a closure: `body` borrows the caller's data and the
/// transaction, which a closure bound for every transaction lifetime could not.
macro_rules! fenced {
    ($record:expr, $what:expr, $fence:expr, |$tx:ident| $body:expr) => {
        $record.timed($what, async {
            let mut client = $record.client().await?;
            let $tx = client.transaction().await?;
            if let Err(fenced) = $fence.check(&$tx).await? {
                return Ok(Err(fenced));
            }
            let done = $body;
            $tx.commit().await?;
            Ok(Ok(done))
        })
    };
}
pub(crate) use fenced;

impl super::PgRecord {
    /// Deletes row `id` of `user_id`'s from `table` (one of ours, with `user_id` and `id`
    /// columns) under `fence`, as `what`; whether there was one.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when the lease has moved (nothing deleted); `Err` when Postgres failed.
    pub(crate) async fn delete_owned(
        &self,
        what: &'static str,
        table: &'static str,
        (user_id, id): (u64, u64),
        fence: &Fence,
    ) -> Result<Result<bool, Fenced>, RecordError> {
        let (user_id, id) = (to_db(user_id)?, to_db(id)?);
        let sql = format!("DELETE FROM {table} WHERE user_id = $1 AND id = $2");
        fenced!(self, what, fence, |tx| tx.execute(&sql, &[&user_id, &id]).await? == 1).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_db::TestDb;
    use super::super::{PgRecord, migrations};
    use super::*;

    /// Inserts user 1 and gives its lease to `holder` at `epoch`, expiring in `secs`.
    async fn lease(record: &PgRecord, holder: &str, epoch: i64, secs: i32) {
        let client = record.client().await.unwrap();
        client
            .execute(
                "INSERT INTO keel_users (email, password_hash, created_at_ms)
                 VALUES ('fence@example.com', 'x', 0) ON CONFLICT DO NOTHING",
                &[],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO keel_user_leases (user_id, holder, epoch, expires_at)
                 VALUES (1, $1, $2, clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (user_id) DO UPDATE
                 SET holder = $1, epoch = $2, expires_at = clock_timestamp() + make_interval(secs => $3)",
                &[&holder, &epoch, &f64::from(secs)],
            )
            .await
            .unwrap();
    }

    async fn check(record: &PgRecord, fence: &Fence) -> Result<(), Fenced> {
        let mut client = record.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let verdict = fence.check(&tx).await.unwrap();
        tx.commit().await.unwrap();
        verdict
    }

    #[tokio::test]
    async fn only_the_holder_at_its_epoch_and_before_expiry_passes() {
        let Some(db) = TestDb::create("fence_check").await else { return };
        let record = PgRecord::new(&db.config).unwrap();
        migrations::migrate(&record).await.unwrap();
        let fence = Fence { user_id: 1, node_id: "a".into(), epoch: 1 };
        lease(&record, "a", 1, 10).await;
        assert_eq!(check(&record, &fence).await, Ok(()));
        // Taken over by b: a higher epoch, another holder.
        lease(&record, "b", 2, 10).await;
        assert!(check(&record, &fence).await.is_err(), "another holder");
        // Back to a, but at a new epoch: a's old fence stays stale.
        lease(&record, "a", 3, 10).await;
        assert!(check(&record, &fence).await.is_err(), "an old epoch");
        // Expired, though still a's at epoch 1.
        lease(&record, "a", 1, -1).await;
        assert!(check(&record, &fence).await.is_err(), "expired");
        // No lease row at all.
        let other = Fence { user_id: 2, node_id: "a".into(), epoch: 1 };
        assert!(check(&record, &other).await.is_err(), "no lease");
        drop(record);
        db.drop_db().await;
    }
}
