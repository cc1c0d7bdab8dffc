//! The work behind `mpi train`, `mpi eval`, `mpi explain` and `mpi export`.

use std::collections::HashMap;
use std::io::Write;

use mpi_matching::{BlockingKey, ComparableRecord, Gamma, Model, Score, blocking_keys, compare};
use rayon::prelude::*;

use crate::engine::{ComparedPair, Linker, ReviewReason, compact_position, pair_caution};
use crate::eval::{EvalReport, TruthRow, evaluate, missed_pairs_by_cause, pair_completeness};
use crate::link::{LinkError, train_model, training_patterns};
use crate::output::RESULT_COLUMNS;
use crate::workspace::Workspace;

/// Candidate pairs of every record in the store among the records before it, as
/// linking saw them: (position, candidate positions).
///
/// # Errors
/// Never at present (the in-memory index cannot fail); kept for the store-backed path.
pub fn blocked_pairs(
    workspace: &Workspace,
    max_candidates: usize,
) -> Result<BlockedPairs, LinkError> {
    let linker = &workspace.linker;
    let keys: Vec<Vec<BlockingKey>> = linker.records.par_iter().map(blocking_keys).collect();
    let memory = mpi_index::MemoryIndex::build(
        linker.entries.iter().zip(&keys).map(|(entry, keys)| (entry.id, keys.as_slice())),
    );
    let sets = linker
        .entries
        .par_iter()
        .zip(&keys)
        .map(|(entry, keys)| {
            memory
                .candidates(keys, Some(entry.id), Some(entry.id), max_candidates)
                .into_iter()
                .filter_map(|candidate| linker.position(candidate.record_id))
                .collect()
        })
        .collect();
    Ok(BlockedPairs { sets, keys })
}

/// Candidates of every record among the records before it, with each record's keys.
#[derive(Debug)]
pub struct BlockedPairs {
    /// `sets[p]`: positions of the candidates of the record at position `p`.
    pub sets: Vec<Vec<usize>>,
    /// `keys[p]`: the blocking keys of the record at position `p`.
    pub keys: Vec<Vec<BlockingKey>>,
}

/// `mpi train`: EM on the store's own records; saves and returns a new model version.
///
/// # Errors
/// When there is too little data, or the store or index fails.
pub fn train(
    workspace: &mut Workspace,
    max_candidates: usize,
    seed: u64,
) -> Result<Model, LinkError> {
    let BlockedPairs { sets, keys } = blocked_pairs(workspace, max_candidates)?;
    let linker = &workspace.linker;
    let compared: Vec<Vec<ComparedPair>> = sets
        .par_iter()
        .enumerate()
        .map(|(position, candidates)| {
            let record = &linker.records[position];
            candidates
                .iter()
                .map(|&candidate| {
                    (compact_position(candidate), compare(record, &linker.records[candidate]))
                })
                .collect()
        })
        .collect();
    let groups: Vec<(usize, &[ComparedPair])> =
        compared.iter().enumerate().map(|(position, pairs)| (position, pairs.as_slice())).collect();
    let blocked = training_patterns(&groups, &|position| keys[position].clone());
    let records: Vec<&ComparableRecord> = linker.records.iter().collect();
    let n_pairs = compared.iter().map(|pairs| pairs.len() as u64).sum();
    let mut model = train_model(&records, &blocked, n_pairs, seed)?;
    workspace.store.save_model(&mut model)?;
    Ok(model)
}

/// Evaluation against a truth file, plus blocking figures.
#[derive(Debug)]
pub struct Evaluation {
    /// Linkage quality.
    pub report: EvalReport,
    /// Share of true pairs that were candidates.
    pub pair_completeness: f64,
    /// Candidate pairs per record.
    pub candidates_per_record: f64,
    /// Records in the truth file not found in the store.
    pub n_missing: usize,
    /// Records evaluated.
    pub n_evaluated: usize,
    /// Records in review (each alone in a provisional person).
    pub n_review: usize,
    /// The true pairs not linked, by the decision that split them off (see
    /// [`missed_pairs_by_cause`]): `new person`, `review: REASON`, `linked to another
    /// person`, `placed by a steward`.
    pub missed: Vec<(String, u64)>,
    /// The figures if every open review were accepted: each record in review joined
    /// the person of its best candidate record. What working the queue is worth.
    pub if_reviews_accepted: EvalReport,
    /// The true pairs blocking never made candidates, each as two (source system,
    /// local id), sorted: what a new kind of blocking key would have to find.
    pub unblocked: Vec<[(String, String); 2]>,
}

/// `mpi eval`: compares the store's persons with a truth file.
///
/// # Errors
/// When the index fails.
pub fn eval(
    workspace: &Workspace,
    truth: &[TruthRow],
    max_candidates: usize,
) -> Result<Evaluation, LinkError> {
    let linker = &workspace.linker;
    let by_key: HashMap<(&str, &str), usize> = linker
        .entries
        .iter()
        .enumerate()
        .map(|(position, entry)| ((&*entry.source_system, &*entry.local_id), position))
        .collect();
    let mut positions = Vec::new();
    let mut truth_labels = Vec::new();
    let mut hard_groups = Vec::new();
    let mut n_missing = 0;
    for row in truth {
        match by_key.get(&(row.source_system.as_str(), row.local_id.as_str())) {
            Some(&position) => {
                positions.push(position);
                truth_labels.push(row.person_id.as_str());
                hard_groups.push(row.hard_group.clone());
            }
            None => n_missing += 1,
        }
    }
    let predicted: Vec<u32> =
        positions.iter().map(|&position| linker.entries[position].person).collect();
    let report = evaluate(&predicted, &truth_labels, &hard_groups);
    let sets = blocked_pairs(workspace, max_candidates)?.sets;
    let n_pairs: usize = sets.iter().map(Vec::len).sum();
    let candidate_pairs: std::collections::HashSet<(usize, usize)> = sets
        .iter()
        .enumerate()
        .flat_map(|(position, candidates)| {
            candidates
                .iter()
                .map(move |&candidate| (position.min(candidate), position.max(candidate)))
        })
        .collect();
    let mut unblocked = Vec::new();
    let (completeness, _) = pair_completeness(&truth_labels, |i, j| {
        let (a, b) = (positions[i], positions[j]);
        let candidate = candidate_pairs.contains(&(a.min(b), a.max(b)));
        if !candidate {
            let key = |position: usize| {
                let entry = &linker.entries[position];
                (entry.source_system.to_string(), entry.local_id.to_string())
            };
            unblocked.push([key(a), key(b)]);
        }
        candidate
    });
    unblocked.sort_unstable();
    let n_review = positions
        .iter()
        .filter(|&&position| linker.entries[position].decision == crate::DecisionKind::Review)
        .count();

    // Each open review's reason and best candidate record, by the record in review
    // (all of them: no limit).
    let open = crate::store::ReviewFilter::status("open");
    let reviews: HashMap<u64, (String, Option<u64>)> = workspace
        .store
        .reviews(&open, usize::MAX >> 1, 0)?
        .into_iter()
        .map(|review| (review.record_id, (review.reason, review.best_record_id)))
        .collect();
    // Each record's cause, should it be split off its person, and its person if every
    // open review were accepted (a record in review joins its best candidate's).
    let (causes, accepted): (Vec<String>, Vec<u32>) = positions
        .iter()
        .zip(&predicted)
        .map(|(&position, &person)| {
            let entry = &linker.entries[position];
            match (entry.decision, reviews.get(&entry.id)) {
                _ if entry.manual => ("placed by a steward".to_owned(), person),
                (crate::DecisionKind::Review, Some((reason, best))) => {
                    let best = best.and_then(|best| linker.position(best));
                    let accepted = best.map_or(person, |best| linker.entries[best].person);
                    (format!("review: {reason}"), accepted)
                }
                (crate::DecisionKind::Review, None) => ("review".to_owned(), person),
                (crate::DecisionKind::New, _) => ("new person".to_owned(), person),
                (crate::DecisionKind::Linked, _) => ("linked to another person".to_owned(), person),
            }
        })
        .unzip();
    let order: Vec<u64> = positions.iter().map(|&position| linker.entries[position].id).collect();
    let missed = missed_pairs_by_cause(&predicted, &truth_labels, &order, &causes);
    let if_reviews_accepted = evaluate(&accepted, &truth_labels, &hard_groups);
    Ok(Evaluation {
        report,
        pair_completeness: completeness,
        candidates_per_record: n_pairs as f64 / linker.entries.len().max(1) as f64,
        n_missing,
        n_evaluated: positions.len(),
        n_review,
        missed,
        if_reviews_accepted,
        unblocked,
    })
}

/// `mpi explain`: the comparison and score of two stored records, and the rule that
/// keeps them from an automatic link whatever they score, if one does (the engine's
/// [`pair_caution`], as it applies to a record's best match).
pub fn explain(
    linker: &Linker,
    a: usize,
    b: usize,
    model: &Model,
) -> (Gamma, Score, Option<ReviewReason>) {
    let (record_a, record_b) = (&linker.records[a], &linker.records[b]);
    let gamma = compare(record_a, record_b);
    let caution = pair_caution(&gamma, record_a, record_b, model, model.thresholds);
    (gamma, model.score(&gamma, record_a, record_b), caution)
}

/// The two records' values side by side, field by field, as they were compared (after
/// normalisation), headed by the records' names (`SOURCE:ID`). For a steward at the
/// terminal: it shows personal data, so it is never logged.
pub fn render_values(
    labels: (&str, &str),
    a: &mpi_matching::NormalizedRecord,
    b: &mpi_matching::NormalizedRecord,
) -> String {
    use mpi_matching::CompField;
    fn value(record: &mpi_matching::NormalizedRecord, field: CompField) -> String {
        let text = |value: &Option<Box<str>>| value.as_deref().unwrap_or("").to_owned();
        match field {
            CompField::NhsNumber => text(&record.nhs_number),
            CompField::GivenName => record.given_names.join(" "),
            CompField::FamilyName => {
                let family = match (&record.family_name, &record.name_suffix) {
                    (Some(family), Some(suffix)) => format!("{family} {suffix}"),
                    (family, _) => text(family),
                };
                match record.previous_family_names.join(", ") {
                    former if former.is_empty() => family,
                    former => format!("{family} (previously {former})"),
                }
            }
            CompField::DateOfBirth => record.date_of_birth.map_or(String::new(), |d| d.to_iso()),
            CompField::Sex => {
                record.sex.map_or(String::new(), |sex| format!("{sex:?}").to_lowercase())
            }
            CompField::Identifier => record
                .identifiers
                .iter()
                .map(|identifier| format!("{}:{}", identifier.system, identifier.value))
                .collect::<Vec<_>>()
                .join(", "),
            CompField::Postcode => {
                record.postcode.as_ref().map_or(String::new(), |postcode| postcode.code.clone())
            }
            CompField::Address => record.address.as_ref().map_or(String::new(), |address| {
                match &address.house_number {
                    Some(number) => format!("{} (number {number})", address.text),
                    None => address.text.to_string(),
                }
            }),
            CompField::Phone => text(&record.phone),
            CompField::Email => text(&record.email),
        }
    }
    let rows = CompField::ALL.map(|field| (field.as_str(), value(a, field), value(b, field)));
    let width = rows.iter().map(|(_, value, _)| value.chars().count()).max().unwrap_or(0);
    let width = width.max(labels.0.len());
    let shown = |value: &str| if value.is_empty() { "-".to_owned() } else { value.to_owned() };
    let mut out = format!("{:<16} {:<width$}  {}\n", "field", labels.0, labels.1);
    for (field, value_a, value_b) in &rows {
        out.push_str(&format!("{field:<16} {:<width$}  {}\n", shown(value_a), shown(value_b)));
    }
    out
}

/// Renders an explanation as a person reads it, with the rule that holds the pair for
/// a steward, if one does.
pub fn render_explanation(score: &Score, model: &Model, caution: Option<ReviewReason>) -> String {
    let mut text = String::new();
    let prior_kind =
        if score.same_household { "same-household pairs" } else { "records living apart" };
    text.push_str(&format!("{:<16} {:<28} {:>8}\n", "field", "comparison", "weight"));
    text.push_str(&format!(
        "{:<16} {:<28} {:>+8.2}\n",
        "prior",
        format!("prior odds, {prior_kind}"),
        score.prior
    ));
    for contribution in &score.contributions {
        let mut level = contribution.level.replace('_', " ");
        if contribution.tf_adjusted {
            level.push_str(" (adjusted for frequency)");
        }
        if contribution.household {
            level.push_str(" (household)");
        }
        text.push_str(&format!(
            "{:<16} {:<28} {:>+8.2}\n",
            contribution.field, level, contribution.weight
        ));
    }
    text.push_str(&format!(
        "{:<16} {:<28} {:>+8.2}\n",
        "total", "match weight (bits)", score.weight
    ));
    text.push_str(&format!(
        "match probability {:.6} (model version {})\n",
        score.probability, model.version
    ));
    if score.same_household {
        text.push_str(
            "The records share a household: address, postcode, phone and email count once, through the\n\
             household prior, and names, date of birth and NHS number are weighed against other members\n\
             of one household.\n",
        );
        let personal = score.contributions.iter().filter(|contribution| {
            !contribution.household
                && contribution.weight != 0.0
                && ["phone", "email"].contains(&&*contribution.field)
        });
        for contribution in personal {
            text.push_str(&format!(
                "The {} counts all the same: training found that two people at one home almost never\n\
                 share one in this store's data, so it tells this person from a relative.\n",
                if contribution.field == "phone" { "mobile number" } else { "email address" }
            ));
        }
    } else {
        text.push_str(
            "The records do not share a household: the prior of two such records already allows for a\n\
             move, so a different address or postcode weighs little more, and names, date of birth\n\
             and NHS number decide.\n",
        );
    }
    let crowded_date = |c: &mpi_matching::Contribution| c.field == "date_of_birth" && c.tf_adjusted;
    if score.contributions.iter().any(crowded_date) {
        text.push_str(
            "The birth date is a crowded one, held by far more records than a date or a day\n\
             usually is (as the 1 January given when a birth date is not known): it is no evidence.\n",
        );
    }
    let thresholds = model.thresholds;
    let verdict = if score.probability >= thresholds.upper {
        match caution {
            Some(reason) => format!(
                "at or above the upper threshold, but never linked without a\nsteward: {}",
                reason.as_str()
            ),
            None => "at or above the upper threshold: a link".to_owned(),
        }
    } else if score.probability >= thresholds.lower {
        "between the thresholds: a review".to_owned()
    } else {
        "below the lower threshold: different people".to_owned()
    };
    text.push_str(&format!(
        "With thresholds {} / {}: {verdict}.\n",
        thresholds.lower, thresholds.upper
    ));
    text
}

/// `mpi export`: every record in the store with its person, in the results format.
///
/// # Errors
/// When writing fails.
pub fn export<W: Write>(linker: &Linker, out: W) -> csv::Result<()> {
    let nhs_numbers = linker.person_nhs_numbers();
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(RESULT_COLUMNS)?;
    for entry in &linker.entries {
        let person = entry.person as usize;
        writer.write_record([
            &*entry.source_system,
            &*entry.local_id,
            &linker.persons[person].id.to_string(),
            entry.decision.as_str(),
            &entry.probability.map(|p| format!("{p:.6}")).unwrap_or_default(),
            nhs_numbers[person].unwrap_or(""),
        ])?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(same_household: bool) -> Score {
        Score {
            weight: 3.5,
            probability: 0.92,
            prior: -18.5,
            same_household,
            contributions: Vec::new(),
        }
    }

    #[test]
    fn an_explanation_says_how_the_home_was_counted() {
        let model = mpi_matching::default_model();
        let apart = render_explanation(&score(false), &model, None);
        assert!(apart.contains("prior odds, records living apart"), "{apart}");
        assert!(apart.contains("already allows for a\nmove"), "{apart}");
        let together = render_explanation(&score(true), &model, None);
        assert!(together.contains("prior odds, same-household pairs"), "{together}");
        assert!(together.contains("count once, through the"), "{together}");
        assert!(together.contains("between the thresholds: a review"), "{together}");
        assert!(!together.contains("mobile number counts"), "{together}");
        let mobile = mpi_matching::Contribution {
            field: "phone".into(),
            level: "exact_mobile".into(),
            weight: 10.5,
            tf_adjusted: false,
            household: false,
        };
        let personal = Score { contributions: vec![mobile], ..score(true) };
        let text = render_explanation(&personal, &model, None);
        assert!(text.contains("The mobile number counts all the same"), "{text}");
    }

    #[test]
    fn an_explanation_says_which_rule_holds_a_sure_pair_for_a_steward() {
        let model = mpi_matching::default_model();
        let sure = Score { probability: 0.999, ..score(true) };
        let linked = render_explanation(&sure, &model, None);
        assert!(linked.contains("at or above the upper threshold: a link"), "{linked}");
        let held = render_explanation(&sure, &model, Some(ReviewReason::PossibleTwins));
        assert!(held.contains("but never linked without a\nsteward"), "{held}");
        assert!(held.contains(ReviewReason::PossibleTwins.as_str()), "{held}");
        assert!(!held.contains(": a link."), "{held}");
    }
}
