//! The notifier's delivery loop in cluster mode with `postgres_url`: the outbox is
//! `keel_notify_outbox` ([`super::pg`]), and this node makes the deliveries of the users whose
//! lease it holds (their events arise here).
//!
//! The loop reads the due rows of those users (woken by a flush that wrote some, and at least
//! every [`POLL`], which is how a node that just took a user finds the deliveries its previous
//! owner left pending), makes each attempt as the sled loop does ([`super::actor::apply`]), and
//! writes the outcome back under the owner's fence. A node that lost the user meanwhile has the
//! write refused and the row stays pending: the new owner makes it again (at least once;
//! receivers deduplicate on `Keel-Delivery`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::NotifyConfig;
use super::actor::{PRUNE_EVERY, attempt_on};
use super::deliver::Sender;
use super::outbox::{DeliveryRecord, Notifications};
use super::pg::NotifyRecord;
use crate::identity::now_ms;
use crate::pg::fence::Fence;

/// Longest wait between two reads of the due rows.
const POLL: Duration = Duration::from_millis(500);

/// The delivery loop over the Postgres outbox.
pub(super) async fn deliver(
    notifications: Notifications,
    record: NotifyRecord,
    sender: Sender,
    config: Arc<NotifyConfig>,
) {
    let mut in_flight: JoinSet<u64> = JoinSet::new();
    let mut busy: HashSet<u64> = HashSet::new();
    let mut last_prune = Instant::now();
    loop {
        let fences: HashMap<u64, Fence> =
            record.leases.owned().into_iter().map(|f| (f.user_id, f)).collect();
        let room = config.max_in_flight.saturating_sub(in_flight.len());
        if !fences.is_empty() && room > 0 {
            let users: Vec<u64> = fences.keys().copied().collect();
            match record.table.due(&users, now_ms(), room + busy.len()).await {
                Ok(mut due) => {
                    due.retain(|r| !busy.contains(&r.id));
                    for row in due.into_iter().take(room) {
                        let Some(fence) = fences.get(&row.user_id).cloned() else { continue };
                        busy.insert(row.id);
                        let (record, sender, config) =
                            (record.clone(), sender.clone(), config.clone());
                        in_flight.spawn_local(async move {
                            let id = row.id;
                            attempt(&record, &sender, &config, row, &fence).await;
                            id
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err.detail(), "reading due deliveries failed"),
            }
        }
        metrics::gauge!("keel_notify_pending").set(in_flight.len() as f64);
        if last_prune.elapsed() >= PRUNE_EVERY && !fences.is_empty() {
            last_prune = Instant::now();
            let users: Vec<u64> = fences.keys().copied().collect();
            let cutoff = now_ms().saturating_sub(config.keep_finished.as_millis() as u64);
            if let Err(err) = record.table.prune(&users, cutoff).await {
                tracing::warn!(error = %err.detail(), "pruning notification deliveries failed");
            }
        }
        tokio::select! {
            () = notifications.woken() => {}
            () = tokio::time::sleep(POLL) => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                match done {
                    Ok(id) => {
                        busy.remove(&id);
                    }
                    // The row is still pending: it is read again, but its id stays busy until
                    // the next start rather than risk two attempts at once.
                    Err(err) => tracing::error!(error = %err, "a delivery attempt panicked"),
                }
            }
        }
    }
}

/// Makes one attempt at `row` and writes its outcome back under `fence`.
async fn attempt(
    record: &NotifyRecord,
    sender: &Sender,
    config: &NotifyConfig,
    mut row: DeliveryRecord,
    fence: &Fence,
) {
    // Read from the record, not the working copy: it may still be loading on a node that just
    // took the owner, and a delivery must not fail for a channel that exists.
    let channel = record.table.channel(row.user_id, row.channel_id).await;
    let channel = channel.map_err(|err| err.detail());
    attempt_on(sender, config, &mut row, channel).await;
    match record.table.record_outcome(&row, fence).await {
        Ok(Ok(_)) => {}
        Ok(Err(fenced)) => {
            tracing::warn!(delivery = row.id, error = %fenced, "delivery outcome fenced");
        }
        Err(err) => {
            tracing::warn!(error = %err.detail(), "recording a delivery's outcome failed");
        }
    }
}
