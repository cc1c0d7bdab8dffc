//! Blocking keys: the values under which a record is indexed so that likely matches
//! meet as candidates. Several keys are ORed, so one wrong field does not hide a
//! match. Keys hold personal data: they go to the index, never to logs.

use crate::compare::{CompField, ComparableRecord, MIN_ONE_OFF_IDENTIFIER};

/// The kinds of blocking key, in bit order for [`shared_key_kinds`], with the fields
/// each one forces to agree. Training uses this to estimate a field's `m` only from
/// pairs that met through a key not involving that field.
pub const KEY_KINDS: [(&str, &[CompField]); 12] = [
    ("n", &[CompField::NhsNumber]),
    ("dn", &[CompField::DateOfBirth, CompField::FamilyName, CompField::GivenName]),
    ("pg", &[CompField::Postcode, CompField::GivenName]),
    ("pn", &[CompField::Postcode, CompField::FamilyName, CompField::GivenName]),
    ("i", &[CompField::Identifier]),
    ("t", &[CompField::Phone]),
    ("e", &[CompField::Email]),
    ("fy", &[CompField::FamilyName, CompField::DateOfBirth, CompField::GivenName]),
    ("ah", &[CompField::Address, CompField::FamilyName]),
    ("pd", &[CompField::Postcode, CompField::DateOfBirth]),
    ("ie", &[CompField::Identifier, CompField::GivenName, CompField::FamilyName]),
    ("ad", &[CompField::Address, CompField::DateOfBirth]),
];

/// A blocking key: the top 36 bits of a 64-bit FNV-1a hash of the key's text (its
/// best-mixed bits), above four bits that hold its kind (its index in [`KEY_KINDS`]), in
/// the low 40 bits of a `u64`. Keys of different kinds never collide; two texts of one
/// kind collide with odds of about one in 2^36 (at ten million records, with a few
/// million distinct texts of a kind, a record meets a key of another text about once in
/// ten thousand keys), which could only add a spurious candidate that scoring then
/// rejects. Hashes keep a million records' keys small and let the batch and the tantivy
/// index share them. The top three bytes are zero because tantivy files a key as eight
/// bytes in a finite-state term dictionary: every key then shares its first three bytes
/// with every other, and building the dictionary (a node for each byte after the prefix
/// a key shares with the one before it) costs about half what it does for keys that
/// differ from their first byte.
pub type BlockingKey = u64;

/// The index in [`KEY_KINDS`] of a key's kind.
pub fn key_kind(key: BlockingKey) -> usize {
    (key & 0xF) as usize
}

/// Bit mask of the kinds of key two records share, from their sorted
/// [`blocking_keys`] (bit `k` for `KEY_KINDS[k]`).
pub fn shared_key_kinds(a: &[BlockingKey], b: &[BlockingKey]) -> u16 {
    let (mut i, mut j, mut mask) = (0, 0, 0u16);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                mask |= 1 << key_kind(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    mask
}

/// FNV-1a over formatted text, so that keys are hashed without building strings.
struct KeyHasher(u64);

impl std::fmt::Write for KeyHasher {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0 = text
            .bytes()
            .fold(self.0, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
        Ok(())
    }
}

/// Kinds, by their index in [`KEY_KINDS`].
mod kind {
    pub const NHS: usize = 0;
    pub const DATE_NAME: usize = 1;
    pub const POSTCODE_INITIAL: usize = 2;
    pub const POSTCODE_NAME: usize = 3;
    pub const IDENTIFIER: usize = 4;
    pub const PHONE: usize = 5;
    pub const EMAIL: usize = 6;
    pub const FAMILY_YEAR: usize = 7;
    pub const ADDRESS: usize = 8;
    pub const POSTCODE_DATE: usize = 9;
    pub const IDENTIFIER_EDIT: usize = 10;
    pub const ADDRESS_DATE: usize = 11;
}

/// How many of the hash's top bits a key keeps (see [`BlockingKey`]); the kind fills
/// the four below them.
const KEY_HASH_BITS: u32 = 36;

fn key(kind: usize, text: std::fmt::Arguments<'_>) -> BlockingKey {
    let mut hasher = KeyHasher(0xcbf2_9ce4_8422_2325);
    std::fmt::Write::write_fmt(&mut hasher, text).expect("hashing never fails");
    ((hasher.0 >> (64 - KEY_HASH_BITS)) << 4) | kind as u64
}

/// Bit mask of the key kinds that do not force `field` to agree.
pub fn kinds_not_involving(field: CompField) -> u16 {
    KEY_KINDS
        .iter()
        .enumerate()
        .filter(|(_, (_, fields))| !fields.contains(&field))
        .fold(0, |mask, (bit, _)| mask | (1 << bit))
}

/// The words that end a street's name (as the address normaliser expands them).
const THOROUGHFARES: [&str; 22] = [
    "road",
    "street",
    "avenue",
    "lane",
    "close",
    "crescent",
    "drive",
    "court",
    "place",
    "square",
    "gardens",
    "grove",
    "terrace",
    "way",
    "parade",
    "boulevard",
    "highway",
    "circus",
    "circuit",
    "walk",
    "row",
    "mews",
];

/// The word that names a home's street: the word before the first street type (`mill` in
/// `room 4 beechcroft nursing home 5 mill road`, and in `5 mill road beechcroft`), so
/// that a line more or less, or two lines the other way round, give one word; else the
/// first word of three letters or more without a digit.
fn street_word(address: &str) -> Option<&str> {
    let word = |word: &str| word.len() > 2 && !word.bytes().any(|b| b.is_ascii_digit());
    // (Every record's keys are made at least once a run: no vector of words for it.)
    let mut before: Option<&str> = None;
    for next in address.split(' ') {
        if let Some(name) = before
            && THOROUGHFARES.contains(&next)
            && word(name)
        {
            return Some(name);
        }
        before = Some(next);
    }
    address.split(' ').find(|&candidate| word(candidate))
}

/// The blocking keys of a record, sorted and distinct, each tagged with its kind
/// (see [`BlockingKey`]). The text hashed for each kind:
///
/// | kind | key | catches |
/// |---|---|---|
/// | `n` | NHS number | anything with a valid NHS number |
/// | `dn` | birth year, day and month (sorted), phonetic code of the family name, and again of the given name | given-name changes, day/month swaps, given and family names swapped |
/// | `pg` | postcode, given-name initial | birth-date errors |
/// | `pn` | postcode, phonetic code of the family name, and again of the given name | given-name and birth-date errors, swapped names |
/// | `i` | identifier system and value | other identifiers |
/// | `t` / `e` | phone / email | moves where contact details stay |
/// | `fy` | family-name phonetic code, birth year and month, given initial | errors in day, postcode and given name together |
/// | `ah` | house number and the street's word (see [`street_word`]), family-name phonetic code | errors in birth date, postcode and given name |
/// | `pd` | postcode and birth date | both names changed (marriage and a nickname, or a clerk's swap) |
/// | `ie` | identifier system, its value or the value with one character dropped (one key each), given and family initials | an identifier one character off, with birth date and postcode wrong too |
/// | `ad` | house number and the street's word, birth date | a family name changed or mistyped and the postcode wrong, at the same home (FEBRL4 without its identifier: pair completeness 0.9848 to 0.9884; FEBRL3 0.9494 to 0.9584) |
///
/// Every key is a term the blocking index files, and filing terms is most of the cost
/// of indexing. Two kinds were dropped for that reason: the birth date with the given
/// name's nickname group, and both names' phonetic codes with the birth year. At a
/// million synthetic records the two together found 0.02% of the true pairs that no
/// other kind found (pair completeness 0.9960 to 0.9958, FEBRL4 without its identifier
/// 0.9852 to 0.9848), for 9% of the candidate pairs and two of every thirteen terms.
pub fn blocking_keys(record: &ComparableRecord) -> Vec<BlockingKey> {
    let mut keys = Vec::with_capacity(12);
    if let Some(nhs) = record.nhs_number() {
        keys.push(key(kind::NHS, format_args!("{nhs}")));
    }
    let family_code = record.family_phonetic();
    let given_code = record.given_phonetic(0);
    if let Some(date) = record.date_of_birth() {
        let (low, high) =
            if date.day <= date.month { (date.day, date.month) } else { (date.month, date.day) };
        let year = date.year;
        for code in [family_code, given_code] {
            if !code.is_empty() {
                keys.push(key(kind::DATE_NAME, format_args!("{year:04}{low:02}{high:02}|{code}")));
            }
        }
    }
    let given_initial = record.first_given().and_then(|name| name.chars().next());
    if let (Some(date), Some(initial)) = (record.date_of_birth(), given_initial)
        && !family_code.is_empty()
    {
        keys.push(key(
            kind::FAMILY_YEAR,
            format_args!("{family_code}|{:04}{:02}|{initial}", date.year, date.month),
        ));
    }
    if let Some(address) = record.address()
        && let Some(number) = address.house_number
        && let Some(street) = street_word(address.text)
    {
        if !family_code.is_empty() {
            keys.push(key(kind::ADDRESS, format_args!("{number}|{street}|{family_code}")));
        }
        if let Some(date) = record.date_of_birth() {
            keys.push(key(
                kind::ADDRESS_DATE,
                format_args!("{number}|{street}|{:04}{:02}{:02}", date.year, date.month, date.day),
            ));
        }
    }
    if let Some(postcode) = record.postcode() {
        if let Some(initial) = given_initial {
            keys.push(key(kind::POSTCODE_INITIAL, format_args!("{}|{initial}", postcode.code)));
        }
        for code in [family_code, given_code] {
            if !code.is_empty() {
                keys.push(key(kind::POSTCODE_NAME, format_args!("{}|{code}", postcode.code)));
            }
        }
        if let Some(date) = record.date_of_birth() {
            keys.push(key(
                kind::POSTCODE_DATE,
                format_args!("{}|{:04}{:02}{:02}", postcode.code, date.year, date.month, date.day),
            ));
        }
    }
    for (system, value) in record.identifiers() {
        keys.push(key(kind::IDENTIFIER, format_args!("{system}|{value}")));
        // Within one edit (a character added, dropped or changed, or two neighbours
        // swapped), two values share the value itself or one of its one-character
        // deletions. With the given and family initials: numbers given out in sequence
        // share a deletion with nine neighbours each, which the initials thin to none.
        if let Some(given) = given_initial
            && let Some(family) = record.family_name().and_then(|name| name.chars().next())
            && value.len() >= MIN_ONE_OFF_IDENTIFIER
        {
            keys.push(key(kind::IDENTIFIER_EDIT, format_args!("{system}|{value}|{given}{family}")));
            for (at, dropped) in value.char_indices() {
                let (before, after) = (&value[..at], &value[at + dropped.len_utf8()..]);
                keys.push(key(
                    kind::IDENTIFIER_EDIT,
                    format_args!("{system}|{before}{after}|{given}{family}"),
                ));
            }
        }
    }
    if let Some(phone) = record.phone() {
        keys.push(key(kind::PHONE, format_args!("{phone}")));
    }
    if let Some(email) = record.email() {
        keys.push(key(kind::EMAIL, format_args!("{email}")));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BirthDate, Demographics, NormalizeOptions, Normalizer};

    fn keys_for(raw: &Demographics) -> Vec<BlockingKey> {
        let normalizer = Normalizer::new(NormalizeOptions {
            today: BirthDate { year: 2026, month: 11, day: 24 },
            refuse_test_nhs_numbers: false,
        });
        let (record, _) = normalizer.normalize(raw);
        blocking_keys(&ComparableRecord::new(record, normalizer.nicknames()))
    }

    fn keys_of(given: &str, family: &str, dob: &str, postcode: &str) -> Vec<BlockingKey> {
        keys_for(&Demographics {
            given_name: Some(given.to_owned()),
            family_name: Some(family.to_owned()),
            date_of_birth: Some(dob.to_owned()),
            postcode: Some(postcode.to_owned()),
            ..Demographics::default()
        })
    }

    #[test]
    fn keys_are_sorted_distinct_and_tagged_with_their_kind() {
        let keys = keys_of("Mary", "Smith", "1990-03-12", "LS1 4AB");
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        let kinds: std::collections::BTreeSet<usize> = keys.iter().map(|&k| key_kind(k)).collect();
        let names: Vec<&str> = kinds.iter().map(|&kind| KEY_KINDS[kind].0).collect();
        assert_eq!(names, ["dn", "pg", "pn", "fy", "pd"]);
        assert!(keys.iter().all(|&key| key >> 48 == 0), "keys fit in six bytes: {keys:x?}");
    }

    #[test]
    fn swapped_names_and_day_month_swaps_still_meet() {
        let a = keys_of("Mary", "Smith", "1990-03-12", "LS1 4AB");
        let swapped = keys_of("Smith", "Mary", "1990-12-03", "M1 1AA");
        let shared = shared_key_kinds(&a, &swapped);
        assert_eq!(shared, 1 << kind::DATE_NAME, "the date with either name's code");
    }

    #[test]
    fn both_names_changed_still_meet_on_postcode_and_birth_date() {
        let a = keys_of("Mary", "Smith", "1990-03-12", "LS1 4AB");
        let married = keys_of("Wendy", "Okafor", "12/03/1990", "ls14ab");
        assert_eq!(shared_key_kinds(&a, &married), 1 << kind::POSTCODE_DATE);
    }

    #[test]
    fn a_mistyped_family_name_and_postcode_still_meet_at_home_on_the_birth_date() {
        let keys = |given: &str, family: &str, postcode: &str| {
            keys_for(&Demographics {
                given_name: Some(given.to_owned()),
                family_name: Some(family.to_owned()),
                date_of_birth: Some("1971-08-30".to_owned()),
                address_line1: Some("200 Steinwedel Street".to_owned()),
                postcode: Some(postcode.to_owned()),
                ..Demographics::default()
            })
        };
        // FEBRL4's rec-2685: "joel lodge" and "joe lodgw", postcode 4012 and 4016.
        let a = keys("Joel", "Lodge", "4012");
        assert_eq!(shared_key_kinds(&a, &keys("Joe", "Lodgw", "4016")), 1 << kind::ADDRESS_DATE);
        assert_eq!(KEY_KINDS[kind::ADDRESS_DATE].0, "ad");
    }

    #[test]
    fn a_street_is_named_by_the_word_before_its_type_whatever_the_lines_around_it() {
        for address in [
            "5 mill road",
            "5 mill road beechcroft",
            "room 4 beechcroft nursing home 5 mill road",
            "flat 3 5 mill road leeds",
        ] {
            assert_eq!(street_word(address), Some("mill"), "{address}");
        }
        // FEBRL's first and second lines the other way round.
        assert_eq!(street_word("3 concept bradfield street"), Some("bradfield"));
        // No street type: the first word.
        assert_eq!(street_word("12 orchard view"), Some("orchard"));
        assert_eq!(street_word("12 ab 3"), None);
    }

    #[test]
    fn an_identifier_one_character_off_still_meets() {
        let normalizer = Normalizer::new(NormalizeOptions {
            today: BirthDate { year: 2026, month: 11, day: 24 },
            refuse_test_nhs_numbers: false,
        });
        let keys = |name: &str, value: &str| {
            let (given, family) = name.split_once(' ').expect("given and family name");
            let (record, _) = normalizer.normalize(&Demographics {
                given_name: Some(given.to_owned()),
                family_name: Some(family.to_owned()),
                identifiers: vec![crate::Identifier {
                    system: "council".to_owned(),
                    value: value.to_owned(),
                }],
                ..Demographics::default()
            });
            blocking_keys(&ComparableRecord::new(record, normalizer.nicknames()))
        };
        let edit = 1 << kind::IDENTIFIER_EDIT;
        let a = keys("Ann Okafor", "3983966");
        for slip in ["3989366", "3983967", "398966", "39839660", "1983966"] {
            assert_eq!(shared_key_kinds(&a, &keys("Anne Okafor", slip)), edit, "{slip}");
        }
        assert_eq!(
            shared_key_kinds(&a, &keys("Ann Okafor", "3983966")),
            edit | 1 << kind::IDENTIFIER
        );
        assert_eq!(shared_key_kinds(&a, &keys("Ann Okafor", "3988866")), 0, "two characters off");
        assert_eq!(shared_key_kinds(&a, &keys("Bea Okafor", "3983967")), 0, "another initial");
        assert_eq!(shared_key_kinds(&a, &keys("Ann Smith", "3983967")), 0, "another family");
        assert_eq!(
            shared_key_kinds(&keys("Ann Okafor", "1234"), &keys("Ann Okafor", "1243")),
            0,
            "too short"
        );
    }

    #[test]
    fn different_people_share_no_keys() {
        let a = keys_of("Mary", "Smith", "1990-03-12", "LS1 4AB");
        let b = keys_of("John", "Patel", "1971-07-30", "M1 1AA");
        assert_eq!(shared_key_kinds(&a, &b), 0);
    }
}
