//! What subscribing a channel checks and sets up, for [`ClientConnection`](super::connection):
//! a market stream's feed subscription, a bot channel's owner check and resume (its durable
//! journal lines after `since`), and for a bot on the user's owner node, the relay from it (and
//! for `account`, from every node).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::web;
use keel_actors::bot::supervisor::{GetBot, GetLiveBot};
use keel_actors::bot::{BotEvent, BotRepo};
use keel_actors::cluster::user_events::Following;
use keel_actors::feed::{MarketData, Subscribe, SubscriberId};
use keel_actors::mailbox::ask;

use super::hub::StreamKey;
use super::protocol::{Channel, OpError};
use super::relay;
use crate::state::AppState;

/// How long a subscription request to a feed or the bots may take.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

/// The hub stream a market channel is delivered from.
pub(super) fn market_key(channel: &Channel) -> Option<StreamKey> {
    match channel {
        Channel::Market { venue, symbol, kind } => Some((*venue, symbol.clone(), *kind)),
        _ => None,
    }
}

/// What a channel that can be subscribed needs: a resume's lines, and for a channel relayed from
/// other nodes (a bot channel, `account`), this node's following of the user's lines.
pub(super) type Checked = (Vec<BotEvent>, Option<Arc<Following>>);

/// Checks a channel for the user (with the token the connection authenticated with) and
/// registers what it needs. With `resume` (a bot channel's `since` and the most lines it may
/// bring back), answers the bot's durable journal lines after it. A bot that is not on this
/// node is asked of the user's owner node, and relayed from it ([`relay`]).
pub(super) async fn check_channel(
    state: &AppState,
    (user_id, token): (u64, Option<&str>),
    id: SubscriberId,
    channel: &Channel,
    recipient: &Recipient<MarketData>,
    resume: Option<(u64, usize)>,
) -> Result<Checked, OpError> {
    match channel {
        Channel::Account => Ok((Vec::new(), relay::follow_account(state, user_id).await?)),
        Channel::Bot(bot_id) => {
            // Another user's bot and a missing one answer the same.
            let forbidden =
                || OpError::new("FORBIDDEN_CHANNEL", format!("bot:{bot_id} is not a bot of yours"));
            let bots = state.bots().map_err(|_| unavailable())?;
            // Not a bot of this node: perhaps one of the user's on their owner node.
            let elsewhere = || async {
                let Some(token) = token else { return Err(forbidden()) };
                match relay::remote_bot(state, user_id, token, *bot_id, resume, forbidden()).await?
                {
                    Some(relayed) => Ok((relayed.backfill, Some(relayed.following))),
                    None => Err(forbidden()),
                }
            };
            let Some((after, max)) = resume else {
                let query = GetBot { user_id, bot_id: *bot_id };
                return match ask(&bots, query, LOOKUP_DEADLINE, "bots").await {
                    Ok(Ok(_)) => Ok((Vec::new(), None)),
                    Ok(Err(_)) => elsewhere().await,
                    Err(_) => Err(unavailable()),
                };
            };
            // The watermark is asked first: every line above it is published after this
            // answer, so it reaches the connection live (see `subscribe`).
            let query = GetLiveBot { user_id, bot_id: *bot_id };
            let live = match ask(&bots, query, LOOKUP_DEADLINE, "bots").await {
                Ok(Ok((_, live))) => live,
                Ok(Err(_)) => return elsewhere().await,
                Err(_) => return Err(unavailable()),
            };
            // A bot without an actor writes only through its supervisor, durable before sent.
            let upto = live.map_or(u64::MAX, |l| l.durable_event_id);
            let bot = *bot_id;
            // In a cluster on Postgres, the whole journal is there; this node's store holds
            // only the lines since it took the bot's owner.
            let page = if let Some(history) = state.bot_history() {
                history.events(bot, after, upto, max + 1).await.map_err(|_| unavailable())?
            } else {
                let repo = BotRepo::new(&state.store).map_err(|_| unavailable())?;
                web::block(move || repo.events(bot, after, upto, max + 1))
                    .await
                    .map_err(|_| unavailable())?
                    .map_err(|_| unavailable())?
            };
            if page.items.len() > max {
                return Err(OpError::new(
                    "RESUME_TOO_FAR",
                    format!(
                        "bot:{bot} has more than {max} lines after {after}: read them with \
                         GET /api/v1/bots/{bot}/events?after={after}, then subscribe with the \
                         last id as `since`"
                    ),
                ));
            }
            Ok((page.items, None))
        }
        Channel::Market { venue, symbol, kind } => {
            let Some(feed) = state.feeds.get(venue) else {
                return Err(OpError::new(
                    "UNKNOWN_CHANNEL",
                    format!("venue {venue} is not enabled"),
                ));
            };
            let feed = feed.get().ok_or_else(unavailable)?;
            let subscribe = Subscribe {
                symbol: symbol.clone(),
                kind: *kind,
                subscriber: id,
                recipient: recipient.clone(),
            };
            match ask(&feed, subscribe, LOOKUP_DEADLINE, "feed").await {
                Ok(Ok(())) => Ok((Vec::new(), None)),
                Ok(Err(err)) => Err(OpError::new("UNKNOWN_CHANNEL", err.to_string())),
                Err(_) => Err(unavailable()),
            }
        }
    }
}

fn unavailable() -> OpError {
    OpError::new("UNAVAILABLE", "the server is busy; try again")
}
