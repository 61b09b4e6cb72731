//! `[mailboxes]`: the capacity of each actor's bounded mailbox.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[mailboxes]`: how many messages each actor's bounded mailbox holds. Past it a `try_send`
/// fails: feeds conflate or drop market data, `ask` answers 503 `OVERLOADED`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSettings {
    /// The root and feeds supervisors (lifecycle and status messages).
    pub supervisor: usize,
    /// The bot supervisor, which every bot request passes.
    pub bot_supervisor: usize,
    /// Each running bot (market data and commands).
    pub bot: usize,
    /// Each venue's feed (subscriptions and market requests).
    pub feed: usize,
    /// The vault (credentials and signatures).
    pub vault: usize,
    /// Each connected user's session (bot events).
    pub session: usize,
    /// Each WebSocket connection (session events, subscription answers).
    pub ws_connection: usize,
    /// Each HTTP worker thread's market hub (market events for its connections).
    pub ws_hub: usize,
}

/// Smallest mailbox accepted: actix's own default. 0 would make actix's mailbox unbounded.
const MIN_MAILBOX: usize = 16;
/// Largest mailbox accepted, per actor.
const MAX_MAILBOX: usize = 1 << 20;

impl MailboxSettings {
    /// Checks every capacity is between [`MIN_MAILBOX`] and [`MAX_MAILBOX`].
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for (key, value) in [
            ("mailboxes.supervisor", self.supervisor),
            ("mailboxes.bot_supervisor", self.bot_supervisor),
            ("mailboxes.bot", self.bot),
            ("mailboxes.feed", self.feed),
            ("mailboxes.vault", self.vault),
            ("mailboxes.session", self.session),
            ("mailboxes.ws_connection", self.ws_connection),
            ("mailboxes.ws_hub", self.ws_hub),
        ] {
            if !(MIN_MAILBOX..=MAX_MAILBOX).contains(&value) {
                return Err(invalid(
                    key,
                    format!("must be between {MIN_MAILBOX} and {MAX_MAILBOX} messages"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::env;

    #[test]
    fn mailbox_caps_default_to_the_built_in_sizes_and_follow_the_environment() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let m = &settings.mailboxes;
        let defaults = [m.supervisor, m.bot_supervisor, m.bot, m.feed, m.vault, m.session];
        assert_eq!(defaults, [256, 1024, 256, 4096, 1024, 4096]);
        assert_eq!((m.ws_connection, m.ws_hub), (4096, 65_536));
        assert_eq!(m.supervisor, keel_actors::supervisor::DEFAULT_MAILBOX);
        assert_eq!(m.bot, keel_actors::bot::actor::BOT_MAILBOX);
        assert_eq!(m.feed, keel_actors::feed::DEFAULT_MAILBOX);
        assert_eq!(m.vault, keel_actors::vault::DEFAULT_MAILBOX);
        assert_eq!(m.session, keel_actors::session::SESSION_MAILBOX);

        let vars =
            env(&[("KEEL__MAILBOXES__BOT", "128"), ("KEEL__MAILBOXES__WS_CONNECTION", "64")]);
        let settings = Settings::load_with_env(None, vars).unwrap();
        assert_eq!((settings.mailboxes.bot, settings.mailboxes.ws_connection), (128, 64));
        assert_eq!(settings.mailboxes.feed, 4096);
        let err = Settings::load_with_env(None, env(&[("KEEL__MAILBOXES__BOT", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 16 and 1048576"), "{err}");
    }
}
