//! One record at a time: the engine behind `mpi serve` (and `mpi link --online`).
//!
//! [`decide_one`] is the single step both use: candidates from the tantivy index (the
//! records stored before this one), comparison, scoring, [`Linker::decide`] and
//! [`Linker::apply`]. A batch run gives the same decisions for the same rows in the same
//! order (see `crate::link`).

use std::collections::HashMap;

use mpi_index::{BlockingIndex, BlockingIndexWriter, IndexError};
use mpi_matching::{
    BlockingKey, ComparableRecord, Demographics, Gamma, Issue, Model, NormalizedRecord, Score,
    Thresholds, blocking_keys, compare, probability,
};

use crate::engine::{
    Decision, DecisionKind, Entry, Linker, PersonKey, ReviewReason, ScoredCandidate, score_pairs,
};
use crate::link::{LinkError, WriteItem, write_results};
use crate::store::Store;
use crate::workspace::{INDEX_WRITER_BUDGET, Workspace, index_payload};

/// Candidates, scores and the decision for the record at `position`, applied to the
/// linker. Returns the decision, the person it left empty (if any) and the number of
/// pairs scored.
///
/// # Errors
/// When the index cannot be read.
pub fn decide_one(
    linker: &mut Linker,
    index: &BlockingIndex,
    position: usize,
    keys: &[BlockingKey],
    model: &Model,
    thresholds: Thresholds,
    max_candidates: usize,
) -> Result<(Decision, Option<PersonKey>, usize), IndexError> {
    let id = linker.entries[position].id;
    // The index holds exactly the records that arrived before this one.
    let candidates = index.candidates(keys, None, Some(id), max_candidates)?;
    let record = &linker.entries[position].record;
    let pairs: Vec<(usize, Gamma)> = candidates
        .into_iter()
        .filter_map(|candidate| linker.position(candidate.record_id))
        .map(|candidate| (candidate, compare(record, &linker.entries[candidate].record)))
        .collect();
    let scored = score_pairs(record, &pairs, model, &linker.entries);
    let mut decision = linker.decide(position, &scored, model, thresholds);
    let emptied = linker.apply(position, &mut decision);
    Ok((decision, emptied, pairs.len()))
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
}

/// The engine of the service: every record in memory, the blocking index with its one
/// writer, the model and the thresholds.
#[derive(Debug)]
pub struct Engine {
    /// Records and persons.
    pub linker: Linker,
    /// The blocking index.
    pub index: BlockingIndex,
    writer: BlockingIndexWriter,
    /// The normaliser.
    pub normalizer: mpi_matching::Normalizer,
    /// The scoring model.
    pub model: Model,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Most candidates per query.
    pub max_candidates: usize,
    by_source: HashMap<(String, String), usize>,
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
        let writer = index.writer(INDEX_WRITER_BUDGET / 4)?;
        let by_source = linker
            .entries
            .iter()
            .enumerate()
            .map(|(position, entry)| {
                ((entry.source_system.clone(), entry.local_id.clone()), position)
            })
            .collect();
        let next_id = store.max_record_id()? + 1;
        let engine = Engine {
            linker,
            index,
            writer,
            normalizer,
            model,
            thresholds,
            max_candidates,
            by_source,
            next_id,
            _lock: lock,
        };
        Ok((engine, store))
    }

    /// The position of a stored (not deleted) record.
    pub fn position_of(&self, source: &str, local_id: &str) -> Option<usize> {
        self.by_source.get(&(source.to_owned(), local_id.to_owned())).copied()
    }

    /// A person's handle from its id.
    pub fn person_of(&self, person_id: &str) -> Option<PersonKey> {
        self.linker.person_keys.get(person_id).copied()
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
    ) -> Result<Ingested, OnlineError> {
        let (record, issues) = self.prepare(raw);
        if !has_something_to_match(&record.record) {
            return Err(OnlineError::NothingToMatch { issues });
        }
        let issues: Vec<Issue> =
            issues.into_iter().filter(|issue| issue.kind.value_ignored()).collect();
        let existing = self.position_of(source, local_id);
        if let Some(position) = existing {
            let entry = &self.linker.entries[position];
            if entry.record.record == record.record {
                return Ok(Ingested {
                    record_id: entry.id,
                    person_id: self.linker.persons[entry.person as usize].id.clone(),
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
        let (position, is_update) = match existing {
            Some(position) => {
                self.linker.entries[position].record = record;
                (position, true)
            }
            None => {
                self.linker.entries.push(Entry {
                    id: self.next_id,
                    source_system: source.to_owned(),
                    local_id: local_id.to_owned(),
                    record,
                    person: PersonKey::MAX,
                    decision: DecisionKind::New,
                    probability: None,
                });
                self.next_id += 1;
                (self.linker.entries.len() - 1, false)
            }
        };
        let id = self.linker.entries[position].id;
        let result = self.decide_and_write(store, position, is_update, &keys, raw, &issues);
        match result {
            Ok((decision, review_id)) => {
                self.by_source.insert((source.to_owned(), local_id.to_owned()), position);
                let person = &self.linker.persons[decision.person as usize];
                let evidence = self.linker.evidence(position, &decision, &self.model);
                Ok(Ingested {
                    record_id: id,
                    person_id: person.id.clone(),
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
                    let person = self.linker.entries[position].person;
                    if person != PersonKey::MAX {
                        self.linker.persons[person as usize].members.retain(|&m| m != position);
                    }
                    self.linker.entries.pop();
                    self.next_id -= 1;
                }
                Err(error)
            }
        }
    }

    fn decide_and_write(
        &mut self,
        store: &mut Store,
        position: usize,
        is_update: bool,
        keys: &[BlockingKey],
        raw: &Demographics,
        issues: &[Issue],
    ) -> Result<(Decision, Option<String>), OnlineError> {
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
        let item = WriteItem {
            position,
            raw,
            issues,
            is_update,
            decision: &decision,
            review_id: review_id.as_deref(),
        };
        let generation =
            write_results(store, &self.linker, &[item], &retired, &self.model, self.thresholds)?;
        self.linker.settle_new_persons();
        let id = self.linker.entries[position].id;
        self.index_commit(generation, |writer| {
            if is_update { writer.update(id, keys) } else { writer.add(id, keys) }
        });
        Ok((decision, review_id))
    }

    /// Applies a change to the index and commits it as level with `generation`. The
    /// store has committed already, so a failure here is logged, not returned: the
    /// index is derived data and is rebuilt from the store on the next start.
    fn index_commit(
        &mut self,
        generation: u64,
        change: impl FnOnce(&mut BlockingIndexWriter) -> Result<(), IndexError>,
    ) {
        let result = change(&mut self.writer)
            .and_then(|()| self.writer.commit(&index_payload(generation)))
            .and_then(|()| self.index.reload());
        if let Err(error) = result {
            tracing::error!(%error, "the blocking index fell behind the store; it is rebuilt on restart");
        }
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
    ) -> Result<Option<Removed>, OnlineError> {
        let Some(position) = self.position_of(source, local_id) else {
            return Ok(None);
        };
        let entry = &self.linker.entries[position];
        let (id, person) = (entry.id, entry.person);
        let person_slot = &self.linker.persons[person as usize];
        let person_retired = person_slot.members == [position];
        let person_id = person_slot.id.clone();
        let generation = store.delete_record(id, person_retired.then_some(person_id.as_str()))?;
        self.linker.persons[person as usize].members.retain(|&member| member != position);
        // The entry stays in memory (positions are stable) but belongs to no one, and
        // no index or lookup can reach it.
        self.linker.entries[position].person = PersonKey::MAX;
        self.by_source.remove(&(source.to_owned(), local_id.to_owned()));
        self.index_commit(generation, |writer| writer.delete(id));
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
        let pairs: Vec<(usize, Gamma)> = candidates
            .into_iter()
            .filter_map(|candidate| linker.position(candidate.record_id))
            .filter(|&position| linker.entries[position].person != PersonKey::MAX)
            .map(|position| (position, compare(probe, &linker.entries[position].record)))
            .collect();
        let scored: Vec<ScoredCandidate> = score_pairs(probe, &pairs, &self.model, &linker.entries);
        let mut best: HashMap<PersonKey, (f64, usize, Gamma)> = HashMap::new();
        for (position, gamma, weight) in scored {
            let person = linker.entries[position].person;
            let slot = best.entry(person).or_insert((f64::NEG_INFINITY, position, gamma));
            if weight > slot.0 || (weight == slot.0 && position < slot.1) {
                *slot = (weight, position, gamma);
            }
        }
        let mut matches: Vec<(Match, usize)> = best
            .into_iter()
            .map(|(person, (weight, position, gamma))| {
                let score = self.model.score(&gamma, probe, &linker.entries[position].record);
                (Match { person, probability: probability(weight), score }, position)
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
pub fn has_something_to_match(record: &NormalizedRecord) -> bool {
    record.nhs_number.is_some()
        || !record.identifiers.is_empty()
        || !record.given_names.is_empty()
        || record.family_name.is_some()
        || record.date_of_birth.is_some()
}
