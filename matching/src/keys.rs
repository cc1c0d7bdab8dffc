//! Blocking keys: the values under which a record is indexed so that likely matches
//! meet as candidates. Several keys are ORed, so one wrong field does not hide a
//! match. Keys hold personal data: they go to the index, never to logs.

use crate::compare::{CompField, ComparableRecord, MIN_ONE_OFF_IDENTIFIER};
use crate::normalize::phonetic;
use crate::record::BirthDate;

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

/// FNV-1a over a key's text, fed a part at a time: the bytes `format!` would write
/// for it (numbers zero-padded to a width, `|` between parts), without building the
/// string or going through the formatting machinery (which took half the time of
/// making a record's keys, and keys are made several times a record in a batch).
#[derive(Clone, Copy)]
struct KeyText(u64);

impl KeyText {
    fn new() -> KeyText {
        KeyText(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(self, bytes: &[u8]) -> KeyText {
        KeyText(
            bytes.iter().fold(self.0, |hash, &byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            }),
        )
    }

    fn text(self, text: &str) -> KeyText {
        self.bytes(text.as_bytes())
    }

    fn bar(self) -> KeyText {
        self.bytes(b"|")
    }

    fn char(self, c: char) -> KeyText {
        self.text(c.encode_utf8(&mut [0; 4]))
    }

    /// `value` in decimal, zero-padded to `width` digits (as `{value:0width$}`).
    fn number(self, value: u16, width: usize) -> KeyText {
        let mut digits = [b'0'; 5];
        let (mut rest, mut start) = (value, digits.len());
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let start = start.min(digits.len().saturating_sub(width));
        self.bytes(&digits[start..])
    }

    /// `YYYYMMDD`.
    fn date(self, date: BirthDate) -> KeyText {
        self.number(date.year, 4).number(date.month.into(), 2).number(date.day.into(), 2)
    }

    fn key(self, kind: usize) -> BlockingKey {
        ((self.0 >> (64 - KEY_HASH_BITS)) << 4) | kind as u64
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
/// | `dn` | birth year, day and month (sorted), phonetic code of the family name, again of each former family name, and again of the given name | given-name changes, day/month swaps, given and family names swapped, a woman's records under her maiden name |
/// | `pg` | postcode, given-name initial | birth-date errors |
/// | `pn` | postcode, phonetic code of the family name, and again of the given name | given-name and birth-date errors, swapped names |
/// | `i` | identifier system and value | other identifiers |
/// | `t` / `e` | phone / email | moves where contact details stay |
/// | `fy` | family-name phonetic code (and each former family name's), birth year and month, given initial | errors in day, postcode and given name together |
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
    let start = KeyText::new();
    if let Some(nhs) = record.nhs_number() {
        keys.push(start.text(nhs).key(kind::NHS));
    }
    let family_code = record.family_phonetic();
    let given_code = record.given_phonetic(0);
    // A family name the person had before (a maiden name) is keyed as the family name
    // is with the birth date, so that her records under that name meet this one: they
    // share neither family name nor, after a move, postcode or address.
    let former_codes: Vec<String> = record
        .previous_family_names()
        .map(former_family_code)
        .filter(|code| !code.is_empty() && code != family_code)
        .collect();
    let family_codes =
        || std::iter::once(family_code).chain(former_codes.iter().map(String::as_str));
    let given_initial = record.first_given().and_then(|name| name.chars().next());
    if let Some(date) = record.date_of_birth() {
        let (low, high) =
            if date.day <= date.month { (date.day, date.month) } else { (date.month, date.day) };
        let day = start.number(date.year, 4).number(low.into(), 2).number(high.into(), 2).bar();
        for code in family_codes().chain([given_code]) {
            if !code.is_empty() {
                keys.push(day.text(code).key(kind::DATE_NAME));
            }
        }
        if let Some(initial) = given_initial {
            for code in family_codes().filter(|code| !code.is_empty()) {
                let text = start.text(code).bar().number(date.year, 4).number(date.month.into(), 2);
                keys.push(text.bar().char(initial).key(kind::FAMILY_YEAR));
            }
        }
    }
    if let Some(address) = record.address()
        && let Some(number) = address.house_number
        && let Some(street) = street_word(address.text)
    {
        let home = start.text(number).bar().text(street).bar();
        if !family_code.is_empty() {
            keys.push(home.text(family_code).key(kind::ADDRESS));
        }
        if let Some(date) = record.date_of_birth() {
            keys.push(home.date(date).key(kind::ADDRESS_DATE));
        }
    }
    if let Some(postcode) = record.postcode() {
        let code = start.text(postcode.code).bar();
        if let Some(initial) = given_initial {
            keys.push(code.char(initial).key(kind::POSTCODE_INITIAL));
        }
        for name in [family_code, given_code] {
            if !name.is_empty() {
                keys.push(code.text(name).key(kind::POSTCODE_NAME));
            }
        }
        if let Some(date) = record.date_of_birth() {
            keys.push(code.date(date).key(kind::POSTCODE_DATE));
        }
    }
    for (system, value) in record.identifiers() {
        let system = start.text(system).bar();
        keys.push(system.text(value).key(kind::IDENTIFIER));
        // Within one edit (a character added, dropped or changed, or two neighbours
        // swapped), two values share the value itself or one of its one-character
        // deletions. With the given and family initials: numbers given out in sequence
        // share a deletion with nine neighbours each, which the initials thin to none.
        if let Some(given) = given_initial
            && let Some(family) = record.family_name().and_then(|name| name.chars().next())
            && value.len() >= MIN_ONE_OFF_IDENTIFIER
        {
            let initials = |text: KeyText| text.bar().char(given).char(family);
            keys.push(initials(system.text(value)).key(kind::IDENTIFIER_EDIT));
            for (at, dropped) in value.char_indices() {
                let (before, after) = (&value[..at], &value[at + dropped.len_utf8()..]);
                let text = system.text(before).text(after);
                keys.push(initials(text).key(kind::IDENTIFIER_EDIT));
            }
        }
    }
    if let Some(phone) = record.phone() {
        keys.push(start.text(phone).key(kind::PHONE));
    }
    if let Some(email) = record.email() {
        keys.push(start.text(email).key(kind::EMAIL));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The phonetic code a former family name is keyed by: that of its first token, as
/// [`ComparableRecord::family_phonetic`] is of the family name's.
fn former_family_code(former: &str) -> String {
    crate::compare::family_tokens(former).first().map(|token| phonetic(token)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Demographics, NormalizeOptions, Normalizer};

    /// FNV-1a of a formatted text, as keys were hashed before they were fed a part at a
    /// time: the keys in every stored index were made so, and must not change.
    fn formatted_key(kind: usize, text: &str) -> BlockingKey {
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        ((hash >> (64 - KEY_HASH_BITS)) << 4) | kind as u64
    }

    #[quickcheck_macros::quickcheck]
    fn keys_fed_a_part_at_a_time_are_the_formatted_keys(
        text: String,
        initial: char,
        year: u16,
        month: u8,
        day: u8,
    ) -> bool {
        let date = BirthDate { year, month, day };
        let fed = KeyText::new().text(&text).bar().date(date).bar().char(initial).key(kind::PHONE);
        let numbers = KeyText::new().number(year, 4).number(month.into(), 2).key(kind::EMAIL);
        fed == formatted_key(kind::PHONE, &format!("{text}|{year:04}{month:02}{day:02}|{initial}"))
            && numbers == formatted_key(kind::EMAIL, &format!("{year:04}{month:02}"))
    }

    #[test]
    fn a_records_keys_are_those_its_formatted_texts_hash_to() {
        let keys = keys_for(&Demographics {
            nhs_number: Some("943 476 5919".to_owned()),
            given_name: Some("Mary".to_owned()),
            family_name: Some("Smith".to_owned()),
            date_of_birth: Some("1990-03-12".to_owned()),
            address_line1: Some("12 Mill Road".to_owned()),
            postcode: Some("LS1 4AB".to_owned()),
            phone: Some("0113 496 0000".to_owned()),
            identifiers: vec![crate::Identifier { system: "ssn".into(), value: "2345085".into() }],
            ..Demographics::default()
        });
        let (family, given) = (phonetic("smith"), phonetic("mary"));
        let mut expected = vec![
            formatted_key(kind::NHS, "9434765919"),
            formatted_key(kind::DATE_NAME, &format!("19900312|{family}")),
            formatted_key(kind::DATE_NAME, &format!("19900312|{given}")),
            formatted_key(kind::FAMILY_YEAR, &format!("{family}|199003|m")),
            formatted_key(kind::ADDRESS, &format!("12|mill|{family}")),
            formatted_key(kind::ADDRESS_DATE, "12|mill|19900312"),
            formatted_key(kind::POSTCODE_INITIAL, "LS1 4AB|m"),
            formatted_key(kind::POSTCODE_NAME, &format!("LS1 4AB|{family}")),
            formatted_key(kind::POSTCODE_NAME, &format!("LS1 4AB|{given}")),
            formatted_key(kind::POSTCODE_DATE, "LS1 4AB|19900312"),
            formatted_key(kind::PHONE, "+441134960000"),
            formatted_key(kind::IDENTIFIER, "ssn|2345085"),
            formatted_key(kind::IDENTIFIER_EDIT, "ssn|2345085|ms"),
        ];
        // The value with each character dropped in turn.
        for dropped in ["345085", "245085", "235085", "234085", "234585", "234505", "234508"] {
            expected.push(formatted_key(kind::IDENTIFIER_EDIT, &format!("ssn|{dropped}|ms")));
        }
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(keys, expected);
    }

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
    fn a_record_under_a_maiden_name_meets_one_that_names_it_as_former() {
        let married = |former: &str| {
            keys_for(&Demographics {
                given_name: Some("Isabella".to_owned()),
                family_name: Some("Kelly".to_owned()),
                previous_family_name: Some(former.to_owned()),
                date_of_birth: Some("1950-08-11".to_owned()),
                postcode: Some("CF10 3UL".to_owned()),
                ..Demographics::default()
            })
        };
        // Her record from before the marriage and the move, under a nickname.
        let maiden = keys_of("Bella", "Turner", "11/08/1950", "B1 6ZX");
        assert_eq!(shared_key_kinds(&married("Turner"), &maiden), 1 << kind::DATE_NAME);
        // With the given initial too, the birth month still meets with a day mistyped.
        let slipped = keys_of("Isabel", "Turner", "1950-08-21", "B1 6ZX");
        assert_eq!(shared_key_kinds(&married("Turner"), &slipped), 1 << kind::FAMILY_YEAR);
        assert_eq!(shared_key_kinds(&married("Lewis"), &maiden), 0, "another former name");
        // A former name that codes as the family name adds no key.
        assert_eq!(
            married("Kelley"),
            keys_for(&Demographics {
                given_name: Some("Isabella".to_owned()),
                family_name: Some("Kelly".to_owned()),
                date_of_birth: Some("1950-08-11".to_owned()),
                postcode: Some("CF10 3UL".to_owned()),
                ..Demographics::default()
            })
        );
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
