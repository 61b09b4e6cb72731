//! Uploaded trade files for backtests: where a user's uploads live, how a new one is named while
//! it is written (`<id>.part`) and once accepted (`<id>.dat`), the check of its first rows, and
//! the pruning of old ones.
//!
//! Everything here touches the file system: callers run it on a blocking thread.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use keel_core::market::Symbol;

use super::input::TradeReader;

/// Rows of an upload checked before it is accepted.
pub const UPLOAD_CHECK_ROWS: usize = 16;
/// The symbol CSV rows are read as while checking (a recording names its own).
const CHECK_SYMBOL: &str = "BTCUSDT";

/// Where a user's uploads are kept, under the store's directory.
pub fn uploads_dir(store_path: &Path, user_id: u64) -> PathBuf {
    store_path.join("uploads").join(user_id.to_string())
}

/// An accepted upload's file: `<dir>/<id>.dat`.
pub fn upload_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.dat"))
}

/// An upload id is what [`PendingUpload::create`] hands out: 32 lower-case hex digits (so it is
/// also a safe file name).
pub fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An upload being written: `<id>.part` until [`PendingUpload::accept`] checks it.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    /// The id the user names in a backtest's `data.upload_id`.
    pub id: String,
    partial: PathBuf,
    path: PathBuf,
}

impl PendingUpload {
    /// Creates `dir` if needed and a new, empty `<id>.part` in it, under a fresh random id.
    ///
    /// # Errors
    /// The directory or the file cannot be created.
    pub fn create(dir: &Path) -> io::Result<(Self, File)> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = upload_path(dir, &id);
        let partial = path.with_extension("part");
        std::fs::create_dir_all(dir)?;
        let file = File::create(&partial)?;
        Ok((Self { id, partial, path }, file))
    }

    /// Deletes the partial file (the upload failed or was refused before its check).
    ///
    /// # Errors
    /// The file cannot be removed.
    pub fn discard(&self) -> io::Result<()> {
        std::fs::remove_file(&self.partial)
    }

    /// Reads the first rows: accepted, the file is renamed into place (and the user's oldest
    /// uploads beyond `keep` are deleted) and its format (`csv` or `recording`) returned;
    /// refused, it is deleted and the reason returned.
    ///
    /// # Errors
    /// The file system failed (not: the file is not a trade file).
    pub fn accept(self, keep: usize) -> io::Result<Result<&'static str, String>> {
        let (partial, path) = (&self.partial, &self.path);
        let symbol = Symbol::parse(CHECK_SYMBOL).ok_or_else(|| io::Error::other("symbol"))?;
        let verdict = match TradeReader::open(partial, symbol, false) {
            Err(err) if err.kind() == io::ErrorKind::InvalidData => Err(err.to_string()),
            Err(err) => return Err(err),
            Ok(mut reader) => {
                let recording = reader.is_recording();
                let rows: Vec<_> = reader.by_ref().take(UPLOAD_CHECK_ROWS).collect();
                match rows.iter().find_map(|r| r.as_ref().err()) {
                    Some(err) => Err(format!("line {}: {}", err.line, err.reason)),
                    None if rows.is_empty() => Err("the file has no trades".to_owned()),
                    None => Ok(if recording { "recording" } else { "csv" }),
                }
            }
        };
        if verdict.is_err() {
            std::fs::remove_file(partial)?;
            return Ok(verdict.map_err(|reason| {
                reason.rsplit_once(".part: ").map_or(reason.clone(), |(_, r)| r.to_owned())
            }));
        }
        std::fs::rename(partial, path)?;
        if let Some(dir) = path.parent() {
            prune_uploads(dir, keep)?;
        }
        Ok(verdict)
    }
}

/// Deletes the oldest uploads in `dir` beyond `keep`.
fn prune_uploads(dir: &Path, keep: usize) -> io::Result<()> {
    let mut uploads = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "dat") {
            uploads.push((entry.metadata()?.modified()?, path));
        }
    }
    if uploads.len() <= keep {
        return Ok(());
    }
    uploads.sort();
    for (_, path) in &uploads[..uploads.len() - keep] {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write(dir: &Path, body: &str) -> PendingUpload {
        let (pending, mut file) = PendingUpload::create(dir).unwrap();
        file.write_all(body.as_bytes()).unwrap();
        pending
    }

    #[test]
    fn upload_ids_are_32_lower_case_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let (pending, _) = PendingUpload::create(dir.path()).unwrap();
        assert!(is_upload_id(&pending.id), "{}", pending.id);
        for bad in ["", "../../etc/passwd", &"A".repeat(32), &"0".repeat(31), &"g".repeat(32)] {
            assert!(!is_upload_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_that_is_not_trades_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let pending = write(dir.path(), "");
        let id = pending.id.clone();
        let verdict = pending.accept(10).unwrap();
        assert_eq!(verdict, Err("the file has no trades".to_owned()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{id}: nothing is left");
    }

    #[test]
    fn a_discarded_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pending = write(dir.path(), "partial");
        pending.discard().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn pruning_keeps_the_newest_uploads_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(upload_path(dir.path(), name), name).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(dir.path().join("d.part"), "in progress").unwrap();
        prune_uploads(dir.path(), 2).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["b.dat", "c.dat", "d.part"]);
    }
}
