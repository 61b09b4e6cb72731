//! `/api/v1/notifications`: an owner's webhooks and Telegram chats, and what became of the
//! deliveries. Channels and the outbox are `keel_actors::notify`; the rules
//! (event names, refused addresses) are `keel_core::notify`; this file only checks the input
//! and shapes the answers. Another user's channel answers 404, like a missing one.

use actix_web::{HttpResponse, web};
use keel_actors::notify::{ChannelView, DeliveryView, NewChannel, Target};
use keel_core::notify::{EventKind, address, parse_events};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::ErrorResponse;
use super::json::Json;
use super::{ApiError, FieldError, Items};
use crate::auth::AuthUser;
use crate::state::AppState;

/// Longest webhook URL.
const MAX_URL_CHARS: usize = 2048;
/// Deliveries `GET /notifications/deliveries` lists, newest first.
const RECENT_DELIVERIES: usize = 200;

/// `webhook` or `telegram`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NotificationChannelKind)]
pub enum ChannelKind {
    /// A signed HTTP POST per event.
    Webhook,
    /// A Telegram message per event.
    Telegram,
}

/// `POST /notifications/channels` body. Its `Debug` shows no token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewNotificationChannel)]
pub struct NewChannelBody {
    /// `webhook` (with `url`) or `telegram` (with `bot_token` and `chat_id`).
    kind: ChannelKind,
    /// A webhook's `http(s)://` URL, at most 2048 characters, no user name or password.
    #[serde(default)]
    #[schema(max_length = 2048, example = "https://example.com/keel-hook")]
    url: Option<String>,
    /// A Telegram bot's token from BotFather; stored encrypted, never shown again.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password,
        pattern = r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$")]
    bot_token: Option<SecretString>,
    /// The Telegram chat's id (docs/NOTIFICATIONS.md says how to find it) or `@channelname`.
    #[serde(default)]
    #[schema(pattern = r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$", example = "123456789")]
    chat_id: Option<String>,
    /// The events it receives, at least one.
    #[schema(value_type = Vec<EventKind>, min_items = 1)]
    events: Vec<String>,
}

impl std::fmt::Debug for NewChannelBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewChannelBody")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("chat_id", &self.chat_id)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// `POST /notifications/channels` answer: the channel, and a webhook's signing secret, shown
/// this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = NotificationChannelCreated)]
pub struct ChannelCreated {
    /// The channel.
    #[serde(flatten)]
    channel: ChannelView,
    /// A webhook's signing secret (`whsec_…`): the HMAC key of `Keel-Signature`. Shown only in
    /// this answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<String>,
}

fn is_token(token: &str) -> bool {
    let Some((bot, secret)) = token.split_once(':') else { return false };
    (1..=20).contains(&bot.len())
        && bot.bytes().all(|b| b.is_ascii_digit())
        && (20..=100).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_chat_id(chat: &str) -> bool {
    match chat.strip_prefix('@') {
        Some(name) => {
            (5..=32).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => {
            let digits = chat.strip_prefix('-').unwrap_or(chat);
            (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

/// Why a webhook URL is refused, if it is.
fn check_url(url: &str, allow_private: bool) -> Option<String> {
    if url.chars().count() > MAX_URL_CHARS {
        return Some(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let Ok(parsed) = reqwest::Url::parse(url) else { return Some("must be a valid URL".into()) };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("must not hold a user name or password".into());
    }
    let Some(host) = parsed.host_str() else { return Some("must name a host".into()) };
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>()
        && let Some(why) = address::refusal(ip)
        && !allow_private
    {
        return Some(format!(
            "targets a {why} address ({ip}); private targets are not allowed \
             (notifications.allow_private_targets)"
        ));
    }
    None
}

fn validate(
    body: NewChannelBody,
    user_id: u64,
    allow_private: bool,
) -> Result<NewChannel, ApiError> {
    let mut details = Vec::new();
    let events = match parse_events(&body.events) {
        Ok(events) if events.is_empty() => {
            details.push(FieldError::new("events", "must name at least one event"));
            Vec::new()
        }
        Ok(events) => events,
        Err(unknown) => {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            details.push(FieldError::new(
                "events",
                format!("{unknown}; known events: {}", known.join(", ")),
            ));
            Vec::new()
        }
    };
    let forbid = |details: &mut Vec<FieldError>, field: &str, present: bool, kind: &str| {
        if present {
            details.push(FieldError::new(field, format!("is not used by a {kind} channel")));
        }
    };
    let target = match body.kind {
        ChannelKind::Webhook => {
            forbid(&mut details, "bot_token", body.bot_token.is_some(), "webhook");
            forbid(&mut details, "chat_id", body.chat_id.is_some(), "webhook");
            match body.url {
                None => {
                    details.push(FieldError::new("url", "is required for a webhook"));
                    None
                }
                Some(url) => match check_url(&url, allow_private) {
                    Some(problem) => {
                        details.push(FieldError::new("url", problem));
                        None
                    }
                    None => Some(Target::Webhook { url }),
                },
            }
        }
        ChannelKind::Telegram => {
            forbid(&mut details, "url", body.url.is_some(), "telegram");
            if !body.bot_token.as_ref().is_some_and(|t| is_token(t.expose_secret())) {
                details.push(FieldError::new("bot_token", "must be a Telegram bot token"));
            }
            match body.chat_id {
                Some(chat_id) if is_chat_id(&chat_id) => Some(Target::Telegram { chat_id }),
                _ => {
                    details.push(FieldError::new(
                        "chat_id",
                        "must be a Telegram chat id (digits, optionally negative) or @name",
                    ));
                    None
                }
            }
        }
    };
    match target {
        Some(target) if details.is_empty() => {
            Ok(NewChannel { user_id, target, events, bot_token: body.bot_token })
        }
        _ => Err(ApiError::validation(details)),
    }
}

/// `POST /notifications/channels`.
///
/// # Errors
/// 422 for invalid fields (unknown events named, a private webhook target), 409 past the
/// per-user limit, 503/504 if the vault is busy.
#[utoipa::path(post, path = "/notifications/channels", tag = "notifications",
    request_body = NewChannelBody,
    responses(
        (status = 201, description = "Created; a webhook's signing secret is in this answer only.",
            body = ChannelCreated),
        (status = 409, description = "At the per-user limit (`CONFLICT`).", body = ErrorResponse),
        (status = 422, description = "Invalid fields (`VALIDATION_FAILED`).",
            body = ErrorResponse),
        (status = 504, description = "The vault did not answer in time (`TIMEOUT`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn create(
    user: AuthUser,
    state: web::Data<AppState>,
    body: Json<NewChannelBody>,
) -> Result<HttpResponse, ApiError> {
    let allow_private = state.settings.notifications.allow_private_targets;
    let new = validate(body.into_inner(), user.user_id, allow_private)?;
    let max = state.settings.notifications.max_channels_per_user;
    let vault = state.vault()?;
    let (record, secret) = state
        .notifications
        .create_channel(&vault, new, max, state.settings.request_timeout())
        .await?;
    Ok(HttpResponse::Created().json(ChannelCreated {
        channel: ChannelView::from(&record),
        signing_secret: secret.map(|s| s.expose_secret().to_owned()),
    }))
}

/// `GET /notifications/channels`.
///
/// # Errors
/// 500 if the store fails.
#[utoipa::path(get, path = "/notifications/channels", tag = "notifications",
    responses(
        (status = 200, description = "The caller's channels, oldest first; never a secret.",
            body = Items<ChannelView>),
    ))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let notifications = state.notifications.clone();
    let records = web::block(move || notifications.channels().list(user.user_id))
        .await
        .map_err(ApiError::internal)??;
    let items = records.iter().map(ChannelView::from).collect();
    Ok(HttpResponse::Ok().json(Items { items }))
}

/// `DELETE /notifications/channels/{id}`. Another user's id answers 404, like a missing one.
///
/// # Errors
/// 404 for an unknown id.
#[utoipa::path(delete, path = "/notifications/channels/{id}", tag = "notifications",
    params(("id" = u64, Path, description = "The channel's id.")),
    responses(
        (status = 204, description = "Deleted; its pending deliveries fail."),
        (status = 404, description = "No such channel of the caller's \
            (`NOTIFICATION_CHANNEL_NOT_FOUND`).", body = ErrorResponse),
    ))]
pub async fn delete(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    state.notifications.delete_channel(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /notifications/deliveries`: the caller's most recent deliveries (200), newest first.
///
/// # Errors
/// 500 if the store fails.
#[utoipa::path(get, path = "/notifications/deliveries", tag = "notifications",
    responses(
        (status = 200, description = "Recent deliveries and their outcomes, newest first.",
            body = Items<DeliveryView>),
    ))]
pub async fn deliveries(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Cluster mode with `postgres_url`: the record, which holds the deliveries every node made.
    if let Some(record) = state.notifications.record() {
        let items = record.table.recent(user.user_id, RECENT_DELIVERIES).await?;
        return Ok(HttpResponse::Ok().json(Items { items }));
    }
    let notifications = state.notifications.clone();
    let items = web::block(move || notifications.recent(user.user_id, RECENT_DELIVERIES))
        .await
        .map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().json(Items { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/",
            "https://169.254.169.254/latest",
            "http://[::1]:9000/",
            "http://[fc00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://100.64.1.1/",
            "http://0.0.0.0/",
        ] {
            assert!(check_url(url, false).is_some(), "{url}");
            assert_eq!(check_url(url, true), None, "{url}");
        }
        assert_eq!(check_url("https://hooks.example.com/keel", false), None);
        assert!(check_url("ftp://example.com/", true).is_some());
        assert!(check_url("https://user:pw@example.com/", true).is_some());
        assert!(check_url("not a url", true).is_some());
    }

    #[test]
    fn telegram_tokens_and_chat_ids_are_checked() {
        assert!(is_token("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"));
        assert!(!is_token("123456789"));
        assert!(!is_token("abc:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"));
        assert!(!is_token("1:short"));
        for chat in ["123456789", "-1001234567890", "@keel_alerts"] {
            assert!(is_chat_id(chat), "{chat}");
        }
        for chat in ["", "-", "12a", "@abc", "@9abcdef", "@with space"] {
            assert!(!is_chat_id(chat), "{chat}");
        }
    }
}
