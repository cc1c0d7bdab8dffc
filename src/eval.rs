//! Linkage evaluation against ground truth: pairwise and B-cubed precision and
//! recall, false merges, merged twins and Jr/Sr, and blocking pair completeness.
//!
//! Pairwise counts come from cluster sizes (a cluster of n records holds n(n-1)/2
//! pairs), never from enumerating pairs, so a million records evaluate in well under a
//! second. Precision and recall are 1 when their denominators are 0.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde::Deserialize;

/// Linkage quality figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalReport {
    /// Records evaluated.
    pub n_records: usize,
    /// Pairs of records that are the same person.
    pub n_true_pairs: u64,
    /// Pairs of records put in one predicted person.
    pub n_predicted_pairs: u64,
    /// Pairs both true and predicted.
    pub n_true_positive_pairs: u64,
    /// Pairwise precision.
    pub precision: f64,
    /// Pairwise recall.
    pub recall: f64,
    /// Pairwise F1.
    pub f1: f64,
    /// B-cubed precision (mean over records).
    pub bcubed_precision: f64,
    /// B-cubed recall (mean over records).
    pub bcubed_recall: f64,
    /// Predicted persons holding records of more than one true person.
    pub false_merges: usize,
    /// Hard groups (twins, Jr/Sr) whose persons share a predicted person.
    pub hard_pairs_merged: usize,
    /// Hard groups with at least two true persons present.
    pub n_hard_groups: usize,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 { 1.0 } else { numerator as f64 / denominator as f64 }
}

/// Evaluates predicted cluster labels against true ones, record by record
/// (`predicted[i]`, `truth[i]` and `hard_group[i]` describe record i).
///
/// # Panics
/// When the slices differ in length.
pub fn evaluate<P: Eq + Hash, T: Eq + Hash>(
    predicted: &[P],
    truth: &[T],
    hard_group: &[Option<String>],
) -> EvalReport {
    assert_eq!(predicted.len(), truth.len(), "one predicted label per true label");
    assert_eq!(hard_group.len(), truth.len(), "one hard group entry per record");
    let n = truth.len();
    let mut predicted_sizes: HashMap<&P, u64> = HashMap::new();
    let mut true_sizes: HashMap<&T, u64> = HashMap::new();
    let mut joint_sizes: HashMap<(&P, &T), u64> = HashMap::new();
    for (p, t) in predicted.iter().zip(truth) {
        *predicted_sizes.entry(p).or_default() += 1;
        *true_sizes.entry(t).or_default() += 1;
        *joint_sizes.entry((p, t)).or_default() += 1;
    }
    let n_predicted_pairs: u64 = predicted_sizes.values().map(|&size| pairs(size)).sum();
    let n_true_pairs: u64 = true_sizes.values().map(|&size| pairs(size)).sum();
    let n_true_positive_pairs: u64 = joint_sizes.values().map(|&size| pairs(size)).sum();
    let precision = ratio(n_true_positive_pairs, n_predicted_pairs);
    let recall = ratio(n_true_positive_pairs, n_true_pairs);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };

    // B-cubed: for each record, the share of its predicted cluster that is truly its
    // person (precision) and of its true person that it was clustered with (recall).
    let (mut bcubed_precision, mut bcubed_recall) = (0.0, 0.0);
    for (p, t) in predicted.iter().zip(truth) {
        let joint = joint_sizes[&(p, t)] as f64;
        bcubed_precision += joint / predicted_sizes[p] as f64;
        bcubed_recall += joint / true_sizes[t] as f64;
    }
    if n > 0 {
        bcubed_precision /= n as f64;
        bcubed_recall /= n as f64;
    } else {
        (bcubed_precision, bcubed_recall) = (1.0, 1.0);
    }

    let mut persons_per_cluster: HashMap<&P, usize> = HashMap::new();
    for (p, _) in joint_sizes.keys() {
        *persons_per_cluster.entry(*p).or_default() += 1;
    }
    let false_merges = persons_per_cluster.values().filter(|&&count| count > 1).count();

    // Hard groups: the true persons in each group, and whether two of them share a cluster.
    let mut group_members: HashMap<&str, HashMap<&T, HashSet<&P>>> = HashMap::new();
    for ((p, t), group) in predicted.iter().zip(truth).zip(hard_group) {
        if let Some(group) = group.as_deref() {
            group_members.entry(group).or_default().entry(t).or_default().insert(p);
        }
    }
    let mut n_hard_groups = 0;
    let mut hard_pairs_merged = 0;
    for persons in group_members.values() {
        if persons.len() < 2 {
            continue;
        }
        n_hard_groups += 1;
        let mut seen: HashSet<&P> = HashSet::new();
        let merged =
            persons.values().any(|clusters| clusters.iter().any(|cluster| !seen.insert(*cluster)));
        if merged {
            hard_pairs_merged += 1;
        }
    }
    EvalReport {
        n_records: n,
        n_true_pairs,
        n_predicted_pairs,
        n_true_positive_pairs,
        precision,
        recall,
        f1,
        bcubed_precision,
        bcubed_recall,
        false_merges,
        hard_pairs_merged,
        n_hard_groups,
    }
}

/// The true pairs a linkage missed, each put down to a cause. Where a true person is
/// split over several predicted persons, its largest piece (the one that started first,
/// on a tie) stands for the person as linked; every other piece's pairs with the pieces
/// before it are put down to `cause` of that piece's first record (the least `order`):
/// the decision that set it apart. Most pairs first (ties by cause); the counts add up
/// to the true pairs not predicted.
///
/// # Panics
/// When the slices differ in length.
pub fn missed_pairs_by_cause<P: Eq + Hash, T: Eq + Hash, C: Clone + Eq + Hash + Ord>(
    predicted: &[P],
    truth: &[T],
    order: &[u64],
    cause: &[C],
) -> Vec<(C, u64)> {
    assert_eq!(predicted.len(), truth.len(), "one predicted label per true label");
    assert_eq!(order.len(), truth.len(), "one order per record");
    assert_eq!(cause.len(), truth.len(), "one cause per record");
    let mut persons: HashMap<&T, Vec<usize>> = HashMap::new();
    for (record, label) in truth.iter().enumerate() {
        persons.entry(label).or_default().push(record);
    }
    let mut missed: HashMap<&C, u64> = HashMap::new();
    for records in persons.values().filter(|records| records.len() > 1) {
        // Each piece: its size and its first record.
        let mut pieces: HashMap<&P, (u64, usize)> = HashMap::new();
        for &record in records {
            let piece = pieces.entry(&predicted[record]).or_insert((0, record));
            piece.0 += 1;
            if order[record] < order[piece.1] {
                piece.1 = record;
            }
        }
        if pieces.len() < 2 {
            continue;
        }
        let mut pieces: Vec<(u64, usize)> = pieces.into_values().collect();
        pieces.sort_unstable_by_key(|&(size, first)| (std::cmp::Reverse(size), order[first]));
        let mut before = pieces[0].0;
        for &(size, first) in &pieces[1..] {
            *missed.entry(&cause[first]).or_default() += size * before;
            before += size;
        }
    }
    let mut missed: Vec<(C, u64)> =
        missed.into_iter().map(|(cause, pairs)| (cause.clone(), pairs)).collect();
    missed.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    missed
}

/// Blocking pair completeness: the share of true pairs (records with the same truth
/// label, `i < j`) for which `is_candidate(i, j)` holds, and the number of true pairs.
/// Only true pairs are enumerated.
pub fn pair_completeness<T: Eq + Hash>(
    truth: &[T],
    mut is_candidate: impl FnMut(usize, usize) -> bool,
) -> (f64, u64) {
    let mut clusters: HashMap<&T, Vec<usize>> = HashMap::new();
    for (record, label) in truth.iter().enumerate() {
        clusters.entry(label).or_default().push(record);
    }
    let (mut found, mut total) = (0u64, 0u64);
    for members in clusters.values() {
        for (index, &i) in members.iter().enumerate() {
            for &j in &members[index + 1..] {
                total += 1;
                if is_candidate(i, j) {
                    found += 1;
                }
            }
        }
    }
    (ratio(found, total), total)
}

/// One row of a truth file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TruthRow {
    /// Source system.
    pub source_system: String,
    /// Local id.
    pub local_id: String,
    /// True person label.
    pub person_id: String,
    /// Twins / Jr-Sr group label, if any.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub hard_group: Option<String>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value: Option<String> = Option::deserialize(deserializer)?;
    Ok(value.filter(|text| !text.trim().is_empty()))
}

/// Reads a truth file: header `source_system,local_id,person_id[,hard_group]`, any
/// column order, extra columns ignored.
///
/// # Errors
/// When the CSV cannot be read or a required column is missing.
pub fn read_truth<R: std::io::Read>(reader: R) -> Result<Vec<TruthRow>, TruthError> {
    let mut reader = csv::Reader::from_reader(reader);
    let headers = reader.headers()?.clone();
    for column in ["source_system", "local_id", "person_id"] {
        if !headers.iter().any(|header| header == column) {
            return Err(TruthError::MissingColumn(column));
        }
    }
    let rows: Vec<TruthRow> = reader.deserialize().collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Err(TruthError::Empty);
    }
    Ok(rows)
}

/// Why a truth file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TruthError {
    /// A required column is missing.
    #[error(
        "it has no `{0}` column: a truth file has source_system, local_id and person_id columns"
    )]
    MissingColumn(&'static str),
    /// The file has a header and no rows.
    #[error("it has no rows: a truth file lists records with their true person")]
    Empty,
    /// The CSV cannot be read.
    #[error(transparent)]
    Csv(#[from] csv::Error),
}

/// Evaluates a results file against truth: any CSV with `source_system`, `local_id`
/// and `person_id` columns (the `mpi link` and `mpi export` format, or another
/// linker's output written that way), so a file is measured as the store is.
/// Returns the report and the number of truth rows without a person in the file (absent,
/// or with an empty `person_id`, as a rejected row has). A record listed twice counts as
/// its last row, as re-sending it updates it.
///
/// # Errors
/// When the CSV cannot be read or a required column is missing.
pub fn evaluate_results<R: std::io::Read>(
    results: R,
    truth: &[TruthRow],
) -> Result<(EvalReport, usize), csv::Error> {
    #[derive(Deserialize)]
    struct ResultRow {
        source_system: String,
        local_id: String,
        person_id: String,
    }
    let mut persons: HashMap<(String, String), String> = HashMap::new();
    for row in csv::Reader::from_reader(results).deserialize() {
        let row: ResultRow = row?;
        let key = (row.source_system, row.local_id);
        if row.person_id.trim().is_empty() {
            persons.remove(&key);
        } else {
            persons.insert(key, row.person_id);
        }
    }
    let (mut predicted, mut truth_labels, mut hard_groups) = (Vec::new(), Vec::new(), Vec::new());
    for row in truth {
        if let Some(person) = persons.get(&(row.source_system.clone(), row.local_id.clone())) {
            predicted.push(person.as_str());
            truth_labels.push(row.person_id.as_str());
            hard_groups.push(row.hard_group.clone());
        }
    }
    let n_missing = truth.len() - predicted.len();
    Ok((evaluate(&predicted, &truth_labels, &hard_groups), n_missing))
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    use super::*;

    fn none(n: usize) -> Vec<Option<String>> {
        vec![None; n]
    }

    fn truth_rows(rows: &[(&str, &str, &str, Option<&str>)]) -> Vec<TruthRow> {
        rows.iter()
            .map(|&(source_system, local_id, person_id, hard_group)| TruthRow {
                source_system: source_system.into(),
                local_id: local_id.into(),
                person_id: person_id.into(),
                hard_group: hard_group.map(Into::into),
            })
            .collect()
    }

    #[test]
    fn a_results_file_is_measured_against_truth_by_source_and_local_id() {
        // Truth: a1, b1 one person; twins t1, t2 in hard group h. The results merge the
        // twins, keep a1 and b1 apart, reject x1 (empty person id), and list b1 twice
        // (the later row counts). Extra columns and column order do not matter.
        let truth = truth_rows(&[
            ("a", "1", "P1", None),
            ("b", "1", "P1", None),
            ("t", "1", "P2", Some("h")),
            ("t", "2", "P3", Some("h")),
            ("x", "1", "P4", None),
            ("y", "1", "P5", None),
        ]);
        let results = "decision,local_id,source_system,person_id\n\
                       linked,1,a,Q1\n\
                       new,1,b,Q1\n\
                       new,1,b,Q2\n\
                       linked,1,t,Q3\n\
                       linked,2,t,Q3\n\
                       rejected,1,x,\n";
        let (report, n_missing) = evaluate_results(results.as_bytes(), &truth).unwrap();
        assert_eq!(n_missing, 2, "x:1 was rejected and y:1 is absent");
        assert_eq!(report.n_records, 4);
        assert_eq!((report.n_true_pairs, report.n_predicted_pairs), (1, 1));
        assert_eq!(report.n_true_positive_pairs, 0);
        assert_eq!(
            (report.false_merges, report.hard_pairs_merged, report.n_hard_groups),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_results_file_without_a_person_id_column_is_an_error() {
        let truth = truth_rows(&[("a", "1", "P1", None)]);
        let error = evaluate_results("source_system,local_id\na,1\n".as_bytes(), &truth);
        assert!(error.unwrap_err().to_string().contains("person_id"));
    }

    #[test]
    fn hand_computed_case() {
        // Truth: {0,1,2} {3,4}. Predicted: {0,1} {2,3} {4}.
        let truth = [1, 1, 1, 2, 2];
        let predicted = ['a', 'a', 'b', 'b', 'c'];
        let report = evaluate(&predicted, &truth, &none(5));
        assert_eq!(
            (report.n_true_pairs, report.n_predicted_pairs, report.n_true_positive_pairs),
            (4, 2, 1)
        );
        assert_eq!(report.precision, 0.5);
        assert_eq!(report.recall, 0.25);
        assert!((report.f1 - 1.0 / 3.0).abs() < 1e-12);
        // B-cubed precision: records 0,1: 1; 2: 1/2; 3: 1/2; 4: 1 -> 4/5.
        assert!((report.bcubed_precision - 0.8).abs() < 1e-12);
        // B-cubed recall: 0,1: 2/3; 2: 1/3; 3: 1/2; 4: 1/2 -> (2/3+2/3+1/3+1/2+1/2)/5.
        assert!((report.bcubed_recall - (8.0 / 3.0) / 5.0).abs() < 1e-12);
        assert_eq!(report.false_merges, 1);
    }

    #[test]
    fn singletons_and_one_big_cluster() {
        let truth = [1, 1, 2, 3];
        let singletons = evaluate(&[0, 1, 2, 3], &truth, &none(4));
        assert_eq!(
            (singletons.precision, singletons.recall, singletons.false_merges),
            (1.0, 0.0, 0)
        );
        let everything = evaluate(&[0, 0, 0, 0], &truth, &none(4));
        assert_eq!((everything.recall, everything.false_merges), (1.0, 1));
        assert!((everything.precision - 1.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn merged_twins_are_counted() {
        let truth = ["t1", "t1", "t2", "j1", "j2"];
        let hard = [Some("twin-1"), Some("twin-1"), Some("twin-1"), Some("jrsr-1"), Some("jrsr-1")]
            .map(|g| g.map(str::to_owned));
        let report = evaluate(&[1, 1, 1, 2, 3], &truth, &hard);
        assert_eq!((report.n_hard_groups, report.hard_pairs_merged), (2, 1));
    }

    #[test]
    fn missed_pairs_go_to_the_first_record_of_each_piece_split_off() {
        // Person 1 (records 0-5) split 3 / 2 / 1; person 2 (6, 7) split 1 / 1.
        let truth = [1, 1, 1, 1, 1, 1, 2, 2];
        let predicted = ['a', 'a', 'a', 'b', 'b', 'c', 'd', 'e'];
        let order = [1, 2, 3, 5, 4, 6, 8, 7];
        let cause = ["linked", "linked", "linked", "new", "review", "review", "new", "new"];
        let missed = missed_pairs_by_cause(&predicted, &truth, &order, &cause);
        // Piece b (first record 4, a review) misses 2 x 3 pairs, piece c (a review) 1 x 5;
        // for person 2 the piece that started first (record 7) stands, record 6's
        // piece misses 1.
        assert_eq!(missed, vec![("review", 11), ("new", 1)]);
        let report = evaluate(&predicted, &truth, &none(8));
        assert_eq!(report.n_true_pairs - report.n_true_positive_pairs, 12);
    }

    #[quickcheck]
    fn missed_pairs_add_up_to_the_pairs_not_predicted(labels: Vec<(u8, u8, u8)>) -> bool {
        let labels: Vec<(u8, u8, u8)> = labels.into_iter().take(60).collect();
        let predicted: Vec<u8> = labels.iter().map(|l| l.0 % 6).collect();
        let truth: Vec<u8> = labels.iter().map(|l| l.1 % 6).collect();
        let order: Vec<u64> = (0..labels.len() as u64).collect();
        let cause: Vec<u8> = labels.iter().map(|l| l.2 % 3).collect();
        let report = evaluate(&predicted, &truth, &none(labels.len()));
        let missed = missed_pairs_by_cause(&predicted, &truth, &order, &cause);
        missed.iter().map(|(_, pairs)| pairs).sum::<u64>()
            == report.n_true_pairs - report.n_true_positive_pairs
    }

    #[test]
    fn pair_completeness_counts_true_pairs_only() {
        let truth = [1, 1, 1, 2];
        let (share, total) = pair_completeness(&truth, |i, j| (i, j) != (0, 2));
        assert_eq!(total, 3);
        assert!((share - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn reads_truth_files() {
        let rows =
            read_truth("person_id,local_id,source_system,extra\n7,A1,gp,x\n".as_bytes()).unwrap();
        assert_eq!(rows[0].person_id, "7");
        assert_eq!(rows[0].hard_group, None);
        let rows = read_truth(
            "source_system,local_id,person_id,hard_group\ngp,A1,7,twin-1\ngp,A2,8,\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(rows[0].hard_group.as_deref(), Some("twin-1"));
        assert_eq!(rows[1].hard_group, None);
        // A results file's input (no person_id) or a header alone is no truth file.
        let error = read_truth("local_id,given_name\nA1,Ada\n".as_bytes()).unwrap_err();
        assert!(error.to_string().contains("no `source_system` column"), "{error}");
        let error = read_truth("source_system,local_id,person_id\n".as_bytes()).unwrap_err();
        assert!(matches!(error, TruthError::Empty), "{error}");
    }

    #[quickcheck]
    fn pairwise_counts_match_brute_force(labels: Vec<(u8, u8)>) -> bool {
        let labels: Vec<(u8, u8)> =
            labels.into_iter().take(60).map(|(p, t)| (p % 5, t % 5)).collect();
        let predicted: Vec<u8> = labels.iter().map(|l| l.0).collect();
        let truth: Vec<u8> = labels.iter().map(|l| l.1).collect();
        let report = evaluate(&predicted, &truth, &none(labels.len()));
        let (mut tp, mut pp, mut tt) = (0, 0, 0);
        for i in 0..labels.len() {
            for j in i + 1..labels.len() {
                let same_predicted = predicted[i] == predicted[j];
                let same_true = truth[i] == truth[j];
                pp += u64::from(same_predicted);
                tt += u64::from(same_true);
                tp += u64::from(same_predicted && same_true);
            }
        }
        (report.n_true_positive_pairs, report.n_predicted_pairs, report.n_true_pairs)
            == (tp, pp, tt)
    }

    #[quickcheck]
    fn truth_against_itself_is_perfect(truth: Vec<u8>) -> bool {
        let report = evaluate(&truth, &truth, &none(truth.len()));
        report.precision == 1.0
            && report.recall == 1.0
            && report.f1 == 1.0
            && (report.bcubed_precision - 1.0).abs() < 1e-12
            && (report.bcubed_recall - 1.0).abs() < 1e-12
            && report.false_merges == 0
    }
}
