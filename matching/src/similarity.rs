//! Jaro-Winkler for the short ASCII strings comparisons see most (folded names,
//! addresses): the same arithmetic as `strsim::jaro_winkler`, without its heap
//! allocation per call. Anything longer or not ASCII goes to strsim. And a test for
//! one edit apart that needs no edit distance (strsim's Damerau-Levenshtein builds a
//! hash map per call, and scoring asks this of millions of pairs).

/// Longest input handled on the stack.
const MAX_LEN: usize = 64;

/// Jaro-Winkler similarity in `[0, 1]`, equal to `strsim::jaro_winkler(a, b)`.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if !a.is_ascii() || !b.is_ascii() || a.len() > MAX_LEN || b.len() > MAX_LEN {
        // Safe: both came from &str.
        return strsim::jaro_winkler(
            std::str::from_utf8(a).unwrap_or(""),
            std::str::from_utf8(b).unwrap_or(""),
        );
    }
    let sim = jaro(a, b);
    if sim > 0.7 {
        let prefix = a.iter().take(4).zip(b).take_while(|(x, y)| x == y).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

fn jaro(a: &[u8], b: &[u8]) -> f64 {
    let (a_len, b_len) = (a.len(), b.len());
    if a_len == 0 && b_len == 0 {
        return 1.0;
    }
    if a_len == 0 || b_len == 0 {
        return 0.0;
    }
    let search_range = (a_len.max(b_len) / 2).saturating_sub(1);
    let mut a_flags = [false; MAX_LEN];
    let mut b_flags = [false; MAX_LEN];
    let mut matches = 0usize;
    for (i, &a_byte) in a.iter().enumerate() {
        let low = i.saturating_sub(search_range);
        let high = b_len.min(i + search_range + 1);
        for j in low..high {
            if a_byte == b[j] && !b_flags[j] {
                a_flags[i] = true;
                b_flags[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0;
    for (i, &a_byte) in a.iter().enumerate() {
        if a_flags[i] {
            while !b_flags[j] {
                j += 1;
            }
            if a_byte != b[j] {
                transpositions += 1;
            }
            j += 1;
        }
    }
    transpositions /= 2;
    ((matches as f64 / a_len as f64)
        + (matches as f64 / b_len as f64)
        + ((matches - transpositions) as f64 / matches as f64))
        / 3.0
}

/// True when `a` and `b` are at most one edit apart: equal, or one character added,
/// dropped, changed, or two neighbours swapped. The same as
/// `strsim::damerau_levenshtein(a, b) <= 1`, in one pass.
pub fn within_one_edit(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        within_one_edit_of(a.as_bytes(), b.as_bytes())
    } else {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        within_one_edit_of(&a, &b)
    }
}

fn within_one_edit_of<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[common..], &b[common..]);
    match (a.len(), b.len()) {
        (0, 0) => true,
        (m, n) if m == n => {
            a[1..] == b[1..] || (m >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
        (m, n) if m + 1 == n => a == &b[1..],
        (m, n) if n + 1 == m => &a[1..] == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    #[test]
    fn known_values() {
        for (a, b) in [
            ("martha", "marhta"),
            ("dwayne", "duane"),
            ("dixon", "dicksonx"),
            ("", ""),
            ("a", ""),
            ("smith", "smith"),
        ] {
            assert_eq!(jaro_winkler(a, b), strsim::jaro_winkler(a, b), "{a} {b}");
        }
    }

    /// The same results as strsim, bit for bit, on short strings over a small alphabet
    /// (so they share letters) and on any strings.
    #[quickcheck]
    fn equals_strsim(a: Vec<u8>, b: Vec<u8>, any_a: String, any_b: String) -> bool {
        let small =
            |bytes: &[u8]| bytes.iter().map(|byte| char::from(b'a' + byte % 5)).collect::<String>();
        let (a, b) = (small(&a), small(&b));
        jaro_winkler(&a, &b) == strsim::jaro_winkler(&a, &b)
            && jaro_winkler(&any_a, &any_b) == strsim::jaro_winkler(&any_a, &any_b)
    }

    #[test]
    fn one_edit_examples() {
        for (a, b, expected) in [
            ("keith", "kdith", true),
            ("deborah", "deboarh", true),
            ("anna", "ana", true),
            ("ana", "anna", true),
            ("smith", "smith", true),
            ("", "a", true),
            ("ab", "ba", true),
            ("abc", "ca", false),
            ("deborah", "dbeoarh", false),
            ("zoë", "zoe", true),
        ] {
            assert_eq!(within_one_edit(a, b), expected, "{a} {b}");
        }
    }

    /// The same answer as strsim's Damerau-Levenshtein distance, on short strings over
    /// a small alphabet (where one edit is common) and on any strings.
    #[quickcheck]
    fn one_edit_equals_strsim(a: Vec<u8>, b: Vec<u8>, any_a: String, any_b: String) -> bool {
        let small =
            |bytes: &[u8]| bytes.iter().map(|byte| char::from(b'a' + byte % 3)).collect::<String>();
        let (a, b) = (small(&a[..a.len().min(6)]), small(&b[..b.len().min(6)]));
        within_one_edit(&a, &b) == (strsim::damerau_levenshtein(&a, &b) <= 1)
            && within_one_edit(&any_a, &any_b) == (strsim::damerau_levenshtein(&any_a, &any_b) <= 1)
    }
}
