//! `keel vault keygen` and `keel vault rotate`.

use anyhow::Context as _;
use keel_actors::store::Store;
use keel_actors::vault::{KeyRing, MasterKey, rotate};
use secrecy::{ExposeSecret, SecretString};

use crate::configuration::{Environment, Settings};
use crate::secrets;

/// Environment variable holding the key to rotate to.
pub const NEW_KEY_VAR: &str = "KEEL_VAULT_NEW_MASTER_KEY";

/// Prints a fresh master key.
///
/// # Errors
/// The OS random source failed.
pub fn keygen() -> anyhow::Result<()> {
    println!("{}", MasterKey::generate()?.to_base64().expose_secret());
    Ok(())
}

/// Re-wraps every credential under the key in [`NEW_KEY_VAR`].
///
/// # Errors
/// The store is in use or cannot be opened, the new key is missing or malformed, or a
/// credential cannot be opened with the configured keys.
pub async fn rotate_keys(settings: &Settings) -> anyhow::Result<()> {
    // The record of the credentials is the cluster's Postgres there (the node's store holds a
    // working copy), and every node must have the same key: re-wrapping one node's sled would
    // leave the record under the old key and the node at odds with the cluster.
    if settings.cluster.record_config().is_some() {
        anyhow::bail!(
            "`keel vault rotate` re-wraps this node's store only; with cluster.postgres_url the \
             credentials are in the cluster's Postgres, sealed under the cluster's one key, and \
             rotating them there is not built: keep vault.master_key as it is on every node"
        );
    }
    let secrets = secrets::resolve(settings)?;
    let old = secrets.key_ring.current();
    let new = match std::env::var(NEW_KEY_VAR) {
        Ok(value) => MasterKey::from_base64(&SecretString::from(value)).context(NEW_KEY_VAR)?,
        Err(_) if settings.environment == Environment::Development => MasterKey::generate()?,
        Err(_) => anyhow::bail!("set {NEW_KEY_VAR} to the new key (`keel vault keygen` makes one)"),
    };
    if new.id() == old.id() {
        anyhow::bail!("{NEW_KEY_VAR} is the current key; nothing to rotate");
    }
    let config = settings.store_config();
    let store = Store::open(&config).with_context(|| {
        format!("opening {} (stop Keel first: the store allows one process)", config.path.display())
    })?;
    let old_copy = MasterKey::from_base64(&old.to_base64())?;
    let new_copy = MasterKey::from_base64(&new.to_base64())?;
    let ring = KeyRing::new(new).with_previous(old_copy);
    let report = rotate(&store, &ring, |_| true).await?;
    store.flush().await?;
    println!(
        "re-wrapped {} credential(s) ({} already under the new key); new key id {}",
        report.rewrapped,
        report.already_current,
        new_copy.id()
    );
    match settings.environment {
        Environment::Development if settings.vault.master_key.is_none() => {
            let old = MasterKey::from_base64(&old.to_base64())?;
            secrets::store_rotated_dev_keys(settings, &new_copy, &old)?;
            println!("development key files updated");
        }
        _ => println!(
            "now set KEEL__VAULT__MASTER_KEY to the new key and remove KEEL__VAULT__PREVIOUS_MASTER_KEY"
        ),
    }
    Ok(())
}
