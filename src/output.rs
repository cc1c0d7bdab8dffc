//! Output files of `mpi link` and `mpi export`: results, reviews and errors, as CSV.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::engine::Linker;
use crate::input::RowError;
use crate::link::LinkReport;

/// The results file's leading columns, in the contract's order.
pub const RESULT_COLUMNS: [&str; 6] =
    ["source_system", "local_id", "person_id", "decision", "match_probability", "nhs_number"];

/// `FILE.reviews.csv` and `FILE.errors.csv` beside `FILE`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A probability as the output files write it (six decimals; empty when there is none),
/// into `text` after what it holds.
fn push_probability(text: &mut String, probability: Option<f64>) {
    if let Some(probability) = probability {
        write!(text, "{probability:.6}").expect("writing to a string never fails");
    }
}

fn probability_text(probability: Option<f64>) -> String {
    let mut text = String::new();
    push_probability(&mut text, probability);
    text
}

/// Writes the results: every input row, in input order, with its person and decision.
///
/// # Errors
/// When writing fails.
pub fn write_results<W: Write>(
    out: W,
    report: &LinkReport,
    linker: &Linker,
    files: &[PathBuf],
) -> csv::Result<()> {
    let nhs_numbers = linker.person_nhs_numbers();
    let files: Vec<String> = files.iter().map(|path| path.display().to_string()).collect();
    let mut writer = csv::Writer::from_writer(out);
    let mut header: Vec<&str> = RESULT_COLUMNS.to_vec();
    header.extend(["input_file", "line"]);
    writer.write_record(&header)?;
    // A million rows: each field is written from a buffer used again, not a string
    // made for it.
    let mut person_id = uuid::Uuid::encode_buffer();
    let mut number = String::new();
    for outcome in &report.outcomes {
        let (source_system, local_id) = outcome.ids(linker);
        writer.write_field(source_system)?;
        writer.write_field(local_id)?;
        let nhs = match outcome.position() {
            Some(position) => {
                let person = linker.entries[position].person as usize;
                writer.write_field(
                    linker.persons[person].id.hyphenated().encode_lower(&mut person_id),
                )?;
                nhs_numbers[person].unwrap_or("")
            }
            None => {
                writer.write_field("")?;
                ""
            }
        };
        writer.write_field(outcome.decision.as_str())?;
        number.clear();
        push_probability(&mut number, outcome.probability);
        writer.write_field(&number)?;
        writer.write_field(nhs)?;
        writer.write_field(files.get(outcome.file as usize).map_or("", String::as_str))?;
        number.clear();
        write!(number, "{}", outcome.line).expect("writing to a string never fails");
        writer.write_field(&number)?;
        writer.write_record(None::<&[u8]>)?;
    }
    writer.flush()?;
    Ok(())
}

/// Writes the reviews the run opened: the record, a candidate, the probability, why;
/// a row for each candidate person, the best first, under one review id (a record
/// that matches two persons above the upper threshold names both).
///
/// # Errors
/// When writing fails.
pub fn write_reviews<W: Write>(out: W, report: &LinkReport, linker: &Linker) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record([
        "review_id",
        "source_system",
        "local_id",
        "person_id",
        "candidate_source_system",
        "candidate_local_id",
        "candidate_person_id",
        "match_probability",
        "reason",
    ])?;
    for review in &report.reviews {
        let record = &linker.entries[review.position];
        for &(position, probability) in &review.candidates {
            let candidate = &linker.entries[position];
            writer.write_record([
                review.id.as_str(),
                &record.source_system,
                &record.local_id,
                &linker.persons[record.person as usize].id.to_string(),
                &candidate.source_system,
                &candidate.local_id,
                &linker.persons[candidate.person as usize].id.to_string(),
                &probability_text(Some(probability)),
                review.reason.as_str(),
            ])?;
        }
    }
    writer.flush()?;
    Ok(())
}

/// Writes rejected rows and ignored values: line, field, reason, action.
///
/// # Errors
/// When writing fails.
pub fn write_errors<W: Write>(
    out: W,
    report: &LinkReport,
    linker: &Linker,
    rejected: &[RowError],
    files: &[PathBuf],
) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record([
        "input_file",
        "line",
        "source_system",
        "local_id",
        "field",
        "reason",
        "action",
    ])?;
    let file_name =
        |index: usize| files.get(index).map(|path| path.display().to_string()).unwrap_or_default();
    let mut rows: Vec<(usize, u64, [String; 5])> = Vec::new();
    for error in rejected {
        rows.push((
            error.file,
            error.line,
            [
                error.source_system.clone().unwrap_or_default(),
                error.local_id.clone().unwrap_or_default(),
                error.field.clone(),
                error.reason.clone(),
                "row rejected".to_owned(),
            ],
        ));
    }
    for (outcome_index, issue) in &report.issues {
        let outcome = &report.outcomes[*outcome_index];
        let (source_system, local_id) = outcome.ids(linker);
        rows.push((
            outcome.file as usize,
            outcome.line,
            [
                source_system.to_owned(),
                local_id.to_owned(),
                issue.field.as_str().to_owned(),
                issue.kind.reason().to_owned(),
                "row kept, value ignored for matching".to_owned(),
            ],
        ));
    }
    rows.sort_by_key(|row| (row.0, row.1));
    for (file, line, fields) in rows {
        let [source, local, field, reason, action] = fields;
        writer.write_record([
            file_name(file),
            line.to_string(),
            source,
            local,
            field,
            reason,
            action,
        ])?;
    }
    writer.flush()?;
    Ok(())
}
