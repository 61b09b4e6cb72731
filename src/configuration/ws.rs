//! `[ws]`: the WebSocket API's connection limits, heartbeats and slow-client rules.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[ws]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Connections allowed in total.
    pub max_connections: usize,
    /// Connections allowed per user.
    pub max_per_user: usize,
    /// Connections allowed at once that have not authenticated yet (within `max_connections`).
    pub max_unauthenticated: usize,
    /// Channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// How long an unauthenticated connection may wait before sending `auth`, ms.
    pub auth_timeout_ms: u64,
    /// Seconds between server pings.
    pub ping_secs: u64,
    /// Seconds without a pong (or any frame) after which the connection is closed.
    pub pong_timeout_secs: u64,
    /// Frames a connection may have waiting for its socket; past it market data is dropped (and
    /// `lagged` sent) and a bot event closes the connection with 1013.
    pub outbound_queue: usize,
    /// Seconds a client may stay behind (dropping market data) before it is disconnected (1013).
    pub max_lag_secs: u64,
}

impl WsSettings {
    /// Checks `[ws]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.max_connections == 0 || self.max_per_user == 0 || self.max_subscriptions == 0 {
            return Err(invalid(
                "ws",
                "max_connections, max_per_user and max_subscriptions must be positive",
            ));
        }
        if self.max_unauthenticated == 0 {
            return Err(invalid("ws.max_unauthenticated", "must be positive"));
        }
        if !(100..=10_000).contains(&self.auth_timeout_ms) {
            return Err(invalid("ws.auth_timeout_ms", "must be between 100 and 10000"));
        }
        if self.ping_secs == 0 || self.pong_timeout_secs <= self.ping_secs {
            return Err(invalid("ws.pong_timeout_secs", "must be longer than ws.ping_secs (> 0)"));
        }
        if !(1..=3600).contains(&self.max_lag_secs) {
            return Err(invalid("ws.max_lag_secs", "must be between 1 and 3600"));
        }
        if !(4..=65_536).contains(&self.outbound_queue) {
            return Err(invalid("ws.outbound_queue", "must be between 4 and 65536"));
        }
        Ok(())
    }
}
