//! Reading input files: CSV with a header, canonical columns or a column mapping.
//!
//! A row is rejected only when it cannot be read as a record: broken CSV structure,
//! no `local_id`, or bytes that are not UTF-8. Unusable values are not row errors:
//! normalisation reports them and the row proceeds. A file that is not CSV text at
//! all (no `local_id` column, UTF-16) fails as a whole before anything is written.

use std::path::Path;
use std::sync::Arc;

use mpi_matching::{DateOrder, Demographics, Field, Identifier, date_order_evidence, is_title};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::InputError;
use crate::link::HeldRaw;

/// Where a column's values go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A canonical field.
    Field(Field),
    /// Another identifier of this system.
    Identifier(String),
    /// A whole name in one value (`SMITH, John`, `John Smith`, `Mr John SMITH`), split
    /// into given and family names as it is read (see [`split_full_name`]).
    FullName,
    /// A title (`Mr`, `Mrs`, `Dr`), put before the given names, where the normaliser
    /// reads it (and takes the sex it says when the record gives none). A value that is
    /// not a title is not read.
    Title,
}

impl Target {
    /// The name a `--map` entry gives it.
    pub fn name(&self) -> String {
        match self {
            Target::Field(field) => field.as_str().to_owned(),
            Target::Identifier(system) => format!("id:{system}"),
            Target::FullName => "full_name".to_owned(),
            Target::Title => "title".to_owned(),
        }
    }
}

/// Column-to-field mapping given with `--map COLUMN=FIELD` or a mapping file.
#[derive(Clone, Debug, Default)]
pub struct ColumnMap {
    entries: Vec<(String, Target)>,
}

impl ColumnMap {
    /// Parses `COLUMN=FIELD` entries, FIELD being a canonical column or `id:SYSTEM`.
    ///
    /// # Errors
    /// [`InputError::Mapping`] for an entry without `=`, an unknown field or an empty
    /// identifier system.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<ColumnMap, InputError> {
        let mut map = ColumnMap::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let bad = |reason: &str| InputError::Mapping {
                entry: entry.to_owned(),
                reason: reason.to_owned(),
            };
            let (column, field) =
                entry.split_once('=').ok_or_else(|| bad("expected COLUMN=FIELD"))?;
            let (column, field) = (column.trim(), field.trim());
            if column.is_empty() {
                return Err(bad("empty column name"));
            }
            let target = if let Some(system) = field.strip_prefix("id:") {
                if system.trim().is_empty() {
                    return Err(bad("empty identifier system after id:"));
                }
                Target::Identifier(system.trim().to_owned())
            } else if field == "full_name" {
                Target::FullName
            } else if field == "title" {
                Target::Title
            } else {
                Target::Field(Field::from_column(field).ok_or_else(|| {
                    bad("unknown field; use a canonical column name, full_name, title or id:SYSTEM")
                })?)
            };
            map.entries.push((column.to_owned(), target));
        }
        Ok(map)
    }

    /// Reads a mapping file: one `COLUMN=FIELD` a line, `#` starts a comment.
    ///
    /// # Errors
    /// When the file cannot be read or an entry is malformed.
    pub fn from_file(path: &Path) -> Result<ColumnMap, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| InputError::Io { path: path.to_owned(), source })?;
        let entries: Vec<&str> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .collect();
        ColumnMap::parse(&entries)
    }

    /// Adds another map's entries after this one's.
    pub fn extend(&mut self, other: ColumnMap) {
        self.entries.extend(other.entries);
    }

    /// The targets of a header column: mapped entries first, else the canonical
    /// column of that name, else none (ignored).
    fn targets(&self, column: &str) -> Vec<Target> {
        let mapped: Vec<Target> = self
            .entries
            .iter()
            .filter(|(name, _)| name == column)
            .map(|(_, target)| target.clone())
            .collect();
        if !mapped.is_empty() {
            return mapped;
        }
        if column == "full_name" {
            return vec![Target::FullName];
        }
        if column == "title" {
            return vec![Target::Title];
        }
        Field::from_column(column).map(Target::Field).into_iter().collect()
    }
}

/// One row read as a record.
#[derive(Clone, Debug)]
pub struct InputRow {
    /// The file it came from (index into the run's file list).
    pub file: usize,
    /// 1-based line number of the row in its file.
    pub line: u64,
    /// Source system (shared by the rows that name it: a file has one or a few).
    pub source_system: std::sync::Arc<str>,
    /// Id in the source system.
    pub local_id: Box<str>,
    /// Raw demographics, packed into one string: a million rows are held until
    /// normalised (a quarter of the memory of the values one by one), and the packed
    /// values are what the write needs too.
    pub raw: HeldRaw,
}

/// A row that could not be read.
#[derive(Clone, Debug)]
pub struct RowError {
    /// The file (index into the run's file list).
    pub file: usize,
    /// 1-based line number.
    pub line: u64,
    /// The field concerned (`row` for structural problems).
    pub field: String,
    /// Why (no values).
    pub reason: String,
    /// The row's local id when it could be read (never personal data by contract:
    /// a system id).
    pub local_id: Option<String>,
    /// The source system when known.
    pub source_system: Option<String>,
}

/// Everything read from one file.
#[derive(Debug, Default)]
pub struct ReadFile {
    /// Rows read.
    pub rows: Vec<InputRow>,
    /// Rows rejected.
    pub rejected: Vec<RowError>,
    /// How each header column was read, in column order.
    pub columns: Vec<ColumnUse>,
    /// The byte that separates its columns: `,`, or what the header line uses when
    /// it has no comma (a tab, `;` or `|`).
    pub delimiter: u8,
    /// Columns that give something to match on: demographics or an identifier (not
    /// the source system or local id).
    pub matching_columns: usize,
    /// The source systems of this file with birth dates that can only be read month
    /// first, and the order their dates were read in, as found from its rows (nothing
    /// when `--dates` set the order).
    pub date_orders: Vec<SourceDates>,
}

/// The order a source system's dates in one file were read in, and why: it has birth
/// dates that can only be read month first (`02/13/1980`), and they are read so when
/// they outnumber those that can only be read day first (`13/02/1980`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDates {
    /// The source system.
    pub source_system: String,
    /// Its birth dates that can only be read month first.
    pub month_only: usize,
    /// Its birth dates that can only be read day first.
    pub day_only: usize,
    /// The order its dates are read in.
    pub order: DateOrder,
}

/// How one header column is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnUse {
    /// By its canonical name or a `--map` entry.
    Named(String),
    /// By a common form of a canonical field's name ("NHS Number", "Surname"), read as
    /// that field (named as a `--map` entry names it: `nhs_number`, `full_name`).
    Recognised(String, String),
    /// Not read.
    Ignored(String),
}

/// Header names that council and NHS systems commonly give the canonical fields, in
/// the compact form [`compact`] makes (lower case, letters and digits only), beside
/// the canonical names themselves ("Date of Birth" and "date_of_birth" are both
/// `dateofbirth`). A column is read by such a name only when neither a column of the
/// canonical name nor a `--map` entry gives that field.
const HEADER_NAMES: &[(&str, Field)] = &[
    ("sourcesystem", Field::SourceSystem),
    ("localid", Field::LocalId),
    ("id", Field::LocalId),
    ("recordid", Field::LocalId),
    ("recid", Field::LocalId),
    ("clientid", Field::LocalId),
    ("personid", Field::LocalId),
    ("patientid", Field::LocalId),
    ("caseid", Field::LocalId),
    ("nhsnumber", Field::NhsNumber),
    ("nhsno", Field::NhsNumber),
    ("nhsnum", Field::NhsNumber),
    ("nhs", Field::NhsNumber),
    ("givenname", Field::GivenName),
    ("givennames", Field::GivenName),
    ("forename", Field::GivenName),
    ("forenames", Field::GivenName),
    ("firstname", Field::GivenName),
    ("firstnames", Field::GivenName),
    ("middlename", Field::GivenName),
    ("middlenames", Field::GivenName),
    ("familyname", Field::FamilyName),
    ("surname", Field::FamilyName),
    ("lastname", Field::FamilyName),
    ("dateofbirth", Field::DateOfBirth),
    ("dob", Field::DateOfBirth),
    ("birthdate", Field::DateOfBirth),
    ("sex", Field::Sex),
    ("gender", Field::Sex),
    ("addressline1", Field::AddressLine1),
    ("address1", Field::AddressLine1),
    ("address", Field::AddressLine1),
    ("addressline2", Field::AddressLine2),
    ("address2", Field::AddressLine2),
    ("addressline3", Field::AddressLine2),
    ("address3", Field::AddressLine2),
    ("locality", Field::AddressLine2),
    ("town", Field::Town),
    ("city", Field::Town),
    ("towncity", Field::Town),
    ("posttown", Field::Town),
    ("postcode", Field::Postcode),
    ("postalcode", Field::Postcode),
    ("phone", Field::Phone),
    ("phonenumber", Field::Phone),
    ("telephone", Field::Phone),
    ("telephonenumber", Field::Phone),
    ("tel", Field::Phone),
    ("telno", Field::Phone),
    ("homephone", Field::Phone),
    ("hometelephone", Field::Phone),
    ("mobile", Field::Phone),
    ("mobilenumber", Field::Phone),
    ("mobilephone", Field::Phone),
    ("contactnumber", Field::Phone),
    ("email", Field::Email),
    ("emailaddress", Field::Email),
    ("previousfamilyname", Field::PreviousFamilyName),
    ("previoussurname", Field::PreviousFamilyName),
    ("previouslastname", Field::PreviousFamilyName),
    ("formersurname", Field::PreviousFamilyName),
    ("formerfamilyname", Field::PreviousFamilyName),
    ("maidenname", Field::PreviousFamilyName),
    ("maidensurname", Field::PreviousFamilyName),
    ("birthsurname", Field::PreviousFamilyName),
    ("surnameatbirth", Field::PreviousFamilyName),
];

/// A header name in lower case with everything but letters and digits taken out.
fn compact(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Header names of a column holding whole names, in [`compact`] form, read as
/// [`Target::FullName`] when no column gives a given or family name.
const FULL_NAME_HEADERS: &[&str] = &["name", "fullname", "clientname", "patientname", "personname"];

/// Header names of a column of titles (`Mr`, `Mrs`), in [`compact`] form, read as
/// [`Target::Title`] when no column is mapped to one.
const TITLE_HEADERS: &[&str] = &["title", "nametitle", "salutation", "prefix"];

/// The field a header name commonly stands for, if any.
fn recognised_field(name: &str) -> Option<Field> {
    let name = compact(name);
    HEADER_NAMES.iter().find(|(known, _)| *known == name).map(|&(_, field)| field)
}

/// Where each header column goes: `--map` entries and canonical names first, then the
/// common names of [`HEADER_NAMES`] for the fields those left without a column.
///
/// # Errors
/// The reason, when several columns could each be the one source system or local
/// id, or the one value of another field that is not joined from parts.
fn resolve_columns(
    names: &[String],
    map: &ColumnMap,
) -> Result<(Vec<Vec<Target>>, Vec<ColumnUse>), String> {
    let mut targets: Vec<Vec<Target>> = names
        .iter()
        .map(|name| {
            let found = map.targets(name);
            if found.is_empty() { map.targets(&name.to_lowercase()) } else { found }
        })
        .collect();
    // Given by this file's own columns (an entry for a column it lacks says nothing); a
    // column of whole names gives both names.
    let given = |field: Field| {
        targets.iter().flatten().any(|target| {
            *target == Target::Field(field)
                || (*target == Target::FullName
                    && matches!(field, Field::GivenName | Field::FamilyName))
        })
    };
    let recognised: Vec<Option<Field>> = names
        .iter()
        .zip(&targets)
        .map(|(name, found)| {
            recognised_field(name).filter(|&field| found.is_empty() && !given(field))
        })
        .collect();
    for field in recognised.iter().flatten() {
        let columns: Vec<&str> = names
            .iter()
            .zip(&recognised)
            .filter(|(_, other)| *other == &Some(*field))
            .map(|(name, _)| name.as_str())
            .collect();
        let joined = matches!(
            field,
            Field::GivenName | Field::AddressLine1 | Field::AddressLine2 | Field::Phone
        );
        if columns.len() > 1 && !joined {
            return Err(format!(
                "columns {} could each be the {}; say which with --map COLUMN={}",
                columns.iter().map(|name| format!("{name:?}")).collect::<Vec<_>>().join(" and "),
                field.as_str(),
                field.as_str()
            ));
        }
    }
    let mut recognised: Vec<Option<Target>> =
        recognised.into_iter().map(|field| field.map(Target::Field)).collect();
    // A column of whole names, where no column gives a given or a family name.
    let names_given = targets.iter().flatten().chain(recognised.iter().flatten()).any(|target| {
        matches!(target, Target::FullName | Target::Field(Field::GivenName | Field::FamilyName))
    });
    // The one column, not otherwise read, of one of these header names.
    let only_column = |headers: &[&str], recognised: &[Option<Target>]| {
        let found: Vec<usize> = (0..names.len())
            .filter(|&at| {
                targets[at].is_empty()
                    && recognised[at].is_none()
                    && headers.contains(&compact(&names[at]).as_str())
            })
            .collect();
        if let [at] = found[..] { Some(at) } else { None }
    };
    if !names_given && let Some(at) = only_column(FULL_NAME_HEADERS, &recognised) {
        recognised[at] = Some(Target::FullName);
    }
    // A column of titles, where none is mapped.
    let title_mapped = targets.iter().flatten().any(|target| *target == Target::Title);
    if !title_mapped && let Some(at) = only_column(TITLE_HEADERS, &recognised) {
        recognised[at] = Some(Target::Title);
    }
    let mut uses = Vec::with_capacity(names.len());
    for ((name, found), target) in names.iter().zip(&mut targets).zip(recognised) {
        uses.push(match target {
            Some(target) => {
                let use_ = ColumnUse::Recognised(name.clone(), target.name());
                found.push(target);
                use_
            }
            None if found.is_empty() => ColumnUse::Ignored(name.clone()),
            None => ColumnUse::Named(name.clone()),
        });
    }
    Ok((targets, uses))
}

fn check_encoding(path: &Path, bytes: &[u8]) -> Result<(), InputError> {
    let encoding = |reason| Err(InputError::Encoding { path: path.to_owned(), reason });
    if UTF16_BOMS.iter().any(|mark| bytes.starts_with(mark)) {
        return encoding("it starts with a UTF-16 byte order mark");
    }
    let head = &bytes[..bytes.len().min(4096)];
    let n_nul = head.iter().filter(|&&byte| byte == 0).count();
    if n_nul > 0 && n_nul * 8 >= head.len() {
        return encoding("it is full of NUL bytes, as UTF-16 or binary files are");
    }
    if !head.is_empty()
        && std::str::from_utf8(head).is_err()
        && std::str::from_utf8(&head[..head.len().saturating_sub(4)]).is_err()
    {
        // The start of the file (the header) must be UTF-8; later bad rows are row errors.
        let header_end = head.iter().position(|&byte| byte == b'\n').unwrap_or(head.len());
        if std::str::from_utf8(&head[..header_end]).is_err() {
            return encoding("its header is not valid UTF-8");
        }
    }
    Ok(())
}

/// Reads one CSV file.
///
/// `source` is the source system for files without a `source_system` column
/// (defaults to the file name without extension). `dates` is the order of day and
/// month in the file's dates of numbers; `None` finds it for each source system from
/// the dates themselves ([`ReadFile::date_orders`]).
///
/// # Errors
/// [`InputError`] when the file cannot be read, is not UTF-8 text, or has no
/// `local_id` column (directly or through the mapping). Bad rows are returned in
/// [`ReadFile::rejected`], not as errors.
pub fn read_csv(
    path: &Path,
    file_index: usize,
    map: &ColumnMap,
    source: Option<&str>,
    encoding: Encoding,
    dates: Option<DateOrder>,
) -> Result<ReadFile, InputError> {
    let bytes =
        std::fs::read(path).map_err(|source| InputError::Io { path: path.to_owned(), source })?;
    // A byte order mark says what the file is, whatever the flag says.
    let marked = |marks: &[&[u8]]| marks.iter().any(|mark| bytes.starts_with(mark));
    match encoding {
        Encoding::Windows1252 if !marked(&[UTF8_BOM, &UTF16_BOMS[0], &UTF16_BOMS[1]]) => {
            let text = from_windows_1252(&bytes);
            drop(bytes);
            read_csv_bytes(path, text.as_bytes(), file_index, map, source, dates)
        }
        _ => read_csv_bytes(path, &bytes, file_index, map, source, dates),
    }
}

/// The column separator: a comma, unless the header line has none and has tabs,
/// semicolons (a spreadsheet in a locale whose decimal mark is a comma) or bars.
fn delimiter_of(bytes: &[u8]) -> u8 {
    let end = bytes.iter().position(|&byte| byte == b'\n' || byte == b'\r');
    let header = &bytes[..end.unwrap_or(bytes.len())];
    if header.contains(&b',') {
        return b',';
    }
    [b'\t', b';', b'|'].into_iter().find(|separator| header.contains(separator)).unwrap_or(b',')
}

const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];
const UTF16_BOMS: [[u8; 2]; 2] = [[0xFF, 0xFE], [0xFE, 0xFF]];

/// The character encoding of an input file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 (with or without a byte order mark): the default.
    #[default]
    Utf8,
    /// Windows-1252, the encoding Excel gives "CSV (Comma delimited)" on a UK Windows
    /// machine (read for Latin-1 too, as browsers do: it is Latin-1 with printable
    /// characters where Latin-1 has control codes).
    Windows1252,
}

/// What Windows-1252 puts at 0x80-0x9F (the rest of its upper half is Latin-1: the
/// byte's own code point). The five bytes it leaves undefined keep their code point,
/// as the WHATWG encoding standard has it.
const WINDOWS_1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Windows-1252 bytes as UTF-8 text. Every byte is a character, so nothing is lost.
fn from_windows_1252(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&byte| match byte {
            0x80..=0x9F => WINDOWS_1252_HIGH[usize::from(byte - 0x80)],
            _ => char::from(byte),
        })
        .collect()
}

/// [`read_csv`] on bytes already in memory.
///
/// # Errors
/// As [`read_csv`].
pub fn read_csv_bytes(
    path: &Path,
    bytes: &[u8],
    file_index: usize,
    map: &ColumnMap,
    source: Option<&str>,
    dates: Option<DateOrder>,
) -> Result<ReadFile, InputError> {
    read_csv_in_pieces(path, bytes, file_index, map, source, dates, None)
}

/// [`read_csv_bytes`], its rows read in `pieces` pieces in parallel (`None`: a piece
/// a thread, each of at least [`MIN_PIECE_BYTES`]). The rows are the same however
/// many pieces.
fn read_csv_in_pieces(
    path: &Path,
    bytes: &[u8],
    file_index: usize,
    map: &ColumnMap,
    source: Option<&str>,
    dates: Option<DateOrder>,
    pieces: Option<usize>,
) -> Result<ReadFile, InputError> {
    check_encoding(path, bytes)?;
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let header_error = |reason: String| InputError::Header { path: path.to_owned(), reason };
    let delimiter = delimiter_of(bytes);
    let mut reader = csv_reader(delimiter, true, bytes);
    let header = reader
        .byte_headers()
        .map_err(|_| header_error("the header row is not valid CSV".to_owned()))?
        .clone();
    let names: Vec<String> =
        header.iter().map(|name| String::from_utf8_lossy(name).trim().to_owned()).collect();
    let (targets, columns) = resolve_columns(&names, map).map_err(header_error)?;
    let has = |field: Field| targets.iter().flatten().any(|target| *target == Target::Field(field));
    if !has(Field::LocalId) {
        return Err(header_error(format!(
            "no local_id column (found {} columns); map one with --map COLUMN=local_id",
            names.len()
        )));
    }
    let default_source = source_of(path, source);

    let matching_columns = targets
        .iter()
        .filter(|column| {
            column.iter().any(|target| {
                !matches!(
                    target,
                    Target::Field(Field::SourceSystem | Field::LocalId) | Target::Title
                )
            })
        })
        .count();
    let rows = RowReader {
        bytes,
        delimiter,
        n_columns: header.len(),
        targets: &targets,
        sources: crate::engine::SourceNames::new([default_source.as_str()]),
        default_source: &default_source,
        file_index,
        dates,
    };
    let data_start =
        after_line_breaks(bytes, usize::try_from(reader.position().byte()).unwrap_or(bytes.len()));
    let span = bytes.len().saturating_sub(data_start);
    let n_pieces =
        pieces.unwrap_or_else(|| rayon::current_num_threads().min(span / MIN_PIECE_BYTES));
    let mut pieces = rows.read(data_start, n_pieces.max(1)).into_iter();
    let first = pieces.next().unwrap_or_default();
    let mut result = ReadFile {
        columns,
        matching_columns,
        delimiter,
        rows: first.rows,
        rejected: first.rejected,
        ..ReadFile::default()
    };
    let mut order_evidence = first.order_evidence;
    for piece in pieces {
        result.rows.extend(piece.rows);
        result.rejected.extend(piece.rejected);
        for (source, [day_only, month_only]) in piece.order_evidence {
            match order_evidence.iter_mut().find(|(known, _)| *known == source) {
                Some((_, counts)) => {
                    counts[0] += day_only;
                    counts[1] += month_only;
                }
                None => order_evidence.push((source, [day_only, month_only])),
            }
        }
    }
    read_date_orders(&mut result, order_evidence);
    Ok(result)
}

/// A reader of CSV `bytes` separated by `delimiter`; rows of any length (checked
/// against the header's by [`RowReader`]).
fn csv_reader(delimiter: u8, has_headers: bool, bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes)
}

/// `at`, or the first byte after the line breaks that start there.
fn after_line_breaks(bytes: &[u8], at: usize) -> usize {
    let at = at.min(bytes.len());
    at + bytes[at..].iter().take_while(|&&byte| byte == b'\n' || byte == b'\r').count()
}

/// Pieces a file's rows are read in are at least this long: a small file is read in
/// one piece, where splitting costs more than it saves.
const MIN_PIECE_BYTES: usize = 1 << 20;

/// Reads a CSV file's rows (after its header), a piece at a time.
struct RowReader<'a> {
    bytes: &'a [u8],
    delimiter: u8,
    /// Columns in the header: every row must have as many.
    n_columns: usize,
    targets: &'a [Vec<Target>],
    /// Source-system names known before the rows are read (the file's default).
    sources: crate::engine::SourceNames,
    default_source: &'a str,
    file_index: usize,
    dates: Option<DateOrder>,
}

/// The rows read from one piece of a file, and where its last row ended.
#[derive(Default)]
struct Piece {
    rows: Vec<InputRow>,
    rejected: Vec<RowError>,
    /// For each source system, its birth dates that can only be read day first, and
    /// those that can only be read month first (see [`count_date_order`]).
    order_evidence: Vec<(Arc<str>, [usize; 2])>,
    /// Where the row after the piece's last starts (line breaks stepped over).
    end: usize,
}

impl RowReader<'_> {
    /// Every row from `start` (the first after the header) to the end of the file, in
    /// `n_pieces` pieces read in parallel. Each piece but the first starts after a line
    /// break a guess away, not knowing whether the break ends a row or lies inside a
    /// quoted value; it is kept only when the piece before it ended exactly there, and
    /// read again from where that one ended otherwise. So the rows are always those one
    /// reader finds from the start, however many threads read them.
    fn read(&self, start: usize, n_pieces: usize) -> Vec<Piece> {
        let span = self.bytes.len().saturating_sub(start);
        let mut bounds: Vec<usize> = (0..n_pieces)
            .map(|piece| match piece {
                0 => start,
                _ => self.after_line_end(start + span / n_pieces * piece),
            })
            .collect();
        bounds.push(self.bytes.len());
        let guessed: Vec<Piece> = {
            use rayon::prelude::*;
            bounds
                .par_windows(2)
                .enumerate()
                .map(|(index, piece)| {
                    // The first piece has room for every row, the others' to follow.
                    let room_to = if index == 0 { self.bytes.len() } else { piece[1] };
                    self.piece(piece[0], piece[1], room_to)
                })
                .collect()
        };
        let mut expected = start;
        guessed
            .into_iter()
            .zip(bounds.windows(2))
            .map(|(piece, bound)| {
                let piece = if bound[0] == expected {
                    piece
                } else {
                    self.piece(expected, bound[1], bound[1])
                };
                expected = piece.end;
                piece
            })
            .collect()
    }

    /// Where the line after the one holding byte `at` starts (the end of the file if
    /// none does).
    fn after_line_end(&self, at: usize) -> usize {
        match self.bytes[at..].iter().position(|&byte| byte == b'\n' || byte == b'\r') {
            Some(end) => after_line_breaks(self.bytes, at + end),
            None => self.bytes.len(),
        }
    }

    /// The rows that start at or after `start`, a row's start, and before `limit`,
    /// with room for a row a line up to `room_to`.
    fn piece(&self, start: usize, limit: usize, room_to: usize) -> Piece {
        let bytes = &self.bytes[start..];
        let mut reader = csv_reader(self.delimiter, false, bytes);
        let mut piece = Piece::default();
        // At most a row a line: sized once, not grown by doubling (a million rows are
        // 350 MB, and each doubling holds the old and the new at once).
        let lines = bytes[..room_to.saturating_sub(start).min(bytes.len())]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count();
        piece.rows.reserve(lines + 1);
        let mut record = csv::ByteRecord::new();
        let mut lines = LineCounter::new(self.bytes);
        let mut sources = self.sources.clone();
        loop {
            let before = after_line_breaks(
                self.bytes,
                start + usize::try_from(reader.position().byte()).unwrap_or(usize::MAX),
            );
            if before >= limit {
                piece.end = before;
                break;
            }
            let (at, broken) = match reader.read_byte_record(&mut record) {
                Ok(false) => {
                    piece.end = self.bytes.len();
                    break;
                }
                Ok(true) => {
                    let broken = (record.len() != self.n_columns).then(|| {
                        format!(
                            "row has {} fields, the header has {}",
                            record.len(),
                            self.n_columns
                        )
                    });
                    (record.position().cloned(), broken)
                }
                // (The reader resynchronises at the next line.)
                Err(error) => (error.position().cloned(), Some("row is not valid CSV".to_owned())),
            };
            let line = lines.line_at(at.map_or(before as u64, |at| start as u64 + at.byte()));
            if let Some(mut reason) = broken {
                // A quote left open takes in every line up to the next quote: say so,
                // or the rows it swallowed would go unmentioned.
                let spans = record.iter().enumerate().find_map(|(index, field)| {
                    // (Left open to the end of the file, it holds the file's last line end.)
                    let field = field.trim_ascii_end();
                    let breaks = count_line_ends(field, 0..field.len());
                    (breaks > 0).then_some((index, breaks))
                });
                if let Some((index, breaks)) = spans {
                    reason.push_str(&format!(
                        "; its field {} is quoted over {} lines, to line {}: a quote left open takes in the rows after it",
                        index + 1,
                        breaks + 1,
                        line + breaks
                    ));
                }
                piece.rejected.push(RowError {
                    file: self.file_index,
                    line,
                    field: "row".to_owned(),
                    reason,
                    local_id: None,
                    source_system: None,
                });
                continue;
            }
            match row_from_record(&record, self.targets, self.default_source) {
                Ok((source_system, local_id, mut demographics)) => {
                    let source_system = sources.intern(&source_system);
                    match self.dates {
                        Some(order) => demographics.date_order = order,
                        None => {
                            let evidence =
                                demographics.date_of_birth.as_deref().and_then(date_order_evidence);
                            if let Some(order) = evidence {
                                count_date_order(&mut piece.order_evidence, &source_system, order);
                            }
                        }
                    }
                    piece.rows.push(InputRow {
                        file: self.file_index,
                        line,
                        source_system,
                        local_id: local_id.into(),
                        raw: HeldRaw::new(&demographics),
                    });
                }
                Err((field, reason, local_id, source_system)) => piece.rejected.push(RowError {
                    file: self.file_index,
                    line,
                    field: field.to_owned(),
                    reason: reason.to_owned(),
                    local_id,
                    source_system,
                }),
            }
        }
        piece
    }
}

/// Counts a birth date of `source` that can only be read in `order`.
fn count_date_order(
    evidence: &mut Vec<(Arc<str>, [usize; 2])>,
    source: &Arc<str>,
    order: DateOrder,
) {
    let at = match evidence.iter().position(|(known, _)| Arc::ptr_eq(known, source)) {
        Some(at) => at,
        None => {
            evidence.push((source.clone(), [0; 2]));
            evidence.len() - 1
        }
    };
    evidence[at].1[usize::from(order == DateOrder::MonthFirst)] += 1;
}

/// Reads the birth dates of each source system in `result` whose dates can more often
/// only be read month first than only day first as month first, and lists every system
/// with dates that can only be read month first. One file may hold several systems'
/// rows, each writing dates its own way. (In a UK file more than half of all dates can
/// only be read day first, those after the twelfth of a month: a few month-first
/// typing slips do not turn it.)
fn read_date_orders(result: &mut ReadFile, evidence: Vec<(Arc<str>, [usize; 2])>) {
    let mut orders: Vec<SourceDates> = evidence
        .into_iter()
        .filter(|&(_, [_, month_only])| month_only > 0)
        .map(|(source, [day_only, month_only])| SourceDates {
            source_system: source.to_string(),
            month_only,
            day_only,
            order: if month_only > day_only { DateOrder::MonthFirst } else { DateOrder::DayFirst },
        })
        .collect();
    orders.sort_unstable_by(|a, b| a.source_system.cmp(&b.source_system));
    let month_first: Vec<&str> = orders
        .iter()
        .filter(|source| source.order == DateOrder::MonthFirst)
        .map(|source| source.source_system.as_str())
        .collect();
    if !month_first.is_empty() {
        for row in &mut result.rows {
            if month_first.contains(&&*row.source_system) {
                row.raw.mark_month_first();
            }
        }
    }
    result.date_orders = orders;
}

/// The source system of a file's records that do not name one: `source` (`--source`),
/// else the file's name without its extension.
fn source_of(path: &Path, source: Option<&str>) -> String {
    source.map(str::to_owned).unwrap_or_else(|| {
        path.file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".to_owned())
    })
}

/// The FHIR identifier system of NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// True for a file of FHIR resources, read by [`read_fhir`] instead of as CSV: one a
/// line (`.ndjson` as FHIR Bulk Data export writes them, or `.jsonl`), or one JSON
/// document (`.json`: a Bundle, as a FHIR search or transaction carries them, or a
/// single Patient).
pub fn is_fhir(path: &Path) -> bool {
    has_extension(path, &["ndjson", "jsonl", "json"])
}

/// True when the file's extension is one of `extensions` (lower case), in any case.
fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| extensions.contains(&extension.to_ascii_lowercase().as_str()))
}

/// Reads a file of FHIR R4 Patient resources (see [`is_fhir`]): each Patient is a
/// record whose local id is its `id` (the resource's id on the system that exported
/// it), of source system `source` (defaults to the file name without extension). A
/// Patient that has no `id` or has an element of the wrong type is rejected with the
/// line it starts on and the element named, never a value.
///
/// # Errors
/// [`InputError`] when the file cannot be read or is not UTF-8 text; when an `.ndjson`
/// file's first resource line is not a JSON object (not NDJSON at all); when a `.json`
/// file is not JSON, or is neither a Bundle nor a Patient.
pub fn read_fhir(
    path: &Path,
    file_index: usize,
    source: Option<&str>,
) -> Result<ReadFile, InputError> {
    let bytes =
        std::fs::read(path).map_err(|source| InputError::Io { path: path.to_owned(), source })?;
    check_encoding(path, &bytes)?;
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes);
    let source_system: Arc<str> = source_of(path, source).into();
    let mut patients = Patients {
        // (No columns and no separator to report: the summary's default, a comma.)
        result: ReadFile { delimiter: b',', ..ReadFile::default() },
        file_index,
        source_system,
    };
    if has_extension(path, &["ndjson", "jsonl"]) {
        read_ndjson(path, bytes, &mut patients)?;
    } else {
        read_json_document(path, bytes, &mut patients)?;
    }
    let mut result = patients.result;
    // A Patient's elements give demographics to match on, unlike a CSV file of ids only.
    result.matching_columns = usize::from(!result.rows.is_empty());
    Ok(result)
}

/// The Patients read from one FHIR file so far.
struct Patients {
    result: ReadFile,
    file_index: usize,
    source_system: Arc<str>,
}

impl Patients {
    fn reject(&mut self, line: u64, field: &str, reason: String, local_id: Option<String>) {
        self.result.rejected.push(RowError {
            file: self.file_index,
            line,
            field: field.to_owned(),
            reason,
            local_id,
            source_system: Some(self.source_system.to_string()),
        });
    }

    /// A resource that should be a Patient, starting on `line`: a row, or a rejection.
    fn push(&mut self, resource: &Value, line: u64) {
        if resource["resourceType"] != "Patient" {
            self.reject(line, "row", "resourceType must be Patient".to_owned(), None);
            return;
        }
        let local_id = match &resource["id"] {
            Value::String(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => return self.reject(line, "local_id", "missing Patient.id".to_owned(), None),
        };
        match patient_demographics(resource) {
            Ok(demographics) => self.result.rows.push(InputRow {
                file: self.file_index,
                line,
                source_system: self.source_system.clone(),
                local_id: local_id.into(),
                raw: HeldRaw::new(&demographics),
            }),
            Err(reason) => self.reject(line, "row", reason, Some(local_id)),
        }
    }
}

/// One resource a line; blank lines are skipped, a line that is not a JSON object is
/// rejected (the whole file fails when its first resource line is not one).
fn read_ndjson(path: &Path, bytes: &[u8], patients: &mut Patients) -> Result<(), InputError> {
    let mut seen_resource = false;
    for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let line_number = index as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resource: Option<Value> = serde_json::from_slice(line).ok().filter(Value::is_object);
        let Some(resource) = resource else {
            if !seen_resource {
                return Err(InputError::Header {
                    path: path.to_owned(),
                    reason: format!(
                        "line {line_number} is not a JSON object: a .ndjson file holds one FHIR \
                         resource a line"
                    ),
                });
            }
            patients.reject(line_number, "row", "line is not a JSON object".to_owned(), None);
            continue;
        };
        seen_resource = true;
        patients.push(&resource, line_number);
    }
    Ok(())
}

/// A `.json` file's document, read only as far as finding its resources: each entry's
/// resource is kept as the text it is in the file, so its line can be reported.
#[derive(serde::Deserialize)]
struct JsonDocument<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default, borrow)]
    entry: Vec<BundleEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct BundleEntry<'a> {
    #[serde(default, borrow)]
    resource: Option<&'a RawValue>,
    #[serde(default)]
    search: Option<BundleSearch>,
}

#[derive(serde::Deserialize)]
struct BundleSearch {
    mode: Option<String>,
}

/// A Bundle of Patients (a search set, a collection, a transaction: any type), one
/// Patient, or a JSON array of Patients (as some tools export them). A Bundle's entries
/// that are not Patients are rejected by the line they start on, except those a search
/// added beside its matches (`search.mode` `include` or `outcome`) and OperationOutcomes,
/// which are skipped; an entry without a resource (a transaction's DELETE) is skipped.
fn read_json_document(
    path: &Path,
    bytes: &[u8],
    patients: &mut Patients,
) -> Result<(), InputError> {
    // serde_json's messages can quote a value: only where the error is is reported.
    let not_fhir = |error: serde_json::Error| InputError::Header {
        path: path.to_owned(),
        reason: format!(
            "not a FHIR Bundle or Patient: the JSON breaks off or has an element of the wrong \
             type at line {} column {}",
            error.line(),
            error.column()
        ),
    };
    let mut lines = LineCounter::new(bytes);
    // A resource's text is a slice of `bytes`: where it starts is its line.
    let mut read = |raw: &RawValue, skip_others: bool| -> Result<(), InputError> {
        let text = raw.get();
        let line = lines.line_at((text.as_ptr() as usize - bytes.as_ptr() as usize) as u64);
        let resource: Value = serde_json::from_str(text).map_err(not_fhir)?;
        let other = resource["resourceType"] != "Patient";
        if !(other && (skip_others || resource["resourceType"] == "OperationOutcome")) {
            patients.push(&resource, line);
        }
        Ok(())
    };
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        let resources: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(not_fhir)?;
        for resource in resources {
            read(resource, false)?;
        }
        return Ok(());
    }
    let document: JsonDocument = serde_json::from_slice(bytes).map_err(not_fhir)?;
    match document.resource_type.as_deref() {
        Some("Patient") => read(serde_json::from_slice(bytes).map_err(not_fhir)?, false),
        Some("Bundle") => {
            for entry in document.entry {
                let Some(resource) = entry.resource else { continue };
                let added_by_search = entry
                    .search
                    .and_then(|search| search.mode)
                    .is_some_and(|mode| mode == "include" || mode == "outcome");
                read(resource, added_by_search)?;
            }
            Ok(())
        }
        _ => Err(InputError::Header {
            path: path.to_owned(),
            reason: "not a FHIR Bundle or Patient: its resourceType must be Bundle or Patient"
                .to_owned(),
        }),
    }
}

/// A FHIR R4 Patient's demographics in the input contract's terms: the NHS number from
/// its identifier of [`NHS_NUMBER_SYSTEM`], other identifiers as (system, value); the
/// official name (else the usual, else the first not marked old, maiden, nickname,
/// temporary or anonymous, else the first; one given only as text is split into given
/// and family names), the family names of its old and maiden names as previous family
/// names, the home address (else the first),
/// the first phone and email. Unknown elements are ignored (FHIR resources carry much
/// more than matching needs).
///
/// # Errors
/// What is wrong, naming the element (never its value): not a Patient, or an element
/// of the wrong JSON type.
pub fn patient_demographics(patient: &Value) -> Result<Demographics, String> {
    if patient["resourceType"] != "Patient" {
        return Err("resourceType must be Patient".to_owned());
    }
    let text = |value: &Value, path: &str| -> Result<Option<String>, String> {
        match value {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text.clone())),
            _ => Err(format!("{path} must be a string")),
        }
    };
    let array = |value: &Value, path: &str| -> Result<Vec<Value>, String> {
        match value {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => Ok(items.clone()),
            _ => Err(format!("{path} must be an array")),
        }
    };
    let mut demographics = Demographics::default();
    for identifier in array(&patient["identifier"], "Patient.identifier")? {
        let system = text(&identifier["system"], "Patient.identifier.system")?;
        let value = text(&identifier["value"], "Patient.identifier.value")?;
        match (system, value) {
            (Some(system), Some(value)) if system == NHS_NUMBER_SYSTEM => {
                demographics.nhs_number = Some(value);
            }
            (Some(system), Some(value)) => {
                demographics.identifiers.push(Identifier { system, value })
            }
            _ => return Err("Patient.identifier needs a system and a value".to_owned()),
        }
    }
    let names = array(&patient["name"], "Patient.name")?;
    // The official name, else the usual one, else the first that is still the person's
    // own (not an old or maiden name, a nickname, a temporary or anonymous one), else
    // the first.
    let name = names
        .iter()
        .find(|name| name["use"] == "official")
        .or_else(|| names.iter().find(|name| name["use"] == "usual"))
        .or_else(|| names.iter().find(|name| name["use"].is_null()))
        .or_else(|| names.first());
    if let Some(name) = name {
        demographics.family_name = text(&name["family"], "Patient.name.family")?;
        let mut given: Vec<String> = array(&name["given"], "Patient.name.given")?
            .iter()
            .map(|given| text(given, "Patient.name.given").map(Option::unwrap_or_default))
            .collect::<Result<_, _>>()?;
        // A name given only as text ("Mrs Jane Smith", "SMITH, Jane"), as systems
        // without structured names send it.
        if demographics.family_name.is_none()
            && given.is_empty()
            && let Some(whole) = text(&name["text"], "Patient.name.text")?
        {
            let (given_text, family) = split_full_name(&whole);
            demographics.family_name = Some(family).filter(|family| !family.is_empty());
            given.extend(Some(given_text).filter(|given| !given.is_empty()));
        }
        // Its titles (`prefix`) before the given names, as a title column is read.
        let mut names: Vec<String> = array(&name["prefix"], "Patient.name.prefix")?
            .iter()
            .map(|prefix| text(prefix, "Patient.name.prefix").map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|prefix| is_title(prefix))
            .collect();
        names.extend(given);
        if !names.is_empty() {
            demographics.given_name = Some(names.join(" "));
        }
    }
    // Former family names (a maiden name), for matching the records made under them.
    let mut former = Vec::new();
    for old in names.iter().filter(|old| old["use"] == "old" || old["use"] == "maiden") {
        if let Some(family) = text(&old["family"], "Patient.name.family")? {
            former.push(family);
        }
    }
    if !former.is_empty() {
        demographics.previous_family_name = Some(former.join("; "));
    }
    demographics.date_of_birth = text(&patient["birthDate"], "Patient.birthDate")?;
    demographics.sex = text(&patient["gender"], "Patient.gender")?;
    let addresses = array(&patient["address"], "Patient.address")?;
    let address =
        addresses.iter().find(|address| address["use"] == "home").or_else(|| addresses.first());
    if let Some(address) = address {
        let lines = array(&address["line"], "Patient.address.line")?;
        demographics.address_line1 =
            lines.first().map(|line| text(line, "Patient.address.line")).transpose()?.flatten();
        demographics.address_line2 =
            lines.get(1).map(|line| text(line, "Patient.address.line")).transpose()?.flatten();
        demographics.town = text(&address["city"], "Patient.address.city")?;
        demographics.postcode = text(&address["postalCode"], "Patient.address.postalCode")?;
    }
    for telecom in array(&patient["telecom"], "Patient.telecom")? {
        let value = text(&telecom["value"], "Patient.telecom.value")?;
        match telecom["system"].as_str() {
            Some("phone") if demographics.phone.is_none() => demographics.phone = value,
            Some("email") if demographics.email.is_none() => demographics.email = value,
            _ => {}
        }
    }
    Ok(demographics)
}

/// Line numbers from byte offsets. The csv crate's own line count falls one behind
/// for every CRLF line (BurntSushi/rust-csv#395), and council files are often
/// saved on Windows.
struct LineCounter<'a> {
    bytes: &'a [u8],
    /// Bytes before this offset are counted.
    counted_to: usize,
    /// Line ends before `counted_to`.
    newlines: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> LineCounter<'a> {
        LineCounter { bytes, counted_to: 0, newlines: 0 }
    }

    /// The 1-based line of a row that starts at `byte`. Offsets only move forward.
    /// After a CRLF the csv reader reports a row's start at the LF it has not yet
    /// consumed; a row never starts with a line break, so those are stepped over.
    fn line_at(&mut self, byte: u64) -> u64 {
        let start = after_line_breaks(self.bytes, usize::try_from(byte).unwrap_or(usize::MAX));
        if start > self.counted_to {
            self.newlines += count_line_ends(self.bytes, self.counted_to..start);
            self.counted_to = start;
        }
        self.newlines + 1
    }
}

/// Line ends in `bytes[range]`: each LF, and each CR alone (old Mac files, which Excel
/// for Mac still writes as "CSV (Macintosh)"); a CRLF is one, counted at its LF.
fn count_line_ends(bytes: &[u8], range: std::ops::Range<usize>) -> u64 {
    let ends = range.filter(|&at| {
        bytes[at] == b'\n' || (bytes[at] == b'\r' && bytes.get(at + 1) != Some(&b'\n'))
    });
    ends.count() as u64
}

type RowRejection = (&'static str, &'static str, Option<String>, Option<String>);

fn row_from_record(
    record: &csv::ByteRecord,
    targets: &[Vec<Target>],
    default_source: &str,
) -> Result<(String, String, Demographics), RowRejection> {
    let (mut source, mut local_id) = (None, None);
    let mut demographics = Demographics::default();
    let mut title: Option<&str> = None;
    let mut bad_utf8: Option<&'static str> = None;
    for (raw, column_targets) in record.iter().zip(targets) {
        if column_targets.is_empty() {
            continue;
        }
        let Ok(value) = std::str::from_utf8(raw) else {
            let field = match &column_targets[0] {
                Target::Field(field) => field.as_str(),
                Target::Identifier(_) => "identifier",
                Target::FullName => "full_name",
                Target::Title => "title",
            };
            bad_utf8.get_or_insert(field);
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        for target in column_targets {
            match target {
                Target::Field(field) => {
                    let slot = value_slot(*field, &mut source, &mut local_id, &mut demographics);
                    if let Some(slot) = slot.map(Option::get_or_insert_default) {
                        if !slot.is_empty() {
                            // Two phone numbers stay two numbers (the normaliser takes
                            // the first), two former names two names; other parts join
                            // as words.
                            slot.push_str(match field {
                                Field::Phone => " / ",
                                Field::PreviousFamilyName => "; ",
                                _ => " ",
                            });
                        }
                        slot.push_str(value);
                    }
                }
                Target::Identifier(system) => demographics
                    .identifiers
                    .push(Identifier { system: system.clone(), value: value.to_owned() }),
                Target::Title => {
                    if is_title(value) {
                        title = Some(value);
                    }
                }
                Target::FullName => {
                    let (given, family) = split_full_name(value);
                    for (slot, part) in [
                        (&mut demographics.given_name, given),
                        (&mut demographics.family_name, family),
                    ] {
                        if part.is_empty() {
                            continue;
                        }
                        let slot = slot.get_or_insert_default();
                        if !slot.is_empty() {
                            slot.push(' ');
                        }
                        slot.push_str(&part);
                    }
                }
            }
        }
    }
    // The title goes before the given names, wherever its column stands.
    if let Some(title) = title {
        let given = demographics.given_name.get_or_insert_default();
        *given = if given.is_empty() { title.to_owned() } else { format!("{title} {given}") };
    }
    let source_system = source.unwrap_or_else(|| default_source.to_owned());
    if let Some(field) = bad_utf8 {
        return Err((
            field,
            "value is not valid UTF-8 (a file Excel saved as CSV on Windows is Windows-1252: \
             read it with --encoding windows-1252)",
            local_id,
            Some(source_system),
        ));
    }
    let Some(local_id) = local_id else {
        return Err(("local_id", "missing local_id", None, Some(source_system)));
    };
    Ok((source_system, local_id, demographics))
}

/// Words after a family name that are part of it (a generational suffix).
const NAME_SUFFIXES: &[&str] = &["jr", "jnr", "junior", "sr", "snr", "senior", "ii", "iii", "iv"];

/// Words before a family name's last word that belong to it (`Van der Berg`, `Al
/// Hassan`, `O Brien`).
const FAMILY_PARTICLES: &[&str] = &[
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "la", "le", "st", "al",
    "el", "ul", "bin", "ibn", "ben", "ap", "o",
];

/// A whole name split into (given names, family name), as people write one:
/// `SMITH, John` (the family name before a comma); `John SMITH` or `SMITH John` (the
/// family name in capitals among words that are not, as the NHS writes it); otherwise
/// the last word is the family name, with a particle before it (`Mary van der Berg`)
/// and a suffix after it (`John Smith Jr`). A title stays with the given names, where
/// the normaliser reads it.
pub fn split_full_name(value: &str) -> (String, String) {
    if let Some((family, given)) = value.split_once(',') {
        return (given.trim().to_owned(), family.trim().to_owned());
    }
    let words: Vec<&str> = value.split_whitespace().collect();
    let capitals = |word: &str| {
        word.chars().filter(|c| c.is_alphabetic()).count() > 1
            && !word.chars().any(char::is_lowercase)
    };
    let n_capitals = words.iter().filter(|word| capitals(word)).count();
    if n_capitals > 0 && words.iter().any(|word| word.chars().any(char::is_lowercase)) {
        let (family, given): (Vec<&str>, Vec<&str>) = words.iter().partition(|word| capitals(word));
        return (given.join(" "), family.join(" "));
    }
    let plain = |word: &str| word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    let mut end = words.len();
    while end > 1 && NAME_SUFFIXES.contains(&plain(words[end - 1]).as_str()) {
        end -= 1;
    }
    let Some(mut start) = end.checked_sub(1) else {
        return (String::new(), String::new());
    };
    while start > 1 && FAMILY_PARTICLES.contains(&plain(words[start - 1]).as_str()) {
        start -= 1;
    }
    (words[..start].join(" "), words[start..].join(" "))
}

/// Where a column's value goes as a row is read: the row's source system or local id,
/// or one of its demographics (none for an identifier, which is a pair of its own).
/// Written straight into place (a hash map of values a row cost a third of reading a
/// file); the match has no catch-all, so a new field cannot be forgotten here.
fn value_slot<'a>(
    field: Field,
    source: &'a mut Option<String>,
    local_id: &'a mut Option<String>,
    demographics: &'a mut Demographics,
) -> Option<&'a mut Option<String>> {
    Some(match field {
        Field::SourceSystem => source,
        Field::LocalId => local_id,
        Field::NhsNumber => &mut demographics.nhs_number,
        Field::GivenName => &mut demographics.given_name,
        Field::FamilyName => &mut demographics.family_name,
        Field::DateOfBirth => &mut demographics.date_of_birth,
        Field::Sex => &mut demographics.sex,
        Field::AddressLine1 => &mut demographics.address_line1,
        Field::AddressLine2 => &mut demographics.address_line2,
        Field::Town => &mut demographics.town,
        Field::Postcode => &mut demographics.postcode,
        Field::Phone => &mut demographics.phone,
        Field::Email => &mut demographics.email,
        Field::PreviousFamilyName => &mut demographics.previous_family_name,
        Field::Identifier => return None,
    })
}

/// The FEBRL column mapping from the README, for tests and benchmarks.
pub fn febrl_map(with_ssn: bool) -> ColumnMap {
    let mut entries = vec![
        "rec_id=local_id",
        "surname=family_name",
        "street_number=address_line1",
        "address_1=address_line1",
        "address_2=address_line2",
        "suburb=town",
    ];
    if with_ssn {
        entries.push("soc_sec_id=id:ssn");
    }
    ColumnMap::parse(&entries).expect("the built-in FEBRL mapping is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8], map: &ColumnMap) -> Result<ReadFile, InputError> {
        read_csv_bytes(Path::new("council.csv"), text, 0, map, None, None)
    }

    /// Each rejection's line, field and reason.
    fn rejections(file: &ReadFile) -> Vec<(u64, &str, &str)> {
        file.rejected
            .iter()
            .map(|error| (error.line, error.field.as_str(), error.reason.as_str()))
            .collect()
    }

    fn date_orders(file: &ReadFile) -> Vec<(&str, DateOrder)> {
        file.rows.iter().map(|row| (&*row.local_id, row.raw.demographics().date_order)).collect()
    }

    #[test]
    fn fhir_patients_one_a_line_are_records_and_bad_lines_are_rejected_by_line() {
        let dir = tempfile::TempDir::new().expect("temporary folder");
        let path = dir.path().join("gp-export.ndjson");
        std::fs::write(
            &path,
            concat!(
                r#"{"resourceType":"Patient","id":"p-1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"943 476 5919"},{"system":"urn:oid:hospital","value":"H7"}],"name":[{"use":"usual","given":["Peggy"]},{"use":"official","family":"Okafor","given":["Margaret","Ada"],"prefix":["Mrs","Dame Commander"]}],"birthDate":"1941-03-14","gender":"female","address":[{"use":"work","line":["1 Work St"]},{"use":"home","line":["12 Mill Rd","Headingley"],"city":"Leeds","postalCode":"LS6 2AB"}],"telecom":[{"system":"email","value":"m@example.com"},{"system":"phone","value":"0113 496 0000"}]}"#,
                "\r\n\n",
                "{not json\n",
                r#"{"resourceType":"Observation","id":"o-1"}"#,
                "\n",
                r#"{"resourceType":"Patient","name":[{"family":"Nobody"}]}"#,
                "\n",
                r#"{"resourceType":"Patient","id":"p-2","name":"Smith"}"#,
                "\n",
                r#"{"resourceType":"Patient","id":" p-3 "}"#,
            ),
        )
        .expect("written");
        assert!(is_fhir(&path) && !is_fhir(Path::new("gp.csv")));
        let file = read_fhir(&path, 0, None).expect("reads");
        let ids: Vec<(&str, &str, u64)> =
            file.rows.iter().map(|row| (&*row.source_system, &*row.local_id, row.line)).collect();
        assert_eq!(ids, [("gp-export", "p-1", 1), ("gp-export", "p-3", 7)]);
        let raw = file.rows[0].raw.demographics();
        assert_eq!(raw.nhs_number.as_deref(), Some("943 476 5919"));
        // A title among the prefixes goes before the given names; other prefixes do not.
        assert_eq!(raw.given_name.as_deref(), Some("Mrs Margaret Ada"));
        assert_eq!(raw.family_name.as_deref(), Some("Okafor"));
        assert_eq!(raw.date_of_birth.as_deref(), Some("1941-03-14"));
        assert_eq!(
            (raw.address_line1.as_deref(), raw.address_line2.as_deref(), raw.town.as_deref()),
            (Some("12 Mill Rd"), Some("Headingley"), Some("Leeds"))
        );
        assert_eq!(raw.postcode.as_deref(), Some("LS6 2AB"));
        assert_eq!(raw.phone.as_deref(), Some("0113 496 0000"));
        assert_eq!(raw.email.as_deref(), Some("m@example.com"));
        assert_eq!(
            raw.identifiers,
            [Identifier { system: "urn:oid:hospital".into(), value: "H7".into() }]
        );
        let rejected = rejections(&file);
        assert_eq!(
            rejected,
            [
                (3, "row", "line is not a JSON object"),
                (4, "row", "resourceType must be Patient"),
                (5, "local_id", "missing Patient.id"),
                (6, "row", "Patient.name must be an array"),
            ]
        );
        // No value reaches a reason.
        assert!(!file.rejected.iter().any(|error| error.reason.contains("Smith")));

        // A file whose first line is no JSON object is not NDJSON: it fails whole.
        let csv = dir.path().join("council.ndjson");
        std::fs::write(&csv, "local_id,given_name\nC1,Ann\n").expect("written");
        let error = read_fhir(&csv, 0, None).unwrap_err().to_string();
        assert!(error.contains("line 1 is not a JSON object"), "{error}");
        assert!(!error.contains("Ann"), "{error}");
    }

    /// A Patient's name as systems without structured names send it, as text; and
    /// an old or maiden name listed first is not taken for the person's current one.
    #[test]
    fn a_patients_name_given_as_text_or_after_an_old_name_is_read() {
        let names = |patient: &str| {
            let patient: Value = serde_json::from_str(patient).expect("json");
            let demographics = patient_demographics(&patient).expect("a Patient");
            (demographics.given_name, demographics.family_name)
        };
        let pair =
            |given: Option<&str>, family: &str| (given.map(str::to_owned), Some(family.to_owned()));
        assert_eq!(
            names(r#"{"resourceType":"Patient","name":[{"text":"Mrs Jane Anne Smith"}]}"#),
            pair(Some("Mrs Jane Anne"), "Smith")
        );
        assert_eq!(
            names(r#"{"resourceType":"Patient","name":[{"use":"official","text":"SMITH, Jane"}]}"#),
            pair(Some("Jane"), "SMITH")
        );
        assert_eq!(
            names(r#"{"resourceType":"Patient","name":[{"text":"Smith"}]}"#),
            pair(None, "Smith")
        );
        // Structured parts win over the text.
        assert_eq!(
            names(
                r#"{"resourceType":"Patient","name":[{"text":"Jane Smith","family":"Smith-Jones","given":["Jane"]}]}"#
            ),
            pair(Some("Jane"), "Smith-Jones")
        );
        assert_eq!(
            names(
                r#"{"resourceType":"Patient","name":[{"use":"maiden","family":"Brown","given":["Jane"]},{"family":"Smith","given":["Jane"]}]}"#
            ),
            pair(Some("Jane"), "Smith")
        );
        let patient: Value = serde_json::from_str(
            r#"{"resourceType":"Patient","name":[{"use":"maiden","family":"Brown"},{"use":"official","family":"Smith","given":["Jane"]},{"use":"old","family":"Green","period":{"end":"2001"}}]}"#,
        )
        .unwrap();
        let demographics = patient_demographics(&patient).unwrap();
        assert_eq!(demographics.previous_family_name.as_deref(), Some("Brown; Green"));
        assert_eq!(demographics.family_name.as_deref(), Some("Smith"));
        let patient: Value =
            serde_json::from_str(r#"{"resourceType":"Patient","name":[{"text":7}]}"#).unwrap();
        assert_eq!(
            patient_demographics(&patient).unwrap_err(),
            "Patient.name.text must be a string"
        );
    }

    #[test]
    fn a_bundle_of_patients_is_read_entry_by_entry_with_the_line_each_starts_on() {
        let dir = tempfile::TempDir::new().expect("temporary folder");
        let path = dir.path().join("search.json");
        // Pretty-printed, as a FHIR server answers a search.
        let bundle = serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"fullUrl": "https://gp.example/Patient/p-1", "search": {"mode": "match"},
                 "resource": {"resourceType": "Patient", "id": "p-1",
                              "name": [{"family": "Okafor", "given": ["Margaret"]}],
                              "birthDate": "1941-03-14"}},
                {"search": {"mode": "include"},
                 "resource": {"resourceType": "Practitioner", "id": "dr-1"}},
                {"resource": {"resourceType": "Patient", "id": "p-2", "birthDate": 1941}},
                {"resource": {"resourceType": "Observation", "id": "o-1"}},
                {"request": {"method": "DELETE", "url": "Patient/p-9"}},
                {"resource": {"resourceType": "Patient", "id": "p-3",
                              "name": [{"family": "Smith", "given": ["Ann"]}]}}
            ]
        });
        let text = serde_json::to_string_pretty(&bundle).expect("JSON");
        std::fs::write(&path, &text).expect("written");
        let line_of = |id: &str| {
            let at = text.find(&format!("\"id\": \"{id}\"")).expect("in the text");
            // The resource opens a few lines above its id.
            let opening = text[..at].rfind("\"resource\": {").expect("resource");
            text[..opening].matches('\n').count() as u64 + 1
        };
        assert!(is_fhir(&path));
        let file = read_fhir(&path, 0, None).expect("reads");
        let rows: Vec<(&str, &str, u64)> =
            file.rows.iter().map(|row| (&*row.source_system, &*row.local_id, row.line)).collect();
        assert_eq!(rows, [("search", "p-1", line_of("p-1")), ("search", "p-3", line_of("p-3"))]);
        assert_eq!(file.rows[0].raw.demographics().family_name.as_deref(), Some("Okafor"));
        let rejected = rejections(&file);
        assert_eq!(
            rejected,
            [
                (line_of("p-2"), "row", "Patient.birthDate must be a string"),
                (line_of("o-1"), "row", "resourceType must be Patient"),
            ]
        );

        // A JSON array of Patients, as some tools export them.
        let array = dir.path().join("export.json");
        std::fs::write(
            &array,
            "[\n  {\"resourceType\":\"Patient\",\"id\":\"a\"},\n  {\"resourceType\":\"Patient\",\"id\":\"b\"}\n]",
        )
        .unwrap();
        let file = read_fhir(&array, 0, None).expect("reads");
        let rows: Vec<(&str, u64)> =
            file.rows.iter().map(|row| (&*row.local_id, row.line)).collect();
        assert_eq!(rows, [("a", 2), ("b", 3)]);

        // One Patient on its own is a file of one record.
        let single = dir.path().join("patient.json");
        std::fs::write(&single, "\n\n{\"resourceType\":\"Patient\",\"id\":\"solo\"}").unwrap();
        let file = read_fhir(&single, 0, Some("gp")).expect("reads");
        assert_eq!((&*file.rows[0].local_id, file.rows[0].line), ("solo", 3));

        // Anything else fails whole, naming where and never a value.
        for (text, expected) in [
            (r#"{"resourceType":"Observation","id":"o-1"}"#, "must be Bundle or Patient"),
            (r#"{"resourceType":"Bundle","entry":"Smith"}"#, "line 1 column"),
            ("local_id,given_name\nC1,Smith\n", "line 1 column"),
        ] {
            std::fs::write(&single, text).unwrap();
            let error = read_fhir(&single, 0, None).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("Smith"), "{error}");
        }
    }

    #[test]
    fn each_source_systems_dates_are_read_in_the_order_its_dates_show() {
        use DateOrder::{DayFirst, MonthFirst};
        // One file, three systems: a US export, a UK one with a month-first slip, and
        // one whose dates fit either order (read day first, as the UK writes them).
        let text = b"source_system,local_id,date_of_birth\n\
            us,U1,02/13/1980\nus,U2,03/04/1951\nus,U3,12/25/1962 00:00\nus,U4,\n\
            uk,K1,13/02/1980\nuk,K2,25/12/1962\nuk,K3,02/13/1980\nuk,K4,1980-02-13\n\
            either,E1,03/04/1951\neither,E2,1 Feb 1980\n";
        let file = read(text, &ColumnMap::default()).expect("reads");
        assert_eq!(
            date_orders(&file),
            [
                ("U1", MonthFirst),
                ("U2", MonthFirst),
                ("U3", MonthFirst),
                ("U4", MonthFirst),
                ("K1", DayFirst),
                ("K2", DayFirst),
                ("K3", DayFirst),
                ("K4", DayFirst),
                ("E1", DayFirst),
                ("E2", DayFirst)
            ]
        );
        assert_eq!(
            file.date_orders,
            [
                SourceDates {
                    source_system: "uk".to_owned(),
                    month_only: 1,
                    day_only: 2,
                    order: DayFirst
                },
                SourceDates {
                    source_system: "us".to_owned(),
                    month_only: 2,
                    day_only: 0,
                    order: MonthFirst
                }
            ]
        );
        // The order held with the raw values is what normalising reads.
        let normalizer = mpi_matching::Normalizer::new(crate::normalize_options(false));
        let us_second = normalizer.normalize(&file.rows[1].raw.demographics()).0;
        assert_eq!(us_second.date_of_birth.map(|date| date.month), Some(3));

        // `--dates` sets the order for every row, and nothing is found.
        let forced = read_csv_bytes(
            Path::new("council.csv"),
            text,
            0,
            &ColumnMap::default(),
            None,
            Some(DayFirst),
        )
        .expect("reads");
        assert!(date_orders(&forced).iter().all(|&(_, order)| order == DayFirst));
        assert!(forced.date_orders.is_empty());
    }

    #[test]
    fn canonical_columns_and_default_source() {
        let file = read(
            b"local_id,given_name,family_name,extra\nA1,Ada,Lovelace,x\n",
            &ColumnMap::default(),
        )
        .expect("reads");
        assert_eq!(file.rows.len(), 1);
        let row = &file.rows[0];
        assert_eq!((&*row.source_system, &*row.local_id, row.line), ("council", "A1", 2));
        assert_eq!(row.raw.demographics().given_name.as_deref(), Some("Ada"));
    }

    #[test]
    fn mapped_columns_join_in_order() {
        let map = febrl_map(true);
        let file = read(
            b"rec_id,given_name,surname,street_number,address_1,address_2,suburb,postcode,state,date_of_birth,soc_sec_id\n\
              rec-1-org,ada,lovelace,7,wallaby place,,sydney,2615,nsw,19151210,1234567\n",
            &map,
        )
        .expect("reads");
        let row = &file.rows[0];
        assert_eq!(&*row.local_id, "rec-1-org");
        assert_eq!(row.raw.demographics().address_line1.as_deref(), Some("7 wallaby place"));
        assert_eq!(
            row.raw.demographics().identifiers,
            vec![Identifier { system: "ssn".into(), value: "1234567".into() }]
        );
    }

    #[test]
    fn a_council_file_is_read_by_its_usual_column_names() {
        let file = read(
            b"Client ID,Title,Forename,Middle Names,Surname,D.O.B.,Gender,NHS No,Address 1,\
              Address 2,Town/City,Post Code,Home Phone,Mobile,Email Address,Ethnicity\n\
              C17,Mr,John,Paul,Smith,01/02/1980,M,943 476 5919,12 Mill Rd,Headingley,Leeds,\
              LS6 1AB,0113 496 0000,07700 900123,j@example.org,X\n",
            &ColumnMap::default(),
        )
        .expect("reads");
        let row = &file.rows[0];
        assert_eq!(&*row.local_id, "C17");
        let got = row.raw.demographics();
        // The title goes before the given names, where the normaliser reads it.
        assert_eq!(got.given_name.as_deref(), Some("Mr John Paul"));
        assert_eq!(got.family_name.as_deref(), Some("Smith"));
        assert_eq!(got.date_of_birth.as_deref(), Some("01/02/1980"));
        assert_eq!(got.sex.as_deref(), Some("M"));
        assert_eq!(got.nhs_number.as_deref(), Some("943 476 5919"));
        assert_eq!(got.address_line1.as_deref(), Some("12 Mill Rd"));
        assert_eq!(got.address_line2.as_deref(), Some("Headingley"));
        assert_eq!(got.town.as_deref(), Some("Leeds"));
        assert_eq!(got.postcode.as_deref(), Some("LS6 1AB"));
        // Two phone columns stay two numbers; the normaliser keeps the first.
        assert_eq!(got.phone.as_deref(), Some("0113 496 0000 / 07700 900123"));
        assert_eq!(
            mpi_matching::normalize_phone("0113 496 0000 / 07700 900123"),
            mpi_matching::normalize_phone("0113 496 0000")
        );
        assert_eq!(got.email.as_deref(), Some("j@example.org"));
        assert_eq!(file.columns[0], ColumnUse::Recognised("Client ID".into(), "local_id".into()));
        let ignored: Vec<&ColumnUse> =
            file.columns.iter().filter(|column| matches!(column, ColumnUse::Ignored(_))).collect();
        assert_eq!(ignored, [&ColumnUse::Ignored("Ethnicity".into())]);
        assert_eq!(file.columns[1], ColumnUse::Named("Title".into()));
        assert_eq!(file.matching_columns, 13);
    }

    #[test]
    fn a_title_column_is_read_before_the_given_names_and_only_when_it_holds_a_title() {
        let file = read(
            b"local_id,Forename,Surname,Salutation,Gender
              C1,Ann,Smith,Mrs,
              C2,,Smith,Miss.,
              C3,Tom,Smith,Unknown,
              C4,Tom,Smith,Dr,M
",
            &ColumnMap::default(),
        )
        .expect("reads");
        let given: Vec<Option<String>> =
            file.rows.iter().map(|row| row.raw.demographics().given_name).collect();
        assert_eq!(
            given,
            [
                Some("Mrs Ann".into()),
                Some("Miss.".into()),
                Some("Tom".into()),
                Some("Dr Tom".into())
            ]
        );
        let normalizer = mpi_matching::Normalizer::new(crate::normalize_options(false));
        let sexes: Vec<Option<mpi_matching::Sex>> = file
            .rows
            .iter()
            .map(|row| normalizer.normalize(&row.raw.demographics()).0.sex)
            .collect();
        use mpi_matching::Sex::{Female, Male};
        assert_eq!(sexes, [Some(Female), Some(Female), None, Some(Male)]);
        // Mapped by name, from any column.
        let map = ColumnMap::parse(&["Honorific=title"]).expect("a mapping");
        let file = read(
            b"local_id,given_name,Honorific
C1,Ann,Ms
",
            &map,
        )
        .expect("reads");
        assert_eq!(file.rows[0].raw.demographics().given_name.as_deref(), Some("Ms Ann"));
    }

    /// Columns mapped to one former-name field stay names of their own.
    #[test]
    fn two_former_name_columns_mapped_to_one_field_stay_two_names() {
        let map =
            ColumnMap::parse(&["Maiden=previous_family_name", "Previous=previous_family_name"])
                .expect("a mapping");
        let file = read(b"local_id,Maiden,Previous\nC1,Adams,Clark\n", &map).expect("reads");
        let raw = file.rows[0].raw.demographics();
        assert_eq!(raw.previous_family_name.as_deref(), Some("Adams; Clark"));
        let normalizer = mpi_matching::Normalizer::new(crate::normalize_options(false));
        let names = normalizer.normalize(&raw).0.previous_family_names;
        assert_eq!(names.iter().map(|name| &**name).collect::<Vec<_>>(), ["adams", "clark"]);
    }

    #[test]
    fn a_canonical_name_or_a_mapping_wins_over_a_usual_name() {
        let file = read(
            b"local_id,ID,given_name,Forename,Name,First Name\nA1,9,Ada,Augusta,Lovelace,Byron\n",
            &ColumnMap::parse(&["Name=family_name"]).expect("valid"),
        )
        .expect("reads");
        let got = file.rows[0].raw.demographics();
        assert_eq!(&*file.rows[0].local_id, "A1");
        assert_eq!(got.given_name.as_deref(), Some("Ada"));
        assert_eq!(got.family_name.as_deref(), Some("Lovelace"));
        let ignored: Vec<&ColumnUse> =
            file.columns.iter().filter(|column| matches!(column, ColumnUse::Ignored(_))).collect();
        assert_eq!(ignored.len(), 3, "{:?}", file.columns);
        // Nothing to match on: the caller warns.
        let bare = read(b"Ref,Ethnicity\n1,X\n", &ColumnMap::parse(&["Ref=local_id"]).unwrap())
            .expect("reads");
        assert_eq!(bare.matching_columns, 0);
    }

    #[test]
    fn two_columns_that_could_each_be_the_local_id_are_refused() {
        let Err(InputError::Header { reason, .. }) =
            read(b"ID,Client ID,Forename\n1,2,Ada\n", &ColumnMap::default())
        else {
            panic!("expected a header error");
        };
        assert!(reason.contains("\"ID\" and \"Client ID\""), "{reason}");
        assert!(reason.contains("--map COLUMN=local_id"), "{reason}");
        // Mapping one of them settles it.
        let file = read(
            b"ID,Client ID,Forename\n1,2,Ada\n",
            &ColumnMap::parse(&["Client ID=local_id"]).unwrap(),
        )
        .expect("reads");
        assert_eq!(&*file.rows[0].local_id, "2");
    }

    #[test]
    fn a_windows_1252_file_reads_with_its_encoding_and_is_rejected_row_by_row_without() {
        let dir = tempfile::TempDir::new().expect("temporary folder");
        let path = dir.path().join("excel.csv");
        // "Zoë", "O’Brien" (a curly apostrophe, 0x92) and "Renée" as Excel saves them.
        std::fs::write(
            &path,
            b"local_id,given_name,family_name\nA1,Zo\xEB,O\x92Brien\nA2,Ren\xE9e,Smith\nA3,Ada,Lee\n",
        )
        .expect("written");
        let file = read_csv(&path, 0, &ColumnMap::default(), None, Encoding::Windows1252, None)
            .expect("reads");
        assert!(file.rejected.is_empty());
        let names: Vec<(Option<String>, Option<String>)> = file
            .rows
            .iter()
            .map(|row| (row.raw.demographics().given_name, row.raw.demographics().family_name))
            .collect();
        assert_eq!(names[0], (Some("Zoë".into()), Some("O\u{2019}Brien".into())));
        assert_eq!(names[1].0.as_deref(), Some("Renée"));
        // Read as UTF-8, the two rows are rejected with a reason that names the flag.
        let file =
            read_csv(&path, 0, &ColumnMap::default(), None, Encoding::Utf8, None).expect("reads");
        assert_eq!(file.rows.len(), 1);
        assert_eq!(file.rejected.len(), 2);
        assert!(file.rejected[0].reason.contains("--encoding windows-1252"));
        // A UTF-8 file with its byte order mark reads as UTF-8 whatever the flag says.
        std::fs::write(&path, "\u{feff}local_id,given_name\nA1,Zoë\n").expect("written");
        let file = read_csv(&path, 0, &ColumnMap::default(), None, Encoding::Windows1252, None)
            .expect("reads");
        assert_eq!(file.rows[0].raw.demographics().given_name.as_deref(), Some("Zoë"));
    }

    #[test]
    fn a_tab_or_semicolon_separated_file_is_read_by_its_header() {
        for separator in ["\t", ";", "|"] {
            let text = ["local_id", "given_name", "family_name"].join(separator)
                + "\n"
                + &["A1", "Ada", "Lovelace, Countess"].join(separator)
                + "\n";
            let file = read(text.as_bytes(), &ColumnMap::default()).expect("reads");
            assert_eq!(file.delimiter, separator.as_bytes()[0]);
            let got = file.rows[0].raw.demographics();
            assert_eq!(got.family_name.as_deref(), Some("Lovelace, Countess"), "{separator:?}");
        }
        // A comma in the header makes it comma-separated, whatever else it holds.
        let file = read(b"local_id,note;x\nA1,y\n", &ColumnMap::default()).expect("reads");
        assert_eq!(file.delimiter, b',');
    }

    #[test]
    fn whole_names_split_as_people_write_them() {
        for (whole, given, family) in [
            ("SMITH, John Paul", "John Paul", "SMITH"),
            ("Smith, John", "John", "Smith"),
            ("John SMITH", "John", "SMITH"),
            ("SMITH John", "John", "SMITH"),
            ("Mr John SMITH", "Mr John", "SMITH"),
            ("MR JOHN SMITH", "MR JOHN", "SMITH"),
            ("John Smith", "John", "Smith"),
            ("Mary van der Berg", "Mary", "van der Berg"),
            ("Jean-Luc DE LA CROIX", "Jean-Luc", "DE LA CROIX"),
            ("John Smith Jr.", "John", "Smith Jr."),
            ("Aoife O Brien", "Aoife", "O Brien"),
            ("John McDonald", "John", "McDonald"),
            ("Smith", "", "Smith"),
            ("", "", ""),
        ] {
            assert_eq!(split_full_name(whole), (given.to_owned(), family.to_owned()), "{whole}");
        }
    }

    #[test]
    fn a_column_of_whole_names_is_read_as_given_and_family_names() {
        let file = read(
            b"Client ID,Client Name,DOB\nC1,\"SMITH, John\",1/2/1980\n",
            &ColumnMap::default(),
        )
        .expect("reads");
        let got = file.rows[0].raw.demographics();
        assert_eq!(
            (got.given_name.as_deref(), got.family_name.as_deref()),
            (Some("John"), Some("SMITH"))
        );
        assert_eq!(
            file.columns[1],
            ColumnUse::Recognised("Client Name".into(), "full_name".into())
        );
        // Not where a column gives the family name: there "Name" may be anything.
        let file = read(b"local_id,Name,Surname\nA1,Ada,Lovelace\n", &ColumnMap::default())
            .expect("reads");
        assert_eq!(file.columns[1], ColumnUse::Ignored("Name".into()));
        // Mapped by hand; it gives both names, so a Surname column is not read beside it.
        let map = ColumnMap::parse(&["Who=full_name"]).expect("valid");
        let file = read(b"local_id,Who,Surname\nA1,Ada LOVELACE,Byron\n", &map).expect("reads");
        assert_eq!(file.rows[0].raw.demographics().family_name.as_deref(), Some("LOVELACE"));
        assert_eq!(file.columns[2], ColumnUse::Ignored("Surname".into()));
    }

    #[quickcheck_macros::quickcheck]
    fn any_bytes_read_without_panic_each_line_at_most_one_row_or_rejection(
        body: Vec<u8>,
        header: u8,
    ) -> bool {
        let headers: [&[u8]; 4] = [
            b"local_id,given_name,family_name,date_of_birth\n",
            b"Client ID\tName\tDOB\tNHS Number\n",
            b"ID;Forename;Surname;Phone\n",
            b"local_id|full_name|phone\n",
        ];
        let mut bytes = headers[usize::from(header) % headers.len()].to_vec();
        bytes.extend_from_slice(&body);
        let lines = bytes.iter().filter(|&&byte| byte == b'\n' || byte == b'\r').count() + 1;
        match read(&bytes, &ColumnMap::default()) {
            Ok(file) => file.rows.len() + file.rejected.len() < lines,
            Err(_) => true,
        }
    }

    /// Everything a read found, in a form to compare.
    fn found(file: &ReadFile) -> impl PartialEq + std::fmt::Debug + use<> {
        let rows: Vec<_> = file
            .rows
            .iter()
            .map(|row| {
                (row.line, row.source_system.to_string(), row.local_id.clone(), row.raw.clone())
            })
            .collect();
        let rejected: Vec<_> = file
            .rejected
            .iter()
            .map(|error| {
                (error.line, error.field.clone(), error.reason.clone(), error.local_id.clone())
            })
            .collect();
        (rows, rejected, file.date_orders.clone())
    }

    #[quickcheck_macros::quickcheck]
    fn a_file_read_in_pieces_gives_the_rows_one_reader_gives(body: Vec<u8>, crlf: bool) -> bool {
        // Quotes, separators and line breaks often, so that pieces start inside quoted
        // values, between the CR and LF of a line end, and on blank lines.
        const ALPHABET: &[u8] = b"a1/,,\"\"\n\n\r 2x";
        let header: &[u8] = if crlf {
            b"source_system,local_id,given_name,date_of_birth\r\n"
        } else {
            b"source_system,local_id,given_name,date_of_birth\n"
        };
        let mut bytes = header.to_vec();
        bytes.extend(body.iter().map(|&byte| ALPHABET[usize::from(byte) % ALPHABET.len()]));
        let path = Path::new("council.csv");
        let read = |pieces| {
            read_csv_in_pieces(path, &bytes, 0, &ColumnMap::default(), None, None, Some(pieces))
                .expect("reads")
        };
        let whole = found(&read(1));
        (2..=6).all(|pieces| found(&read(pieces)) == whole)
    }

    #[test]
    fn a_large_file_is_read_in_pieces_as_one_reader_reads_it() {
        // Rows with quoted values across lines, CRLF line ends and a bad row, around
        // every place a piece may start.
        let mut text = String::from("local_id,given_name,date_of_birth\r\n");
        for row in 0..100_000 {
            match row % 7 {
                0 => text.push_str(&format!("A{row},\"Ada\r\nMary\",13/02/1980\r\n")),
                3 => text.push_str(&format!("A{row},Bad,row,here\r\n\r\n")),
                _ => text.push_str(&format!("A{row},Ada,02/13/1980\r\n")),
            }
        }
        assert!(text.len() > 2 * MIN_PIECE_BYTES);
        let read = |pieces| {
            read_csv_in_pieces(
                Path::new("council.csv"),
                text.as_bytes(),
                0,
                &ColumnMap::default(),
                None,
                None,
                pieces,
            )
            .expect("reads")
        };
        let whole = read(Some(1));
        // (Rows 3, 10, ..., 99,993 have too many fields.)
        assert_eq!(whole.rejected.len(), 14_286);
        assert_eq!(whole.rows.len(), 100_000 - 14_286);
        assert_eq!(whole.rows[1].line, 4, "the first row's quoted value spans lines 2 and 3");
        for pieces in [Some(2), Some(3), Some(8), None] {
            assert_eq!(found(&read(pieces)), found(&whole), "{pieces:?}");
        }
    }

    #[quickcheck_macros::quickcheck]
    fn a_whole_name_splits_without_losing_or_adding_a_word(words: Vec<String>) -> bool {
        let whole = words.join(" ").replace(',', " ");
        let (given, family) = split_full_name(&whole);
        let mut before: Vec<&str> = whole.split_whitespace().collect();
        let mut after: Vec<&str> =
            given.split_whitespace().chain(family.split_whitespace()).collect();
        before.sort_unstable();
        after.sort_unstable();
        before == after
    }

    #[quickcheck_macros::quickcheck]
    fn windows_1252_gives_a_character_for_every_byte(bytes: Vec<u8>) -> bool {
        from_windows_1252(&bytes).chars().count() == bytes.len()
    }

    #[test]
    fn bad_rows_are_rejected_and_the_rest_proceeds() {
        let file = read(
            b"local_id,given_name\nA1,Ada\nA2,Charles,extra\n,Nobody\nA4,\xff\xfe\nA5,Mary\n",
            &ColumnMap::default(),
        )
        .expect("reads");
        let ids: Vec<&str> = file.rows.iter().map(|row| &*row.local_id).collect();
        assert_eq!(ids, ["A1", "A5"]);
        let lines: Vec<(u64, &str)> =
            file.rejected.iter().map(|error| (error.line, error.field.as_str())).collect();
        assert_eq!(lines, [(3, "row"), (4, "local_id"), (5, "given_name")]);
    }

    #[test]
    fn line_numbers_are_right_for_windows_line_ends_and_quoted_line_breaks() {
        for ending in ["\n", "\r\n", "\r"] {
            let text = [
                "\u{feff}local_id,given_name",
                "A1,Ada",
                "A2,\"Ada",
                "Mary\"",
                "A3,Charles,extra",
                "",
                "A4,Mary",
                "",
            ]
            .join(ending);
            let file = read(text.as_bytes(), &ColumnMap::default()).expect("reads");
            let rows: Vec<(&str, u64)> =
                file.rows.iter().map(|row| (&*row.local_id, row.line)).collect();
            assert_eq!(rows, [("A1", 2), ("A2", 3), ("A4", 7)], "line ends {ending:?}");
            let rejected: Vec<u64> = file.rejected.iter().map(|error| error.line).collect();
            assert_eq!(rejected, [5], "line ends {ending:?}");
        }
    }

    #[test]
    fn a_quote_left_open_names_the_lines_it_took_in() {
        for ending in ["\n", "\r\n", "\r"] {
            let text = [
                "local_id,given_name,family_name",
                "A1,Ada,Lovelace",
                "A2,\"Ada,Byron",
                "A3,Mary,Shelley",
                "A4,Percy,Shelley",
                "",
            ]
            .join(ending);
            let file = read(text.as_bytes(), &ColumnMap::default()).expect("reads");
            let ids: Vec<&str> = file.rows.iter().map(|row| &*row.local_id).collect();
            assert_eq!(ids, ["A1"], "line ends {ending:?}");
            let [error] = file.rejected.as_slice() else {
                panic!("one rejected row, got {:?}", file.rejected.len());
            };
            assert_eq!(error.line, 3, "line ends {ending:?}");
            assert_eq!(
                error.reason,
                "row has 2 fields, the header has 3; its field 2 is quoted over 3 lines, to \
                 line 5: a quote left open takes in the rows after it",
                "line ends {ending:?}"
            );
        }
    }

    #[test]
    fn malformed_files_fail_whole() {
        assert!(matches!(
            read(b"name,dob\nAda,1815\n", &ColumnMap::default()),
            Err(InputError::Header { .. })
        ));
        let utf16: Vec<u8> =
            "\u{feff}local_id\nA1\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(matches!(read(&utf16, &ColumnMap::default()), Err(InputError::Encoding { .. })));
        assert!(matches!(
            read(&[0u8; 64], &ColumnMap::default()),
            Err(InputError::Encoding { .. })
        ));
    }

    #[test]
    fn mapping_errors_are_clear() {
        assert!(ColumnMap::parse(&["nonsense"]).is_err());
        assert!(ColumnMap::parse(&["a=not_a_field"]).is_err());
        assert!(ColumnMap::parse(&["a=id:"]).is_err());
        assert!(ColumnMap::parse(&["a=id:nhs_trust_mrn"]).is_ok());
    }
}
