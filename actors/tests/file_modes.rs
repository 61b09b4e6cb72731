//! The store's files are private: with the umask Keel sets at start, a fresh data directory is
//! 0700 and everything in it, and every backup, is 0600 (directories inside 0700).
//!
//! Its own test binary because the umask is process-wide: nothing else runs in this process.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keel_actors::store::permissions::{create_private_file, set_private_umask};
use keel_actors::store::{Store, StoreConfig, trees};

fn mode(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// Every file under `dir` (recursively) with its mode.
fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        out.push((path.clone(), mode(&path)?));
        if path.is_dir() {
            walk(&path, out)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_fresh_store_and_its_backup_are_readable_by_their_owner_only() {
    set_private_umask();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let store = Store::open(&StoreConfig::new(&dir)).unwrap();
    store.tree(trees::USERS).unwrap().insert(b"k", b"v".to_vec()).unwrap();
    store.commit().await.unwrap();

    assert_eq!(mode(&dir).unwrap(), 0o700);
    let mut entries = Vec::new();
    walk(&dir, &mut entries).unwrap();
    assert!(entries.len() >= 2, "sled wrote files: {entries:?}");
    for (path, mode) in &entries {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, expected, "{}", path.display());
    }

    let backup = root.path().join("store.keelbak");
    store.write_backup(create_private_file(&backup).unwrap()).unwrap();
    assert_eq!(mode(&backup).unwrap(), 0o600);
}
