//! Operator endpoints outside the user API, guarded by `admin.token` (not by user JWTs).
//!
//! `GET /admin/backup` streams a consistent backup of the store (the format and what
//! "consistent" means are in `keel_actors::store::backup`); `keel backup FILE` calls it. With no
//! `admin.token` configured the endpoints are off and answer 403.

use std::io::Read;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;

use crate::http::ApiError;
use crate::state::AppState;

/// Path of the backup endpoint.
pub const BACKUP_PATH: &str = "/admin/backup";
/// Path of the invite endpoint.
pub const INVITES_PATH: &str = "/admin/invites";

/// An invite, as `POST /admin/invites` answers it.
#[derive(Debug, serde::Serialize)]
struct InviteView {
    /// The single-use token to hand to the person invited (shown once; only its hash is kept).
    invite: String,
    /// When it stops working, RFC 3339 UTC.
    expires_at: String,
}

/// `POST /admin/invites`: a single-use registration invite, valid `auth.invite_ttl_secs`, for
/// `auth.registration = "invite"` (docs/SECURITY.md, "Registration").
///
/// # Errors
/// 403 without `admin.token` configured, 401 without it presented, 500 if the store fails.
pub async fn create_invite(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let ttl = std::time::Duration::from_secs(state.settings.auth.invite_ttl_secs);
    let (token, expires_at_ms) = state.identity.invites.create(ttl).await?;
    state.store.commit().await?;
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_millis(expires_at_ms);
    tracing::info!("registration invite created");
    Ok(HttpResponse::Created().json(InviteView {
        invite: token.expose_secret().to_owned(),
        expires_at: humantime::format_rfc3339_seconds(expires).to_string(),
    }))
}

/// Bytes per chunk streamed to the client.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered between the file reader and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Checks `Authorization: Bearer <admin.token>` in constant time.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(expected) = &state.settings.admin.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "admin endpoints are off: set admin.token (KEEL__ADMIN__TOKEN) to use them",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if orion::util::secure_cmp(presented.as_bytes(), expected.expose_secret().as_bytes()).is_err() {
        return Err(ApiError::unauthorized("a valid admin token is required").www_authenticate());
    }
    Ok(())
}

/// `GET /admin/backup`: the store as a backup file (`application/octet-stream`).
///
/// The snapshot is written to a temporary file first, under the store's write barrier (multi-
/// tree transactions wait, for as long as a local copy takes), then streamed from it, so a slow
/// client never holds up writers.
#[tracing::instrument(skip_all)]
pub async fn backup(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let store = state.store.clone();
    let (file, info) = web::block(move || {
        let mut file = tempfile_in_tmp()?;
        let info = store.write_backup(&mut file)?;
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(0))?;
        anyhow::Ok((file, info))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    tracing::info!(entries = info.entries, trees = info.trees, "backup taken");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    actix_web::rt::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let item = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    Ok(Bytes::from(chunk))
                }
                Err(err) => Err(err),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    let body =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        );
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("x-keel-backup-entries", info.entries.to_string()))
        .streaming(body))
}

/// A new file in the system's temporary directory, already unlinked: it disappears when the
/// stream that reads it ends, whatever happens to the request.
fn tempfile_in_tmp() -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("keel-backup-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
