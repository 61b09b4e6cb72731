//! `/api/v1/exchange-accounts`: credentials stored in, and only in, the vault.

use actix_web::{HttpResponse, web};
use keel_actors::mailbox::ask;
use keel_actors::vault::{AddCredential, CredentialView, ListCredentials, RemoveCredential};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::ErrorResponse;
use super::json::Json;
use super::{ApiError, FieldError, Items};
use crate::auth::AuthUser;
use crate::state::AppState;

/// Longest label.
const MAX_LABEL_CHARS: usize = 64;
/// Longest API key or secret accepted (Binance's are 64 characters; Ed25519 PEMs are longer).
const MAX_KEY_CHARS: usize = 512;

/// `POST /exchange-accounts` body. Its `Debug` shows no key material.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// `binance` or `binance_futures`.
    #[schema(pattern = "^(binance|binance_futures|bybit|bybit_linear)$", example = "binance")]
    venue: String,
    /// The owner's name for it: at most 64 characters, not all blank, no control characters
    /// (surrounding spaces are trimmed).
    #[schema(
        max_length = 64,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
    )]
    label: String,
    /// The venue's API key; stored encrypted, never shown again. No spaces or control
    /// characters (as `check_key` says), at most 512 characters.
    #[schema(value_type = String, format = Password, pattern = r"^[^\s\x00-\x1F\x7F-\x9F]+$",
        max_length = 512)]
    api_key: SecretString,
    /// The venue's API secret; stored encrypted, never shown again. Like `api_key`.
    #[schema(value_type = String, format = Password, pattern = r"^[^\s\x00-\x1F\x7F-\x9F]+$",
        max_length = 512)]
    api_secret: SecretString,
    /// Whether the key is for the venue's testnet.
    #[serde(default)]
    testnet: bool,
}

fn check_key(field: &str, value: &SecretString, details: &mut Vec<FieldError>) {
    let value = value.expose_secret();
    if value.is_empty() {
        details.push(FieldError::new(field, "must not be empty"));
    } else if value.chars().count() > MAX_KEY_CHARS {
        details.push(FieldError::new(field, format!("must be at most {MAX_KEY_CHARS} characters")));
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        details.push(FieldError::new(field, "must not contain spaces or control characters"));
    }
}

pub(super) fn validate(body: &NewAccount) -> Result<(), ApiError> {
    let mut details = Vec::new();
    // The venues that take credentials are the registry's to say; `NewAccount`'s schema
    // pattern spells the same list (a test keeps them equal).
    let mut venues = keel_venues::registry::credential_venues();
    if !venues.any(|venue| venue.as_str() == body.venue) {
        let names: Vec<&str> =
            keel_venues::registry::credential_venues().map(|v| v.as_str()).collect();
        details.push(FieldError::new("venue", format!("must be one of {}", names.join(", "))));
    }
    // The length as sent, as the document's `maxLength` counts it.
    let label = body.label.trim();
    if label.is_empty() || body.label.chars().count() > MAX_LABEL_CHARS {
        details
            .push(FieldError::new("label", format!("must be 1 to {MAX_LABEL_CHARS} characters")));
    } else if label.chars().any(char::is_control) {
        details.push(FieldError::new("label", "must not contain control characters"));
    }
    check_key("api_key", &body.api_key, &mut details);
    check_key("api_secret", &body.api_secret, &mut details);
    if details.is_empty() { Ok(()) } else { Err(ApiError::validation(details)) }
}

/// `POST /exchange-accounts`.
///
/// # Errors
/// 422 for invalid fields, 409 past the per-user limit, 503/504 if the vault is busy.
#[utoipa::path(post, path = "/exchange-accounts", tag = "exchange-accounts",
    request_body = NewAccount,
    responses(
        (status = 201, description = "Stored in the vault.", body = CredentialView),
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
    body: Json<NewAccount>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    validate(&body)?;
    let add = AddCredential {
        user_id: user.user_id,
        venue: body.venue,
        label: body.label.trim().to_owned(),
        api_key: body.api_key,
        api_secret: body.api_secret,
        testnet: body.testnet,
    };
    let view = ask(&state.vault()?, add, state.settings.request_timeout(), "vault").await??;
    Ok(HttpResponse::Created().json(view))
}

/// `GET /exchange-accounts`.
///
/// # Errors
/// 503/504 if the vault is busy.
#[utoipa::path(get, path = "/exchange-accounts", tag = "exchange-accounts",
    responses(
        (status = 200, description = "The caller's exchange accounts.",
            body = Items<CredentialView>),
        (status = 504, description = "The vault did not answer in time (`TIMEOUT`).",
            body = ErrorResponse),
    ))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let query = ListCredentials { user_id: user.user_id };
    let views = ask(&state.vault()?, query, state.settings.request_timeout(), "vault").await??;
    Ok(HttpResponse::Ok().json(Items { items: views }))
}

/// `DELETE /exchange-accounts/{id}`. Another user's id answers 404, like a missing one.
///
/// # Errors
/// 404 for an unknown id.
#[utoipa::path(delete, path = "/exchange-accounts/{id}", tag = "exchange-accounts",
    params(("id" = u64, Path, description = "The exchange account's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such account of the caller's \
            (`EXCHANGE_ACCOUNT_NOT_FOUND`).", body = ErrorResponse),
        (status = 504, description = "The vault did not answer in time (`TIMEOUT`).",
            body = ErrorResponse),
    ))]
pub async fn delete(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let query = RemoveCredential { user_id: user.user_id, credential_id: id.into_inner() };
    ask(&state.vault()?, query, state.settings.request_timeout(), "vault").await??;
    Ok(HttpResponse::NoContent().finish())
}

/// One asset of an exchange account.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExchangeAccountAsset {
    /// The asset (`USDT`).
    asset: String,
    /// Available to trade.
    #[schema(value_type = String, example = "10000.5")]
    free: rust_decimal::Decimal,
    /// Held by open orders.
    #[schema(value_type = String, example = "0")]
    locked: rust_decimal::Decimal,
}

/// `GET /exchange-accounts/{id}/balances`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExchangeAccountBalances {
    /// The exchange account.
    account_id: u64,
    /// Its venue.
    venue: String,
    /// `up`: kept current by the account's user data stream (a live bot of it runs); `down`:
    /// the stream is reconnecting, so these may be behind; `idle`: no live bot of it runs, read
    /// from the venue for this answer.
    #[schema(pattern = "^(up|down|idle)$")]
    stream: String,
    /// Where the last change came from: `rest` (a read) or `stream` (a pushed update).
    #[schema(pattern = "^(rest|stream)$")]
    source: String,
    /// When they last changed, ms since the epoch.
    updated_at_ms: u64,
    /// Every asset the venue listed, by name.
    balances: Vec<ExchangeAccountAsset>,
}

/// `GET /exchange-accounts/{id}/balances`. Another user's id answers 404, like a missing one.
///
/// # Errors
/// 404 for an unknown id, 409 when the venue takes no live orders here, 503 when the venue did
/// not answer.
#[utoipa::path(get, path = "/exchange-accounts/{id}/balances", tag = "exchange-accounts",
    params(("id" = u64, Path, description = "The exchange account's id.")),
    responses(
        (status = 200, description = "The account's balances.", body = ExchangeAccountBalances),
        (status = 404, description = "No such account of the caller's \
            (`EXCHANGE_ACCOUNT_NOT_FOUND`).", body = ErrorResponse),
        (status = 409, description = "The account's venue is not enabled for live trading \
            (`CONFLICT`); a 503 `VENUE_UNAVAILABLE` when the venue did not give them.",
            body = ErrorResponse),
        (status = 504, description = "The vault did not answer in time (`TIMEOUT`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn balances(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let account_id = id.into_inner();
    let query = ListCredentials { user_id: user.user_id };
    let views = ask(&state.vault()?, query, state.settings.request_timeout(), "vault").await??;
    let view = views
        .into_iter()
        .find(|v| v.id == account_id)
        .ok_or(keel_actors::vault::VaultError::NotFound)?;
    let venue = keel_core::market::VenueId::parse(&view.venue)
        .ok_or(keel_actors::vault::VaultError::NotFound)?;
    let (book, stream) = state.live.balances(&state.vault, venue, user.user_id, account_id).await?;
    Ok(HttpResponse::Ok().json(ExchangeAccountBalances {
        account_id,
        venue: view.venue,
        stream: stream.as_str().to_owned(),
        source: if book.source.is_empty() { "rest" } else { book.source }.to_owned(),
        updated_at_ms: book.updated_ms,
        balances: book
            .assets
            .into_values()
            .map(|b| ExchangeAccountAsset {
                asset: b.asset,
                free: b.free.normalize(),
                locked: b.locked.normalize(),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    #[test]
    fn the_venue_pattern_of_the_schema_lists_the_registrys_credential_venues() {
        let document = serde_json::to_value(super::super::openapi::ApiDoc::openapi()).unwrap();
        let pattern =
            &document["components"]["schemas"]["NewAccount"]["properties"]["venue"]["pattern"];
        let venues: Vec<&str> =
            keel_venues::registry::credential_venues().map(|v| v.as_str()).collect();
        assert_eq!(pattern.as_str(), Some(format!("^({})$", venues.join("|")).as_str()));
    }
}
