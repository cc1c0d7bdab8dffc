//! The linkage engine: blocking, scoring, deciding and clustering, for a whole file
//! at once (batch) or one record at a time (online), with the same decisions.
//!
//! Both paths keep the same in-memory [`Linker`] state (every record, prepared for
//! comparison, and its person) and call the same [`Linker::decide`]. A batch indexes
//! its records first and asks the index for each record's candidates *among the
//! records before it* (`below` its id), which is exactly what the online path sees
//! when the record arrives; candidate pairs are scored in parallel and decisions are
//! taken in one ordered pass, so the result does not depend on the thread count.

use std::collections::HashMap;
use std::sync::Arc;

use mpi_matching::{
    CompField, ComparableRecord, GIVEN_ONE_NAME, Gamma, Model, Score, Sex, TermFrequencies,
    Thresholds, compare, probability,
};
use serde::Serialize;
use uuid::Uuid;

/// Internal person handle (index into [`Linker::persons`]).
pub type PersonKey = u32;

/// A record held by the engine.
#[derive(Debug)]
pub struct Entry {
    /// Record id (store and index).
    pub id: u64,
    /// Source system (shared by every record of the system).
    pub source_system: std::sync::Arc<str>,
    /// Id in the source system.
    pub local_id: Box<str>,
    /// Its person.
    pub person: PersonKey,
    /// Its last decision.
    pub decision: DecisionKind,
    /// Probability of that decision's best match.
    pub probability: Option<f64>,
    /// True when a steward placed the record: the engine never moves it.
    pub manual: bool,
}

/// Source-system names, one allocation per system shared by all its records (a
/// million records come from a handful of systems).
#[derive(Clone, Debug, Default)]
pub struct SourceNames(HashMap<Box<str>, std::sync::Arc<str>>);

impl SourceNames {
    /// The names of a set of records, each once.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> SourceNames {
        let mut sources = SourceNames::default();
        for name in names {
            sources.intern(name);
        }
        sources
    }

    /// The shared name, added if new.
    pub fn intern(&mut self, name: &str) -> std::sync::Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: std::sync::Arc<str> = name.into();
        self.0.insert(name.into(), shared.clone());
        shared
    }

    /// The shared name (a name not seen before gets an allocation of its own).
    pub fn get(&self, name: &str) -> std::sync::Arc<str> {
        self.0.get(name).cloned().unwrap_or_else(|| name.into())
    }
}

/// A 64-bit hash of a record's (source, local id), for look-ups that do not hold the
/// ids twice (the service's id index, a batch's repeated and re-sent rows).
pub fn id_hash(source: &str, local_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (source, local_id).hash(&mut hasher);
    hasher.finish()
}

/// A person held by the engine.
#[derive(Debug)]
pub struct PersonSlot {
    /// Stable id (a UUID: 16 bytes, where its text would take 60 in two copies).
    pub id: Uuid,
    /// Positions (into [`Linker::entries`]) of its records.
    pub members: Vec<usize>,
    /// True when created by this run.
    pub is_new: bool,
    /// True for a review's provisional person.
    pub provisional: bool,
    /// The person it was merged into, once retired by a merge.
    pub retired_into: Option<PersonKey>,
}

/// What the engine decided for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Linked automatically to an existing person.
    Linked,
    /// Started a new person.
    New,
    /// Sits alone in a provisional person until a steward decides.
    Review,
}

impl DecisionKind {
    /// Parses [`DecisionKind::as_str`]'s words.
    pub fn parse(word: &str) -> Option<DecisionKind> {
        match word {
            "linked" => Some(DecisionKind::Linked),
            "new" => Some(DecisionKind::New),
            "review" => Some(DecisionKind::Review),
            _ => None,
        }
    }

    /// The word used in files and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Linked => "linked",
            DecisionKind::New => "new",
            DecisionKind::Review => "review",
        }
    }
}

/// Why a record went to review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// The best probability lies between the thresholds.
    Uncertain,
    /// More than one person scored above the upper threshold.
    SeveralPersons,
    /// The record conflicts strongly with another record of the best person.
    ConflictWithPerson,
    /// Two different valid NHS numbers would end up in one person.
    NhsNumberConflict,
    /// The same NHS number, but the other details say different people.
    SharedNhsNumber,
    /// Different generational suffixes (Jr/Sr) on the two records.
    GenerationConflict,
    /// The same birth date and family name, and given names that do not tell the two
    /// apart (different, or missing on one record): twins.
    PossibleTwins,
    /// The same names at one address with different birth dates: parent and child.
    PossibleParentAndChild,
    /// One household, and no birth date, given name or identifier on both records to
    /// tell its members apart.
    HouseholdWithoutIdentity,
    /// One home and one given name, birth dates a slip apart and family names that
    /// differ: two residents of a care home as likely as one person.
    ResidentsAlike,
    /// One home and one family, given names alike but not one name, and birth dates no
    /// slip of one another: siblings born in one year as likely as one person.
    PossibleSiblings,
}

impl ReviewReason {
    /// The reason's code, as serialised.
    pub fn code(self) -> &'static str {
        match self {
            ReviewReason::Uncertain => "uncertain",
            ReviewReason::SeveralPersons => "several_persons",
            ReviewReason::ConflictWithPerson => "conflict_with_person",
            ReviewReason::NhsNumberConflict => "nhs_number_conflict",
            ReviewReason::SharedNhsNumber => "shared_nhs_number",
            ReviewReason::GenerationConflict => "generation_conflict",
            ReviewReason::PossibleTwins => "possible_twins",
            ReviewReason::PossibleParentAndChild => "possible_parent_and_child",
            ReviewReason::HouseholdWithoutIdentity => "household_without_identity",
            ReviewReason::ResidentsAlike => "residents_alike",
            ReviewReason::PossibleSiblings => "possible_siblings",
        }
    }

    /// Review priority, 1 first: NHS-number safety, then look-alike relatives, then
    /// conflicts, then plain uncertainty.
    pub fn priority(self) -> u8 {
        match self {
            ReviewReason::NhsNumberConflict | ReviewReason::SharedNhsNumber => 1,
            ReviewReason::PossibleTwins
            | ReviewReason::PossibleParentAndChild
            | ReviewReason::GenerationConflict
            | ReviewReason::HouseholdWithoutIdentity
            | ReviewReason::ResidentsAlike
            | ReviewReason::PossibleSiblings => 2,
            ReviewReason::SeveralPersons | ReviewReason::ConflictWithPerson => 3,
            ReviewReason::Uncertain => 4,
        }
    }

    /// A short explanation for review files.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::Uncertain => "probability between the thresholds",
            ReviewReason::SeveralPersons => "more than one person above the upper threshold",
            ReviewReason::ConflictWithPerson => "conflicts with another record of the best person",
            ReviewReason::NhsNumberConflict => {
                "a different valid NHS number is already in the best person"
            }
            ReviewReason::SharedNhsNumber => {
                "same NHS number but the other details say different people"
            }
            ReviewReason::GenerationConflict => "different generational suffixes (Jr/Sr)",
            ReviewReason::PossibleTwins => {
                "same birth date and family name, given names that do not tell them apart: possible twins"
            }
            ReviewReason::HouseholdWithoutIdentity => {
                "same household or postcode, but no birth date or given name on both records to tell relatives apart"
            }
            ReviewReason::PossibleParentAndChild => {
                "same names at one address, different birth dates: possible parent and child (Jr/Sr)"
            }
            ReviewReason::ResidentsAlike => {
                "same home and given name, birth dates a slip apart, family names differ: possibly two residents"
            }
            ReviewReason::PossibleSiblings => {
                "same home and family name, given names alike but not one, birth dates no slip apart: possibly siblings"
            }
        }
    }
}

/// A candidate person with its best probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PersonCandidate {
    /// Person handle.
    #[serde(skip)]
    pub person: PersonKey,
    /// Person id.
    pub person_id: Uuid,
    /// Best probability against the person's records.
    pub probability: f64,
    /// Position of the best-matching record.
    #[serde(skip)]
    pub best_position: usize,
}

/// The decision for one record, with what is needed to store its evidence.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Linked, new or review.
    pub kind: DecisionKind,
    /// The person the record now belongs to (set by [`Linker::apply`]; before it, the
    /// person to link to, or for a new or review decision the record's own person when
    /// it keeps it, else none).
    pub person: PersonKey,
    /// Best probability against any candidate person (None without candidates).
    pub probability: Option<f64>,
    /// The best-matching record's position.
    pub matched_position: Option<usize>,
    /// Candidate persons at or above the lower threshold, best first.
    pub candidates: Vec<PersonCandidate>,
    /// Why it is in review.
    pub reason: Option<ReviewReason>,
    /// The person the record belonged to before this decision was applied
    /// (`PersonKey::MAX` for a new record); set by [`Linker::apply`].
    pub previous: PersonKey,
}

/// A record conflicts strongly with a record of a person, and is not linked to it
/// automatically, when the evidence of their fields alone, from even odds, gives a
/// match probability below this (besides two valid NHS numbers or two generational
/// suffixes that differ): their fields say 100 to 1 they are two people. Set low on
/// purpose: messy but true duplicates in one person often score between the
/// thresholds against each other; only records that are clearly someone else block a
/// link. It is the evidence, not the pair's probability, because the probability
/// carries the prior of two records picked at random, which falls as the store grows:
/// at a million records an old record of the person (her maiden name, an earlier
/// address) would count as a conflict, though her given name and birth date agree.
pub const CONFLICT_PROBABILITY: f64 = 0.01;

/// The classic look-alike relatives, read off a comparison: twins (same birth date and
/// family name, clearly different given names) and parent and child of one name at one
/// address (one given name, exactly, as a nickname or within a typo, the same family
/// name, clearly different birth dates). Such a pair is
/// never linked automatically, whatever its score: the evidence that would link them
/// is exactly what relatives share.
pub fn relative_signature(gamma: &Gamma) -> Option<ReviewReason> {
    if identified(gamma) {
        // One NHS number or other identifier: a typo in a name or date, not a relative.
        return None;
    }
    let given = gamma.level(CompField::GivenName)?;
    let family = gamma.level(CompField::FamilyName)?;
    let dob = gamma.level(CompField::DateOfBirth)?;
    let given_different = CompField::GivenName.is_different(given);
    let dob_different = CompField::DateOfBirth.is_different(dob);
    if family > 1 {
        return None;
    }
    if given_different && dob == 0 {
        return Some(ReviewReason::PossibleTwins);
    }
    if given <= GIVEN_ONE_NAME && dob_different && gamma.same_household() {
        return Some(ReviewReason::PossibleParentAndChild);
    }
    None
}

/// Twins the two records cannot tell apart: one family name (at one home, also one
/// mistyped past a slip: Ell for Bell), one birth date (or two
/// days in a row: born either side of midnight; or one with a slip, day and month
/// swapped or a digit off), no agreeing NHS number or identifier,
/// and given names that are not plainly one name. The model weighs such a pair by what
/// most pairs with one birth date and family name are, the same person with a slip in
/// the name; this check keeps out of automatic links the few that are twins:
/// - a boy and a girl with names not exactly the same, wherever they live if born the
///   same day (Olivia and Oliver, Sam for Samuel and for Samantha);
/// - at one home (a shared household or postcode, or not known to live apart: one
///   record has no address, postcode or phone), names with nothing in common (Peggy
///   and Freya), names that share only a middle name (Yusuf Oscar and Oscar), two
///   different initials, or two names both established in the data (Aoife and Alfie,
///   Emily and Amelia: twins' names are often alike) unless one edit apart and alike
///   in sound (Lily and Lilly; but Ella and Bella are two names).
///
/// An initial beside a name it begins, a nickname, a one-letter typo or a rare spelling
/// of a common name stays with the model: a twin's record that carries only an initial
/// is as likely to be either twin, and the check on the person's other records still
/// applies.
pub fn possible_twins(
    gamma: &Gamma,
    a: &ComparableRecord,
    b: &ComparableRecord,
    frequencies: Option<&TermFrequencies>,
) -> bool {
    if identified(gamma) {
        return false;
    }
    // Twins share a birth date, or are born either side of midnight.
    let same_day = gamma.level(CompField::DateOfBirth) == Some(0);
    let next_day = a
        .date_of_birth()
        .zip(b.date_of_birth())
        .is_some_and(|(a, b)| a.year == b.year && a.month == b.month && a.day.abs_diff(b.day) == 1);
    // A twin's date with a slip in it (day and month swapped, one digit off) still
    // leaves the given name the only thing that tells the two apart.
    let slipped = gamma.level(CompField::DateOfBirth).is_some_and(|level| (1..=2).contains(&level));
    // At one home, or not known to live apart (a record without an address or phone).
    let one_place = at_one_home(gamma) || !home_known(gamma);
    // A family name missing on one side (UNKNOWN) does not tell them apart either, nor,
    // at one home, one mistyped past a slip (Ell for Bell).
    let family = gamma.level(CompField::FamilyName);
    let family_alike = family.is_none_or(|family| family <= 1)
        || (one_place && family.is_some_and(|family| !CompField::FamilyName.is_different(family)));
    if !(same_day || next_day || slipped) || !family_alike {
        return false;
    }
    let boy_and_girl = matches!(
        (a.sex(), b.sex()),
        (Some(Sex::Male), Some(Sex::Female)) | (Some(Sex::Female), Some(Sex::Male))
    );
    // One edit apart and alike in sound is one name slipped or spelled two ways (Lily
    // and Lilly); one edit apart in sound too is two names (Ella and Bella).
    let slip = a.first_given_one_edit_apart(b) && a.given_phonetic(0) == b.given_phonetic(0);
    let two_names = || {
        a.first_given().zip(b.first_given()).is_some_and(|(first_a, first_b)| {
            // Two initials that differ ("E" and "I") are two names, whatever they sound.
            let initials = first_a.chars().count() == 1 && first_b.chars().count() == 1;
            initials
                || (!slip
                    // Without counts (a model from elsewhere), any two names may be twins'.
                    && frequencies.is_none_or(|frequencies| {
                        frequencies.both_established(CompField::GivenName, first_a, first_b)
                    }))
        })
    };
    match gamma.level(CompField::GivenName) {
        // No given name on one side: the household rule decides.
        None | Some(0) => false,
        Some(_) if boy_and_girl && (same_day || one_place) => true,
        Some(level) => {
            // Grown-up twins live apart: on one birth date, the place does not matter.
            (one_place || same_day)
                && match CompField::GivenName.levels()[usize::from(level)] {
                    // Names with nothing in common are no slip of one another (Peggy
                    // and Freya), however rare either is.
                    "other_given_name" | "different" => true,
                    "close" | "phonetic" | "similar" => two_names(),
                    _ => false,
                }
        }
    }
}

/// A family name and birth date alone, wherever the two live: a given name missing on one
/// record and no agreeing NHS number or identifier. Such a record is as likely either
/// twin's as one person's moved: of the pairs of records of one family name and birth
/// date at two postcodes, one of them without a given name, 43% are two people in the
/// synthetic 100k file and 80% at 1M, nearly all twins living apart. (At one home the
/// household rule holds such a pair first.) Checked on a record's best pair only: a
/// person may hold a record without a given name that its NHS number placed.
fn either_twin(gamma: &Gamma) -> bool {
    !identified(gamma)
        && gamma.level(CompField::GivenName).is_none()
        && gamma.level(CompField::DateOfBirth) == Some(0)
        && gamma.level(CompField::FamilyName).is_some_and(|family| family <= 1)
}

/// A parent and child of one name the records cannot tell apart: one given name
/// (exactly, as a nickname, or within a typo: Muaria for a mother Maria beside her
/// daughter Maria), a family name that is not plainly another (the same, a slip or two of it, or missing
/// on one side), birth dates that are plainly different, no agreeing NHS number or
/// identifier, and one home (a shared household, or the same postcode where the
/// address differs by a slip or a flat). The model weighs the birth date as one field
/// among many, so name and postcode can outvote it; a father and son of one name at one
/// postcode are common enough that this is never linked automatically. A family name
/// mistyped past a slip (Han for Khan) still names one family: Tomasz Han born 2020 is
/// not his father Tomasz Khan born 1983.
pub fn possible_parent_and_child(gamma: &Gamma) -> bool {
    if identified(gamma) {
        return false;
    }
    gamma.level(CompField::DateOfBirth).is_some_and(|dob| CompField::DateOfBirth.is_different(dob))
        && gamma.level(CompField::GivenName).is_some_and(|given| given <= GIVEN_ONE_NAME)
        && gamma
            .level(CompField::FamilyName)
            .is_none_or(|family| !CompField::FamilyName.is_different(family))
        && at_one_home(gamma)
}

/// Why a pair that scores as a match must still not be taken as one without a steward,
/// if it must not: one NHS number on records whose other details say different
/// people (a mother and her newborn); and, where the model's household prior says
/// people sharing an address are often different people (relatives, care homes; data
/// without real households, its prior near 1, is not held to these), a household link
/// with no birth date or given name on one side and nothing identifying, two residents
/// alike, twins the records cannot tell apart, or a parent and child of one name at one
/// home. Those relatives rules step aside for a pair that agrees on a contact detail
/// the model found personal in its data (a mobile, an email address: see
/// [`Model::personal_contact_agrees`]), which tells a person from a relative as an
/// agreeing NHS number does.
///
/// The decision applies it to a record's best match; a resolve answers with it, so a
/// service asking "who is this?" never hears "certain" of someone's twin.
pub fn pair_caution(
    gamma: &Gamma,
    a: &ComparableRecord,
    b: &ComparableRecord,
    model: &Model,
    thresholds: Thresholds,
) -> Option<ReviewReason> {
    if gamma.level(CompField::NhsNumber) == Some(0) {
        let without = probability(model.weight_without_nhs_number(gamma, a, b));
        let dob_disagrees = gamma.level(CompField::DateOfBirth).is_some_and(|level| level >= 3);
        let given_disagrees = gamma
            .level(CompField::GivenName)
            .is_some_and(|level| CompField::GivenName.is_different(level));
        if without < thresholds.lower
            && (dob_disagrees || given_disagrees)
            && !birth_year_slip(gamma, a, b)
        {
            return Some(ReviewReason::SharedNhsNumber);
        }
    }
    // A contact detail the data shows one person carries (a mobile, an email address)
    // tells the person from a relative, as an agreeing NHS number does.
    if !relatives_common(model) || model.personal_contact_agrees(gamma) {
        return None;
    }
    // Where sharing an address often means different people, the address says nothing
    // about who is who: a link there needs the birth date and the given name on both
    // records, or an agreeing NHS number or identifier. The same holds for one postcode
    // (a father and son on one street; and a pair at one postcode but two addresses
    // is weighed as two households are not, so it scores above the pair at one address),
    // and for a record with no address, postcode or phone: it may live at the other's
    // home (a family name and birth date alone, no given name, are either twin's).
    // A woman's record without a birth date whose names agree is the exception (see
    // `woman_named_alike`).
    let comparable = gamma.level(CompField::GivenName).is_some()
        && (gamma.level(CompField::DateOfBirth).is_some()
            || woman_named_alike(gamma, a, b, model.term_frequencies.as_ref()));
    if (at_one_home(gamma) || !home_known(gamma)) && !identified(gamma) && !comparable {
        return Some(ReviewReason::HouseholdWithoutIdentity);
    }
    if residents_alike(gamma) {
        return Some(ReviewReason::ResidentsAlike);
    }
    if possible_twins(gamma, a, b, model.term_frequencies.as_ref()) || either_twin(gamma) {
        return Some(ReviewReason::PossibleTwins);
    }
    if possible_parent_and_child(gamma) {
        return Some(ReviewReason::PossibleParentAndChild);
    }
    if possible_siblings(gamma) {
        return Some(ReviewReason::PossibleSiblings);
    }
    None
}

/// True when two records carry a relatives rule's sign of two people (twins, a parent
/// and child, two residents alike), where the model says relatives are common: the
/// records a steward must tell apart, whatever they score.
fn held_apart_as_relatives(a: &ComparableRecord, b: &ComparableRecord, model: &Model) -> bool {
    let gamma = compare(a, b);
    relatives_common(model)
        && !model.personal_contact_agrees(&gamma)
        && (possible_twins(&gamma, a, b, model.term_frequencies.as_ref())
            || relative_signature(&gamma).is_some()
            || possible_parent_and_child(&gamma)
            || residents_alike(&gamma)
            || possible_siblings(&gamma))
}

/// True when a pair at one home with the birth date missing on one side is taken as one
/// person, as far as the household rule goes: the given names agree exactly, as a
/// nickname, or by a slip of the pen (close, and not two names both established in the
/// data: `Diame` for Diane, but not Ella for Bella), the family names exactly or by a
/// slip, one record says female, and no generational suffix stands on one record alone.
/// Without the birth date only a relative of the same name could be mistaken for the
/// person, and one living at the same home is in practice a father and son (Jr/Sr): a
/// man's record (or one whose sex is not known) stays in review. A mother and daughter
/// of one first name are rare, and sisters are never given one. Without name counts (a
/// model from elsewhere) a slip is not told from a second name, and stays in review.
fn woman_named_alike(
    gamma: &Gamma,
    a: &ComparableRecord,
    b: &ComparableRecord,
    frequencies: Option<&TermFrequencies>,
) -> bool {
    let slip = || {
        frequencies.is_some_and(|frequencies| {
            a.first_given().zip(b.first_given()).is_some_and(|(first_a, first_b)| {
                !frequencies.both_established(CompField::GivenName, first_a, first_b)
            })
        })
    };
    let given_agrees = gamma.level(CompField::GivenName).is_some_and(|given| {
        given <= 1 || (CompField::GivenName.levels()[usize::from(given)] == "close" && slip())
    });
    let names_agree =
        given_agrees && gamma.level(CompField::FamilyName).is_some_and(|family| family <= 1);
    let woman = a.sex() == Some(Sex::Female) || b.sex() == Some(Sex::Female);
    let namesake_marked = a.name_suffix().is_some() != b.name_suffix().is_some();
    names_agree && woman && !namesake_marked
}

/// Two residents of one home (a care home) that the records cannot tell apart: no
/// agreeing NHS number or identifier, birth dates a slip apart (day and month swapped,
/// a digit off) and family names that neither agree nor are a slip of each other (or
/// one is missing). Inside a household a different family name is weak evidence
/// against a match, because partners and care-home residents differ in it, so a given
/// name and a nearly agreeing date outscore it (Ella Wrinht born 1933-05-17 and Ella
/// King born 1937-05-17, one nursing home, 0.993); one person's records at one home
/// rarely differ in both.
pub fn residents_alike(gamma: &Gamma) -> bool {
    at_one_home(gamma)
        && !identified(gamma)
        && gamma.level(CompField::DateOfBirth).is_some_and(|level| (1..=2).contains(&level))
        && gamma.level(CompField::FamilyName).is_none_or(|family| family > 1)
}

/// Two children of one home the records cannot tell apart by their score: one family
/// (the same name, a slip of it, or missing on one side), given names alike but not one
/// name (`phonetic` or `similar`: Shirley and Ashley, Joshua and Jose), birth dates that
/// are no slip of one another (in one year, or further apart), and no agreeing NHS
/// number or identifier. The household model reads alike names and a birth date in the
/// same year each as a slip, and so a pair with both as one person; one person's records
/// seldom show two such slips together, and siblings born in one year with names alike
/// show exactly that.
pub fn possible_siblings(gamma: &Gamma) -> bool {
    let alike_names = gamma.level(CompField::GivenName).is_some_and(|given| {
        matches!(CompField::GivenName.levels()[usize::from(given)], "phonetic" | "similar")
    });
    let dates_apart = gamma.level(CompField::DateOfBirth).is_some_and(|dob| dob >= 3);
    !identified(gamma)
        && at_one_home(gamma)
        && alike_names
        && dates_apart
        && gamma.level(CompField::FamilyName).is_none_or(|family| family <= 1)
}

/// Fewer years than this between two birth dates cannot be a parent and child.
pub const GENERATION_YEARS: u16 = 12;

/// True when two records that share an NHS number differ in birth date by a slip, not
/// a generation: the given names agree (exactly, as a nickname or within a typo) and
/// the birth years are fewer than [`GENERATION_YEARS`] apart (1996 for 2006, 1949 for
/// 1950, a day mistyped). A mother and her newborn, the case the shared-number rule is
/// for, are a generation apart; twins or siblings differ in given name.
fn birth_year_slip(gamma: &Gamma, a: &ComparableRecord, b: &ComparableRecord) -> bool {
    let names_agree = gamma.level(CompField::GivenName).is_some_and(|level| level <= 2);
    let years_close = a
        .date_of_birth()
        .zip(b.date_of_birth())
        .is_some_and(|(a, b)| a.year.abs_diff(b.year) < GENERATION_YEARS);
    names_agree && years_close
}

/// Below this share of matches among same-household pairs, households in the data hold
/// different people often enough that an address cannot stand in for identity.
pub const RELATIVES_COMMON_BELOW: f64 = 0.9;

/// True when the model says sharing an address often means different people (its
/// household prior is below [`RELATIVES_COMMON_BELOW`]): the relatives rules apply.
fn relatives_common(model: &Model) -> bool {
    model.household_lambda < RELATIVES_COMMON_BELOW
}

/// True when the pair shares a household, or the same postcode (where the address may
/// differ by a slip, a flat, or a relative next door): one home as the relatives rules
/// read it.
fn at_one_home(gamma: &Gamma) -> bool {
    gamma.same_household() || gamma.level(CompField::Postcode) == Some(0)
}

/// True when the pair can say whether the two live apart: both records have an address,
/// a postcode or a phone to compare. A record with none of them may live at the other's
/// home, and the relatives rules treat it so.
fn home_known(gamma: &Gamma) -> bool {
    gamma.level(CompField::Address).is_some()
        || gamma.level(CompField::Postcode).is_some()
        || gamma.level(CompField::Phone).is_some()
}

/// True when the pair agrees on an NHS number or another identifier: a typo in a name
/// or date then, not a relative.
fn identified(gamma: &Gamma) -> bool {
    gamma.level(CompField::NhsNumber) == Some(0) || gamma.level(CompField::Identifier) == Some(0)
}

/// A candidate pair: the candidate's position, the comparison, and the weight once
/// scored (NaN before). The position is a u32: a batch holds a pair for every
/// candidate of every record, six million at a million records.
pub type ScoredCandidate = (u32, Gamma, f64);

/// A candidate pair compared but not yet scored: the candidate's position and the
/// comparison. A batch holds one for every candidate pair, its weights apart.
pub type ComparedPair = (u32, Gamma);

/// Every record's values prepared for comparison, by position. They are held apart
/// from the [`Entry`]s, whose person and decision change as records are decided, so
/// that a batch can hand them to the thread that indexes them while it decides
/// ([`Records::share`]).
#[derive(Debug, Default)]
pub struct Records(Arc<Vec<ComparableRecord>>);

impl Records {
    /// The values, to read on another thread. No record is added or changed while a
    /// share is held (a batch shares them only while it decides records that are all
    /// new, which changes none): drop it first.
    pub fn share(&self) -> Arc<Vec<ComparableRecord>> {
        Arc::clone(&self.0)
    }

    fn values(&mut self) -> &mut Vec<ComparableRecord> {
        Arc::get_mut(&mut self.0).expect("records are changed only when no share is held")
    }

    /// Adds the next position's record.
    fn push(&mut self, record: ComparableRecord) {
        self.values().push(record);
    }

    /// Adds the next positions' records, emptying `records`.
    fn append(&mut self, records: &mut Vec<ComparableRecord>) {
        let values = self.values();
        if values.is_empty() {
            // (Taken whole: no copy of a first batch's million records.)
            std::mem::swap(values, records);
        } else {
            values.append(records);
        }
    }

    /// Replaces the record at `position`.
    pub fn set(&mut self, position: usize, record: ComparableRecord) {
        self.values()[position] = record;
    }

    /// Room for `additional` more records, exactly.
    fn reserve_exact(&mut self, additional: usize) {
        self.values().reserve_exact(additional);
    }

    /// Keeps the first `len` records.
    fn truncate(&mut self, len: usize) {
        self.values().truncate(len);
    }

    /// The records to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [ComparableRecord] {
        self.values()
    }
}

impl std::ops::Deref for Records {
    type Target = [ComparableRecord];

    fn deref(&self) -> &[ComparableRecord] {
        &self.0
    }
}

/// Every record's [`Entry`], by position. Entries change in place; only the
/// [`Linker`] adds or removes them, with their [`Records`], so the two always hold the
/// same positions.
#[derive(Debug, Default)]
pub struct Entries(Vec<Entry>);

impl std::ops::Deref for Entries {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        &self.0
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut [Entry] {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The in-memory linkage state shared by batch and online linking.
#[derive(Debug, Default)]
pub struct Linker {
    /// Every record, in id order.
    pub entries: Entries,
    /// Every record's values prepared for comparison, by position (as `entries`).
    pub records: Records,
    /// Every person.
    pub persons: Vec<PersonSlot>,
    /// Person id to handle.
    pub person_keys: HashMap<Uuid, PersonKey>,
    /// Persons created since the store last committed (their `is_new` is set).
    pub unsettled: Vec<PersonKey>,
    /// Persons a steward said a record (by position) is not: never linked to it.
    pub separated: HashMap<usize, Vec<PersonKey>>,
}

impl Linker {
    /// Adds a record at the next position.
    pub fn push(&mut self, entry: Entry, record: ComparableRecord) {
        self.entries.0.push(entry);
        self.records.push(record);
    }

    /// Adds records at the next positions, in order, emptying both vectors (taken
    /// whole when the linker is empty: no copy of a first batch's million records).
    ///
    /// # Panics
    /// When the two vectors differ in length.
    pub fn append(&mut self, entries: &mut Vec<Entry>, records: &mut Vec<ComparableRecord>) {
        assert_eq!(entries.len(), records.len(), "one entry a record");
        if self.entries.is_empty() {
            std::mem::swap(&mut self.entries.0, entries);
        } else {
            self.entries.0.append(entries);
        }
        self.records.append(records);
    }

    /// Room for `additional` more records, exactly.
    pub fn reserve_exact(&mut self, additional: usize) {
        self.entries.0.reserve_exact(additional);
        self.records.reserve_exact(additional);
    }

    /// Forgets the records from position `len` on (new records a failed write leaves
    /// unacknowledged; their persons are the caller's to detach).
    pub fn truncate(&mut self, len: usize) {
        self.entries.0.truncate(len);
        self.records.truncate(len);
    }

    /// The position of a record id (entries are in id order).
    pub fn position(&self, id: u64) -> Option<usize> {
        // Ids are given out in order, so without deletions a record's position is its
        // id's distance from the first: try that before searching.
        let first = self.entries.first()?.id;
        let guess = usize::try_from(id.checked_sub(first)?).ok()?;
        if self.entries.get(guess).is_some_and(|entry| entry.id == id) {
            return Some(guess);
        }
        self.entries.binary_search_by_key(&id, |entry| entry.id).ok()
    }

    /// The handle of a person id, adding the person if unseen (records loaded from
    /// the store).
    pub fn person_key(&mut self, id: Uuid, provisional: bool) -> PersonKey {
        if let Some(&key) = self.person_keys.get(&id) {
            return key;
        }
        let key = self.persons.len() as PersonKey;
        self.persons.push(PersonSlot {
            id,
            members: Vec::new(),
            is_new: false,
            provisional,
            retired_into: None,
        });
        self.person_keys.insert(id, key);
        key
    }

    /// The handle of a person id as text (None when unknown or not a UUID).
    pub fn find_person(&self, person_id: &str) -> Option<PersonKey> {
        let id = Uuid::parse_str(person_id).ok()?;
        self.person_keys.get(&id).copied()
    }

    /// Creates a new person with a fresh UUID.
    pub fn new_person(&mut self, provisional: bool) -> PersonKey {
        // Time-ordered (v7): ids of new persons sort together, so the store's indexes on
        // person ids grow at one end instead of at random places.
        let key = self.person_key(Uuid::now_v7(), provisional);
        self.persons[key as usize].is_new = true;
        self.unsettled.push(key);
        key
    }

    /// Positions of records in the order their blocking keys are best written to the
    /// index: by person, then by position. One person's records share most of their
    /// keys, so they meet in one index segment, whose term dictionary then holds each
    /// shared key once (at a million records this took a third off the dictionaries and
    /// two fifths off the indexing threads' CPU).
    pub fn in_person_order(&self, positions: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut positions: Vec<usize> = positions.into_iter().collect();
        positions.sort_unstable_by_key(|&position| (self.entries[position].person, position));
        positions
    }

    /// Marks the persons this run created as stored (after the store has committed).
    pub fn settle_new_persons(&mut self) {
        for person in self.unsettled.drain(..) {
            self.persons[person as usize].is_new = false;
        }
    }

    /// Moves a record into a person.
    pub fn assign(&mut self, position: usize, person: PersonKey) {
        self.detach(position);
        self.entries[position].person = person;
        self.persons[person as usize].members.push(position);
    }

    /// Takes a record out of its person (it then belongs to no one). The person it
    /// leaves stays provisional only while its first record is still in review
    /// (a store read back says the same).
    pub fn detach(&mut self, position: usize) {
        let old = self.entries[position].person;
        if old != PersonKey::MAX {
            self.persons[old as usize].members.retain(|&member| member != position);
            self.entries[position].person = PersonKey::MAX;
            self.refresh_provisional(old);
        }
    }

    /// Decides where the record at `position` goes, given its scored candidates
    /// (records before it). Does not change any state. A record a steward placed
    /// keeps its place (see [`Linker::keep`]).
    pub fn decide(
        &self,
        position: usize,
        scored: &[ScoredCandidate],
        model: &Model,
        thresholds: Thresholds,
    ) -> Decision {
        if self.entries[position].manual {
            return self.keep(position);
        }
        let mut decision = self.decide_among(position, scored, model, thresholds);
        // A record in review at the head of its provisional person, sent again, keeps
        // the records that joined it (they wait on its review, or stand with it) while
        // it still matches one of them at the upper threshold: the decision names that
        // person for `apply`.
        if matches!(decision.kind, DecisionKind::New | DecisionKind::Review)
            && self.heads_pending(position)
        {
            let own = self.entries[position].person;
            let own_best = scored
                .iter()
                .filter(|&&(candidate, _, _)| self.entries[candidate as usize].person == own)
                .map(|&(_, _, weight)| weight)
                .fold(f64::NEG_INFINITY, f64::max);
            if probability(own_best) >= thresholds.upper {
                decision.person = own;
            }
        }
        decision
    }

    /// [`Linker::decide`] for a record no steward placed, among the persons of the
    /// other records.
    fn decide_among(
        &self,
        position: usize,
        scored: &[ScoredCandidate],
        model: &Model,
        thresholds: Thresholds,
    ) -> Decision {
        // A record's score against a person is its best score against the person's records
        // (a few candidates a record: a list searched in turn, not a hash map allocated
        // for each decision; the ranking below orders the persons whatever their order).
        let mut by_person: Vec<(PersonKey, (f64, usize))> = Vec::with_capacity(scored.len());
        let separated = self.separated.get(&position).map_or(&[][..], Vec::as_slice);
        // A record in review sent again is not taken for the records that joined its
        // provisional person because of it: that would settle its own review.
        let own_pending = self.heads_pending(position).then_some(self.entries[position].person);
        for &(candidate, _, weight) in scored {
            let candidate = candidate as usize;
            let person = self.entries[candidate].person;
            if person == PersonKey::MAX
                || separated.contains(&person)
                || own_pending == Some(person)
            {
                continue;
            }
            let at = match by_person.iter().position(|&(listed, _)| listed == person) {
                Some(at) => at,
                None => {
                    by_person.push((person, (f64::NEG_INFINITY, candidate)));
                    by_person.len() - 1
                }
            };
            let slot = &mut by_person[at].1;
            if weight > slot.0
                || (weight == slot.0 && self.entries[candidate].id < self.entries[slot.1].id)
            {
                *slot = (weight, candidate);
            }
        }
        let mut ranked: Vec<PersonCandidate> = by_person
            .into_iter()
            .map(|(person, (weight, best_position))| PersonCandidate {
                person,
                person_id: self.persons[person as usize].id,
                probability: probability(weight),
                best_position,
            })
            .collect();
        // A review's provisional person waits for a steward; a confirmed person above
        // the upper threshold goes first, and a provisional one beside it does not
        // make the link ambiguous (it is most likely the same pending record).
        let provisional =
            |candidate: &PersonCandidate| self.persons[candidate.person as usize].provisional;
        let confirmed_above = |candidate: &PersonCandidate| {
            candidate.probability >= thresholds.upper && !provisional(candidate)
        };
        ranked.sort_by(|a, b| {
            confirmed_above(b)
                .cmp(&confirmed_above(a))
                .then_with(|| b.probability.total_cmp(&a.probability))
                .then_with(|| {
                    self.entries[a.best_position].id.cmp(&self.entries[b.best_position].id)
                })
        });
        let Some(best) = ranked.first().cloned() else {
            return Decision {
                kind: DecisionKind::New,
                person: PersonKey::MAX,
                probability: None,
                matched_position: None,
                candidates: Vec::new(),
                reason: None,
                previous: PersonKey::MAX,
            };
        };
        let candidates: Vec<PersonCandidate> = ranked
            .iter()
            .filter(|candidate| candidate.probability >= thresholds.lower)
            .cloned()
            .collect();
        let review = |reason| Decision {
            kind: DecisionKind::Review,
            person: PersonKey::MAX,
            probability: Some(best.probability),
            matched_position: Some(best.best_position),
            candidates: candidates.clone(),
            reason: Some(reason),
            previous: PersonKey::MAX,
        };
        if best.probability < thresholds.lower {
            return Decision {
                kind: DecisionKind::New,
                person: PersonKey::MAX,
                probability: Some(best.probability),
                matched_position: Some(best.best_position),
                candidates: Vec::new(),
                reason: None,
                previous: PersonKey::MAX,
            };
        }
        if best.probability < thresholds.upper {
            return review(ReviewReason::Uncertain);
        }
        // A provisional person held apart from the best one as a possible relative (its
        // record in review as the best person's twin, say) is someone else the record may
        // be, not a pending copy of the best person: it makes the link ambiguous.
        let possible_relative = |second: &PersonCandidate| {
            let (theirs, ours) =
                (&self.records[second.best_position], &self.records[best.best_position]);
            held_apart_as_relatives(theirs, ours, model)
        };
        if ranked.get(1).is_some_and(|second| {
            second.probability >= thresholds.upper
                && (provisional(&best) || !provisional(second) || possible_relative(second))
        }) {
            return review(ReviewReason::SeveralPersons);
        }
        let link = |to: &PersonCandidate| Decision {
            kind: DecisionKind::Linked,
            person: to.person,
            probability: Some(to.probability),
            matched_position: Some(to.best_position),
            candidates: candidates.clone(),
            reason: None,
            previous: PersonKey::MAX,
        };
        let Some(reason) = self.refusal(position, &best, scored, model, thresholds) else {
            return link(&best);
        };
        // The best person is refused, but a pending record is certainly this one: a
        // provisional person, the only one above the upper threshold, that takes the
        // record without a doubt of its own. Both records wait on one review (James
        // Walker born 9/4/37 three times at one home, beside a James Walker there with
        // no birth date: one person in review, not three).
        if !provisional(&best) {
            let mut pending = ranked[1..].iter().filter(|candidate| {
                provisional(candidate) && candidate.probability >= thresholds.upper
            });
            if let (Some(pending), None) = (pending.next(), pending.next())
                && self.refusal(position, pending, scored, model, thresholds).is_none()
            {
                return link(pending);
            }
        }
        review(reason)
    }

    /// Why the record at `position` must not link to `to`, if it must not: the caution
    /// on its best pair with the person ([`pair_caution`]), or a strong conflict with
    /// any other record of the person (another NHS number, another generational suffix,
    /// a relative's signature, a probability below [`CONFLICT_PROBABILITY`]).
    fn refusal(
        &self,
        position: usize,
        to: &PersonCandidate,
        scored: &[ScoredCandidate],
        model: &Model,
        thresholds: Thresholds,
    ) -> Option<ReviewReason> {
        let record = &self.records[position];
        // A member of the person that was a candidate was compared with the record
        // already (against the values it has now); others are compared here.
        let gamma_with = |member: usize| {
            scored
                .iter()
                .find(|&&(candidate, _, _)| candidate as usize == member)
                .map_or_else(|| compare(record, &self.records[member]), |&(_, gamma, _)| gamma)
        };
        let best_record = &self.records[to.best_position];
        let best_gamma = gamma_with(to.best_position);
        if let Some(reason) = pair_caution(&best_gamma, record, best_record, model, thresholds) {
            return Some(reason);
        }
        // A record whose given name is one with the best record's bears no relative's
        // sign beside another record of the person when it also shares an NHS number or
        // identifier with the best record (Blil, a slip of Bill, beside Willyam), or
        // beside a record whose given name is one with the best record's too (Sue, where
        // the best record says Susan, beside USSAN): a nickname and a slip, not two
        // people.
        let one_name = |gamma: &Gamma| {
            gamma.level(CompField::GivenName).is_some_and(|given| given <= GIVEN_ONE_NAME)
        };
        let best_one_name = one_name(&best_gamma);
        // A record with the best record's given name, family name and birth date, to the
        // letter, is a relative of another record of the person exactly when the best
        // record is: that question was settled when those two were put together.
        let as_the_best_record = record.first_given().is_some()
            && record.date_of_birth().is_some()
            && record.first_given() == best_record.first_given()
            && record.family_name() == best_record.family_name()
            && record.date_of_birth() == best_record.date_of_birth()
            && best_gamma.level(CompField::Sex) != Some(1);
        let relatives_common = relatives_common(model)
            && !(best_one_name
                && (identified(&best_gamma) || model.personal_contact_agrees(&best_gamma)))
            && !as_the_best_record;
        // The link is refused when the record conflicts strongly with any record of the person.
        for &member in
            self.persons[to.person as usize].members.iter().filter(|&&member| member != position)
        {
            let other = &self.records[member];
            let gamma = if member == to.best_position { best_gamma } else { gamma_with(member) };
            if gamma.level(CompField::NhsNumber) == Some(1) {
                return Some(ReviewReason::NhsNumberConflict);
            }
            if let (Some(a), Some(b)) = (record.name_suffix(), other.name_suffix())
                && a != b
            {
                return Some(ReviewReason::GenerationConflict);
            }
            // The relatives checks hold only where the model says relatives are common:
            // where households are one person (FEBRL), a record with its given name
            // replaced is a slip, not a twin. Given names that are all one name settle
            // the twins' question, which turns on the given name, but not a parent's
            // and child's, which turns on the birth date, when the two dates are a
            // generation apart: Jessica Webb born 1977 is not the Jessica Webb born
            // 1940 at her home, though a record of that name without a birth date
            // brought them to one person.
            let relatives_checked = member != to.best_position
                && relatives_common
                && !model.personal_contact_agrees(&gamma);
            let slips_of_one_name =
                relatives_checked && best_one_name && one_name(&compare(best_record, other));
            let generation_apart = || {
                record
                    .date_of_birth()
                    .zip(other.date_of_birth())
                    .is_some_and(|(a, b)| a.year.abs_diff(b.year) >= GENERATION_YEARS)
            };
            if relatives_checked
                && let Some(reason) = relative_signature(&gamma)
                && ((reason == ReviewReason::PossibleParentAndChild && generation_apart())
                    || !slips_of_one_name)
            {
                return Some(reason);
            }
            if relatives_checked
                && !slips_of_one_name
                && possible_twins(&gamma, record, other, model.term_frequencies.as_ref())
            {
                return Some(ReviewReason::PossibleTwins);
            }
            if member != to.best_position
                && probability(model.evidence(&gamma, record, other)) < CONFLICT_PROBABILITY
            {
                return Some(ReviewReason::ConflictWithPerson);
            }
        }
        None
    }

    /// The decision that keeps a steward-placed record where it is.
    pub fn keep(&self, position: usize) -> Decision {
        let entry = &self.entries[position];
        Decision {
            kind: entry.decision,
            person: entry.person,
            probability: entry.probability,
            matched_position: None,
            candidates: Vec::new(),
            reason: None,
            previous: entry.person,
        }
    }

    /// Applies a decision: the record joins its person, or a new (provisional) one.
    /// `reuse` is a person the record may keep when it would otherwise start one (an
    /// updated record that was alone), so person ids already given out stay stable.
    /// Returns the person and, if a person was left empty, that person.
    pub fn apply(&mut self, position: usize, decision: &mut Decision) -> Option<PersonKey> {
        let old = self.entries[position].person;
        decision.previous = old;
        if self.entries[position].manual {
            // A steward placed this record: it stays where it is.
            decision.person = old;
            return None;
        }
        // A record alone in its person keeps it unless it links; so does one in review
        // at the head of its provisional person when the decision names that person
        // (it still matches the records that joined it).
        let keeps_person = old != PersonKey::MAX
            && (self.persons[old as usize].members == [position]
                || (decision.person == old && self.heads_pending(position)));
        let person = match decision.kind {
            DecisionKind::Linked => decision.person,
            DecisionKind::New | DecisionKind::Review if keeps_person => {
                self.persons[old as usize].provisional = decision.kind == DecisionKind::Review;
                old
            }
            DecisionKind::New => self.new_person(false),
            DecisionKind::Review => self.new_person(true),
        };
        decision.person = person;
        self.entries[position].decision = decision.kind;
        self.entries[position].probability = decision.probability;
        if person != old {
            self.assign(position, person);
        }
        (old != PersonKey::MAX && old != person && self.persons[old as usize].members.is_empty())
            .then_some(old)
    }

    /// True when the record at `position` is in review at the head of its provisional
    /// person: the record the person waits on.
    fn heads_pending(&self, position: usize) -> bool {
        let entry = &self.entries[position];
        entry.person != PersonKey::MAX
            && self.persons[entry.person as usize].provisional
            && entry.decision == DecisionKind::Review
    }

    /// A person is provisional while its first record (the one it was made for) is in
    /// review, as a store read back says: when that record leaves (linked elsewhere,
    /// deleted), the records that joined it stand as a person of their own.
    fn refresh_provisional(&mut self, person: PersonKey) {
        let slot = &self.persons[person as usize];
        let first = slot.members.iter().min_by_key(|&&member| self.entries[member].id);
        let provisional =
            first.is_some_and(|&member| self.entries[member].decision == DecisionKind::Review);
        self.persons[person as usize].provisional = provisional;
    }

    /// The score and explanation of the decision's best pair, for the link evidence.
    pub fn evidence(&self, position: usize, decision: &Decision, model: &Model) -> Option<Score> {
        let matched = decision.matched_position?;
        let record = &self.records[position];
        let gamma = compare(record, &self.records[matched]);
        Some(model.score(&gamma, record, &self.records[matched]))
    }

    /// Golden-record NHS number of every person: see [`Linker::person_nhs_number`].
    pub fn person_nhs_numbers(&self) -> Vec<Option<&str>> {
        use rayon::prelude::*;
        (0..self.persons.len())
            .into_par_iter()
            .map(|person| self.person_nhs_number(person as PersonKey, None))
            .collect()
    }

    /// Golden-record NHS number of a person: the valid NHS number held by most of its
    /// records, ties to the most recent record (highest id); `without` leaves one record
    /// out (to tell what a change did). (The service's golden record orders by source
    /// trust first, then recency, and counts the same way: [`majority_nhs_number`].)
    pub fn person_nhs_number(&self, person: PersonKey, without: Option<usize>) -> Option<&str> {
        let mut members: Vec<usize> = self.persons[person as usize]
            .members
            .iter()
            .copied()
            .filter(|&member| Some(member) != without)
            .collect();
        members.sort_unstable_by_key(|&member| std::cmp::Reverse(self.entries[member].id));
        majority_nhs_number(members.iter().filter_map(|&member| self.records[member].nhs_number()))
    }
}

/// The NHS number most of `numbers` agree on; among equals, the one met first
/// (`numbers` come in order of preference).
pub fn majority_nhs_number<'a>(numbers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for nhs in numbers {
        match counts.iter_mut().find(|(value, _)| *value == nhs) {
            Some(slot) => slot.1 += 1,
            None => counts.push((nhs, 1)),
        }
    }
    counts
        .iter()
        .enumerate()
        .max_by_key(|&(order, &(_, count))| (count, std::cmp::Reverse(order)))
        .map(|(_, &(nhs, _))| nhs)
}

/// A linker position in the four bytes pairs and row outcomes keep it in (there is
/// one of each for every candidate pair and every row of a run).
pub fn compact_position(position: usize) -> u32 {
    u32::try_from(position).expect("a linker holds fewer than 2^32 records")
}

/// The unscored pair of `record` with the record at position `candidate`.
pub fn candidate_pair(
    record: &ComparableRecord,
    candidate: usize,
    records: &[ComparableRecord],
) -> ScoredCandidate {
    (compact_position(candidate), compare(record, &records[candidate]), f64::NAN)
}

/// Scores candidate pairs in place with a model. (A batch makes its pairs' weights
/// apart from them, with each candidate's values as the record's turn sees them: see
/// `link::link_batch`.)
pub fn score_pairs(
    record: &ComparableRecord,
    pairs: &mut [ScoredCandidate],
    model: &Model,
    records: &[ComparableRecord],
) {
    for (candidate, gamma, weight) in pairs {
        *weight = model.weight(gamma, record, &records[*candidate as usize]);
    }
}

#[cfg(test)]
mod tests;
