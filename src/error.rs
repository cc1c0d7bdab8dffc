//! Errors of the `mpi` crate. Messages name files, lines and fields, never values.

use std::path::PathBuf;

/// An error from the SQLite store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("store operation failed")]
    Sqlite(#[from] rusqlite::Error),
    /// The data folder could not be created.
    #[error("could not create the data folder {}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store was written by a newer version of this program.
    #[error("the store has schema version {found}, this program supports up to {supported}")]
    TooNew {
        /// Version found.
        found: usize,
        /// Newest version known.
        supported: usize,
    },
    /// A stored value could not be read back.
    #[error("record {record_id} in the store could not be read back")]
    Corrupt {
        /// The record id.
        record_id: u64,
    },
    /// A stored model is invalid.
    #[error("the stored model is invalid")]
    Model(#[source] mpi_matching::MatchError),
    /// A run's temporary file (its rows' raw values, waiting for the write) failed.
    #[error("the run's temporary file in the data folder failed")]
    TempFile(#[source] std::io::Error),
}

/// An input file that cannot be processed at all (as opposed to a bad row).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file could not be opened or read.
    #[error("could not read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is in another encoding (UTF-16, or not text at all).
    #[error("{} is not UTF-8 text ({reason}); save it as UTF-8 CSV", path.display())]
    Encoding {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: &'static str,
    },
    /// The header could not be read or lacks `local_id`.
    #[error("{} has no usable header: {reason}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `--map` entry is malformed.
    #[error("bad column mapping {entry:?}: {reason}")]
    Mapping {
        /// The mapping entry as given (column and field names, no data).
        entry: String,
        /// What is wrong.
        reason: String,
    },
}
