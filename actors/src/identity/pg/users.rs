//! Users in Postgres (`keel_users`): ids from the table's identity column, so they are unique
//! across nodes, and the email's uniqueness held by a `UNIQUE` constraint.

use keel_core::bot::user_risk::UserRiskLimits;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::super::{IdentityError, UserRecord, now_ms};
use crate::pg::{PgRecord, RecordError, from_db, to_db};

/// The users table.
#[derive(Debug, Clone)]
pub struct PgUsers {
    record: PgRecord,
}

fn user(row: &Row) -> Result<UserRecord, RecordError> {
    Ok(UserRecord {
        id: from_db(row.try_get("id")?)?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_at_ms: from_db(row.try_get("created_at_ms")?)?,
        // Owners' limits stay with the bots in each node's store for now (docs/CLUSTER.md).
        risk: UserRiskLimits::default(),
    })
}

const COLUMNS: &str = "id, email, password_hash, created_at_ms";

impl PgUsers {
    /// The users of `record`.
    pub fn new(record: PgRecord) -> Self {
        Self { record }
    }

    /// Creates a user with an already normalised email; committed when this returns.
    ///
    /// # Errors
    /// [`IdentityError::EmailTaken`] (on any node), or Postgres failed.
    pub async fn create(
        &self,
        email: &str,
        password_hash: String,
    ) -> Result<UserRecord, IdentityError> {
        let created_at = to_db(now_ms())?;
        let inserted = self
            .record
            .timed("users.create", async {
                let client = self.record.client().await?;
                let sql = format!(
                    "INSERT INTO keel_users (email, password_hash, created_at_ms) \
                     VALUES ($1, $2, $3) RETURNING {COLUMNS}"
                );
                let row = client.query_one(&sql, &[&email, &password_hash, &created_at]).await?;
                user(&row)
            })
            .await;
        match inserted {
            Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(IdentityError::EmailTaken)
            }
            other => Ok(other?),
        }
    }

    /// The user with this id.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn get(&self, id: u64) -> Result<Option<UserRecord>, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("users.get", async {
                let client = self.record.client().await?;
                let sql = format!("SELECT {COLUMNS} FROM keel_users WHERE id = $1");
                client.query_opt(&sql, &[&id]).await?.as_ref().map(user).transpose()
            })
            .await
    }

    /// Whether a user with this id exists.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn exists(&self, id: u64) -> Result<bool, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("users.exists", async {
                let client = self.record.client().await?;
                Ok(client
                    .query_opt("SELECT 1 FROM keel_users WHERE id = $1", &[&id])
                    .await?
                    .is_some())
            })
            .await
    }

    /// The user with this normalised email.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn by_email(&self, email: &str) -> Result<Option<UserRecord>, RecordError> {
        // No stored email holds a NUL (emails are refused with control characters), and
        // Postgres would refuse the parameter: a sign-in with one finds nobody.
        if email.contains('\0') {
            return Ok(None);
        }
        self.record
            .timed("users.by_email", async {
                let client = self.record.client().await?;
                let sql = format!("SELECT {COLUMNS} FROM keel_users WHERE email = $1");
                client.query_opt(&sql, &[&email]).await?.as_ref().map(user).transpose()
            })
            .await
    }

    /// Replaces a user's password hash; false if there is no such user. Committed when this
    /// returns.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn set_password(&self, id: u64, password_hash: &str) -> Result<bool, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("users.set_password", async {
                let client = self.record.client().await?;
                let sql = "UPDATE keel_users SET password_hash = $2 WHERE id = $1";
                Ok(client.execute(sql, &[&id, &password_hash]).await? == 1)
            })
            .await
    }

    /// Deletes a user, freeing their email; their sessions and refresh tokens go with them (the
    /// revocation list keeps refusing their access tokens). True if they existed.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn delete(&self, id: u64) -> Result<bool, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("users.delete", async {
                let client = self.record.client().await?;
                Ok(client.execute("DELETE FROM keel_users WHERE id = $1", &[&id]).await? == 1)
            })
            .await
    }
}
