//! Dates of birth: ISO, UK day-first, `YYYYMMDD`, month names, two-digit years, and
//! month-first dates from a sender known to write them so.

use crate::record::{BirthDate, DateOrder, IssueKind};

/// Earliest year accepted as a real birth year.
const MIN_YEAR: u16 = 1880;

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

fn month_from_name(word: &str) -> Option<u8> {
    let word = word.to_ascii_lowercase();
    if word.len() < 3 {
        return None;
    }
    MONTHS.iter().position(|month| word.starts_with(month)).map(|index| index as u8 + 1)
}

/// A two-digit year: `YY` is 20YY when 20YY is not after this year, else 19YY.
fn expand_year(two_digits: u16, today: BirthDate) -> u16 {
    if 2000 + two_digits <= today.year { 2000 + two_digits } else { 1900 + two_digits }
}

/// Parses a date of birth. Accepted forms: ISO `1951-04-03` (a time part after `T` or
/// a space is ignored, as after any form), UK day-first `03/04/1951`, `3/4/1951`, `03-04-1951`,
/// `03.04.1951`, `YYYYMMDD`, month names `3 April 1951`, `03-Apr-1951`, `3 Apr 51`,
/// `12th of July 1980`, and with the month's name first `July 12, 1980` (a name is
/// never ambiguous). After a time on a 12-hour clock (`2/13/1980 12:00:00 AM`, as a US
/// locale exports a date), a date of numbers is read month first, unless its first
/// number cannot be a month. A number of five digits is a spreadsheet's serial day number, as a
/// date column that lost its format exports it (`29414` is 12 July 1980; days since 30
/// December 1899, so 10000 and up, from 18 May 1927).
/// Two-digit years pivot on today: `YY` means 20YY when that is not after this year,
/// otherwise 19YY (so in 2026, `25` is 2025 and `27` is 1927).
///
/// # Errors
/// [`IssueKind::Impossible`] for dates that do not exist, are in the future or are
/// before 1880; [`IssueKind::Placeholder`] for `1900-01-01`, `1800-01-01`,
/// `1111-11-11`, `0001-01-01`, `9999-12-31` style fillers; [`IssueKind::Unparseable`]
/// for anything else.
pub fn normalize_birth_date(raw: &str, today: BirthDate) -> Result<BirthDate, IssueKind> {
    normalize_birth_date_in(raw, today, DateOrder::DayFirst)
}

/// As [`normalize_birth_date`], for a sender whose dates of numbers are written in
/// `order`. Month first, `03/04/1951` is 4 March, and a date whose first number cannot
/// be a month (`13/02/1951`) is still read day first. Dates written year first or with
/// a month's name read the same in either order.
///
/// # Errors
/// As [`normalize_birth_date`].
pub fn normalize_birth_date_in(
    raw: &str,
    today: BirthDate,
    order: DateOrder,
) -> Result<BirthDate, IssueKind> {
    let text = raw.trim();
    // After an ISO date (digits and dashes), a time part after `T` or a space. Only
    // there: a month's name holds a `t` ("23 August 1967").
    let iso_date_before = |position: usize| {
        position >= 8 && text[..position].bytes().all(|b| b.is_ascii_digit() || b == b'-')
    };
    let text = match text.find(['T', 't', ' ']) {
        Some(position) if iso_date_before(position) => &text[..position],
        _ => text,
    };
    // A time of day after the date, as spreadsheets and databases export it
    // ("12/07/1980 00:00", "12 Jul 1980 00:00:00.000"), on a 12-hour clock as a US
    // locale writes it ("2/13/1980 12:00:00 AM").
    let (text, twelve_hour) = match text.rsplit_once(' ') {
        Some((date, half)) if ["am", "pm"].iter().any(|h| half.eq_ignore_ascii_case(h)) => {
            (date.trim_end(), true)
        }
        _ => (text, false),
    };
    let text = match text.rsplit_once(' ') {
        Some((date, time)) if time.contains(':') => date.trim_end(),
        _ if twelve_hour => return Err(IssueKind::Unparseable),
        _ => text,
    };
    let Some((year, month, day)) = parse_parts(text, today) else {
        return Err(if partial(text, today) { IssueKind::Partial } else { IssueKind::Unparseable });
    };
    // A 12-hour clock is a US locale's export, whose numeric dates are month first:
    // read so unless the first number cannot be a month (a UK date with such a time).
    let numeric = text.bytes().all(|b| b.is_ascii_digit() || b"/-.".contains(&b));
    let month_first = (twelve_hour || order == DateOrder::MonthFirst)
        && numeric
        && (1..=12).contains(&day)
        && !iso(text);
    let (month, day) = if month_first { (day, month) } else { (month, day) };
    let placeholder = matches!(
        (year, month, day),
        (1900, 1, 1) | (1800, 1, 1) | (1111, 11, 11) | (1, 1, 1) | (9999, 12, 31)
    );
    if placeholder {
        return Err(IssueKind::Placeholder);
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(IssueKind::Impossible);
    }
    let date = BirthDate { year, month, day };
    if year < MIN_YEAR || date > today {
        return Err(IssueKind::Impossible);
    }
    Ok(date)
}

/// What one raw birth date says of its sender's order of day and month: `DayFirst`
/// when its numbers can only be read day first (`13/02/1951`), `MonthFirst` when they
/// can only be read month first (`02/13/1951`), `None` when either reading would do
/// (`03/04/1951`), neither would, or the order is not in question (`1951-02-13`, `13
/// Feb 1951`, or a time on a 12-hour clock, which is read month first anyway). Cheap:
/// a file's order is found by asking it of every row.
pub fn date_order_evidence(raw: &str) -> Option<DateOrder> {
    let text = raw.trim();
    let (date, time) = text.split_once(' ').unwrap_or((text, ""));
    if time.bytes().any(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut parts = date.split(['/', '-', '.']);
    let mut small = || {
        parts
            .next()
            .filter(|part| (1..=2).contains(&part.len()))
            .and_then(|part| part.parse::<u8>().ok())
    };
    let (first, second) = (small()?, small()?);
    let year = parts.next().filter(|part| matches!(part.len(), 2 | 4))?;
    if parts.next().is_some() || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month = 1..=12;
    let day = 1..=31;
    match (month.contains(&first), month.contains(&second)) {
        (false, true) if day.contains(&first) => Some(DateOrder::DayFirst),
        (true, false) if day.contains(&second) => Some(DateOrder::MonthFirst),
        _ => None,
    }
}

/// True for a date written year first (`1980-02-13`, `1980/02/13`, `19800213`).
fn iso(text: &str) -> bool {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()))
        || text.split(['/', '-', '.']).next().is_some_and(|first| first.len() == 4)
}

fn number(part: &str) -> Option<u16> {
    if part.is_empty() || part.len() > 4 || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// True for a year alone (`1951`), or a year and month (`1951-04`, `04/1951`, as FHIR
/// and spreadsheets write a date whose day is not known), in a year a birth can be in.
fn partial(text: &str, today: BirthDate) -> bool {
    let year = |part: &str| {
        part.len() == 4 && number(part).is_some_and(|year| (1880..=today.year).contains(&year))
    };
    let month = |part: &str| part.len() <= 2 && number(part).is_some_and(|m| (1..=12).contains(&m));
    match text.split_once(['-', '/', '.']) {
        None => year(text),
        Some((first, second)) => (year(first) && month(second)) || (month(first) && year(second)),
    }
}

fn parse_parts(text: &str, today: BirthDate) -> Option<(u16, u8, u8)> {
    let to_u8 = |value: u16| u8::try_from(value).ok();
    // A spreadsheet's serial day number: days since 30 December 1899.
    if text.len() == 5 && text.bytes().all(|b| b.is_ascii_digit()) {
        let serial: i64 = text.parse().ok()?;
        let epoch = BirthDate { year: 1899, month: 12, day: 30 }.day_number();
        let date = BirthDate::from_day_number(epoch + serial);
        return Some((date.year, date.month, date.day));
    }
    // YYYYMMDD
    if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
        let year = number(&text[..4])?;
        return Some((year, to_u8(number(&text[4..6])?)?, to_u8(number(&text[6..])?)?));
    }
    // ("12th of July 1980": the "of" says nothing.)
    let parts: Vec<&str> = text
        .split(['-', '/', '.', ' ', ','])
        .filter(|part| !part.is_empty() && !part.eq_ignore_ascii_case("of"))
        .collect();
    if parts.len() != 3 {
        return None;
    }
    // ISO: year first.
    if parts[0].len() == 4 && number(parts[0]).is_some() {
        let year = number(parts[0])?;
        let month = match number(parts[1]) {
            Some(month) => to_u8(month)?,
            None => month_from_name(parts[1])?,
        };
        return Some((year, month, to_u8(number(parts[2])?)?));
    }
    // The month's name first ("July 12, 1980", "Jul 12th 1980").
    if let Some(month) = month_from_name(parts[0]) {
        return Some((year_part(parts[2], today)?, month, day_part(parts[1], true)?));
    }
    // Day first (UK), month as a number or a name; the day may be written as an
    // ordinal before a month's name ("12th July 1980", "1st").
    let day = day_part(parts[0], number(parts[1]).is_none())?;
    let month = match number(parts[1]) {
        Some(month) if parts[1].len() <= 2 => to_u8(month)?,
        Some(_) => return None,
        None => month_from_name(parts[1])?,
    };
    Some((year_part(parts[2], today)?, month, day))
}

/// A day of one or two digits, with an ordinal's suffix (`12th`, `1ST`) if `ordinal`.
fn day_part(text: &str, ordinal: bool) -> Option<u8> {
    let day = ["st", "nd", "rd", "th", "ST", "ND", "RD", "TH"]
        .iter()
        .find_map(|suffix| text.strip_suffix(suffix))
        .filter(|_| ordinal)
        .unwrap_or(text);
    u8::try_from(number(day).filter(|_| day.len() <= 2)?).ok()
}

/// A year of four digits, or two that pivot on today (see [`expand_year`]).
fn year_part(text: &str, today: BirthDate) -> Option<u16> {
    match text.len() {
        4 => number(text),
        2 => Some(expand_year(number(text)?, today)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    const TODAY: BirthDate = BirthDate { year: 2026, month: 11, day: 24 };

    #[track_caller]
    fn check(raw: &str, expected: Result<(u16, u8, u8), IssueKind>) {
        check_in(DateOrder::DayFirst, raw, expected);
    }

    fn check_in(order: DateOrder, raw: &str, expected: Result<(u16, u8, u8), IssueKind>) {
        let got = normalize_birth_date_in(raw, TODAY, order).map(|d| (d.year, d.month, d.day));
        assert_eq!(got, expected, "input {raw:?}, {}", order.as_str());
    }

    #[test]
    fn formats() {
        check("1951-04-03", Ok((1951, 4, 3)));
        check("1951-04-03T00:00:00", Ok((1951, 4, 3)));
        check("12th July 1980", Ok((1980, 7, 12)));
        check("July 12, 1980", Ok((1980, 7, 12)));
        check("Jul 12th 1980", Ok((1980, 7, 12)));
        check("JULY 12 80", Ok((1980, 7, 12)));
        // A spreadsheet's serial day numbers.
        check("29414", Ok((1980, 7, 12)));
        check("10000", Ok((1927, 5, 18)));
        check("45658", Ok((2025, 1, 1)));
        check("99999", Err(IssueKind::Impossible));
        check("1234", Err(IssueKind::Unparseable));
        // A month's name with a "t" in it is not an ISO time part.
        check("23 August 1967", Ok((1967, 8, 23)));
        check("23rd August 1967", Ok((1967, 8, 23)));
        check("21st October 1999 00:00", Ok((1999, 10, 21)));
        check("1 September 1955", Ok((1955, 9, 1)));
        check("19510403T101500", Ok((1951, 4, 3)));
        check("12/07/1980 00:00", Ok((1980, 7, 12)));
        check("12 Jul 1980 00:00:00.000", Ok((1980, 7, 12)));
        check("1980-07-12 00:00:00", Ok((1980, 7, 12)));
        check("1st of March 1951", Ok((1951, 3, 1)));
        check("3RD APR 51", Ok((1951, 4, 3)));
        // An ordinal is a day before a month's name, not before a month's number.
        check("12th/07/1980", Err(IssueKind::Unparseable));
        check("1951-04-03 00:00", Ok((1951, 4, 3)));
        check("03/04/1951", Ok((1951, 4, 3)));
        check("3/4/1951", Ok((1951, 4, 3)));
        check("03-04-1951", Ok((1951, 4, 3)));
        check("03.04.1951", Ok((1951, 4, 3)));
        check("19510403", Ok((1951, 4, 3)));
        check("3 April 1951", Ok((1951, 4, 3)));
        check("03-Apr-1951", Ok((1951, 4, 3)));
        check("3 Apr 51", Ok((1951, 4, 3)));
        check("03/04/25", Ok((2025, 4, 3)));
        check("03/04/27", Ok((1927, 4, 3)));
    }

    #[test]
    fn a_month_first_senders_dates_are_read_month_first() {
        let check = |raw, expected| check_in(DateOrder::MonthFirst, raw, expected);
        check("03/04/1951", Ok((1951, 3, 4)));
        check("2/13/1980", Ok((1980, 2, 13)));
        check("02-13-80", Ok((1980, 2, 13)));
        check("12.31.1999 00:00", Ok((1999, 12, 31)));
        // A first number that cannot be a month is a day, as before.
        check("13/02/1980", Ok((1980, 2, 13)));
        // Year first, or the month's name, read the same in either order.
        check("1951-03-04", Ok((1951, 3, 4)));
        check("19510304", Ok((1951, 3, 4)));
        check("4 Mar 1951", Ok((1951, 3, 4)));
        check("March 4, 1951", Ok((1951, 3, 4)));
        check("02/30/1980", Err(IssueKind::Impossible));
        // Day first stays the default.
        assert_eq!(normalize_birth_date("03/04/1951", TODAY).map(|d| d.month), Ok(4));
    }

    #[test]
    fn a_dates_numbers_say_which_orders_can_read_it() {
        assert_eq!(date_order_evidence("13/02/1980"), Some(DateOrder::DayFirst));
        assert_eq!(date_order_evidence("31-12-99"), Some(DateOrder::DayFirst));
        assert_eq!(date_order_evidence("2/13/1980"), Some(DateOrder::MonthFirst));
        assert_eq!(date_order_evidence("12.31.1999 00:00:00"), Some(DateOrder::MonthFirst));
        for either_or_neither in [
            "03/04/1951",
            "12/12/1980",
            "32/13/1980",
            "1980-02-13",
            "19800213",
            "13 Feb 1980",
            "Feb 13, 1980",
            "2/13/1980 12:00:00 AM",
            "13/02/1980/1",
            "13/02/19a0",
            "",
            "29414",
        ] {
            assert_eq!(date_order_evidence(either_or_neither), None, "{either_or_neither}");
        }
    }

    #[quickcheck]
    fn month_first_reads_what_day_first_reads_with_day_and_month_swapped(
        day: u8,
        month: u8,
        year: u16,
    ) -> bool {
        let (day, month, year) = (day % 31 + 1, month % 12 + 1, 1900 + year % 120);
        let uk = format!("{day:02}/{month:02}/{year}");
        let us = format!("{month:02}/{day:02}/{year}");
        let evidence = date_order_evidence(&us);
        normalize_birth_date(&uk, TODAY)
            == normalize_birth_date_in(&us, TODAY, DateOrder::MonthFirst)
            && (day > 12) == (evidence == Some(DateOrder::MonthFirst))
            && evidence != Some(DateOrder::DayFirst)
    }

    /// A 12-hour clock is written by US locales, month first; a date whose first
    /// number cannot be a month is a UK one with such a time.
    #[test]
    fn a_date_with_a_twelve_hour_time_is_read_month_first() {
        check("2/13/1980 12:00:00 AM", Ok((1980, 2, 13)));
        check("02/01/1980 12:00:00 AM", Ok((1980, 2, 1)));
        check("12/7/1980 3:15 pm", Ok((1980, 12, 7)));
        check("13/02/1980 12:00:00 AM", Ok((1980, 2, 13)));
        check("1980-02-01 12:00:00 AM", Ok((1980, 2, 1)));
        check("19800201 12:00 AM", Ok((1980, 2, 1)));
        check("1 Feb 1980 12:00:00 AM", Ok((1980, 2, 1)));
        check("02/01/1980 00:00:00", Ok((1980, 1, 2)));
        check("02/30/1980 12:00:00 AM", Err(IssueKind::Impossible));
        check("02/01/1980 AM", Err(IssueKind::Unparseable));
    }

    #[test]
    fn impossible_placeholder_and_garbage() {
        check("29/02/2000", Ok((2000, 2, 29)));
        check("29/02/1900", Err(IssueKind::Impossible));
        check("31/02/1951", Err(IssueKind::Impossible));
        check("01/13/1951", Err(IssueKind::Impossible));
        check("19511301", Err(IssueKind::Impossible));
        check("1870-01-02", Err(IssueKind::Impossible));
        check("2030-01-01", Err(IssueKind::Impossible));
        check("1900-01-01", Err(IssueKind::Placeholder));
        check("01/01/1900", Err(IssueKind::Placeholder));
        check("9999-12-31", Err(IssueKind::Placeholder));
        check("yesterday", Err(IssueKind::Unparseable));
        check("1951", Err(IssueKind::Partial));
        check("1951-04", Err(IssueKind::Partial));
        check("04/1951", Err(IssueKind::Partial));
        check("1951-13", Err(IssueKind::Unparseable));
        check("2099", Err(IssueKind::Unparseable));
        check("12345", Ok((1933, 10, 18)));
        check("", Err(IssueKind::Unparseable));
    }

    /// Each valid date's day number is one more than the day before's, whatever
    /// month or year boundary lies between.
    #[quickcheck]
    fn day_numbers_count_days(year: u16, month: u8, day: u8) -> bool {
        let year = 1880 + year % 200;
        let month = 1 + month % 12;
        let day = 1 + day % days_in_month(year, month);
        let date = BirthDate { year, month, day };
        let next = if day < days_in_month(year, month) {
            BirthDate { day: day + 1, ..date }
        } else if month < 12 {
            BirthDate { month: month + 1, day: 1, ..date }
        } else {
            BirthDate { year: year + 1, month: 1, day: 1 }
        };
        next.day_number() == date.day_number() + 1
    }

    /// A day number turns back into its date, whatever the date.
    #[quickcheck]
    fn day_numbers_turn_back_into_their_dates(year: u16, month: u8, day: u8) -> bool {
        let year = year % 10_000;
        let month = 1 + month % 12;
        let day = 1 + day % days_in_month(year, month);
        let date = BirthDate { year, month, day };
        BirthDate::from_day_number(date.day_number()) == date
    }

    #[quickcheck]
    fn iso_output_parses_back(raw: String) -> bool {
        match normalize_birth_date(&raw, TODAY) {
            Ok(date) => normalize_birth_date(&date.to_iso(), TODAY) == Ok(date),
            Err(_) => true,
        }
    }
}
