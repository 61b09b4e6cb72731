//! One delivery attempt and what its outcome means.
//!
//! Webhooks: the body is signed by the vault (`Keel-Signature`), the URL's host is resolved once
//! per attempt, every address it resolves to is checked against the SSRF rule
//! (`keel_core::notify::address`) unless private targets are allowed, and the request goes to
//! the address that was checked (pinned with reqwest's `resolve`), following no redirects, within
//! the connect and total timeouts.
//!
//! Telegram: `POST {base}/bot{token}/sendMessage` with `chat_id` and `text`; a 429 is retried
//! after the `parameters.retry_after` seconds Telegram asks for, other 4xx are final (a wrong
//! token or chat does not heal by itself). Errors never carry the URL: it holds the token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_core::notify::address;
use keel_core::notify::signing::SIGNATURE_HEADER;
use secrecy::ExposeSecret;

use super::NotifyConfig;
use super::channels::{ChannelRecord, Target};
use super::outbox::DeliveryRecord;
use crate::mailbox::ask;
use crate::vault::VaultAddress;
use crate::vault::notify::{OpenBotToken, SignWebhook};

/// How long the vault may take to sign or open.
const VAULT_DEADLINE: Duration = Duration::from_secs(5);
/// The `User-Agent` of webhook requests.
const USER_AGENT: &str = concat!("Keel-Webhook/", env!("CARGO_PKG_VERSION"));
/// Longest `retry_after` honoured; a longer one is waited for this long instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (2xx).
    Delivered {
        /// Its status.
        status: u16,
    },
    /// Worth another attempt, after `after` when the receiver said so.
    Retry {
        /// The answer's status, if one came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The receiver's own wait (Telegram's `retry_after`).
        after: Option<Duration>,
    },
    /// Final: refused by the SSRF guard, or by the receiver for good.
    Refused {
        /// The answer's status, if one came.
        status: Option<u16>,
        /// Why.
        error: String,
    },
}

impl Outcome {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Refused { .. } => "refused",
        }
    }
}

fn retry(error: impl Into<String>) -> Outcome {
    Outcome::Retry { status: None, error: error.into(), after: None }
}

/// Makes attempts.
#[derive(Debug, Clone)]
pub struct Sender {
    config: Arc<NotifyConfig>,
    vault: VaultAddress,
}

impl Sender {
    /// A sender with `config`, signing through `vault`.
    pub fn new(config: Arc<NotifyConfig>, vault: VaultAddress) -> Self {
        keel_venues::tls::install_crypto_provider();
        Self { config, vault }
    }

    /// One attempt to deliver `delivery` through `channel`.
    pub async fn attempt(&self, channel: &ChannelRecord, delivery: &DeliveryRecord) -> Outcome {
        match &channel.target {
            Target::Webhook { url } => self.webhook(channel, url, delivery).await,
            Target::Telegram { chat_id } => self.telegram(channel, chat_id, delivery).await,
        }
    }

    fn client(&self, pin: Option<(&str, SocketAddr)>) -> Result<reqwest::Client, Outcome> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.timeout)
            .user_agent(USER_AGENT);
        if let Some((host, addr)) = pin {
            builder = builder.resolve(host, addr);
        }
        builder.build().map_err(|err| retry(format!("client: {}", err.without_url())))
    }

    /// Resolves the URL's host once and checks every address; the one to connect to.
    async fn checked_address(&self, url: &reqwest::Url) -> Result<Option<SocketAddr>, Outcome> {
        let refused = |error: String| Outcome::Refused { status: None, error };
        let host = url.host_str().ok_or_else(|| refused("the URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return match address::refusal(ip) {
                Some(why) if !self.config.allow_private_targets => {
                    Err(refused(format!("target address {ip} is {why}")))
                }
                _ => Ok(None),
            };
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|err| retry(format!("resolving {host}: {err}")))?
            .collect();
        let first = *addrs.first().ok_or_else(|| retry(format!("{host} resolves to nothing")))?;
        if !self.config.allow_private_targets {
            for addr in &addrs {
                if let Some(why) = address::refusal(addr.ip()) {
                    return Err(refused(format!("{host} resolves to {} ({why})", addr.ip())));
                }
            }
        }
        Ok(Some(first))
    }

    async fn webhook(
        &self,
        channel: &ChannelRecord,
        url: &str,
        delivery: &DeliveryRecord,
    ) -> Outcome {
        let url = match reqwest::Url::parse(url) {
            Ok(url) => url,
            Err(err) => return Outcome::Refused { status: None, error: format!("bad URL: {err}") },
        };
        let pinned = match self.checked_address(&url).await {
            Ok(pinned) => pinned,
            Err(outcome) => return outcome,
        };
        let body = delivery.body();
        let Some(vault) = self.vault.get() else { return retry("the vault is restarting") };
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let sign = SignWebhook {
            user_id: channel.user_id,
            channel_id: channel.id,
            secret: channel.secret.clone(),
            timestamp,
            body: body.clone(),
        };
        let signature = match ask(&vault, sign, VAULT_DEADLINE, "vault").await {
            Ok(Ok(signature)) => signature,
            Ok(Err(err)) => return retry(format!("signing: {err}")),
            Err(err) => return retry(format!("signing: {err}")),
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = match self.client(pinned.map(|addr| (host.as_str(), addr))) {
            Ok(client) => client,
            Err(outcome) => return outcome,
        };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("Keel-Delivery", delivery.id.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => {
                Outcome::Delivered { status: res.status().as_u16() }
            }
            Ok(res) => {
                let status = res.status();
                Outcome::Retry {
                    status: Some(status.as_u16()),
                    error: format!("HTTP {status}"),
                    after: None,
                }
            }
            Err(err) => retry(describe(&err)),
        }
    }

    async fn telegram(
        &self,
        channel: &ChannelRecord,
        chat_id: &str,
        delivery: &DeliveryRecord,
    ) -> Outcome {
        let Some(vault) = self.vault.get() else { return retry("the vault is restarting") };
        let open = OpenBotToken {
            user_id: channel.user_id,
            channel_id: channel.id,
            secret: channel.secret.clone(),
        };
        let token = match ask(&vault, open, VAULT_DEADLINE, "vault").await {
            Ok(Ok(token)) => token,
            Ok(Err(err)) => return retry(format!("opening the token: {err}")),
            Err(err) => return retry(format!("opening the token: {err}")),
        };
        let client = match self.client(None) {
            Ok(client) => client,
            Err(outcome) => return outcome,
        };
        let base = self.config.telegram_api_url.trim_end_matches('/');
        let url = format!("{base}/bot{}/sendMessage", token.expose_secret());
        let body = serde_json::json!({ "chat_id": chat_id, "text": delivery.event.text() });
        let res = match client.post(url).json(&body).send().await {
            Ok(res) => res,
            Err(err) => return retry(describe(&err)),
        };
        let status = res.status();
        let answer: serde_json::Value = res.json().await.unwrap_or_default();
        let description = answer["description"].as_str().unwrap_or("").to_owned();
        if status.is_success() && answer["ok"] == true {
            return Outcome::Delivered { status: status.as_u16() };
        }
        let error = format!("Telegram {}: {description}", status.as_u16());
        if status.as_u16() == 429 {
            let after = answer["parameters"]["retry_after"]
                .as_u64()
                .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
            return Outcome::Retry { status: Some(429), error, after };
        }
        if status.is_client_error() {
            return Outcome::Refused { status: Some(status.as_u16()), error };
        }
        Outcome::Retry { status: Some(status.as_u16()), error, after: None }
    }
}

/// A transport error in words, without the URL (a Telegram URL holds the bot token).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        detail = inner.to_string();
        source = inner.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") }
}
