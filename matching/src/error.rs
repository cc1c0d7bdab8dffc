//! Errors of this crate. Messages name fields and reasons, never personal data.

/// An error from configuring or loading the matcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatchError {
    /// The decision thresholds are out of order or out of range.
    #[error("thresholds must satisfy 0 <= lower <= upper <= 1, got lower={lower} upper={upper}")]
    InvalidThresholds {
        /// The lower threshold given.
        lower: f64,
        /// The upper threshold given.
        upper: f64,
    },
    /// A model file could not be read as a model.
    #[error("invalid model file: {0}")]
    ModelFormat(String),
    /// Training had nothing to learn from.
    #[error("not enough data to train: {0}")]
    NotEnoughData(String),
}
