//! `keel backup FILE` and `keel restore FILE`: the operator's side of store backups.
//!
//! A running Keel holds sled's lock on its directory, so an online backup is taken by the server
//! (`GET /admin/backup`, guarded by `admin.token`) and written here atomically: into a temporary
//! file beside FILE, synced, verified, then renamed over FILE. `--offline` reads a stopped
//! Keel's store directly. The file is 0600 whatever the umask: it holds everything the store does. Restore needs Keel stopped (see `keel_actors::store::backup`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use keel_actors::store::backup::{self, BackupInfo};
use keel_actors::store::permissions;
use secrecy::ExposeSecret;

use crate::cli::{BackupArgs, RestoreArgs};
use crate::configuration::Settings;

/// How long an online backup may take before the client gives up.
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The base URL of the local Keel described by `settings` (a wildcard host is reached on
/// loopback).
///
/// # Errors
/// `server.host` is not an address.
pub fn local_url(settings: &Settings) -> anyhow::Result<String> {
    let mut address = settings.listen_address()?;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{address}"))
}

/// `keel backup`.
///
/// # Errors
/// No admin token is configured, the server refused or could not be reached, the store could
/// not be read (offline), or FILE could not be written.
pub async fn backup(settings: &Settings, args: &BackupArgs) -> anyhow::Result<()> {
    let partial = partial_path(&args.file);
    let result = if args.offline {
        let out = permissions::create_private_file(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let store = settings.store.path.clone();
        tokio::task::spawn_blocking(move || backup::write_offline(&store, out))
            .await?
            .with_context(|| format!("backing up the store at {}", settings.store.path.display()))
            .map(|_| ())
    } else {
        let url = match &args.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => local_url(settings)?,
        };
        download(settings, &url, &partial).await
    };
    let info = result.and_then(|()| finish(&partial, &args.file));
    match info {
        Ok(info) => {
            println!(
                "keel: wrote {} ({} trees, {} entries, schema version {})",
                args.file.display(),
                info.trees,
                info.entries,
                info.schema_version
            );
            Ok(())
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// A temporary name beside `file`, so the final rename stays on one file system.
fn partial_path(file: &Path) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

async fn download(settings: &Settings, url: &str, partial: &Path) -> anyhow::Result<()> {
    let Some(token) = &settings.admin.token else {
        bail!(
            "set admin.token (KEEL__ADMIN__TOKEN) to the running Keel's admin token, or stop \
             Keel and use --offline"
        );
    };
    keel_venues::tls::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(BACKUP_TIMEOUT).build()?;
    let endpoint = format!("{url}{}", crate::http::admin::BACKUP_PATH);
    let mut response = client
        .get(&endpoint)
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .with_context(|| format!("cannot reach Keel at {url} (is it running?)"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("Keel answered {status}: {message}");
    }
    let mut out = permissions::create_private_file(partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    while let Some(chunk) = response.chunk().await.context("receiving the backup")? {
        out.write_all(&chunk).with_context(|| format!("writing {}", partial.display()))?;
    }
    out.sync_all()?;
    Ok(())
}

/// Verifies the written file, then renames it into place and syncs its directory.
fn finish(partial: &Path, file: &Path) -> anyhow::Result<BackupInfo> {
    File::open(partial)?.sync_all()?;
    let info = backup::verify(partial).context("the backup just written does not verify")?;
    std::fs::rename(partial, file).with_context(|| format!("renaming to {}", file.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(info)
}

/// `keel restore`.
///
/// # Errors
/// The file is refused (corrupt, truncated, newer schema), the store is in use or not empty
/// without `--force`, or the import failed.
pub fn restore(settings: &Settings, args: &RestoreArgs) -> anyhow::Result<()> {
    let target = args.store.clone().unwrap_or_else(|| settings.store.path.clone());
    let (info, kept) = backup::restore(&args.file, &target, args.force)
        .with_context(|| format!("restoring {} into {}", args.file.display(), target.display()))?;
    println!(
        "keel: restored {} into {} ({} trees, {} entries, schema version {})",
        args.file.display(),
        target.display(),
        info.trees,
        info.entries,
        info.schema_version
    );
    if let Some(kept) = kept {
        println!("keel: the previous store is kept at {}", kept.display());
    }
    Ok(())
}
