//! `keel admin reset-password EMAIL`: an operator sets a new password for an account and ends
//! every session of it.
//!
//! In cluster mode with `cluster.postgres_url` it works on that Postgres, while the nodes run:
//! they see the revocations within a second, as any other node's.
//!
//! Otherwise it works on the data directory, so Keel must be stopped: sled locks the store, and
//! opening it while a Keel runs fails with "is Keel stopped?". (A running Keel would not see the change to
//! its revocation list until restarted, which is why the command does not try to share it.)
//! The sessions are revoked as logout everywhere revokes them: their refresh tokens never work
//! again, and their access tokens are in the persisted revocation list, refused from the next
//! start until they would have expired.

use std::io::BufRead;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keel_actors::identity::pg::{PgSessions, PgUsers};
use keel_actors::identity::{
    Sessions, Users, hash_password_blocking, normalize_email, random_bytes, validate_password,
};
use keel_actors::pg::PgRecord;
use keel_actors::store::{Store, StoreConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::cli::ResetPasswordArgs;
use crate::configuration::Settings;

/// What a reset did.
#[derive(Debug)]
pub struct Reset {
    /// The account.
    pub user_id: u64,
    /// Sessions ended.
    pub sessions_ended: usize,
    /// The password, when it was generated (to hand to the owner).
    pub generated: Option<SecretString>,
}

/// `keel admin reset-password` as the CLI runs it: the password from standard input or
/// generated, the outcome printed.
///
/// # Errors
/// As [`reset_password`], and an unreadable standard input.
pub fn reset_password_command(settings: &Settings, args: &ResetPasswordArgs) -> anyhow::Result<()> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password")?;
        Some(SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned()))
    } else {
        None
    };
    let reset = match settings.cluster.record_config() {
        Some(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(reset_password_in_postgres(settings, args, password))?,
        None => reset_password(settings, args, password)?,
    };
    println!(
        "keel: the password of {} (user {}) was reset; {} session(s) ended",
        args.email.trim(),
        reset.user_id,
        reset.sessions_ended
    );
    if let Some(generated) = reset.generated {
        println!("new password: {}", generated.expose_secret());
    }
    Ok(())
}

/// Sets `password` (or a generated one) for the account with `args.email` and revokes every
/// session of it, durably.
///
/// # Errors
/// The store cannot be opened (Keel is running), no account has this email, the password breaks
/// the rules, or a write failed.
pub fn reset_password(
    settings: &Settings,
    args: &ResetPasswordArgs,
    password: Option<SecretString>,
) -> anyhow::Result<Reset> {
    let (email, password, generated) = prepare(args, password)?;
    let dir = args.store.clone().unwrap_or_else(|| settings.store.path.clone());
    let config = StoreConfig { path: dir.clone(), ..settings.store_config() };
    let store = Store::open(&config)
        .with_context(|| format!("opening the store at {} (is Keel stopped?)", dir.display()))?;
    let users = Users::new(store.clone())?;
    let Some(user) = users.by_email(&email)? else {
        bail!("no account has the email {email}");
    };
    let hash = hash_password_blocking(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    users.set_password(user.id, hash)?;
    let sessions = Sessions::new(store.clone())?.with_token_window(token_window(settings));
    let ended = sessions.revoke_all(user.id, None, REASON)?;
    store.flush_blocking()?;
    tracing::info!(user_id = user.id, sessions = ended.len(), "password reset by an operator");
    Ok(Reset { user_id: user.id, sessions_ended: ended.len(), generated })
}

/// [`reset_password`] on the cluster's Postgres (`cluster.postgres_url`); the nodes may run.
///
/// # Errors
/// Postgres cannot be reached (or its schema is newer), no account has this email, the password
/// breaks the rules, or a write failed.
pub async fn reset_password_in_postgres(
    settings: &Settings,
    args: &ResetPasswordArgs,
    password: Option<SecretString>,
) -> anyhow::Result<Reset> {
    let (email, password, generated) = prepare(args, password)?;
    let Some(config) = settings.cluster.record_config() else {
        bail!("cluster.postgres_url is not set (and cluster.enabled must be true)");
    };
    let record = PgRecord::connect(&config).await.map_err(|err| anyhow::anyhow!(err.detail()))?;
    let users = PgUsers::new(record.clone());
    let Some(user) = users.by_email(&email).await? else {
        bail!("no account has the email {email}");
    };
    let hash = tokio::task::spawn_blocking(move || hash_password_blocking(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    users.set_password(user.id, &hash).await?;
    let sessions = PgSessions::open(record, token_window(settings)).await?;
    let ended = sessions.revoke_all(user.id, None, REASON).await?;
    tracing::info!(user_id = user.id, sessions = ended.len(), "password reset by an operator");
    Ok(Reset { user_id: user.id, sessions_ended: ended.len(), generated })
}

/// Why the sessions ended, as they record it.
const REASON: &str = "password reset by an operator";

/// How long a revocation is kept: the access-token lifetime plus the leeway.
fn token_window(settings: &Settings) -> std::time::Duration {
    let auth = &settings.auth;
    std::time::Duration::from_secs(auth.access_ttl_secs + auth.leeway_secs)
}

/// The normalised email, the new password (given and checked, or generated) and the generated
/// one to show.
fn prepare(
    args: &ResetPasswordArgs,
    password: Option<SecretString>,
) -> anyhow::Result<(String, SecretString, Option<SecretString>)> {
    let email = normalize_email(&args.email).map_err(|e| anyhow::anyhow!("the email {e}"))?;
    match password {
        Some(password) => {
            if let Err(why) = validate_password(&password) {
                bail!("the new password {why}");
            }
            Ok((email, password, None))
        }
        None => {
            let bytes = random_bytes::<18>().map_err(|e| anyhow::anyhow!("{e}"))?;
            let password = SecretString::from(URL_SAFE_NO_PAD.encode(bytes));
            Ok((email, password.clone(), Some(password)))
        }
    }
}
