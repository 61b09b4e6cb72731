//! Owners' risk limits in Postgres (`keel_user_limits`, schema step 4): the record of
//! `GET/PUT /api/v1/me/risk` in cluster mode with `postgres_url`. The owner node keeps a working
//! copy ([`crate::bot::UserLimits`]), loaded when it takes the user, so limits set through any
//! node bound the user's bots wherever they run.

use super::{PgBotError, PgBotRepo, fenced, json, parse};
use crate::pg::fence::Fence;
use crate::pg::{RecordError, to_db};
use keel_core::bot::UserId;
use keel_core::bot::user_risk::UserRiskLimits;

impl PgBotRepo {
    /// `user_id`'s limits (none for a user who never set any).
    ///
    /// # Errors
    /// Postgres failed or the row does not decode.
    pub async fn user_limits(&self, user_id: UserId) -> Result<UserRiskLimits, RecordError> {
        let user_id = to_db(user_id)?;
        self.record
            .timed("user_limits.get", async {
                let client = self.record.client().await?;
                let row = client
                    .query_opt(
                        "SELECT limits FROM keel_user_limits WHERE user_id = $1",
                        &[&user_id],
                    )
                    .await?;
                row.map(|row| parse(row.try_get("limits")?))
                    .transpose()
                    .map(Option::unwrap_or_default)
            })
            .await
    }

    /// Stores `user_id`'s limits under `fence`. Committed when this returns.
    ///
    /// # Errors
    /// [`PgBotError::Fenced`], or Postgres failed (nothing stored).
    pub async fn put_user_limits(
        &self,
        user_id: UserId,
        limits: &UserRiskLimits,
        fence: Option<&Fence>,
    ) -> Result<(), PgBotError> {
        let (user_id, body) = (to_db(user_id)?, json(limits)?);
        Ok(self
            .record
            .timed("user_limits.put", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                if let Err(fenced) = fenced(&tx, fence).await? {
                    return Ok(Err(fenced));
                }
                tx.execute(
                    "INSERT INTO keel_user_limits (user_id, limits) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE
                     SET limits = excluded.limits, updated_at = clock_timestamp()",
                    &[&user_id, &body],
                )
                .await?;
                tx.commit().await?;
                Ok(Ok(()))
            })
            .await??)
    }
}
