//! `mpi link`: reconcile input files against the store, in batch or one row at a
//! time, and report every row's person and decision.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use mpi_index::{BlockingIndex, MemoryIndex, MemoryIndexBuilder, RecordId};
use mpi_matching::{
    Agreement, BlockingKey, ComparableRecord, DateOrder, Demographics, Issue, MatchError, Model,
    PatternCounts, TermFrequencies, Thresholds, TrainOptions, blocking_keys, compare,
    shared_key_kinds,
};
use rayon::prelude::*;

use crate::engine::{
    ComparedPair, Decision, DecisionKind, Entry, Linker, PersonKey, ReviewReason, ScoredCandidate,
    compact_position,
};
use crate::input::{InputRow, RowError};
use crate::store::{Batch, BatchShape, Event, LinkWrite, RecordWrite, ReviewWrite, Store};
use crate::workspace::{INDEX_WRITER_BUDGET, Workspace, WorkspaceError, index_payload};

/// The shipped default model, trained on synthetic UK data (`data/default_model.json`).
pub const DEFAULT_MODEL_JSON: &str = include_str!("../data/default_model.json");

/// How `mpi link` runs.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Most candidates the index returns per record.
    pub max_candidates: usize,
    /// Score and report without writing anything.
    pub dry_run: bool,
    /// A model to use instead of the store's.
    pub model: Option<Model>,
    /// Seed for training's random pairs.
    pub seed: u64,
    /// Process rows one at a time through the online path (same decisions).
    pub online: bool,
}

impl Default for LinkOptions {
    fn default() -> LinkOptions {
        LinkOptions {
            thresholds: Thresholds::DEFAULT,
            max_candidates: DEFAULT_MAX_CANDIDATES,
            dry_run: false,
            model: None,
            seed: 42,
            online: false,
        }
    }
}

/// Who the store's history names for changes made by `mpi link`.
pub const BATCH_ACTOR: &str = "mpi link";

/// Default bound on candidates per record.
pub const DEFAULT_MAX_CANDIDATES: usize = 20;

/// Where the model came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// Given with `--model`.
    File,
    /// The store's latest version.
    Store,
    /// Trained by this run on the store's records.
    Trained,
    /// The shipped default, because there were too few records to train.
    Default(String),
}

/// One input row's outcome, in input order. Small: one is held for every row of a run.
#[derive(Clone, Debug)]
pub struct RowOutcome {
    /// File index.
    pub file: u32,
    /// Line in the file.
    pub line: u64,
    /// Source system and local id of a rejected row, as far as they could be read
    /// (any other row's are its record's: [`RowOutcome::ids`]).
    pub rejected_ids: Option<Box<(String, String)>>,
    /// Position of the record in the linker (None when rejected).
    pub position: Option<u32>,
    /// What became of the row.
    pub decision: RowDecision,
    /// Probability of the best match.
    pub probability: Option<f64>,
}

/// What became of an input row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowDecision {
    /// Not decided yet.
    Pending,
    /// Linked, new or in review.
    Decided(DecisionKind),
    /// Sent again with the values the store already holds.
    Unchanged,
    /// Could not be read as a record.
    Rejected,
}

impl RowDecision {
    /// The word in the results file: linked, new, review, unchanged or rejected.
    pub fn as_str(self) -> &'static str {
        match self {
            RowDecision::Pending => "",
            RowDecision::Decided(kind) => kind.as_str(),
            RowDecision::Unchanged => "unchanged",
            RowDecision::Rejected => "rejected",
        }
    }
}

impl RowOutcome {
    /// The row's record's position in the linker (None when rejected).
    pub fn position(&self) -> Option<usize> {
        self.position.map(|position| position as usize)
    }

    /// The row's source system and local id.
    pub fn ids<'a>(&'a self, linker: &'a Linker) -> (&'a str, &'a str) {
        match (self.position(), &self.rejected_ids) {
            (Some(position), _) => {
                let entry = &linker.entries[position];
                (&entry.source_system, &entry.local_id)
            }
            (None, Some(ids)) => (&ids.0, &ids.1),
            (None, None) => ("", ""),
        }
    }
}

/// A review opened by the run.
#[derive(Clone, Debug)]
pub struct OpenedReview {
    /// Review id.
    pub id: String,
    /// Position of the record in review.
    pub position: usize,
    /// Why.
    pub reason: ReviewReason,
    /// Every candidate person at or above the lower threshold, the best first (then
    /// in the engine's order): its best-matching record's position and the probability
    /// against it. Never empty. (Two persons above the upper threshold make a review
    /// whose steward must see both.)
    pub candidates: Vec<(usize, f64)>,
}

/// What a link run did.
#[derive(Debug, Default)]
pub struct LinkReport {
    /// Rows read from the files (including rejected ones).
    pub n_rows: usize,
    /// Rows rejected.
    pub n_rejected: usize,
    /// Rows that repeated an earlier row's (source, local id) in the same input.
    pub n_repeated: usize,
    /// Re-sent records whose values had not changed.
    pub n_unchanged: usize,
    /// Decisions.
    pub n_linked: usize,
    /// New persons started.
    pub n_new: usize,
    /// Reviews opened.
    pub n_review: usize,
    /// Values ignored for matching (unusable values).
    pub n_issues: usize,
    /// Candidate pairs scored.
    pub n_pairs: u64,
    /// Persons in the store after the run.
    pub n_persons: usize,
    /// Records in the store after the run.
    pub n_records: usize,
    /// Model version used.
    pub model_version: u32,
    /// Where the model came from.
    pub model_source: Option<ModelSource>,
    /// The birth dates and days of the year the model holds as crowded: agreeing on
    /// one is no evidence.
    pub crowded_birth_dates: Vec<mpi_matching::CrowdedDate>,
    /// Seconds per stage.
    pub stages: Vec<(&'static str, f64)>,
    /// Outcome of every input row, in input order.
    pub outcomes: Vec<RowOutcome>,
    /// Reviews opened.
    pub reviews: Vec<OpenedReview>,
    /// Issues per outcome row: (row index in outcomes, issue).
    pub issues: Vec<(usize, Issue)>,
}

struct Stopwatch {
    start: Instant,
    stages: Vec<(&'static str, f64)>,
}

impl Stopwatch {
    fn lap(&mut self, stage: &'static str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let before: f64 = self.stages.iter().map(|(_, seconds)| seconds).sum();
        self.stages.push((stage, elapsed - before));
        tracing::debug!(stage, seconds = elapsed - before, rss_mib = resident_mib(), "stage done");
    }
}

/// Resident memory of this process in MiB (Linux; 0 elsewhere), for stage logs.
fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// Raw values as the store keeps them.
pub fn raw_json(raw: &Demographics) -> String {
    serde_json::to_string(raw).expect("plain data always serialises")
}

/// Raw values held from reading until the write. A million rows' JSON, field names
/// and all, would be a tenth of a batch's memory; packed, the values take less than
/// half as much, and each chunk's JSON is made as it is written.
///
/// One string: either packed (each value of [`Demographics`] in field order after a
/// U+001F, an absent one empty, then each identifier as U+001F, its system, U+001E,
/// its value), so starting with U+001F, or, for values a packing could not hold
/// exactly (an empty value, or one holding a separator), the JSON ([`raw_json`]),
/// starting with `{`. Packed values whose dates are month first start with U+001D.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRaw(Box<str>);

const PACKED_FIELD: char = '\u{1f}';
const PACKED_PAIR: char = '\u{1e}';
const PACKED_MONTH_FIRST: char = '\u{1d}';

/// Packed values without their month-first mark, and whether they had it.
fn month_first_mark(packed: &str) -> (&str, bool) {
    match packed.strip_prefix(PACKED_MONTH_FIRST) {
        Some(rest) => (rest, true),
        None => (packed, false),
    }
}

impl HeldRaw {
    /// Holds raw values.
    pub fn new(raw: &Demographics) -> HeldRaw {
        let values = raw_values(raw);
        let fits = |value: &str| !value.contains([PACKED_FIELD, PACKED_PAIR]);
        let packable =
            values.iter().all(|value| value.as_deref().is_none_or(|v| !v.is_empty() && fits(v)))
                && raw.identifiers.iter().all(|id| fits(&id.system) && fits(&id.value));
        if !packable {
            return HeldRaw::json_now(raw);
        }
        let mut packed = String::with_capacity(64);
        if raw.date_order == DateOrder::MonthFirst {
            packed.push(PACKED_MONTH_FIRST);
        }
        for value in values {
            packed.push(PACKED_FIELD);
            packed.push_str(value.as_deref().unwrap_or(""));
        }
        for identifier in &raw.identifiers {
            packed.push(PACKED_FIELD);
            packed.push_str(&identifier.system);
            packed.push(PACKED_PAIR);
            packed.push_str(&identifier.value);
        }
        HeldRaw(packed.into())
    }

    /// Marks the held values' dates as written month first, as
    /// [`Demographics::date_order`] says: packed values take the mark in front, without
    /// being unpacked.
    pub fn mark_month_first(&mut self) {
        if self.0.starts_with(PACKED_MONTH_FIRST) {
            return;
        }
        self.0 = if self.is_packed() {
            format!("{PACKED_MONTH_FIRST}{}", self.0).into()
        } else {
            let mut raw = self.demographics();
            raw.date_order = DateOrder::MonthFirst;
            raw_json(&raw).into()
        };
    }

    /// Holds raw values as their JSON, for a write that follows at once (nothing to
    /// pack and unpack again).
    pub fn json_now(raw: &Demographics) -> HeldRaw {
        HeldRaw(raw_json(raw).into())
    }

    /// The raw values.
    pub fn demographics(&self) -> Demographics {
        if self.is_packed() {
            unpack(&self.0)
        } else {
            serde_json::from_str(&self.0).expect("held JSON is always of raw values")
        }
    }

    /// True when the values are packed (not held as JSON).
    pub fn is_packed(&self) -> bool {
        self.0.starts_with([PACKED_FIELD, PACKED_MONTH_FIRST])
    }

    /// The raw values as the store keeps them (JSON), taking the held string when it
    /// is the JSON already.
    pub fn into_json(self) -> String {
        if self.is_packed() { packed_json(&self.0) } else { self.0.into_string() }
    }

    /// The raw values as the store keeps them (JSON).
    pub fn json(&self) -> std::borrow::Cow<'_, str> {
        if self.is_packed() {
            std::borrow::Cow::Owned(packed_json(&self.0))
        } else {
            std::borrow::Cow::Borrowed(&self.0)
        }
    }
}

/// A batch's raw values, moved out of memory into an unnamed temporary file in the data
/// folder after normalising (the file vanishes when dropped, or if the process dies),
/// and read back a chunk of rows at a time as the write needs them ([`SpillWindow`]): a
/// million rows' raw values are 130 MB that nothing else reads.
pub struct RawSpill {
    file: std::fs::File,
    /// Where each row's values end in the file (row `i` starts where `i - 1` ends).
    ends: Vec<u64>,
}

impl std::fmt::Debug for RawSpill {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "RawSpill({} rows)", self.ends.len())
    }
}

impl RawSpill {
    /// An empty spill: a new unnamed file in `dir`.
    ///
    /// # Errors
    /// When the file cannot be made.
    fn new(dir: &Path) -> std::io::Result<RawSpill> {
        Ok(RawSpill { file: tempfile::tempfile_in(dir)?, ends: Vec::new() })
    }

    /// Moves the held raw values of the next rows into the file, in order.
    ///
    /// # Errors
    /// When the file cannot be written.
    fn append(&mut self, prepared: &mut [Prepared]) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        let mut end = self.ends.last().copied().unwrap_or(0);
        let mut file = &self.file;
        file.seek(std::io::SeekFrom::Start(end))?;
        let mut out = std::io::BufWriter::new(file);
        self.ends.reserve(prepared.len());
        for item in prepared {
            let held = std::mem::replace(&mut item.raw, HeldRaw(Box::default()));
            out.write_all(held.0.as_bytes())?;
            end += held.0.len() as u64;
            self.ends.push(end);
        }
        out.flush()
    }

    /// Where row `index` starts in the file.
    fn start(&self, index: usize) -> u64 {
        index.checked_sub(1).map_or(0, |before| self.ends[before])
    }

    /// The bytes from `start` to `end`, in one read.
    fn read(&self, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; usize::try_from(end - start).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut bytes, start)?;
        Ok(bytes)
    }

    /// The rows a chunk of items names, read at once when they lie within
    /// [`SPILL_WINDOW_BYTES`] of each other (a chunk's rows are in input order, so they
    /// do unless an update run interleaves them), rather than a system call a row.
    ///
    /// # Errors
    /// When the file cannot be read.
    fn window(&self, indices: impl Iterator<Item = usize>) -> std::io::Result<SpillWindow> {
        let (first, last) = indices
            .fold((usize::MAX, 0), |(first, last), index| (first.min(index), last.max(index)));
        if first > last || self.ends[last] - self.start(first) > SPILL_WINDOW_BYTES {
            return Ok(SpillWindow::default());
        }
        let start = self.start(first);
        Ok(SpillWindow { start, bytes: self.read(start, self.ends[last])? })
    }

    /// The raw values of row `index` as the store keeps them (JSON), from `window` when
    /// it holds them.
    ///
    /// # Errors
    /// When the file cannot be read, or holds something else than was written.
    pub fn json(&self, index: usize, window: &SpillWindow) -> std::io::Result<String> {
        let (start, end) = (self.start(index), self.ends[index]);
        let window_end = window.start + window.bytes.len() as u64;
        let bytes = if start >= window.start && end <= window_end {
            let at = |offset: u64| usize::try_from(offset - window.start).unwrap_or(usize::MAX);
            window.bytes[at(start)..at(end)].to_vec()
        } else {
            self.read(start, end)?
        };
        let text = String::from_utf8(bytes)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
        Ok(HeldRaw(text.into_boxed_str()).into_json())
    }
}

/// The most bytes of a spill read at once for a chunk of rows.
const SPILL_WINDOW_BYTES: u64 = 16 * 1024 * 1024;

/// Rows of a [`RawSpill`] read in one go, from offset `start` (empty: none).
#[derive(Debug, Default)]
pub struct SpillWindow {
    start: u64,
    bytes: Vec<u8>,
}

/// Where a record's raw values wait for the write.
#[derive(Clone, Copy)]
pub enum RawValues<'a> {
    /// In memory.
    Held(&'a HeldRaw),
    /// Row `.1` of a batch's temporary file.
    Spilled(&'a RawSpill, usize),
}

impl std::fmt::Debug for RawValues<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Raw values are personal data: never printed.
        match self {
            RawValues::Held(_) => formatter.write_str("RawValues::Held"),
            RawValues::Spilled(_, index) => write!(formatter, "RawValues::Spilled({index})"),
        }
    }
}

impl<'a> RawValues<'a> {
    /// The raw values as the store keeps them (JSON); spilled ones from `window` when it
    /// holds them.
    ///
    /// # Errors
    /// When a temporary file cannot be read.
    pub fn json(
        &self,
        window: &SpillWindow,
    ) -> Result<std::borrow::Cow<'a, str>, crate::error::StoreError> {
        match *self {
            RawValues::Held(held) => Ok(held.json()),
            RawValues::Spilled(spill, index) => spill
                .json(index, window)
                .map(std::borrow::Cow::Owned)
                .map_err(crate::error::StoreError::TempFile),
        }
    }
}

/// The number of [`Demographics`] values other than its identifiers.
const RAW_VALUES: usize = 12;

/// The values of `raw` other than its identifiers, in field order. (Destructured
/// whole, as [`unpack`] builds it whole, so a field added to [`Demographics`] cannot be
/// forgotten by either.)
fn raw_values(raw: &Demographics) -> [&Option<String>; RAW_VALUES] {
    let Demographics {
        nhs_number,
        given_name,
        family_name,
        date_of_birth,
        sex,
        address_line1,
        address_line2,
        town,
        postcode,
        phone,
        email,
        previous_family_name,
        identifiers: _,
        date_order: _,
    } = raw;
    [
        nhs_number,
        given_name,
        family_name,
        date_of_birth,
        sex,
        address_line1,
        address_line2,
        town,
        postcode,
        phone,
        email,
        previous_family_name,
    ]
}

/// The fields of [`Demographics`] other than its identifiers, in field order: each is
/// serialised under its canonical column name ([`Field::as_str`]).
const RAW_FIELDS: [mpi_matching::Field; RAW_VALUES] = {
    use mpi_matching::Field::*;
    [
        NhsNumber,
        GivenName,
        FamilyName,
        DateOfBirth,
        Sex,
        AddressLine1,
        AddressLine2,
        Town,
        Postcode,
        Phone,
        Email,
        PreviousFamilyName,
    ]
};

/// The JSON [`raw_json`] makes of packed values, written from the packed string
/// itself: unpacking into a [`Demographics`] first (a dozen small strings a row) was
/// most of the cost of a million rows' raw JSON.
fn packed_json(packed: &str) -> String {
    fn push_string(json: &mut Vec<u8>, text: &str) {
        serde_json::to_writer(&mut *json, text).expect("a string always serialises");
    }
    let (packed, month_first) = month_first_mark(packed);
    let mut json = Vec::with_capacity(packed.len() + 160);
    json.push(b'{');
    let mut parts = packed.split(PACKED_FIELD).skip(1);
    for (field, value) in RAW_FIELDS.iter().zip(parts.by_ref()) {
        if value.is_empty() {
            continue;
        }
        if json.len() > 1 {
            json.push(b',');
        }
        push_string(&mut json, field.as_str());
        json.push(b':');
        push_string(&mut json, value);
    }
    let mut identifiers = parts.peekable();
    if identifiers.peek().is_some() {
        if json.len() > 1 {
            json.push(b',');
        }
        json.extend_from_slice(b"\"identifiers\":[");
        for (n, part) in identifiers.enumerate() {
            let (system, value) = part.split_once(PACKED_PAIR).unwrap_or((part, ""));
            if n > 0 {
                json.push(b',');
            }
            json.extend_from_slice(b"{\"system\":");
            push_string(&mut json, system);
            json.extend_from_slice(b",\"value\":");
            push_string(&mut json, value);
            json.push(b'}');
        }
        json.push(b']');
    }
    if month_first {
        if json.len() > 1 {
            json.push(b',');
        }
        json.extend_from_slice(b"\"date_order\":\"month_first\"");
    }
    json.push(b'}');
    String::from_utf8(json).expect("JSON of strings is UTF-8")
}

fn unpack(packed: &str) -> Demographics {
    let (packed, month_first) = month_first_mark(packed);
    let mut parts = packed.split(PACKED_FIELD).skip(1);
    let values = parts
        .by_ref()
        .take(RAW_VALUES)
        .map(|value| (!value.is_empty()).then(|| value.to_owned()))
        .collect::<Vec<_>>();
    let identifiers = parts
        .map(|part| {
            let (system, value) = part.split_once(PACKED_PAIR).unwrap_or((part, ""));
            mpi_matching::Identifier { system: system.to_owned(), value: value.to_owned() }
        })
        .collect();
    let mut raw = Demographics::from_values(values, identifiers);
    if month_first {
        raw.date_order = DateOrder::MonthFirst;
    }
    raw
}

/// A row prepared for linking.
struct Prepared {
    outcome_index: usize,
    /// The raw values, held compactly until the write.
    raw: HeldRaw,
    issues: Box<[Issue]>,
}

/// Errors of a link run (input problems are reported before this point).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The data folder failed.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
    /// The index failed.
    #[error("blocking index failed")]
    Index(#[from] mpi_index::IndexError),
    /// The online path needs a model.
    #[error("online linking needs a trained model: run `mpi train` first or pass --model")]
    NoModel,
    /// A model problem.
    #[error(transparent)]
    Model(#[from] MatchError),
}

/// Tells the progress display what is happening.
pub trait Progress: Sync {
    /// A new stage with `total` steps (0 when unknown).
    fn stage(&self, name: &str, total: u64);
    /// `n` more steps done.
    fn advance(&self, n: u64);
}

/// No progress display.
#[derive(Debug)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
}

/// Links rows (already read, in input order) into the workspace.
///
/// `rejected` are the rows the reader could not read; they are reported in order
/// with the rest.
///
/// # Errors
/// When the store or index fails; nothing is committed then.
pub fn link(
    workspace: &mut Workspace,
    mut rows: Vec<InputRow>,
    rejected: &[RowError],
    options: &LinkOptions,
    progress: &dyn Progress,
) -> Result<LinkReport, LinkError> {
    let mut clock = Stopwatch { start: Instant::now(), stages: Vec::new() };
    let mut report = LinkReport {
        n_rows: rows.len() + rejected.len(),
        n_rejected: rejected.len(),
        ..LinkReport::default()
    };

    // Outcomes in input order: merge read rows and rejected rows by (file, line).
    let mut order: Vec<(usize, u64, Option<usize>)> =
        rows.iter().enumerate().map(|(i, row)| (row.file, row.line, Some(i))).collect();
    order.extend(rejected.iter().map(|error| (error.file, error.line, None)));
    order.sort_by_key(|&(file, line, _)| (file, line));
    let mut outcome_of_row = vec![0; rows.len()];
    let mut rejected_iter = {
        let mut sorted: Vec<&RowError> = rejected.iter().collect();
        sorted.sort_by_key(|error| (error.file, error.line));
        sorted.into_iter()
    };
    for (outcome_index, &(file, line, row)) in order.iter().enumerate() {
        let file = u32::try_from(file).expect("fewer than 2^32 input files");
        match row {
            Some(row_index) => {
                outcome_of_row[row_index] = outcome_index;
                report.outcomes.push(RowOutcome {
                    file,
                    line,
                    rejected_ids: None,
                    position: None,
                    decision: RowDecision::Pending,
                    probability: None,
                });
            }
            None => {
                let error = rejected_iter.next().expect("one rejected row per slot");
                report.outcomes.push(RowOutcome {
                    file,
                    line,
                    rejected_ids: Some(Box::new((
                        error.source_system.clone().unwrap_or_default(),
                        error.local_id.clone().unwrap_or_default(),
                    ))),
                    position: None,
                    decision: RowDecision::Rejected,
                    probability: None,
                });
            }
        }
    }

    // A (source, local id) sent twice in one input: the last row wins, as it would
    // online, and the earlier rows report the same outcome.
    let ids = IdHashes::new(rows.par_iter().map(|row| (&*row.source_system, &*row.local_id)));
    let repeats = ids.repeats(|a, b| {
        rows[a].source_system == rows[b].source_system && rows[a].local_id == rows[b].local_id
    });
    drop(ids);
    let mut keep = vec![true; rows.len()];
    let mut repeated_rows: Vec<(usize, usize)> = Vec::with_capacity(repeats.len());
    for (earlier, last) in repeats {
        keep[earlier] = false;
        repeated_rows.push((outcome_of_row[earlier], outcome_of_row[last]));
    }
    report.n_repeated = repeated_rows.len();

    // Normalise and prepare in parallel.
    progress.stage("normalising", rows.len() as u64);
    let normalizer = &workspace.normalizer;
    // The repeated rows leave first, in place: the pass then knows its length and
    // fills two vectors sized once, a chunk of rows at a time (each chunk in
    // parallel). Each row becomes the linker's entry it will be (the record held
    // nowhere else, so there is never a second copy of a million of them), and what
    // the write needs besides.
    let kept_outcomes: Vec<usize> = outcome_of_row
        .iter()
        .zip(&keep)
        .filter_map(|(&outcome, &kept)| kept.then_some(outcome))
        .collect();
    retain_flagged(&mut rows, &keep);
    drop(keep);
    // A batch's raw values wait for the write on disk, not in memory: each chunk's go
    // to the spill as soon as it is normalised.
    let mut spill = (!options.online && !options.dry_run)
        .then(|| RawSpill::new(&workspace.dir))
        .transpose()
        .map_err(crate::error::StoreError::TempFile)?;
    let n_rows = rows.len();
    let mut prepared: Vec<Prepared> = Vec::with_capacity(n_rows);
    let mut arrivals: Vec<Entry> = Vec::with_capacity(n_rows);
    let mut arrival_records: Vec<ComparableRecord> = Vec::with_capacity(n_rows);
    // Each row's stored record (position), if its (source, local id) is known, and
    // whether it is unchanged: checked as each chunk is made, so that an unchanged
    // record (a file sent again) is dropped at once, not held beside its stored twin.
    let (stored, stored_records) = (&workspace.linker.entries, &workspace.linker.records);
    let existing =
        IdHashes::new(stored.par_iter().map(|entry| (&*entry.source_system, &*entry.local_id)));
    let mut known: Vec<Option<(usize, bool)>> = Vec::with_capacity(n_rows);
    let mut pending = rows.into_iter().zip(kept_outcomes);
    loop {
        let chunk: Vec<(InputRow, usize)> = pending.by_ref().take(NORMALISE_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        #[allow(clippy::type_complexity)]
        let (mut chunk_prepared, (mut chunk_arrivals, mut chunk_records)): (
            Vec<Prepared>,
            (Vec<Entry>, Vec<ComparableRecord>),
        ) = chunk
            .into_par_iter()
            .map(|(row, outcome_index)| {
                let (normalized, issues) = normalizer.normalize(&row.raw.demographics());
                let record = ComparableRecord::new(normalized, normalizer.nicknames());
                progress.advance(1);
                let item =
                    Prepared { outcome_index, raw: row.raw, issues: issues.into_boxed_slice() };
                let entry = Entry {
                    id: 0,
                    source_system: row.source_system,
                    local_id: row.local_id,
                    person: PersonKey::MAX,
                    decision: DecisionKind::New,
                    probability: None,
                    manual: false,
                };
                (item, (entry, record))
            })
            .unzip();
        if !existing.is_empty() {
            known.par_extend(chunk_arrivals.par_iter().zip(&mut chunk_records).map(
                |(arrival, record)| {
                    let found = existing.matches(&arrival.source_system, &arrival.local_id).find(
                        |&position| {
                            stored[position].source_system == arrival.source_system
                                && stored[position].local_id == arrival.local_id
                        },
                    );
                    let unchanged =
                        found.is_some_and(|position| stored_records[position] == *record);
                    if unchanged {
                        *record = ComparableRecord::default();
                    }
                    found.map(|position| (position, unchanged))
                },
            ));
        }
        if let Some(spill) = &mut spill {
            spill.append(&mut chunk_prepared).map_err(crate::error::StoreError::TempFile)?;
        }
        prepared.append(&mut chunk_prepared);
        arrivals.append(&mut chunk_arrivals);
        arrival_records.append(&mut chunk_records);
    }
    drop(pending);
    drop(existing);
    for item in &prepared {
        for issue in item.issues.iter().filter(|issue| issue.kind.value_ignored()) {
            report.issues.push((item.outcome_index, *issue));
        }
    }
    report.n_issues = report.issues.len();
    clock.lap("normalise");

    // Ids: a known (source, local id) keeps its record; the rest get new ids in input order.
    let next_id = workspace.store.max_record_id()? + 1;
    let linker = &mut workspace.linker;
    // (prepared index, position, is_update)
    let mut work: Vec<(usize, usize, bool)> = Vec::with_capacity(prepared.len());
    let mut new_items: Vec<usize> = Vec::new();
    let mut unchanged: Vec<usize> = Vec::new();
    // Updated records' new values, by position, until their turn.
    let mut updates: HashMap<usize, ComparableRecord> = HashMap::new();
    // (With nothing stored, no row is known.)
    known.resize(prepared.len(), None);
    for (item_index, found) in known.into_iter().enumerate() {
        let Some((position, is_unchanged)) = found else {
            new_items.push(item_index);
            continue;
        };
        if is_unchanged {
            unchanged.push(item_index);
            let outcome = &mut report.outcomes[prepared[item_index].outcome_index];
            outcome.position = Some(compact_position(position));
            outcome.decision = RowDecision::Unchanged;
        } else {
            // An updated record keeps its stored values until its turn in input order,
            // as it would if the rows were sent one by one: the records before it in
            // the run see it as it was.
            updates.insert(position, std::mem::take(&mut arrival_records[item_index]));
            work.push((item_index, position, true));
        }
    }
    report.n_unchanged = unchanged.len();
    // The new records join the linker in input order: the arrivals vector itself when
    // the linker is empty, else appended to it.
    let first_new_position = linker.entries.len();
    let mut is_new = vec![false; arrivals.len()];
    for (&item_index, id) in new_items.iter().zip(next_id..) {
        arrivals[item_index].id = id;
        is_new[item_index] = true;
    }
    retain_flagged(&mut arrivals, &is_new);
    retain_flagged(&mut arrival_records, &is_new);
    drop(is_new);
    linker.append(&mut arrivals, &mut arrival_records);
    drop((arrivals, arrival_records));
    for (offset, &item_index) in new_items.iter().enumerate() {
        work.push((item_index, first_new_position + offset, false));
    }
    work.sort_by_key(|&(item_index, _, _)| prepared[item_index].outcome_index);

    let model = resolve_model_early(workspace, options)?;
    let result = if options.online {
        let Some(model) = model else {
            rollback_entries(workspace, first_new_position);
            return Err(LinkError::NoModel);
        };
        link_online(
            workspace,
            &prepared,
            &work,
            updates,
            model,
            options,
            &mut report,
            progress,
            &mut clock,
        )
    } else {
        link_batch(
            workspace,
            &prepared,
            spill,
            &work,
            updates,
            model,
            options,
            &mut report,
            progress,
            &mut clock,
        )
    };
    if let Err(error) = result {
        rollback_entries(workspace, first_new_position);
        return Err(error);
    }
    for (earlier, last) in repeated_rows {
        let (position, decision, probability) = {
            let outcome = &report.outcomes[last];
            (outcome.position, outcome.decision, outcome.probability)
        };
        let outcome = &mut report.outcomes[earlier];
        outcome.position = position;
        outcome.decision = decision;
        outcome.probability = probability;
    }
    // Unchanged records report their current decision.
    for item_index in unchanged {
        let outcome = &mut report.outcomes[prepared[item_index].outcome_index];
        if let Some(position) = outcome.position() {
            let entry = &workspace.linker.entries[position];
            outcome.decision = RowDecision::Decided(entry.decision);
            outcome.probability = entry.probability;
        }
    }
    report.n_records = workspace.linker.entries.len();
    report.n_persons =
        workspace.linker.persons.iter().filter(|person| !person.members.is_empty()).count();
    report.stages = clock.stages;
    Ok(report)
}

/// A record's turn in a run and whether it updates a stored record, in four bytes.
#[derive(Clone, Copy)]
struct Turn(u32);

impl Turn {
    const NOT_IN_RUN: Turn = Turn(u32::MAX);

    fn new(order: usize, is_update: bool) -> Turn {
        let order = u32::try_from(order).ok().filter(|&order| order < u32::MAX >> 1);
        Turn(order.expect("fewer than 2^31 records in one run") << 1 | u32::from(is_update))
    }

    /// (order, is update), or None for a record not in the run.
    fn get(self) -> Option<(usize, bool)> {
        (self.0 != u32::MAX).then_some(((self.0 >> 1) as usize, self.0 & 1 == 1))
    }
}

/// (source, local id) pairs found by a 64-bit hash in one sorted vector: 16 bytes an
/// item, where a map of string pairs takes over 40 (86 MB for a million rows, held
/// beside the rows and the loaded store at the run's peak).
struct IdHashes(Vec<(u64, u32)>);

impl IdHashes {
    /// Over the ids of items `0..n`, in order.
    fn new<'a>(ids: impl IndexedParallelIterator<Item = (&'a str, &'a str)>) -> IdHashes {
        let mut hashes: Vec<(u64, u32)> = ids
            .enumerate()
            .map(|(index, (source, local_id))| {
                (
                    crate::engine::id_hash(source, local_id),
                    u32::try_from(index).expect("fewer than 2^32 ids"),
                )
            })
            .collect();
        hashes.par_sort_unstable();
        IdHashes(hashes)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each item whose id a later item repeats, with the last item of that id, as
    /// `(earlier, last)` in the order of the earlier: `same(a, b)` compares two items'
    /// ids (a hash may collide). One pass over the sorted hashes, where a look-up per
    /// item costs two binary searches (2 s for a million rows, on one thread).
    fn repeats(&self, same: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for group in self.0.chunk_by(|a, b| a.0 == b.0).filter(|group| group.len() > 1) {
            for (at, &(_, item)) in group.iter().enumerate() {
                let mut later = group[at + 1..].iter().rev();
                if let Some(&(_, last)) =
                    later.find(|&&(_, other)| same(item as usize, other as usize))
                {
                    found.push((item as usize, last as usize));
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// The items whose id has the same hash, in item order: the caller compares the
    /// ids themselves (a hash may collide).
    fn matches(&self, source: &str, local_id: &str) -> impl DoubleEndedIterator<Item = usize> {
        let hash = crate::engine::id_hash(source, local_id);
        let start = self.0.partition_point(|&(other, _)| other < hash);
        let end = self.0.partition_point(|&(other, _)| other <= hash);
        self.0[start..end].iter().map(|&(_, index)| index as usize)
    }
}

/// Keeps, in place and in order, the items whose flag is set.
fn retain_flagged<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    items.retain(|_| flags.next().copied().unwrap_or(false));
}

fn rollback_entries(workspace: &mut Workspace, first_new_position: usize) {
    // Drop the run's new records from memory; the store was not written.
    let linker = &mut workspace.linker;
    for position in first_new_position..linker.entries.len() {
        linker.detach(position);
    }
    linker.truncate(first_new_position);
}

fn resolve_model_early(
    workspace: &Workspace,
    options: &LinkOptions,
) -> Result<Option<(Model, ModelSource)>, LinkError> {
    if let Some(model) = &options.model {
        return Ok(Some((model.clone(), ModelSource::File)));
    }
    Ok(workspace.store.latest_model()?.map(|model| (model, ModelSource::Store)))
}

/// Samples `n` random distinct pairs of positions, deterministically for a seed.
pub fn random_pairs(n_records: usize, n: usize, seed: u64) -> Vec<(usize, usize)> {
    if n_records < 2 {
        return Vec::new();
    }
    let mut rng = crate::rng::Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
    (0..n)
        .map(|_| {
            let a = rng.below(n_records);
            let mut b = rng.below(n_records - 1);
            if b >= a {
                b += 1;
            }
            (a, b)
        })
        .collect()
}

/// Trains a model on the workspace's records with the given blocked-pair patterns.
///
/// # Errors
/// [`MatchError::NotEnoughData`] when there is too little to learn from.
pub fn train_model(
    records: &[&ComparableRecord],
    blocked: &PatternCounts,
    n_blocked_pairs: u64,
    seed: u64,
) -> Result<Model, MatchError> {
    let n_random = (records.len() * 2).clamp(10_000, 1_000_000);
    let pairs = random_pairs(records.len(), n_random, seed);
    // The values' counts (one pass on one thread) are made while the random pairs are
    // compared on the others.
    let (random, frequencies) = rayon::join(
        || {
            pairs
                .par_iter()
                .fold(PatternCounts::new, |mut counts, &(a, b)| {
                    *counts.entry(compare(records[a], records[b]).pack()).or_default() += 1;
                    counts
                })
                .reduce(PatternCounts::new, merge_counts)
        },
        || TermFrequencies::from_records(records.iter().copied()),
    );
    let options = TrainOptions {
        seed,
        n_records: records.len() as u64,
        n_blocked_pairs,
        birth_date_agreement: Agreement::count(
            records.iter().filter_map(|record| record.date_of_birth()),
        ),
        nhs_number_agreement: Agreement::count(
            records.iter().filter_map(|record| record.nhs_number()),
        ),
        ..TrainOptions::default()
    };
    let mut model = mpi_matching::train(blocked, &random, &options)?;
    model.training.n_records = records.len() as u64;
    model.term_frequencies = Some(frequencies);
    Ok(model)
}

/// Most blocked pairs training looks at; EM needs far fewer than a large batch has.
pub const MAX_TRAINING_PAIRS: usize = 1_000_000;

/// Counts the comparison patterns of blocked pairs for training, each tagged with the
/// kinds of blocking key the pair shared (bits above the gamma's 40). Takes every
/// k-th record's pairs when there are more than [`MAX_TRAINING_PAIRS`]. `keys_of(p)`
/// gives the blocking keys of the record at position `p`.
pub fn training_patterns(
    groups: &[(usize, &[ComparedPair])],
    keys_of: &(dyn Fn(usize) -> Vec<BlockingKey> + Sync),
) -> PatternCounts {
    let total: usize = groups.iter().map(|(_, pairs)| pairs.len()).sum();
    let step = total.div_ceil(MAX_TRAINING_PAIRS).max(1);
    groups
        .par_iter()
        .enumerate()
        .filter(|(index, _)| index % step == 0)
        .fold(PatternCounts::new, |mut counts, (_, &(position, pairs))| {
            let own = keys_of(position);
            for &(candidate, gamma) in pairs {
                let kinds = shared_key_kinds(&own, &keys_of(candidate as usize));
                *counts.entry(gamma.pack() | (u64::from(kinds) << 40)).or_default() += 1;
            }
            counts
        })
        .reduce(PatternCounts::new, merge_counts)
}

fn merge_counts(mut a: PatternCounts, b: PatternCounts) -> PatternCounts {
    for (pattern, count) in b {
        *a.entry(pattern).or_default() += count;
    }
    a
}

/// The crowded birth dates and days of `model`'s term frequencies.
fn crowded_birth_dates(model: &Model) -> Vec<mpi_matching::CrowdedDate> {
    model.term_frequencies.as_ref().map(TermFrequencies::crowded).unwrap_or_default()
}

/// Rows normalised at a time: each chunk's raw values go to the spill before the next
/// is made, so a million rows' raw values are never in memory at once.
const NORMALISE_CHUNK: usize = 65_536;

/// Moves every record's values into fresh allocations made one after another on this
/// thread (see the call in `link_batch`).
fn pack_records(linker: &mut Linker) {
    for (entry, record) in linker.entries.iter_mut().zip(linker.records.as_mut_slice()) {
        *record = record.clone();
        entry.local_id = entry.local_id.clone();
    }
}

/// Records handed to the index thread in one allocation.
const INDEX_CHUNK: usize = 65_536;

/// Records decided between returns of freed memory to the OS.
const DECIDE_RELEASE_EVERY: usize = 131_072;

/// Records whose blocking keys are made at a time for the in-memory index.
const KEY_CHUNK: usize = 65_536;

/// Room reserved in the in-memory index per record: a record has about twelve keys
/// and at most fourteen without other identifiers; room not used costs no memory.
const KEYS_RESERVED_PER_RECORD: usize = 14;

/// The shipped default model.
pub fn default_model() -> Model {
    Model::from_json(DEFAULT_MODEL_JSON).expect("the shipped default model is valid")
}

#[allow(clippy::too_many_arguments)]
fn link_batch(
    workspace: &mut Workspace,
    prepared: &[Prepared],
    spill: Option<RawSpill>,
    work: &[(usize, usize, bool)],
    mut updates: HashMap<usize, ComparableRecord>,
    model: Option<(Model, ModelSource)>,
    options: &LinkOptions,
    report: &mut LinkReport,
    progress: &dyn Progress,
    clock: &mut Stopwatch,
) -> Result<(), LinkError> {
    // The records were made on the worker threads between the normaliser's temporary
    // values; made again one after another here, they fill whole pages, and the
    // workers' pages (and the file's rows and raw values, gone now) go back to the
    // OS before blocking allocates. At a million records this returns 0.3 GiB for
    // 0.2 s.
    pack_records(&mut workspace.linker);
    crate::alloc::release_freed_memory();
    // Candidates among the records before each one, as the online path would see them.
    // The batch asks an in-memory copy of the index's postings (the same ranking, see
    // `mpi_index::MemoryIndex`), built from the keys of every record.
    progress.stage("blocking and comparing", work.len() as u64);
    let linker = &workspace.linker;
    // The records' keys are made a chunk at a time, in parallel, and handed to the
    // index; from here a record's keys are made again where needed (a million
    // records' keys are 150 MB, and this is when memory is tightest).
    let mut builder =
        MemoryIndexBuilder::with_capacity(linker.entries.len() * KEYS_RESERVED_PER_RECORD);
    for (entries, records) in linker.entries.chunks(KEY_CHUNK).zip(linker.records.chunks(KEY_CHUNK))
    {
        let keys: Vec<Vec<BlockingKey>> = records.par_iter().map(blocking_keys).collect();
        for (entry, keys) in entries.iter().zip(&keys) {
            builder.add(entry.id, keys);
        }
    }
    let memory = builder.build();
    // The builder's pairs were freed on this thread, whose heap the comparing (on
    // rayon's threads) cannot reuse: handed back now, not held to the end of the stage.
    crate::alloc::release_freed_memory();
    // A run that updates stored records: each update keeps its stored values (in
    // `memory`) until its turn and has its new ones (in `updated`) after it, as if the
    // rows were sent one by one. A run of new records only (a first load, another
    // system's file) needs none of this: the records before one are those below its id.
    // `turns` holds each record's turn and whether it is an update, by record id less
    // the first: a flat table, read for every posting a query meets without touching
    // the records themselves.
    let first_id = linker.entries.first().map_or(0, |entry| entry.id);
    let turns: Vec<Turn> = if updates.is_empty() {
        Vec::new()
    } else {
        let span = linker.entries.last().map_or(0, |entry| entry.id - first_id + 1);
        let mut turns = vec![Turn::NOT_IN_RUN; usize::try_from(span).expect("ids span memory")];
        for (order, &(_, position, is_update)) in work.iter().enumerate() {
            turns[(linker.entries[position].id - first_id) as usize] = Turn::new(order, is_update);
        }
        turns
    };
    // (None: stored and not in the run.)
    let turn_of = |id: u64| {
        let index = usize::try_from(id.checked_sub(first_id)?).ok()?;
        turns.get(index)?.get()
    };
    let updated = (!updates.is_empty()).then(|| {
        MemoryIndex::build(
            updates
                .iter()
                .map(|(&position, record)| (linker.entries[position].id, blocking_keys(record))),
        )
    });
    // (The same for the updates' builder.)
    crate::alloc::release_freed_memory();
    // A record's values as the record at `order` in the run sees them.
    let as_seen_at = |order: usize, position: usize| -> &ComparableRecord {
        match turn_of(linker.entries[position].id) {
            Some((turn, true)) if turn <= order => &updates[&position],
            _ => &linker.records[position],
        }
    };
    let compared: Vec<Vec<ComparedPair>> = work
        .par_iter()
        .enumerate()
        .map(|(order, &(_, position, _))| {
            let entry = &linker.entries[position];
            let record = as_seen_at(order, position);
            let keys = blocking_keys(record);
            let candidates = match &updated {
                None => {
                    memory.candidates(&keys, Some(entry.id), Some(entry.id), options.max_candidates)
                }
                Some(updated) => {
                    let mut hits = Vec::new();
                    memory.hits(
                        &keys,
                        |id| {
                            id != entry.id
                                && match turn_of(id) {
                                    None => true,
                                    // Its stored values, until its turn.
                                    Some((turn, true)) => turn > order,
                                    // A new record, once its turn has come.
                                    Some((turn, false)) => turn < order,
                                }
                        },
                        &mut hits,
                    );
                    // The new values of the updates whose turn has come.
                    updated.hits(
                        &keys,
                        |id| {
                            id != entry.id
                                && matches!(turn_of(id), Some((turn, true)) if turn < order)
                        },
                        &mut hits,
                    );
                    mpi_index::rank_hits(hits, options.max_candidates)
                }
            };
            // Sized to the candidates: collected through a filter, the pairs would
            // grow by doubling and hold up to twice their room until decided (at a
            // million records, a tenth of the batch's memory).
            let mut pairs = Vec::with_capacity(candidates.len());
            pairs.extend(
                candidates
                    .into_iter()
                    .filter_map(|candidate| linker.position(candidate.record_id))
                    .map(|candidate| {
                        let seen = as_seen_at(order, candidate);
                        (compact_position(candidate), compare(record, seen))
                    }),
            );
            progress.advance(1);
            pairs
        })
        .collect();
    drop(memory);
    crate::alloc::release_freed_memory();
    report.n_pairs = compared.iter().map(|pairs| pairs.len() as u64).sum();
    clock.lap("block and compare");

    // The model: given, stored, or trained now on every record in the store.
    let (mut model, source) = match model {
        Some(found) => found,
        None => {
            progress.stage("training", 0);
            let groups: Vec<(usize, &[ComparedPair])> = work
                .iter()
                .zip(&compared)
                .map(|(&(_, position, _), pairs)| (position, pairs.as_slice()))
                .collect();
            // On the records as they stand once the input is loaded (updates' new values).
            let latest = |position: usize| -> &ComparableRecord {
                updates.get(&position).unwrap_or(&linker.records[position])
            };
            let blocked = training_patterns(&groups, &|position| blocking_keys(latest(position)));
            let records: Vec<&ComparableRecord> = (0..linker.entries.len()).map(latest).collect();
            match train_model(&records, &blocked, report.n_pairs, options.seed) {
                Ok(model) => (model, ModelSource::Trained),
                Err(MatchError::NotEnoughData(why)) => (default_model(), ModelSource::Default(why)),
                Err(error) => return Err(error.into()),
            }
        }
    };
    if source == ModelSource::Trained && !options.dry_run {
        workspace.store.save_model(&mut model)?;
    }
    report.model_version = model.version;
    report.crowded_birth_dates = crowded_birth_dates(&model);
    report.model_source = Some(source);
    clock.lap("train");

    progress.stage("scoring", work.len() as u64);
    // The weights are made now, apart from the pairs: the pairs are the largest thing a
    // batch holds, and the weights' room is not taken while the in-memory indexes are
    // held beside them (an update run's peak was the compare's end, by 47 MB of
    // weights at a million records with a third updated).
    let weights: Vec<Box<[f64]>> = work
        .par_iter()
        .enumerate()
        .zip(&compared)
        .map(|((order, &(_, position, _)), pairs)| {
            progress.advance(1);
            let record = as_seen_at(order, position);
            pairs
                .iter()
                .map(|(candidate, gamma)| {
                    model.weight(gamma, record, as_seen_at(order, *candidate as usize))
                })
                .collect()
        })
        .collect();
    drop(turns);
    clock.lap("score");

    // The blocking index is given the run's records from here, on a thread of its own
    // beside the deciding (which keeps one core busy) and then the store's write. It
    // commits only once the store has: the index is derived data, and its commit
    // payload names the store generation it is level with. (Until then the batch read
    // candidates from its in-memory copy.) If indexing fails, the store still holds the
    // run and the next open rebuilds the index from it.
    let to_index = (!options.dry_run).then(|| {
        let linker = &workspace.linker;
        let order =
            index_order(linker.entries.len(), work, &compared, &weights, options.thresholds);
        IndexRun::new(linker, work, &order)
    });
    let Workspace { store, linker, index, .. } = workspace;
    let index: &BlockingIndex = index;
    let outcome = std::thread::scope(|scope| -> Result<_, LinkError> {
        // The indexing thread prepares its commit and then waits for the store's
        // generation: it commits with it, or drops its changes if the store failed or
        // this closure returned early (the sender is dropped with it).
        let (store_done, store_outcome) = std::sync::mpsc::channel::<Option<u64>>();
        let mut to_index = to_index.map(|run| (run, store_outcome));
        let mut start_indexing = |linker: &Linker| {
            let (run, store_outcome) = to_index.take()?;
            let records = linker.records.share();
            Some(scope.spawn(move || index_in_background(index, run, records, store_outcome)))
        };
        // A run of new records only changes no record's values as it decides, and its
        // records are indexed meanwhile, on the core deciding leaves idle. A run that
        // updates records gives its updates' new values as each one's turn comes, and
        // is indexed once decided: its memory (and the index's 64 MB) would otherwise
        // come on top of the deciding's, near that of its peak.
        let mut indexer = if updates.is_empty() { start_indexing(linker) } else { None };

        let (decisions, retired, nhs_events) = decide_run(
            linker,
            work,
            (compared, weights),
            &mut updates,
            &model,
            options.thresholds,
            progress,
        );
        clock.lap("decide");

        record_outcomes(prepared, work, &decisions, report);
        if indexer.is_none() {
            indexer = start_indexing(linker);
        }
        let Some(indexer) = indexer else {
            // A dry run: nothing is written, and the index stays as the store knows it.
            return Ok(None);
        };
        // The store is written on this thread while the index's records are still
        // being added on the other.
        progress.stage("writing", work.len() as u64);
        let shared: &Linker = linker;
        let items = RunItems::new(prepared, spill.as_ref(), work, &decisions, &report.reviews);
        let context = WriteContext {
            model: &model,
            thresholds: options.thresholds,
            actor: BATCH_ACTOR,
            progress,
        };
        let written = write_results(
            store,
            shared,
            work.len(),
            &|index| items.item(index),
            &retired,
            &context,
            nhs_events,
        );
        let _ = store_done.send(written.as_ref().ok().copied());
        Ok(Some((written, indexer.join())))
    })?;
    let Some((written, indexed)) = outcome else {
        return Ok(());
    };
    written?;
    // What the write freed goes back before the output files are made (on threads of
    // their own, whose allocations would otherwise come on top of it).
    crate::alloc::release_freed_memory();
    linker.settle_new_persons();
    let committed = match indexed {
        Ok(Ok(true)) => index.reload(),
        Ok(Ok(false)) => Ok(()),
        Ok(Err(error)) => Err(error),
        Err(_) => {
            tracing::error!("indexing panicked");
            Ok(())
        }
    };
    if let Err(error) = committed {
        tracing::warn!(%error, "the blocking index was not updated; it is rebuilt on next open");
    }
    clock.lap("write and index");
    Ok(())
}

/// Decides a run's records in input order, each against the candidates scored for it
/// (an update's new values taking effect at its turn), freeing each record's pairs once
/// decided. Returns the decisions, the persons emptied (with the person each went
/// into) and the feed's events for persons whose golden NHS number changed.
fn decide_run(
    linker: &mut Linker,
    work: &[(usize, usize, bool)],
    (compared, weights): (Vec<Vec<ComparedPair>>, Vec<Box<[f64]>>),
    updates: &mut HashMap<usize, ComparableRecord>,
    model: &Model,
    thresholds: Thresholds,
    progress: &dyn Progress,
) -> (Vec<Decision>, Vec<(PersonKey, PersonKey)>, Vec<Event>) {
    progress.stage("deciding", work.len() as u64);
    let mut decisions: Vec<Decision> = Vec::with_capacity(work.len());
    let mut retired: Vec<(PersonKey, PersonKey)> = Vec::new();
    // The golden NHS number of each existing person the run touches, as it was
    // before the run first touched it, to tell the feed whose NHS number changed.
    let mut nhs_before: HashMap<PersonKey, Option<String>> = HashMap::new();
    // Room for a new person for every record, reserved now: grown by doubling, the
    // persons would briefly be held twice. (Not so the id map: a hash map touches
    // all its room as it fills.)
    linker.persons.reserve(work.len());
    // Each record's pairs are freed once it is decided, and the freed pages go back
    // to the OS every so often: the pairs were the largest thing a batch held, and
    // the persons and decisions grow as they go.
    for (order, ((&(_, position, _), pairs), weights)) in
        work.iter().zip(compared).zip(weights).enumerate()
    {
        if order % DECIDE_RELEASE_EVERY == DECIDE_RELEASE_EVERY - 1 {
            crate::alloc::release_freed_memory();
        }
        // An update's new values take effect at its turn.
        if let Some(record) = updates.remove(&position) {
            linker.records.set(position, record);
        }
        let candidates: Vec<ScoredCandidate> = pairs
            .iter()
            .zip(&weights)
            .map(|(&(candidate, gamma), &weight)| (candidate, gamma, weight))
            .collect();
        drop((pairs, weights));
        let mut decision = linker.decide(position, &candidates, model, thresholds);
        drop(candidates);
        for person in [decision.person, linker.entries[position].person] {
            if person != PersonKey::MAX && !linker.persons[person as usize].is_new {
                nhs_before
                    .entry(person)
                    .or_insert_with(|| linker.person_nhs_number(person, None).map(str::to_owned));
            }
        }
        if let Some(emptied) = linker.apply(position, &mut decision) {
            retired.push((emptied, decision.person));
        }
        if decision.kind != DecisionKind::Review {
            // Only a review keeps its candidate persons (the store lists them with it).
            decision.candidates = Vec::new();
        }
        decisions.push(decision);
        progress.advance(1);
    }
    crate::alloc::release_freed_memory();
    // (Ids sort as their text does.)
    let mut nhs_changed: Vec<uuid::Uuid> = nhs_before
        .iter()
        .filter(|&(&person, before)| {
            !linker.persons[person as usize].members.is_empty()
                && linker.person_nhs_number(person, None) != before.as_deref()
        })
        .map(|(&person, _)| linker.persons[person as usize].id)
        .collect();
    nhs_changed.sort_unstable();
    let nhs_events: Vec<Event> = nhs_changed
        .into_iter()
        .map(|person| Event::new("nhs_number_changed", person, None))
        .collect();
    drop(nhs_before);
    (decisions, retired, nhs_events)
}

/// A batch's records as the blocking index is given them, in [`index_order`].
struct IndexRun {
    /// Stored records the run updates: their old keys go first.
    updated: Vec<RecordId>,
    /// Each record's id and position, in chunks, each freed once indexed (this is held
    /// through the write, to its peak).
    order: Vec<Vec<(RecordId, u32)>>,
}

impl IndexRun {
    fn new(linker: &Linker, work: &[(usize, usize, bool)], order: &[usize]) -> IndexRun {
        let updated = work
            .iter()
            .filter(|&&(_, _, is_update)| is_update)
            .map(|&(_, position, _)| linker.entries[position].id)
            .collect();
        let order = order
            .chunks(INDEX_CHUNK)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|&position| (linker.entries[position].id, compact_position(position)))
                    .collect()
            })
            .collect();
        IndexRun { updated, order }
    }
}

/// The order in which a batch's records are best given to the index, known before
/// they are decided. One person's records share most of their keys, and in one index
/// segment together they put each shared key in its term dictionary once (at a million
/// records, records in person order took a third off the dictionaries and two fifths
/// off the indexing threads' CPU). The persons are made only as the records are
/// decided, so records are grouped here by the pairs scored at or above the upper
/// threshold, which deciding mostly links: by group (its first position), then by
/// position.
fn index_order(
    n_positions: usize,
    work: &[(usize, usize, bool)],
    compared: &[Vec<ComparedPair>],
    weights: &[Box<[f64]>],
    thresholds: Thresholds,
) -> Vec<usize> {
    fn root(parent: &mut [u32], mut at: u32) -> u32 {
        while parent[at as usize] != at {
            let up = parent[parent[at as usize] as usize];
            parent[at as usize] = up;
            at = up;
        }
        at
    }
    let sure = (thresholds.upper / (1.0 - thresholds.upper)).log2();
    let mut parent: Vec<u32> = (0..compact_position(n_positions)).collect();
    for ((&(_, position, _), pairs), weights) in work.iter().zip(compared).zip(weights) {
        for (&(candidate, _), &weight) in pairs.iter().zip(weights.iter()) {
            if weight >= sure {
                let a = root(&mut parent, compact_position(position));
                let b = root(&mut parent, candidate);
                // The first position is a group's root.
                parent[a.max(b) as usize] = a.min(b);
            }
        }
    }
    let mut keyed: Vec<(u32, usize)> = work
        .iter()
        .map(|&(_, position, _)| (root(&mut parent, compact_position(position)), position))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, position)| position).collect()
}

/// Adds a run's records to the blocking index (replacing updated ones), at a lower
/// priority, then prepares the commit and waits for the store's generation: commits
/// with it, or drops the changes when the store failed. Returns whether it committed.
fn index_in_background(
    index: &BlockingIndex,
    run: IndexRun,
    records: Arc<Vec<ComparableRecord>>,
    store_outcome: std::sync::mpsc::Receiver<Option<u64>>,
) -> Result<bool, mpi_index::IndexError> {
    crate::priority::run_in_background();
    let started = Instant::now();
    let mut writer = index.bulk_writer(INDEX_WRITER_BUDGET)?;
    // The updated records' old keys go in one operation, before any new keys are added.
    writer.delete_many(&run.updated)?;
    for chunk in run.order {
        for (id, position) in chunk {
            writer.add(id, &blocking_keys(&records[position as usize]))?;
        }
    }
    // (The linker may change its records again once this share is gone.)
    drop(records);
    let added = started.elapsed().as_secs_f64();
    let committed = writer.commit_when(|| {
        let prepared = started.elapsed().as_secs_f64();
        tracing::debug!(added, prepared, "index: documents added, commit prepared");
        store_outcome.recv().ok().flatten().map(index_payload)
    });
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "index: committed");
    committed
}

fn record_outcomes(
    prepared: &[Prepared],
    work: &[(usize, usize, bool)],
    decisions: &[Decision],
    report: &mut LinkReport,
) {
    for (&(item_index, position, _), decision) in work.iter().zip(decisions) {
        let outcome = &mut report.outcomes[prepared[item_index].outcome_index];
        outcome.position = Some(compact_position(position));
        outcome.decision = RowDecision::Decided(decision.kind);
        outcome.probability = decision.probability;
        match decision.kind {
            DecisionKind::Linked => report.n_linked += 1,
            DecisionKind::New => report.n_new += 1,
            DecisionKind::Review => {
                report.n_review += 1;
                report.reviews.push(OpenedReview {
                    id: uuid::Uuid::new_v4().to_string(),
                    position,
                    reason: decision.reason.unwrap_or(ReviewReason::Uncertain),
                    candidates: decision
                        .candidates
                        .iter()
                        .map(|candidate| (candidate.best_position, candidate.probability))
                        .collect(),
                });
            }
        }
    }
}

/// The evidence stored with a link or review: the score, the model version and each
/// present field's level and weight (missing fields are left out to keep a million
/// links small), as compact JSON.
pub fn evidence_json(score: &mpi_matching::Score, model_version: u32) -> String {
    /// The evidence's JSON, written straight from borrowed values (building a
    /// `serde_json::Value` first took over a third of the CPU that makes a batch's
    /// rows for the store); its keys in the alphabetical order a `Value` object writes
    /// them in, so stored evidence reads as it always has.
    #[derive(serde::Serialize)]
    struct Evidence<'a> {
        fields: Vec<(&'a str, &'a str, f64)>,
        model_version: u32,
        prior: f64,
        probability: f64,
        same_household: bool,
        weight: f64,
    }
    let thousandths = |value: f64| (value * 1000.0).round() / 1000.0;
    let evidence = Evidence {
        fields: score
            .contributions
            .iter()
            .filter(|contribution| contribution.level != "missing")
            .map(|contribution| {
                (&*contribution.field, &*contribution.level, thousandths(contribution.weight))
            })
            .collect(),
        model_version,
        prior: thousandths(score.prior),
        probability: score.probability,
        same_household: score.same_household,
        weight: thousandths(score.weight),
    };
    serde_json::to_string(&evidence).expect("plain data always serialises")
}

/// What every write of a run shares: the model and thresholds that decided, and who
/// is writing.
#[derive(Clone, Copy)]
pub struct WriteContext<'a> {
    /// The model used.
    pub model: &'a Model,
    /// The thresholds in force.
    pub thresholds: Thresholds,
    /// An API key id, or [`BATCH_ACTOR`].
    pub actor: &'a str,
    /// Told of each record as its rows are made, and of the store's finishing.
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for WriteContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteContext")
            .field("model_version", &self.model.version)
            .field("thresholds", &self.thresholds)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// One record's outcome to write to the store.
#[derive(Clone, Copy, Debug)]
pub struct WriteItem<'a> {
    /// The record's position in the linker.
    pub position: usize,
    /// Its raw values.
    pub raw: RawValues<'a>,
    /// Issues found normalising it.
    pub issues: &'a [Issue],
    /// True when the record was already in the store.
    pub is_update: bool,
    /// Its decision (already applied to the linker).
    pub decision: &'a Decision,
    /// The id of the review it opened, if any.
    pub review_id: Option<&'a str>,
}

/// Writes records' outcomes to the store in one transaction: the records, their new
/// persons, links with evidence, reviews, and persons left empty. Returns the store's
/// new generation.
///
/// # Errors
/// When the store fails; nothing is written then.
///
/// `item(i)` gives the `i`-th of `n_items` records to write, in decision order; a run's
/// items are made a chunk at a time, as they are written.
pub fn write_results<'a>(
    store: &mut Store,
    linker: &'a Linker,
    n_items: usize,
    item: &(dyn Fn(usize) -> WriteItem<'a> + Sync),
    retired: &[(PersonKey, PersonKey)],
    context: &WriteContext<'_>,
    extra_events: Vec<Event>,
) -> Result<u64, LinkError> {
    let actor = context.actor;
    let shape = BatchShape {
        actor,
        n_records: n_items,
        all_new: (0..n_items).all(|index| !item(index).is_update),
    };
    let mut seen_new_persons = std::collections::HashSet::with_capacity(n_items / 2);
    let mut extra_events = Some(extra_events);
    // A chunk at a time: its evidence is made in parallel, its rows handed to the
    // store, and both freed before the next (a million links' evidence and rows at
    // once would be most of a batch's memory). The last chunk (the only one, even
    // if empty, for a small write) carries the retirements and the extra events.
    let n_chunks = n_items.div_ceil(WRITE_CHUNK).max(1);
    let mut make = |index: usize| -> Result<Batch<'a>, crate::error::StoreError> {
        let chunk: Vec<WriteItem<'a>> =
            (index * WRITE_CHUNK..n_items.min((index + 1) * WRITE_CHUNK)).map(item).collect();
        let mut batch = chunk_batch(linker, &chunk, context, &mut seen_new_persons)?;
        context.progress.advance(chunk.len() as u64);
        if index + 1 == n_chunks {
            for &(emptied, survivor) in retired {
                let (emptied, survivor) =
                    (&linker.persons[emptied as usize].id, &linker.persons[survivor as usize].id);
                batch.events.push(Event::new("person_retired", emptied, None).other(survivor));
                batch.retired_persons.push((emptied.to_string(), survivor.to_string()));
            }
            batch.events.extend(extra_events.take().unwrap_or_default());
        }
        Ok(batch)
    };
    Ok(store.write_batch_chunks(&shape, |write| {
        if n_chunks == 1 {
            return write(&make(0)?);
        }
        // The store's inserts, on this thread, are the write's longest chain: the next
        // chunk's rows and JSON are made on another thread meanwhile, one chunk ahead.
        std::thread::scope(|scope| {
            let (sender, made) = std::sync::mpsc::sync_channel::<Result<Batch<'a>, _>>(1);
            scope.spawn(move || {
                for index in 0..n_chunks {
                    let batch = make(index);
                    let stop = batch.is_err();
                    if sender.send(batch).is_err() || stop {
                        break;
                    }
                    // A large write's chunks free as much as they allocate.
                    crate::alloc::release_freed_memory();
                }
            });
            // An error here drops `made`, and the maker stops at its next chunk.
            for batch in made {
                write(&batch?)?;
            }
            // The store then builds its indexes and commits, for a while untold.
            context.progress.stage("committing", 0);
            Ok(())
        })
    })?)
}

/// Records a batch hands the store at a time.
const WRITE_CHUNK: usize = 5_000;

/// The spilled rows of a chunk's items, read at once (a batch's rows are all in one
/// spill, or none is).
fn spill_window(items: &[WriteItem<'_>]) -> Result<SpillWindow, crate::error::StoreError> {
    let spilled = items.iter().filter_map(|item| match item.raw {
        RawValues::Spilled(spill, index) => Some((spill, index)),
        RawValues::Held(_) => None,
    });
    let Some((spill, _)) = spilled.clone().next() else {
        return Ok(SpillWindow::default());
    };
    spill.window(spilled.map(|(_, index)| index)).map_err(crate::error::StoreError::TempFile)
}

/// One chunk's rows for the store: its records, new persons (each once over the whole
/// run: `seen_new_persons`), links with evidence, reviews and events.
fn chunk_batch<'a>(
    linker: &'a Linker,
    items: &[WriteItem<'a>],
    context: &WriteContext<'_>,
    seen_new_persons: &mut std::collections::HashSet<PersonKey>,
) -> Result<Batch<'a>, crate::error::StoreError> {
    let WriteContext { model, thresholds, actor, .. } = *context;
    // Evidence and values as JSON, made in parallel.
    let window = spill_window(items)?;
    type Made<'a> = (Option<String>, std::borrow::Cow<'a, str>, String, String);
    let made: Vec<Made<'a>> = items
        .par_iter()
        .map(|item| {
            let evidence = (item.decision.kind != DecisionKind::New)
                .then(|| linker.evidence(item.position, item.decision, model))
                .flatten()
                .map(|score| evidence_json(&score, model.version));
            let normalized = linker.records[item.position].to_normalized();
            Ok((
                evidence,
                item.raw.json(&window)?,
                crate::store::json(&normalized),
                crate::store::json(&item.issues),
            ))
        })
        .collect::<Result<_, crate::error::StoreError>>()?;
    let mut batch = Batch {
        actor: actor.to_owned(),
        records: Vec::with_capacity(items.len()),
        links: Vec::with_capacity(items.len()),
        ..Batch::default()
    };
    for (item, (mut evidence, raw, normalized, issues)) in items.iter().zip(made) {
        let decision = item.decision;
        let entry = &linker.entries[item.position];
        if item.is_update {
            batch.updated_records.insert(entry.id);
        }
        let person = &linker.persons[decision.person as usize];
        let person_id = person.id.to_string();
        batch.records.push(RecordWrite {
            id: entry.id,
            source_system: &entry.source_system,
            local_id: &entry.local_id,
            raw,
            normalized,
            issues,
            person_id: person_id.clone().into(),
            decision: decision.kind.as_str(),
            probability: decision.probability,
        });
        if person.is_new && seen_new_persons.insert(decision.person) {
            // (The store adds its `person_created` event.)
            batch.new_persons.push((person_id.clone(), person.provisional));
        }
        if decision.previous != PersonKey::MAX && decision.previous != decision.person {
            let previous = &linker.persons[decision.previous as usize].id;
            batch.events.push(
                Event::new("record_unlinked", previous, Some(entry.id))
                    .other(&person_id)
                    .detail(serde_json::json!({"reason": "updated"})),
            );
        }
        // A new record's `record_linked` event is the store's to add.
        if item.is_update && decision.previous != decision.person {
            batch.events.push(
                Event::new("record_linked", &person_id, Some(entry.id))
                    .detail(serde_json::json!({"decision": decision.kind})),
            );
        }
        let matched_id = decision.matched_position.map(|matched| linker.entries[matched].id);
        let linked = decision.kind == DecisionKind::Linked;
        batch.links.push(LinkWrite {
            record_id: entry.id,
            person_id: person_id.into(),
            matched_record_id: if linked { matched_id } else { None },
            method: "automatic",
            probability: decision.probability,
            // A link's evidence moves into it; a review's (never both) into the review.
            evidence: if linked { evidence.take() } else { None },
            model_version: Some(model.version),
            upper: thresholds.upper,
            lower: thresholds.lower,
        });
        if let Some(review_id) = item.review_id {
            batch
                .events
                .push(Event::new("review_opened", person.id, Some(entry.id)).detail(
                    serde_json::json!({"review_id": review_id, "reason": decision.reason}),
                ));
            batch.reviews.push(ReviewWrite {
                id: review_id,
                record_id: entry.id,
                candidate_persons: serde_json::to_string(&decision.candidates)
                    .expect("candidates serialise"),
                best_record_id: matched_id,
                probability: decision.probability.unwrap_or_default(),
                reason: decision.reason.map_or("", |reason| reason.as_str()),
                reason_code: decision.reason.map_or("uncertain", |reason| reason.code()),
                priority: decision.reason.map_or(4, |reason| reason.priority()),
                evidence: evidence.take(),
            });
        }
    }
    Ok(batch)
}

/// The store items of a link run's decided records, made one at a time as they are
/// written.
struct RunItems<'a> {
    prepared: &'a [Prepared],
    /// Where the raw values went, if they left `prepared`.
    spill: Option<&'a RawSpill>,
    work: &'a [(usize, usize, bool)],
    decisions: &'a [Decision],
    review_by_position: HashMap<usize, &'a OpenedReview>,
}

impl<'a> RunItems<'a> {
    fn new(
        prepared: &'a [Prepared],
        spill: Option<&'a RawSpill>,
        work: &'a [(usize, usize, bool)],
        decisions: &'a [Decision],
        reviews: &'a [OpenedReview],
    ) -> RunItems<'a> {
        let review_by_position = reviews.iter().map(|review| (review.position, review)).collect();
        RunItems { prepared, spill, work, decisions, review_by_position }
    }

    /// The `index`-th decided record's item.
    fn item(&self, index: usize) -> WriteItem<'a> {
        let (item_index, position, is_update) = self.work[index];
        WriteItem {
            position,
            raw: match self.spill {
                Some(spill) => RawValues::Spilled(spill, item_index),
                None => RawValues::Held(&self.prepared[item_index].raw),
            },
            issues: &self.prepared[item_index].issues,
            is_update,
            decision: &self.decisions[index],
            review_id: self.review_by_position.get(&position).map(|review| review.id.as_str()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn link_online(
    workspace: &mut Workspace,
    prepared: &[Prepared],
    work: &[(usize, usize, bool)],
    mut updates: HashMap<usize, ComparableRecord>,
    model: (Model, ModelSource),
    options: &LinkOptions,
    report: &mut LinkReport,
    progress: &dyn Progress,
    clock: &mut Stopwatch,
) -> Result<(), LinkError> {
    let (model, source) = model;
    report.model_version = model.version;
    report.crowded_birth_dates = crowded_birth_dates(&model);
    report.model_source = Some(source);
    progress.stage("linking one by one", work.len() as u64);
    // The service's index: each change is seen by the next row at once, and commits
    // come at most once a second (the store holds every row already; an index left
    // behind it catches up from the store when the folder is next opened).
    let mut index = mpi_index::LiveIndex::new(workspace.index.clone(), INDEX_WRITER_BUDGET / 4)?;
    // The store's generation after the last row written.
    let mut generation = None;
    for &(item_index, position, is_update) in work {
        if let Some(record) = updates.remove(&position) {
            workspace.linker.records.set(position, record);
        }
        let id = workspace.linker.entries[position].id;
        let keys = blocking_keys(&workspace.linker.records[position]);
        let (decision, emptied, n_pairs) = crate::online::decide_one(
            &mut workspace.linker,
            &index,
            position,
            &keys,
            &model,
            options.thresholds,
            options.max_candidates,
        )?;
        report.n_pairs += n_pairs as u64;
        let retired: Vec<(PersonKey, PersonKey)> =
            emptied.map(|emptied| (emptied, decision.person)).into_iter().collect();
        let single = [(item_index, position, is_update)];
        let mut step_report =
            LinkReport { outcomes: std::mem::take(&mut report.outcomes), ..LinkReport::default() };
        record_outcomes(prepared, &single, std::slice::from_ref(&decision), &mut step_report);
        report.outcomes = std::mem::take(&mut step_report.outcomes);
        report.n_linked += step_report.n_linked;
        report.n_new += step_report.n_new;
        report.n_review += step_report.n_review;
        report.reviews.extend(step_report.reviews.iter().cloned());
        if !options.dry_run {
            let items = RunItems::new(
                prepared,
                None,
                &single,
                std::slice::from_ref(&decision),
                &step_report.reviews,
            );
            let written = write_results(
                &mut workspace.store,
                &workspace.linker,
                1,
                &|index| items.item(index),
                &retired,
                &WriteContext {
                    model: &model,
                    thresholds: options.thresholds,
                    actor: BATCH_ACTOR,
                    progress: &NoProgress,
                },
                Vec::new(),
            )?;
            workspace.linker.settle_new_persons();
            if is_update {
                index.update(id, &keys)?;
            } else {
                index.add(id, &keys)?;
            }
            if index.uncommitted().is_some_and(|since| since.elapsed().as_secs() >= 1) {
                index.commit(&index_payload(written))?;
            }
            generation = Some(written);
        }
        progress.advance(1);
    }
    if let Some(generation) = generation
        && index.uncommitted().is_some()
    {
        index.commit(&index_payload(generation))?;
    }
    drop(index);
    workspace.index.reload()?;
    clock.lap("link online");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpi_matching::Identifier;
    use quickcheck_macros::quickcheck;

    #[test]
    fn a_repeated_id_names_its_last_row_and_a_shared_hash_is_no_repeat() {
        // Rows 0, 2 and 4 are one id; rows 1 and 3 share its hash but not the id (a
        // collision); row 5 is alone.
        let ids = ["a", "b", "a", "c", "a", "d"];
        let hashes = IdHashes(vec![(9, 0), (9, 1), (9, 2), (9, 3), (9, 4), (4, 5)]);
        let repeats = hashes.repeats(|x, y| ids[x] == ids[y]);
        assert_eq!(repeats, [(0, 4), (2, 4)]);
        let real = IdHashes::new([("s", "1"), ("s", "2"), ("t", "1"), ("s", "1")].into_par_iter());
        let rows = [("s", "1"), ("s", "2"), ("t", "1"), ("s", "1")];
        assert_eq!(real.repeats(|x, y| rows[x] == rows[y]), [(0, 3)]);
    }

    #[test]
    fn the_index_is_given_every_record_of_the_run_once_by_group() {
        // Positions 0-1 are stored; the run is 2-7 (its work in input order). Pairs at
        // or above the upper threshold join 2 with 6 and, through stored record 0, 5
        // with 7; a pair below it (3 with 4) joins nothing.
        let work: Vec<(usize, usize, bool)> =
            (2..8).enumerate().map(|(item, position)| (item, position, false)).collect();
        let pair = |candidate: u32| (candidate, mpi_matching::Gamma([0; mpi_matching::N_FIELDS]));
        // Above the upper threshold's weight, log2(0.999 / 0.001), about 10 bits.
        let sure = 20.0;
        let compared = vec![
            vec![],                 // 2
            vec![],                 // 3
            vec![pair(3)],          // 4, with 3: unsure
            vec![pair(0)],          // 5, with stored 0
            vec![pair(2), pair(4)], // 6, with 2 (sure) and 4 (unsure)
            vec![pair(0), pair(5)], // 7, with 0 and 5
        ];
        let weights: Vec<Box<[f64]>> = vec![
            Box::new([]),
            Box::new([]),
            Box::new([1.0]),
            Box::new([sure]),
            Box::new([sure, -3.0]),
            Box::new([sure, sure]),
        ];
        let thresholds = Thresholds { upper: 0.999, lower: 0.3 };
        let order = index_order(8, &work, &compared, &weights, thresholds);
        // Groups by their first position: {0: 5, 7}, {2: 2, 6}, {3}, {4}.
        assert_eq!(order, [5, 7, 2, 6, 3, 4]);
    }

    #[test]
    fn evidence_is_compact_json_with_missing_fields_left_out() {
        let contribution = |field: &str, level: &str, weight: f64| mpi_matching::Contribution {
            field: field.to_owned().into(),
            level: level.to_owned().into(),
            weight,
            tf_adjusted: false,
            household: false,
        };
        let score = mpi_matching::Score {
            weight: 12.345_67,
            probability: 0.999_75,
            prior: -19.0004,
            same_household: false,
            contributions: vec![
                contribution("nhs_number", "missing", 0.0),
                contribution("given_name", "nickname", 3.993_21),
                contribution("family_name", "exact", 5.2),
            ],
        };
        // The stored form the service and `mpi explain` read back: keys in alphabetical
        // order, weights to the thousandth, the probability in full.
        assert_eq!(
            evidence_json(&score, 7),
            r#"{"fields":[["given_name","nickname",3.993],["family_name","exact",5.2]],"model_version":7,"prior":-19.0,"probability":0.99975,"same_household":false,"weight":12.346}"#
        );
    }

    fn demographics(
        values: Vec<Option<String>>,
        identifiers: Vec<(String, String)>,
    ) -> Demographics {
        let identifiers =
            identifiers.into_iter().map(|(system, value)| Identifier { system, value }).collect();
        Demographics::from_values(values, identifiers)
    }

    #[quickcheck]
    fn held_raw_values_give_back_the_same_json_and_values(
        values: Vec<Option<String>>,
        identifiers: Vec<(String, String)>,
        month_first: bool,
    ) -> bool {
        let mut raw = demographics(values, identifiers);
        if month_first {
            raw.date_order = DateOrder::MonthFirst;
        }
        let held = HeldRaw::new(&raw);
        // Marked afterwards, the values hold as if read month first from the start.
        let mut marked = held.clone();
        marked.mark_month_first();
        let us = Demographics { date_order: DateOrder::MonthFirst, ..raw.clone() };
        held.json() == raw_json(&raw)
            && held.demographics() == raw
            && marked.demographics() == us
            && marked.json() == raw_json(&us)
            && marked.is_packed() == held.is_packed()
    }

    #[test]
    fn ordinary_raw_values_are_packed_and_awkward_ones_kept_as_json() {
        let ordinary = demographics(
            vec![Some("943 476 5919".into()), None, Some("Smith".into())],
            vec![("ssn".into(), "123".into())],
        );
        assert!(HeldRaw::new(&ordinary).is_packed());
        assert_eq!(HeldRaw::new(&ordinary).json(), raw_json(&ordinary));
        // A month-first sender's values pack too, and keep their order.
        let us = Demographics { date_order: DateOrder::MonthFirst, ..ordinary };
        assert!(HeldRaw::new(&us).is_packed());
        assert_eq!(HeldRaw::new(&us).demographics(), us);
        assert!(HeldRaw::new(&us).json().ends_with(r#""date_order":"month_first"}"#));
        for awkward in [Some(String::new()), Some("a\u{1f}b".into()), Some("a\u{1e}".into())] {
            let raw = demographics(vec![None, awkward], Vec::new());
            assert!(!HeldRaw::new(&raw).is_packed());
            assert_eq!(HeldRaw::new(&raw).json(), raw_json(&raw));
        }
    }

    /// A row for a property: its values in field order and its identifiers.
    type RowValues = (Vec<Option<String>>, Vec<(String, String)>);

    #[quickcheck]
    fn spilled_raw_values_come_back_as_the_same_json(
        rows: Vec<RowValues>,
        window: (usize, usize),
    ) -> bool {
        let raws: Vec<Demographics> =
            rows.into_iter().map(|(values, ids)| demographics(values, ids)).collect();
        let mut prepared: Vec<Prepared> = raws
            .iter()
            .enumerate()
            .map(|(outcome_index, raw)| Prepared {
                outcome_index,
                raw: HeldRaw::new(raw),
                issues: Box::default(),
            })
            .collect();
        let dir = tempfile::tempdir().expect("temporary folder");
        // In two appends, as the normalise pass writes it a chunk at a time.
        let mut spill = RawSpill::new(dir.path()).expect("spill");
        let half = prepared.len() / 2;
        let (first, second) = prepared.split_at_mut(half);
        spill.append(first).expect("first chunk");
        spill.append(second).expect("second chunk");
        // The values left memory, and every row reads back whole, in any order: alone,
        // and from a window read over some of the rows (the rows outside it alone).
        let n = raws.len().max(1);
        let window =
            spill.window([window.0 % n, window.1 % n].into_iter().filter(|_| !raws.is_empty()));
        let window = window.expect("window read");
        prepared.iter().all(|item| item.raw.0.is_empty())
            && (0..raws.len()).rev().all(|index| {
                let alone = spill.json(index, &SpillWindow::default()).expect("read back");
                alone == raw_json(&raws[index])
                    && spill.json(index, &window).expect("read from the window") == alone
            })
    }
}
