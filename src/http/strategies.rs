//! `/api/v1/strategies`: the strategy kinds a bot can run. The built-in kinds with the JSON Schema
//! of their params (generated from their types in keel-core), and each owner's own WebAssembly
//! modules (docs/STRATEGY_ABI.md).
//!
//! - `POST /strategies?name=NAME` takes the raw module (`Content-Type: application/wasm`, at most
//!   the sandbox's module cap: 413 past it, read a chunk at a time), checks it in the sandbox on
//!   a blocking thread (422 `INVALID_MODULE` saying what is wrong), and stores it once durable.
//! - `GET /strategies` lists the built-in kinds and the caller's modules; `GET` and `DELETE
//!   /strategies/{id}` read and delete one module (409 while a bot of the caller's runs it).
//!
//! The checks and the storage are `keel_actors::strategies`; the delete goes through the bot
//! supervisor, which owns the bots that may name the module. Another user's id is 404. In
//! cluster mode with `postgres_url` uploads and deletes commit in Postgres
//! (`keel_actors::strategies::pg`) before the answer; reads use the owner's working copy.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use keel_actors::bot::supervisor::modules::RemoveModule;
use keel_actors::mailbox::ask;
use keel_actors::strategies::ModuleRecord;
use keel_actors::strategies::pg::PgModules;
use keel_core::strategy::{WASM_KIND, builtin_kinds};
use serde::{Deserialize, Serialize};

use super::error::ErrorResponse;
use super::{ApiError, Items};
use crate::auth::AuthUser;
use crate::state::AppState;

/// The media type of a module upload.
const WASM_MEDIA_TYPE: &str = "application/wasm";

/// One uploaded module.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StrategyModule {
    /// The id a bot names in `strategy.module_id`.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64, format = Int64)]
    id: u64,
    /// The owner's name for it.
    name: String,
    /// SHA-256 of the module's bytes, hex.
    sha256: String,
    /// Size in bytes.
    size: u64,
    /// The ABI version it speaks (docs/STRATEGY_ABI.md).
    abi_version: u32,
    /// The JSON Schema of its params, from its `keel_params_schema`.
    #[schema(value_type = Object)]
    params_schema: serde_json::Value,
    /// When it was uploaded (RFC 3339).
    created_at: String,
}

impl From<ModuleRecord> for StrategyModule {
    fn from(m: ModuleRecord) -> Self {
        let created = std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.created_at_ms);
        Self {
            id: m.id,
            name: m.name,
            sha256: m.sha256,
            size: m.size,
            abi_version: m.abi_version,
            params_schema: m.params_schema,
            created_at: humantime::format_rfc3339_seconds(created).to_string(),
        }
    }
}

/// A strategy kind a bot can run: a built-in one, or one of the caller's modules (kind `wasm`,
/// with `module`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StrategyKind {
    /// What a bot names in `strategy.kind`.
    #[schema(example = "ema_cross")]
    kind: String,
    /// Whether it is built into Keel.
    builtin: bool,
    /// Its name: the kind of a built-in one, the owner's name of a module.
    name: String,
    /// What it does (built-in kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// The JSON Schema of its params.
    #[schema(value_type = Object)]
    params_schema: serde_json::Value,
    /// The module (kind `wasm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<StrategyModule>,
}

/// Query of `POST /strategies`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The module's name: 1 to 64 characters.
    #[param(min_length = 1, max_length = 64)]
    name: String,
}

/// 404 of `/strategies/{id}`.
const STRATEGY_NOT_FOUND: &str = "No such strategy module of the caller's (`STRATEGY_NOT_FOUND`).";

fn too_large(cap: usize) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("a strategy module may have at most {cap} bytes"),
    )
}

fn now_ms() -> u64 {
    keel_venues::now_us() / 1000
}

/// `POST /strategies?name=NAME`: checks and stores a WebAssembly module of the caller's.
///
/// # Errors
/// 415 unless `application/wasm`, 413 past the module cap, 422 `INVALID_MODULE` (what is wrong)
/// or `VALIDATION_FAILED` (the name), 409 past the per-user number of modules.
#[utoipa::path(post, path = "/strategies", tag = "strategies", params(UploadQuery),
    request_body(content = String, content_type = "application/wasm",
        description = "The module: WebAssembly binary format, speaking docs/STRATEGY_ABI.md."),
    responses(
        (status = 201, description = "Checked and stored.", body = StrategyModule,
            headers(("Location" = String, description = "The module's URL."))),
        (status = 409, description = "The caller keeps as many modules as allowed \
            (`CONFLICT`).", body = ErrorResponse),
        (status = 413, description = "Over the module size cap (`PAYLOAD_TOO_LARGE`).",
            body = ErrorResponse),
        (status = 415, description = "The body is not `application/wasm` \
            (`UNSUPPORTED_MEDIA_TYPE`).", body = ErrorResponse),
        (status = 422, description = "The module is refused (`INVALID_MODULE`: invalid bytes, \
            missing or wrong-typed exports, unknown imports, caps, a start function that does \
            not return) or the name is wrong (`VALIDATION_FAILED`).", body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn upload(
    user: AuthUser,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<UploadQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let media = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = media.and_then(|m| m.split(';').next()).map(str::trim);
    if !essence.is_some_and(|m| m.eq_ignore_ascii_case(WASM_MEDIA_TYPE)) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("the body must be a module with Content-Type: {WASM_MEDIA_TYPE}"),
        ));
    }
    let cap = state.strategies.config().max_module_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) {
        return Err(too_large(cap));
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("BAD_REQUEST", format!("cannot read the body: {e}"))
        })?;
        if bytes.len() + chunk.len() > cap {
            return Err(too_large(cap));
        }
        bytes.extend_from_slice(&chunk);
    }
    let (modules, user_id, name) =
        (state.strategies.clone(), user.user_id, query.into_inner().name);
    let record = match (&state.leases, &state.record) {
        // Cluster mode with `postgres_url`: committed in Postgres under the owner's fence.
        (Some(leases), Some(record)) => {
            PgModules::new(record.clone())
                .upload(&modules, leases, user_id, name, bytes.to_vec(), now_ms())
                .await?
        }
        _ => {
            let record = web::block(move || modules.upload(user_id, &name, &bytes, now_ms()))
                .await
                .map_err(ApiError::internal)??;
            state.store.commit().await?;
            record
        }
    };
    tracing::info!(module_id = record.id, sha256 = %record.sha256, "strategy module uploaded");
    let location = format!("{}/strategies/{}", super::API_PREFIX, record.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(StrategyModule::from(record)))
}

/// `GET /strategies`: the built-in kinds, then the caller's modules (oldest first).
///
/// # Errors
/// 500 when the store cannot be read.
#[utoipa::path(get, path = "/strategies", tag = "strategies",
    responses(
        (status = 200, description = "Every kind the caller's bots can run.",
            body = Items<StrategyKind>),
    ))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let modules = state.strategies.clone();
    let owned =
        web::block(move || modules.list(user.user_id)).await.map_err(ApiError::internal)??;
    let builtin = builtin_kinds().into_iter().map(|k| StrategyKind {
        kind: k.kind.to_owned(),
        builtin: true,
        name: k.kind.to_owned(),
        description: Some(k.description.to_owned()),
        params_schema: k.params_schema,
        module: None,
    });
    let uploaded = owned.into_iter().map(|m| StrategyKind {
        kind: WASM_KIND.to_owned(),
        builtin: false,
        name: m.name.clone(),
        description: None,
        params_schema: m.params_schema.clone(),
        module: Some(m.into()),
    });
    Ok(HttpResponse::Ok().json(Items { items: builtin.chain(uploaded).collect() }))
}

/// `GET /strategies/{id}`: one of the caller's modules.
///
/// # Errors
/// 404 for an unknown or another user's id.
#[utoipa::path(get, path = "/strategies/{id}", tag = "strategies",
    params(("id" = u64, Path, description = "The module's id.")),
    responses(
        (status = 200, description = "The module.", body = StrategyModule),
        (status = 404, description = STRATEGY_NOT_FOUND, body = ErrorResponse),
    ))]
pub async fn get(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let (modules, id) = (state.strategies.clone(), id.into_inner());
    let record =
        web::block(move || modules.get(user.user_id, id)).await.map_err(ApiError::internal)??;
    Ok(HttpResponse::Ok().json(StrategyModule::from(record)))
}

/// `DELETE /strategies/{id}`: deletes one of the caller's modules no bot of theirs runs.
///
/// # Errors
/// 404 for an unknown or another user's id, 409 while a bot names the module.
#[utoipa::path(delete, path = "/strategies/{id}", tag = "strategies",
    params(("id" = u64, Path, description = "The module's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = STRATEGY_NOT_FOUND, body = ErrorResponse),
        (status = 409, description = "Bots of the caller's name the module; delete them first \
            (`CONFLICT`).", body = ErrorResponse),
        (status = 504, description = "The bot supervisor did not answer in time (`TIMEOUT`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn delete(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let query = RemoveModule { user_id: user.user_id, module_id: id.into_inner() };
    ask(&state.bots()?, query, state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::NoContent().finish())
}
