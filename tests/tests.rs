//! Integration tests: the real `mpi` binary on real files in temporary folders.

mod cli;
mod util;
