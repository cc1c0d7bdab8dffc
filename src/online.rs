//! One record at a time: the engine behind `mpi serve` (and `mpi link --online`).
//!
//! [`decide_one`] is the single step both use: candidates from the tantivy index (the
//! records stored before this one), comparison, scoring, [`Linker::decide`] and
//! [`Linker::apply`]. A batch run gives the same decisions for the same rows in the same
//! order (see `crate::link`).

use std::collections::HashMap;

use mpi_index::{CandidateSource, IndexError, LiveIndex};
use mpi_matching::{
    BlockingKey, ComparableRecord, Demographics, Gamma, Issue, Model, Score, Thresholds,
    blocking_keys, compare, probability,
};

use crate::engine::{
    Decision, DecisionKind, Entry, Linker, PersonKey, ReviewReason, ScoredCandidate,
    candidate_pair, pair_caution, score_pairs,
};
use crate::link::{LinkError, WriteContext, WriteItem, write_results};
use crate::store::{Event, StewardChange, Store};
use crate::workspace::{INDEX_WRITER_BUDGET, Workspace, index_payload};
use serde_json::json;

/// Candidates, scores and the decision for the record at `position`, applied to the
/// linker. Returns the decision, the person it left empty (if any) and the number of
/// pairs scored.
///
/// # Errors
/// When the index cannot be read.
pub fn decide_one(
    linker: &mut Linker,
    index: &impl CandidateSource,
    position: usize,
    keys: &[BlockingKey],
    model: &Model,
    thresholds: Thresholds,
    max_candidates: usize,
) -> Result<(Decision, Option<PersonKey>, usize), IndexError> {
    let id = linker.entries[position].id;
    // The index holds exactly the records that arrived before this one.
    let candidates = index.candidates(keys, None, Some(id), max_candidates)?;
    let record = &linker.records[position];
    let mut scored: Vec<ScoredCandidate> = candidates
        .into_iter()
        .filter_map(|candidate| linker.position(candidate.record_id))
        .map(|candidate| candidate_pair(record, candidate, &linker.records))
        .collect();
    score_pairs(record, &mut scored, model, &linker.records);
    let mut decision = linker.decide(position, &scored, model, thresholds);
    let emptied = linker.apply(position, &mut decision);
    Ok((decision, emptied, scored.len()))
}

/// Why an online request could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnlineError {
    /// After normalisation the record has nothing to match on.
    #[error(
        "the record has nothing to match on: it needs a valid NHS number, an identifier, a name or a date of birth"
    )]
    NothingToMatch {
        /// The values found unusable, by field.
        issues: Vec<Issue>,
    },
    /// The store, index or model failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

impl From<IndexError> for OnlineError {
    fn from(error: IndexError) -> OnlineError {
        OnlineError::Link(LinkError::Index(error))
    }
}

impl From<crate::error::StoreError> for OnlineError {
    fn from(error: crate::error::StoreError) -> OnlineError {
        OnlineError::Link(LinkError::Store(error))
    }
}

/// (source, local id) to position, keyed by a 64-bit hash so that a million records'
/// ids are not held twice; every hit is checked against the entry, and the rare
/// colliding pair goes to a small overflow map.
#[derive(Debug, Default)]
struct SourceIndex {
    by_hash: HashMap<u64, usize>,
    overflow: HashMap<(String, String), usize>,
}

impl SourceIndex {
    fn is(entries: &[Entry], position: usize, source: &str, local_id: &str) -> bool {
        let entry = &entries[position];
        *entry.source_system == *source && *entry.local_id == *local_id
    }

    fn get(&self, entries: &[Entry], source: &str, local_id: &str) -> Option<usize> {
        match self.by_hash.get(&crate::engine::id_hash(source, local_id)) {
            Some(&position) if Self::is(entries, position, source, local_id) => Some(position),
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get(&(source.to_owned(), local_id.to_owned())).copied(),
        }
    }

    fn insert(&mut self, entries: &[Entry], position: usize) {
        let entry = &entries[position];
        let (source, local_id) = (&*entry.source_system, &*entry.local_id);
        match self.by_hash.entry(crate::engine::id_hash(source, local_id)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(position);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                if Self::is(entries, *slot.get(), source, local_id) {
                    slot.insert(position);
                } else {
                    self.overflow.insert((source.to_owned(), local_id.to_owned()), position);
                }
            }
        }
    }

    fn remove(&mut self, entries: &[Entry], position: usize) {
        let entry = &entries[position];
        let (source, local_id) = (&*entry.source_system, &*entry.local_id);
        let hash = crate::engine::id_hash(source, local_id);
        if self.by_hash.get(&hash) == Some(&position) {
            self.by_hash.remove(&hash);
        } else {
            self.overflow.remove(&(source.to_owned(), local_id.to_owned()));
        }
    }
}

/// A record being stored, placed in the linker but not yet decided.
struct Incoming<'a> {
    position: usize,
    is_update: bool,
    keys: &'a [BlockingKey],
    raw: &'a Demographics,
    issues: &'a [Issue],
    /// The person it leaves and that person's golden NHS number before.
    previous: Option<(PersonKey, Option<String>)>,
}

/// What storing one record did.
#[derive(Clone, Debug)]
pub struct Ingested {
    /// The record's id.
    pub record_id: u64,
    /// Its person.
    pub person_id: String,
    /// The decision.
    pub decision: DecisionKind,
    /// Probability of the best match.
    pub probability: Option<f64>,
    /// The review it opened, with why.
    pub review: Option<(String, ReviewReason)>,
    /// The score of the best pair, with its explanation.
    pub evidence: Option<Score>,
    /// Unusable values, by field.
    pub issues: Vec<Issue>,
    /// True when the record was already stored with the same values (nothing changed).
    pub unchanged: bool,
}

/// What deleting one record did.
#[derive(Clone, Debug)]
pub struct Removed {
    /// The deleted record's id.
    pub record_id: u64,
    /// The person it belonged to.
    pub person_id: String,
    /// True when that person had no other record and is retired.
    pub person_retired: bool,
}

/// A candidate person for a probe.
#[derive(Clone, Debug)]
pub struct Match {
    /// The person.
    pub person: PersonKey,
    /// Best probability against the person's records.
    pub probability: f64,
    /// The score of that best pair, with its explanation.
    pub score: Score,
    /// Why that pair must not be taken as the same person without a steward however
    /// high it scores (twins, a parent and child, a shared NHS number...), if it must
    /// not: the rule the engine applies before linking ([`crate::engine::pair_caution`]).
    pub caution: Option<ReviewReason>,
}

impl Match {
    /// True when the match is at or above the upper threshold and nothing makes it
    /// uncertain: what a system may take as the person.
    pub fn is_certain(&self, thresholds: Thresholds) -> bool {
        self.probability >= thresholds.upper && self.caution.is_none()
    }
}

/// The engine of the service: every record in memory, the blocking index with its one
/// writer, the model and the thresholds.
#[derive(Debug)]
pub struct Engine {
    /// Records and persons.
    pub linker: Linker,
    /// The blocking index: changes are visible at once and committed in groups.
    pub index: LiveIndex,
    /// The store generation the engine's state is level with.
    generation: u64,
    /// The normaliser.
    pub normalizer: mpi_matching::Normalizer,
    /// The scoring model.
    pub model: Model,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Most candidates per query.
    pub max_candidates: usize,
    /// Source systems from most to least trusted, for golden records.
    pub source_trust: Vec<String>,
    /// Source systems whose NHS numbers are verified (a PDS trace): theirs win.
    pub verified_sources: Vec<String>,
    by_source: SourceIndex,
    next_id: u64,
    /// The data folder's lock, held as long as the engine lives.
    _lock: std::fs::File,
}

impl Engine {
    /// Takes over an opened workspace; returns the engine and the store.
    ///
    /// # Errors
    /// When the index writer cannot be opened or the store fails.
    pub fn new(
        workspace: Workspace,
        model: Model,
        thresholds: Thresholds,
        max_candidates: usize,
    ) -> Result<(Engine, Store), OnlineError> {
        let Workspace { store, index, linker, normalizer, lock, .. } = workspace;
        let index = LiveIndex::new(index, INDEX_WRITER_BUDGET / 4)?;
        let generation = store.generation()?;
        let mut by_source = SourceIndex::default();
        for position in 0..linker.entries.len() {
            by_source.insert(&linker.entries, position);
        }
        let next_id = store.max_record_id()? + 1;
        let engine = Engine {
            linker,
            index,
            generation,
            normalizer,
            model,
            thresholds,
            max_candidates,
            source_trust: Vec::new(),
            verified_sources: Vec::new(),
            by_source,
            next_id,
            _lock: lock,
        };
        Ok((engine, store))
    }

    /// A source's place in the trust ranking (unlisted sources come after listed ones).
    pub fn trust_rank(&self, source: &str) -> usize {
        self.source_trust
            .iter()
            .position(|trusted| trusted == source)
            .unwrap_or(self.source_trust.len())
    }

    /// The position of a stored (not deleted) record.
    pub fn position_of(&self, source: &str, local_id: &str) -> Option<usize> {
        self.by_source.get(&self.linker.entries, source, local_id)
    }

    /// A person's handle from its id.
    pub fn person_of(&self, person_id: &str) -> Option<PersonKey> {
        self.linker.find_person(person_id)
    }

    /// Normalises and prepares a probe.
    pub fn prepare(&self, raw: &Demographics) -> (ComparableRecord, Vec<Issue>) {
        let (normalized, issues) = self.normalizer.normalize(raw);
        (ComparableRecord::new(normalized, self.normalizer.nicknames()), issues)
    }

    /// Stores one record (creating or updating it), decides its person and commits
    /// the store and the index before returning. The same values sent again change
    /// nothing.
    ///
    /// # Errors
    /// [`OnlineError::NothingToMatch`] for a record with nothing usable; store or index
    /// failures (nothing is acknowledged then).
    pub fn ingest(
        &mut self,
        store: &mut Store,
        source: &str,
        local_id: &str,
        raw: &Demographics,
        actor: &str,
    ) -> Result<Ingested, OnlineError> {
        let (record, issues) = self.prepare(raw);
        if !has_something_to_match(&record) {
            return Err(OnlineError::NothingToMatch { issues });
        }
        let issues: Vec<Issue> =
            issues.into_iter().filter(|issue| issue.kind.value_ignored()).collect();
        let existing = self.position_of(source, local_id);
        if let Some(position) = existing {
            let entry = &self.linker.entries[position];
            if self.linker.records[position] == record {
                return Ok(Ingested {
                    record_id: entry.id,
                    person_id: self.linker.persons[entry.person as usize].id.to_string(),
                    decision: entry.decision,
                    probability: entry.probability,
                    review: None,
                    evidence: None,
                    issues,
                    unchanged: true,
                });
            }
        }
        let keys = blocking_keys(&record);
        // The golden NHS number of the person the record leaves, before it leaves.
        let previous = existing.map(|position| {
            let person = self.linker.entries[position].person;
            (person, self.linker.person_nhs_number(person, None).map(str::to_owned))
        });
        let (position, is_update) = match existing {
            Some(position) => {
                self.linker.records.set(position, record);
                (position, true)
            }
            None => {
                let entry = Entry {
                    id: self.next_id,
                    source_system: source.into(),
                    local_id: local_id.into(),
                    person: PersonKey::MAX,
                    decision: DecisionKind::New,
                    probability: None,
                    manual: false,
                };
                self.linker.push(entry, record);
                self.next_id += 1;
                (self.linker.entries.len() - 1, false)
            }
        };
        let id = self.linker.entries[position].id;
        let incoming =
            Incoming { position, is_update, keys: &keys, raw, issues: &issues, previous };
        let result = self.decide_and_write(store, incoming, actor);
        match result {
            Ok((decision, review_id)) => {
                self.by_source.insert(&self.linker.entries, position);
                let person = &self.linker.persons[decision.person as usize];
                let evidence = self.linker.evidence(position, &decision, &self.model);
                Ok(Ingested {
                    record_id: id,
                    person_id: person.id.to_string(),
                    decision: decision.kind,
                    probability: decision.probability,
                    review: review_id.zip(decision.reason),
                    evidence,
                    issues,
                    unchanged: false,
                })
            }
            Err(error) => {
                // Not acknowledged: a new record leaves memory again. (An update that
                // failed to write is reloaded from the store on the next start.)
                if !is_update {
                    self.linker.detach(position);
                    self.linker.truncate(position);
                    self.next_id -= 1;
                }
                Err(error)
            }
        }
    }

    fn decide_and_write(
        &mut self,
        store: &mut Store,
        incoming: Incoming<'_>,
        actor: &str,
    ) -> Result<(Decision, Option<String>), OnlineError> {
        let Incoming { position, is_update, keys, raw, issues, previous } = incoming;
        let (decision, emptied, _) = decide_one(
            &mut self.linker,
            &self.index,
            position,
            keys,
            &self.model,
            self.thresholds,
            self.max_candidates,
        )?;
        let review_id =
            (decision.kind == DecisionKind::Review).then(|| uuid::Uuid::new_v4().to_string());
        let retired: Vec<(PersonKey, PersonKey)> =
            emptied.map(|emptied| (emptied, decision.person)).into_iter().collect();
        let raw = crate::link::HeldRaw::json_now(raw);
        let item = WriteItem {
            position,
            raw: crate::link::RawValues::Held(&raw),
            issues,
            is_update,
            decision: &decision,
            review_id: review_id.as_deref(),
        };
        let events = self.nhs_number_changes(position, &decision, previous);
        let generation = write_results(
            store,
            &self.linker,
            1,
            &|_| item,
            &retired,
            &WriteContext {
                model: &self.model,
                thresholds: self.thresholds,
                actor,
                progress: &crate::link::NoProgress,
            },
            events,
        )?;
        self.linker.settle_new_persons();
        let id = self.linker.entries[position].id;
        self.index_change(generation, |index| {
            if is_update { index.update(id, keys) } else { index.add(id, keys) }
        });
        Ok((decision, review_id))
    }

    /// `nhs_number_changed` events for the persons a decision touched: the one the
    /// record joined (compared without the record) and the one it left.
    fn nhs_number_changes(
        &self,
        position: usize,
        decision: &Decision,
        previous: Option<(PersonKey, Option<String>)>,
    ) -> Vec<Event> {
        let linker = &self.linker;
        let mut events = Vec::new();
        let joined = decision.person;
        if !linker.persons[joined as usize].is_new
            || linker.persons[joined as usize].members.len() > 1
        {
            let before = linker.person_nhs_number(joined, Some(position));
            let after = linker.person_nhs_number(joined, None);
            if before != after {
                events.push(Event::new(
                    "nhs_number_changed",
                    linker.persons[joined as usize].id,
                    None,
                ));
            }
        }
        if let Some((left, before)) = previous
            && left != joined
            && left != PersonKey::MAX
        {
            let after = linker.person_nhs_number(left, None);
            if before.as_deref() != after && !linker.persons[left as usize].members.is_empty() {
                events.push(Event::new(
                    "nhs_number_changed",
                    linker.persons[left as usize].id,
                    None,
                ));
            }
        }
        events
    }

    /// Applies a change to the index (visible to the next query at once) after the
    /// store committed generation `generation`. The store is the source of truth, so
    /// a failure here is logged, not returned: the index is rebuilt on the next start.
    fn index_change(
        &mut self,
        generation: u64,
        change: impl FnOnce(&mut LiveIndex) -> Result<(), IndexError>,
    ) {
        self.generation = generation;
        if let Err(error) = change(&mut self.index) {
            tracing::error!(%error, "the blocking index fell behind the store; it is rebuilt on restart");
        }
    }

    /// Commits the index's changes (if any) as level with the store, when they are
    /// older than `age`. The service calls this every second and on shutdown.
    pub fn flush_index(&mut self, age: std::time::Duration) {
        if self.index.uncommitted().is_none_or(|since| since.elapsed() < age) {
            return;
        }
        let started = std::time::Instant::now();
        match self.index.commit(&index_payload(self.generation)) {
            Ok(()) if started.elapsed() >= std::time::Duration::from_millis(200) => {
                tracing::warn!(
                    milliseconds = started.elapsed().as_millis() as u64,
                    "slow blocking index commit (writes waited for it)"
                );
            }
            Ok(()) => tracing::debug!(
                milliseconds = started.elapsed().as_millis() as u64,
                "blocking index committed"
            ),
            Err(error) => tracing::error!(
                %error,
                "committing the blocking index failed; retried at the next flush"
            ),
        }
    }

    /// Records the store generation of a steward's change (nothing to index).
    fn settled(&mut self, generation: u64) {
        self.generation = generation;
        // The index payload names the generation: commit soon even without key changes.
        self.index.touch();
    }

    /// Deletes a record: it leaves its person (retired when it was the last record),
    /// the store and the index.
    ///
    /// # Errors
    /// When the store fails (nothing changes then).
    pub fn remove(
        &mut self,
        store: &mut Store,
        source: &str,
        local_id: &str,
        actor: &str,
    ) -> Result<Option<Removed>, OnlineError> {
        let Some(position) = self.position_of(source, local_id) else {
            return Ok(None);
        };
        let entry = &self.linker.entries[position];
        let (id, person) = (entry.id, entry.person);
        let person_slot = &self.linker.persons[person as usize];
        let person_retired = person_slot.members == [position];
        let person_id = person_slot.id.to_string();
        let mut events = vec![
            Event::new("record_unlinked", &person_id, Some(id))
                .detail(json!({"reason": "deleted"})),
        ];
        if person_retired {
            events.push(Event::new("person_retired", &person_id, None));
        }
        let generation = store.delete_record(
            id,
            person_retired.then_some(person_id.as_str()),
            &events,
            actor,
        )?;
        // The entry stays in memory (positions are stable) but belongs to no one, and
        // no index or lookup can reach it.
        self.linker.detach(position);
        self.by_source.remove(&self.linker.entries, position);
        self.index_change(generation, |index| index.delete(id));
        Ok(Some(Removed { record_id: id, person_id, person_retired }))
    }

    /// Candidate persons for a probe, best first, with each one's best pair explained.
    /// Nothing is stored.
    ///
    /// # Errors
    /// When the index cannot be read.
    pub fn resolve(&self, probe: &ComparableRecord) -> Result<Vec<Match>, IndexError> {
        let keys = blocking_keys(probe);
        let candidates = self.index.candidates(&keys, None, None, self.max_candidates)?;
        let linker = &self.linker;
        let mut scored: Vec<ScoredCandidate> = candidates
            .into_iter()
            .filter_map(|candidate| linker.position(candidate.record_id))
            .filter(|&position| linker.entries[position].person != PersonKey::MAX)
            .map(|position| candidate_pair(probe, position, &linker.records))
            .collect();
        score_pairs(probe, &mut scored, &self.model, &linker.records);
        let mut best: HashMap<PersonKey, (f64, usize, Gamma)> = HashMap::new();
        for (position, gamma, weight) in scored {
            let position = position as usize;
            let person = linker.entries[position].person;
            let slot = best.entry(person).or_insert((f64::NEG_INFINITY, position, gamma));
            if weight > slot.0 || (weight == slot.0 && position < slot.1) {
                *slot = (weight, position, gamma);
            }
        }
        let mut matches: Vec<(Match, usize)> = best
            .into_iter()
            .map(|(person, (weight, position, gamma))| {
                let record = &linker.records[position];
                let score = self.model.score(&gamma, probe, record);
                let caution = pair_caution(&gamma, probe, record, &self.model, self.thresholds);
                (Match { person, probability: probability(weight), score, caution }, position)
            })
            .collect();
        matches.sort_by(|(a, a_position), (b, b_position)| {
            b.probability.total_cmp(&a.probability).then(a_position.cmp(b_position))
        });
        Ok(matches.into_iter().map(|(found, _)| found).collect())
    }
}

/// A record is worth storing when it carries a valid NHS number, another identifier,
/// a name or a date of birth.
pub fn has_something_to_match(record: &ComparableRecord) -> bool {
    record.nhs_number().is_some()
        || record.identifiers().len() > 0
        || record.given_names().len() > 0
        || record.family_name().is_some()
        || record.date_of_birth().is_some()
}

/// Why a steward's change could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StewardError {
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change does not fit the current state (a closed review, a retired person).
    #[error("{0}")]
    Conflict(String),
    /// The request is not a valid change.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
}

/// A steward's answer to a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewAnswer {
    /// The record is this person (the review's best candidate when `None`).
    Match(Option<String>),
    /// The record is none of the review's candidates.
    NoMatch,
}

impl Engine {
    /// The live person an id stands for: itself, or the survivor it was merged into.
    pub fn live_person(&self, person: PersonKey) -> PersonKey {
        let mut current = person;
        while let Some(next) = self.linker.persons[current as usize].retired_into {
            if next == current {
                break;
            }
            current = next;
        }
        current
    }

    fn require_live(&self, person_id: &str) -> Result<PersonKey, StewardError> {
        let person = self.person_of(person_id).ok_or(StewardError::NotFound("person"))?;
        if self.linker.persons[person as usize].members.is_empty() {
            return Err(StewardError::Conflict(
                "the person is retired (merged or left without records)".to_owned(),
            ));
        }
        Ok(person)
    }

    /// The best pair between a record and a person's other records: (member position,
    /// score), ties to the lower position.
    pub fn best_pair(&self, position: usize, person: PersonKey) -> Option<(usize, Score)> {
        let record = &self.linker.records[position];
        self.linker.persons[person as usize]
            .members
            .iter()
            .filter(|&&member| member != position)
            .map(|&member| {
                let other = &self.linker.records[member];
                (member, self.model.score(&compare(record, other), record, other))
            })
            .max_by(|a, b| a.1.weight.total_cmp(&b.1.weight).then(b.0.cmp(&a.0)))
    }

    /// Moves a record into a person as a steward's decision and returns the store's
    /// description of the move. The record is pinned there (`manual`).
    fn move_record(
        &mut self,
        position: usize,
        person: PersonKey,
        decision: DecisionKind,
    ) -> crate::store::RecordMove {
        self.move_into(position, person, decision, true)
    }

    /// Moves a record into a person, pinned there or not, and returns the store's
    /// description of the move.
    fn move_into(
        &mut self,
        position: usize,
        person: PersonKey,
        decision: DecisionKind,
        pinned: bool,
    ) -> crate::store::RecordMove {
        let best = self.best_pair(position, person);
        self.linker.assign(position, person);
        let entry = &mut self.linker.entries[position];
        entry.manual = pinned;
        entry.decision = decision;
        entry.probability = best.as_ref().map(|(_, score)| score.probability);
        crate::store::RecordMove {
            record_id: entry.id,
            person_id: self.linker.persons[person as usize].id.to_string(),
            decision: decision.as_str().to_owned(),
            matched_record_id: best.as_ref().map(|&(member, _)| self.linker.entries[member].id),
            probability: best.as_ref().map(|(_, score)| score.probability),
            evidence: best
                .as_ref()
                .map(|(_, score)| crate::link::evidence_json(score, self.model.version)),
            manual: pinned,
        }
    }

    /// Settles an open review: `match` moves the record into the chosen person (a
    /// manual link the engine never undoes); `no_match` confirms the record's own
    /// person and records that it is none of the candidates (the engine never links
    /// it to them). Returns the record's person afterwards.
    ///
    /// # Errors
    /// When the review is unknown or closed, the person is not live, or the store fails.
    pub fn decide_review(
        &mut self,
        store: &mut Store,
        review_id: &str,
        answer: &ReviewAnswer,
        reason: &str,
        actor: &str,
    ) -> Result<String, StewardError> {
        let review = store.review(review_id)?.ok_or(StewardError::NotFound("review"))?;
        if review.status != "open" {
            return Err(StewardError::Conflict(format!("the review is {}", review.status)));
        }
        let position =
            self.linker.position(review.record_id).ok_or(StewardError::NotFound("record"))?;
        let current = self.linker.entries[position].person;
        if current == PersonKey::MAX {
            return Err(StewardError::Conflict("the record was deleted".to_owned()));
        }
        let current_id = self.linker.persons[current as usize].id.to_string();
        let record_id = review.record_id;
        let candidates: Vec<String> = review
            .candidate_persons
            .as_array()
            .map(|candidates| {
                candidates
                    .iter()
                    .filter_map(|candidate| candidate["person_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut change = StewardChange { actor: actor.to_owned(), ..StewardChange::default() };
        let answer_word = match answer {
            ReviewAnswer::Match(_) => "match",
            ReviewAnswer::NoMatch => "no_match",
        };
        change.resolved_review =
            Some((review_id.to_owned(), answer_word.to_owned(), reason.to_owned()));
        let result_person = match answer {
            ReviewAnswer::Match(chosen) => {
                let chosen =
                    chosen.clone().or_else(|| candidates.first().cloned()).ok_or_else(|| {
                        StewardError::Invalid(
                            "the review names no candidate: give person_id".to_owned(),
                        )
                    })?;
                let target = self.person_of(&chosen).ok_or(StewardError::NotFound("person"))?;
                let target = self.live_person(target);
                if self.linker.persons[target as usize].members.is_empty() {
                    return Err(StewardError::Conflict(
                        "the chosen person has no records".to_owned(),
                    ));
                }
                if target == current {
                    return Err(StewardError::Conflict(
                        "the record is already in that person".to_owned(),
                    ));
                }
                let target_id = self.linker.persons[target as usize].id.to_string();
                // The record moves, pinned. Records the engine linked to it while it was
                // pending were taken as that record: they follow it (not pinned, so the
                // engine may still move them).
                let slot = &self.linker.persons[current as usize];
                let followers: Vec<usize> = if slot.provisional {
                    slot.members
                        .iter()
                        .copied()
                        .filter(|&member| member != position && !self.linker.entries[member].manual)
                        .collect()
                } else {
                    Vec::new()
                };
                let moving = std::iter::once((position, true))
                    .chain(followers.into_iter().map(|member| (member, false)));
                for (member, pinned) in moving {
                    let moved = self.move_into(member, target, DecisionKind::Linked, pinned);
                    let member_id = moved.record_id;
                    change.moves.push(moved);
                    change.events.push(
                        Event::new("record_unlinked", &current_id, Some(member_id))
                            .other(&target_id)
                            .detail(json!({"reason": "review", "review_id": review_id})),
                    );
                    let method = if pinned { "manual" } else { "follows_review" };
                    change.events.push(
                        Event::new("record_linked", &target_id, Some(member_id)).detail(
                            json!({"decision": "linked", "method": method, "review_id": review_id}),
                        ),
                    );
                }
                if self.linker.persons[current as usize].members.is_empty() {
                    self.linker.persons[current as usize].retired_into = Some(target);
                    change.retired_persons.push((current_id.clone(), Some(target_id.clone())));
                    change
                        .events
                        .push(Event::new("person_retired", &current_id, None).other(&target_id));
                }
                target_id
            }
            ReviewAnswer::NoMatch => {
                let entry = &mut self.linker.entries[position];
                entry.decision = DecisionKind::New;
                change.moves.push(crate::store::RecordMove {
                    record_id,
                    person_id: current_id.clone(),
                    decision: DecisionKind::New.as_str().to_owned(),
                    matched_record_id: None,
                    probability: entry.probability,
                    evidence: None,
                    manual: false,
                });
                self.linker.persons[current as usize].provisional = false;
                change.confirmed_persons.push(current_id.clone());
                for candidate in &candidates {
                    if let Some(person) = self.person_of(candidate) {
                        self.linker.separated.entry(position).or_default().push(person);
                        change.separations.push((record_id, candidate.clone()));
                    }
                }
                current_id.clone()
            }
        };
        change.events.push(
            Event::new("review_resolved", &result_person, Some(record_id))
                .detail(json!({"review_id": review_id, "decision": answer_word})),
        );
        let generation = store.write_steward(&change)?;
        self.settled(generation);
        Ok(result_person)
    }

    /// Merges `other` into `survivor`: every record of `other` moves (pinned), and
    /// `other` is retired into `survivor` (its id redirects there).
    ///
    /// # Errors
    /// When either person is unknown or retired, they are the same, or the store fails.
    pub fn merge(
        &mut self,
        store: &mut Store,
        survivor_id: &str,
        other_id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<Vec<u64>, StewardError> {
        let survivor = self.require_live(survivor_id)?;
        let other = self.require_live(other_id)?;
        if survivor == other {
            return Err(StewardError::Invalid("a person cannot be merged into itself".to_owned()));
        }
        let mut change = StewardChange { actor: actor.to_owned(), ..StewardChange::default() };
        change.events.push(
            Event::new("persons_merged", survivor_id, None)
                .other(other_id)
                .detail(json!({"reason": reason})),
        );
        let members = self.linker.persons[other as usize].members.clone();
        let mut moved_ids = Vec::new();
        for position in members {
            let moved = self.move_record(position, survivor, DecisionKind::Linked);
            moved_ids.push(moved.record_id);
            change.events.push(
                Event::new("record_linked", survivor_id, Some(moved.record_id))
                    .other(other_id)
                    .detail(json!({"decision": "linked", "method": "merge"})),
            );
            change.moves.push(moved);
        }
        self.linker.persons[other as usize].retired_into = Some(survivor);
        self.linker.persons[survivor as usize].provisional = false;
        change.confirmed_persons.push(survivor_id.to_owned());
        change.retired_persons.push((other_id.to_owned(), Some(survivor_id.to_owned())));
        change.events.push(Event::new("person_retired", other_id, None).other(survivor_id));
        let generation = store.write_steward(&change)?;
        self.settled(generation);
        Ok(moved_ids)
    }

    /// Moves the named records out of a person into a new one (or back into a person
    /// retired by a merge, `into`, which undoes that merge). The moved records are
    /// pinned, and the engine never links them back automatically. Returns the new
    /// person's id.
    ///
    /// # Errors
    /// When a record is not in the person, every record would move, `into` is not a
    /// retired person, or the store fails.
    pub fn split(
        &mut self,
        store: &mut Store,
        person_id: &str,
        records: &[(String, String)],
        into: Option<&str>,
        reason: &str,
        actor: &str,
    ) -> Result<String, StewardError> {
        let person = self.require_live(person_id)?;
        let mut positions = Vec::new();
        for (source, local_id) in records {
            let position =
                self.position_of(source, local_id).ok_or(StewardError::NotFound("record"))?;
            if self.linker.entries[position].person != person {
                return Err(StewardError::Invalid(
                    "every record to move must belong to the person".to_owned(),
                ));
            }
            if !positions.contains(&position) {
                positions.push(position);
            }
        }
        if positions.is_empty() {
            return Err(StewardError::Invalid("name at least one record to move".to_owned()));
        }
        if positions.len() == self.linker.persons[person as usize].members.len() {
            return Err(StewardError::Invalid(
                "a split must leave at least one record in the person".to_owned(),
            ));
        }
        let mut change = StewardChange { actor: actor.to_owned(), ..StewardChange::default() };
        let target = match into {
            Some(into_id) => {
                let target = self.person_of(into_id).ok_or(StewardError::NotFound("person"))?;
                let slot = &mut self.linker.persons[target as usize];
                if !slot.members.is_empty() {
                    return Err(StewardError::Conflict(
                        "`into` must be a person retired by a merge".to_owned(),
                    ));
                }
                slot.retired_into = None;
                change.revived_persons.push(into_id.to_owned());
                target
            }
            None => {
                let target = self.linker.new_person(false);
                self.linker.settle_new_persons();
                let target_id = self.linker.persons[target as usize].id.to_string();
                change.new_persons.push(target_id.clone());
                change.events.push(Event::new("person_created", &target_id, None));
                target
            }
        };
        let target_id = self.linker.persons[target as usize].id.to_string();
        change.events.push(
            Event::new("person_split", person_id, None)
                .other(&target_id)
                .detail(json!({"reason": reason})),
        );
        for &position in &positions {
            let moved = self.move_record(position, target, DecisionKind::Linked);
            change.events.push(
                Event::new("record_unlinked", person_id, Some(moved.record_id))
                    .other(&target_id)
                    .detail(json!({"reason": "split"})),
            );
            change.events.push(
                Event::new("record_linked", &target_id, Some(moved.record_id))
                    .detail(json!({"decision": "linked", "method": "split"})),
            );
            // The engine must not put them back.
            self.linker.separated.entry(position).or_default().push(person);
            change.separations.push((moved.record_id, person_id.to_owned()));
            change.moves.push(moved);
        }
        let generation = store.write_steward(&change)?;
        self.settled(generation);
        Ok(target_id)
    }
}
