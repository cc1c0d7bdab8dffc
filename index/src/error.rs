//! Errors of the blocking index. Messages never contain keys (they hold personal data).

use std::path::PathBuf;

/// An error from the blocking index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The index folder could not be opened or created.
    #[error("could not open the blocking index at {}", path.display())]
    Open {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: tantivy::TantivyError,
    },
    /// A tantivy operation failed.
    #[error("blocking index operation failed")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Reading postings failed.
    #[error("reading the blocking index failed")]
    Io(#[from] std::io::Error),
}
