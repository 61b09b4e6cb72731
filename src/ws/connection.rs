//! `ClientConnection`: one actor per WebSocket client.
//!
//! It reads the client's frames (an actix-ws `MessageStream` added as the actor's stream),
//! subscribes to market streams through its thread's [`Hub`] and to the user's session, and writes
//! through a bounded queue ([`Outbound`]) that the socket's response body
//! ([`FrameBody`](super::outbound::FrameBody)) encodes as the HTTP dispatcher polls it:
//!
//! - the queue holds `ws.outbound_queue` frames; the hub drops a market event that finds it full
//!   and counts it, and the client is told with `lagged` once there is room (checked by the hub as
//!   it delivers, and every second here, which also cuts off a client behind for
//!   `ws.max_lag_secs`);
//! - a bot event that cannot be queued closes the connection with 1013 (never dropped silently);
//! - closing queues the close frame behind what is queued and stops the actor at once: its
//!   subscriptions end even while a socket write is blocked, so a half-open connection is reaped
//!   by the heartbeat whatever state its socket is in.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError};
use keel_actors::feed::SubscriberId;
use keel_actors::session::{Detach, SessionActor, SessionEvent};
use serde_json::json;

use super::Limits;
use super::channels::{check_channel, market_key};
use super::hub::Hub;
use super::outbound::{ChannelState, Outbound, Outgoing};
use super::protocol::{
    Channel, ClientOp, MAX_CHANNELS_PER_OP, OpError, control_frame, event_frame, parse_op,
};
use super::relay::{Relays, Verdict};
use crate::auth::AuthUser;
use crate::state::AppState;

/// How often a lagging client is told what it missed and checked against `ws.max_lag_secs`.
const LAG_CHECK: Duration = Duration::from_secs(1);
/// Most journal lines one resume (`since`) brings back; beyond, the client reads them over HTTP.
const MAX_BACKFILL: usize = 500;
/// WebSocket close code for "not authenticated" (4401 mirrors HTTP 401).
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// WebSocket close code for "too many connections" (4429 mirrors HTTP 429).
pub const CLOSE_TOO_MANY: u16 = 4429;

/// One WebSocket client.
pub struct ClientConnection {
    id: SubscriberId,
    state: web::Data<AppState>,
    limits: Arc<Limits>,
    /// The bounded queue and the subscribed channels, shared with the thread's market hub and
    /// the socket's response body.
    outbound: Rc<Outbound>,
    user: Option<AuthUser>,
    /// Access-token expiry (seconds since the epoch) of the current authentication.
    expires_at: u64,
    /// The access token of the current authentication: a relayed bot channel reads the bot
    /// from its owner node with it.
    token: Option<String>,
    /// Channels relayed from other nodes (cluster mode).
    relays: Relays,
    user_session: Option<Addr<SessionActor>>,
    /// The thread's market hub, once a market channel was asked for: channels leave the hub they
    /// joined (never one started just to leave).
    hub: Option<Hub>,
    last_heard: Instant,
    closing: bool,
    opened: Instant,
    /// Counted against `ws.max_unauthenticated` (it connected without a bearer header and has
    /// not authenticated yet).
    counted_unauthenticated: bool,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ClientConnection {
    /// A connection writing through `outbound`, already authenticated when `user` is set.
    pub fn new(
        id: SubscriberId,
        state: web::Data<AppState>,
        limits: Arc<Limits>,
        outbound: Rc<Outbound>,
        user: Option<(AuthUser, u64, String)>,
    ) -> Self {
        let (user, expires_at, token) = match user {
            Some((user, exp, token)) => (Some(user), exp, Some(token)),
            None => (None, 0, None),
        };
        Self {
            id,
            state,
            limits,
            outbound,
            user,
            expires_at,
            token,
            relays: Relays::default(),
            user_session: None,
            hub: None,
            last_heard: Instant::now(),
            closing: false,
            opened: Instant::now(),
            counted_unauthenticated: user.is_none(),
        }
    }

    /// Queues a control message; a full queue means the client is not reading: close (1013).
    fn send_control(&mut self, value: &serde_json::Value, ctx: &mut Context<Self>) {
        if !self.outbound.try_send(Outgoing::Text(control_frame(value))) {
            self.close(CloseCode::Again, "the client is not reading", "slow_client", ctx);
        }
    }

    fn send_error(&mut self, error: &OpError, ctx: &mut Context<Self>) {
        let value = json!({"type": "error", "code": error.code, "message": error.message});
        self.send_control(&value, ctx);
    }

    /// Ends the connection: queues the close frame behind what is queued and stops the actor (its
    /// subscriptions end now, whatever state the socket is in).
    fn close(
        &mut self,
        code: CloseCode,
        description: &str,
        reason: &'static str,
        ctx: &mut Context<Self>,
    ) {
        if self.closing {
            return;
        }
        self.closing = true;
        metrics::counter!("keel_ws_disconnects_total", "reason" => reason).increment(1);
        self.outbound.close(CloseReason { code, description: Some(description.to_owned()) });
        ctx.stop();
    }

    fn authenticate(&mut self, token: &str, ctx: &mut Context<Self>) {
        let user = match AuthUser::from_token(&self.state, token) {
            Ok(user) => user,
            // Not a verdict on the token: the cluster's revocations cannot be read just now.
            Err(err) if err.code() == "UNAVAILABLE" => {
                let reason = "the cluster's database is unavailable; reconnect shortly";
                self.close(CloseCode::Again, reason, "revocations_unavailable", ctx);
                return;
            }
            Err(_) => {
                if self.user.is_none() {
                    self.unauthenticated("invalid or expired access token", "unauthenticated", ctx);
                } else {
                    let error = OpError::new("UNAUTHORIZED", "invalid or expired access token");
                    self.send_error(&error, ctx);
                }
                return;
            }
        };
        if let Some(current) = self.user
            && current.user_id != user.user_id
        {
            let error = OpError::new("UNAUTHORIZED", "a connection stays with one user");
            self.send_error(&error, ctx);
            return;
        }
        let first = self.user.is_none();
        if self.counted_unauthenticated {
            // No longer an unauthenticated connection, whatever the per-user limit says.
            self.counted_unauthenticated = false;
            self.limits.unauthenticated_done();
        }
        if first && !self.limits.admit_user(user.user_id) {
            self.close(
                CloseCode::Other(CLOSE_TOO_MANY),
                "too many connections for this user",
                "limit",
                ctx,
            );
            return;
        }
        self.user = Some(user);
        self.expires_at = user.expires_at;
        self.token = Some(token.to_owned());
        self.welcome(ctx);
        if first {
            self.attach_session(ctx);
        }
        self.watch_expiry(ctx);
    }

    /// Closes with 4401.
    fn unauthenticated(
        &mut self,
        description: &str,
        reason: &'static str,
        ctx: &mut Context<Self>,
    ) {
        self.close(CloseCode::Other(CLOSE_UNAUTHENTICATED), description, reason, ctx);
    }

    /// Says who the connection is for and until when.
    fn welcome(&mut self, ctx: &mut Context<Self>) {
        let user_id = self.user.map(|u| u.user_id);
        let hello =
            json!({"type": "authenticated", "user_id": user_id, "expires_at": self.expires_at});
        self.send_control(&hello, ctx);
    }

    /// Closes with 4401 when the token expires, unless a later `auth` moved the expiry.
    fn watch_expiry(&mut self, ctx: &mut Context<Self>) {
        let now = crate::auth::now_secs();
        let wait = Duration::from_secs(self.expires_at.saturating_sub(now));
        let expiry = self.expires_at;
        ctx.run_later(wait, move |act, ctx| {
            if act.expires_at == expiry {
                act.unauthenticated(
                    "the access token expired; reconnect or send auth before it does",
                    "expired",
                    ctx,
                );
            }
        });
    }

    /// Joins the user's session so bot events arrive here.
    fn attach_session(&mut self, ctx: &mut Context<Self>) {
        let Some(user) = self.user else { return };
        let sessions = self.state.sessions.clone();
        let recipient = ctx.address().recipient::<SessionEvent>();
        let id = self.id;
        ctx.wait(
            async move { sessions.attach(user.user_id, id, recipient).await }.into_actor(self).map(
                |session, act, ctx| match session {
                    Some(session) => act.user_session = Some(session),
                    None => {
                        act.close(CloseCode::Again, "the session is unavailable", "session", ctx)
                    }
                },
            ),
        );
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let op = match parse_op(text) {
            Ok(op) => op,
            Err(error) => return self.send_error(&error, ctx),
        };
        match op {
            ClientOp::Auth { token } => self.authenticate(&token, ctx),
            ClientOp::Ping => self.send_control(&json!({"type": "pong"}), ctx),
            _ if self.user.is_none() => {
                let error =
                    OpError::new("UNAUTHENTICATED", "send {\"op\":\"auth\",\"token\":…} first");
                self.send_error(&error, ctx);
            }
            ClientOp::Subscribe { channels, since } => self.subscribe(channels, since, ctx),
            ClientOp::Unsubscribe { channels } => self.unsubscribe(channels, ctx),
        }
    }

    fn subscribe(
        &mut self,
        names: Vec<String>,
        mut since: BTreeMap<String, u64>,
        ctx: &mut Context<Self>,
    ) {
        if names.is_empty() || names.len() > MAX_CHANNELS_PER_OP {
            let message = format!("name 1 to {MAX_CHANNELS_PER_OP} channels");
            return self.send_error(&OpError::new("BAD_MESSAGE", message), ctx);
        }
        // A resume point is for a bot channel this message subscribes to.
        if let Some(name) = since.keys().find(|name| {
            !matches!(Channel::parse(name), Some(Channel::Bot(_)))
                || !names.iter().any(|n| Channel::parse(n) == Channel::parse(name))
        }) {
            let name: String = name.chars().take(100).collect();
            let message = format!(
                "`since` names `{name}`: it takes bot:{{id}} channels that `channels` names"
            );
            return self.send_error(&OpError::new("BAD_MESSAGE", message), ctx);
        }
        // Keyed by canonical name from here on.
        since = since
            .into_iter()
            .filter_map(|(name, seq)| Some((Channel::parse(&name)?.name(), seq)))
            .collect();
        let Some(user) = self.user else { return };
        let max = self.state.settings.ws.max_subscriptions;
        let mut wanted = Vec::new();
        for name in names {
            let Some(channel) = Channel::parse(&name) else {
                let name: String = name.chars().take(100).collect();
                let message = format!("no channel `{name}`; see docs/WEBSOCKET.md");
                self.send_error(&OpError::new("UNKNOWN_CHANNEL", message), ctx);
                continue;
            };
            let name = channel.name();
            if wanted.iter().any(|(n, _, _)| *n == name) {
                continue;
            }
            let resume = since.get(&name).copied();
            if self.outbound.has_channel(&name) {
                // Already live here: a resume point asks for nothing the connection lacks.
                continue;
            }
            if self.outbound.channel_count() + wanted.len() >= max {
                let message = format!("at most {max} channels per connection");
                self.send_error(&OpError::new("TOO_MANY_SUBSCRIPTIONS", message), ctx);
                break;
            }
            wanted.push((name, channel, resume));
        }
        if wanted.is_empty() {
            return;
        }
        // Checked and registered away from the actor, in order; the answer lists what worked.
        // Market streams are delivered to this thread's hub, which writes into `outbound`.
        let state = self.state.clone();
        let limits = self.limits.clone();
        let hub = Hub::local(state.settings.mailboxes.ws_hub, move || limits.next_id());
        self.hub = Some(hub.clone());
        let recipient = hub.recipient();
        let hub_id = hub.id;
        let token = self.token.clone();
        // A resume's lines, with the answer, must fit in the queue beside what is there.
        let backfill_max = (self.outbound.capacity() / 2).min(MAX_BACKFILL);
        // `wait`: nothing else reaches this connection until the answer is queued. Bot lines
        // published meanwhile wait in the mailbox and are handled after their channel exists,
        // so a resume's read (from the bot's durable watermark) and the live lines meet with no
        // gap; the few on both sides are sent once (a bot channel never goes back in `seq`).
        ctx.wait(
            async move {
                let mut results = Vec::with_capacity(wanted.len());
                for (name, channel, resume) in wanted {
                    let checked = check_channel(
                        &state,
                        (user.user_id, token.as_deref()),
                        hub_id,
                        &channel,
                        &recipient,
                        resume.map(|after| (after, backfill_max)),
                    )
                    .await;
                    results.push((name, channel, resume, checked));
                }
                results
            }
            .into_actor(self)
            .map(move |results, act, ctx| {
                let mut added = Vec::new();
                let mut backfills = Vec::new();
                for (name, channel, resume, checked) in results {
                    match checked {
                        Ok((backfill, following)) => {
                            let key = market_key(&channel);
                            if let Some(following) = following {
                                act.relays.add(&channel, following, resume.is_some());
                            }
                            let state = act.outbound.add_channel(name.clone(), channel);
                            if let Some(after) = resume {
                                state.seq.set(after);
                                backfills.push((state.clone(), backfill));
                            }
                            if let Some(key) = key {
                                let outbound = act.outbound.clone();
                                hub.join(key, act.id, state, outbound, &act.state.feeds);
                            }
                            added.push(name);
                        }
                        Err(error) => act.send_error(&error, ctx),
                    }
                }
                if !added.is_empty() {
                    act.send_control(&json!({"type": "subscribed", "channels": added}), ctx);
                }
                for (channel, lines) in backfills {
                    for line in lines.iter() {
                        // The owner's durable journal, read in order: what it holds is the
                        // continuity the live lines are checked against.
                        if let Channel::Bot(bot_id) = channel.channel
                            && let Some(continuity) = act.relays.continuity(bot_id)
                        {
                            continuity.trust_next();
                        }
                        if !act.send_bot_line(&channel, line, ctx) {
                            return;
                        }
                    }
                }
            }),
        );
    }

    fn unsubscribe(&mut self, names: Vec<String>, ctx: &mut Context<Self>) {
        let mut removed = Vec::new();
        for name in names.iter().take(MAX_CHANNELS_PER_OP) {
            let Some(name) = Channel::parse(name).map(|c| c.name()) else { continue };
            if let Some(state) = self.outbound.remove_channel(&name) {
                self.leave(&state.channel);
                self.relays.remove(&state.channel);
                removed.push(name);
            }
        }
        self.send_control(&json!({"type": "unsubscribed", "channels": removed}), ctx);
    }

    /// Leaves a market channel's stream at the thread's hub.
    fn leave(&self, channel: &Channel) {
        let (Some(key), Some(hub)) = (market_key(channel), &self.hub) else { return };
        hub.leave(&key, self.id, &self.state.feeds);
    }

    /// A bot's lines, from a bot on this node or `relayed` from another (those reach the bot's
    /// channel and `account` only where these are relayed here).
    fn on_bot_events(
        &mut self,
        bot_id: u64,
        events: &[keel_actors::bot::BotEvent],
        relayed: bool,
        ctx: &mut Context<Self>,
    ) {
        let (to_bot, to_account) = if relayed { self.relays.targets(bot_id) } else { (true, true) };
        let bot_channel = format!("bot:{bot_id}");
        let names = [(to_bot, bot_channel.as_str()), (to_account, "account")];
        for event in events {
            for (_, name) in names.iter().filter(|(to, _)| *to) {
                let Some(sub) = self.outbound.channel(name) else { continue };
                if !self.send_bot_line(&sub, event, ctx) {
                    return;
                }
            }
        }
    }

    /// Queues one journal line on a bot channel or `account`; false if the connection had to
    /// close (1013) because the queue could not take it. A bot channel's seq is the bot's
    /// journal id (a client that sees a gap resumes from its last one), and a line at or below
    /// the last one sent (a resume's read met the live lines) is skipped. On a channel relayed
    /// from another node, a line past a hole closes the connection (1013): lines were lost
    /// between the nodes, and the client resumes with `since`.
    fn send_bot_line(
        &mut self,
        sub: &ChannelState,
        event: &keel_actors::bot::BotEvent,
        ctx: &mut Context<Self>,
    ) -> bool {
        if let Channel::Bot(bot_id) = sub.channel
            && let Some(continuity) = self.relays.continuity(bot_id)
        {
            match continuity.accept(sub.seq.get(), event.id) {
                Verdict::Send => {}
                Verdict::Skip => return true,
                Verdict::Gap => {
                    metrics::counter!("keel_ws_relay_gaps_total").increment(1);
                    self.close(
                        CloseCode::Again,
                        "bot events were lost between nodes; reconnect and resync",
                        "relay_gap",
                        ctx,
                    );
                    return false;
                }
            }
        }
        let seq = if matches!(sub.channel, Channel::Bot(_)) {
            if event.id <= sub.seq.get() {
                return true;
            }
            event.id
        } else {
            sub.seq.get() + 1
        };
        let Ok(data) = serde_json::to_string(event) else { return true };
        sub.seq.set(seq);
        let frame = event_frame(&sub.name, seq, event.ts, &data);
        if !self.outbound.try_send(Outgoing::Text(frame)) {
            metrics::counter!("keel_ws_dropped_total", "channel" => "bot").increment(1);
            self.close(
                CloseCode::Again,
                "bot events could not be delivered; reconnect and resync",
                "slow_client",
                ctx,
            );
            return false;
        }
        true
    }

    /// An `indicator` event on the bot's channel and `account`. Not a journal line: its `seq` is
    /// the channel's last one, and a full queue drops it (counted) instead of closing.
    fn on_indicator(&mut self, indicator: &keel_actors::session::BotIndicator) {
        let bot_channel = format!("bot:{}", indicator.bot_id);
        for name in [bot_channel.as_str(), "account"] {
            let Some(sub) = self.outbound.channel(name) else { continue };
            let frame = event_frame(name, sub.seq.get(), indicator.ts, &indicator.data);
            if !self.outbound.try_send(Outgoing::Text(frame)) {
                metrics::counter!("keel_ws_dropped_total", "channel" => "indicator").increment(1);
            }
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let timeout = Duration::from_secs(self.state.settings.ws.pong_timeout_secs);
        if self.last_heard.elapsed() > timeout {
            return self.close(CloseCode::Away, "no pong in time", "heartbeat", ctx);
        }
        // A full queue cannot take the ping either; the timeout above reaps the connection.
        let _ = self.outbound.try_send(Outgoing::Ping);
        if let Some(session) = &self.user_session
            && !session.connected()
        {
            // The session went away (it is restarted on demand): join again.
            self.user_session = None;
            self.attach_session(ctx);
        }
    }

    /// Closes with 4401 when the login session this connection authenticated with was revoked
    /// (the session tells its connections at once; this one-second check is the backstop for a
    /// connection that was not attached yet). One in-memory look-up.
    fn check_revoked(&mut self, ctx: &mut Context<Self>) {
        let Some(user) = self.user else { return };
        match self.state.identity.sessions.is_revoked(user.session_id) {
            Ok(false) => {}
            Ok(true) => {
                self.unauthenticated("the session has ended; log in again", "revoked", ctx);
            }
            // The cluster's revocations cannot be read: the session may have been revoked on
            // another node, so the connection is not kept.
            Err(_) => self.close(
                CloseCode::Again,
                "the cluster's database is unavailable; reconnect shortly",
                "revocations_unavailable",
                ctx,
            ),
        }
    }

    /// Tells a lagging client what it missed once there is room, and disconnects one that has
    /// stayed behind for longer than `ws.max_lag_secs`.
    fn check_lag(&mut self, ctx: &mut Context<Self>) {
        self.check_revoked(ctx);
        if self.closing {
            return;
        }
        self.outbound.flush_lagged();
        let Some(lagging) = self.outbound.lagging_for() else { return };
        if lagging > Duration::from_secs(self.state.settings.ws.max_lag_secs) {
            self.close(CloseCode::Again, "the client stayed too far behind", "slow_client", ctx);
        }
    }
}

impl Actor for ClientConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Session events and subscription answers; market data does not pass through it.
        ctx.set_mailbox_capacity(self.state.settings.mailboxes.ws_connection);
        metrics::gauge!("keel_ws_clients").increment(1.0);
        let ws = &self.state.settings.ws;
        let ping = Duration::from_secs(ws.ping_secs);
        ctx.run_interval(ping, |act, ctx| act.heartbeat(ctx));
        ctx.run_interval(LAG_CHECK, |act, ctx| act.check_lag(ctx));
        // Graceful shutdown: 1001 behind what is queued, before the server stops.
        ctx.spawn(self.limits.shutting_down().into_actor(self).map(|(), act, ctx| {
            act.close(CloseCode::Away, "the server is shutting down", "shutdown", ctx);
        }));
        if self.user.is_some() {
            self.welcome(ctx);
            self.attach_session(ctx);
            self.watch_expiry(ctx);
        } else {
            let wait = Duration::from_millis(ws.auth_timeout_ms);
            ctx.run_later(wait, |act, ctx| {
                if act.user.is_none() {
                    act.unauthenticated(
                        "authenticate within the time allowed",
                        "unauthenticated",
                        ctx,
                    );
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics::gauge!("keel_ws_clients").decrement(1.0);
        metrics::histogram!("keel_ws_connection_seconds")
            .record(self.opened.elapsed().as_secs_f64());
        for state in self.outbound.take_channels() {
            self.leave(&state.channel);
        }
        if let Some(session) = self.user_session.take() {
            let _ = session.try_send(Detach(self.id));
        }
        if self.counted_unauthenticated {
            self.limits.unauthenticated_done();
        }
        self.limits.release(self.user.map(|u| u.user_id));
        if !self.closing {
            metrics::counter!("keel_ws_disconnects_total", "reason" => "other").increment(1);
        }
        // Whatever stopped the actor (the server shutting down, say), the client is told.
        self.outbound.close(CloseReason { code: CloseCode::Away, description: None });
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for ClientConnection {
    fn handle(&mut self, msg: Result<Message, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match msg {
            Ok(Message::Text(text)) => self.on_text(&text, ctx),
            Ok(Message::Binary(_)) => {
                let error = OpError::new("BAD_MESSAGE", "send JSON text frames, not binary");
                self.send_error(&error, ctx);
            }
            Ok(Message::Ping(bytes)) => {
                let _ = self.outbound.try_send(Outgoing::Pong(bytes));
            }
            Ok(Message::Pong(_) | Message::Nop | Message::Continuation(_)) => {}
            Ok(Message::Close(reason)) => {
                self.closing = true;
                metrics::counter!("keel_ws_disconnects_total", "reason" => "client").increment(1);
                // The closing handshake: echo the client's code.
                let code = reason.map_or(CloseCode::Normal, |r| r.code);
                self.outbound.close(CloseReason { code, description: None });
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                self.close(CloseCode::Size, "frames are limited to 64 KiB", "too_large", ctx);
            }
            Err(_) if self.outbound.body_gone() => {
                // The connection failed (a read or write error ended it): nothing to send.
                self.closing = true;
                metrics::counter!("keel_ws_disconnects_total", "reason" => "socket").increment(1);
                ctx.stop();
            }
            Err(_) => self.close(CloseCode::Protocol, "protocol error", "protocol", ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The client's side of the socket ended, or the connection did (the response body went
        // with it: a write failed).
        if !self.closing {
            self.closing = true;
            let reason = if self.outbound.body_gone() { "socket" } else { "client" };
            metrics::counter!("keel_ws_disconnects_total", "reason" => reason).increment(1);
        }
        ctx.stop();
    }
}

impl Handler<SessionEvent> for ClientConnection {
    type Result = ();

    fn handle(&mut self, event: SessionEvent, ctx: &mut Context<Self>) {
        match event {
            SessionEvent::Bot(batch) => {
                self.on_bot_events(batch.bot_id, &batch.events, batch.relayed, ctx);
            }
            SessionEvent::Indicator(indicator) => self.on_indicator(&indicator),
            SessionEvent::Revoked(sessions) => {
                if self.user.is_some_and(|user| sessions.contains(&user.session_id)) {
                    self.unauthenticated("the session has ended; log in again", "revoked", ctx);
                }
            }
            SessionEvent::Overflow => self.close(
                CloseCode::Again,
                "bot events could not be delivered; reconnect and resync",
                "slow_client",
                ctx,
            ),
        }
    }
}
