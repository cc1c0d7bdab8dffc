//! Integration tests: the real `mpi` binary on real files in temporary folders.

mod cli;
mod server;
mod util;
