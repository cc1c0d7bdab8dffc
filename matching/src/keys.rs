//! Blocking keys: the values under which a record is indexed so that likely matches
//! meet as candidates. Several keys are ORed, so one wrong field does not hide a
//! match. Keys hold personal data: they go to the index, never to logs.

use crate::compare::{CompField, ComparableRecord};

/// The kinds of blocking key, in bit order for [`shared_key_kinds`], with the fields
/// each one forces to agree. Training uses this to estimate a field's `m` only from
/// pairs that met through a key not involving that field.
pub const KEY_KINDS: [(&str, &[CompField]); 11] = [
    ("n", &[CompField::NhsNumber]),
    ("dn", &[CompField::DateOfBirth, CompField::FamilyName, CompField::GivenName]),
    ("dg", &[CompField::DateOfBirth, CompField::GivenName]),
    ("pg", &[CompField::Postcode, CompField::GivenName]),
    ("pn", &[CompField::Postcode, CompField::FamilyName, CompField::GivenName]),
    ("ny", &[CompField::GivenName, CompField::FamilyName, CompField::DateOfBirth]),
    ("i", &[CompField::Identifier]),
    ("t", &[CompField::Phone]),
    ("e", &[CompField::Email]),
    ("fy", &[CompField::FamilyName, CompField::DateOfBirth, CompField::GivenName]),
    ("ah", &[CompField::Address, CompField::FamilyName]),
];

/// The index in [`KEY_KINDS`] of a key's kind, from its prefix.
pub fn key_kind(key: &str) -> Option<usize> {
    let prefix = key.split(':').next()?;
    KEY_KINDS.iter().position(|(kind, _)| *kind == prefix)
}

/// Bit mask of the key kinds that do not force `field` to agree.
pub fn kinds_not_involving(field: CompField) -> u16 {
    KEY_KINDS
        .iter()
        .enumerate()
        .filter(|(_, (_, fields))| !fields.contains(&field))
        .fold(0, |mask, (bit, _)| mask | (1 << bit))
}

/// The blocking keys of a record, each prefixed by its kind:
///
/// | prefix | key | catches |
/// |---|---|---|
/// | `n:` | NHS number | anything with a valid NHS number |
/// | `dn:` | birth year, day and month (sorted), phonetic code of the family name, and again of the given name | given-name changes, day/month swaps, given and family names swapped |
/// | `dg:` | birth year, day and month (sorted), given-name nickname group | a family name changed on marriage |
/// | `pg:` | postcode, given-name initial | birth-date errors |
/// | `pn:` | postcode, phonetic code of the family name, and again of the given name | given-name and birth-date errors, swapped names |
/// | `ny:` | given and family phonetic codes (sorted), birth year | moves with typos; given and family swapped |
/// | `i:` | identifier system and value | other identifiers |
/// | `t:` / `e:` | phone / email | moves where contact details stay |
/// | `fy:` | family-name phonetic code, birth year and month, given initial | errors in day, postcode and given name together |
/// | `ah:` | house number and first street word, family-name phonetic code | errors in birth date, postcode and given name |
pub fn blocking_keys(record: &ComparableRecord) -> Vec<String> {
    let normalized = &record.record;
    let mut keys = Vec::with_capacity(9);
    if let Some(nhs) = &normalized.nhs_number {
        keys.push(format!("n:{nhs}"));
    }
    let family_code = record.family_phonetic.as_str();
    let given_code = record.given_phonetic.first().map(String::as_str).unwrap_or("");
    let given_group = record.given_canonical.first().map(String::as_str).unwrap_or("");
    if let Some(date) = normalized.date_of_birth {
        let (low, high) =
            if date.day <= date.month { (date.day, date.month) } else { (date.month, date.day) };
        let date_key = format!("{:04}{:02}{:02}", date.year, low, high);
        for code in [family_code, given_code] {
            if !code.is_empty() {
                keys.push(format!("dn:{date_key}|{code}"));
            }
        }
        if !given_group.is_empty() {
            keys.push(format!("dg:{date_key}|{given_group}"));
        }
        if !family_code.is_empty() && !given_code.is_empty() {
            let (first, second) = if given_code <= family_code {
                (given_code, family_code)
            } else {
                (family_code, given_code)
            };
            keys.push(format!("ny:{first}|{second}|{:04}", date.year));
        }
    }
    let given_initial = record.first_given().and_then(|name| name.chars().next());
    if let (Some(date), Some(initial)) = (normalized.date_of_birth, given_initial)
        && !family_code.is_empty()
    {
        keys.push(format!("fy:{family_code}|{:04}{:02}|{initial}", date.year, date.month));
    }
    if let Some(address) = &normalized.address
        && let Some(number) = &address.house_number
        && !family_code.is_empty()
    {
        let street = address
            .text
            .split(' ')
            .find(|word| word.len() > 2 && !word.bytes().any(|b| b.is_ascii_digit()));
        if let Some(street) = street {
            keys.push(format!("ah:{number}|{street}|{family_code}"));
        }
    }
    if let Some(postcode) = &normalized.postcode {
        if let Some(initial) = record.first_given().and_then(|name| name.chars().next()) {
            keys.push(format!("pg:{}|{initial}", postcode.code));
        }
        for code in [family_code, given_code] {
            if !code.is_empty() {
                keys.push(format!("pn:{}|{code}", postcode.code));
            }
        }
    }
    for identifier in &normalized.identifiers {
        keys.push(format!("i:{}|{}", identifier.system, identifier.value));
    }
    if let Some(phone) = &normalized.phone {
        keys.push(format!("t:{phone}"));
    }
    if let Some(email) = &normalized.email {
        keys.push(format!("e:{email}"));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}
