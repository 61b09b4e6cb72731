//! `[server]`: where and how the HTTP server listens, and how long requests may take.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub host: String,
    /// Listen port; 0 picks a free one (tests).
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Deadline for a request to an actor, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long graceful shutdown waits for in-flight requests, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Kernel send buffer of each accepted connection, in bytes (`SO_SNDBUF`); 0 leaves the OS
    /// default, which grows to megabytes.
    pub socket_send_buffer_bytes: usize,
    /// How long a connection's sent data may stay unacknowledged, or its unsent data wait on a
    /// peer that advertises no room, before the kernel drops it (`TCP_USER_TIMEOUT`, Linux), in
    /// seconds; 0 leaves the OS default (no limit while the peer acknowledges window probes).
    pub socket_user_timeout_secs: u64,
    /// How long a client may take to send a request head (from connect, or from the end of the
    /// previous request), in milliseconds; past it the connection is closed.
    pub header_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept open, in seconds (0 = no keep-alive).
    pub keep_alive_secs: u64,
    /// Longest wait for the next chunk of a request body, in milliseconds; past it 408.
    pub body_idle_timeout_ms: u64,
    /// Longest time a whole request body may take to arrive, in seconds; past it 408.
    pub body_timeout_secs: u64,
    /// Longest request target (path and query), in bytes; longer answers 400 `URL_TOO_LONG`.
    pub max_url_bytes: usize,
    /// Most bytes of request header names and values; more answers 431 `HEADERS_TOO_LARGE`.
    pub max_header_bytes: usize,
    /// How long a `/health/ready` answer is reused, in milliseconds, so that polling it cannot
    /// make the store flush on every call.
    pub ready_cache_ms: u64,
}

impl ServerSettings {
    /// Checks `[server]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        self.listen_address()?;
        if self.workers > 256 {
            return Err(invalid("server.workers", "must be at most 256 (0 = one per core)"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid("server.max_body_bytes", "must be between 1024 and 67108864"));
        }
        if !(10..=120_000).contains(&self.request_timeout_ms) {
            return Err(invalid("server.request_timeout_ms", "must be between 10 and 120000"));
        }
        if self.shutdown_timeout_secs > 6 {
            // Keel promises to exit within 10 s of SIGTERM; the actors and the final flush need
            // the rest.
            return Err(invalid(
                "server.shutdown_timeout_secs",
                "must be at most 6 so that shutdown completes within 10 s",
            ));
        }
        let send_buffer = self.socket_send_buffer_bytes;
        if send_buffer != 0 && !(4096..=16 * 1024 * 1024).contains(&send_buffer) {
            return Err(invalid(
                "server.socket_send_buffer_bytes",
                "must be 0 (the OS default) or between 4096 and 16777216",
            ));
        }
        if self.socket_user_timeout_secs > 3_600 {
            return Err(invalid(
                "server.socket_user_timeout_secs",
                "must be 0 (the OS default) or at most 3600",
            ));
        }
        if !(100..=60_000).contains(&self.header_timeout_ms) {
            return Err(invalid("server.header_timeout_ms", "must be between 100 and 60000"));
        }
        if self.keep_alive_secs > 300 {
            return Err(invalid("server.keep_alive_secs", "must be at most 300"));
        }
        if !(100..=60_000).contains(&self.body_idle_timeout_ms) {
            return Err(invalid("server.body_idle_timeout_ms", "must be between 100 and 60000"));
        }
        if !(1..=3_600).contains(&self.body_timeout_secs) {
            return Err(invalid("server.body_timeout_secs", "must be between 1 and 3600"));
        }
        // actix-http parses request heads of up to 128 KiB; Keel's own limits must be below it
        // for their answers to be Keel's (the JSON shape) rather than actix-http's bare 431.
        if !(256..=65_536).contains(&self.max_url_bytes) {
            return Err(invalid("server.max_url_bytes", "must be between 256 and 65536"));
        }
        if !(1024..=65_536).contains(&self.max_header_bytes) {
            return Err(invalid("server.max_header_bytes", "must be between 1024 and 65536"));
        }
        if self.ready_cache_ms > 60_000 {
            return Err(invalid("server.ready_cache_ms", "must be at most 60000"));
        }
        Ok(())
    }

    /// The socket address to bind.
    ///
    /// # Errors
    /// `server.host` is not an IP address or `localhost`.
    pub fn listen_address(&self) -> Result<SocketAddr, SettingsError> {
        let host = match self.host.as_str() {
            "localhost" => "127.0.0.1",
            other => other,
        };
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| invalid("server.host", format!("`{host}` is not an IP address")))?;
        Ok(SocketAddr::new(ip, self.port))
    }
}
