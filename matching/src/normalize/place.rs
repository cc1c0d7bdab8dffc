//! Postcodes (UK, and other countries' codes kept as plain codes) and addresses.

use super::fold;
use crate::record::{Address, IssueKind, PostalCode};

/// Letters not used in the inward code's last two positions.
const INWARD_EXCLUDED: &[u8] = b"CIKMOV";

fn is_valid_outward(outward: &[u8]) -> bool {
    // Royal Mail's letter rules: the first letter is never Q, V or X; a second letter
    // never I, J or Z; a letter after the district's digit comes from a short list.
    let first = |b: &u8| b.is_ascii_uppercase() && !b"QVX".contains(b);
    let second = |b: &u8| b.is_ascii_uppercase() && !b"IJZ".contains(b);
    let digit = |b: &u8| b.is_ascii_digit();
    match outward {
        // A9, A99, A9A
        [a, b] => first(a) && digit(b),
        [a, b, c] if first(a) && digit(b) => digit(c) || b"ABCDEFGHJKPSTUW".contains(c),
        // AA9
        [a, b, c] => first(a) && second(b) && digit(c),
        // AA99, AA9A
        [a, b, c, d] => {
            first(a) && second(b) && digit(c) && (digit(d) || b"ABEHMNPRVWXY".contains(d))
        }
        _ => false,
    }
}

/// Normalises a postcode. A UK postcode becomes upper case with one space before the
/// inward code (`ls14ab` gives `LS1 4AB`), with its district (`LS1`) and sector
/// (`LS1 4`). A letter O, I or L typed where only a digit can stand (the inward code's
/// first character, the outward code's last) is read as the digit: `SW1A OAA` is
/// `SW1A 0AA`. Another country's plausible code (3 to 10 letters and digits, such as
/// FEBRL's Australian `2615`) is kept upper-cased without spaces, with `is_uk` false.
///
/// # Errors
/// [`IssueKind::Placeholder`] for an NHS pseudo-postcode (`ZZ99 ...`);
/// [`IssueKind::Unparseable`] for anything else.
pub fn normalize_postcode(raw: &str) -> Result<PostalCode, IssueKind> {
    // Punctuation around it is a line's, not the code's (`LS1 1AA.`, `(LS1 1AA)`).
    let raw = raw.trim_matches(|c: char| c.is_whitespace() || ".,;:()[]'\"".contains(c));
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect();
    // The NHS's pseudo-postcodes (`ZZ99 3VZ` no fixed abode, `ZZ99 3WZ` address not
    // known, `ZZ99 3CZ` England not otherwise specified, and one for each country of
    // residence abroad): shared by everyone in that state, so never evidence.
    if compact.starts_with("ZZ99") {
        return Err(IssueKind::Placeholder);
    }
    if !compact.is_ascii()
        || compact.len() < 3
        || compact.len() > 10
        || !compact.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(IssueKind::Unparseable);
    }
    let bytes = compact.as_bytes();
    if compact == "GIR0AA" {
        return Ok(PostalCode { code: "GIR 0AA".into(), is_uk: true });
    }
    if (5..=7).contains(&bytes.len()) {
        let uk = |bytes: &[u8]| {
            let (outward, inward) = bytes.split_at(bytes.len() - 3);
            let inward_valid = inward[0].is_ascii_digit()
                && inward[1..]
                    .iter()
                    .all(|b| b.is_ascii_uppercase() && !INWARD_EXCLUDED.contains(b));
            (inward_valid && is_valid_outward(outward)).then(|| {
                let (outward, inward) = (
                    std::str::from_utf8(outward).expect("ASCII"),
                    std::str::from_utf8(inward).expect("ASCII"),
                );
                PostalCode { code: format!("{outward} {inward}"), is_uk: true }
            })
        };
        if let Some(code) = uk(bytes) {
            return Ok(code);
        }
        // A letter typed for a digit where only a digit can stand: the inward code's
        // first character, or the outward code's last (`SW1A OAA`, `LSI 4AB`).
        let as_digit = |b: u8| match b {
            b'O' => b'0',
            b'I' | b'L' => b'1',
            other => other,
        };
        let mut repaired = bytes.to_vec();
        let inward_at = repaired.len() - 3;
        repaired[inward_at] = as_digit(repaired[inward_at]);
        if let Some(code) = uk(&repaired) {
            return Ok(code);
        }
        repaired[inward_at - 1] = as_digit(repaired[inward_at - 1]);
        if let Some(code) = uk(&repaired) {
            return Ok(code);
        }
    }
    // Not UK: a plain code, kept when it has at least one digit (a postal code, not a word).
    if compact.bytes().any(|b| b.is_ascii_digit()) {
        return Ok(PostalCode { code: compact, is_uk: false });
    }
    Err(IssueKind::Unparseable)
}

/// A UK postcode written at the end of an address line (`12 Mill Road, Leeds LS1 4AB`,
/// `Leeds LS14AB`), as files with one address column hold it: the line without it
/// (and the comma or spaces before it), and the postcode. `None` when the line does not
/// end with a valid UK postcode (an Australian `2615` is not taken: it may be a house
/// number).
pub fn postcode_at_end(line: &str) -> Option<(&str, PostalCode)> {
    let trimmed = line.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == '.');
    // Where the last word of a text starts.
    let last_word = |text: &str| {
        text.char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(at, c)| at + c.len_utf8())
    };
    let one = last_word(trimmed);
    let two = (one > 0).then(|| last_word(trimmed[..one].trim_end()));
    // As a postcode column is read (`LS1 OAB` repaired), but with a digit written:
    // words alone ("All Oab") are not read as a postcode by the repair.
    let strict = |text: &str| {
        if !text.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        normalize_postcode(text).ok().filter(|code| code.is_uk)
    };
    // The outward and inward codes as two words, or run together as one.
    for start in [two, Some(one)].into_iter().flatten() {
        if let Some(code) = strict(&trimmed[start..]) {
            let rest = trimmed[..start].trim_end_matches(|c: char| c.is_whitespace() || c == ',');
            return Some((rest, code));
        }
    }
    None
}

/// Street-type and other abbreviations, expanded for comparison.
fn expand(token: &str) -> &str {
    match token {
        "rd" => "road",
        "st" | "str" => "street",
        "ave" | "av" | "avn" => "avenue",
        "ln" => "lane",
        "cl" => "close",
        "cres" | "cresc" | "cr" => "crescent",
        "dr" | "drv" => "drive",
        "ct" | "crt" => "court",
        "pl" => "place",
        "sq" => "square",
        "gdns" | "gdn" => "gardens",
        "gr" | "gro" | "grv" => "grove",
        "tce" | "terr" | "ter" => "terrace",
        "pk" => "park",
        "hse" => "house",
        "flt" => "flat",
        "apt" | "apartment" => "flat",
        "bldg" | "bldgs" => "buildings",
        "cott" | "cotts" => "cottages",
        "mt" => "mount",
        "wy" => "way",
        "hts" => "heights",
        "est" => "estate",
        "n" => "north",
        "s" => "south",
        "e" => "east",
        "w" => "west",
        "upr" => "upper",
        "lwr" => "lower",
        "cir" | "crcs" => "circus",
        "pde" => "parade",
        "blvd" => "boulevard",
        "hwy" => "highway",
        other => other,
    }
}

fn is_house_number(token: &str) -> bool {
    let bytes = token.as_bytes();
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && digits <= 5
        && bytes.len() - digits <= 1
        && bytes[digits..].iter().all(u8::is_ascii_alphabetic)
}

/// Normalises address lines and town into one comparable text: folded, punctuation
/// removed, abbreviations expanded (`rd` to `road`, `st` to `street`; a leading `st`
/// before a name such as `St Albans` stays `saint`), `flat 3/12` read as flat 3 of
/// number 12, `the` left out. The house number is the first number (with at most one
/// letter, `12a`, or `12 A` written apart) that is not a flat number. `Ok(None)` when
/// nothing is left.
///
/// # Errors
/// [`IssueKind::Placeholder`] when the first line says there is no address (`No fixed
/// abode`, `NFA`, `Unknown`, `N/A`): everyone so recorded would share it, and a town
/// alone says nothing of a home.
pub fn normalize_address(
    line1: Option<&str>,
    line2: Option<&str>,
    town: Option<&str>,
) -> Result<Option<Address>, IssueKind> {
    // (Every placeholder is without digits, and nearly every first line has some.)
    if let Some(first) = line1.or(line2).filter(|first| !first.bytes().any(|b| b.is_ascii_digit()))
    {
        let folded = fold(first);
        let words: Vec<&str> =
            folded.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
        if PLACEHOLDER_ADDRESSES.contains(&words.join(" ").as_str()) {
            return Err(IssueKind::Placeholder);
        }
    }
    let joined = [line1, line2, town].into_iter().flatten().collect::<Vec<_>>().join(" ");
    // An apostrophe joins its word ("Queen's Rd", "St John's Close"): split there, the
    // possessive's "s" would read as "south".
    // (Slashes set apart after folding, which writes some as text: "¢" is "c/".)
    let folded = fold(&joined).replace(['\'', '`'], "").replace('/', " / ");
    let mut tokens: Vec<String> = Vec::new();
    for raw_token in folded.split(|c: char| !c.is_ascii_alphanumeric() && c != '/') {
        if raw_token.is_empty() {
            continue;
        }
        tokens.push(raw_token.to_owned());
    }
    let mut words: Vec<String> = Vec::with_capacity(tokens.len());
    let mut house_number: Option<String> = None;
    let mut after_flat = false;
    for (index, token) in tokens.iter().enumerate() {
        if token == "/" {
            // "3/12": the number before the slash was a flat number. After "flat 2", a
            // number followed by another is the rest of the flat's position ("Flat 2/1,
            // 12 High St", as tenement flats are written): the house number comes later.
            let flat_position_follows = words.len() >= 2
                && matches!(words[words.len() - 2].as_str(), "flat" | "unit" | "room" | "suite")
                && tokens[index + 1..].iter().skip(1).any(|later| is_house_number(later));
            after_flat = flat_position_follows;
            continue;
        }
        // "The" says nothing ("The Old Rectory" is "Old Rectory").
        if token == "the" {
            continue;
        }
        // A house number's letter written apart ("12 A Mill Road" is 12a). Not e, n, s
        // or w, which may be a direction ("5 E Street").
        if let [letter @ (b'a'..=b'd' | b'f'..=b'h')] = token.as_bytes()
            && let Some(last) = words.last_mut()
            && !last.is_empty()
            && last.bytes().all(|b| b.is_ascii_digit())
        {
            let was_house_number = house_number.as_deref() == Some(last.as_str());
            last.push(char::from(*letter));
            if was_house_number {
                house_number = Some(last.clone());
            }
            continue;
        }
        let next_is_slash = tokens.get(index + 1).is_some_and(|next| next == "/");
        let word = if token == "st"
            && index + 1 < tokens.len()
            && !is_house_number(&tokens[index + 1])
            && words.last().is_none_or(|w| is_house_number(w))
        {
            // "St Albans Road", "12 St Johns Close": saint; "High St": street.
            "saint"
        } else {
            expand(token)
        };
        if is_house_number(word) {
            let is_flat_number = after_flat || next_is_slash;
            if house_number.is_none() && !is_flat_number {
                house_number = Some(word.to_owned());
            }
            after_flat = false;
        } else {
            after_flat = matches!(word, "flat" | "unit" | "room" | "suite");
        }
        words.push(word.to_owned());
    }
    if words.is_empty() {
        return Ok(None);
    }
    // A flat written after the street ("12 High Street, Flat 3") reads as one written
    // before it ("Flat 3, 12 High Street"): the flat and its numbers go first.
    let unit = |word: &String| matches!(word.as_str(), "flat" | "unit" | "room" | "suite");
    if let Some(at) = words.iter().position(unit).filter(|&at| at > 0) {
        let numbers = words[at + 1..].iter().take_while(|word| is_house_number(word)).count();
        if numbers > 0 {
            words[..=at + numbers].rotate_right(numbers + 1);
        }
    }
    Ok(Some(Address {
        text: words.join(" ").into(),
        house_number: house_number.map(String::into_boxed_str),
    }))
}

/// First address lines that say there is no address, as words of folded text.
const PLACEHOLDER_ADDRESSES: &[&str] = &[
    "no fixed abode",
    "no fixed address",
    "no fixed",
    "nfa",
    "homeless",
    "unknown",
    "address unknown",
    "unknown address",
    "not known",
    "address not known",
    "no address",
    "not given",
    "not stated",
    "none",
    "n a",
    "na",
];

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    #[track_caller]
    fn check_postcode(raw: &str, expected: Option<(&str, bool, &str, &str)>) {
        let got = normalize_postcode(raw).ok();
        let got = got.as_ref().map(|p| (p.code.as_str(), p.is_uk, p.district(), p.sector()));
        assert_eq!(got, expected, "input {raw:?}");
    }

    #[test]
    fn postcodes() {
        check_postcode("ls14ab", Some(("LS1 4AB", true, "LS1", "LS1 4")));
        check_postcode("SW1A1AA", Some(("SW1A 1AA", true, "SW1A", "SW1A 1")));
        check_postcode("EC1A 1BB", Some(("EC1A 1BB", true, "EC1A", "EC1A 1")));
        check_postcode(" m14  6hr ", Some(("M14 6HR", true, "M14", "M14 6")));
        check_postcode("B15 2TT", Some(("B15 2TT", true, "B15", "B15 2")));
        check_postcode("CF10 1AA", Some(("CF10 1AA", true, "CF10", "CF10 1")));
        check_postcode("2615", Some(("2615", false, "", "")));
        check_postcode("LS1 4CI", Some(("LS14CI", false, "", "")));
        check_postcode("hello", None);
        // Punctuation around a code is the line's.
        check_postcode("LS11AA.", Some(("LS1 1AA", true, "LS1", "LS1 1")));
        check_postcode("(ls1 1aa)", Some(("LS1 1AA", true, "LS1", "LS1 1")));
        // A letter for a digit where only a digit can stand.
        check_postcode("SW1A OAA", Some(("SW1A 0AA", true, "SW1A", "SW1A 0")));
        check_postcode("LSI 4AB", Some(("LS1 4AB", true, "LS1", "LS1 4")));
        check_postcode("OLI 1AA", Some(("OL1 1AA", true, "OL1", "OL1 1")));
        check_postcode("LS1 IAB", Some(("LS1 1AB", true, "LS1", "LS1 1")));
        check_postcode("LSI IAB", Some(("LS1 1AB", true, "LS1", "LS1 1")));
        // I is never the letter after a district's digit, so B1I is B11; O never the
        // second letter of AA9A; a code starting Q is no UK postcode.
        check_postcode("b1I3gn", Some(("B11 3GN", true, "B11", "B11 3")));
        check_postcode("W1A 0AX", Some(("W1A 0AX", true, "W1A", "W1A 0")));
        check_postcode("EC1O 1BB", Some(("EC10 1BB", true, "EC10", "EC10 1")));
        check_postcode("QA1 1AA", Some(("QA11AA", false, "", "")));
        check_postcode("LZ1 1AA", Some(("LZ11AA", false, "", "")));
        assert_eq!(normalize_postcode("ZZ99 3VZ"), Err(IssueKind::Placeholder));
        assert_eq!(normalize_postcode("zz993wz"), Err(IssueKind::Placeholder));
        check_postcode("", None);
        check_postcode("!!", None);
    }

    #[track_caller]
    fn check_address(line1: &str, line2: Option<&str>, text: &str, number: Option<&str>) {
        let got = normalize_address(Some(line1), line2, None).unwrap().expect("an address");
        assert_eq!((&*got.text, got.house_number.as_deref()), (text, number), "input {line1:?}");
    }

    #[test]
    fn addresses() {
        check_address("12 High St", None, "12 high street", Some("12"));
        check_address("12a Park Rd.", Some("Leeds"), "12a park road leeds", Some("12a"));
        check_address("Flat 3, 45 Acacia Ave", None, "flat 3 45 acacia avenue", Some("45"));
        // A flat written after the street goes first, its numbers with it.
        check_address("45 Acacia Ave", Some("Flat 3"), "flat 3 45 acacia avenue", Some("45"));
        check_address("45 Acacia Ave, Flat 2/1", None, "flat 2 1 45 acacia avenue", Some("45"));
        check_address("5 Mill Rd, Room 4", Some("Leeds"), "room 4 5 mill road leeds", Some("5"));
        check_address("Mill House Flat", None, "mill house flat", None);
        check_address("3/12 Mill Lane", None, "3 12 mill lane", Some("12"));
        check_address("Flat 3/12 Mill Lane", None, "flat 3 12 mill lane", Some("12"));
        check_address("Flat 2/1", Some("12 High St."), "flat 2 1 12 high street", Some("12"));
        // A possessive is part of its word, however it is written.
        check_address("5 Queen's Rd", None, "5 queens road", Some("5"));
        check_address("5 Queen\u{2019}s Road", None, "5 queens road", Some("5"));
        check_address("5 Queens Rd", None, "5 queens road", Some("5"));
        check_address("2 St John's Close", None, "2 saint johns close", Some("2"));
        check_address("St Albans Road", None, "saint albans road", None);
        check_address("7 wallaby place", None, "7 wallaby place", Some("7"));
        // A house number's letter written apart, and "the", which says nothing.
        check_address("12 A Mill Road", None, "12a mill road", Some("12a"));
        check_address("Flat 3 B", Some("5 Mill Rd"), "flat 3b 5 mill road", Some("5"));
        check_address("5 E Street", None, "5 east street", Some("5"));
        check_address("The Old Rectory", Some("Church Ln"), "old rectory church lane", None);
        check_address("1 The Crescent", None, "1 crescent", Some("1"));
        assert_eq!(normalize_address(None, Some("  "), None), Ok(None));
        for nowhere in ["No Fixed Abode", "NFA", "n/a", "Unknown", "ADDRESS NOT KNOWN"] {
            assert_eq!(
                normalize_address(Some(nowhere), None, Some("Leeds")),
                Err(IssueKind::Placeholder),
                "{nowhere}"
            );
        }
        // A street that only starts like one is an address.
        check_address("Unknown Lane", None, "unknown lane", None);
    }

    /// The text is canonical. (The house number is read off the raw lines, whose
    /// slashes the text leaves out: `3/12` is flat 3 of number 12, `3 12` is not.)
    #[quickcheck]
    fn an_address_text_normalised_again_is_the_same(line1: String, line2: String) -> bool {
        match normalize_address(Some(&line1), Some(&line2), None) {
            Ok(Some(address)) => normalize_address(Some(&address.text), None, None)
                .is_ok_and(|again| again.is_some_and(|again| again.text == address.text)),
            _ => true,
        }
    }

    /// A postcode found at the end of a line is a UK postcode, what is left is the start
    /// of the line, and a valid postcode put after any line is found again.
    #[quickcheck]
    fn a_postcode_at_the_end_of_a_line_is_found_and_the_rest_kept(line: String) -> bool {
        let found =
            postcode_at_end(&line).is_none_or(|(rest, code)| code.is_uk && line.starts_with(rest));
        let written = format!("{line}, LS1 4AB");
        let again = postcode_at_end(&written)
            .is_some_and(|(rest, code)| code.code == "LS1 4AB" && written.starts_with(rest));
        found && again
    }

    #[quickcheck]
    fn postcode_of_a_canonical_code_is_the_same(raw: String) -> bool {
        match normalize_postcode(&raw) {
            Ok(code) => normalize_postcode(&code.code).as_ref() == Ok(&code),
            Err(_) => true,
        }
    }
}
