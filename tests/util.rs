//! Helpers: run the `mpi` binary, read its CSV outputs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (for shipped data).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped data file.
pub fn data(path: &str) -> PathBuf {
    root().join("data").join(path)
}

/// Runs `mpi` with arguments; returns the output (never panics on failure exit).
pub fn mpi<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_mpi")).args(args).output().expect("the mpi binary runs")
}

/// Runs `mpi` and asserts it succeeded; returns standard output.
#[track_caller]
pub fn mpi_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = mpi(args);
    assert!(
        output.status.success(),
        "mpi failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Reads a CSV file into rows of (column -> value).
pub fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|_| panic!("reading {}", path.display()));
    let headers = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|record| {
            let record = record.expect("row");
            headers.iter().zip(record.iter()).map(|(h, v)| (h.to_owned(), v.to_owned())).collect()
        })
        .collect()
}

/// Every record in a store, with its person, through `mpi export`.
pub fn export(store: &Path, out: &Path) -> Vec<HashMap<String, String>> {
    mpi_ok([
        "export".as_ref(),
        "--data".as_ref(),
        store.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    read_csv(out)
}

/// The header of a CSV file.
pub fn header(path: &Path) -> Vec<String> {
    let mut reader = csv::Reader::from_path(path).expect("csv");
    reader.headers().expect("header").iter().map(str::to_owned).collect()
}

/// The partition a results file describes: sets of (source, local id), order-free.
pub fn partition(rows: &[HashMap<String, String>]) -> HashSet<Vec<(String, String)>> {
    let mut clusters: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for row in rows {
        if row["decision"] == "rejected" {
            continue;
        }
        clusters
            .entry(row["person_id"].as_str())
            .or_default()
            .push((row["source_system"].clone(), row["local_id"].clone()));
    }
    clusters
        .into_values()
        .map(|mut members| {
            members.sort();
            members
        })
        .collect()
}

/// The value after `key` in `mpi eval --json` output.
pub fn json_number(text: &str, key: &str) -> f64 {
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).expect("eval --json prints JSON");
    value[key].as_f64().unwrap_or_else(|| panic!("no number {key} in {text}"))
}

/// The FEBRL column mapping from the README.
pub const FEBRL_MAP: [&str; 14] = [
    "--map",
    "rec_id=local_id",
    "--map",
    "surname=family_name",
    "--map",
    "street_number=address_line1",
    "--map",
    "address_1=address_line1",
    "--map",
    "address_2=address_line2",
    "--map",
    "suburb=town",
    "--map",
    "soc_sec_id=id:ssn",
];
