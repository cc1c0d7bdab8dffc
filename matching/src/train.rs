//! Unsupervised training: u from random pairs, m and the priors by
//! expectation-maximisation over blocked pairs.
//!
//! Training works on comparison-vector *patterns* with counts, so EM over ten
//! million blocked pairs costs no more than over the few thousand distinct patterns
//! they make.
//!
//! 1. `u` per level is the level's share among random record pairs (almost all of
//!    which are different people), with add-one-half smoothing; where the caller
//!    counted how many pairs of all records agree on the birth date or the NHS number
//!    ([`Agreement`]), that count less the pairs EM takes for matches gives the
//!    `exact` level instead.
//! 2. EM over blocked pairs estimates `m` and `lambda` from the fields that tell
//!    people apart (NHS number, given name, date of birth, sex, identifiers), with `u`
//!    fixed. The family name and the household fields (address, postcode, phone,
//!    email) are left out of this step because they agree together for relatives,
//!    which would pull relatives into the match class. Their `m` is read off the
//!    pairs that share an NHS number (one person's records, whatever else they say)
//!    where there are 1,000 or more, else off the final posteriors. A household field
//!    weighs only pairs outside a household (inside one it counts once, through the
//!    household prior), so its `m` is read off those pairs alone: a different
//!    postcode is what nearly every match outside a household has, and the prior of
//!    such a pair already holds the move. The prior of two random records outside a
//!    household is the matches outside households over all pairs: counted from the
//!    pairs that share an NHS number, over the share of pairs that both have one,
//!    where there are 1,000 or more such pairs; else from the posteriors.
//! 3. A second EM over the blocked pairs that share a household, with `m` fixed,
//!    estimates `u_household` (agreement among different members of one household)
//!    and `household_lambda`. `u_household` is shrunk towards `u` by a pseudo-count,
//!    so a data set with few households falls back to the ordinary model.

use std::collections::HashMap;

use crate::compare::{CompField, GIVEN_ONE_NAME, Gamma, N_FIELDS};
use crate::error::MatchError;
use crate::model::{Model, PersonalContact, TrainingInfo};

/// Comparison patterns with how many pairs had each.
pub type PatternCounts = HashMap<u64, u64>;

/// Training settings. One configuration serves every data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    /// Maximum EM iterations per stage.
    pub max_iterations: u32,
    /// Stop when no parameter moves more than this.
    pub tolerance: f64,
    /// Pseudo-count pulling `u_household` towards `u`.
    pub household_pseudo_count: f64,
    /// Fewest blocked pairs EM will train on.
    pub min_blocked_pairs: u64,
    /// Seed used by the caller's random-pair sampler (recorded in the model).
    pub seed: u64,
    /// Records the pairs were drawn from (for the prior of two random records).
    pub n_records: u64,
    /// Blocked pairs in all, when `blocked` is a sample of them.
    pub n_blocked_pairs: u64,
    /// The pairs of records (both with a birth date) and how many of them agree on it,
    /// counted over every record ([`Agreement::count`]). When given, u of
    /// `date_of_birth = exact` comes from it, less the pairs EM takes for matches,
    /// in place of the random pairs' estimate: two people's dates agree in about one
    /// pair in 30,000, so a million random pairs see some thirty such pairs and a
    /// smaller store a handful, most of them one person's two records; and the birth
    /// date is the field that tells relatives apart.
    pub birth_date_agreement: Option<Agreement>,
    /// The same for the NHS number, over the records with a valid one. Two people
    /// share a number only by a mistake, so random pairs that agree on it are nearly
    /// all one person's records: their share is the match rate, not u, and an
    /// agreeing number would weigh no more than the prior takes away.
    pub nhs_number_agreement: Option<Agreement>,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            max_iterations: 200,
            tolerance: 1e-6,
            household_pseudo_count: 50.0,
            min_blocked_pairs: 200,
            seed: 42,
            n_records: 0,
            n_blocked_pairs: 0,
            birth_date_agreement: None,
            nhs_number_agreement: None,
        }
    }
}

/// The fields EM learns the match class from: those that tell members of one family
/// apart. The family name is left out with the household fields: relatives share it,
/// and with it in, EM learns "same family" instead of "same person".
const PERSON_FIELDS: [CompField; 5] = [
    CompField::NhsNumber,
    CompField::GivenName,
    CompField::DateOfBirth,
    CompField::Sex,
    CompField::Identifier,
];

/// The fields weighed against other members of a household in the household branch.
const IDENTITY_FIELDS: [CompField; 6] = [
    CompField::NhsNumber,
    CompField::GivenName,
    CompField::FamilyName,
    CompField::DateOfBirth,
    CompField::Sex,
    CompField::Identifier,
];

/// Starting (and default) parameters per field and level: (m, u, u_household).
/// Used as EM's starting point and as the fallback when there is too little data.
pub fn default_model() -> Model {
    const X: (f64, f64, f64) = (1.0, 1.0, 1.0);
    let params: [[(f64, f64, f64); 8]; N_FIELDS] = [
        // nhs_number: exact, different
        [(0.97, 1e-6, 1e-4), (0.03, 0.999_999, 0.9999), X, X, X, X, X, X],
        // given_name: exact, nickname, close, phonetic, other, initial, similar, different
        [
            (0.82, 0.01, 0.03),
            (0.05, 0.002, 0.004),
            (0.04, 0.003, 0.005),
            (0.01, 0.005, 0.008),
            (0.03, 0.003, 0.01),
            (0.02, 0.01, 0.02),
            (0.01, 0.03, 0.05),
            (0.02, 0.937, 0.873),
        ],
        // family_name: exact, close, phonetic, part, similar, different
        [
            (0.88, 0.002, 0.85),
            (0.05, 0.002, 0.02),
            (0.01, 0.003, 0.01),
            (0.02, 0.001, 0.03),
            (0.01, 0.01, 0.01),
            (0.03, 0.982, 0.08),
            X,
            X,
        ],
        // date_of_birth: exact, swapped, one digit off, same year, different
        [
            (0.93, 0.0001, 0.02),
            (0.01, 0.00001, 0.0005),
            (0.04, 0.0003, 0.003),
            (0.005, 0.01, 0.03),
            (0.015, 0.9896, 0.9465),
            X,
            X,
            X,
        ],
        // sex: same, different
        [(0.98, 0.5, 0.5), (0.02, 0.5, 0.5), X, X, X, X, X, X],
        // identifier: exact, one character off, different
        [(0.93, 1e-5, 1e-3), (0.02, 1e-4, 1e-3), (0.05, 0.999_89, 0.998), X, X, X, X, X],
        // postcode: exact, sector, district, different
        [
            (0.8, 0.0005, 0.0005),
            (0.03, 0.002, 0.002),
            (0.02, 0.01, 0.01),
            (0.15, 0.9875, 0.9875),
            X,
            X,
            X,
            X,
        ],
        // address: exact, same number similar street, similar, different
        [
            (0.7, 0.0005, 0.0005),
            (0.1, 0.001, 0.001),
            (0.05, 0.005, 0.005),
            (0.15, 0.9935, 0.9935),
            X,
            X,
            X,
            X,
        ],
        // phone: exact mobile, exact other, different
        [(0.35, 0.0001, 0.0001), (0.35, 0.0001, 0.0001), (0.3, 0.9998, 0.9998), X, X, X, X, X],
        // email: exact, different
        [(0.8, 0.0001, 0.0001), (0.2, 0.9999, 0.9999), X, X, X, X, X, X],
    ];
    let mut model = Model::from_params(0.1, 0.5, &params);
    model.training.note = "built-in starting parameters".to_owned();
    model
}

/// Per field and level: weighted counts.
type LevelCounts = [[f64; 8]; N_FIELDS];

fn normalised(counts: &[f64], smoothing: f64) -> Vec<f64> {
    let total: f64 = counts.iter().sum::<f64>() + smoothing * counts.len() as f64;
    counts.iter().map(|count| (count + smoothing) / total).collect()
}

/// Fewest pairs sharing an NHS number that the family name's and household fields' m,
/// and the prior outside households, are read off (the posteriors give them otherwise).
const MIN_ANCHORED_PAIRS: f64 = 1000.0;

/// Pairs of values and how many of them are equal, counted exactly over every value
/// (what random pairs estimate, without their sampling noise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Pairs of distinct items: N(N-1)/2.
    pub pairs: f64,
    /// Pairs whose values are equal: the sum of n(n-1)/2 over the distinct values.
    pub agreeing: f64,
}

impl Agreement {
    /// Counts the pairs of `items` and the equal ones. None for fewer than two items.
    pub fn count<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> Option<Agreement> {
        let mut counts: std::collections::HashMap<T, u64> = std::collections::HashMap::new();
        for item in items {
            *counts.entry(item).or_default() += 1;
        }
        let n = counts.values().sum::<u64>() as f64;
        let agreeing =
            counts.values().map(|&count| count as f64 * (count as f64 - 1.0) / 2.0).sum();
        (n >= 2.0).then(|| Agreement { pairs: n * (n - 1.0) / 2.0, agreeing })
    }

    /// How many items were counted (from the pairs: N(N-1)/2).
    pub fn items(&self) -> f64 {
        f64::midpoint(1.0, (1.0 + 8.0 * self.pairs).sqrt())
    }

    /// The share of pairs that agree.
    pub fn rate(&self) -> f64 {
        self.agreeing / self.pairs
    }

    /// The share among pairs that are not one person, given how many pairs are matches
    /// and how many of those agree: at 100,000 records one person's two records are a
    /// third of the pairs with one birth date. Kept between `floor` of the raw share
    /// and the raw share itself, so a poor fit cannot wipe it out.
    fn without_matches(&self, matches: f64, matches_agreeing: f64, floor: f64) -> f64 {
        let rate = self.rate();
        let corrected = (self.agreeing - matches_agreeing) / (self.pairs - matches).max(1.0);
        corrected.clamp(rate * floor, rate)
    }
}

/// The least share of a counted agreement left to pairs of two people: a birth date
/// two people share is common (one pair in 30,000), and most of its agreeing pairs are
/// still two people's at 100,000 records.
const COUNTED_U_FLOOR: f64 = 1.0 / 20.0;

/// The same for the NHS number, where nearly every agreeing pair is one person's
/// records: two people share a number only by a mistake (a relative's number, a slip
/// that makes another valid one). At 100,000 synthetic records the count leaves them a
/// nine-hundredth of the agreeing pairs (u 1.7e-8); held to a twentieth (7.5e-7), an
/// agreeing number weighed four bits less than the data says.
const NHS_NUMBER_U_FLOOR: f64 = 1.0 / 1000.0;

/// Puts a counted u in place of the sampled one for a field's `exact` level (level 0),
/// scaling the other levels to share the rest as they did.
fn set_exact_u(u: &mut LevelCounts, field: CompField, rate: f64) {
    let levels = &mut u[field.index()][..field.levels().len()];
    let rate = rate.clamp(1e-12, 0.5);
    let rest: f64 = levels[1..].iter().sum();
    if rest > 0.0 {
        for level in &mut levels[1..] {
            *level *= (1.0 - rate) / rest;
        }
    }
    levels[0] = rate;
}

/// Estimates u for every field from random-pair patterns.
fn estimate_u(random: &PatternCounts) -> LevelCounts {
    let mut counts: LevelCounts = [[0.0; 8]; N_FIELDS];
    for (&packed, &count) in random {
        let gamma = Gamma::unpack(packed);
        for field in CompField::ALL {
            if let Some(level) = gamma.level(field) {
                counts[field.index()][usize::from(level)] += count as f64;
            }
        }
    }
    let mut u: LevelCounts = [[0.0; 8]; N_FIELDS];
    for field in CompField::ALL {
        let n_levels = field.levels().len();
        let probabilities = normalised(&counts[field.index()][..n_levels], 0.5);
        u[field.index()][..n_levels].copy_from_slice(&probabilities);
    }
    u
}

fn product(gamma: &Gamma, fields: &[CompField], table: &LevelCounts) -> f64 {
    fields
        .iter()
        .filter_map(|&field| {
            gamma.level(field).map(|level| table[field.index()][usize::from(level)])
        })
        .product()
}

/// P(one person | a pair's pattern) in the household branch: the identity fields under
/// m, against the household's non-match distribution.
fn household_posterior(
    gamma: &Gamma,
    household_lambda: f64,
    m: &LevelCounts,
    u_household: &LevelCounts,
    joint: &[f64],
) -> f64 {
    let in_match = household_lambda * product(gamma, &IDENTITY_FIELDS, m);
    let in_non_match = (1.0 - household_lambda) * household_non_match(gamma, u_household, joint);
    in_match / (in_match + in_non_match).max(f64::MIN_POSITIVE)
}

/// Fewest pairs of two people at one home, both with the contact, that a contact detail
/// is found personal on.
const MIN_PERSONAL_PAIRS: f64 = 600.0;

/// The most two people at one home may agree on a personal contact: the share's upper
/// bound, (agreeing + 3) / pairs (three for none seen, the rule of three), held under
/// one in 200.
const MAX_PERSONAL_SHARE: f64 = 0.005;

/// Fewest pairs of each kind of relative the rules guard (twins, a parent and child of
/// one name) that a contact detail is found personal on.
const MIN_RELATIVE_PAIRS: f64 = 100.0;

/// The most pairs of each kind of relative may agree on a personal contact, as
/// (agreeing + 1) / (pairs + 2).
const MAX_RELATIVE_SHARE: f64 = 0.02;

/// The kinds of relative at one home the engine's rules guard, told by the comparison
/// alone: twins (one birth date, given names not one name) and a parent and child of
/// one name (one given name, birth dates plainly different), one family name or one
/// missing, and no agreeing NHS number or identifier.
#[derive(Clone, Copy)]
enum RelativeKind {
    Twins,
    Namesakes,
}

fn relative_kind(gamma: &Gamma) -> Option<RelativeKind> {
    let identified = gamma.level(CompField::NhsNumber) == Some(0)
        || gamma.level(CompField::Identifier) == Some(0);
    let family = gamma.level(CompField::FamilyName).is_none_or(|family| family <= 1);
    let given = gamma.level(CompField::GivenName)?;
    let dob = gamma.level(CompField::DateOfBirth)?;
    if identified || !family {
        return None;
    }
    if dob == 0 && given > GIVEN_ONE_NAME {
        Some(RelativeKind::Twins)
    } else if given <= GIVEN_ONE_NAME && CompField::DateOfBirth.is_different(dob) {
        Some(RelativeKind::Namesakes)
    } else {
        None
    }
}

/// The contact details (a mobile number, an email address) that two people at one home
/// almost never agree on in this data, with their weights: read off the blocked pairs
/// that share a household, each weighed by the household model's posterior (from the
/// identity fields alone) that it is one person or two. Where children's records carry
/// a parent's mobile, or a family shares one email address, the share of two people
/// agreeing is far above [`MAX_PERSONAL_SHARE`] and the contact stays household
/// evidence; with fewer than [`MIN_PERSONAL_PAIRS`] there is no telling.
///
/// The relatives the rules guard are checked on their own too, as the model takes them
/// for two people (posterior under one half): a mobile on twins' records that no one
/// else at home shares (a parent's, on two children's) is few pairs among a care home's
/// many, but all of the twins'. Each kind needs [`MIN_RELATIVE_PAIRS`] pairs with the
/// contact, and at most [`MAX_RELATIVE_SHARE`] of them agreeing.
fn personal_contacts(
    household: &[&(Gamma, f64)],
    household_lambda: f64,
    m: &LevelCounts,
    u_household: &LevelCounts,
    joint: &[f64],
) -> Vec<PersonalContact> {
    let contacts = [CompField::Phone, CompField::Email];
    // Per contact: (matches, matches agreeing, non-matches, non-matches agreeing).
    let mut counts = [[0.0f64; 4]; 2];
    // Per contact and kind of relative taken for two people: (pairs, agreeing).
    let mut relatives = [[[0.0f64; 2]; 2]; 2];
    for (gamma, count) in household.iter().map(|pair| (&pair.0, pair.1)) {
        let posterior = household_posterior(gamma, household_lambda, m, u_household, joint);
        let kind = relative_kind(gamma).filter(|_| posterior < 0.5);
        for ((field, counts), relatives) in contacts.iter().zip(&mut counts).zip(&mut relatives) {
            let Some(level) = gamma.level(*field) else { continue };
            let agrees = f64::from(u8::from(level == 0));
            counts[0] += posterior * count;
            counts[1] += posterior * count * agrees;
            counts[2] += (1.0 - posterior) * count;
            counts[3] += (1.0 - posterior) * count * agrees;
            if let Some(kind) = kind {
                relatives[kind as usize][0] += count;
                relatives[kind as usize][1] += count * agrees;
            }
        }
    }
    contacts
        .iter()
        .zip(counts)
        .zip(relatives)
        .filter_map(|((field, [matches, matches_agreeing, pairs, agreeing]), relatives)| {
            let [[twin_pairs, twins_agreeing], [namesake_pairs, namesakes_agreeing]] = relatives;
            let contact = PersonalContact {
                field: field.as_str().to_owned(),
                level: field.levels()[0].to_owned(),
                m: (matches_agreeing + 1.0) / (matches + 2.0),
                u: (agreeing + 1.0) / (pairs + 2.0),
                pairs,
                twin_pairs,
                twins_agreeing,
                namesake_pairs,
                namesakes_agreeing,
            };
            let relatives_apart = relatives.iter().all(|&[pairs, agreeing]| {
                pairs >= MIN_RELATIVE_PAIRS
                    && (agreeing + 1.0) / (pairs + 2.0) <= MAX_RELATIVE_SHARE
            });
            let personal = pairs >= MIN_PERSONAL_PAIRS
                && (agreeing + 3.0) / pairs <= MAX_PERSONAL_SHARE
                && relatives_apart
                && contact.weight() > 0.0;
            personal.then_some(contact)
        })
        .collect()
}

/// Levels of the given-name and birth-date comparisons (the joint household table).
const GIVEN_LEVELS: usize = 8;
const DOB_LEVELS: usize = 5;

/// The cell of the joint given-name by birth-date table, when both are present.
fn joint_cell(gamma: &Gamma) -> Option<usize> {
    let given = gamma.level(CompField::GivenName)?;
    let dob = gamma.level(CompField::DateOfBirth)?;
    Some(usize::from(given) * DOB_LEVELS + usize::from(dob))
}

/// P(pattern | different members of one household): identity fields independent,
/// except given name and birth date, which come from the joint table.
fn household_non_match(gamma: &Gamma, u_household: &LevelCounts, joint: &[f64]) -> f64 {
    match joint_cell(gamma) {
        Some(cell) => {
            let others = [
                CompField::NhsNumber,
                CompField::FamilyName,
                CompField::Sex,
                CompField::Identifier,
            ];
            product(gamma, &others, u_household) * joint[cell]
        }
        None => product(gamma, &IDENTITY_FIELDS, u_household),
    }
}

/// The bits of a packed pattern holding the gamma; higher bits hold key kinds.
const GAMMA_BITS: u64 = (1 << 40) - 1;

/// Result of one EM fit on the person fields.
struct Fit {
    m: LevelCounts,
    iterations: u32,
    converged: bool,
}

/// Posterior match probability of each pattern, and their weighted total.
fn e_step(
    patterns: &[(Gamma, f64)],
    fields: &[CompField],
    u: &LevelCounts,
    m: &LevelCounts,
    lambda: f64,
) -> (Vec<f64>, f64) {
    let mut total = 0.0;
    let posteriors = patterns
        .iter()
        .map(|(gamma, count)| {
            let in_match = lambda * product(gamma, fields, m);
            let in_non_match = (1.0 - lambda) * product(gamma, fields, u);
            let posterior = in_match / (in_match + in_non_match).max(f64::MIN_POSITIVE);
            total += posterior * count;
            posterior
        })
        .collect();
    (posteriors, total)
}

/// The share of matches with m and u fixed (EM on lambda alone).
fn fit_lambda(
    patterns: &[(Gamma, f64)],
    u: &LevelCounts,
    m: &LevelCounts,
    options: &TrainOptions,
) -> f64 {
    let n: f64 = patterns.iter().map(|(_, count)| count).sum();
    let mut lambda = 0.1;
    for _ in 0..options.max_iterations {
        let (_, matched) = e_step(patterns, &PERSON_FIELDS, u, m, lambda);
        let next = (matched / n).clamp(1e-6, 1.0 - 1e-6);
        let done = (next - lambda).abs() < options.tolerance;
        lambda = next;
        if done {
            break;
        }
    }
    lambda
}

/// EM over `fields` with u fixed, started from a deterministic rule on those fields
/// rather than from guessed parameters (EM finds a local optimum): the same NHS number
/// or identifier, or the same given name and date of birth give or take a typo.
/// Returns None when the rule finds no matches to start from.
fn em_fields(
    patterns: &[(Gamma, f64)],
    fields: &[CompField],
    u: &LevelCounts,
    m_start: &LevelCounts,
    options: &TrainOptions,
) -> Option<Fit> {
    let uses = |field| fields.contains(&field);
    let mut m = *m_start;
    let mut posteriors: Vec<f64> = patterns
        .iter()
        .map(|(gamma, _)| {
            let exact = |field| uses(field) && gamma.level(field) == Some(0);
            let differs = |field: CompField| {
                uses(field) && gamma.level(field).is_some_and(|level| field.is_different(level))
            };
            let close = |field: CompField| {
                uses(field) && gamma.level(field).is_some_and(|level| level <= 2)
            };
            let id_agrees = exact(CompField::NhsNumber) || exact(CompField::Identifier);
            let id_differs = differs(CompField::NhsNumber) || differs(CompField::Identifier);
            let both_close = close(CompField::GivenName) && close(CompField::DateOfBirth);
            if id_agrees || (both_close && !id_differs) { 1.0 } else { 0.0 }
        })
        .collect();
    if !posteriors.iter().any(|&posterior| posterior > 0.0) {
        return None;
    }
    let total: f64 = patterns.iter().map(|(_, count)| count).sum();
    let mut iterations = 0;
    let mut converged = false;
    loop {
        // M-step.
        let mut match_counts: LevelCounts = [[0.0; 8]; N_FIELDS];
        let mut matched = 0.0;
        for ((gamma, count), posterior) in patterns.iter().zip(&posteriors) {
            matched += posterior * count;
            for &field in fields {
                if let Some(level) = gamma.level(field) {
                    match_counts[field.index()][usize::from(level)] += posterior * count;
                }
            }
        }
        let lambda = (matched / total).clamp(1e-6, 1.0 - 1e-6);
        let mut change: f64 = 0.0;
        for &field in fields {
            let n_levels = field.levels().len();
            let estimate = normalised(&match_counts[field.index()][..n_levels], 0.01);
            for (level, value) in estimate.into_iter().enumerate() {
                change = change.max((m[field.index()][level] - value).abs());
                m[field.index()][level] = value;
            }
        }
        if iterations >= options.max_iterations {
            break;
        }
        if iterations > 0 && change < options.tolerance {
            converged = true;
            break;
        }
        iterations += 1;
        // E-step.
        posteriors = e_step(patterns, fields, u, &m, lambda).0;
    }
    Some(Fit { m, iterations, converged })
}

/// Trains a model from blocked-pair and random-pair pattern counts.
///
/// With a counted agreement (`options.birth_date_agreement`,
/// `options.nhs_number_agreement`), twice: the first fit says how many pairs with the
/// field on both records are matches, and how many of those agree, which the counted
/// agreement then loses to give u; the second fit trains with that u.
///
/// # Errors
/// [`MatchError::NotEnoughData`] when there are fewer blocked pairs than
/// `options.min_blocked_pairs` or no random pairs.
pub fn train(
    blocked: &PatternCounts,
    random: &PatternCounts,
    options: &TrainOptions,
) -> Result<Model, MatchError> {
    // Each counted field with the least share of its agreement left to two people.
    let counted: Vec<(CompField, Agreement, f64)> = [
        (CompField::DateOfBirth, options.birth_date_agreement, COUNTED_U_FLOOR),
        (CompField::NhsNumber, options.nhs_number_agreement, NHS_NUMBER_U_FLOOR),
    ]
    .into_iter()
    .filter_map(|(field, agreement, floor)| Some((field, agreement?, floor)))
    .collect();
    if counted.is_empty() {
        return Ok(fit(blocked, random, options, &[])?.0);
    }
    let raw: Vec<(CompField, f64)> =
        counted.iter().map(|(field, agreement, _)| (*field, agreement.rate())).collect();
    let (_, matches) = fit(blocked, random, options, &raw)?;
    let corrected: Vec<(CompField, f64)> = counted
        .iter()
        .zip(&matches)
        .map(|((field, agreement, floor), matches)| {
            (*field, agreement.without_matches(matches.with_values, matches.agreeing, *floor))
        })
        .collect();
    Ok(fit(blocked, random, options, &corrected)?.0)
}

/// Expected matching pairs among the pairs with a field on both records, and how many
/// of them agree on it exactly, read off a fit's posteriors.
#[derive(Debug, Default)]
struct FieldMatches {
    with_values: f64,
    agreeing: f64,
}

/// One fit: u from the random pairs (with each field's `exact` level in `exact_u` set
/// as given), m by EM over the blocked pairs, the priors and the household model.
/// Returns the model and, for each field of `exact_u` in order, its expected matches.
fn fit(
    blocked: &PatternCounts,
    random: &PatternCounts,
    options: &TrainOptions,
    exact_u: &[(CompField, f64)],
) -> Result<(Model, Vec<FieldMatches>), MatchError> {
    let n_blocked: u64 = blocked.values().sum();
    let n_random: u64 = random.values().sum();
    if n_blocked < options.min_blocked_pairs {
        return Err(MatchError::NotEnoughData(format!(
            "{n_blocked} candidate pairs, need at least {}",
            options.min_blocked_pairs
        )));
    }
    if n_random == 0 {
        return Err(MatchError::NotEnoughData("no random pairs".to_owned()));
    }
    let start = default_model();
    let mut u = estimate_u(random);
    for &(field, rate) in exact_u {
        set_exact_u(&mut u, field, rate);
    }
    let mut m: LevelCounts = [[0.0; 8]; N_FIELDS];
    for field in CompField::ALL {
        for (level, params) in start.fields[field.index()].levels.iter().enumerate() {
            m[field.index()][level] = params.m;
        }
    }
    // Blocked patterns carry, above the 40 bits of the gamma, the mask of the key
    // kinds the pair shared (see `keys::KEY_KINDS`).
    // In order of the packed pattern: a hash map's order differs from one map to the
    // next, and the sums below, taken in it, would differ in their last bits.
    let mut ordered: Vec<(u64, u64)> =
        blocked.iter().map(|(&packed, &count)| (packed, count)).collect();
    ordered.sort_unstable();
    let patterns: Vec<(Gamma, f64)> = ordered
        .iter()
        .map(|&(packed, count)| (Gamma::unpack(packed & GAMMA_BITS), count as f64))
        .collect();
    let masks: Vec<u16> = ordered.iter().map(|&(packed, _)| (packed >> 40) as u16).collect();
    drop(ordered);

    // Stage 1: m of the person fields by EM, u fixed. A field's agreement is inflated
    // among pairs that met through a key built from it (the postcode-and-initial key
    // brings people with the same given name together), which u from random pairs
    // does not know, and EM then learns "same given name" instead of "same person".
    // So, as Splink does, EM runs once per kind of blocking key, over the pairs that
    // shared that key and on the fields the key does not involve; a field's m is the
    // mean over the runs that estimated it.
    let (mut iterations, mut converged) = (0, true);
    let mut sums: LevelCounts = [[0.0; 8]; N_FIELDS];
    let mut n_runs = [0u32; N_FIELDS];
    for (bit, (_, involved)) in crate::keys::KEY_KINDS.iter().enumerate() {
        let fields: Vec<CompField> =
            PERSON_FIELDS.into_iter().filter(|field| !involved.contains(field)).collect();
        let strong = fields.iter().filter(|field| !matches!(field, CompField::Sex)).count();
        if strong < 2 {
            continue;
        }
        let subset: Vec<(Gamma, f64)> = patterns
            .iter()
            .zip(&masks)
            .filter(|(_, mask)| *mask & (1 << bit) != 0)
            .map(|(pattern, _)| *pattern)
            .collect();
        if subset.iter().map(|(_, count)| count).sum::<f64>() < options.min_blocked_pairs as f64 {
            continue;
        }
        let Some(fit) = em_fields(&subset, &fields, &u, &m, options) else {
            continue;
        };
        iterations = iterations.max(fit.iterations);
        converged &= fit.converged;
        for field in fields {
            let n_levels = field.levels().len();
            for (sum, value) in
                sums[field.index()][..n_levels].iter_mut().zip(&fit.m[field.index()][..n_levels])
            {
                *sum += value;
            }
            n_runs[field.index()] += 1;
        }
    }
    if PERSON_FIELDS.iter().all(|field| n_runs[field.index()] == 0) {
        // No key kind had enough pairs: one EM over every pair.
        if let Some(fit) = em_fields(&patterns, &PERSON_FIELDS, &u, &m, options) {
            iterations = fit.iterations;
            converged = fit.converged;
            m = fit.m;
        }
    }
    for field in PERSON_FIELDS {
        let runs = n_runs[field.index()];
        if runs > 0 {
            for level in 0..field.levels().len() {
                m[field.index()][level] = sums[field.index()][level] / f64::from(runs);
            }
        }
    }
    // With every field's m in place, one E-step over all pairs gives the posteriors
    // and the share of matches.
    let lambda = fit_lambda(&patterns, &u, &m, options);
    let (posteriors, _) = e_step(&patterns, &PERSON_FIELDS, &u, &m, lambda);

    // m of the family name and household fields, read off the final posteriors, and
    // off the pairs that share an NHS number: they are one person's records whatever
    // else they say, so where there are enough of them they give these fields' m
    // directly, where the posteriors cannot (at a million records many people share a
    // given name and birth date, and the person fields alone take them for one person).
    // The same pass counts those pairs outside a household, for the prior below.
    let read_off = || CompField::ALL.into_iter().filter(|field| !PERSON_FIELDS.contains(field));
    let mut household_counts: LevelCounts = [[0.0; 8]; N_FIELDS];
    let mut anchored: LevelCounts = [[0.0; 8]; N_FIELDS];
    let mut anchored_outside = 0.0;
    for ((gamma, count), posterior) in patterns.iter().zip(&posteriors) {
        let household = gamma.same_household();
        let shares_nhs = gamma.level(CompField::NhsNumber) == Some(0);
        if shares_nhs && !household {
            anchored_outside += count;
        }
        for field in read_off() {
            // A household field weighs only pairs outside a household (inside one it
            // counts through the household prior), so its m is read off those.
            if household && field.is_household() {
                continue;
            }
            if let Some(level) = gamma.level(field) {
                let level = usize::from(level);
                household_counts[field.index()][level] += posterior * count;
                if shares_nhs {
                    anchored[field.index()][level] += count;
                }
            }
        }
    }
    for field in read_off() {
        let n_levels = field.levels().len();
        let source =
            if anchored[field.index()][..n_levels].iter().sum::<f64>() >= MIN_ANCHORED_PAIRS {
                &anchored
            } else {
                &household_counts
            };
        let estimate = normalised(&source[field.index()][..n_levels], 0.01);
        m[field.index()][..n_levels].copy_from_slice(&estimate);
    }

    // Prior outside households: P(match) for two records drawn at random, because u
    // came from random pairs. The expected number of matching pairs outside
    // households (blocking finds nearly all of them) over all pairs of records.
    // The same pass counts the matches among pairs with the counted fields (for
    // `train`).
    let (mut outside_match, mut sampled) = (0.0, 0.0);
    let mut field_matches: Vec<FieldMatches> =
        exact_u.iter().map(|_| FieldMatches::default()).collect();
    for ((gamma, count), posterior) in patterns.iter().zip(&posteriors) {
        sampled += count;
        if !gamma.same_household() {
            outside_match += posterior * count;
        }
        for ((field, _), matches) in exact_u.iter().zip(&mut field_matches) {
            if let Some(level) = gamma.level(*field) {
                matches.with_values += posterior * count;
                if level == 0 {
                    matches.agreeing += posterior * count;
                }
            }
        }
    }
    let scale = if options.n_blocked_pairs as f64 > sampled {
        options.n_blocked_pairs as f64 / sampled
    } else {
        1.0
    };
    for matches in &mut field_matches {
        matches.with_values *= scale;
        matches.agreeing *= scale;
    }
    let n_records = options.n_records as f64;
    let all_pairs = n_records * (n_records - 1.0) / 2.0;
    // Where records carry NHS numbers, the matches outside a household are counted
    // from those that share one: the blocked pairs with one NHS number outside a
    // household, over the share of pairs of records that both have a number (each of
    // a person's records has one or not as its source gives it). The posteriors count
    // namesakes as matches at scale (a given name and birth date shared by two people
    // outside a household: at 1M they made the prior five times too high).
    let with_nhs = options.nhs_number_agreement.map(|agreement| agreement.items());
    let outside_lambda = match with_nhs {
        Some(with_nhs) if anchored_outside >= MIN_ANCHORED_PAIRS && n_records >= 2.0 => {
            let both = (with_nhs / n_records).powi(2);
            (anchored_outside * scale / both / all_pairs).clamp(1e-12, 0.5)
        }
        _ if all_pairs >= 1.0 => (outside_match * scale / all_pairs).clamp(1e-12, 0.5),
        _ => lambda,
    };

    // Stage 2: within households, m fixed, estimate u_household and the prior. Given
    // name and date of birth are not independent among different members of one
    // household (twins share a birth date but not a name; Jr and Sr a name but not a
    // birth date), so their non-match distribution is a joint table.
    let household: Vec<&(Gamma, f64)> =
        patterns.iter().filter(|(gamma, _)| gamma.same_household()).collect();
    let mut u_household = u;
    let mut joint = vec![0.0; GIVEN_LEVELS * DOB_LEVELS];
    for (given, row) in joint.chunks_mut(DOB_LEVELS).enumerate() {
        for (dob, cell) in row.iter_mut().enumerate() {
            *cell = u[CompField::GivenName.index()][given] * u[CompField::DateOfBirth.index()][dob];
        }
    }
    let mut household_lambda = 0.5;
    for _ in 0..options.max_iterations {
        if household.is_empty() {
            break;
        }
        let mut non_match_counts: LevelCounts = [[0.0; 8]; N_FIELDS];
        let mut non_match_totals = [0.0; N_FIELDS];
        let mut joint_counts = vec![0.0; GIVEN_LEVELS * DOB_LEVELS];
        let mut joint_total = 0.0;
        let mut total_match = 0.0;
        let mut total = 0.0;
        for (gamma, count) in household.iter().map(|pair| (&pair.0, pair.1)) {
            let posterior = household_posterior(gamma, household_lambda, &m, &u_household, &joint);
            total_match += posterior * count;
            total += count;
            for field in IDENTITY_FIELDS {
                if let Some(level) = gamma.level(field) {
                    non_match_counts[field.index()][usize::from(level)] +=
                        (1.0 - posterior) * count;
                    non_match_totals[field.index()] += (1.0 - posterior) * count;
                }
            }
            if let Some(cell) = joint_cell(gamma) {
                joint_counts[cell] += (1.0 - posterior) * count;
                joint_total += (1.0 - posterior) * count;
            }
        }
        let mut change: f64 = 0.0;
        let new_lambda = (total_match / total).clamp(1e-6, 1.0 - 1e-6);
        change = change.max((new_lambda - household_lambda).abs());
        household_lambda = new_lambda;
        let alpha = options.household_pseudo_count;
        for field in IDENTITY_FIELDS {
            let slot = field.index();
            for level in 0..field.levels().len() {
                let value = (non_match_counts[slot][level] + alpha * u[slot][level])
                    / (non_match_totals[slot] + alpha);
                change = change.max((u_household[slot][level] - value).abs());
                u_household[slot][level] = value.max(1e-9);
            }
        }
        for (given, row) in joint.chunks_mut(DOB_LEVELS).enumerate() {
            for (dob, cell) in row.iter_mut().enumerate() {
                let prior = u_household[CompField::GivenName.index()][given]
                    * u_household[CompField::DateOfBirth.index()][dob];
                let value = (joint_counts[given * DOB_LEVELS + dob] + alpha * prior)
                    / (joint_total + alpha);
                change = change.max((*cell - value).abs());
                *cell = value.max(1e-12);
            }
        }
        if change < options.tolerance {
            break;
        }
    }

    let personal_contacts =
        personal_contacts(&household, household_lambda, &m, &u_household, &joint);

    let mut model = start;
    model.personal_contacts = personal_contacts;
    model.lambda = outside_lambda;
    model.household_lambda = household_lambda;
    model.household_given_dob = joint;
    for field in CompField::ALL {
        let slot = field.index();
        for (level, params) in model.fields[slot].levels.iter_mut().enumerate() {
            params.m = m[slot][level].max(1e-9);
            params.u = u[slot][level].max(1e-9);
            params.u_household = u_household[slot][level].max(1e-9);
        }
    }
    model.training = TrainingInfo {
        n_records: 0,
        n_blocked_pairs: n_blocked,
        n_random_pairs: n_random,
        seed: options.seed,
        em_iterations: iterations,
        converged,
        note: String::new(),
    };
    Ok((model, field_matches))
}

#[cfg(test)]
mod tests;
