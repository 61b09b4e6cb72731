//! Who may read Keel's files: the data directory is 0700, every file Keel writes in it (and every
//! backup) is 0600, and the process umask is 077 so that files sled and its snapshots create
//! later are private too.
//!
//! The store holds password hashes, encrypted exchange credentials and, in development, the
//! secrets themselves (`secrets/`): another local user must not read any of it. Keel tightens
//! only what it creates. A data directory that already exists with wider permissions is the
//! operator's: Keel warns at every start, naming the path and the mode, and changes nothing.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// The process file-creation mask: no permission for group or others.
pub const PRIVATE_UMASK: u32 = 0o077;
/// Mode of the data directory Keel creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files Keel creates (store files, secrets, backups).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Sets the process umask to [`PRIVATE_UMASK`]. Call it first thing in `main`, before anything
/// creates a file or thread; returns the mask it replaced.
#[cfg(unix)]
pub fn set_private_umask() -> u32 {
    use rustix::fs::Mode;
    rustix::process::umask(Mode::from_raw_mode(PRIVATE_UMASK)).as_raw_mode()
}

/// What start-up should say about a data directory with permission bits `mode`.
///
/// `Some(bits)` names the bits that group or others hold (any of read, write, search): Keel warns
/// with them. `None`: private, nothing to say.
pub fn exposed_bits(mode: u32) -> Option<u32> {
    let bits = mode & 0o077;
    (bits != 0).then_some(bits)
}

/// Creates `dir` (and missing parents) with mode 0700, or checks the one that exists.
///
/// A directory Keel creates is set to exactly 0700. An existing one is left as it is: if group
/// or others have any permission on it, this logs a warning naming the path and the mode.
///
/// # Errors
/// The directory cannot be created or its metadata read.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                if exposed_bits(mode).is_some() {
                    tracing::warn!(
                        path = %dir.display(),
                        mode = %format!("{mode:04o}"),
                        "the data directory is readable by group or others; Keel leaves it as \
                         it is: run `chmod 700` on it"
                    );
                }
            }
            #[cfg(not(unix))]
            let _ = meta;
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                builder.mode(PRIVATE_DIR_MODE);
                builder.create(dir)?;
                // The umask may have taken bits away, never added any; set exactly 0700.
                fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            }
            #[cfg(not(unix))]
            builder.create(dir)
        }
        Err(err) => Err(err),
    }
}

/// Creates (or truncates) `path` for writing with mode 0600, whatever the umask. For backups.
///
/// # Errors
/// The file cannot be created.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directory_no_one_else_can_touch_is_private() {
        for (mode, expected) in [
            (0o700, None),
            (0o500, None),
            (0o750, Some(0o050)),
            (0o755, Some(0o055)),
            (0o711, Some(0o011)),
            (0o701, Some(0o001)),
            (0o777, Some(0o077)),
            (0o1700, None),
        ] {
            assert_eq!(exposed_bits(mode), expected, "{mode:o}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_created_directory_is_0700_and_an_existing_one_is_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let created = root.path().join("a/b");
        ensure_private_dir(&created).unwrap();
        assert_eq!(fs::metadata(&created).unwrap().permissions().mode() & 0o777, 0o700);

        let existing = root.path().join("open");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&existing).unwrap();
        assert_eq!(fs::metadata(&existing).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("backup.keel");
        create_private_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
