//! The Postgres identity store against the server at `KEEL_TEST_POSTGRES_URL`, each test in a
//! database of its own (skipped, and saying so, without the variable).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::identity::IdentityError;
use crate::pg::PgRecord;
use crate::pg::test_db::TestDb;

const DAY: Duration = Duration::from_secs(86_400);
const WINDOW: Duration = Duration::from_secs(930);

/// A migrated database and a pool on it.
async fn record(test: &str) -> Option<(TestDb, PgRecord)> {
    let db = TestDb::create(test).await?;
    let record = PgRecord::connect(&db.config).await.expect("connects and migrates");
    Some((db, record))
}

#[tokio::test]
async fn an_email_belongs_to_one_user_and_ids_come_from_postgres() {
    let Some((db, record)) = record("pg_users").await else { return };
    let users = PgUsers::new(record.clone());
    let ada = users.create("ada@example.com", "h1".into()).await.unwrap();
    let bob = users.create("bob@example.com", "h2".into()).await.unwrap();
    assert!(ada.id >= 1 && bob.id > ada.id, "ids from the identity column: {ada:?} {bob:?}");
    // A second node (its own pool) sees the same users and the same uniqueness.
    let other = PgUsers::new(PgRecord::new(&db.config).unwrap());
    assert!(matches!(
        other.create("ada@example.com", "h3".into()).await,
        Err(IdentityError::EmailTaken)
    ));
    let found = other.by_email("ada@example.com").await.unwrap().unwrap();
    assert_eq!((found.id, found.password_hash.as_str()), (ada.id, "h1"));
    assert!(other.exists(bob.id).await.unwrap());
    assert!(other.set_password(ada.id, "h4").await.unwrap());
    assert_eq!(users.get(ada.id).await.unwrap().unwrap().password_hash, "h4");
    assert!(!users.set_password(ada.id + 1000, "h5").await.unwrap());
    assert!(users.delete(ada.id).await.unwrap());
    assert!(!users.delete(ada.id).await.unwrap());
    assert!(users.get(ada.id).await.unwrap().is_none());
    let again = other.create("ada@example.com", "h6".into()).await.unwrap();
    assert!(again.id > bob.id, "a deleted user's id is not reused");
    drop((users, other, record));
    db.drop_db().await;
}

#[tokio::test]
async fn sessions_rotate_once_and_a_reused_token_revokes_the_session_everywhere() {
    let Some((db, record)) = record("pg_sessions_rotate").await else { return };
    let users = PgUsers::new(record.clone());
    let ada = users.create("ada@example.com", "h".into()).await.unwrap();
    let one = PgSessions::open(record.clone(), WINDOW).await.unwrap();
    let two = PgSessions::open(PgRecord::new(&db.config).unwrap(), WINDOW).await.unwrap();

    let (session, first) = one.start(ada.id, DAY).await.unwrap();
    assert!(first.0.expose_secret().starts_with("krt_"));
    // Rotated on the other node.
    let (same, second) = two.rotate(&first.0).await.unwrap();
    assert_eq!(same.id, session.id);
    assert!(one.is_active(ada.id, session.id).await.unwrap());
    assert!(!one.is_revoked(session.id).unwrap());
    // The first token again, on the first node: reuse, the session is revoked.
    assert!(matches!(one.rotate(&first.0).await, Err(IdentityError::RefreshTokenReused)));
    assert!(one.is_revoked(session.id).unwrap());
    assert!(!two.is_active(ada.id, session.id).await.unwrap());
    assert!(matches!(two.rotate(&second.0).await, Err(IdentityError::InvalidRefreshToken)));
    wait_revoked(&two, session.id).await;

    let unknown = SecretString::from("krt_nope".to_owned());
    assert!(matches!(one.rotate(&unknown).await, Err(IdentityError::InvalidRefreshToken)));
    let (_, expired) = one.start(ada.id, Duration::ZERO).await.unwrap();
    assert!(matches!(one.rotate(&expired.0).await, Err(IdentityError::InvalidRefreshToken)));
    assert!(matches!(one.start(ada.id + 1000, DAY).await, Err(IdentityError::InvalidCredentials)));
    drop((users, one, two, record));
    db.drop_db().await;
}

/// Waits (up to 5 s) for `sessions` to refuse `id`: another node's revocation arrives by poll.
async fn wait_revoked(sessions: &PgSessions, id: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sessions.is_revoked(id).unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "session {id} still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn logout_and_logout_everywhere_reach_the_other_node() {
    let Some((db, record)) = record("pg_sessions_revoke").await else { return };
    let users = PgUsers::new(record.clone());
    let (ada, bob) = (
        users.create("ada@example.com", "h".into()).await.unwrap(),
        users.create("bob@example.com", "h".into()).await.unwrap(),
    );
    let one = PgSessions::open(record.clone(), WINDOW).await.unwrap();
    let two = PgSessions::open(PgRecord::new(&db.config).unwrap(), WINDOW).await.unwrap();

    let (out, out_token) = one.start(ada.id, DAY).await.unwrap();
    one.revoke(ada.id, out.id, "logout").await.unwrap();
    assert!(one.is_revoked(out.id).unwrap(), "at once on the node that revoked it");
    assert!(matches!(two.rotate(&out_token.0).await, Err(IdentityError::InvalidRefreshToken)));
    wait_revoked(&two, out.id).await;

    let (kept, kept_token) = one.start(ada.id, DAY).await.unwrap();
    let (other, _) = one.start(ada.id, DAY).await.unwrap();
    let (theirs, _) = one.start(bob.id, DAY).await.unwrap();
    let revoked = two.revoke_all(ada.id, Some(kept.id), "password changed").await.unwrap();
    assert_eq!(revoked, vec![other.id], "the one revoked before is not counted again");
    wait_revoked(&one, other.id).await;
    assert!(!one.is_revoked(kept.id).unwrap() && !one.is_revoked(theirs.id).unwrap());
    assert!(one.rotate(&kept_token.0).await.is_ok());
    let revoked = two.revoke_all(ada.id, None, "logout everywhere").await.unwrap();
    assert_eq!(revoked, vec![kept.id]);
    wait_revoked(&one, kept.id).await;

    // A node that starts later loads the list.
    let three = PgSessions::open(PgRecord::new(&db.config).unwrap(), WINDOW).await.unwrap();
    assert!(three.is_revoked(out.id).unwrap() && three.is_revoked(kept.id).unwrap());
    assert!(!three.is_revoked(theirs.id).unwrap());

    two.remove_all(ada.id).await.unwrap();
    assert!(!one.is_active(ada.id, kept.id).await.unwrap());
    assert!(one.is_active(bob.id, theirs.id).await.unwrap());
    assert_eq!(one.prune_revocations().await.unwrap(), 0, "nothing is past its window yet");
    drop((users, one, two, three, record));
    db.drop_db().await;
}

#[tokio::test]
async fn a_revocation_list_that_cannot_be_read_refuses_rather_than_accepts() {
    let Some((db, record)) = record("pg_sessions_stale").await else { return };
    let sessions = PgSessions::open(record.clone(), WINDOW).await.unwrap();
    assert!(!sessions.is_revoked(4242).unwrap());
    // The database goes away: polls fail, and once the list is stale no answer is "not revoked".
    db.drop_db().await;
    tokio::time::sleep(REVOCATION_STALE + Duration::from_millis(500)).await;
    assert!(matches!(sessions.is_revoked(4242), Err(IdentityError::RevocationsStale)));
}

#[tokio::test]
async fn an_invite_is_spent_once_on_any_node() {
    let Some((db, record)) = record("pg_invites").await else { return };
    let one = PgInvites::new(record.clone());
    let two = PgInvites::new(PgRecord::new(&db.config).unwrap());
    let (token, expires) = one.create(Duration::from_secs(60)).await.unwrap();
    assert!(token.expose_secret().starts_with("kinv_"));
    let (a, b) = tokio::join!(one.consume(&token), two.consume(&token));
    let mut spent = [a.unwrap(), b.unwrap()];
    spent.sort_unstable();
    assert_eq!(spent, [None, Some(expires)], "exactly one node spends it");
    two.restore(&token, expires).await.unwrap();
    assert_eq!(one.consume(&token).await.unwrap(), Some(expires));
    let (stale, _) = one.create(Duration::ZERO).await.unwrap();
    assert_eq!(two.consume(&stale).await.unwrap(), None);
    let guess = SecretString::from("kinv_guess".to_owned());
    assert_eq!(one.consume(&guess).await.unwrap(), None);
    drop((one, two, record));
    db.drop_db().await;
}
