//! The two process secrets: the JWT signing secret and the vault's master key ring.
//!
//! Production takes both from the environment (checked by `Settings`). Development generates
//! them once into `<store.path>/secrets/` (directory 0700, files 0600) and reuses them on every
//! start, so tokens survive restarts and stored credentials stay readable. The old backends
//! generated a new key on every deploy; that cannot happen here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keel_actors::vault::{KeyRing, MasterKey};
use secrecy::{ExposeSecret, SecretString};

use crate::configuration::Settings;

/// Directory under `store.path` holding development secrets.
const SECRETS_DIR: &str = "secrets";
/// File of the development JWT secret.
const JWT_FILE: &str = "jwt_secret";
/// File of the development master key.
const MASTER_KEY_FILE: &str = "vault_master_key";
/// File of the development master key a rotation moved away from.
const PREVIOUS_MASTER_KEY_FILE: &str = "vault_previous_master_key";

/// The resolved secrets.
pub struct Secrets {
    /// HS256 secret.
    pub jwt_secret: SecretString,
    /// Master keys.
    pub key_ring: KeyRing,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("key_ring", &self.key_ring).finish_non_exhaustive()
    }
}

/// Takes the secrets from the settings, generating missing ones in development.
///
/// # Errors
/// A secret file cannot be read or written, or holds a malformed value.
pub fn resolve(settings: &Settings) -> anyhow::Result<Secrets> {
    let dir = settings.store.path.join(SECRETS_DIR);
    let jwt_secret = match &settings.auth.jwt_secret {
        Some(secret) => secret.clone(),
        None => load_or_create(&dir.join(JWT_FILE), || {
            let mut bytes = [0u8; 48];
            orion::util::secure_rand_bytes(&mut bytes)
                .map_err(|_| anyhow::anyhow!("the OS random source failed"))?;
            Ok(SecretString::from(STANDARD.encode(bytes)))
        })?,
    };
    let current = match &settings.vault.master_key {
        Some(key) => key.clone(),
        None => {
            load_or_create(&dir.join(MASTER_KEY_FILE), || Ok(MasterKey::generate()?.to_base64()))?
        }
    };
    let previous = match &settings.vault.previous_master_key {
        Some(key) => Some(key.clone()),
        None => read_secret(&dir.join(PREVIOUS_MASTER_KEY_FILE))?,
    };
    let mut key_ring = KeyRing::new(MasterKey::from_base64(&current).context("vault.master_key")?);
    if let Some(previous) = previous {
        key_ring = key_ring
            .with_previous(MasterKey::from_base64(&previous).context("vault.previous_master_key")?);
    }
    Ok(Secrets { jwt_secret, key_ring })
}

/// After `keel vault rotate` in development: the new key becomes current, the old one previous.
///
/// # Errors
/// The files cannot be written.
pub fn store_rotated_dev_keys(
    settings: &Settings,
    new: &MasterKey,
    old: &MasterKey,
) -> anyhow::Result<()> {
    let dir = settings.store.path.join(SECRETS_DIR);
    write_secret(&dir.join(PREVIOUS_MASTER_KEY_FILE), &old.to_base64())?;
    write_secret(&dir.join(MASTER_KEY_FILE), &new.to_base64())
}

fn read_secret(path: &Path) -> anyhow::Result<Option<SecretString>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(SecretString::from(text.trim().to_owned()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> anyhow::Result<SecretString>,
) -> anyhow::Result<SecretString> {
    if let Some(secret) = read_secret(path)? {
        return Ok(secret);
    }
    let secret = generate()?;
    write_secret(path, &secret)?;
    tracing::info!(path = %path.display(), "generated a development secret (mode 0600)");
    Ok(secret)
}

/// Writes a secret file with mode 0600 via a temporary file and a rename, so a crash never
/// leaves half a key behind.
fn write_secret(path: &Path, secret: &SecretString) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(secret.expose_secret().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Fewest distinct characters (of a JWT secret) or bytes (of a decoded master key) a production
/// secret may have. Random base64 or hex of the documented lengths has far more; `aaaa…`,
/// `abab…` or a word repeated have fewer.
pub const MIN_DISTINCT_SYMBOLS: usize = 8;

/// Values published in Keel's own docs, scripts and tests, which anyone can read: each is
/// refused in production, compared after trimming and ignoring ASCII case. The placeholders are
/// those of docs/OPERATIONS.md, config/ and deploy/, pasted as they stand.
pub const EXAMPLE_SECRETS: &[&str] = &[
    "<at least 32 random bytes, e.g. `openssl rand -base64 48`>",
    "at least 32 random bytes, e.g. `openssl rand -base64 48`",
    "<`keel vault keygen`>",
    "<`openssl rand -base64 48`>",
    "…",
    "test-secret-test-secret-test-secret!",
    "bots-rss-only-secret-0123456789abcdef",
    "restart-bench-only-secret-0123456789abcdef",
    "stop-under-io-only-secret-0123456789",
    "ws-load-only-secret-0123456789abcdef",
    "your-256-bit-secret",
    "0123456789abcdef0123456789abcdef",
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=",
];

/// Why `text` (a secret as configured) with key material `symbols` (its bytes, or a master
/// key's decoded bytes) is too weak for production, or `None`. The answer never holds the
/// secret. Length is checked elsewhere, in every environment.
///
/// Weak means one of: a documented example value ([`EXAMPLE_SECRETS`]); fewer than
/// [`MIN_DISTINCT_SYMBOLS`] distinct symbols; a shorter block repeated (`abcabc…`); or an
/// arithmetic run (`abcdef…`, `00 01 02 …`, every step the same).
pub fn weakness(text: &str, symbols: &[u8]) -> Option<String> {
    let trimmed = text.trim();
    if EXAMPLE_SECRETS.iter().any(|example| example.eq_ignore_ascii_case(trimmed)) {
        return Some("is an example value published in Keel's docs or tests".into());
    }
    let mut seen = [false; 256];
    symbols.iter().for_each(|&b| seen[usize::from(b)] = true);
    let distinct = seen.iter().filter(|&&s| s).count();
    if distinct < MIN_DISTINCT_SYMBOLS {
        return Some(format!(
            "has only {distinct} distinct symbols (at least {MIN_DISTINCT_SYMBOLS} needed)"
        ));
    }
    let len = symbols.len();
    if (1..=len / 2).any(|p| len.is_multiple_of(p) && symbols.chunks(p).all(|c| c == &symbols[..p]))
    {
        return Some("is a shorter sequence repeated".into());
    }
    let step = |w: &[u8]| w[1].wrapping_sub(w[0]);
    if len > 2 && symbols.windows(2).all(|w| step(w) == step(&symbols[..2])) {
        return Some("is a run with a constant step".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Settings;

    #[test]
    fn weak_secrets_are_named_and_strong_ones_pass() {
        let weak = [
            "a".repeat(40),
            "ab".repeat(20),
            "abcdefg".repeat(6),
            "0123456789abcdef".repeat(3),
            "passwordpassword1passwordpassword1".to_owned(),
            (b'!'..=b'@').map(char::from).collect::<String>(),
            "TEST-SECRET-test-secret-test-secret!".to_owned(),
            " <at least 32 random bytes, e.g. `openssl rand -base64 48`> ".to_owned(),
        ];
        for secret in &weak {
            assert!(weakness(secret, secret.trim().as_bytes()).is_some(), "{secret}");
        }
        let strong = [
            "lVwZcAFkljE+4l5V88iPNti55hbrHqEs/c4Vcz4/8f6L",
            "3f9c1e07b2d84a6e5c0f7a19d3b2e8c4",
            "correct-horse-battery-staple-galaxy-ninety",
        ];
        for secret in strong {
            assert_eq!(weakness(secret, secret.as_bytes()), None, "{secret}");
        }
        let counting: Vec<u8> = (0..32).collect();
        assert!(weakness("k", &counting).is_some());
        assert!(weakness("k", &[7; 32]).is_some());
        assert!(weakness("k", &[1u8, 2, 3, 4, 5, 6, 7, 9].repeat(4)).is_some());
    }

    fn dev_settings(dir: &Path) -> Settings {
        Settings::load_with_env(None, [("KEEL__STORE__PATH".to_owned(), dir.display().to_string())])
            .unwrap()
    }

    #[test]
    fn development_secrets_are_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = dev_settings(dir.path());
        let first = resolve(&settings).unwrap();
        let second = resolve(&settings).unwrap();
        assert_eq!(first.jwt_secret.expose_secret(), second.jwt_secret.expose_secret());
        assert_eq!(first.key_ring.current().id(), second.key_ring.current().id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let secrets = dir.path().join(SECRETS_DIR);
            assert_eq!(fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o700);
            for file in [JWT_FILE, MASTER_KEY_FILE] {
                let mode = fs::metadata(secrets.join(file)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
    }

    #[test]
    fn configured_secrets_win_over_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let vars = [
            ("KEEL__STORE__PATH".to_owned(), dir.path().display().to_string()),
            ("KEEL__VAULT__MASTER_KEY".to_owned(), key.to_base64().expose_secret().to_owned()),
        ];
        let settings = Settings::load_with_env(None, vars).unwrap();
        assert_eq!(resolve(&settings).unwrap().key_ring.current().id(), key.id());
        assert!(!dir.path().join(SECRETS_DIR).join(MASTER_KEY_FILE).exists());
    }
}
