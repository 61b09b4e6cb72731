use std::collections::BTreeMap;

use super::*;
use crate::pg::migrations;
use crate::pg::test_db::TestDb;

/// Inserts `n` users; their ids.
async fn users(record: &PgRecord, n: usize) -> Vec<u64> {
    let client = record.client().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let row = client
            .query_one(
                "INSERT INTO keel_users (email, password_hash, created_at_ms)
                 VALUES ($1, 'x', 0) RETURNING id",
                &[&email],
            )
            .await
            .unwrap();
        ids.push(from_db(row.get(0)).unwrap());
    }
    ids
}

async fn setup(test: &str) -> Option<(TestDb, PgRecord)> {
    let db = TestDb::create(test).await?;
    let record = PgRecord::new(&db.config).unwrap();
    migrations::migrate(&record).await.unwrap();
    Some((db, record))
}

fn node(record: &PgRecord, id: &str) -> UserLeases {
    UserLeases::new(record.clone(), id.to_owned(), format!("http://{id}.invalid"))
}

/// Makes `node`'s heartbeat look a TTL old, as if it had died.
async fn silence(record: &PgRecord, node: &str) {
    let client = record.client().await.unwrap();
    client
        .execute(
            "UPDATE keel_nodes SET heartbeat_at = clock_timestamp() - interval '1 minute'
             WHERE node_id = $1",
            &[&node],
        )
        .await
        .unwrap();
}

async fn passes(record: &PgRecord, fence: &Fence) -> bool {
    let mut client = record.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let verdict = fence.check(&tx).await.unwrap();
    tx.commit().await.unwrap();
    verdict.is_ok()
}

#[tokio::test]
async fn a_taken_lease_is_renewed_and_a_takeover_after_expiry_raises_the_epoch_and_fences_the_old_holder()
 {
    let Some((db, record)) = setup("leases_takeover").await else { return };
    let user = users(&record, 1).await[0];
    let a = node(&record, "a");
    let mut a_changes = a.subscribe();
    a.round().await.unwrap();
    let Owner::Mine(first) = a.owner(user).await.unwrap() else { panic!("a alone takes the user") };
    assert_eq!(first.epoch, 1);
    assert_eq!(a_changes.try_recv().unwrap(), Ownership::Gained(first.clone()));
    assert!(passes(&record, &first).await);
    // Renewal keeps the epoch.
    a.0.state.lock().unwrap().renewed = None;
    a.round().await.unwrap();
    assert_eq!(a.owner(user).await.unwrap(), Owner::Mine(first.clone()));

    // a stops renewing (paused, cut off): its heartbeat and the lease run out.
    silence(&record, "a").await;
    let client = record.client().await.unwrap();
    client
        .execute(
            "UPDATE keel_user_leases SET expires_at = clock_timestamp() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let b = node(&record, "b");
    b.round().await.unwrap();
    let Owner::Mine(second) = b.owner(user).await.unwrap() else { panic!("b takes over") };
    assert_eq!(second.epoch, 2, "a takeover raises the epoch");
    assert!(!passes(&record, &first).await, "the old holder is fenced");
    assert!(passes(&record, &second).await);
    // a comes back: its renewal fails, it reports the user lost and sees b as the owner.
    a.0.state.lock().unwrap().renewed = None;
    a.round().await.unwrap();
    assert_eq!(a_changes.try_recv().unwrap(), Ownership::Lost(first));
    assert!(matches!(a.owner(user).await.unwrap(), Owner::Other { node_id, .. } if node_id == "b"));
    assert!(a.owned().is_empty());
    drop((a, b, record));
    db.drop_db().await;
}

#[tokio::test]
async fn two_nodes_racing_for_one_user_exactly_one_wins() {
    let Some((db, record)) = setup("leases_race").await else { return };
    for user in users(&record, 20).await {
        let (a, b) = (node(&record, "a"), node(&record, "b"));
        let (took_a, took_b) = tokio::join!(a.take(user), b.take(user));
        let (took_a, took_b) = (took_a.unwrap(), took_b.unwrap());
        assert!(took_a.is_some() != took_b.is_some(), "user {user}: {took_a:?} {took_b:?}");
        assert_eq!(took_a.or(took_b), Some(1));
    }
    drop(record);
    db.drop_db().await;
}

#[test]
fn rendezvous_spreads_users_evenly_and_a_joining_node_takes_about_a_quarter() {
    let three = ["node-a", "node-b", "node-c"];
    let four = ["node-a", "node-b", "node-c", "node-d"];
    let mut counts = BTreeMap::new();
    let mut moved = 0;
    for user in 1..=100u64 {
        let before = winner(user, three).unwrap();
        *counts.entry(before).or_insert(0) += 1;
        let after = winner(user, four).unwrap();
        if after != before {
            assert_eq!(after, "node-d", "a user only moves to the node that joined");
            moved += 1;
        }
    }
    for (node, count) in &counts {
        assert!((20..=47).contains(count), "{node} has {count} of 100: {counts:?}");
    }
    assert!((12..=40).contains(&moved), "{moved} of 100 moved to the fourth node");
    assert_eq!(winner(7, ["x"]), Some("x"));
    assert_eq!(winner(7, Vec::<&str>::new()), None);
}

#[tokio::test]
async fn a_released_lease_is_taken_by_another_node_at_once() {
    let Some((db, record)) = setup("leases_release").await else { return };
    let ids = users(&record, 6).await;
    let (a, b) = (node(&record, "a"), node(&record, "b"));
    a.round().await.unwrap();
    b.round().await.unwrap();
    a.round().await.unwrap();
    let held_by_a = a.owned().len();
    assert_eq!(held_by_a + b.owned().len(), ids.len(), "every user has one owner");
    assert_eq!(a.release_all().await.unwrap(), held_by_a);
    // Released: expired now, so b's next round takes all of them without waiting.
    b.round().await.unwrap();
    assert_eq!(b.owned().len(), ids.len());
    for user in ids {
        assert!(matches!(b.owner(user).await.unwrap(), Owner::Mine(_)));
        assert!(
            matches!(a.owner(user).await.unwrap(), Owner::Other { node_id, .. } if node_id == "b")
        );
    }
    // A released node takes nothing more.
    a.round().await.unwrap();
    assert!(a.owned().is_empty());
    drop((a, b, record));
    db.drop_db().await;
}

#[tokio::test]
async fn a_new_user_is_taken_by_its_rendezvous_winner_on_request() {
    let Some((db, record)) = setup("leases_winner").await else { return };
    let (a, b) = (node(&record, "a"), node(&record, "b"));
    a.round().await.unwrap();
    b.round().await.unwrap();
    a.round().await.unwrap();
    let user = users(&record, 1).await[0];
    let win = winner(user, ["a", "b"]).unwrap();
    let (winner_node, loser) = if win == "a" { (&a, &b) } else { (&b, &a) };
    assert_eq!(loser.take_if_winner(user).await.unwrap(), Owner::Unknown);
    assert!(matches!(winner_node.take_if_winner(user).await.unwrap(), Owner::Mine(_)));
    let other = loser.owner(user).await.unwrap();
    assert!(matches!(other, Owner::Other { node_id, advertise_url }
        if node_id == win && advertise_url == format!("http://{win}.invalid")));
    drop((a, b, record));
    db.drop_db().await;
}
