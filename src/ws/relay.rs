//! The WebSocket relay (cluster mode with `cluster.postgres_url`; docs/CLUSTER.md, "The
//! WebSocket relay"): a `bot:{id}` channel on a node where the bot does not run gets the bot's
//! lines from the node that runs it.
//!
//! Subscribing asks the user's owner, through a forwarded `GET /api/v1/bots/{id}` (or, with
//! `since`, `GET /api/v1/bots/{id}/events?after=…`, which is also the catch-up read), whether the
//! bot is the user's, after this node has started following the user's subject
//! ([`UserEvents::follow`](keel_actors::cluster::user_events::UserEvents::follow)): a line made
//! durable after the read is published after the subscription, so it arrives live, and the few
//! both in the read and live are sent once (by journal id). From then on [`Continuity`] checks
//! every line of the channel: one that skips an id the channel has not had means lines were lost
//! between the nodes, and the connection closes with 1013 so the client resumes with `since`.
//!
//! The `account` channel (every line of every bot of the user) follows the user's subject too
//! ([`follow_account`]), whichever node owns the user: a node skips its own batches, so the
//! channel gets this node's bots' lines directly and the other nodes' relayed, also across a
//! handover of the user.

use std::collections::HashMap;
use std::sync::Arc;

use keel_actors::bot::BotEvent;
use keel_actors::cluster::user_events::Following;
use keel_actors::cluster::users::Owner;
use serde::Deserialize;

use super::protocol::{Channel, OpError};
use crate::state::AppState;

/// How long following a user's subject may take (the connection waits for its answer).
const FOLLOW_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a relayed channel's next line must follow on from the last one sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuity {
    /// Set once the channel has a point to continue from: its `since`, or its first line.
    known: bool,
}

/// What to do with one line on a relayed channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it: it follows on from the last line sent (or is the channel's first).
    Send,
    /// Already sent (the catch-up read and the live lines overlap): skip it.
    Skip,
    /// Lines between the last one sent and this one were lost: the client must resync.
    Gap,
}

impl Continuity {
    /// A channel resumed from `since` (`known`), or one that starts with its next live line.
    pub fn new(known: bool) -> Self {
        Self { known }
    }

    /// Takes the next line as it comes (a line of the catch-up read: the owner's journal itself),
    /// and checks the ones after it against it.
    pub fn trust_next(&mut self) {
        self.known = false;
    }

    /// The verdict on line `id` when the last line sent on the channel was `last` (0 for none).
    pub fn accept(&mut self, last: u64, id: u64) -> Verdict {
        if self.known && id <= last {
            return Verdict::Skip;
        }
        if self.known && id > last + 1 {
            return Verdict::Gap;
        }
        self.known = true;
        Verdict::Send
    }
}

/// What one connection relays from other nodes: bot channels with their continuity, whether
/// `account` is relayed, and the following of the user's subject, held while any of them is.
#[derive(Debug, Default)]
pub struct Relays {
    bots: HashMap<u64, Continuity>,
    account: bool,
    following: Option<Arc<Following>>,
}

impl Relays {
    /// Relays `channel` (a bot channel resumed with `since` when `resumed`, or `account`) under
    /// `following`.
    pub fn add(&mut self, channel: &Channel, following: Arc<Following>, resumed: bool) {
        match channel {
            Channel::Bot(bot_id) => {
                self.bots.insert(*bot_id, Continuity::new(resumed));
            }
            Channel::Account => self.account = true,
            Channel::Market { .. } => return,
        }
        self.following = Some(following);
    }

    /// Stops relaying `channel`; the user's subject is let go once nothing is relayed.
    pub fn remove(&mut self, channel: &Channel) {
        match channel {
            Channel::Bot(bot_id) => {
                self.bots.remove(bot_id);
            }
            Channel::Account => self.account = false,
            Channel::Market { .. } => {}
        }
        if self.bots.is_empty() && !self.account {
            self.following = None;
        }
    }

    /// The continuity of bot channel `bot_id`, if it is relayed.
    pub fn continuity(&mut self, bot_id: u64) -> Option<&mut Continuity> {
        self.bots.get_mut(&bot_id)
    }

    /// Where a relayed line of `bot_id` goes: its bot channel (if relayed), `account` (if
    /// relayed).
    pub fn targets(&self, bot_id: u64) -> (bool, bool) {
        (self.bots.contains_key(&bot_id), self.account)
    }
}

/// Follows the user's subject for an `account` channel: `None` when this node does not relay (a
/// single node, or one without Postgres).
///
/// # Errors
/// `UNAVAILABLE` when NATS cannot take the subscription in time.
pub async fn follow_account(
    state: &AppState,
    user_id: u64,
) -> Result<Option<Arc<Following>>, OpError> {
    let (Some(_), Some(events)) = (&state.leases, &state.user_events) else {
        return Ok(None);
    };
    follow(events, user_id).await.map(Some)
}

/// This node's following of `user_id`'s subject, within [`FOLLOW_DEADLINE`].
async fn follow(
    events: &keel_actors::cluster::user_events::UserEvents,
    user_id: u64,
) -> Result<Arc<Following>, OpError> {
    match tokio::time::timeout(FOLLOW_DEADLINE, events.follow(user_id)).await {
        Ok(Ok(following)) => Ok(following),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, user_id, "a channel cannot be relayed");
            Err(unavailable())
        }
        Err(_) => {
            tracing::warn!(user_id, "following a user's bot lines took too long");
            Err(unavailable())
        }
    }
}

/// A page of the owner's `GET /bots/{id}/events`.
#[derive(Debug, Deserialize)]
struct RemotePage {
    items: Vec<BotEvent>,
    #[serde(default)]
    next_after: Option<u64>,
}

/// A bot channel relayed from the bot's owner: the catch-up lines (with `since`) and this
/// node's following of the user's subject, held as long as the channel is.
#[derive(Debug)]
pub struct Relayed {
    /// The lines after `since`, from the owner's journal.
    pub backfill: Vec<BotEvent>,
    /// Keeps the user's subject followed.
    pub following: Arc<Following>,
}

/// Checks `bot_id` with the user's owner and starts relaying it, for a bot that does not run
/// here. `None` when this node does not relay (a single node, or one without Postgres) or owns
/// the user itself: the bot is then not the user's, as on a single node. `resume` is the
/// channel's `since` and the most lines it may bring back.
///
/// # Errors
/// `FORBIDDEN_CHANNEL` when the owner has no such bot for the user, `RESUME_TOO_FAR` past
/// `resume`'s limit, `UNAVAILABLE` when the owner cannot be asked.
pub async fn remote_bot(
    state: &AppState,
    user_id: u64,
    token: &str,
    bot_id: u64,
    resume: Option<(u64, usize)>,
    forbidden: OpError,
) -> Result<Option<Relayed>, OpError> {
    let (Some(leases), Some(events)) = (&state.leases, &state.user_events) else {
        return Ok(None);
    };
    let node_id = match leases.owner(user_id).await {
        Ok(Owner::Other { node_id, .. }) => node_id,
        Ok(Owner::Mine(_)) => return Ok(None),
        Ok(Owner::Unknown) => {
            return Err(OpError::new("UNAVAILABLE", "no node holds this user's data yet; retry"));
        }
        Err(_) => return Err(unavailable()),
    };
    // Followed before the owner is read, so no line falls between the read and the live ones.
    let following = follow(events, user_id).await?;
    let path = match resume {
        None => format!("/api/v1/bots/{bot_id}"),
        Some((after, max)) => {
            format!("/api/v1/bots/{bot_id}/events?after={after}&limit={}", max.max(1))
        }
    };
    let answer =
        crate::http::forward::forward_get(state, &node_id, path, token).await.map_err(|err| {
            tracing::warn!(error = %err, owner = %node_id, "a bot channel's owner did not answer");
            unavailable()
        })?;
    match answer.status {
        200 => {}
        404 => return Err(forbidden),
        _ => return Err(unavailable()),
    }
    let Some((after, max)) = resume else {
        return Ok(Some(Relayed { backfill: Vec::new(), following }));
    };
    let page: RemotePage = serde_json::from_slice(&answer.body).map_err(|_| unavailable())?;
    if page.next_after.is_some() || page.items.len() > max {
        return Err(OpError::new(
            "RESUME_TOO_FAR",
            format!(
                "bot:{bot_id} has more than {max} lines after {after}: read them with \
                 GET /api/v1/bots/{bot_id}/events?after={after}, then subscribe with the last id \
                 as `since`"
            ),
        ));
    }
    Ok(Some(Relayed { backfill: page.items, following }))
}

fn unavailable() -> OpError {
    OpError::new("UNAVAILABLE", "the server is busy; try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `ids` through a channel that last sent `last`; the verdicts, and what it sent.
    fn run(mut continuity: Continuity, mut last: u64, ids: &[u64]) -> (Vec<Verdict>, Vec<u64>) {
        let mut verdicts = Vec::new();
        let mut sent = Vec::new();
        for id in ids {
            let verdict = continuity.accept(last, *id);
            if verdict == Verdict::Send {
                last = *id;
                sent.push(*id);
            }
            verdicts.push(verdict);
        }
        (verdicts, sent)
    }

    #[test]
    fn a_resumed_channel_skips_what_it_had_and_sends_the_rest_once() {
        // Resumed at 390 with the catch-up 391..=393 sent; live lines overlap the read.
        let (verdicts, sent) = run(Continuity::new(true), 393, &[392, 393, 394, 394, 395]);
        assert_eq!(sent, [394, 395]);
        assert_eq!(verdicts[..2], [Verdict::Skip, Verdict::Skip]);
        assert_eq!(verdicts[3], Verdict::Skip, "a line relayed twice is sent once");
    }

    #[test]
    fn a_line_past_a_hole_is_a_gap() {
        let (verdicts, sent) = run(Continuity::new(true), 390, &[391, 393]);
        assert_eq!(sent, [391]);
        assert_eq!(verdicts, [Verdict::Send, Verdict::Gap]);
        // Resumed from 0 (the whole journal), the first line must be 1.
        assert_eq!(Continuity::new(true).accept(0, 2), Verdict::Gap);
    }

    #[test]
    fn the_catch_up_read_sets_the_point_the_live_lines_follow() {
        // The owner's journal after 390 as read (whatever its ids), then the live lines.
        let mut continuity = Continuity::new(true);
        let mut last = 390;
        for id in [392, 393] {
            continuity.trust_next();
            assert_eq!(continuity.accept(last, id), Verdict::Send);
            last = id;
        }
        assert_eq!(continuity.accept(last, 393), Verdict::Skip);
        assert_eq!(continuity.accept(last, 394), Verdict::Send);
        assert_eq!(continuity.accept(394, 396), Verdict::Gap);
    }

    #[test]
    fn a_channel_without_since_starts_with_its_first_live_line_then_checks() {
        let (verdicts, sent) = run(Continuity::new(false), 0, &[57, 58, 58, 60]);
        assert_eq!(sent, [57, 58]);
        assert_eq!(verdicts, [Verdict::Send, Verdict::Send, Verdict::Skip, Verdict::Gap]);
    }
}
