//! Every domain error → [`ApiError`] mapping, in one file, so that a code or status an API client
//! relies on is changed (or checked) in one place.
//!
//! Handlers use `?` on the domain results; the `From` impls here pick the status and code. Errors
//! that are not a domain error's variant (a missing backtest, an unknown symbol in a path) have
//! named functions here too, so each code is spelled once.

use actix_web::http::StatusCode;
use keel_actors::backtest::jobs::{JobId, SubmitError};
use keel_actors::bot::admission::AdmissionError;
use keel_actors::bot::{BotError, TradeError};
use keel_actors::feed::FeedError;
use keel_actors::identity::IdentityError;
use keel_actors::mailbox::AskError;
use keel_actors::pg::RecordError;
use keel_actors::store::{DiskLow, StoreError};
use keel_actors::strategies::ModulesError;
use keel_actors::vault::VaultError;
use keel_core::bot::admission::NotEditable;
use keel_core::market::VenueId;
use keel_wasm::ModuleError;

use super::{ApiError, RETRY_AFTER_SECS};

impl From<AskError> for ApiError {
    /// The one mapping of actor mailbox errors: full → 503, deadline → 504, gone → 503.
    fn from(err: AskError) -> Self {
        match err {
            AskError::Full { actor } => Self::overloaded(actor),
            AskError::Timeout { actor } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "TIMEOUT",
                format!("{actor} did not answer in time"),
            ),
            AskError::Gone { actor } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("{actor} is restarting; retry shortly"),
            )
            .retry_after(RETRY_AFTER_SECS),
        }
    }
}

impl From<StoreError> for ApiError {
    /// A store failure is 500; the cause is logged, never sent.
    fn from(err: StoreError) -> Self {
        ApiError::internal(err)
    }
}

impl From<DiskLow> for ApiError {
    /// The disk guard: 507 `INSUFFICIENT_STORAGE`, retry once space is freed. The figures are
    /// logged and shown by `/health/ready`, not sent to API clients.
    fn from(_: DiskLow) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "INSUFFICIENT_STORAGE",
            "the server is low on disk space; new orders and bot starts are refused until space \
             is freed",
        )
        .retry_after(60)
    }
}

impl From<BotError> for ApiError {
    /// Bot supervisor errors: another user's bot is 404 like a missing one.
    fn from(err: BotError) -> Self {
        match err {
            BotError::NotFound(id) => {
                ApiError::not_found("BOT_NOT_FOUND", format!("no bot {id} for this user"))
            }
            BotError::Conflict(message) | BotError::Limit(message) => ApiError::conflict(message),
            BotError::Invalid(details) => ApiError::validation(details),
            BotError::Trade(err) => err.into(),
            BotError::Unavailable(err) => err.into(),
            BotError::Store => ApiError::internal(anyhow::anyhow!("bot storage failed")),
            // Cluster mode with `postgres_url`: the owner's lease is moving, or Postgres did not
            // answer. Both pass: retry.
            BotError::Moving => moving(),
            BotError::Record => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the system of record did not answer; retry",
            )
            .retry_after(RETRY_AFTER_SECS),
            // A derivatives bot's start: the venue refused its leverage or margin type (422
            // `LEVERAGE_REFUSED`, with the venue's words), or did not answer (503, retry).
            BotError::Venue { refused: true, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "LEVERAGE_REFUSED", message)
            }
            BotError::Venue { refused: false, message } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "VENUE_UNAVAILABLE", message)
                    .retry_after(RETRY_AFTER_SECS)
            }
        }
    }
}

impl From<TradeError> for ApiError {
    /// A bot's trading errors: a refused order is 422 `ORDER_REJECTED`.
    fn from(err: TradeError) -> Self {
        match err {
            TradeError::Rejected(rejection) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ORDER_REJECTED",
                format!("{}: {}", rejection.code, rejection.reason),
            ),
            TradeError::Cancel(err) => ApiError::conflict(err.to_string()),
            TradeError::Store => ApiError::internal(anyhow::anyhow!("order storage failed")),
        }
    }
}

impl From<AdmissionError> for ApiError {
    /// A bot definition that could not be checked (a wrong one is 422 with its fields).
    fn from(err: AdmissionError) -> Self {
        match err {
            AdmissionError::Unavailable(err) => err.into(),
            AdmissionError::MarketDataUnavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "MARKET_DATA_UNAVAILABLE",
                err.to_string(),
            )
            .retry_after(5),
            AdmissionError::Vault(err) => err.into(),
            AdmissionError::Modules(err) => err.into(),
        }
    }
}

impl From<ModulesError> for ApiError {
    /// Strategy modules: a refused module is 422 `INVALID_MODULE` (413 over the size cap), an
    /// unknown or another owner's id 404, a module bots use 409.
    fn from(err: ModulesError) -> Self {
        match err {
            ModulesError::Refused(ModuleError::TooLarge { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", err.to_string())
            }
            ModulesError::Refused(refused) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_MODULE",
                format!("the module is refused: {refused}"),
            ),
            ModulesError::Invalid(details) => ApiError::validation(details),
            ModulesError::NotFound(id) => strategy_not_found(id),
            ModulesError::InUse { .. } | ModulesError::Limit => ApiError::conflict(err.to_string()),
            ModulesError::Host(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "strategy modules cannot run on this server now",
            ),
            ModulesError::Store(err) => err.into(),
            ModulesError::Moving => moving(),
            ModulesError::Record(err) => err.into(),
        }
    }
}

/// 404 `STRATEGY_NOT_FOUND`: no such strategy module of the caller's (another user's is the same).
fn strategy_not_found(id: u64) -> ApiError {
    ApiError::not_found("STRATEGY_NOT_FOUND", format!("no strategy module {id} of yours"))
}

impl From<NotEditable> for ApiError {
    /// A running or paused bot cannot be edited: 409.
    fn from(err: NotEditable) -> Self {
        ApiError::conflict(err.to_string())
    }
}

impl From<VaultError> for ApiError {
    /// Vault errors; nothing secret is in any of them.
    fn from(err: VaultError) -> Self {
        match err {
            VaultError::NotFound => {
                ApiError::not_found("EXCHANGE_ACCOUNT_NOT_FOUND", "no such exchange account")
            }
            VaultError::Limit(n) => {
                ApiError::conflict(format!("at most {n} exchange accounts per user"))
            }
            // Cluster mode with `postgres_url`: as for bots, both pass: retry.
            VaultError::Moving => BotError::Moving.into(),
            VaultError::Record(err) if err.is_unavailable() => BotError::Record.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<keel_actors::notify::NotifyError> for ApiError {
    /// Notification channel errors; nothing secret is in any of them.
    fn from(err: keel_actors::notify::NotifyError) -> Self {
        use keel_actors::notify::NotifyError;
        match err {
            NotifyError::NotFound => ApiError::not_found(
                "NOTIFICATION_CHANNEL_NOT_FOUND",
                "no such notification channel",
            ),
            NotifyError::Limit(n) => {
                ApiError::conflict(format!("at most {n} notification channels per user"))
            }
            NotifyError::Vault(err) => err.into(),
            NotifyError::Ask(err) => err.into(),
            NotifyError::Store(err) => err.into(),
            NotifyError::Moving => moving(),
            NotifyError::Record(err) => err.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    /// Identity errors: a wrong email and a wrong password answer alike.
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::EmailTaken => {
                ApiError::conflict("an account with this email already exists")
            }
            IdentityError::InvalidCredentials => {
                ApiError::unauthorized("invalid email or password")
            }
            IdentityError::InvalidRefreshToken | IdentityError::RefreshTokenReused => {
                ApiError::unauthorized(err.to_string())
            }
            IdentityError::Overloaded => ApiError::overloaded("password hashing"),
            IdentityError::Hashing | IdentityError::Store(_) => ApiError::internal(err),
            IdentityError::Record(err) => err.into(),
            IdentityError::RevocationsStale => record_unavailable(),
        }
    }
}

impl From<RecordError> for ApiError {
    /// The cluster's Postgres: unreachable or too slow is 503 `UNAVAILABLE` with `Retry-After`
    /// (the cause is logged, never sent); a refused statement is 500.
    fn from(err: RecordError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err.detail(), "the system of record is unavailable");
            record_unavailable()
        } else {
            ApiError::internal(err)
        }
    }
}

/// 503 `UNAVAILABLE` with `Retry-After: 1`: cluster mode with `postgres_url`, and this node does
/// not hold the user's lease (it is moving, or the write was fenced); nothing changed.
fn moving() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "ownership is moving, retry")
        .retry_after(1)
}

/// 503 while the cluster's Postgres cannot answer.
fn record_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the cluster's database is unavailable; retry shortly",
    )
    .retry_after(RETRY_AFTER_SECS)
}

impl From<FeedError> for ApiError {
    /// Market-data errors: an unknown symbol is 404, no data yet is 503 with `Retry-After`.
    fn from(err: FeedError) -> Self {
        match err {
            FeedError::UnknownSymbol { venue, symbol } => symbol_not_found(venue, &symbol),
            FeedError::Unsupported { .. } => ApiError::not_found("NOT_FOUND", err.to_string()),
            FeedError::NoData { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "MARKET_DATA_UNAVAILABLE",
                err.to_string(),
            )
            .retry_after(1),
        }
    }
}

impl From<SubmitError> for ApiError {
    /// Backtest queue errors: the user's limit is 429, a full queue 503.
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::TooMany { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_BACKTESTS", err.to_string())
                    .retry_after(5)
            }
            SubmitError::Busy => ApiError::overloaded("the backtest queue"),
            SubmitError::Store => ApiError::internal(err),
        }
    }
}

/// 404 `SYMBOL_NOT_FOUND`: `venue` does not list `raw` (or it is not a symbol at all).
pub fn symbol_not_found(venue: VenueId, raw: &str) -> ApiError {
    ApiError::not_found("SYMBOL_NOT_FOUND", format!("{venue} has no symbol `{raw}`"))
}

/// 404 `BACKTEST_NOT_FOUND`: no such job of the caller's (another user's is the same).
pub fn backtest_not_found(id: JobId) -> ApiError {
    ApiError::not_found("BACKTEST_NOT_FOUND", format!("no backtest {id} for this user"))
}

impl From<keel_actors::account::BalancesError> for ApiError {
    /// An account's balances not available: 409 when the venue takes no live orders here, 503
    /// `VENUE_UNAVAILABLE` (retry) when it did not answer.
    fn from(err: keel_actors::account::BalancesError) -> Self {
        use keel_actors::account::BalancesError;
        match err {
            BalancesError::NotLive(_) => ApiError::conflict(err.to_string()),
            BalancesError::Venue(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "VENUE_UNAVAILABLE", err.to_string())
                    .retry_after(RETRY_AFTER_SECS)
            }
        }
    }
}

impl From<keel_actors::bot::funding::FundingError> for ApiError {
    /// A live bot refused at start: 422 `INSUFFICIENT_BALANCE` naming the asset, the amount its
    /// first order needs and the amount free; or the balances' own error.
    fn from(err: keel_actors::bot::funding::FundingError) -> Self {
        use keel_actors::bot::funding::FundingError;
        match err {
            FundingError::Insufficient(short) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INSUFFICIENT_BALANCE",
                format!("not started: {short}"),
            ),
            FundingError::Balances(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use actix_web::body::to_bytes;
    use actix_web::http::header;

    use super::*;

    #[actix_web::test]
    async fn a_start_the_venue_refuses_leverage_for_is_422_and_one_it_could_not_ask_503() {
        use keel_actors::bot::BotError;
        let cases =
            [(true, 422, "LEVERAGE_REFUSED", false), (false, 503, "VENUE_UNAVAILABLE", true)];
        for (refused, status, code, retry) in cases {
            let message = "not started: the venue refused leverage 50x isolated on BTCUSDT: -4028";
            let res = ApiError::from(BotError::Venue { refused, message: message.into() })
                .error_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers().contains_key(header::RETRY_AFTER), retry);
            let body: serde_json::Value =
                serde_json::from_slice(&to_bytes(res.into_body()).await.unwrap()).unwrap();
            assert_eq!(
                (body["error"]["code"].as_str(), body["error"]["message"].as_str()),
                (Some(code), Some(message))
            );
        }
    }

    #[actix_web::test]
    async fn mailbox_errors_map_to_503_and_504_with_retry_after() {
        let cases = [
            (AskError::Full { actor: "vault" }, 503, "OVERLOADED", true),
            (AskError::Timeout { actor: "vault" }, 504, "TIMEOUT", false),
            (AskError::Gone { actor: "vault" }, 503, "UNAVAILABLE", true),
        ];
        for (ask, status, code, retry) in cases {
            let err = ApiError::from(ask);
            let res = err.error_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers().contains_key(header::RETRY_AFTER), retry);
            let body: serde_json::Value =
                serde_json::from_slice(&to_bytes(res.into_body()).await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], code);
        }
    }
}
