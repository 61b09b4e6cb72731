//! Login sessions in Postgres: `keel_sessions`, `keel_refresh_tokens` (by hash, with rotation
//! and reuse detection as on sled) and `keel_revoked_sessions`, the revocation list every node
//! reads.
//!
//! # Revocation across nodes
//!
//! The request path checks a session with one in-memory look-up, as on sled. Each node's copy
//! of the list holds its own revocations at once (added after their `COMMIT`) and every other
//! node's through a poll of `keel_revoked_sessions` every [`REVOCATION_POLL`]: a session
//! revoked on one node is refused on every other within about a second. A copy whose last
//! successful poll started more than [`REVOCATION_STALE`] ago is not trusted: while Postgres
//! cannot be read, [`PgSessions::is_revoked`] answers an error (503) rather than let a revoked
//! session through. The refresh path reads the session's row in Postgres, so a revoked
//! session's refresh tokens stop working on every node at once.
//!
//! Each poll reads the rows recorded since the previous poll started, minus
//! [`REVOCATION_OVERLAP`]: a row's `recorded_at` is taken before its transaction commits, and no
//! revoking transaction lasts longer than [`crate::pg::CALL_TIMEOUT`] (one abandoned at the
//! deadline is rolled back), so a row committed late is still inside the next poll's window.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::super::sessions::{Rotation, new_token, now_secs, token_key};
use super::super::{IdentityError, RefreshToken, SessionRecord, now_ms};
use crate::pg::{PgRecord, RecordError, from_db, to_db};

/// How often each node reads the revocations the other nodes recorded.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// How old the last successful read of the revocation list may be before the list is not
/// trusted and authenticated requests are answered 503.
pub const REVOCATION_STALE: Duration = Duration::from_secs(5);
/// How far back each poll looks before the previous poll's start (see the module docs).
pub const REVOCATION_OVERLAP: Duration = Duration::from_secs(30);

// A revoking transaction is abandoned (rolled back) at the call deadline, well inside the
// overlap; and the list is polled several times before it counts as stale.
const _: () = assert!(REVOCATION_OVERLAP.as_secs() > 2 * crate::pg::CALL_TIMEOUT.as_secs());
const _: () = assert!(REVOCATION_STALE.as_secs() > 2 * REVOCATION_POLL.as_secs());

/// The revocation list of this node and how fresh it is; shared with the poller.
#[derive(Debug, Default)]
struct Revocations {
    /// Session id → until (seconds since the epoch).
    sessions: DashMap<u64, u64>,
    /// When the last successful poll started (here), and Postgres's clock then.
    synced: Mutex<Option<(Instant, SystemTime)>>,
}

/// The sessions, refresh tokens and revocation list in Postgres.
#[derive(Debug, Clone)]
pub struct PgSessions {
    record: PgRecord,
    revoked: Arc<Revocations>,
    token_window: Duration,
}

const SESSION_COLUMNS: &str = "id, user_id, created_at_ms, expires_at_ms, revoked";

fn session(row: &Row) -> Result<SessionRecord, RecordError> {
    Ok(SessionRecord {
        id: from_db(row.try_get("id")?)?,
        user_id: from_db(row.try_get("user_id")?)?,
        created_at_ms: from_db(row.try_get("created_at_ms")?)?,
        expires_at_ms: from_db(row.try_get("expires_at_ms")?)?,
        revoked: row.try_get("revoked")?,
    })
}

/// Records sessions in the revocation list (in the caller's transaction), each until `until`.
async fn insert_revocations(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: i64,
    sessions: &[i64],
    until: i64,
) -> Result<(), RecordError> {
    if sessions.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO keel_revoked_sessions (session_id, user_id, until_secs) \
             SELECT s, $2, $3 FROM UNNEST($1::int8[]) AS s \
             ON CONFLICT (session_id) DO UPDATE SET \
                 until_secs = greatest(keel_revoked_sessions.until_secs, excluded.until_secs), \
                 recorded_at = clock_timestamp()",
        &[&sessions, &user_id, &until],
    )
    .await?;
    Ok(())
}

impl PgSessions {
    /// The sessions of `record`, with the revocation list read once and then kept current by a
    /// task polling every [`REVOCATION_POLL`] (it ends when the last clone is dropped). Must
    /// run inside a Tokio runtime.
    ///
    /// # Errors
    /// The first read of the revocation list failed.
    pub async fn open(record: PgRecord, token_window: Duration) -> Result<Self, RecordError> {
        let sessions = Self { record, revoked: Arc::default(), token_window };
        sessions
            .record
            .timed("revocations.load", poll(&sessions.record, &sessions.revoked))
            .await?;
        let (record, weak) = (sessions.record.clone(), Arc::downgrade(&sessions.revoked));
        tokio::spawn(keep_polling(record, weak));
        Ok(sessions)
    }

    fn until(&self) -> Result<i64, RecordError> {
        to_db(now_secs().saturating_add(self.token_window.as_secs()))
    }

    fn remember(&self, sessions: &[u64], until: i64) {
        let until = u64::try_from(until).unwrap_or(0);
        for id in sessions {
            self.revoked.sessions.insert(*id, until);
        }
    }

    /// Starts a session lasting `ttl` and returns it with its first refresh token; committed
    /// when this returns.
    ///
    /// # Errors
    /// [`IdentityError::InvalidCredentials`] when the user no longer exists; Postgres or the
    /// random source failed.
    pub async fn start(
        &self,
        user_id: u64,
        ttl: Duration,
    ) -> Result<(SessionRecord, RefreshToken), IdentityError> {
        let (token, key) = new_token()?;
        let now = now_ms();
        let (user, created, expires) =
            (to_db(user_id)?, to_db(now)?, to_db(now.saturating_add(ttl.as_millis() as u64))?);
        let started = self
            .record
            .timed("sessions.start", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                let sql = format!(
                    "INSERT INTO keel_sessions (user_id, created_at_ms, expires_at_ms) \
                     VALUES ($1, $2, $3) RETURNING {SESSION_COLUMNS}"
                );
                let started = session(&tx.query_one(&sql, &[&user, &created, &expires]).await?)?;
                tx.execute(
                    "INSERT INTO keel_refresh_tokens (token_hash, user_id, session_id, \
                     expires_at_ms) VALUES ($1, $2, $3, $4)",
                    &[&key, &user, &to_db(started.id)?, &expires],
                )
                .await?;
                tx.commit().await?;
                Ok(started)
            })
            .await;
        match started {
            // The user's row is gone (deleted on some node): as on sled, no session.
            Err(err) if err.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(IdentityError::InvalidCredentials)
            }
            other => Ok((other?, token)),
        }
    }

    /// Consumes `presented` and returns its session with the next refresh token, in one
    /// transaction that locks the token's and the session's rows (two nodes presenting the same
    /// token take turns: the second sees it used).
    ///
    /// # Errors
    /// [`IdentityError::InvalidRefreshToken`] for an unknown or expired token or a revoked
    /// session; [`IdentityError::RefreshTokenReused`] for a token already consumed, in which
    /// case the session is now revoked (committed) on every node.
    pub async fn rotate(
        &self,
        presented: &SecretString,
    ) -> Result<(SessionRecord, RefreshToken), IdentityError> {
        let presented_key = token_key(presented.expose_secret())?;
        let (next, next_key) = new_token()?;
        let now = to_db(now_ms())?;
        let until = self.until()?;
        let outcome = self
            .record
            .timed("sessions.rotate", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                let Some(token) = tx
                    .query_opt(
                        "SELECT session_id, expires_at_ms, used FROM keel_refresh_tokens \
                         WHERE token_hash = $1 FOR UPDATE",
                        &[&presented_key],
                    )
                    .await?
                else {
                    return Ok(Rotation::Invalid);
                };
                let (session_id, expires, used): (i64, i64, bool) =
                    (token.try_get(0)?, token.try_get(1)?, token.try_get(2)?);
                let sql =
                    format!("SELECT {SESSION_COLUMNS} FROM keel_sessions WHERE id = $1 FOR UPDATE");
                let Some(row) = tx.query_opt(&sql, &[&session_id]).await? else {
                    return Ok(Rotation::Invalid);
                };
                let found = session(&row)?;
                if used {
                    let user = to_db(found.user_id)?;
                    tx.execute(
                        "UPDATE keel_sessions SET revoked = 'refresh token reused' \
                         WHERE id = $1 AND revoked IS NULL",
                        &[&session_id],
                    )
                    .await?;
                    insert_revocations(&tx, user, &[session_id], until).await?;
                    tx.commit().await?;
                    return Ok(Rotation::Reused(found.user_id, found.id));
                }
                if found.revoked.is_some() || expires <= now {
                    return Ok(Rotation::Invalid);
                }
                tx.execute(
                    "UPDATE keel_refresh_tokens SET used = true WHERE token_hash = $1",
                    &[&presented_key],
                )
                .await?;
                tx.execute(
                    "INSERT INTO keel_refresh_tokens (token_hash, user_id, session_id, \
                     expires_at_ms) VALUES ($1, $2, $3, $4)",
                    &[&next_key, &to_db(found.user_id)?, &session_id, &expires],
                )
                .await?;
                tx.commit().await?;
                Ok(Rotation::Rotated(found))
            })
            .await?;
        match outcome {
            Rotation::Rotated(session) => Ok((session, next)),
            Rotation::Invalid => Err(IdentityError::InvalidRefreshToken),
            Rotation::Reused(_, session_id) => {
                self.remember(&[session_id], until);
                tracing::warn!("refresh token reuse detected; session revoked");
                metrics::counter!("keel_refresh_token_reuse_total").increment(1);
                Err(IdentityError::RefreshTokenReused)
            }
        }
    }

    /// Whether the session exists, is not revoked and has not expired (a Postgres read).
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn is_active(&self, user_id: u64, session_id: u64) -> Result<bool, RecordError> {
        let (user, id, now) = (to_db(user_id)?, to_db(session_id)?, to_db(now_ms())?);
        self.record
            .timed("sessions.is_active", async {
                let client = self.record.client().await?;
                let row = client
                    .query_opt(
                        "SELECT 1 FROM keel_sessions WHERE id = $1 AND user_id = $2 \
                         AND revoked IS NULL AND expires_at_ms > $3",
                        &[&id, &user, &now],
                    )
                    .await?;
                Ok(row.is_some())
            })
            .await
    }

    /// Whether access tokens of this session are refused: one in-memory look-up.
    ///
    /// # Errors
    /// [`IdentityError::RevocationsStale`] when the session is not known to be revoked but the
    /// list has not been read from Postgres for [`REVOCATION_STALE`].
    pub fn is_revoked(&self, session_id: u64) -> Result<bool, IdentityError> {
        if self.revoked.sessions.contains_key(&session_id) {
            return Ok(true);
        }
        let synced = *self.revoked.synced.lock().unwrap_or_else(PoisonError::into_inner);
        match synced {
            Some((at, _)) if at.elapsed() <= REVOCATION_STALE => Ok(false),
            _ => Err(IdentityError::RevocationsStale),
        }
    }

    /// Entries in this node's revocation list now.
    pub fn revocations(&self) -> usize {
        self.revoked.sessions.len()
    }

    /// Revokes one session (logout); committed when this returns.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn revoke(
        &self,
        user_id: u64,
        session_id: u64,
        reason: &str,
    ) -> Result<(), RecordError> {
        let (user, id, until) = (to_db(user_id)?, to_db(session_id)?, self.until()?);
        self.record
            .timed("sessions.revoke", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "UPDATE keel_sessions SET revoked = coalesce(revoked, $3) \
                     WHERE id = $1 AND user_id = $2",
                    &[&id, &user, &reason],
                )
                .await?;
                insert_revocations(&tx, user, &[id], until).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
        self.remember(&[session_id], until);
        Ok(())
    }

    /// Revokes every live session of a user except `keep`, and returns the ids it revoked (not
    /// those revoked before); expired sessions are removed on the way. Committed when this
    /// returns.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn revoke_all(
        &self,
        user_id: u64,
        keep: Option<u64>,
        reason: &str,
    ) -> Result<Vec<u64>, RecordError> {
        let (user, now, until) = (to_db(user_id)?, to_db(now_ms())?, self.until()?);
        let keep = keep.map(to_db).transpose()?;
        let revoked = self
            .record
            .timed("sessions.revoke_all", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    "DELETE FROM keel_sessions WHERE user_id = $1 AND expires_at_ms <= $2",
                    &[&user, &now],
                )
                .await?;
                let rows = tx
                    .query(
                        "UPDATE keel_sessions SET revoked = $3 WHERE user_id = $1 \
                         AND revoked IS NULL AND ($2::int8 IS NULL OR id <> $2) RETURNING id",
                        &[&user, &keep, &reason],
                    )
                    .await?;
                let mut ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
                ids.sort_unstable();
                insert_revocations(&tx, user, &ids, until).await?;
                tx.commit().await?;
                ids.into_iter().map(from_db).collect::<Result<Vec<u64>, _>>()
            })
            .await?;
        self.remember(&revoked, until);
        Ok(revoked)
    }

    /// Removes every session of a user and their refresh tokens (account deletion, after
    /// [`PgSessions::revoke_all`]), and every expired refresh token of anyone.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn remove_all(&self, user_id: u64) -> Result<(), RecordError> {
        let (user, now) = (to_db(user_id)?, to_db(now_ms())?);
        self.record
            .timed("sessions.remove_all", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                tx.execute("DELETE FROM keel_sessions WHERE user_id = $1", &[&user]).await?;
                tx.execute("DELETE FROM keel_refresh_tokens WHERE expires_at_ms <= $1", &[&now])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
            .await
    }

    /// Drops revocation entries whose window has passed, here and in Postgres.
    ///
    /// # Errors
    /// Postgres failed (this node's list was pruned anyway).
    pub async fn prune_revocations(&self) -> Result<usize, RecordError> {
        let now = now_secs();
        let before = self.revoked.sessions.len();
        self.revoked.sessions.retain(|_, until| *until >= now);
        let pruned = before.saturating_sub(self.revoked.sessions.len());
        let now = to_db(now)?;
        self.record
            .timed("revocations.prune", async {
                let client = self.record.client().await?;
                client
                    .execute("DELETE FROM keel_revoked_sessions WHERE until_secs < $1", &[&now])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(pruned)
    }
}

/// Reads the revocations recorded since the last poll (all live ones the first time) into
/// `revoked`, and marks it fresh as of this poll's start.
async fn poll(record: &PgRecord, revoked: &Revocations) -> Result<(), RecordError> {
    let started = Instant::now();
    let since = revoked.synced.lock().unwrap_or_else(PoisonError::into_inner).map(|(_, db)| db);
    let client = record.client().await?;
    let db_now: SystemTime = client.query_one("SELECT clock_timestamp()", &[]).await?.get(0);
    let rows = match since {
        Some(since) => {
            let from = since.checked_sub(REVOCATION_OVERLAP).unwrap_or(SystemTime::UNIX_EPOCH);
            let sql = "SELECT session_id, until_secs FROM keel_revoked_sessions \
                       WHERE recorded_at >= $1";
            client.query(sql, &[&from]).await?
        }
        None => {
            let now = to_db(now_secs())?;
            let sql = "SELECT session_id, until_secs FROM keel_revoked_sessions \
                       WHERE until_secs >= $1";
            client.query(sql, &[&now]).await?
        }
    };
    for row in rows {
        let (id, until) = (from_db(row.try_get(0)?)?, from_db(row.try_get(1)?)?);
        revoked.sessions.entry(id).and_modify(|kept| *kept = (*kept).max(until)).or_insert(until);
    }
    *revoked.synced.lock().unwrap_or_else(PoisonError::into_inner) = Some((started, db_now));
    Ok(())
}

/// Polls every [`REVOCATION_POLL`] until the sessions are dropped.
async fn keep_polling(record: PgRecord, revoked: Weak<Revocations>) {
    let mut every = tokio::time::interval(REVOCATION_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let Some(revoked) = revoked.upgrade() else { return };
        match record.timed("revocations.poll", poll(&record, &revoked)).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("reading the revocation list from Postgres again");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err.detail(), "reading the revocation list failed");
            }
            Err(_) => {}
        }
    }
}
