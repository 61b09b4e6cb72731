//! What can go wrong in the store, split by whether a supervisor can do anything about it.

use std::path::PathBuf;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption error.
    #[error("storage error")]
    Sled(#[from] sled::Error),
    /// The data directory could not be created or read.
    #[error("cannot use data directory {path}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stored value does not decode, or a value does not encode.
    #[error("stored value does not decode")]
    Codec(#[source] serde_json::Error),
    /// A packed value does not inflate (or, in theory, does not deflate).
    #[error("stored value does not inflate")]
    Pack(#[source] std::io::Error),
    /// A stored key or value is not what this version of Keel wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A transaction closure gave up; nothing it wrote was applied.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// The files were written by a newer Keel, whose schema this binary does not know.
    #[error(
        "the store at schema version {found} was written by a newer Keel; this binary knows up to {supported}"
    )]
    SchemaTooNew {
        /// Version recorded in the store.
        found: u32,
        /// Newest version this binary can migrate to.
        supported: u32,
    },
    /// A migration failed part-way; its version was not recorded, so it runs again next start.
    #[error("migration {version} ({name}) failed")]
    Migration {
        /// The migration's version.
        version: u32,
        /// Its name.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// Whether retrying the same operation later can succeed (a flush that hit a transient I/O
    /// error, a transaction that a concurrent change aborted). Anything else needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sled(sled::Error::Io(_)) | StoreError::Aborted(_) => true,
            StoreError::Sled(_)
            | StoreError::Io { .. }
            | StoreError::Codec(_)
            | StoreError::Pack(_)
            | StoreError::Corrupt(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Migration { .. } => false,
        }
    }
}
