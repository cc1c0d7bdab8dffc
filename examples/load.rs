//! A load run against `mpi serve`: many keep-alive connections sending `POST
//! /v1/resolve` (probes made from records of a CSV file) or `PUT /v1/records` (the
//! file's records sent as new records of a fresh source system), for a number of
//! seconds; then requests per second, latency percentiles and status counts.
//!
//! ```sh
//! cargo run --release --example load -- resolve --url 127.0.0.1:18090 --token $READER \
//!     --records /tmp/s1m.csv --connections 16 --seconds 30
//! cargo run --release --example load -- put --url 127.0.0.1:18090 --token $WRITER \
//!     --records /tmp/s1m.csv --source load_1 --connections 8 --seconds 15
//! ```
//!
//! No load generator to install: one thread a connection over HTTP/1.1, as plain as a
//! load run needs. Probes hold personal data only on their way to the server; nothing
//! of them is printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use mpi_matching::Field;
use serde_json::{Map, Value};

#[derive(Parser)]
struct Args {
    /// What to send.
    mode: Mode,
    /// The service's address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    url: String,
    /// An API key: a reader's for `resolve`, a writer's for `put`.
    #[arg(long)]
    token: String,
    /// A CSV file of records in the input contract's columns (`mpi synth` writes one).
    #[arg(long)]
    records: PathBuf,
    /// Connections, each its own thread.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long to send for.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Distinct probes (`resolve`) or records (`put`) taken from the file.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// The source system `put` stores its records under: a fresh one for each run, so
    /// every record is new.
    #[arg(long, default_value = "load")]
    source: String,
    /// Seeds which records are taken.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// `POST /v1/resolve` with a record's given and family name, birth date and postcode.
    Resolve,
    /// `PUT /v1/records/{source}/{n}` with all of a record's fields, each record once.
    Put,
}

/// What a probe carries.
const PROBE: &[Field] = &[Field::GivenName, Field::FamilyName, Field::DateOfBirth, Field::Postcode];

/// One request: method, path and JSON body.
struct Request {
    method: &'static str,
    path: String,
    body: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let requests = Arc::new(requests(&args)?);
    println!("{} distinct requests from {}", requests.len(), args.records.display());
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.connections)
        .map(|_| {
            let (requests, next, stop) = (requests.clone(), next.clone(), stop.clone());
            let (url, token) = (args.url.clone(), args.token.clone());
            let once = matches!(args.mode, Mode::Put);
            std::thread::spawn(move || connection(&url, &token, &requests, &next, &stop, once))
        })
        .collect();
    // Until the time is up, or `put` has sent every record.
    let all_sent =
        || matches!(args.mode, Mode::Put) && next.load(Ordering::Relaxed) >= requests.len();
    while started.elapsed() < Duration::from_secs(args.seconds) && !all_sent() {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for thread in threads {
        let done = thread.join().expect("connection thread")?;
        latencies.extend(done.latencies);
        for (status, count) in done.statuses {
            *statuses.entry(status).or_insert(0usize) += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        latencies[index - 1] as f64 / 1000.0
    };
    if latencies.is_empty() {
        bail!("no request was answered");
    }
    println!(
        "{} requests in {elapsed:.1} s: {:.0}/s over {} connections",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        args.connections
    );
    println!(
        "latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(1.0)
    );
    let statuses: Vec<String> =
        statuses.iter().map(|(status, count)| format!("{status}: {count}")).collect();
    println!("statuses: {}", statuses.join(", "));
    Ok(())
}

/// The requests, from `--requests` records taken at random (seeded) from the file.
fn requests(args: &Args) -> anyhow::Result<Vec<Request>> {
    let mut reader = csv::Reader::from_path(&args.records)
        .with_context(|| format!("reading {}", args.records.display()))?;
    let header = reader.headers()?.clone();
    let mut rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    if rows.is_empty() {
        bail!("{} holds no records", args.records.display());
    }
    // A seeded shuffle (SplitMix64), so runs send the same requests.
    let mut state = args.seed;
    let mut random = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..rows.len()).rev() {
        rows.swap(i, (random() % (i as u64 + 1)) as usize);
    }
    rows.truncate(args.requests);
    // A probe's fields, or every demographic column the file has.
    let columns: Vec<(&str, usize)> = header
        .iter()
        .enumerate()
        .filter_map(|(column, name)| {
            let field = Field::from_column(name)?;
            let wanted = match args.mode {
                Mode::Resolve => PROBE.contains(&field),
                Mode::Put => !matches!(field, Field::SourceSystem | Field::LocalId),
            };
            wanted.then_some((field.as_str(), column))
        })
        .collect();
    Ok(rows
        .iter()
        .enumerate()
        .map(|(n, row)| {
            let body: Map<String, Value> = columns
                .iter()
                .filter_map(|&(field, column)| {
                    let value = row.get(column).filter(|value| !value.trim().is_empty())?;
                    Some((field.to_owned(), Value::from(value)))
                })
                .collect();
            let body = Value::Object(body).to_string();
            match args.mode {
                Mode::Resolve => Request { method: "POST", path: "/v1/resolve".to_owned(), body },
                Mode::Put => Request {
                    method: "PUT",
                    path: format!("/v1/records/{}/{n}", args.source),
                    body,
                },
            }
        })
        .collect())
}

/// What one connection measured: each answered request's latency in microseconds, and
/// how many of each status it got.
struct Done {
    latencies: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, usize>,
}

/// Sends requests on one keep-alive connection until told to stop: the next one in
/// turn, round the list again (`resolve`) or each once (`put`).
fn connection(
    url: &str,
    token: &str,
    requests: &[Request],
    next: &AtomicUsize,
    stop: &AtomicBool,
    once: bool,
) -> anyhow::Result<Done> {
    let stream = TcpStream::connect(url).with_context(|| format!("connecting to {url}"))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut done = Done { latencies: Vec::new(), statuses: Default::default() };
    while !stop.load(Ordering::Relaxed) {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if once && n >= requests.len() {
            break;
        }
        let request = &requests[n % requests.len()];
        let sent = Instant::now();
        write!(
            writer,
            "{} {} HTTP/1.1\r\nHost: {url}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            request.method,
            request.path,
            request.body.len(),
            request.body
        )?;
        let status = read_response(&mut reader)?;
        done.latencies.push(sent.elapsed().as_micros() as u64);
        *done.statuses.entry(status).or_insert(0) += 1;
    }
    Ok(done)
}

/// Reads one response (its body by Content-Length, or chunked) and gives its status.
fn read_response(reader: &mut BufReader<TcpStream>) -> anyhow::Result<u16> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the server closed the connection");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.contains("chunked");
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)?;
            // The chunk and its line end (after the last, empty chunk: the final one).
            std::io::copy(&mut reader.by_ref().take(size as u64 + 2), &mut std::io::sink())?;
            if size == 0 {
                break;
            }
        }
    } else {
        std::io::copy(&mut reader.by_ref().take(length as u64), &mut std::io::sink())?;
    }
    Ok(status)
}
