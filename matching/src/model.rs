//! The Fellegi-Sunter scoring model: per-level m and u probabilities, a prior,
//! term-frequency adjustment, household-aware weighting, and explanations.
//!
//! # Household-aware weighting
//! The textbook model sums `log2(m/u)` over fields as if they disagreed
//! independently. Within a household they do not: address, postcode, phone and
//! email agree together for twins, spouses, parents and children, and care-home
//! residents. A pair that shares a household (see [`Gamma::same_household`]) is
//! therefore scored against the right population of non-matches: other members of
//! the same household. Its household fields count as one piece of evidence, folded
//! into the household prior `household_lambda` (the share of household pairs that
//! are the same person, learnt by EM), and the fields that tell members apart
//! (NHS number, names, date of birth, sex, identifiers) are weighed with
//! `u_household`, their agreement rate among *different* members of one household.
//! Twins agree on date of birth far more often than random pairs, Jr/Sr on given
//! name, so those agreements count for much less there.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compare::{CompField, ComparableRecord, Gamma, N_FIELDS};
use crate::error::MatchError;
use crate::record::BirthDate;

/// Format name written in every model file.
pub const MODEL_FORMAT: &str = "mpi-fellegi-sunter";
/// The model file format version this crate writes. It also reads version 1, whose
/// identifiers had no `one_character_off` level, and version 2, whose phone numbers had
/// no `exact_mobile` level (see [`Model::from_json`]).
pub const MODEL_FORMAT_VERSION: u32 = 3;

/// One level of one compared field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelParams {
    /// Level name, as in [`CompField::levels`].
    pub name: String,
    /// P(level | same person).
    pub m: f64,
    /// P(level | different people), from random pairs.
    pub u: f64,
    /// P(level | different people of the same household).
    pub u_household: f64,
}

/// The parameters of one compared field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldParams {
    /// Field name, as in [`CompField::as_str`].
    pub field: String,
    /// Levels, strongest agreement first.
    pub levels: Vec<LevelParams>,
}

/// Decision thresholds on the match probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: link automatically (when no other person is also above it).
    pub upper: f64,
    /// Below: a new person. Between `lower` and `upper`: review.
    pub lower: f64,
}

impl Thresholds {
    /// The documented defaults: link at 0.95 or more, new person below 0.30,
    /// review in between.
    pub const DEFAULT: Thresholds = Thresholds { upper: 0.95, lower: 0.30 };

    /// Checks `0 <= lower <= upper <= 1`.
    ///
    /// # Errors
    /// [`MatchError::InvalidThresholds`] when they are out of order or range.
    pub fn validate(self) -> Result<Thresholds, MatchError> {
        let ok = (0.0..=1.0).contains(&self.lower)
            && (0.0..=1.0).contains(&self.upper)
            && self.lower <= self.upper;
        if ok {
            Ok(self)
        } else {
            Err(MatchError::InvalidThresholds { lower: self.lower, upper: self.upper })
        }
    }
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds::DEFAULT
    }
}

/// Value frequencies for term-frequency adjustment: agreeing on a rare family name
/// is stronger evidence than agreeing on `smith`. Values seen once are not kept
/// (they fall back to `1 / n_records`), so the table holds no unique names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TermFrequencies {
    /// Records the counts came from.
    pub n_records: u64,
    /// Count of each first given name seen at least twice.
    #[serde(serialize_with = "sorted")]
    pub given_name: HashMap<String, u32>,
    /// Count of each family name seen at least twice.
    #[serde(serialize_with = "sorted")]
    pub family_name: HashMap<String, u32>,
    /// Count of each postal code seen at least twice.
    #[serde(serialize_with = "sorted")]
    pub postcode: HashMap<String, u32>,
    /// Birth dates (`YYYYMMDD`) held by far more records than a date usually is: at
    /// least [`CROWDED_DATE_FACTOR`] times [`date_mean_count`](Self::date_mean_count),
    /// and 10. In UK data, the 1 January given to people whose birth date is not known.
    /// Two records agreeing on one gain nothing from it.
    #[serde(default, serialize_with = "sorted")]
    pub crowded_dates: HashMap<u32, u32>,
    /// Mean count of records per birth date held, recorded with the crowded dates it
    /// measured.
    #[serde(default)]
    pub date_mean_count: f64,
    /// Days of the year (`MMDD`) held by far more records than a day usually is: at
    /// least [`CROWDED_DAY_FACTOR`] times [`day_mean_count`](Self::day_mean_count), and
    /// [`CROWDED_DAY_MIN`]. A date on such a day is taken as crowded in every year. In a
    /// small store the 1 January given to people whose birth date is not known falls on
    /// a few records a year, too few to crowd any one date, but crowds the day.
    #[serde(default, serialize_with = "sorted")]
    pub crowded_days: HashMap<u32, u32>,
    /// Mean count of records per day of the year held, recorded with the crowded days it
    /// measured.
    #[serde(default)]
    pub day_mean_count: f64,
}

/// How many times the mean count of a birth date makes a date crowded (see
/// [`TermFrequencies::crowded_dates`]): far above what twins, households and a person's
/// several records put on one date.
pub const CROWDED_DATE_FACTOR: f64 = 10.0;

/// How many times the mean count of a day of the year makes the day crowded (see
/// [`TermFrequencies::crowded_days`]). Births spread over the year's days within a
/// tenth or so, and a person's several records or a pair of twins move a day's count
/// far less in all but the smallest stores, which [`CROWDED_DAY_MIN`] covers.
pub const CROWDED_DAY_FACTOR: f64 = 5.0;

/// The fewest records that make a day of the year crowded, whatever the mean: more than
/// the records of twins and their household, or of one person sent by every system.
pub const CROWDED_DAY_MIN: f64 = 25.0;

/// A map written in key order, so that one model is always the same JSON (a hash
/// map's order differs from map to map).
fn sorted<K: Ord + Serialize, S: serde::Serializer>(
    map: &HashMap<K, u32>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().collect::<std::collections::BTreeMap<_, _>>())
}

impl TermFrequencies {
    /// Counts values over records. Values seen once are dropped.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a ComparableRecord>,
    ) -> TermFrequencies {
        // A value already counted is looked up by reference: only a value's first
        // sighting makes a string (at a million records, three strings a record made
        // and dropped were most of the count's time).
        fn count(table: &mut HashMap<String, u32>, value: &str) {
            match table.get_mut(value) {
                Some(count) => *count += 1,
                None => {
                    table.insert(value.to_owned(), 1);
                }
            }
        }
        let mut frequencies = TermFrequencies::default();
        let mut dates: HashMap<u32, u32> = HashMap::new();
        let mut days = [0u32; 13 * 32];
        for record in records {
            frequencies.n_records += 1;
            if let Some(date) = record.date_of_birth() {
                *dates.entry(date_key(date)).or_default() += 1;
                days[day_index(date)] += 1;
            }
            if let Some(given) = record.first_given() {
                count(&mut frequencies.given_name, given);
            }
            if let Some(family) = record.family_name() {
                count(&mut frequencies.family_name, family);
            }
            if let Some(postcode) = record.postcode() {
                count(&mut frequencies.postcode, postcode.code);
            }
        }
        for table in
            [&mut frequencies.given_name, &mut frequencies.family_name, &mut frequencies.postcode]
        {
            table.retain(|_, count| *count >= 2);
        }
        if !dates.is_empty() {
            let held: u32 = dates.values().sum();
            frequencies.date_mean_count = f64::from(held) / dates.len() as f64;
            let crowded = (CROWDED_DATE_FACTOR * frequencies.date_mean_count).max(10.0);
            dates.retain(|_, count| f64::from(*count) >= crowded);
            frequencies.crowded_dates = dates;

            let held = days.iter().filter(|&&count| count > 0).count();
            frequencies.day_mean_count = f64::from(days.iter().sum::<u32>()) / held as f64;
            let crowded = (CROWDED_DAY_FACTOR * frequencies.day_mean_count).max(CROWDED_DAY_MIN);
            frequencies.crowded_days = (1..=12u32)
                .flat_map(|month| (1..=31u32).map(move |day| (month, day)))
                .map(|(month, day)| (month * 100 + day, days[(month * 32 + day) as usize]))
                .filter(|&(_, count)| f64::from(count) >= crowded)
                .collect();
        }
        frequencies
    }

    /// True when far more records hold this birth date, or this day of the year, than a
    /// date or a day usually is (see [`crowded_dates`](Self::crowded_dates) and
    /// [`crowded_days`](Self::crowded_days)).
    pub fn is_crowded_date(&self, date: BirthDate) -> bool {
        (!self.crowded_dates.is_empty() && self.crowded_dates.contains_key(&date_key(date)))
            || (!self.crowded_days.is_empty()
                && self.crowded_days.contains_key(&(date_key(date) % 10_000)))
    }

    /// The crowded birth dates, then the crowded days of the year, each in date order.
    pub fn crowded(&self) -> Vec<CrowdedDate> {
        let parts = |key: u32| (key / 100 % 100, key % 100);
        let as_date = |(&key, &records): (&u32, &u32), year: Option<u16>| {
            let (month, day) = parts(key);
            CrowdedDate {
                year,
                month: u8::try_from(month).unwrap_or(0),
                day: u8::try_from(day).unwrap_or(0),
                records,
            }
        };
        let mut dates: Vec<CrowdedDate> = self
            .crowded_dates
            .iter()
            .map(|entry| as_date(entry, u16::try_from(*entry.0 / 10_000).ok()))
            .collect();
        let mut days: Vec<CrowdedDate> =
            self.crowded_days.iter().map(|entry| as_date(entry, None)).collect();
        dates.sort_unstable();
        days.sort_unstable();
        dates.extend(days);
        dates
    }

    fn table(&self, field: CompField) -> Option<&HashMap<String, u32>> {
        match field {
            CompField::GivenName => Some(&self.given_name),
            CompField::FamilyName => Some(&self.family_name),
            CompField::Postcode => Some(&self.postcode),
            _ => None,
        }
    }

    /// Share of records holding `value` in `field`; None when the field has no table
    /// or no records were counted.
    pub fn frequency(&self, field: CompField, value: &str) -> Option<f64> {
        let table = self.table(field)?;
        if self.n_records == 0 {
            return None;
        }
        let count = table.get(value).copied().unwrap_or(1);
        Some(f64::from(count) / self.n_records as f64)
    }

    /// True when two values of a field are both established in the data rather than
    /// one being a slip of the other: the rarer is seen at least
    /// [`ESTABLISHED_MIN_COUNT`] times and at least [`ESTABLISHED_MIN_SHARE`] as often as
    /// the commoner. A typo is far rarer than the name it mangles ("Olvia" against
    /// "Olivia"); two real names (Olivia and Oliver) are both common. False for a field
    /// without a table.
    pub fn both_established(&self, field: CompField, a: &str, b: &str) -> bool {
        let Some(table) = self.table(field) else {
            return false;
        };
        let count = |value: &str| table.get(value).copied().unwrap_or(1);
        let (a, b) = (count(a), count(b));
        let (rarer, commoner) = (a.min(b), a.max(b));
        rarer >= ESTABLISHED_MIN_COUNT
            && f64::from(rarer) >= ESTABLISHED_MIN_SHARE * f64::from(commoner)
    }
}

/// A birth date's day of the year as an index into a table of 13 * 32 days.
fn day_index(date: BirthDate) -> usize {
    usize::from(date.month.min(12)) * 32 + usize::from(date.day.min(31))
}

/// A birth date as the number `YYYYMMDD`.
/// A birth date, or a day in every year, that a model holds as crowded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CrowdedDate {
    /// The year; `None` for a day crowded in every year.
    pub year: Option<u16>,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month.
    pub day: u8,
    /// Records on it when the model was trained.
    pub records: u32,
}

impl std::fmt::Display for CrowdedDate {
    /// `1 January 1990`, or `1 January in every year` for a day.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let month = BirthDate::month_name(self.month).unwrap_or("?");
        match self.year {
            Some(year) => write!(formatter, "{} {month} {year}", self.day),
            None => write!(formatter, "{} {month} in every year", self.day),
        }
    }
}

/// The key of a birth date in [`TermFrequencies::crowded_dates`] (`YYYYMMDD`); modulo
/// 10,000, of its day in [`TermFrequencies::crowded_days`] (`MMDD`).
fn date_key(date: BirthDate) -> u32 {
    u32::from(date.year) * 10_000 + u32::from(date.month) * 100 + u32::from(date.day)
}

/// See [`TermFrequencies::both_established`].
pub const ESTABLISHED_MIN_COUNT: u32 = 3;
/// See [`TermFrequencies::both_established`].
pub const ESTABLISHED_MIN_SHARE: f64 = 0.05;

/// How a model was trained: enough to reproduce it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Records in the store when trained.
    pub n_records: u64,
    /// Blocked candidate pairs used for EM.
    pub n_blocked_pairs: u64,
    /// Random pairs used to estimate u.
    pub n_random_pairs: u64,
    /// Seed of the random pair sampler.
    pub seed: u64,
    /// EM iterations run.
    pub em_iterations: u32,
    /// Whether EM converged within its iteration limit.
    pub converged: bool,
    /// Free-text note (for example "shipped default").
    #[serde(default)]
    pub note: String,
}

/// A contact detail the data shows one person carries (a mobile number, an email
/// address): training found two members of one home almost never agree on it. Agreeing
/// on it then tells one person's records from a relative's, as an NHS number does: it
/// counts as evidence inside a household, where the household's other fields count
/// only through the household prior, and the relatives rules step aside for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonalContact {
    /// The field, `phone` or `email`.
    pub field: String,
    /// Its agreeing level (level 0: `exact_mobile` or `exact`).
    pub level: String,
    /// P(agree | one person's two records at one home, both with a value).
    pub m: f64,
    /// P(agree | two people at one home, both with a value), as (agreeing + 1) /
    /// (pairs + 2).
    pub u: f64,
    /// The pairs of two people at one home, both with a value, it was read off
    /// (weighed by EM's posterior that they are two people).
    pub pairs: f64,
    /// Pairs at one home that look like twins (one birth date, given names not one
    /// name) and that the model takes for two people, both with a value.
    #[serde(default)]
    pub twin_pairs: f64,
    /// How many of those agree on it.
    #[serde(default)]
    pub twins_agreeing: f64,
    /// Pairs at one home that look like a parent and child of one name (one given name,
    /// birth dates plainly different) and that the model takes for two people, both
    /// with a value.
    #[serde(default)]
    pub namesake_pairs: f64,
    /// How many of those agree on it.
    #[serde(default)]
    pub namesakes_agreeing: f64,
}

impl PersonalContact {
    /// Its weight in bits when the two records agree on it.
    pub fn weight(&self) -> f64 {
        (self.m / self.u).log2().clamp(-MAX_FIELD_WEIGHT, MAX_FIELD_WEIGHT)
    }
}

/// A Fellegi-Sunter model: the versioned JSON file `mpi train` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// File format version, [`MODEL_FORMAT_VERSION`].
    pub format_version: u32,
    /// Model version, assigned by the store that saved it (0 when never saved).
    #[serde(default)]
    pub version: u32,
    /// P(same person) for two records drawn at random that do not share a household
    /// (the prior that goes with u, which is estimated from random pairs).
    pub lambda: f64,
    /// P(same person) among blocked candidate pairs that share a household.
    pub household_lambda: f64,
    /// Per-field parameters, in [`CompField::ALL`] order.
    pub fields: Vec<FieldParams>,
    /// P(given-name level, birth-date level | different members of one household), a
    /// joint table (row: given-name level, column: birth-date level): twins share a
    /// birth date but not a name, Jr and Sr a name but not a birth date, so the two are
    /// not independent there. Empty: use the per-field `u_household`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub household_given_dob: Vec<f64>,
    /// Decision thresholds this model was calibrated with.
    pub thresholds: Thresholds,
    /// How the model was trained.
    #[serde(default)]
    pub training: TrainingInfo,
    /// Term frequencies (absent in the shipped default model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_frequencies: Option<TermFrequencies>,
    /// The contact details training found personal in this data (none in a model
    /// trained before they were looked for, or where members of one home share them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal_contacts: Vec<PersonalContact>,
}

/// Bounds on any one field's weight, so no single level (a rare name, a tiny u)
/// can decide a pair alone.
const MAX_FIELD_WEIGHT: f64 = 20.0;

/// The bound on the NHS number's weight. Its u is counted over every record, not
/// sampled (see `train::TrainOptions::nhs_number_agreement`), so its weight may reach
/// what the count says: held to [`MAX_FIELD_WEIGHT`], an agreeing number could not
/// outweigh the prior of two records at random in a store of a million (-22.4 bits),
/// and one person's records with a new family name at a new address waited for a
/// steward though they shared it.
const MAX_NHS_NUMBER_WEIGHT: f64 = 40.0;

/// One field's part in a score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The compared field (a name of the model's own, so borrowed for the program's
    /// life; owned when read back from JSON).
    pub field: Cow<'static, str>,
    /// Its level (`exact`, `nickname`, ..., or `missing`).
    pub level: Cow<'static, str>,
    /// Weight in bits (`log2(m/u)`), 0 for missing.
    pub weight: f64,
    /// True when the weight was adjusted for how common the value is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tf_adjusted: bool,
    /// True when the field is part of shared-household evidence and counted only
    /// through the household prior.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub household: bool,
}

/// The score of one pair and its explanation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Total match weight in bits: prior plus contributions.
    pub weight: f64,
    /// Match probability, `2^w / (1 + 2^w)`.
    pub probability: f64,
    /// The prior weight used (`log2(lambda / (1 - lambda))`, household or not).
    pub prior: f64,
    /// True when the pair shares a household and was weighed as such.
    pub same_household: bool,
    /// Per-field contributions, in [`CompField::ALL`] order, then for a household pair
    /// the given-name and birth-date correction.
    pub contributions: Vec<Contribution>,
}

/// Probability from a weight in bits.
pub fn probability(weight: f64) -> f64 {
    let odds = weight.exp2();
    if odds.is_infinite() { 1.0 } else { odds / (1.0 + odds) }
}

fn log_odds(p: f64) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-9);
    (p / (1.0 - p)).log2()
}

impl Model {
    /// Parses a model file.
    ///
    /// # Errors
    /// [`MatchError::ModelFormat`] when the JSON is not a model of a supported
    /// version or its fields do not match [`CompField`].
    ///
    /// A version 1 model (identifiers compared as exact or different) is read with an
    /// identifier one character off weighed as different, and a version 2 model (phone
    /// numbers compared as exact or different) with a mobile agreeing weighed as any
    /// number agreeing, so a store's trained model decides as it did until it is
    /// trained again.
    pub fn from_json(text: &str) -> Result<Model, MatchError> {
        let mut model: Model = serde_json::from_str(text)
            .map_err(|error| MatchError::ModelFormat(format!("not a model file: {error}")))?;
        if model.format == MODEL_FORMAT && model.format_version == 1 {
            // Identifiers were exact or different: one character off weighs as different.
            model.insert_level(CompField::Identifier, 1, 1, 2);
            model.format_version = 2;
        }
        if model.format == MODEL_FORMAT && model.format_version == 2 {
            // Phone numbers were exact or different: a mobile agreeing weighs as any
            // number agreeing did.
            model.insert_level(CompField::Phone, 0, 0, 2);
            model.format_version = 3;
        }
        model.validate()?;
        Ok(model)
    }

    /// Inserts a level a later format added to `field`, at `at`, as a copy of the old
    /// file's level `like`, where the field still has its `old_levels` levels: the
    /// model decides as it did until it is trained again.
    fn insert_level(&mut self, field: CompField, at: usize, like: usize, old_levels: usize) {
        if let Some(params) = self.fields.get_mut(field.index())
            && params.field == field.as_str()
            && params.levels.len() == old_levels
        {
            let mut level = params.levels[like].clone();
            level.name = field.levels()[at].to_owned();
            params.levels.insert(at, level);
        }
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model always serialises")
    }

    fn validate(&self) -> Result<(), MatchError> {
        if self.format != MODEL_FORMAT || self.format_version != MODEL_FORMAT_VERSION {
            return Err(MatchError::ModelFormat(format!(
                "unsupported model format {} version {}",
                self.format, self.format_version
            )));
        }
        if self.fields.len() != N_FIELDS {
            return Err(MatchError::ModelFormat(format!("expected {N_FIELDS} fields")));
        }
        for (params, field) in self.fields.iter().zip(CompField::ALL) {
            if params.field != field.as_str() || params.levels.len() != field.levels().len() {
                return Err(MatchError::ModelFormat(format!(
                    "field {} does not match this version's comparisons",
                    params.field
                )));
            }
            for level in &params.levels {
                let valid = |p: f64| p.is_finite() && p > 0.0 && p <= 1.0;
                if !valid(level.m) || !valid(level.u) || !valid(level.u_household) {
                    return Err(MatchError::ModelFormat(format!(
                        "field {} level {} has a probability outside (0, 1]",
                        params.field, level.name
                    )));
                }
            }
        }
        self.thresholds.validate()?;
        Ok(())
    }

    /// An untrained model with the given parameters table, for training to start from.
    pub fn from_params(
        lambda: f64,
        household_lambda: f64,
        params: &[[(f64, f64, f64); 8]; N_FIELDS],
    ) -> Model {
        let fields = CompField::ALL
            .iter()
            .zip(params)
            .map(|(field, rows)| FieldParams {
                field: field.as_str().to_owned(),
                levels: field
                    .levels()
                    .iter()
                    .zip(rows)
                    .map(|(name, &(m, u, u_household))| LevelParams {
                        name: (*name).to_owned(),
                        m,
                        u,
                        u_household,
                    })
                    .collect(),
            })
            .collect();
        Model {
            format: MODEL_FORMAT.to_owned(),
            format_version: MODEL_FORMAT_VERSION,
            version: 0,
            lambda,
            household_lambda,
            fields,
            household_given_dob: Vec::new(),
            thresholds: Thresholds::DEFAULT,
            training: TrainingInfo::default(),
            term_frequencies: None,
            personal_contacts: Vec::new(),
        }
    }

    fn level(&self, field: CompField, level: u8) -> &LevelParams {
        &self.fields[field.index()].levels[usize::from(level)]
    }

    /// Weight in bits of one field's level, before term-frequency adjustment.
    ///
    /// No level counts more against a match than the field's last level, a plain
    /// disagreement: a level the training data held almost no matches at (`smith-jones`
    /// against `jones`, where nobody in it took a double-barrelled name on marriage)
    /// would otherwise weigh as if sharing part of a name were stronger evidence of two
    /// people than sharing none of it.
    pub fn level_weight(&self, field: CompField, level: u8, household: bool) -> f64 {
        let bound =
            if field == CompField::NhsNumber { MAX_NHS_NUMBER_WEIGHT } else { MAX_FIELD_WEIGHT };
        let raw = |level: usize| {
            let params = &self.fields[field.index()].levels[level];
            let u = if household { params.u_household } else { params.u };
            (params.m / u).log2().clamp(-bound, bound)
        };
        let weight = raw(usize::from(level));
        if field.is_different(level) || weight >= 0.0 {
            weight
        } else {
            weight.max(raw(field.levels().len() - 1))
        }
    }

    /// The value whose frequency adjusts an exact agreement, if the field has one.
    fn tf_value(field: CompField, record: &ComparableRecord) -> Option<&str> {
        match field {
            CompField::GivenName => record.first_given(),
            CompField::FamilyName => record.family_name(),
            CompField::Postcode => record.postcode().map(|postcode| postcode.code),
            _ => None,
        }
    }

    /// Field weight with term-frequency adjustment for exact agreement on a name or
    /// postcode: `log2(m / f)` where `f` is the value's share of records, never more
    /// than twice nor less than half the unadjusted u's weight... bounded to +-5 bits
    /// around the unadjusted weight.
    fn field_weight(
        &self,
        field: CompField,
        level: u8,
        household: bool,
        a: &ComparableRecord,
        b: &ComparableRecord,
    ) -> (f64, bool) {
        let base = self.level_weight(field, level, household);
        let Some(frequencies) = self.term_frequencies.as_ref().filter(|_| !household) else {
            return (base, false);
        };
        // Agreeing on a birth date far more records hold than a date usually is (the
        // 1 January given to people whose date is not known) says nothing. (Discounted
        // by the log of the crowding, it still linked namesakes, and held fewer of them
        // as ambiguous: see BENCHMARKS.md.) Nor do two such dates a digit apart: both
        // years are guesses. Dates that differ still count against.
        if field == CompField::DateOfBirth {
            let crowded = |record: &ComparableRecord| {
                record.date_of_birth().is_some_and(|date| frequencies.is_crowded_date(date))
            };
            let agreeing =
                level == 0 || (!CompField::DateOfBirth.is_different(level) && crowded(b));
            return if agreeing && crowded(a) { (0.0, true) } else { (base, false) };
        }
        if level != 0 {
            return (base, false);
        }
        // The commoner of the two records' values: the same whichever record comes
        // first, and cautious when the agreement is read across swapped names.
        let frequency_of =
            |record| Model::tf_value(field, record).and_then(|v| frequencies.frequency(field, v));
        let Some(frequency) = frequency_of(a).into_iter().chain(frequency_of(b)).reduce(f64::max)
        else {
            return (base, false);
        };
        let m = self.level(field, 0).m;
        let adjusted = (m / frequency.max(1e-9)).log2();
        (adjusted.clamp(base - 5.0, base + 5.0).clamp(-MAX_FIELD_WEIGHT, MAX_FIELD_WEIGHT), true)
    }

    /// The household correction for given name and birth date together: the joint
    /// table's weight minus the two per-field weights already counted. Zero outside
    /// households or when either is missing.
    fn household_interaction(&self, gamma: &Gamma) -> f64 {
        if self.household_given_dob.len() != 40 || !gamma.same_household() {
            return 0.0;
        }
        let (Some(given), Some(dob)) =
            (gamma.level(CompField::GivenName), gamma.level(CompField::DateOfBirth))
        else {
            return 0.0;
        };
        let (given_params, dob_params) =
            (self.level(CompField::GivenName, given), self.level(CompField::DateOfBirth, dob));
        let joint_u = self.household_given_dob[usize::from(given) * 5 + usize::from(dob)];
        let joint = (given_params.m * dob_params.m / joint_u).log2();
        let separate = self.level_weight(CompField::GivenName, given, true)
            + self.level_weight(CompField::DateOfBirth, dob, true);
        (joint.clamp(-2.0 * MAX_FIELD_WEIGHT, 2.0 * MAX_FIELD_WEIGHT)) - separate
    }

    /// The match weight of a compared pair: the fast path, no explanation.
    pub fn weight(&self, gamma: &Gamma, a: &ComparableRecord, b: &ComparableRecord) -> f64 {
        let household = gamma.same_household();
        let mut weight = self.prior(household) + self.household_interaction(gamma);
        for field in CompField::ALL {
            let Some(level) = gamma.level(field) else { continue };
            if household && field.is_household() {
                weight += self.personal_contact(field, level).map_or(0.0, PersonalContact::weight);
            } else {
                weight += self.field_weight(field, level, household, a, b).0;
            }
        }
        weight
    }

    /// The personal contact (see [`PersonalContact`]) a field's level agrees on, if
    /// training found that level personal.
    fn personal_contact(&self, field: CompField, level: u8) -> Option<&PersonalContact> {
        if level != 0 || self.personal_contacts.is_empty() {
            return None;
        }
        let (name, level_name) = (field.as_str(), field.levels()[0]);
        self.personal_contacts
            .iter()
            .find(|contact| contact.field == name && contact.level == level_name)
    }

    /// True when the two records agree on a contact detail this model found personal:
    /// one person's, not a relative's.
    pub fn personal_contact_agrees(&self, gamma: &Gamma) -> bool {
        !self.personal_contacts.is_empty()
            && [CompField::Phone, CompField::Email].into_iter().any(|field| {
                gamma
                    .level(field)
                    .is_some_and(|level| self.personal_contact(field, level).is_some())
            })
    }

    /// The evidence of a pair's fields in bits: its weight without the prior, what
    /// they say from even odds.
    pub fn evidence(&self, gamma: &Gamma, a: &ComparableRecord, b: &ComparableRecord) -> f64 {
        self.weight(gamma, a, b) - self.prior(gamma.same_household())
    }

    /// Prior weight in bits.
    pub fn prior(&self, household: bool) -> f64 {
        log_odds(if household { self.household_lambda } else { self.lambda })
    }

    /// Scores a compared pair with its per-field explanation. Term-frequency
    /// adjustment uses the commoner of the two records' values.
    pub fn score(&self, gamma: &Gamma, a: &ComparableRecord, b: &ComparableRecord) -> Score {
        let household = gamma.same_household();
        let prior = self.prior(household);
        let mut weight = prior;
        let mut contributions = Vec::with_capacity(N_FIELDS);
        for field in CompField::ALL {
            let personal = gamma.level(field).and_then(|level| self.personal_contact(field, level));
            let (level_name, field_weight, tf_adjusted) = match gamma.level(field) {
                None => ("missing", 0.0, false),
                Some(level) if household && field.is_household() => {
                    let weight = personal.map_or(0.0, PersonalContact::weight);
                    (field.levels()[usize::from(level)], weight, false)
                }
                Some(level) => {
                    let (w, tf) = self.field_weight(field, level, household, a, b);
                    (field.levels()[usize::from(level)], w, tf)
                }
            };
            weight += field_weight;
            contributions.push(Contribution {
                field: Cow::Borrowed(field.as_str()),
                level: Cow::Borrowed(level_name),
                weight: field_weight,
                tf_adjusted,
                household: household && field.is_household() && personal.is_none(),
            });
        }
        let interaction = self.household_interaction(gamma);
        if interaction != 0.0 {
            weight += interaction;
            contributions.push(Contribution {
                field: Cow::Borrowed("given_name+date_of_birth"),
                level: Cow::Borrowed(
                    "household correction (twins share a birth date, Jr/Sr a name)",
                ),
                weight: interaction,
                tf_adjusted: false,
                household: true,
            });
        }
        Score {
            weight,
            probability: probability(weight),
            prior,
            same_household: household,
            contributions,
        }
    }

    /// The match weight without the NHS number's contribution: what the rest of the
    /// evidence says. Used to spot one NHS number on two different people.
    pub fn weight_without_nhs_number(
        &self,
        gamma: &Gamma,
        a: &ComparableRecord,
        b: &ComparableRecord,
    ) -> f64 {
        let mut without = *gamma;
        without.0[CompField::NhsNumber.index()] = crate::compare::MISSING;
        self.weight(&without, a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_of_frequencies_is_always_the_same_json() {
        let names = ["smith", "jones", "patel", "brown", "taylor", "khan", "evans", "wilson"];
        let table = |order: &mut dyn Iterator<Item = &&str>| {
            let counts: HashMap<String, u32> =
                order.enumerate().map(|(n, name)| ((*name).to_owned(), n as u32 % 3 + 2)).collect();
            TermFrequencies { n_records: 40, family_name: counts, ..TermFrequencies::default() }
        };
        let first = serde_json::to_string(&table(&mut names.iter())).unwrap();
        assert!(first.contains(r#""family_name":{"brown":"#), "{first}");
        for _ in 0..8 {
            // Each map is seeded afresh, so its own order differs from the first's.
            let again = table(&mut names.iter());
            assert_eq!(serde_json::to_string(&again).unwrap(), first);
            let back: TermFrequencies = serde_json::from_str(&first).unwrap();
            assert_eq!(back, again);
        }
    }

    #[test]
    fn probability_is_monotone_and_bounded() {
        assert_eq!(probability(0.0), 0.5);
        assert!(probability(10.0) > probability(5.0));
        assert!(probability(-2000.0) >= 0.0);
        assert_eq!(probability(2000.0), 1.0);
    }

    #[test]
    fn established_names_are_both_common() {
        let mut frequencies = TermFrequencies { n_records: 10_000, ..TermFrequencies::default() };
        for (name, count) in [("olivia", 300), ("oliver", 280), ("olvia", 4), ("aoife", 20)] {
            frequencies.given_name.insert(name.to_owned(), count);
        }
        let established = |a, b| frequencies.both_established(CompField::GivenName, a, b);
        assert!(established("olivia", "oliver"));
        assert!(established("aoife", "oliver"), "a twentieth as common is enough");
        assert!(!established("olivia", "olvia"), "a typo is far rarer than its name");
        assert!(!established("olivia", "zebedee"), "a name seen once is not established");
        assert!(!frequencies.both_established(CompField::Sex, "olivia", "oliver"));
    }

    /// The default model written as an older format `version` wrote it, without the
    /// level `removed` of `field` that a later format added, read back: the model and
    /// the old file's JSON. Asserts it loads as the current version with every level.
    fn older_model(version: u32, field: CompField, removed: usize) -> (Model, serde_json::Value) {
        let mut old: serde_json::Value =
            serde_json::from_str(&crate::train::default_model().to_json()).expect("json");
        old["format_version"] = version.into();
        old["fields"][field.index()]["levels"].as_array_mut().expect("levels").remove(removed);
        let model = Model::from_json(&old.to_string()).expect("an older model loads");
        assert_eq!(model.format_version, MODEL_FORMAT_VERSION);
        let levels = &model.fields[field.index()].levels;
        let names: Vec<&str> = levels.iter().map(|level| level.name.as_str()).collect();
        assert_eq!(names, field.levels());
        (model, old)
    }

    /// A store's model saved before identifiers had a one-character-off level still
    /// loads, and weighs such a pair as it did: as different.
    #[test]
    fn a_version_1_model_loads_with_one_character_off_weighed_as_different() {
        let (model, mut old) = older_model(1, CompField::Identifier, 1);
        let levels = &model.fields[CompField::Identifier.index()].levels;
        assert_eq!((levels[1].m, levels[1].u), (levels[2].m, levels[2].u));
        // Other versions are still refused.
        old["format_version"] = 7.into();
        assert!(Model::from_json(&old.to_string()).is_err());
    }

    /// A store's model saved before mobiles had a level of their own still loads, and
    /// weighs a mobile agreeing as any number agreeing, with no contact personal.
    #[test]
    fn a_version_2_model_loads_with_a_mobile_weighed_as_any_number() {
        let (model, _) = older_model(2, CompField::Phone, 0);
        let levels = &model.fields[CompField::Phone.index()].levels;
        assert_eq!((levels[0].m, levels[0].u), (levels[1].m, levels[1].u));
        assert!(model.personal_contacts.is_empty());
    }

    /// Inside a household a contact counts only through the household prior, unless
    /// training found it personal: then its agreement counts, and says so.
    #[test]
    fn a_personal_contact_counts_inside_a_household() {
        let record = |text: &str| {
            let mut raw = crate::record::Demographics::default();
            for (key, value) in text.split(';').filter_map(|pair| pair.split_once('=')) {
                match key {
                    "given" => raw.given_name = Some(value.to_owned()),
                    "family" => raw.family_name = Some(value.to_owned()),
                    "addr" => raw.address_line1 = Some(value.to_owned()),
                    "phone" => raw.phone = Some(value.to_owned()),
                    _ => unreachable!("{key}"),
                }
            }
            let normalizer = crate::normalize::Normalizer::new(crate::NormalizeOptions {
                today: BirthDate { year: 2026, month: 12, day: 2 },
                refuse_test_nhs_numbers: false,
            });
            ComparableRecord::new(normalizer.normalize(&raw).0, normalizer.nicknames())
        };
        let a = record("given=Lukasz;family=Patel;addr=36 York Road;phone=07700 900123");
        let b = record("given=Luke;family=Patel;addr=36 York Road;phone=07700900123");
        let gamma = crate::compare::compare(&a, &b);
        assert!(gamma.same_household());
        let mut model = crate::train::default_model();
        let before = model.weight(&gamma, &a, &b);
        assert!(!model.personal_contact_agrees(&gamma));
        model.personal_contacts.push(PersonalContact {
            field: "phone".to_owned(),
            level: "exact_mobile".to_owned(),
            m: 0.5,
            u: 0.0005,
            pairs: 10_000.0,
            ..PersonalContact::default()
        });
        assert!(model.personal_contact_agrees(&gamma));
        let after = model.weight(&gamma, &a, &b);
        assert!(
            (after - before - 0.5f64.log2() + 0.0005f64.log2()).abs() < 1e-9,
            "{after} {before}"
        );
        let score = model.score(&gamma, &a, &b);
        assert!((score.weight - after).abs() < 1e-9);
        let phone = &score.contributions[CompField::Phone.index()];
        assert_eq!((phone.level.as_ref(), phone.household), ("exact_mobile", false));
        // A landline agreeing stays the household's.
        let c = record("given=Luke;family=Patel;addr=36 York Road;phone=0113 496 0000");
        let d = record("given=Lukasz;family=Patel;addr=36 York Road;phone=0113 496 0000");
        assert!(!model.personal_contact_agrees(&crate::compare::compare(&c, &d)));
    }

    /// A level the training data held (almost) no matches at weighs no more against a
    /// match than a plain disagreement, in and outside a household; levels above it,
    /// and the disagreement itself, keep their weights.
    #[test]
    fn no_level_counts_more_against_than_a_disagreement() {
        let mut model = crate::train::default_model();
        let family = CompField::FamilyName;
        let part = family.levels().iter().position(|&name| name == "part_of_name").unwrap() as u8;
        let last = (family.levels().len() - 1) as u8;
        model.fields[family.index()].levels[usize::from(part)].m = 0.0;
        for household in [false, true] {
            let different = model.level_weight(family, last, household);
            assert!(different < -1.0, "{different}");
            assert_eq!(model.level_weight(family, part, household), different);
            assert!(model.level_weight(family, 0, household) > 0.0);
        }
        let params = &model.fields[family.index()].levels[usize::from(last)];
        assert_eq!(model.level_weight(family, last, false), (params.m / params.u).log2());
    }

    #[test]
    fn thresholds_validate() {
        assert!(Thresholds { upper: 0.9, lower: 0.3 }.validate().is_ok());
        assert!(Thresholds { upper: 0.3, lower: 0.9 }.validate().is_err());
        assert!(Thresholds { upper: 1.5, lower: 0.3 }.validate().is_err());
    }
}
