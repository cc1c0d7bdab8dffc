//! Given and family names: folding, titles, generational suffixes, placeholders.

use super::fold;
use crate::record::{IssueKind, Sex};

const TITLES: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "doctor",
    "rev",
    "revd",
    "reverend",
    "prof",
    "professor",
    "sir",
    "dame",
    "lady",
    "lord",
    "master",
    "fr",
    "capt",
    "captain",
    "col",
    "major",
    "sgt",
    "hon",
    "cllr",
];

/// The titles that say a sex: `Mr`, `Master` (a boy), `Sir`, `Lord`; `Mrs`, `Miss`,
/// `Ms`, `Dame`, `Lady`. `Dr`, `Mx` and the rest say none.
fn sex_of_title(title: &str) -> Option<Sex> {
    match title {
        "mr" | "master" | "sir" | "lord" => Some(Sex::Male),
        "mrs" | "miss" | "ms" | "dame" | "lady" => Some(Sex::Female),
        _ => None,
    }
}

/// True when a value is titles only (`Mr`, `Mrs.`, `Rev Dr`): what a title column
/// holds when it holds a title.
pub fn is_title(raw: &str) -> bool {
    let cleaned = clean(raw);
    !cleaned.is_empty() && cleaned.split(' ').all(|token| TITLES.contains(&token))
}

/// The sex the titles at the start of a given name say (`Mrs Ann`, `Mr` alone), if
/// they say one; the first that does decides.
pub fn sex_of_titles(raw_given: &str) -> Option<Sex> {
    clean(raw_given).split(' ').take_while(|token| TITLES.contains(token)).find_map(sex_of_title)
}

/// Whole values (after folding) that say "no name known", beyond the words that say
/// any value is not known ([`super::says_not_known`]).
const PLACEHOLDERS: &[&str] = &[
    "test",
    "test patient",
    "testpatient",
    "patient",
    "xxxx",
    "zz",
    "zzz",
    "zzzz",
    "no name",
    "noname",
    "anonymous",
    "anon",
    "unnamed",
    "infant",
    "baby",
    "newborn",
    "baby boy",
    "baby girl",
    "male baby",
    "female baby",
    "twin",
    "twin 1",
    "twin 2",
    "twin a",
    "twin b",
];

/// Canonical generational suffix of a token, if it is one.
fn suffix(token: &str) -> Option<&'static str> {
    Some(match token {
        "jr" | "jnr" | "junior" => "jr",
        "sr" | "snr" | "senior" => "sr",
        "ii" => "ii",
        "iii" => "iii",
        "iv" => "iv",
        _ => return None,
    })
}

/// Folds a name and keeps letters, hyphens, apostrophes and single spaces. A note in
/// brackets ("SMITH (DECEASED)", "JONES (NEE BROWN)", "Ann [AKA Annie]") is a clerk's,
/// not part of the name, unless it is all there is or a generational suffix ("SMITH
/// (JNR)").
fn clean(raw: &str) -> String {
    let outside = raw.contains(['(', '[']).then(|| without_notes(raw));
    let raw = match &outside {
        Some(outside) if outside.chars().any(char::is_alphabetic) => outside.as_str(),
        _ => raw,
    };
    let folded = fold(&raw.replace(['\u{2019}', '\u{2018}', '`', '\u{00B4}'], "'"));
    let mut out = String::with_capacity(folded.len());
    for c in folded.chars() {
        let c = match c {
            'a'..='z' | '\'' | '-' => c,
            _ => ' ',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    // "smith - jones" and "smith- jones" are "smith-jones".
    let out = out.trim().replace(" -", "-").replace("- ", "-");
    out.split(' ')
        .map(|token| token.trim_matches(['-', '\'']))
        .filter(|token| !token.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text outside brackets, and after it any note in brackets that is a generational
/// suffix (`Jnr`, `Sr.`).
fn without_notes(raw: &str) -> String {
    replace_notes(raw, |note| {
        let word = note.trim().trim_end_matches('.').to_lowercase();
        suffix(&word).is_some().then(|| format!(" {word}"))
    })
    .0
}

/// Walks the notes in brackets (round or square; a bracket inside a note is part of
/// it): the text outside them is kept, each note is replaced by what `replace` makes of
/// it (nothing for None), and the note of a bracket left open, which runs to the end, is
/// returned apart. A closing bracket with none open is kept as text.
fn replace_notes(
    raw: &str,
    mut replace: impl FnMut(&str) -> Option<String>,
) -> (String, Option<String>) {
    let mut outside = String::with_capacity(raw.len());
    let (mut note, mut depth) = (String::new(), 0usize);
    for c in raw.chars() {
        match c {
            '(' | '[' if depth == 0 => {
                depth = 1;
                note.clear();
            }
            ')' | ']' if depth == 1 => {
                depth = 0;
                if let Some(text) = replace(&note) {
                    outside.push_str(&text);
                }
            }
            '(' | '[' => {
                depth += 1;
                note.push(c);
            }
            ')' | ']' if depth > 1 => {
                depth -= 1;
                note.push(c);
            }
            _ if depth == 0 => outside.push(c),
            _ => note.push(c),
        }
    }
    (outside, (depth > 0).then_some(note))
}

fn is_placeholder(cleaned: &str) -> bool {
    (!cleaned.is_empty() && super::says_not_known(cleaned))
        || PLACEHOLDERS.contains(&cleaned)
        || cleaned.starts_with("baby of ")
        || cleaned.starts_with("infant of ")
        || cleaned.starts_with("twin of ")
        || cleaned.starts_with("unknown ")
        || cleaned.starts_with("test ")
}

/// Splits off titles at the start and a generational suffix at the end.
fn strip(tokens: &mut Vec<&str>) -> Option<String> {
    while tokens.len() > 1 && TITLES.contains(&tokens[0]) {
        tokens.remove(0);
    }
    let mut found = None;
    while tokens.len() > 1 {
        match tokens.last().and_then(|last| suffix(last)) {
            Some(canonical) => {
                found.get_or_insert(canonical.to_owned());
                tokens.pop();
            }
            None => break,
        }
    }
    found
}

/// Normalises given names: folded, titles and a trailing suffix (`Jr`, `Snr`, `III`)
/// removed, split into names in order (`Mary Jane` gives `["mary", "jane"]`; a
/// hyphenated name stays one name). A placeholder (`UNKNOWN`, `BABY OF SMITH`, a title
/// alone) gives no names and [`IssueKind::Placeholder`].
pub fn normalize_given_names(raw: &str) -> (Vec<String>, Option<String>, Option<IssueKind>) {
    let cleaned = clean(raw);
    if cleaned.is_empty() {
        let issue = if raw.trim().is_empty() { None } else { Some(IssueKind::NoLetters) };
        return (Vec::new(), None, issue);
    }
    let mut tokens: Vec<&str> = cleaned.split(' ').collect();
    let found_suffix = strip(&mut tokens);
    let rest = tokens.join(" ");
    // A title alone ("Mr" where the given name should be) names no one.
    let title_alone = tokens.len() == 1 && TITLES.contains(&tokens[0]);
    if is_placeholder(&cleaned)
        || is_placeholder(&rest)
        || title_alone
        || tokens.first().is_some_and(|first| *first == "baby")
    {
        return (Vec::new(), None, Some(IssueKind::Placeholder));
    }
    (tokens.into_iter().map(str::to_owned).collect(), found_suffix, None)
}

/// Normalises a family name: folded, titles and a trailing suffix removed, hyphens and
/// apostrophes kept (`O'Brien-Smith` gives `o'brien-smith`). A placeholder gives None
/// and [`IssueKind::Placeholder`].
pub fn normalize_family_name(raw: &str) -> (Option<String>, Option<String>, Option<IssueKind>) {
    let cleaned = clean(raw);
    if cleaned.is_empty() {
        let issue = if raw.trim().is_empty() { None } else { Some(IssueKind::NoLetters) };
        return (None, None, issue);
    }
    let mut tokens: Vec<&str> = cleaned.split(' ').collect();
    let found_suffix = strip(&mut tokens);
    let family = tokens.join(" ");
    if is_placeholder(&cleaned) || is_placeholder(&family) {
        return (None, None, Some(IssueKind::Placeholder));
    }
    (Some(family), found_suffix, None)
}

/// Words that open a former family name in a note (`(née Brown)`, `(formerly
/// Brown)`, `(maiden name Brown)`) or in a previous-name column (`nee Brown`).
const FORMER_MARKERS: &[&str] = &["nee", "formerly", "previously", "maiden", "name", "born"];

/// A family name written with the family names the person had before, as raw text for
/// [`normalize_family_name`]: `Jones (née Brown)`, `Jones nee Brown` and `Jones
/// (formerly Brown)` give `Jones` and `["Brown"]`. Other notes in brackets stay for the
/// normaliser to drop.
pub fn split_former_family_names(raw: &str) -> (String, Vec<String>) {
    let mut former = Vec::new();
    let (mut current, unclosed) = replace_notes(raw, |note| match without_former_marker(note) {
        Some(name) => {
            former.push(name);
            None
        }
        None => Some(format!("({note})")),
    });
    if let Some(note) = unclosed {
        // A bracket left open is kept as written.
        current.push('(');
        current.push_str(&note);
    }
    // `Jones nee Brown` (not `Nee` alone, which may be a name).
    let words: Vec<&str> = current.split_whitespace().collect();
    if let Some(at) = words
        .iter()
        .position(|word| matches!(clean(word).as_str(), "nee" | "formerly" | "previously"))
        && at > 0
        && at + 1 < words.len()
    {
        former.insert(0, words[at + 1..].join(" "));
        current = words[..at].join(" ");
    }
    (current, former)
}

/// A previous family name without the words that say it is one (`née Brown` gives
/// `Brown`); None when nothing follows them, or when no such word opens it.
fn without_former_marker(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let markers = words.iter().take_while(|word| FORMER_MARKERS.contains(&clean(word).as_str()));
    let skip = markers.count();
    (skip > 0 && skip < words.len()).then(|| words[skip..].join(" "))
}

/// Normalises family names the person had before, as a previous-name column holds them
/// (`Brown`, `née Brown`, `Brown; Smith`, `Brown/Smith`): each as
/// [`normalize_family_name`] does, placeholders, initials and repeats left out (`N/A`
/// is a placeholder, not the names `n` and `a`). The issue is the first value's that
/// could not be used.
pub fn normalize_previous_family_names(raw: &str) -> (Vec<String>, Option<IssueKind>) {
    if is_placeholder(&clean(raw)) {
        return (Vec::new(), Some(IssueKind::Placeholder));
    }
    let (mut names, mut issue) = (Vec::new(), None);
    for part in raw.split([';', '/', ',']).filter(|part| !part.trim().is_empty()) {
        let part = without_former_marker(part).unwrap_or_else(|| part.to_owned());
        match normalize_family_name(&part) {
            (Some(name), _, _) if name.len() < 2 => issue = issue.or(Some(IssueKind::Placeholder)),
            (Some(name), _, _) if !names.contains(&name) => names.push(name),
            (Some(_), _, _) => {}
            (None, _, found) => issue = issue.or(found),
        }
    }
    (names, issue)
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    #[test]
    fn former_family_names_are_read_from_notes_and_their_own_field() {
        let split = |raw| split_former_family_names(raw);
        let owned = |current: &str, former: &[&str]| {
            (current.to_owned(), former.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(split("JONES (NEE BROWN)"), owned("JONES ", &["BROWN"]));
        assert_eq!(split("Jones (née Brown)"), owned("Jones ", &["Brown"]));
        assert_eq!(split("Jones [formerly Brown-Smith]"), owned("Jones ", &["Brown-Smith"]));
        assert_eq!(split("Jones (maiden name Brown)"), owned("Jones ", &["Brown"]));
        assert_eq!(split("Jones nee Brown"), owned("Jones", &["Brown"]));
        // Other notes stay for the family-name normaliser, which drops them.
        assert_eq!(split("SMITH (DECEASED)"), owned("SMITH (DECEASED)", &[]));
        assert_eq!(split("SMITH (JNR) (nee Jones)"), owned("SMITH (JNR) ", &["Jones"]));
        // Nee is an Irish family name: alone, or last, it is the name.
        assert_eq!(split("Nee"), owned("Nee", &[]));
        assert_eq!(split("Mary Nee"), owned("Mary Nee", &[]));
        assert_eq!(split("Jones (nee)"), owned("Jones (nee)", &[]));
        // A bracket left open still says it.
        assert_eq!(split("Jones (nee Brown"), owned("Jones", &["Brown"]));

        let previous = |raw| normalize_previous_family_names(raw);
        let names = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(previous("née BROWN"), (names(&["brown"]), None));
        assert_eq!(previous("Brown; O'Neill / brown"), (names(&["brown", "o'neill"]), None));
        assert_eq!(previous("unknown"), (names(&[]), Some(IssueKind::Placeholder)));
        assert_eq!(previous(" ; "), (names(&[]), None));
        assert_eq!(previous("N/A"), (names(&[]), Some(IssueKind::Placeholder)));
        assert_eq!(previous("Brown / X"), (names(&["brown"]), Some(IssueKind::Placeholder)));
    }

    #[track_caller]
    fn check_given(raw: &str, names: &[&str], suffix: Option<&str>, issue: Option<IssueKind>) {
        let (got, got_suffix, got_issue) = normalize_given_names(raw);
        assert_eq!(
            (
                got.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
                got_suffix.as_deref(),
                got_issue
            ),
            (names, suffix, issue),
            "input {raw:?}"
        );
    }

    #[track_caller]
    fn check_family(
        raw: &str,
        family: Option<&str>,
        suffix: Option<&str>,
        issue: Option<IssueKind>,
    ) {
        let (got, got_suffix, got_issue) = normalize_family_name(raw);
        assert_eq!(
            (got.as_deref(), got_suffix.as_deref(), got_issue),
            (family, suffix, issue),
            "input {raw:?}"
        );
    }

    #[test]
    fn given_names() {
        check_given("Mary Jane", &["mary", "jane"], None, None);
        check_given("  MR. John  ", &["john"], None, None);
        check_given("Dr Anne-Marie", &["anne-marie"], None, None);
        check_given("Zoë", &["zoe"], None, None);
        check_given("Łukasz", &["lukasz"], None, None);
        check_given("Siobhán", &["siobhan"], None, None);
        check_given("John Jnr", &["john"], Some("jr"), None);
        check_given("J.", &["j"], None, None);
        check_given("UNKNOWN", &[], None, Some(IssueKind::Placeholder));
        check_given("Baby of Smith", &[], None, Some(IssueKind::Placeholder));
        check_given("BABY BOY", &[], None, Some(IssueKind::Placeholder));
        check_given("123", &[], None, Some(IssueKind::NoLetters));
        // A title where the given name should be names no one.
        check_given("Mr", &[], None, Some(IssueKind::Placeholder));
        check_given("MRS.", &[], None, Some(IssueKind::Placeholder));
        check_given("John (Jnr)", &["john"], Some("jr"), None);
        check_given("", &[], None, None);
    }

    #[test]
    fn family_names() {
        check_family("O’Brien", Some("o'brien"), None, None);
        check_family("SMITH JR", Some("smith"), Some("jr"), None);
        check_family("Smith - Jones", Some("smith-jones"), None, None);
        check_family("van der Berg", Some("van der berg"), None, None);
        check_family("Wiśniewski", Some("wisniewski"), None, None);
        check_family("Babbage III", Some("babbage"), Some("iii"), None);
        check_family("SMITH (DECEASED)", Some("smith"), None, None);
        check_family("Jones (nee Brown)", Some("jones"), None, None);
        check_family("(Smith)", Some("smith"), None, None);
        // A suffix in brackets is still the suffix.
        check_family("SMITH (JNR)", Some("smith"), Some("jr"), None);
        check_family("Smith [Snr.] (deceased)", Some("smith"), Some("sr"), None);
        check_family("TEST PATIENT", None, None, Some(IssueKind::Placeholder));
        check_family("zzz", None, None, Some(IssueKind::Placeholder));
        check_family("Baby of Smith", None, None, Some(IssueKind::Placeholder));
        // A suffix alone is a name, not a suffix.
        check_family("Snr", Some("snr"), None, None);
    }

    #[quickcheck]
    fn given_names_are_idempotent(raw: String) -> bool {
        let (names, _, _) = normalize_given_names(&raw);
        let again = normalize_given_names(&names.join(" ")).0;
        again == names
    }

    #[quickcheck]
    fn family_names_are_idempotent(raw: String) -> bool {
        match normalize_family_name(&raw).0 {
            Some(family) => normalize_family_name(&family).0 == Some(family),
            None => true,
        }
    }

    /// `raw` with brackets of both kinds in about half its characters: nested, crossed,
    /// left open or closed with none open.
    fn bracketed(raw: &str) -> String {
        raw.chars()
            .map(|c| match u32::from(c) % 8 {
                0 => '(',
                1 => ')',
                2 => '[',
                3 => ']',
                _ => c,
            })
            .collect()
    }

    #[quickcheck]
    fn family_names_with_notes_in_brackets_are_idempotent(raw: String) -> bool {
        match normalize_family_name(&bracketed(&raw)).0 {
            Some(family) => normalize_family_name(&family).0 == Some(family),
            None => true,
        }
    }

    #[quickcheck]
    fn notes_that_name_no_former_family_name_lose_no_letters(raw: String) -> bool {
        let raw = bracketed(&raw);
        let (current, former) = split_former_family_names(&raw);
        let letters = |text: &str| text.chars().filter(|c| c.is_alphanumeric()).collect::<String>();
        !former.is_empty() || letters(&current) == letters(&raw)
    }
}
