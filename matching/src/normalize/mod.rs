//! Normalisation: every field to a canonical form for comparison, with a typed reason
//! when a value cannot be used. Never fails, never panics: bad data is normal here.

mod contact;
mod date;
mod name;
mod nhs;
mod nickname;
mod place;

use rphonetic::{DoubleMetaphone, Encoder};

pub use self::contact::{is_uk_mobile, normalize_email, normalize_phone, normalize_sex};
pub use self::date::{date_order_evidence, normalize_birth_date, normalize_birth_date_in};
pub use self::name::{
    is_title, normalize_family_name, normalize_given_names, normalize_previous_family_names,
    sex_of_titles, split_former_family_names,
};
pub use self::nhs::{nhs_check_digit_valid, normalize_nhs_number};
pub use self::nickname::Nicknames;
pub use self::place::{normalize_address, normalize_postcode};
use crate::compare::MAX_LISTED;
use crate::record::{
    BirthDate, Demographics, Field, Identifier, Issue, IssueKind, NormalizedRecord,
};

/// The version of what normalisation makes of raw values. Raise it whenever some input's
/// normalised value changes: a store normalised by an earlier version is normalised
/// again from its raw values when next opened, so that its records and new ones
/// compare alike.
/// - 1: the first.
/// - 2: an apostrophe joins its word in an address (`Queen's Rd` is `queens road`, not
///   `queen south road`), and in `Flat 2/1, 12 High St` the house number is 12; the
///   NHS's pseudo-postcodes (`ZZ99 3VZ`, no fixed abode) and addresses such as `No
///   fixed abode` are placeholders, not values; birth dates such as `12th July 1980`
///   and `12/07/1980 00:00` are read; a note in brackets in a name (`SMITH
///   (DECEASED)`) is dropped; an NHS number's label (`NHS No: ...`) is read past; of
///   several phone numbers in one value the first is taken, without an extension; in a
///   postcode, O, I or L where only a digit can stand is read as the digit.
/// - 3: a birth date with a month's name holding a `t` (`23 August 1967`, `1st October
///   1950`) is read: the `t` was taken for the start of an ISO time part. A postcode
///   follows Royal Mail's letter rules (no Q, V or X first; no I, J or Z second; a short
///   list after the district's digit), so `B1I 3GN` is repaired to `B11 3GN` and
///   `QA1 1AA` is no UK postcode. Dates with the month's name first (`July 12, 1980`)
///   and spreadsheets' serial day numbers (`29414`) are read. A phone number is read
///   past a label (`Tel: `) and up to a note (`(mobile)`). In an address, `the` is
///   left out and a house number's letter written apart joins it (`12 A` is `12a`). A
///   generational suffix in brackets (`SMITH (JNR)`) is kept, and a title alone where
///   the given name should be (`Mr`) is a placeholder.
/// - 4: an NHS or phone number a spreadsheet wrote as a decimal (`9434765919.0`) is
///   read as the whole number, and one it rounded into scientific notation
///   (`9.43477E+09`) is reported as rounded.
/// - 5: a UK postcode at the end of the last address line (`12 Mill Road, Leeds LS1
///   4AB`) leaves the address, and is the postcode when the postcode field is empty.
/// - 6: sex written out as systems write it (`Not Known`, `N/K`, `Not specified`,
///   `Prefer not to say` as unknown, `Non-binary` as other) is read, not refused.
/// - 7: a birth date with a time on a 12-hour clock (`2/13/1980 12:00:00 AM`, a US
///   locale's export) is read, month first unless the first number cannot be a month.
/// - 8: a record may say its dates are written month first
///   ([`crate::DateOrder::MonthFirst`]); and a date of eight characters with
///   separators (`02-13-80 12:00 AM`) is no longer taken for `YYYYMMDD`, so the 12-hour
///   rule reads it.
/// - 9: a record without a sex takes the one its title says (`Mrs`, `Miss`, `Ms`,
///   `Mr`, `Master`, ...), and `Doctor`, `Professor`, `Reverend` and `Captain` are
///   titles as their short forms are.
/// - 10: an NHS or phone number after a spreadsheet's text apostrophe
///   (`'943 476 5919`) is read.
/// - 11: former family names (a maiden name), from their own field or written with the
///   family name (`Jones (née Brown)`, `Jones nee Brown`), which keeps only `jones`; a
///   postcode with punctuation around it (`LS1 1AA.`); `TBC`, `Declined` and the like
///   for a name are placeholders; a flat written after its street goes first.
/// - 12: a name's notes in brackets are read by one walker for both uses (a suffix kept,
///   a former family name taken out): a bracket inside a note is part of it, and a
///   closing bracket with none open is a break between words wherever it stands (it
///   joined the letters around it when the name held an opening bracket elsewhere).
pub const NORMALIZATION_VERSION: u32 = 12;

/// Settings for normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Today's date: birth dates after it are impossible. (The crate has no clock.)
    pub today: BirthDate,
    /// Refuse NHS numbers starting 999, which are never issued to real people and are
    /// used by test and synthetic data. Off by default.
    pub refuse_test_nhs_numbers: bool,
}

/// Normalises raw demographics. Build once and share: it holds the nickname table.
#[derive(Debug)]
pub struct Normalizer {
    options: NormalizeOptions,
    nicknames: Nicknames,
}

impl Normalizer {
    /// A normaliser with the built-in nickname table.
    pub fn new(options: NormalizeOptions) -> Normalizer {
        Normalizer { options, nicknames: Nicknames::builtin() }
    }

    /// The options in force.
    pub fn options(&self) -> &NormalizeOptions {
        &self.options
    }

    /// The nickname table.
    pub fn nicknames(&self) -> &Nicknames {
        &self.nicknames
    }

    /// Normalises one record: canonical values, and an issue for every value that was
    /// given but could not be used (or, for a non-UK postal code, is used as a plain
    /// code). Never fails.
    pub fn normalize(&self, raw: &Demographics) -> (NormalizedRecord, Vec<Issue>) {
        let mut record = NormalizedRecord::default();
        let mut issues = Vec::new();
        let mut report = |field, kind| issues.push(Issue { field, kind });

        if let Some(value) = present(&raw.nhs_number) {
            match normalize_nhs_number(value, self.options.refuse_test_nhs_numbers) {
                Ok(number) => record.nhs_number = Some(number.into()),
                Err(kind) => report(Field::NhsNumber, or_placeholder(value, kind)),
            }
        }
        if let Some(value) = present(&raw.given_name) {
            let (names, suffix, issue) = normalize_given_names(value);
            let names = names.into_iter().take(MAX_LISTED);
            record.given_names = names.map(String::into_boxed_str).collect();
            record.name_suffix = suffix.map(String::into_boxed_str);
            if let Some(kind) = issue {
                report(Field::GivenName, kind);
            }
        }
        let mut previous: Vec<String> = Vec::new();
        if let Some(value) = present(&raw.family_name) {
            // A former name written with the current one: `Jones (née Brown)`.
            let (value, former) = if value.contains(['(', '[', ' ']) {
                let (current, former) = split_former_family_names(value);
                (std::borrow::Cow::Owned(current), former)
            } else {
                (std::borrow::Cow::Borrowed(value), Vec::new())
            };
            // (Read as a former-name field is: placeholders and initials left out.)
            previous.extend(former.iter().flat_map(|name| normalize_previous_family_names(name).0));
            let (family, suffix, issue) = normalize_family_name(&value);
            record.family_name = family.map(String::into_boxed_str);
            if record.name_suffix.is_none() {
                record.name_suffix = suffix.map(String::into_boxed_str);
            }
            if let Some(kind) = issue {
                report(Field::FamilyName, kind);
            }
        }
        if let Some(value) = present(&raw.previous_family_name) {
            let (names, issue) = normalize_previous_family_names(value);
            previous.extend(names);
            if let Some(kind) = issue {
                report(Field::PreviousFamilyName, kind);
            }
        }
        previous.retain(|name| record.family_name.as_deref() != Some(name.as_str()));
        previous.sort_unstable();
        previous.dedup();
        previous.truncate(MAX_LISTED);
        record.previous_family_names = previous.into_iter().map(String::into_boxed_str).collect();
        if let Some(value) = present(&raw.date_of_birth) {
            match normalize_birth_date_in(value, self.options.today, raw.date_order) {
                Ok(date) => record.date_of_birth = Some(date),
                Err(kind) => report(Field::DateOfBirth, or_placeholder(value, kind)),
            }
        }
        if let Some(value) = present(&raw.sex) {
            match normalize_sex(value) {
                Ok(sex) => record.sex = sex,
                Err(kind) => report(Field::Sex, kind),
            }
        }
        // Where the record gives no sex, its title may (`Mrs Ann`).
        if record.sex.is_none() {
            record.sex = present(&raw.given_name).and_then(sex_of_titles);
        }
        if let Some(value) = present(&raw.postcode) {
            match normalize_postcode(value) {
                Ok(code) => {
                    if !code.is_uk {
                        report(Field::Postcode, IssueKind::NotUkPostcode);
                    }
                    record.postcode = Some(code);
                }
                Err(kind) => report(Field::Postcode, or_placeholder(value, kind)),
            }
        }
        // A postcode written at the end of the last address line present (a file with
        // one address column) leaves the address, and is the postcode when the record
        // gives none in its own field.
        let mut lines =
            [present(&raw.address_line1), present(&raw.address_line2), present(&raw.town)];
        if let Some(last) = lines.iter_mut().rev().find(|line| line.is_some())
            && let Some((rest, code)) = last.and_then(place::postcode_at_end)
        {
            *last = Some(rest).filter(|rest| !rest.is_empty());
            if present(&raw.postcode).is_none() {
                record.postcode = Some(code);
            }
        }
        let [line1, line2, town] = lines;
        match normalize_address(line1, line2, town) {
            Ok(address) => record.address = address,
            Err(kind) => report(Field::AddressLine1, kind),
        }
        if let Some(value) = present(&raw.phone) {
            match normalize_phone(value) {
                Ok(phone) => record.phone = Some(phone.into()),
                Err(kind) => report(Field::Phone, or_placeholder(value, kind)),
            }
        }
        if let Some(value) = present(&raw.email) {
            match normalize_email(value) {
                Ok(email) => record.email = Some(email.into()),
                Err(kind) => report(Field::Email, or_placeholder(value, kind)),
            }
        }
        for identifier in &raw.identifiers {
            let system = identifier.system.trim();
            let value: String = identifier
                .value
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_uppercase)
                .collect();
            if !system.is_empty() && !value.is_empty() {
                record.identifiers.push(Identifier { system: system.to_owned(), value });
            }
        }
        record.identifiers.sort();
        record.identifiers.dedup();
        record.identifiers.truncate(MAX_LISTED);
        record.shrink_to_fit();
        issues.shrink_to_fit();
        (record, issues)
    }
}

/// A number column as spreadsheets and data frames write it: `9434765919.0` is the
/// whole number `9434765919`, and the apostrophe a spreadsheet keeps before a number
/// typed as text (`'07700 900123`, so its leading zero stays) is dropped; other values
/// are returned as they are.
///
/// # Errors
/// [`IssueKind::Rounded`] for a number in scientific notation (`9.43477E+09`): its
/// last digits are gone.
fn spreadsheet_number(value: &str) -> Result<&str, IssueKind> {
    let value = value.strip_prefix('\'').map_or(value, str::trim_start);
    if let Some((whole, zeros)) = value.split_once('.')
        && !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && !zeros.is_empty()
        && zeros.bytes().all(|b| b == b'0')
    {
        return Ok(whole);
    }
    let scientific = value.split_once(['e', 'E']).is_some_and(|(mantissa, exponent)| {
        let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
        !mantissa.is_empty()
            && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && mantissa.bytes().filter(|&b| b == b'.').count() <= 1
            && !exponent.is_empty()
            && exponent.bytes().all(|b| b.is_ascii_digit())
    });
    if scientific {
        return Err(IssueKind::Rounded);
    }
    Ok(value)
}

/// The trimmed value, None when absent or blank.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Words a clerk types where a value is not known (`N/A`, `none`, `Not known`), its
/// letters and digits alone, in lower case.
const NOT_KNOWN_WORDS: &[&str] = &[
    "na",
    "none",
    "nil",
    "null",
    "unknown",
    "unk",
    "nk",
    "notknown",
    "notgiven",
    "notstated",
    "notrecorded",
    "notapplicable",
    "refused",
    "declined",
    "tbc",
    "tba",
    "x",
    "xx",
    "xxx",
];

/// True when a value says it is not known: one of [`NOT_KNOWN_WORDS`] whatever its case,
/// spacing and punctuation (`N/A`, `Not Known`), or no letter or digit at all (`-`).
fn says_not_known(value: &str) -> bool {
    let word: String =
        value.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    word.is_empty() || NOT_KNOWN_WORDS.contains(&word.as_str())
}

/// The issue for a value a field's normaliser could not use: a placeholder when it
/// says it is not known, else `kind`.
fn or_placeholder(value: &str, kind: IssueKind) -> IssueKind {
    if says_not_known(value) { IssueKind::Placeholder } else { kind }
}

/// Folds text for comparison: Unicode to lower-case ASCII (`Łukasz` to `lukasz`,
/// `Zoë` to `zoe`), whitespace collapsed to single spaces, trimmed.
pub fn fold(s: &str) -> String {
    let ascii = if s.is_ascii() {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(deunicode::deunicode(s))
    };
    let mut out = String::with_capacity(ascii.len());
    for word in ascii.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    }
    out
}

/// The phonetic code of one name token: the primary Double Metaphone code (at most
/// four characters) of its letters. Empty for a token without letters. Split names
/// into tokens first: the encoder reads its whole input as one word.
///
/// Codes are remembered per thread: names repeat (a few thousand cover most of any
/// population), and the encoder costs some thousands of instructions a name, a tenth of
/// preparing a record.
pub fn phonetic(token: &str) -> String {
    thread_local! {
        static CODES: std::cell::RefCell<std::collections::HashMap<Box<str>, Box<str>>> =
            std::cell::RefCell::default();
    }
    CODES.with_borrow_mut(|codes| {
        if let Some(code) = codes.get(token) {
            return String::from(&**code);
        }
        let code = encode_phonetic(token);
        if codes.len() >= REMEMBERED_PHONETIC_CODES {
            *codes = std::collections::HashMap::new();
        }
        codes.insert(token.into(), code.as_str().into());
        code
    })
}

/// Names whose phonetic codes a thread remembers before it empties its memory and begins
/// again.
const REMEMBERED_PHONETIC_CODES: usize = 32_768;

fn encode_phonetic(token: &str) -> String {
    let letters: String = token.chars().filter(char::is_ascii_alphabetic).collect();
    if letters.is_empty() {
        return String::new();
    }
    DoubleMetaphone::default().encode(&letters)
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;
    use crate::record::DateOrder;

    fn normalizer() -> Normalizer {
        Normalizer::new(NormalizeOptions {
            today: BirthDate { year: 2026, month: 11, day: 24 },
            refuse_test_nhs_numbers: false,
        })
    }

    #[test]
    fn folds_accents_and_space() {
        assert_eq!(fold("  Łukasz   Wiśniewski "), "lukasz wisniewski");
        assert_eq!(fold("Zoë"), "zoe");
        assert_eq!(fold("SIOBHÁN"), "siobhan");
    }

    #[test]
    fn phonetic_codes_group_spellings() {
        assert_eq!(phonetic("smith"), phonetic("smyth"));
        assert_eq!(phonetic("catherine"), phonetic("kathryn"));
        assert_eq!(phonetic(""), "");
        assert_eq!(phonetic("123"), "");
    }

    /// A remembered code is the encoder's, asked first or again.
    #[quickcheck]
    fn remembered_phonetic_codes_are_the_encoders(tokens: Vec<String>) -> bool {
        let fresh: Vec<String> = tokens.iter().map(|token| encode_phonetic(token)).collect();
        let first: Vec<String> = tokens.iter().map(|token| phonetic(token)).collect();
        let again: Vec<String> = tokens.iter().map(|token| phonetic(token)).collect();
        first == fresh && again == fresh
    }

    #[test]
    fn phonetic_codes_stay_right_once_the_memory_is_emptied() {
        let names = ["smith", "smyth", "catherine", "kathryn", "siobhan", "o'brien"];
        let before: Vec<String> = names.iter().map(|name| phonetic(name)).collect();
        for n in 0..=REMEMBERED_PHONETIC_CODES {
            phonetic(&format!("name{n}"));
        }
        let after: Vec<String> = names.iter().map(|name| phonetic(name)).collect();
        let fresh: Vec<String> = names.iter().map(|name| encode_phonetic(name)).collect();
        assert_eq!(before, fresh);
        assert_eq!(after, fresh);
    }

    #[test]
    fn a_record_without_a_sex_takes_the_one_its_title_says() {
        use crate::record::Sex;
        let sex = |given: &str, sex: Option<&str>| {
            let raw = Demographics {
                given_name: Some(given.into()),
                sex: sex.map(Into::into),
                ..Demographics::default()
            };
            normalizer().normalize(&raw).0.sex
        };
        assert_eq!(sex("Mrs Ann", None), Some(Sex::Female));
        assert_eq!(sex("MISS. A", None), Some(Sex::Female));
        assert_eq!(sex("Dr Ms Ann", None), Some(Sex::Female));
        assert_eq!(sex("Master Tom", Some("Not known")), Some(Sex::Male));
        // A title alone names no one, but still says a sex.
        assert_eq!(sex("Mr", None), Some(Sex::Male));
        // The record's own sex stands; a title that says none says none; a title is
        // only a title at the start.
        assert_eq!(sex("Mrs Ann", Some("M")), Some(Sex::Male));
        assert_eq!(sex("Doctor Ann", None), None);
        assert_eq!(sex("Ann Mrs", None), None);
        let (record, _) = normalizer().normalize(&Demographics {
            given_name: Some("Professor Ann".into()),
            ..Demographics::default()
        });
        assert_eq!(record.given_names, ["ann".into()].into());
    }

    /// A clerk's `N/A`, `none` or `-` in a field is reported as a placeholder, not as a
    /// value of the wrong shape.
    #[test]
    fn words_for_not_known_are_placeholders() {
        let raw = Demographics {
            nhs_number: Some("N/A".into()),
            date_of_birth: Some("Not known".into()),
            postcode: Some("-".into()),
            phone: Some("none".into()),
            email: Some("n/a".into()),
            ..Demographics::default()
        };
        let (_, issues) = normalizer().normalize(&raw);
        let kinds: Vec<(Field, IssueKind)> =
            issues.iter().map(|issue| (issue.field, issue.kind)).collect();
        let placeholder = IssueKind::Placeholder;
        assert_eq!(
            kinds,
            [
                (Field::NhsNumber, placeholder),
                (Field::DateOfBirth, placeholder),
                (Field::Postcode, placeholder),
                (Field::Phone, placeholder),
                (Field::Email, placeholder),
            ]
        );
        // A value of the wrong shape is still reported as such.
        let raw = Demographics { phone: Some("call after 5".into()), ..Demographics::default() };
        assert_ne!(normalizer().normalize(&raw).1[0].kind, placeholder);
    }

    #[test]
    fn a_whole_record() {
        let raw = Demographics {
            nhs_number: Some("943 476 5918".into()),
            given_name: Some("Mr John Paul".into()),
            family_name: Some("SMITH JR".into()),
            date_of_birth: Some("31/02/1951".into()),
            sex: Some("1".into()),
            postcode: Some("2615".into()),
            address_line1: Some("12 High St".into()),
            phone: Some("07700 900123".into()),
            email: Some("not an email".into()),
            identifiers: vec![Identifier { system: "ssn".into(), value: " 12 34 ".into() }],
            ..Demographics::default()
        };
        let (record, issues) = normalizer().normalize(&raw);
        assert_eq!(record.nhs_number, None);
        assert_eq!(record.given_names, ["john".into(), "paul".into()].into());
        assert_eq!(record.family_name.as_deref(), Some("smith"));
        assert_eq!(record.name_suffix.as_deref(), Some("jr"));
        assert_eq!(record.date_of_birth, None);
        assert_eq!(record.sex, Some(crate::record::Sex::Male));
        assert!(record.postcode.as_ref().is_some_and(|code| !code.is_uk && code.code == "2615"));
        assert_eq!(record.address.as_ref().map(|a| &*a.text), Some("12 high street"));
        assert_eq!(record.phone.as_deref(), Some("+447700900123"));
        assert_eq!(record.identifiers, [Identifier { system: "ssn".into(), value: "1234".into() }]);
        let fields: Vec<(Field, IssueKind)> =
            issues.iter().map(|issue| (issue.field, issue.kind)).collect();
        assert_eq!(
            fields,
            [
                (Field::NhsNumber, IssueKind::BadCheckDigit),
                (Field::DateOfBirth, IssueKind::Impossible),
                (Field::Postcode, IssueKind::NotUkPostcode),
                (Field::Email, IssueKind::Unparseable),
            ]
        );
    }

    #[test]
    fn a_postcode_at_the_end_of_the_address_is_read_as_the_postcode() {
        let home = |line1: &str, town: Option<&str>, postcode: Option<&str>| {
            let raw = Demographics {
                address_line1: Some(line1.into()),
                town: town.map(Into::into),
                postcode: postcode.map(Into::into),
                ..Demographics::default()
            };
            let (record, _) = normalizer().normalize(&raw);
            (
                record.postcode.map(|code| code.code),
                record.address.map(|address| address.text.to_string()),
            )
        };
        let expected = (Some("LS1 4AB".to_owned()), Some("12 mill road leeds".to_owned()));
        assert_eq!(home("12 Mill Road, Leeds LS1 4AB", None, None), expected);
        assert_eq!(home("12 Mill Road, Leeds, ls14ab.", None, None), expected);
        assert_eq!(home("12 Mill Rd", Some("Leeds LS1 4AB"), None), expected);
        // Written in both places, the postcode field is the postcode.
        assert_eq!(home("12 Mill Road", Some("Leeds, LS1 4AB"), Some("LS1 4AB")), expected);
        assert_eq!(
            home("12 Mill Road, Leeds LS1 4AB", None, Some("LS2 9JT")).0.as_deref(),
            Some("LS2 9JT")
        );
        // Not a UK postcode, or only something like one: the address as it was.
        assert_eq!(
            home("7 Wallaby Place 2615", None, None),
            (None, Some("7 wallaby place 2615".into()))
        );
        assert_eq!(home("Flat 2 10 Mill Road", None, None).0, None);
        assert_eq!(home("Unit 4 2AB", None, None).0, None);
        assert_eq!(home("Mill House, All Oab", None, None).0, None);
        // A letter for a digit is read as in a postcode column.
        assert_eq!(home("12 Mill Road, Leeds LS1 OAB", None, None).0.as_deref(), Some("LS1 0AB"));
        // A no-break space (two bytes) between the words is a space like any other.
        assert_eq!(
            home("12 Mill Road\u{a0}LS1\u{a0}4AB", None, None).0.as_deref(),
            Some("LS1 4AB")
        );
        // A line that is only the postcode leaves nothing of itself.
        assert_eq!(
            home("12 Mill Road", Some("LS1 4AB"), None),
            (Some("LS1 4AB".into()), Some("12 mill road".into()))
        );
    }

    #[test]
    fn a_record_of_no_fixed_abode_has_no_home_to_compare() {
        let raw = Demographics {
            given_name: Some("Ann".into()),
            family_name: Some("Lee (deceased)".into()),
            date_of_birth: Some("12th July 1980".into()),
            postcode: Some("ZZ99 3VZ".into()),
            address_line1: Some("No Fixed Abode".into()),
            town: Some("Leeds".into()),
            phone: Some("07700 900123 / 0113 496 0000".into()),
            nhs_number: Some("NHS No: 943 476 5919".into()),
            ..Demographics::default()
        };
        let (record, issues) = normalizer().normalize(&raw);
        assert_eq!(record.postcode, None);
        assert_eq!(record.address, None);
        assert_eq!(record.family_name.as_deref(), Some("lee"));
        assert_eq!(record.date_of_birth, Some(BirthDate { year: 1980, month: 7, day: 12 }));
        assert_eq!(record.phone.as_deref(), Some("+447700900123"));
        assert_eq!(record.nhs_number.as_deref(), Some("9434765919"));
        let fields: Vec<(Field, IssueKind)> =
            issues.iter().map(|issue| (issue.field, issue.kind)).collect();
        assert_eq!(
            fields,
            [
                (Field::Postcode, IssueKind::Placeholder),
                (Field::AddressLine1, IssueKind::Placeholder)
            ]
        );
    }

    #[quickcheck]
    fn fold_is_idempotent(raw: String) -> bool {
        let once = fold(&raw);
        fold(&once) == once
    }

    #[quickcheck]
    fn normalize_never_panics(fields: Vec<String>, system: String, month_first: bool) -> bool {
        let get = |i: usize| fields.get(i).cloned();
        let raw = Demographics {
            nhs_number: get(0),
            given_name: get(1),
            family_name: get(2),
            date_of_birth: get(3),
            sex: get(4),
            address_line1: get(5),
            address_line2: get(6),
            town: get(7),
            postcode: get(8),
            phone: get(9),
            email: get(10),
            previous_family_name: get(12),
            identifiers: vec![Identifier { system, value: get(11).unwrap_or_default() }],
            date_order: if month_first { DateOrder::MonthFirst } else { DateOrder::DayFirst },
        };
        let (record, _) = normalizer().normalize(&raw);
        // A normalised family name is stable under normalisation, and so are former
        // ones, none of them the current one.
        let stable = |name: &str| normalize_family_name(name).0.as_deref() == Some(name);
        record.family_name.as_deref().is_none_or(stable)
            && record
                .previous_family_names
                .iter()
                .all(|former| stable(former) && record.family_name.as_deref() != Some(&**former))
    }
}
