//! Registration invites in Postgres (`keel_invites`): only a hash of each token, with its
//! expiry. Spending one is a single `DELETE … RETURNING`, so two nodes cannot both spend it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::super::invites::{invite_key, new_invite};
use super::super::{IdentityError, now_ms};
use crate::pg::{PgRecord, from_db, to_db};

/// The invites table.
#[derive(Debug, Clone)]
pub struct PgInvites {
    record: PgRecord,
}

impl PgInvites {
    /// The invites of `record`.
    pub fn new(record: PgRecord) -> Self {
        Self { record }
    }

    /// A new invite valid for `ttl`, and when it expires (ms since the epoch); committed when
    /// this returns. Expired invites are dropped on the way.
    ///
    /// # Errors
    /// Postgres or the random source failed.
    pub async fn create(&self, ttl: Duration) -> Result<(SecretString, u64), IdentityError> {
        let (token, key) = new_invite()?;
        let now = to_db(now_ms())?;
        let expires_at_ms = now_ms().saturating_add(ttl.as_millis() as u64);
        let expires = to_db(expires_at_ms)?;
        self.record
            .timed("invites.create", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                tx.execute("DELETE FROM keel_invites WHERE expires_at_ms <= $1", &[&now]).await?;
                tx.execute(
                    "INSERT INTO keel_invites (token_hash, expires_at_ms) VALUES ($1, $2)",
                    &[&key, &expires],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
        Ok((token, expires_at_ms))
    }

    /// Spends an invite: its expiry if it existed and had not expired (it is gone either way).
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn consume(&self, token: &SecretString) -> Result<Option<u64>, IdentityError> {
        let key = invite_key(token.expose_secret())?;
        let expires = self
            .record
            .timed("invites.consume", async {
                let client = self.record.client().await?;
                let sql = "DELETE FROM keel_invites WHERE token_hash = $1 RETURNING expires_at_ms";
                let row = client.query_opt(sql, &[&key]).await?;
                row.map(|row| from_db(row.get(0))).transpose()
            })
            .await?;
        Ok(expires.filter(|at| *at > now_ms()))
    }

    /// Puts back an invite spent by a registration that then failed (a taken email, say).
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn restore(
        &self,
        token: &SecretString,
        expires_at_ms: u64,
    ) -> Result<(), IdentityError> {
        let key = invite_key(token.expose_secret())?;
        let expires = to_db(expires_at_ms)?;
        self.record
            .timed("invites.restore", async {
                let client = self.record.client().await?;
                client
                    .execute(
                        "INSERT INTO keel_invites (token_hash, expires_at_ms) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                        &[&key, &expires],
                    )
                    .await?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}
