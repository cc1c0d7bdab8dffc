//! `mpi`: the master person index command line.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mpi::commands;
use mpi::input::{
    ColumnMap, ColumnUse, Encoding, ReadFile, SourceDates, is_fhir, read_csv, read_fhir,
};
use mpi::link::{DEFAULT_MAX_CANDIDATES, LinkOptions, ModelSource, Progress};
use mpi::output;
use mpi::{Workspace, normalize_options};
use mpi_matching::{DateOrder, Model, Thresholds};

// mimalloc: far less fragmentation than the system allocator when rayon threads
// allocate millions of small values (a fifth less peak memory and time on a million
// records, see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Master person index and record linkage for health and social care records.
#[derive(Debug, Parser)]
#[command(name = "mpi", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile CSV files against the store: every row gets a person id and a decision.
    Link(LinkArgs),
    /// Train a new model version on the store's own records (no labels needed).
    Train(TrainArgs),
    /// Measure the store's persons against a truth file.
    Eval(EvalArgs),
    /// Explain the score of two stored records, field by field.
    Explain(ExplainArgs),
    /// Write every record in the store with its person id.
    Export(ExportArgs),
    /// Generate synthetic UK care records and a truth file.
    Synth(SynthArgs),
    /// Serve the identity HTTP API over the store.
    Serve(ServeArgs),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    #[command(flatten)]
    decisions: DecisionArgs,
    /// Source systems from most to least trusted, comma-separated, for golden records
    /// (or `source_trust = a, b` in the config file).
    #[arg(long, value_delimiter = ',')]
    source_trust: Vec<String>,
    /// Source systems whose NHS numbers are verified (a PDS trace), comma-separated:
    /// their NHS number wins in golden records (or `verified_sources = ...`).
    #[arg(long, value_delimiter = ',')]
    verified_sources: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its token (once: the store keeps only a hash).
    Create {
        /// The data folder.
        #[arg(long, default_value = "./mpi-data")]
        data: PathBuf,
        /// reader, writer, steward or admin.
        #[arg(long)]
        role: String,
        /// A name for people (the system or person it is for).
        #[arg(long)]
        name: String,
    },
    /// List keys (never their tokens).
    List {
        /// The data folder.
        #[arg(long, default_value = "./mpi-data")]
        data: PathBuf,
    },
    /// Revoke a key by id or name.
    Revoke {
        /// The key's id or name.
        key: String,
        /// The data folder.
        #[arg(long, default_value = "./mpi-data")]
        data: PathBuf,
    },
}

#[derive(Debug, Args)]
struct DataArgs {
    /// The data folder (SQLite store and blocking index).
    #[arg(long, default_value = "./mpi-data")]
    data: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Refuse NHS numbers starting 999 (test and synthetic numbers).
    #[arg(long)]
    refuse_test_nhs_numbers: bool,
}

/// The model and decision settings `link` and `serve` share.
#[derive(Debug, Args)]
struct DecisionArgs {
    /// Use this model file instead of the store's.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A config file of `key = value` lines: upper, lower, max_candidates (and, for
    /// serve, source_trust and verified_sources).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Upper threshold: link at or above this probability.
    #[arg(long)]
    upper: Option<f64>,
    /// Lower threshold: a new person below this probability; review in between.
    #[arg(long)]
    lower: Option<f64>,
    /// Most candidates per record from the blocking index.
    #[arg(long)]
    max_candidates: Option<usize>,
}

/// The source system `--source` gives each file, if any: `FILE=NAME` entries name one
/// file's (FILE as it was given on the command line), an entry without `=` every other
/// file's.
fn file_sources(files: &[PathBuf], entries: &[String]) -> anyhow::Result<Vec<Option<String>>> {
    let mut default: Option<&str> = None;
    let mut named: Vec<(&Path, &str)> = Vec::new();
    for entry in entries {
        let for_file = entry
            .split_once('=')
            .filter(|(file, _)| files.iter().any(|path| path.as_path() == Path::new(file)));
        match for_file {
            Some((file, name)) => named.push((Path::new(file), name)),
            None if entry.contains('=') => {
                bail!("--source {entry}: no file {:?} in this run", entry.split('=').next())
            }
            None if default.is_some() => bail!("--source NAME given twice: one name for all files"),
            None => default = Some(entry),
        }
    }
    let sources = files
        .iter()
        .map(|path| {
            named
                .iter()
                .find(|(file, _)| *file == path.as_path())
                .map(|(_, name)| *name)
                .or(default)
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .collect();
    Ok(sources)
}

#[derive(Debug, Args)]
struct LinkArgs {
    /// Files to reconcile, together, in order: CSV, or FHIR R4 Patients one a line
    /// (`.ndjson`, as FHIR Bulk Data export writes them) or in a Bundle (`.json`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Results file; FILE.reviews.csv and FILE.errors.csv are written beside it.
    #[arg(long, default_value = "results.csv")]
    out: PathBuf,
    /// Source system for files without a source_system column: NAME for every file, or
    /// FILE=NAME for one of them (repeatable; default: the file's name without its
    /// extension).
    #[arg(long, value_name = "NAME or FILE=NAME")]
    source: Vec<String>,
    /// Column mapping COLUMN=FIELD, FIELD a canonical column or id:SYSTEM (repeatable).
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    map: Vec<String>,
    /// A file of COLUMN=FIELD lines.
    #[arg(long)]
    map_file: Option<PathBuf>,
    /// The files' character encoding: utf-8, or windows-1252 (also latin1), as Excel
    /// saves "CSV (Comma delimited)" on a UK Windows machine.
    #[arg(long, default_value = "utf-8", value_parser = parse_encoding)]
    encoding: Encoding,
    /// The order of day and month in dates of numbers: auto (day first, as the UK
    /// writes them, unless more of a source system's dates can only be month first, as
    /// a US locale exports them), day-first or month-first.
    #[arg(long, default_value = "auto", value_parser = parse_dates)]
    dates: Dates,
    #[command(flatten)]
    decisions: DecisionArgs,
    /// Score and report without writing anything to the store.
    #[arg(long)]
    dry_run: bool,
    /// Fail the whole run, writing nothing, if any row is rejected.
    #[arg(long)]
    strict: bool,
    /// Seed for training's random pairs.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Send rows one at a time through the online path (for checking batch/online agreement).
    #[arg(long, hide = true)]
    online: bool,
}

#[derive(Debug, Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Seed for the random pairs.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the model to this JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Most candidates per record from the blocking index.
    #[arg(long, default_value_t = DEFAULT_MAX_CANDIDATES)]
    max_candidates: usize,
}

#[derive(Debug, Args)]
struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Truth file: source_system, local_id, person_id[, hard_group].
    #[arg(long)]
    truth: Vec<PathBuf>,
    /// Measure this results file instead of the store: any CSV with source_system,
    /// local_id and person_id columns (`mpi link`'s or `mpi export`'s output, or another
    /// linker's clusters written that way). Rows with an empty person_id count as absent.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Most candidates per record from the blocking index.
    #[arg(long, default_value_t = DEFAULT_MAX_CANDIDATES)]
    max_candidates: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Write the true pairs that blocking never made candidates to this CSV file (two
    /// records' source_system and local_id a line), for `mpi explain` to read pair by
    /// pair.
    #[arg(long, value_name = "FILE", conflicts_with = "results")]
    unblocked: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// First record, SOURCE:LOCAL_ID.
    first: String,
    /// Second record, SOURCE:LOCAL_ID.
    second: String,
    #[command(flatten)]
    data: DataArgs,
    /// Use this model file instead of the store's.
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output CSV file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Number of people.
    #[arg(long)]
    people: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records file.
    #[arg(long)]
    out: PathBuf,
    /// Truth file (default: OUT with `_truth` before the extension).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Adds a `hospital_number` column: one number per person, given out in sequence,
    /// on six records in ten, one in a hundred of them typed with a digit wrong (load
    /// it with `--map hospital_number=id:hosp`). The other columns do not change.
    #[arg(long)]
    hospital_numbers: bool,
    /// Adds a `previous_family_name` column: a married person's former family name on
    /// half the health records and a quarter of the council and provider ones made
    /// under the new name, as systems that keep previous names hold it. The other
    /// columns do not change.
    #[arg(long)]
    previous_names: bool,
    /// Writes some values as real UK files hold them: `Queen's Road`, `12/07/1980
    /// 00:00`, `12th July 1980`, a spreadsheet's serial date (`29414`), `NHS No: ...`,
    /// `SMITH (DECEASED)`, `O Brien`, two phone numbers, an extension, `Tel: ...`,
    /// `LS1 OAB` for `LS1 0AB`, no fixed abode (`ZZ99 3VZ`), and numbers as a spreadsheet
    /// exports them (`9434765919.0`, a phone without its leading zero), and the postcode
    /// at the end of the town's line. The people and the truth file do not change.
    #[arg(long)]
    real_world_forms: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        default_sigpipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets a closed standard output end the process quietly, as other command-line tools
/// do (`mpi explain A B | head`), instead of a panic in `println!`: Rust starts with
/// SIGPIPE ignored, so each write fails. Not for `mpi serve`, whose writes to closed
/// sockets must fail, not kill it. A run ended so is as safe as one interrupted: the
/// store commits or rolls back whole, and the index is rebuilt from it.
#[allow(unsafe_code)]
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition touches no memory of ours, and
    // runs before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Link(args) => link(args),
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Explain(args) => explain(args),
        Command::Export(args) => export(args),
        Command::Synth(args) => synth(args),
        Command::Serve(args) => serve(args),
        Command::Keys(command) => keys(command),
    }
}

/// Thresholds and candidate limit from flags, then the config file, then defaults.
fn decision_settings(args: &DecisionArgs) -> Result<(Thresholds, usize)> {
    let (upper, lower, max_candidates) = (args.upper, args.lower, args.max_candidates);
    let config = match args.config.as_deref() {
        Some(path) => read_config(path)?,
        None => ConfigFile::default(),
    };
    let thresholds = Thresholds {
        upper: upper.or(config.upper).unwrap_or(Thresholds::DEFAULT.upper),
        lower: lower.or(config.lower).unwrap_or(Thresholds::DEFAULT.lower),
    }
    .validate()?;
    let max_candidates = max_candidates.or(config.max_candidates).unwrap_or(DEFAULT_MAX_CANDIDATES);
    if max_candidates == 0 {
        bail!("--max-candidates must be at least 1");
    }
    Ok((thresholds, max_candidates))
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let (thresholds, max_candidates) = decision_settings(&args.decisions)?;
    let workspace = open_workspace(&args.data)?;
    let model = match args.decisions.model.as_deref().map(read_model).transpose()? {
        Some(model) => model,
        None => match workspace.store.latest_model()? {
            Some(model) => model,
            None => {
                tracing::warn!(
                    "the store has no trained model yet: serving with the shipped default"
                );
                mpi::link::default_model()
            }
        },
    };
    let n_records = workspace.linker.entries.len();
    let (mut engine, store) =
        mpi::online::Engine::new(workspace, model, thresholds, max_candidates)
            .context("starting the engine")?;
    let config = match &args.decisions.config {
        Some(path) => read_config(path)?,
        None => ConfigFile::default(),
    };
    let flag_or_config = |flag: &[String], configured: Vec<String>| {
        if flag.is_empty() {
            configured
        } else {
            flag.iter().map(|source| source.trim().to_owned()).collect()
        }
    };
    engine.source_trust = flag_or_config(&args.source_trust, config.source_trust);
    engine.verified_sources = flag_or_config(&args.verified_sources, config.verified_sources);
    let audit_store = mpi::Store::open(&args.data.data).context("opening the audit connection")?;
    // Appends need only a small page cache.
    audit_store.set_cache_mib(8)?;
    let checkpointer =
        mpi::Store::open(&args.data.data).context("opening the checkpoint connection")?;
    let service = std::sync::Arc::new(
        mpi::service::Service::new(engine, store, audit_store, checkpointer)
            .context("configuring the store connections")?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = mpi::service::bind(args.bind)
            .await
            .with_context(|| format!("binding {}", args.bind))?;
        let address = listener.local_addr().context("reading the bound address")?;
        tracing::info!(%address, n_records, "serving");
        println!("mpi serve listening on http://{address}");
        std::io::stdout().flush().ok();
        mpi::service::serve(listener, service, mpi::service::shutdown_signal())
            .await
            .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn keys(command: KeysCommand) -> Result<ExitCode> {
    let open = |data: &Path| {
        mpi::Store::open(data).with_context(|| format!("opening the store in {}", data.display()))
    };
    match command {
        KeysCommand::Create { data, role, name } => {
            let role = mpi::service::Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}: use reader, writer, steward or admin")
            })?;
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let mut store = open(&data)?;
            let (_, token) = mpi::service::create_api_key(&mut store, role, &name)?;
            println!("{token}");
        }
        KeysCommand::List { data } => {
            let store = open(&data)?;
            println!("{:<36}  {:<8}  {:<20}  {:<20}  name", "id", "role", "created", "revoked");
            for key in store.api_keys()? {
                println!(
                    "{:<36}  {:<8}  {:<20}  {:<20}  {}",
                    key.id,
                    key.role,
                    key.created_at,
                    key.revoked_at.as_deref().unwrap_or("-"),
                    key.name
                );
            }
        }
        KeysCommand::Revoke { key, data } => {
            let mut store = open(&data)?;
            match store.revoke_api_key(&key)? {
                0 => bail!("no live key with id or name {key:?}"),
                n => println!("revoked {n} key(s)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the thread count")?;
    }
    Ok(())
}

fn open_workspace(data: &DataArgs) -> Result<Workspace> {
    set_threads(data.threads)?;
    open_data_folder(data)
}

/// [`open_workspace`] once the thread count is set.
fn open_data_folder(data: &DataArgs) -> Result<Workspace> {
    Workspace::open(&data.data, normalize_options(data.refuse_test_nhs_numbers))
        .with_context(|| format!("opening the data folder {}", data.data.display()))
}

fn read_model(path: &Path) -> Result<Model> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the model {}", path.display()))?;
    Model::from_json(&text).with_context(|| format!("reading the model {}", path.display()))
}

/// A progress bar on standard error, drawn only on a terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn stage(&self, name: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(name.to_owned());
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

#[derive(Debug, Default)]
struct ConfigFile {
    upper: Option<f64>,
    lower: Option<f64>,
    max_candidates: Option<usize>,
    source_trust: Vec<String>,
    verified_sources: Vec<String>,
}

fn source_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|source| !source.is_empty()).map(str::to_owned).collect()
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config {}", path.display()))?;
    let mut config = ConfigFile::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').with_context(|| {
            format!("{} line {}: expected key = value", path.display(), number + 1)
        })?;
        let value = value.trim();
        let bad =
            || format!("{} line {}: bad value for {}", path.display(), number + 1, key.trim());
        match key.trim() {
            "upper" => config.upper = Some(value.parse().with_context(bad)?),
            "lower" => config.lower = Some(value.parse().with_context(bad)?),
            "max_candidates" => config.max_candidates = Some(value.parse().with_context(bad)?),
            "source_trust" => config.source_trust = source_list(value),
            "verified_sources" => config.verified_sources = source_list(value),
            other => bail!("{} line {}: unknown key {other:?}", path.display(), number + 1),
        }
    }
    Ok(config)
}

fn parse_encoding(name: &str) -> Result<Encoding, String> {
    match name.to_ascii_lowercase().replace('_', "-").as_str() {
        "utf-8" | "utf8" => Ok(Encoding::Utf8),
        "windows-1252" | "cp1252" | "latin1" | "latin-1" | "iso-8859-1" => {
            Ok(Encoding::Windows1252)
        }
        _ => Err("expected utf-8 or windows-1252".to_owned()),
    }
}

/// `--dates`: an order, or `None` to find it from the dates (auto).
#[derive(Clone, Copy, Debug)]
struct Dates(Option<DateOrder>);

fn parse_dates(name: &str) -> Result<Dates, String> {
    match name.to_ascii_lowercase().replace('_', "-").as_str() {
        "auto" => Ok(Dates(None)),
        "day-first" | "dmy" => Ok(Dates(Some(DateOrder::DayFirst))),
        "month-first" | "mdy" => Ok(Dates(Some(DateOrder::MonthFirst))),
        _ => Err("expected auto, day-first or month-first".to_owned()),
    }
}

/// What the summary says of how a file was read.
struct FileSummary {
    columns: Vec<ColumnUse>,
    delimiter: u8,
    date_orders: Vec<SourceDates>,
}

/// The summary's lines on a file's columns: those read by a common name (so a user
/// can check "Forename" became the given name) and those not read at all. Nothing when
/// every column has its canonical name.
fn write_columns(
    out: &mut impl Write,
    path: &Path,
    file: &FileSummary,
    name_the_file: bool,
) -> std::io::Result<()> {
    let columns = &file.columns;
    let of_file = if name_the_file {
        format!(" of {}", path.file_name().unwrap_or(path.as_os_str()).to_string_lossy())
    } else {
        String::new()
    };
    let recognised: Vec<String> = columns
        .iter()
        .filter_map(|column| match column {
            ColumnUse::Recognised(name, field) => Some(format!("{name} as {field}")),
            _ => None,
        })
        .collect();
    let separator = match file.delimiter {
        b',' => None,
        b'\t' => Some("tabs"),
        b';' => Some("semicolons"),
        _ => Some("bars (|)"),
    };
    if let Some(separator) = separator {
        writeln!(out, "  columns{of_file} separated by {separator}")?;
    }
    if !recognised.is_empty() {
        writeln!(out, "  columns{of_file} read by their usual names: {}", recognised.join(", "))?;
    }
    for source in &file.date_orders {
        let (name, month_only) = (&source.source_system, source.month_only);
        if source.order == DateOrder::MonthFirst {
            let day_only = match source.day_only {
                0 => "none".to_owned(),
                n => n.to_string(),
            };
            writeln!(
                out,
                "  dates{of_file} of {name} read month first: {month_only} can only be read so, \
                 {day_only} only day first (--dates day-first reads them day first)"
            )?;
        } else {
            writeln!(
                out,
                "  dates{of_file} of {name} read day first: {month_only} can only be read month \
                 first and are ignored (see the errors file), {} only day first",
                source.day_only
            )?;
        }
    }
    let ignored: Vec<&str> = columns
        .iter()
        .filter_map(|column| match column {
            ColumnUse::Ignored(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if !ignored.is_empty() {
        writeln!(
            out,
            "  columns{of_file} not read: {} (map them with --map COLUMN=FIELD)",
            ignored.join(", ")
        )?;
    }
    Ok(())
}

/// A file whose columns give nothing to match on makes every row a new person: say so
/// before the run, on standard error.
fn warn_of_unread_demographics(path: &Path, file: &ReadFile) {
    if file.matching_columns == 0 && !file.rows.is_empty() {
        eprintln!(
            "warning: {}: no column gives a name, birth date, NHS number, address or other \
             identifier, so every row will be a new person; map the file's columns with \
             --map COLUMN=FIELD",
            path.display()
        );
    }
}

fn link(args: LinkArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (thresholds, max_candidates) = decision_settings(&args.decisions)?;
    if args.online && args.dry_run {
        bail!("--online and --dry-run cannot be combined");
    }
    let mut map = ColumnMap::parse(&args.map)?;
    if let Some(path) = &args.map_file {
        map.extend(ColumnMap::from_file(path)?);
    }
    let model = args.decisions.model.as_deref().map(read_model).transpose()?;
    // Before reading: files are read on the worker threads too.
    set_threads(args.data.threads)?;

    // Read every file first: a malformed file fails the run before anything is written.
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    let mut columns = Vec::new();
    let sources = file_sources(&args.files, &args.source)?;
    for (index, (path, source)) in args.files.iter().zip(&sources).enumerate() {
        let source = source.as_deref();
        let file = if is_fhir(path) {
            read_fhir(path, index, source)?
        } else {
            read_csv(path, index, &map, source, args.encoding, args.dates.0)?
        };
        warn_of_unread_demographics(path, &file);
        columns.push(FileSummary {
            columns: file.columns,
            delimiter: file.delimiter,
            date_orders: file.date_orders,
        });
        if rows.is_empty() {
            // One file (the usual case): its rows, not a copy of them.
            rows = file.rows;
        } else {
            rows.extend(file.rows);
        }
        rejected.extend(file.rejected);
    }
    if args.strict && !rejected.is_empty() {
        for error in rejected.iter().take(20) {
            eprintln!(
                "{} line {}: {}: {}",
                args.files[error.file].display(),
                error.line,
                error.field,
                error.reason
            );
        }
        bail!("{} row(s) rejected under --strict; nothing was written", rejected.len());
    }

    // The output files are made before the store is touched: a path that cannot be
    // written fails the run with the store as it was.
    let reviews_path = output::sibling(&args.out, ".reviews.csv");
    let errors_path = output::sibling(&args.out, ".errors.csv");
    let create =
        |path: &Path| File::create(path).with_context(|| format!("creating {}", path.display()));
    let (results_file, reviews_file, errors_file) =
        (create(&args.out)?, create(&reviews_path)?, create(&errors_path)?);

    // The files' bytes and the readers' buffers go back before the store is loaded.
    mpi::alloc::release_freed_memory();
    let mut workspace = open_data_folder(&args.data)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress = Bar(bar);
    let options = LinkOptions {
        thresholds,
        max_candidates,
        dry_run: args.dry_run,
        model,
        seed: args.seed,
        online: args.online,
    };
    let report = mpi::link(&mut workspace, rows, &rejected, &options, &progress)?;
    progress.0.finish_and_clear();

    let write = |(path, file): (&Path, File),
                 what: &dyn Fn(BufWriter<File>) -> csv::Result<()>|
     -> Result<()> {
        what(BufWriter::new(file)).with_context(|| format!("writing {}", path.display()))
    };
    // The results (a row for every input row) on one thread, the rest on another.
    let (results, others) = std::thread::scope(|scope| {
        let results = scope.spawn(|| {
            write((&args.out, results_file), &|out| {
                output::write_results(out, &report, &workspace.linker, &args.files)
            })
        });
        let others = write((&reviews_path, reviews_file), &|out| {
            output::write_reviews(out, &report, &workspace.linker)
        })
        .and_then(|()| {
            write((&errors_path, errors_file), &|out| {
                output::write_errors(out, &report, &workspace.linker, &rejected, &args.files)
            })
        });
        (results.join(), others)
    });
    results.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    others?;

    let mut stdout = std::io::stdout().lock();
    let decided = (report.n_linked + report.n_new + report.n_review).max(1);
    writeln!(
        stdout,
        "{}",
        if args.dry_run { "mpi link (dry run: nothing written)" } else { "mpi link" }
    )?;
    writeln!(stdout, "  rows read          {:>10}", report.n_rows)?;
    writeln!(stdout, "  rejected           {:>10}", report.n_rejected)?;
    for (path, columns) in args.files.iter().zip(&columns) {
        write_columns(&mut stdout, path, columns, args.files.len() > 1)?;
    }
    if workspace.rebuilt_index {
        writeln!(stdout, "  blocking index     rebuilt from the store (it was missing or behind)")?;
    }
    if report.n_repeated > 0 {
        writeln!(
            stdout,
            "  repeated in input  {:>10}  (the last row of a record wins)",
            report.n_repeated
        )?;
    }
    if report.n_unchanged > 0 {
        writeln!(
            stdout,
            "  unchanged          {:>10}  (re-sent with the same values)",
            report.n_unchanged
        )?;
    }
    writeln!(
        stdout,
        "  values ignored     {:>10}  (unusable values, see the errors file)",
        report.n_issues
    )?;
    writeln!(stdout, "  auto-links         {:>10}", report.n_linked)?;
    writeln!(stdout, "  new persons        {:>10}", report.n_new)?;
    writeln!(
        stdout,
        "  reviews            {:>10}  ({:.2}% of decided records)",
        report.n_review,
        100.0 * report.n_review as f64 / decided as f64
    )?;
    // What the steward's queue holds, by reason (most first).
    let mut by_reason: Vec<(&str, usize)> = Vec::new();
    for review in &report.reviews {
        match by_reason.iter_mut().find(|(code, _)| *code == review.reason.code()) {
            Some((_, count)) => *count += 1,
            None => by_reason.push((review.reason.code(), 1)),
        }
    }
    by_reason.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (code, count) in by_reason {
        writeln!(stdout, "{count:>31}  {code}")?;
    }
    writeln!(stdout, "  persons in store   {:>10}", report.n_persons)?;
    writeln!(stdout, "  records in store   {:>10}", report.n_records)?;
    writeln!(
        stdout,
        "  candidate pairs    {:>10}  ({:.2} per record)",
        report.n_pairs,
        report.n_pairs as f64 / decided as f64
    )?;
    let model_note = match &report.model_source {
        Some(ModelSource::File) => "given with --model".to_owned(),
        Some(ModelSource::Store) => "the store's latest".to_owned(),
        Some(ModelSource::Trained) => {
            "trained now on the store's records (EM, no labels)".to_owned()
        }
        Some(ModelSource::Default(why)) => {
            format!("the shipped default: too few records to train ({why})")
        }
        None => "none".to_owned(),
    };
    writeln!(
        stdout,
        "  model              {:>10}  ({model_note})",
        format!("v{}", report.model_version)
    )?;
    if !report.crowded_birth_dates.is_empty() {
        let note = crowded_dates_note(&report.crowded_birth_dates);
        writeln!(stdout, "  crowded dates      {note}")?;
    }
    writeln!(
        stdout,
        "  thresholds         lower {} / upper {}",
        thresholds.lower, thresholds.upper
    )?;
    let stages: Vec<String> =
        report.stages.iter().map(|(stage, seconds)| format!("{stage} {seconds:.2}s")).collect();
    writeln!(
        stdout,
        "  time               {:>9.2}s  ({})",
        started.elapsed().as_secs_f64(),
        stages.join(", ")
    )?;
    writeln!(stdout, "  results            {}", args.out.display())?;
    writeln!(stdout, "  reviews            {}", reviews_path.display())?;
    writeln!(stdout, "  errors             {}", errors_path.display())?;
    Ok(ExitCode::SUCCESS)
}

/// The model's crowded birth dates and days for the summary: `1 January 1990 (120
/// records), 1 January in every year (74 records); agreeing on one is no evidence`. At
/// most five are named.
fn crowded_dates_note(crowded: &[mpi_matching::CrowdedDate]) -> String {
    let mut named: Vec<String> =
        crowded.iter().take(5).map(|date| format!("{date} ({} records)", date.records)).collect();
    if crowded.len() > 5 {
        named.push(format!("and {} more", crowded.len() - 5));
    }
    format!("{}; agreeing on one is no evidence", named.join(", "))
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    let mut workspace = open_workspace(&args.data)?;
    let model = commands::train(&mut workspace, args.max_candidates, args.seed)?;
    if let Some(path) = &args.out {
        std::fs::write(path, model.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "trained model v{} on {} records ({} candidate pairs, {} random pairs, {} EM iterations{})",
        model.version,
        model.training.n_records,
        model.training.n_blocked_pairs,
        model.training.n_random_pairs,
        model.training.em_iterations,
        if model.training.converged { "" } else { ", not converged" }
    );
    println!(
        "  P(match) for two records at random outside a household {:.2e}, for two in one household {:.4}",
        model.lambda, model.household_lambda
    );
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalArgs) -> Result<ExitCode> {
    if args.truth.is_empty() {
        bail!("give at least one --truth FILE");
    }
    let mut truth = Vec::new();
    for path in &args.truth {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        truth.extend(
            mpi::eval::read_truth(file).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    if let Some(path) = &args.results {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (report, n_missing) = mpi::eval::evaluate_results(file, &truth)
            .with_context(|| format!("reading {}", path.display()))?;
        if report.n_records == 0 {
            bail!(
                "none of the truth's {n_missing} records has a person in {}: check that its \
                 source_system and local_id columns name the same records",
                path.display()
            );
        }
        if args.json {
            let mut figures = quality_json(&report);
            figures["records"] = report.n_records.into();
            figures["missing"] = n_missing.into();
            println!("{figures}");
        } else {
            println!(
                "records evaluated         {:>10}  ({} in the truth file without a person in the results)",
                report.n_records, n_missing
            );
            print_quality(&report);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let workspace = open_workspace(&args.data)?;
    let evaluation = commands::eval(&workspace, &truth, args.max_candidates)?;
    if let Some(path) = &args.unblocked {
        let mut out =
            csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
        out.write_record(["source_system_a", "local_id_a", "source_system_b", "local_id_b"])?;
        for [(source_a, id_a), (source_b, id_b)] in &evaluation.unblocked {
            out.write_record([source_a, id_a, source_b, id_b])?;
        }
        out.flush().with_context(|| format!("writing {}", path.display()))?;
    }
    if evaluation.n_evaluated == 0 {
        bail!(
            "none of the truth's {} records is in the store at {}: check --data, and that \
             the truth's source_system and local_id name the records as they were linked",
            evaluation.n_missing,
            args.data.data.display()
        );
    }
    let report = &evaluation.report;
    let accepted = &evaluation.if_reviews_accepted;
    if args.json {
        let mut figures = quality_json(report);
        figures["records"] = evaluation.n_evaluated.into();
        figures["missing"] = evaluation.n_missing.into();
        figures["in_review"] = evaluation.n_review.into();
        figures["pair_completeness"] = evaluation.pair_completeness.into();
        figures["candidates_per_record"] = evaluation.candidates_per_record.into();
        figures["missed_pairs"] = evaluation
            .missed
            .iter()
            .map(|(cause, pairs)| {
                serde_json::json!({
                    "cause": cause,
                    "pairs": pairs,
                    "share": *pairs as f64 / report.n_true_pairs.max(1) as f64,
                })
            })
            .collect();
        figures["if_reviews_accepted"] = serde_json::json!({
            "precision": accepted.precision,
            "recall": accepted.recall,
            "f1": accepted.f1,
            "false_merges": accepted.false_merges,
            "hard_groups_merged": accepted.hard_pairs_merged,
        });
        println!("{figures}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "records evaluated         {:>10}  ({} in the truth file not in the store)",
        evaluation.n_evaluated, evaluation.n_missing
    );
    print_quality(report);
    println!("records in review         {:>10}", evaluation.n_review);
    println!("blocking pair completeness {:>9.4}", evaluation.pair_completeness);
    println!("candidates per record     {:>10.2}", evaluation.candidates_per_record);
    if !evaluation.missed.is_empty() {
        println!();
        println!("true pairs not linked, by the decision that set each piece of a person apart:");
        for (cause, pairs) in &evaluation.missed {
            let share = *pairs as f64 / report.n_true_pairs.max(1) as f64;
            println!("  {cause:<48} {pairs:>8}  {share:.4}");
        }
    }
    if evaluation.n_review > 0 {
        println!();
        println!(
            "if every open review were accepted (each record joined its best candidate's person):"
        );
        println!(
            "  precision {:.4}, recall {:.4}, F1 {:.4}, false merges {}, twins/Jr-Sr merged {}",
            accepted.precision,
            accepted.recall,
            accepted.f1,
            accepted.false_merges,
            accepted.hard_pairs_merged
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The linkage quality figures of `mpi eval`, one per line.
fn print_quality(report: &mpi::eval::EvalReport) {
    println!("true pairs                {:>10}", report.n_true_pairs);
    println!("predicted pairs           {:>10}", report.n_predicted_pairs);
    println!("pairwise precision        {:>10.4}", report.precision);
    println!("pairwise recall           {:>10.4}", report.recall);
    println!("pairwise F1               {:>10.4}", report.f1);
    println!("B-cubed precision         {:>10.4}", report.bcubed_precision);
    println!("B-cubed recall            {:>10.4}", report.bcubed_recall);
    println!("false merges (clusters)   {:>10}", report.false_merges);
    println!(
        "twins/Jr-Sr merged        {:>10}  (of {} groups)",
        report.hard_pairs_merged, report.n_hard_groups
    );
}

/// The linkage quality figures as JSON, for `mpi eval --json`.
fn quality_json(report: &mpi::eval::EvalReport) -> serde_json::Value {
    serde_json::json!({
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "bcubed_precision": report.bcubed_precision,
        "bcubed_recall": report.bcubed_recall,
        "false_merges": report.false_merges,
        "hard_groups": report.n_hard_groups,
        "hard_groups_merged": report.hard_pairs_merged,
        "true_pairs": report.n_true_pairs,
        "predicted_pairs": report.n_predicted_pairs,
    })
}

fn parse_record_ref(text: &str) -> Result<(&str, &str)> {
    text.split_once(':').with_context(|| format!("{text:?} is not SOURCE:LOCAL_ID"))
}

fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let workspace = open_workspace(&args.data)?;
    let find = |text: &str| -> Result<usize> {
        let (source, local) = parse_record_ref(text)?;
        workspace
            .linker
            .entries
            .iter()
            .position(|entry| *entry.source_system == *source && *entry.local_id == *local)
            .with_context(|| format!("no record {text} in the store"))
    };
    let (a, b) = (find(&args.first)?, find(&args.second)?);
    let model = match &args.model {
        Some(path) => read_model(path)?,
        None => workspace.store.latest_model()?.unwrap_or_else(mpi::link::default_model),
    };
    let (_, score, caution) = commands::explain(&workspace.linker, a, b, &model);
    let same = workspace.linker.entries[a].person == workspace.linker.entries[b].person;
    println!("{} vs {}", args.first, args.second);
    let record = |position: usize| workspace.linker.records[position].to_normalized();
    print!("{}", commands::render_values((&args.first, &args.second), &record(a), &record(b)));
    println!();
    print!("{}", commands::render_explanation(&score, &model, caution));
    println!(
        "In the store they are {}.",
        if same { "the same person" } else { "different persons" }
    );
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let workspace = open_workspace(&args.data)?;
    let file =
        File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    commands::export(&workspace.linker, BufWriter::new(file))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("exported {} records to {}", workspace.linker.entries.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn synth(args: SynthArgs) -> Result<ExitCode> {
    if args.people == 0 {
        bail!("--people must be at least 1");
    }
    let truth_path = args.truth.clone().unwrap_or_else(|| {
        let stem = args
            .out
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.out.with_file_name(format!("{stem}_truth.csv"))
    });
    let records = mpi::synth::generate(&mpi::synth::SynthConfig {
        people: args.people,
        seed: args.seed,
        hospital_numbers: args.hospital_numbers,
        real_world_forms: args.real_world_forms,
        previous_names: args.previous_names,
    });
    let create = |path: &Path| -> Result<BufWriter<File>> {
        Ok(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ))
    };
    mpi::synth::write_records(&records, create(&args.out)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    mpi::synth::write_truth(&records, create(&truth_path)?)
        .with_context(|| format!("writing {}", truth_path.display()))?;
    println!(
        "wrote {} records of {} people to {} (truth: {})",
        records.len(),
        args.people,
        args.out.display(),
        truth_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
