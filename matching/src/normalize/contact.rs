//! Telephone numbers, email addresses and administrative sex.

use crate::record::{IssueKind, Sex};

/// Normalises a telephone number. UK numbers (`07700 900123`, `+44 (0)7700 900123`,
/// `0044 7700900123`, `447700900123`) become `+44` and the national number without its
/// leading zero (`+447700900123`); other international numbers keep `+` and their
/// digits. Of several numbers in one value the first is taken, without a label before
/// it or a note or extension after it. A spreadsheet's number (`7700900123.0`, its
/// leading zero lost, or `'07700 900123`, typed as text) is read as the whole number.
///
/// # Errors
/// [`IssueKind::NotNumeric`] for letters, [`IssueKind::WrongLength`] for too few or
/// too many digits, [`IssueKind::Placeholder`] for one digit repeated,
/// [`IssueKind::Rounded`] for scientific notation.
pub fn normalize_phone(raw: &str) -> Result<String, IssueKind> {
    let raw = first_number(super::spreadsheet_number(raw.trim())?);
    let mut digits = String::with_capacity(16);
    for c in raw.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' | '+' | '\t' => {}
            _ => return Err(IssueKind::NotNumeric),
        }
    }
    if let Some(&first) = digits.as_bytes().first()
        && digits.len() >= 6
        && digits.bytes().all(|b| b == first)
    {
        return Err(IssueKind::Placeholder);
    }
    let international = raw.starts_with('+') || digits.starts_with("00");
    let mut national = if let Some(rest) = digits.strip_prefix("0044") {
        rest.to_owned()
    } else if digits.starts_with("44") && (international || digits.len() >= 12) {
        digits[2..].to_owned()
    } else if international {
        let number = digits.trim_start_matches('0');
        if !(8..=15).contains(&number.len()) {
            return Err(IssueKind::WrongLength);
        }
        return Ok(format!("+{number}"));
    } else {
        digits.clone()
    };
    // "+44 (0)7700 ...": the trunk zero written after the country code.
    if let Some(rest) = national.strip_prefix('0') {
        national = rest.to_owned();
    }
    if !(9..=10).contains(&national.len()) {
        return Err(IssueKind::WrongLength);
    }
    let first = national.as_bytes()[0];
    if national.bytes().all(|b| b == first) {
        return Err(IssueKind::Placeholder);
    }
    Ok(format!("+44{national}"))
}

/// True for a normalised UK mobile number (`+447...`, the 071-075 and 077-079 ranges,
/// and 07624, the Isle of Man's): a number one person carries, where a landline is the
/// household's. Personal numbers (070) and pagers (076) are not mobiles.
pub fn is_uk_mobile(normalized: &str) -> bool {
    normalized.strip_prefix("+447").is_some_and(|rest| {
        rest.len() == 9
            && (matches!(rest.as_bytes()[0], b'1'..=b'5' | b'7'..=b'9') || rest.starts_with("624"))
    })
}

/// The first number in a value: past a label (`Tel: 0113 496 0000`, `Mob 07700
/// 900123`), and up to a note, an extension or a second number (`07700 900123 (mobile)`,
/// `0113 496 0000 ext 12`, `x12`, `07700 900123 / 0113 496 0000`, `... or ...`). A
/// value without a digit is returned whole, for its letters to be reported.
fn first_number(value: &str) -> &str {
    if !value.bytes().any(|b| b.is_ascii_alphabetic() || b"/,;".contains(&b)) {
        return value;
    }
    let bytes = value.as_bytes();
    let starts_number = |at: usize| {
        bytes[at].is_ascii_digit()
            || bytes[at] == b'+'
            || (bytes[at] == b'(' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit))
    };
    let Some(start) = (0..bytes.len()).find(|&at| starts_number(at)) else {
        return value;
    };
    let number = &value[start..];
    let end = number.find(|c: char| c.is_alphabetic() || "/,;".contains(c)).unwrap_or(number.len());
    number[..end].trim_end_matches(|c: char| c.is_whitespace() || "(-:.".contains(c))
}

/// Normalises an email address: trimmed and lower-cased, with one `@`, a local part and
/// a domain containing a dot.
///
/// # Errors
/// [`IssueKind::Unparseable`] when it does not have that shape.
pub fn normalize_email(raw: &str) -> Result<String, IssueKind> {
    let email = raw.trim().to_lowercase();
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if valid { Ok(email) } else { Err(IssueKind::Unparseable) }
}

/// Normalises administrative sex: FHIR codes (`male`, `female`, `other`, `unknown`),
/// NHS codes (`1` male, `2` female, `9` indeterminate, `X` and `0` not known),
/// `M`/`F`/`U`, and the words systems write for them (`Not Known`, `N/K`, `Not
/// specified`, `Prefer not to say`, `Non-binary`), in any case. Unknown sex is
/// `Ok(None)`.
///
/// # Errors
/// [`IssueKind::UnknownCode`] for anything else.
pub fn normalize_sex(raw: &str) -> Result<Option<Sex>, IssueKind> {
    // Case, a full stop and spaces or hyphens within do not matter: "Not Known", "N/K",
    // "non-binary".
    let code: String = raw
        .trim()
        .trim_end_matches('.')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '/'))
        .flat_map(char::to_lowercase)
        .collect();
    match code.as_str() {
        "m" | "male" | "1" | "man" | "boy" => Ok(Some(Sex::Male)),
        "f" | "female" | "2" | "woman" | "girl" => Ok(Some(Sex::Female)),
        "o" | "other" | "9" | "i" | "indeterminate" | "intersex" | "nonbinary" => {
            Ok(Some(Sex::Other))
        }
        "u" | "unknown" | "x" | "0" | "notknown" | "nk" | "notspecified" | "unspecified"
        | "notstated" | "notrecorded" | "prefernottosay" | "na" | "" => Ok(None),
        _ => Err(IssueKind::UnknownCode),
    }
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    #[track_caller]
    fn check_phone(raw: &str, expected: Result<&str, IssueKind>) {
        assert_eq!(normalize_phone(raw).as_deref().map_err(|e| *e), expected, "input {raw:?}");
    }

    #[test]
    fn mobiles_are_told_from_landlines() {
        let mobile = |raw: &str| is_uk_mobile(&normalize_phone(raw).expect("a number"));
        assert!(mobile("07700 900123"));
        assert!(mobile("+44 (0)7123 456789"));
        assert!(mobile("07624 123456"), "the Isle of Man's mobiles");
        assert!(!mobile("0113 496 0000"), "a landline");
        assert!(!mobile("07031 234567"), "a personal number");
        assert!(!mobile("07623 123456"), "a pager");
        assert!(!mobile("+33 6 12 34 56 78"), "not a UK number");
    }

    #[test]
    fn phones() {
        check_phone("07700 900123", Ok("+447700900123"));
        check_phone("+44 7700 900123", Ok("+447700900123"));
        check_phone("+44 (0)7700 900123", Ok("+447700900123"));
        check_phone("0044 7700900123", Ok("+447700900123"));
        check_phone("447700900123", Ok("+447700900123"));
        check_phone("0113 496 0000", Ok("+441134960000"));
        check_phone("+33 1 23 45 67 89", Ok("+33123456789"));
        check_phone("12345", Err(IssueKind::WrongLength));
        check_phone("07700 900123 / 0113 496 0000", Ok("+447700900123"));
        check_phone("0113 496 0000 ext 12", Ok("+441134960000"));
        check_phone("0113 496 0000 x12", Ok("+441134960000"));
        check_phone("07700 900123 or 07700 900456", Ok("+447700900123"));
        // A label before the number, a note after it.
        check_phone("Tel: 0113 496 0000", Ok("+441134960000"));
        check_phone("Mob 07700 900123", Ok("+447700900123"));
        check_phone("07700 900123 (mobile)", Ok("+447700900123"));
        check_phone("07700900123 daughter", Ok("+447700900123"));
        check_phone("home (0113) 496 0000", Ok("+441134960000"));
        check_phone("(mobile) 07700 900123", Ok("+447700900123"));
        check_phone("mobile", Err(IssueKind::NotNumeric));
        check_phone("call me", Err(IssueKind::NotNumeric));
        check_phone("00000 000000", Err(IssueKind::Placeholder));
        // A spreadsheet's number column: the leading zero lost, ".0" added, or rounded.
        check_phone("7700900123.0", Ok("+447700900123"));
        check_phone("7700900123", Ok("+447700900123"));
        check_phone("7.7009E+09", Err(IssueKind::Rounded));
        check_phone("0113.496.0000", Ok("+441134960000"));
        // Typed as text in a spreadsheet, so that its leading zero stays.
        check_phone("'07700 900123", Ok("+447700900123"));
    }

    #[test]
    fn emails_and_sex() {
        assert_eq!(
            normalize_email(" Ada.Lovelace@Example.ORG ").as_deref(),
            Ok("ada.lovelace@example.org")
        );
        assert_eq!(normalize_email("ada@localhost"), Err(IssueKind::Unparseable));
        assert_eq!(normalize_email("no at sign"), Err(IssueKind::Unparseable));
        assert_eq!(normalize_sex("F"), Ok(Some(Sex::Female)));
        assert_eq!(normalize_sex("1"), Ok(Some(Sex::Male)));
        assert_eq!(normalize_sex("9"), Ok(Some(Sex::Other)));
        assert_eq!(normalize_sex("X"), Ok(None));
        assert_eq!(normalize_sex("unknown"), Ok(None));
        assert_eq!(normalize_sex("banana"), Err(IssueKind::UnknownCode));
        // As systems write the codes out.
        for unknown in
            ["Not Known", "N/K", "not specified", "Not stated", "Prefer not to say", "N/A"]
        {
            assert_eq!(normalize_sex(unknown), Ok(None), "{unknown}");
        }
        assert_eq!(normalize_sex("Non-binary"), Ok(Some(Sex::Other)));
        assert_eq!(normalize_sex("M."), Ok(Some(Sex::Male)));
    }

    #[quickcheck]
    fn phone_normalisation_is_idempotent(raw: String) -> bool {
        match normalize_phone(&raw) {
            Ok(phone) => normalize_phone(&phone) == Ok(phone.clone()),
            Err(_) => true,
        }
    }

    #[quickcheck]
    fn email_normalisation_is_idempotent(raw: String) -> bool {
        match normalize_email(&raw) {
            Ok(email) => normalize_email(&email) == Ok(email.clone()),
            Err(_) => true,
        }
    }
}
