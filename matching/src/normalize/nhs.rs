//! NHS numbers: ten digits, the tenth a Modulus 11 check digit.

use crate::record::IssueKind;

/// True when ten ASCII digits carry a valid Modulus 11 check digit: digits 1-9 are
/// weighted 10 down to 2 and summed; the check digit is 11 minus the sum mod 11, with
/// 11 meaning 0 and 10 meaning no valid number.
pub fn nhs_check_digit_valid(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(digit, weight)| u32::from(digit - b'0') * weight)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        check => check,
    };
    u32::from(bytes[9] - b'0') == check
}

/// Normalises an NHS number to ten digits: a leading label (`NHS No:`), spaces and
/// dashes are removed, a spreadsheet's `.0` after the number or apostrophe before it
/// is dropped, the check digit is verified, and placeholders (one digit repeated,
/// `0123456789`, `1234567890`) are refused. Numbers starting `999` are never issued to real people;
/// they are accepted unless `refuse_test_numbers`.
///
/// # Errors
/// The reason the value cannot be used.
pub fn normalize_nhs_number(raw: &str, refuse_test_numbers: bool) -> Result<String, IssueKind> {
    let mut digits = String::with_capacity(10);
    for c in super::spreadsheet_number(without_label(raw.trim()))?.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '\t' => {}
            _ => return Err(IssueKind::NotNumeric),
        }
    }
    if digits.len() != 10 {
        return Err(IssueKind::WrongLength);
    }
    let first = digits.as_bytes()[0];
    if digits.bytes().all(|b| b == first) || digits == "0123456789" || digits == "1234567890" {
        return Err(IssueKind::Placeholder);
    }
    if !nhs_check_digit_valid(&digits) {
        return Err(IssueKind::BadCheckDigit);
    }
    if refuse_test_numbers && digits.starts_with("999") {
        return Err(IssueKind::Placeholder);
    }
    Ok(digits)
}

/// The value without a label a clerk typed before it: `NHS 943 476 5919`,
/// `NHS No: 9434765919`, `nhs number 943-476-5919`.
fn without_label(value: &str) -> &str {
    if !value.get(..3).is_some_and(|label| label.eq_ignore_ascii_case("nhs")) {
        return value;
    }
    let mut rest = value[3..].trim_start();
    for word in ["number", "num", "no"] {
        if rest.get(..word.len()).is_some_and(|start| start.eq_ignore_ascii_case(word)) {
            rest = &rest[word.len()..];
            break;
        }
    }
    rest.trim_start_matches([' ', '.', ':', '#'])
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    #[track_caller]
    fn check(raw: &str, expected: Result<&str, IssueKind>) {
        assert_eq!(
            normalize_nhs_number(raw, false).as_deref().map_err(|e| *e),
            expected,
            "input {raw:?}"
        );
    }

    #[test]
    fn nhs_numbers() {
        check("943 476 5919", Ok("9434765919"));
        check("943-476-5919", Ok("9434765919"));
        check(" 9434765919 ", Ok("9434765919"));
        check("943 476 5918", Err(IssueKind::BadCheckDigit));
        check("943476591", Err(IssueKind::WrongLength));
        check("94347659190", Err(IssueKind::WrongLength));
        check("943476591X", Err(IssueKind::NotNumeric));
        check("0000000000", Err(IssueKind::Placeholder));
        check("1111111111", Err(IssueKind::Placeholder));
        check("9999999999", Err(IssueKind::Placeholder));
        check("9990001235", Ok("9990001235"));
        check("NHS 943 476 5919", Ok("9434765919"));
        check("NHS No: 943-476-5919", Ok("9434765919"));
        check("nhs number 9434765919", Ok("9434765919"));
        check("NHS", Err(IssueKind::WrongLength));
        check("NHX 9434765919", Err(IssueKind::NotNumeric));
        // As a spreadsheet or a data frame writes a number column.
        check("9434765919.0", Ok("9434765919"));
        check("9434765919.00", Ok("9434765919"));
        check("9.43477E+09", Err(IssueKind::Rounded));
        check("9.434765919e9", Err(IssueKind::Rounded));
        check("9434765919.5", Err(IssueKind::NotNumeric));
        // Typed as text in a spreadsheet, which keeps an apostrophe before it.
        check("'943 476 5919", Ok("9434765919"));
        check("'9434765919", Ok("9434765919"));
        check("94347'65919", Err(IssueKind::NotNumeric));
        assert_eq!(normalize_nhs_number("9990001235", true), Err(IssueKind::Placeholder));
    }

    #[quickcheck]
    fn any_nine_digits_with_their_check_digit_validate(seed: Vec<u8>) -> bool {
        let digits: String =
            (0..9).map(|i| char::from(b'0' + seed.get(i).copied().unwrap_or(0) % 10)).collect();
        let sum: u32 =
            digits.bytes().zip((2..=10).rev()).map(|(d, w)| u32::from(d - b'0') * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return !(0..10).any(|d| nhs_check_digit_valid(&format!("{digits}{d}"))),
            check => check,
        };
        let number = format!("{digits}{check}");
        let others_invalid = (0..10)
            .filter(|&d| d != check)
            .all(|d| !nhs_check_digit_valid(&format!("{digits}{d}")));
        nhs_check_digit_valid(&number) && others_invalid
    }

    #[quickcheck]
    fn normalizing_its_own_output_is_identity(raw: String) -> bool {
        match normalize_nhs_number(&raw, false) {
            Ok(number) => normalize_nhs_number(&number, false) == Ok(number.clone()),
            Err(_) => true,
        }
    }
}
