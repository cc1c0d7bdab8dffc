//! The record types shared by every stage: what a source sent, and its normalised form.

use serde::{Deserialize, Serialize};

/// A demographic field of the input contract. Used to name the field in issues and
/// explanations, never the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The source system's name.
    SourceSystem,
    /// The record's id in its source system.
    LocalId,
    /// NHS number.
    NhsNumber,
    /// Given name(s).
    GivenName,
    /// Family name.
    FamilyName,
    /// Date of birth.
    DateOfBirth,
    /// Administrative sex.
    Sex,
    /// First address line.
    AddressLine1,
    /// Second address line.
    AddressLine2,
    /// Town.
    Town,
    /// Postcode (or another country's postal code).
    Postcode,
    /// Telephone number.
    Phone,
    /// Email address.
    Email,
    /// Another identifier (system, value).
    Identifier,
    /// A family name the person was known by before (a maiden name).
    PreviousFamilyName,
}

impl Field {
    /// The canonical column name of the input contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::SourceSystem => "source_system",
            Field::LocalId => "local_id",
            Field::NhsNumber => "nhs_number",
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::DateOfBirth => "date_of_birth",
            Field::Sex => "sex",
            Field::AddressLine1 => "address_line1",
            Field::AddressLine2 => "address_line2",
            Field::Town => "town",
            Field::Postcode => "postcode",
            Field::Phone => "phone",
            Field::Email => "email",
            Field::Identifier => "identifier",
            Field::PreviousFamilyName => "previous_family_name",
        }
    }

    /// Parses a canonical column name.
    pub fn from_column(column: &str) -> Option<Field> {
        Some(match column {
            "source_system" => Field::SourceSystem,
            "local_id" => Field::LocalId,
            "nhs_number" => Field::NhsNumber,
            "given_name" => Field::GivenName,
            "family_name" => Field::FamilyName,
            "date_of_birth" => Field::DateOfBirth,
            "sex" => Field::Sex,
            "address_line1" => Field::AddressLine1,
            "address_line2" => Field::AddressLine2,
            "town" => Field::Town,
            "postcode" => Field::Postcode,
            "phone" => Field::Phone,
            "email" => Field::Email,
            "previous_family_name" => Field::PreviousFamilyName,
            _ => return None,
        })
    }
}

/// Demographics as a source system sent them: every value raw, every value optional.
/// Unknown fields are refused when read from JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    /// NHS number as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    /// Given name(s) as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Date of birth as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// Sex as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// First address line as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    /// Second address line as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    /// Town as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub town: Option<String>,
    /// Postcode as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    /// Telephone number as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Email as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Family names the person was known by before (a maiden name), as sent: several
    /// are parted by `;` or `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_family_name: Option<String>,
    /// Other identifiers (a council case id, a hospital number, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<Identifier>,
    /// How the sender writes a date of numbers: day first (the UK's way, the default)
    /// or month first (a US locale's export).
    #[serde(default, skip_serializing_if = "DateOrder::is_day_first")]
    pub date_order: DateOrder,
}

/// The order of day and month in a date written in numbers (`03/04/1951`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateOrder {
    /// Day, month, year: 3 April 1951. As the UK writes dates.
    #[default]
    DayFirst,
    /// Month, day, year: 4 March 1951. As a US locale writes dates.
    MonthFirst,
}

impl DateOrder {
    /// True for the default, day first.
    pub fn is_day_first(&self) -> bool {
        *self == DateOrder::DayFirst
    }

    /// The order's name as flags and summaries write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DateOrder::DayFirst => "day-first",
            DateOrder::MonthFirst => "month-first",
        }
    }
}

impl Demographics {
    /// Demographics from the values of its fields in the order they are declared
    /// (`nhs_number` first, `previous_family_name` last; values past the end are
    /// absent), and
    /// identifiers. Built whole, so a field added to the struct fails to compile here.
    pub fn from_values(
        values: impl IntoIterator<Item = Option<String>>,
        identifiers: Vec<Identifier>,
    ) -> Demographics {
        let mut values = values.into_iter();
        let mut next = || values.next().flatten();
        Demographics {
            nhs_number: next(),
            given_name: next(),
            family_name: next(),
            date_of_birth: next(),
            sex: next(),
            address_line1: next(),
            address_line2: next(),
            town: next(),
            postcode: next(),
            phone: next(),
            email: next(),
            previous_family_name: next(),
            identifiers,
            date_order: DateOrder::DayFirst,
        }
    }
}

/// An identifier other than the NHS number, as a (system, value) pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// The issuing system, for example `ssn` or `council-x-case`.
    pub system: String,
    /// The identifier within that system.
    pub value: String,
}

/// Administrative sex after normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    /// Male (FHIR `male`, NHS `1`).
    Male,
    /// Female (FHIR `female`, NHS `2`).
    Female,
    /// Other or indeterminate (FHIR `other`, NHS `9`).
    Other,
}

/// A calendar date known to be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BirthDate {
    /// Four-digit year.
    pub year: u16,
    /// Month, 1-12.
    pub month: u8,
    /// Day, 1-31 (valid for the month).
    pub day: u8,
}

/// The months' names in English, January first.
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl BirthDate {
    /// The English name of month `month` (1-12), `None` for any other number.
    pub fn month_name(month: u8) -> Option<&'static str> {
        MONTH_NAMES.get(usize::from(month).checked_sub(1)?).copied()
    }

    /// ISO 8601 form, `YYYY-MM-DD`.
    pub fn to_iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// Days since 1 March of year 0 in the proleptic Gregorian calendar: consecutive
    /// dates are consecutive numbers, across months and years.
    pub fn day_number(self) -> i64 {
        // Years start in March, so the leap day ends a year.
        let (month, year) = (i64::from(self.month), i64::from(self.year));
        let year = if month <= 2 { year - 1 } else { year };
        let month_from_march = (month + 9) % 12;
        year * 365 + year.div_euclid(4) - year.div_euclid(100)
            + year.div_euclid(400)
            + (153 * month_from_march + 2) / 5
            + i64::from(self.day)
            - 1
    }

    /// The date of a [`day_number`](Self::day_number), its inverse. Years outside
    /// 0..=65535 are clamped to them.
    pub fn from_day_number(day_number: i64) -> BirthDate {
        // Years of 146,097 days (400 years) from 1 March of year 0, each March-based.
        let era = day_number.div_euclid(146_097);
        let day_of_era = day_number.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = era * 400 + year_of_era + i64::from(month <= 2);
        BirthDate {
            year: year.clamp(0, i64::from(u16::MAX)) as u16,
            month: month as u8,
            day: day as u8,
        }
    }
}

/// A normalised postal code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "PostalCodeJson", from = "PostalCodeJson")]
pub struct PostalCode {
    /// Canonical form: a UK postcode in upper case with one space before the inward
    /// code (`LS1 4AB`); any other code upper-cased with spaces removed (`2615`).
    pub code: String,
    /// True when `code` is a valid UK postcode (then it has a district and a sector).
    pub is_uk: bool,
}

impl PostalCode {
    /// UK outward code (`LS1`), empty for non-UK codes.
    pub fn district(&self) -> &str {
        self.uk_prefix(0)
    }

    /// UK sector (`LS1 4`), empty for non-UK codes.
    pub fn sector(&self) -> &str {
        self.uk_prefix(2)
    }

    fn uk_prefix(&self, after: usize) -> &str {
        PostalCode::uk_prefix_of(&self.code, self.is_uk, after)
    }

    /// The code up to its space and `after` characters more (UK codes only: ASCII,
    /// one space before a three-character inward code).
    pub(crate) fn uk_prefix_of(code: &str, is_uk: bool, after: usize) -> &str {
        if !is_uk {
            return "";
        }
        let space = code.find(' ').unwrap_or(code.len());
        &code[..(space + after).min(code.len())]
    }
}

/// How a postal code is stored: the district and sector are written out for readers
/// of the store and made again from the code when read.
#[derive(Serialize, Deserialize)]
struct PostalCodeJson {
    code: String,
    is_uk: bool,
    #[serde(default)]
    district: String,
    #[serde(default)]
    sector: String,
}

impl From<PostalCode> for PostalCodeJson {
    fn from(postcode: PostalCode) -> PostalCodeJson {
        PostalCodeJson {
            district: postcode.district().to_owned(),
            sector: postcode.sector().to_owned(),
            code: postcode.code,
            is_uk: postcode.is_uk,
        }
    }
}

impl From<PostalCodeJson> for PostalCode {
    fn from(json: PostalCodeJson) -> PostalCode {
        PostalCode { code: json.code, is_uk: json.is_uk }
    }
}

/// A normalised address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    /// Lines joined, lower case, abbreviations expanded (`rd` -> `road`), punctuation
    /// removed, single spaces: `flat 3 12 high street leeds`.
    pub text: Box<str>,
    /// The first house or flat number found (`12`, `12a`), if any.
    pub house_number: Option<Box<str>>,
}

/// A record after normalisation: canonical values for comparison, with `None` for
/// anything missing or unusable. Raw values are kept by the caller in [`Demographics`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NormalizedRecord {
    /// Ten digits, check digit valid, not a placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<Box<str>>,
    /// Given names in order, folded to lower-case ASCII, titles removed:
    /// `["mary", "jane"]`. Empty when missing or a placeholder.
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub given_names: Box<[Box<str>]>,
    /// Family name folded to lower-case ASCII, titles and suffixes removed, hyphens
    /// and apostrophes kept as written (`o'brien`, `smith-jones`). None when missing or
    /// a placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<Box<str>>,
    /// A generational suffix found in the names (`jr`, `sr`, `ii`, `iii`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<Box<str>>,
    /// A valid, non-placeholder date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<BirthDate>,
    /// Administrative sex; None for missing or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<PostalCode>,
    /// Address lines and town.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// UK numbers as `+44` then the national number without its leading zero
    /// (`+447700900123`); other numbers as digits with a leading `+` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Box<str>>,
    /// Lower-cased, trimmed email with a plausible `local@domain.tld` shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Box<str>>,
    /// Other identifiers, system and value trimmed; value upper-cased without spaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<Identifier>,
    /// Family names the person was known by before (a maiden name), normalised as
    /// [`NormalizedRecord::family_name`], none of them the current one.
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub previous_family_names: Box<[Box<str>]>,
}

impl NormalizedRecord {
    /// Gives back the room its strings and lists have to grow: normalisers build
    /// values a character at a time, and a million records are held at once.
    pub fn shrink_to_fit(&mut self) {
        if let Some(postcode) = &mut self.postcode {
            postcode.code.shrink_to_fit();
        }
        for identifier in &mut self.identifiers {
            identifier.system.shrink_to_fit();
            identifier.value.shrink_to_fit();
        }
        self.identifiers.shrink_to_fit();
    }
}

/// Why a value could not be used. Carries no personal data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IssueKind {
    /// Not ten digits after removing spaces and dashes.
    WrongLength,
    /// Contains characters other than digits, spaces and dashes.
    NotNumeric,
    /// The Modulus 11 check digit does not match.
    BadCheckDigit,
    /// A known placeholder value (all one digit, `1900-01-01`, `UNKNOWN`, `BABY OF`, ...).
    Placeholder,
    /// The value could not be parsed in any accepted format.
    Unparseable,
    /// The value parses but is impossible (31 February, a birth date in the future).
    Impossible,
    /// The value is not one of the accepted codes.
    UnknownCode,
    /// A postcode-like value that is not a valid UK postcode (kept as a plain code).
    NotUkPostcode,
    /// A name with no letters in it.
    NoLetters,
    /// A number a spreadsheet rounded into scientific notation (`9.43477E+09`).
    Rounded,
    /// A date of a year, or of a year and month, without its day (`1951`, `1951-04`, as
    /// a FHIR `birthDate` may be): too little to compare as a birth date.
    Partial,
}

impl IssueKind {
    /// A short human-readable reason, safe for logs.
    pub fn reason(self) -> &'static str {
        match self {
            IssueKind::WrongLength => "wrong length",
            IssueKind::NotNumeric => "not numeric",
            IssueKind::BadCheckDigit => "check digit does not match",
            IssueKind::Placeholder => "placeholder value",
            IssueKind::Unparseable => "could not be parsed",
            IssueKind::Impossible => "impossible value",
            IssueKind::UnknownCode => "unknown code",
            IssueKind::NotUkPostcode => "not a UK postcode, compared as a plain code",
            IssueKind::NoLetters => "no letters",
            IssueKind::Rounded => {
                "rounded by a spreadsheet (scientific notation), its last digits lost"
            }
            IssueKind::Partial => "a year, or a year and month, without the day",
        }
    }

    /// True when the value is ignored for matching (false for warnings such as a
    /// non-UK postcode, which is still compared).
    pub fn value_ignored(self) -> bool {
        !matches!(self, IssueKind::NotUkPostcode)
    }
}

/// A problem found while normalising one field. Names the field, never the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Issue {
    /// The field with the problem.
    pub field: Field,
    /// What is wrong with it.
    pub kind: IssueKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_order_other_than_the_default_is_written_and_read_back() {
        let us = Demographics { date_order: DateOrder::MonthFirst, ..Demographics::default() };
        let json = serde_json::to_string(&us).unwrap();
        assert_eq!(json, r#"{"date_order":"month_first"}"#);
        assert_eq!(serde_json::from_str::<Demographics>(&json).unwrap(), us);
        // Day first, the default, is not written: stored raw values stay as they were.
        assert_eq!(serde_json::to_string(&Demographics::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<Demographics>(r#"{"date_order":"year_last"}"#).is_err());
    }

    #[test]
    fn months_are_named_from_one_to_twelve_and_no_other_number() {
        assert_eq!(BirthDate::month_name(1), Some("January"));
        assert_eq!(BirthDate::month_name(12), Some("December"));
        assert_eq!((BirthDate::month_name(0), BirthDate::month_name(13)), (None, None));
    }

    #[test]
    fn a_postal_code_is_stored_with_its_district_and_sector_and_read_back_from_its_code() {
        let uk = PostalCode { code: "LS1 4AB".into(), is_uk: true };
        let json = serde_json::to_value(&uk).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!({"code": "LS1 4AB", "is_uk": true, "district": "LS1", "sector": "LS1 4"})
        );
        assert_eq!(serde_json::from_value::<PostalCode>(json).expect("read back"), uk);
        let plain = PostalCode { code: "2615".into(), is_uk: false };
        assert_eq!((plain.district(), plain.sector()), ("", ""));
        let stored = serde_json::json!({"code": "2615", "is_uk": false});
        assert_eq!(serde_json::from_value::<PostalCode>(stored).expect("read"), plain);
    }
}
