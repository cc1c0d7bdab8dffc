//! The master person index: store, linkage engine and command-line tools.
//!
//! Records arrive from source systems (CSV batches today, the HTTP API later),
//! are normalised and prepared by `mpi-matching`, indexed under blocking keys by
//! `mpi-index`, and linked into persons by the [`engine`]. SQLite ([`store`]) is the
//! source of truth; the index is derived from it and rebuilt when behind.

pub mod alloc;
pub mod commands;
pub mod engine;
pub mod error;
pub mod eval;
pub mod input;
pub mod link;
pub mod online;
pub mod output;
pub mod priority;
mod rng;
pub mod service;
pub mod store;
pub mod synth;
pub mod workspace;

pub use crate::{
    engine::{Decision, DecisionKind, Linker},
    link::{LinkOptions, LinkReport, link},
    store::Store,
    workspace::Workspace,
};

/// Today's date from the system clock (UTC), for rejecting birth dates in the future.
pub fn today() -> mpi_matching::BirthDate {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() / 86_400)
        .unwrap_or_default();
    let (year, month, day) = store::civil_from_days(days as i64);
    mpi_matching::BirthDate { year: year as u16, month: month as u8, day: day as u8 }
}

/// The normalisation options used by every command.
pub fn normalize_options(refuse_test_nhs_numbers: bool) -> mpi_matching::NormalizeOptions {
    mpi_matching::NormalizeOptions { today: today(), refuse_test_nhs_numbers }
}
