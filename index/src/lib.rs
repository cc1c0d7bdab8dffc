//! The blocking index: a tantivy index of each record's blocking keys, answering
//! "which records share keys with these?" ranked by how many keys they share.
//!
//! The index knows tantivy, not SQLite, HTTP or what a key means: keys are opaque
//! 64-bit values (hashes of personal data, so they never appear in errors or logs). It is
//! derived data: the caller can rebuild it from its store at any time, and records in
//! each commit's payload how level it is with that store.
//!
//! Results never depend on timing, segment layout or threads: candidates are ranked by
//! the number of distinct keys they share with the probe, ties broken by record id.
//!
//! ```
//! use mpi_index::BlockingIndex;
//! let index = BlockingIndex::create_in_ram()?;
//! let mut writer = index.writer(20_000_000)?;
//! writer.add(1, &[18151210, 41])?;
//! writer.add(2, &[18151210])?;
//! writer.commit("gen:1")?;
//! index.reload()?;
//! let found = index.candidates(&[18151210, 41], None, None, 10)?;
//! assert_eq!(found.iter().map(|c| (c.record_id, c.n_keys)).collect::<Vec<_>>(), [(1, 2), (2, 1)]);
//! assert_eq!(index.commit_payload().as_deref(), Some("gen:1"));
//! # Ok::<(), mpi_index::IndexError>(())
//! ```
#![warn(missing_docs)]

mod error;
mod filter;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::query::doc_predicate_query::{
    ConstOrVariableSegmentPredicate, DocPredicate, DocPredicateQuery,
};
use tantivy::schema::{Field, IndexRecordOption, NumericOptions, Schema};
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, InvertedIndexReader, ReloadPolicy,
    SegmentReader, TERMINATED, TantivyDocument, Term,
};

pub use crate::error::IndexError;
use crate::filter::KeyFilter;

/// A record's id, shared with the caller's store.
pub type RecordId = u64;

/// A blocking key, opaque to the index (the caller hashes its keys' text).
pub type Key = u64;

/// Segments with more documents than this are not merged further.
const MAX_DOCS_BEFORE_MERGE: usize = 200_000;

/// A candidate record and how many of the probe's keys it shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The candidate record.
    pub record_id: RecordId,
    /// Distinct probe keys it shares.
    pub n_keys: u32,
}

#[derive(Clone, Copy, Debug)]
struct Fields {
    rid: Field,
    rid_block: Field,
    key: Field,
}

/// A record's document is found for deletion through its block of ids: `id >>` this.
/// The id itself is only a fast field (a column), not a term: a million distinct id
/// terms cost a bulk load seconds of sorting and term-dictionary building, where a
/// block term of 256 ids costs next to nothing and still narrows a delete to a few
/// hundred documents, whose ids the column then checks.
const RID_BLOCK_BITS: u32 = 8;

/// The record id's field: the column every hit and every delete reads the id from.
const RID: &str = "rid";

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let rid = builder.add_u64_field(RID, NumericOptions::default().set_fast());
    // No field norms: nothing is scored, candidates are ranked by the keys they share.
    let rid_block = builder.add_u64_field("rid_block", NumericOptions::default().set_indexed());
    let key = builder.add_u64_field("key", NumericOptions::default().set_indexed());
    (builder.build(), Fields { rid, rid_block, key })
}

/// The documents of a set of records, for deleting them: in each segment, the
/// documents of the records' id blocks whose id column holds one of the ids.
#[derive(Debug)]
struct RecordDocs {
    rid_block: Field,
    /// Sorted, distinct.
    ids: Vec<RecordId>,
}

impl RecordDocs {
    fn query(rid_block: Field, record_ids: &[RecordId]) -> DocPredicateQuery {
        let mut ids = record_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        DocPredicateQuery::from(RecordDocs { rid_block, ids })
    }
}

impl DocPredicate for RecordDocs {
    type SegmentDocPredicate = fn(DocId) -> bool;

    fn doc_predicate(
        &self,
        segment: &SegmentReader,
    ) -> tantivy::Result<ConstOrVariableSegmentPredicate<Self::SegmentDocPredicate>> {
        let blocks = segment.inverted_index(self.rid_block)?;
        let rids = segment.fast_fields().u64(RID)?;
        let mut docs: Vec<DocId> = Vec::new();
        for block in self.ids.chunk_by(|a, b| a >> RID_BLOCK_BITS == b >> RID_BLOCK_BITS) {
            let term = Term::from_field_u64(self.rid_block, block[0] >> RID_BLOCK_BITS);
            let Some(mut postings) = blocks.read_postings(&term, IndexRecordOption::Basic)? else {
                continue;
            };
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if rids.first(doc).is_some_and(|id| block.binary_search(&id).is_ok()) {
                    docs.push(doc);
                }
                doc = postings.advance();
            }
        }
        if docs.is_empty() {
            return Ok(ConstOrVariableSegmentPredicate::Const(false));
        }
        // Each block's postings are in document order, but blocks interleave (a document
        // is under one block's term only, so none comes twice).
        docs.sort_unstable();
        Ok(ConstOrVariableSegmentPredicate::Variable {
            predicate: |_| true,
            necessary_condition: Box::new(DocList { docs, at: 0 }),
        })
    }
}

/// Sorted, distinct documents, walked in order.
struct DocList {
    docs: Vec<DocId>,
    at: usize,
}

impl DocSet for DocList {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.docs.get(self.at).copied().unwrap_or(TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        u32::try_from(self.docs.len() - self.at).unwrap_or(u32::MAX)
    }
}

/// The blocking index (reads). Cheap to share between threads.
#[derive(Clone)]
pub struct BlockingIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl std::fmt::Debug for BlockingIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingIndex").field("n_records", &self.num_records()).finish()
    }
}

impl BlockingIndex {
    /// Opens the index in `dir`, creating the folder and an empty index if needed. A
    /// tantivy index there with other fields (laid out by an older version) is emptied,
    /// as derived data: it opens with no commit payload, for its owner to rebuild.
    ///
    /// # Errors
    /// [`IndexError::Open`] when the folder cannot be created or holds something else.
    pub fn open_or_create(dir: &Path) -> Result<BlockingIndex, IndexError> {
        let open_error = |source| IndexError::Open { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Open {
            path: dir.to_owned(),
            source: tantivy::TantivyError::from(source),
        })?;
        let directory = MmapDirectory::open(dir)
            .map_err(|error| open_error(tantivy::TantivyError::from(error)))?;
        let (schema, fields) = schema();
        let index = match Index::open_or_create(directory, schema.clone()) {
            // An index laid out by another version of this crate (its fields differ) is
            // derived data: it is emptied, and the caller, finding no commit payload of
            // its own, rebuilds it from its store.
            Err(tantivy::TantivyError::SchemaError(_)) => {
                std::fs::remove_dir_all(dir)
                    .and_then(|()| std::fs::create_dir_all(dir))
                    .map_err(|source| open_error(tantivy::TantivyError::from(source)))?;
                let directory = MmapDirectory::open(dir)
                    .map_err(|error| open_error(tantivy::TantivyError::from(error)))?;
                Index::create(directory, schema, tantivy::IndexSettings::default())
                    .map_err(open_error)?
            }
            opened => opened.map_err(open_error)?,
        };
        BlockingIndex::from_index(index, fields)
    }

    /// An index in memory, for tests and benches.
    ///
    /// # Errors
    /// When tantivy fails to set up the reader.
    pub fn create_in_ram() -> Result<BlockingIndex, IndexError> {
        let (schema, fields) = schema();
        BlockingIndex::from_index(Index::create_in_ram(schema), fields)
    }

    fn from_index(index: Index, fields: Fields) -> Result<BlockingIndex, IndexError> {
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(BlockingIndex { index, reader, fields })
    }

    /// The one writer (tantivy allows one per index at a time).
    ///
    /// # Errors
    /// [`IndexError::Tantivy`] when another writer holds the lock.
    pub fn writer(&self, memory_budget_bytes: usize) -> Result<BlockingIndexWriter, IndexError> {
        // Two indexing threads when the budget allows (tantivy needs 15 MB a thread):
        // segment layout never changes results, so this is free of consequences.
        let threads = if memory_budget_bytes >= 60_000_000 { 2 } else { 1 };
        let writer: IndexWriter =
            self.index.writer_with_num_threads(threads, memory_budget_bytes.max(15_000_000))?;
        // Large segments are never merged again: merging a million documents stalls a
        // serving process (CPU and memory) for seconds, while queries over a few more
        // segments cost microseconds. Small segments, from frequent commits, still merge.
        let mut policy = tantivy::indexer::LogMergePolicy::default();
        policy.set_max_docs_before_merge(MAX_DOCS_BEFORE_MERGE);
        writer.set_merge_policy(Box::new(policy));
        Ok(BlockingIndexWriter { writer, fields: self.fields })
    }

    /// A writer for one large batch of documents: as [`BlockingIndex::writer`], but it
    /// never merges. Merges started while a batch indexes would be cut off when it
    /// commits and drops the writer, their work wasted; later writers merge only small
    /// segments.
    ///
    /// # Errors
    /// [`IndexError::Tantivy`] when another writer holds the lock.
    pub fn bulk_writer(
        &self,
        memory_budget_bytes: usize,
    ) -> Result<BlockingIndexWriter, IndexError> {
        let writer = self.writer(memory_budget_bytes)?;
        writer.writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        Ok(writer)
    }

    /// Makes the last commit visible to searches.
    ///
    /// # Errors
    /// When tantivy cannot open the new segments.
    pub fn reload(&self) -> Result<(), IndexError> {
        Ok(self.reader.reload()?)
    }

    /// Live records in the current snapshot.
    pub fn num_records(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The payload of the last commit, if any.
    pub fn commit_payload(&self) -> Option<String> {
        self.index.load_metas().ok().and_then(|metas| metas.payload)
    }

    /// The ids of every live record in the current snapshot, sorted.
    ///
    /// # Errors
    /// When a segment's id column cannot be read.
    pub fn record_ids(&self) -> Result<Vec<RecordId>, IndexError> {
        let searcher = self.reader.searcher();
        let mut ids = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let rids = segment.fast_fields().u64(RID)?;
            let alive = segment.alive_bitset();
            for doc in 0..segment.max_doc() {
                if alive.is_none_or(|alive| alive.is_alive(doc))
                    && let Some(id) = rids.first(doc)
                {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// A snapshot for many queries (for example from rayon workers).
    ///
    /// # Errors
    /// When a segment's key index or id column cannot be opened.
    pub fn searcher(&self) -> Result<IndexSearcher, IndexError> {
        IndexSearcher::new(&self.reader, self.fields, None)
    }

    /// See [`IndexSearcher::candidates`]; takes a fresh snapshot.
    ///
    /// # Errors
    /// When reading the index fails.
    pub fn candidates(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        self.searcher()?.candidates(keys, below, exclude, limit)
    }
}

struct SegmentView {
    id: tantivy::index::SegmentId,
    /// Large enough to be worth a key filter.
    wants_filter: bool,
    keys: Arc<InvertedIndexReader>,
    rids: Column<u64>,
    alive: Option<tantivy::fastfield::AliveBitSet>,
    /// The segment's keys as a filter, asked before its term dictionary (a served
    /// index's searchers have them).
    filter: Option<Arc<KeyFilter>>,
}

/// How many of a served index's committed segments have a key filter
/// ([`LiveIndex::key_filters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyFilterCensus {
    /// Segments with their filter made.
    pub made: usize,
    /// Segments large enough for a filter still to be made.
    pub pending: usize,
    /// Segments too small to want one.
    pub unwanted: usize,
}

/// Segments with fewer documents than this get no key filter: their term dictionaries
/// are small enough to stay in the caches. (Every segment gets one in this crate's
/// tests, which run the filtered path.)
const MIN_FILTERED_DOCS: u32 = if cfg!(test) { 1 } else { 10_000 };

/// A snapshot of the index for queries. Cheap to share between threads.
pub struct IndexSearcher {
    _searcher: tantivy::Searcher,
    segments: Vec<SegmentView>,
    key_field: Field,
}

impl std::fmt::Debug for IndexSearcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexSearcher").field("n_segments", &self.segments.len()).finish()
    }
}

impl IndexSearcher {
    /// A snapshot; with `previous`, the key filters its segments already had there
    /// (segments never change, so a filter is made once for each).
    fn new(
        reader: &IndexReader,
        fields: Fields,
        previous: Option<&IndexSearcher>,
    ) -> Result<IndexSearcher, IndexError> {
        let searcher = reader.searcher();
        let segments = searcher
            .segment_readers()
            .iter()
            .map(|segment| {
                Ok(SegmentView {
                    id: segment.segment_id(),
                    wants_filter: segment.max_doc() >= MIN_FILTERED_DOCS,
                    keys: segment.inverted_index(fields.key)?,
                    rids: segment.fast_fields().u64(RID)?,
                    alive: segment.alive_bitset().cloned(),
                    filter: previous.and_then(|previous| previous.filter_of(segment.segment_id())),
                })
            })
            .collect::<Result<_, tantivy::TantivyError>>()?;
        Ok(IndexSearcher { _searcher: searcher, segments, key_field: fields.key })
    }

    fn filter_of(&self, id: tantivy::index::SegmentId) -> Option<Arc<KeyFilter>> {
        self.segments.iter().find(|segment| segment.id == id)?.filter.clone()
    }

    /// Records sharing at least one key with `keys`, ranked by how many distinct keys
    /// they share (most first), ties by record id (lowest first), at most `limit`.
    /// Only records with an id below `below` are considered when it is given, and
    /// `exclude` (the probe itself) is never returned. Duplicate probe keys count once.
    ///
    /// # Errors
    /// When reading postings fails.
    pub fn candidates(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let mut counts: HashMap<RecordId, u32> = HashMap::new();
        self.count(keys, below, exclude, &|_| false, &mut counts)?;
        Ok(rank(counts, limit))
    }

    /// Adds, for each record sharing a distinct key with `keys`, how many it shares.
    fn count(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        hidden: &dyn Fn(RecordId) -> bool,
        counts: &mut HashMap<RecordId, u32>,
    ) -> Result<(), IndexError> {
        let mut distinct = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for key in distinct {
            let term = Term::from_field_u64(self.key_field, key);
            for segment in &self.segments {
                if segment
                    .filter
                    .as_ref()
                    .is_some_and(|filter| !filter.may_contain(term.serialized_value_bytes()))
                {
                    continue;
                }
                let Some(mut postings) =
                    segment.keys.read_postings(&term, IndexRecordOption::Basic)?
                else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    let alive = segment.alive.as_ref().is_none_or(|alive| alive.is_alive(doc));
                    if alive && let Some(record_id) = segment.rids.first(doc) {
                        let wanted = below.is_none_or(|below| record_id < below)
                            && exclude != Some(record_id)
                            && !hidden(record_id);
                        if wanted {
                            *counts.entry(record_id).or_default() += 1;
                        }
                    }
                    doc = postings.advance();
                }
            }
        }
        Ok(())
    }
}

/// Segments of a [`LiveIndex`] whose key filters are still to be made: taken from the
/// index quickly, made without it ([`UnfilteredSegments::make`], seconds of CPU for a
/// million records' segments) and handed back ([`LiveIndex::add_filters`]), so that
/// neither start-up nor a commit waits for them, and queries go on meanwhile (without
/// the filters, more slowly, with the same answers).
pub struct UnfilteredSegments {
    segments: Vec<(tantivy::index::SegmentId, Arc<InvertedIndexReader>)>,
}

impl std::fmt::Debug for UnfilteredSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnfilteredSegments").field("n_segments", &self.segments.len()).finish()
    }
}

impl UnfilteredSegments {
    /// True when every segment that wants a filter has one.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Makes the filters, in parallel (a million records' segments take a few seconds
    /// of CPU; one new segment, a moment).
    ///
    /// # Errors
    /// When a segment's term dictionary cannot be read.
    pub fn make(self) -> Result<SegmentKeyFilters, IndexError> {
        use rayon::prelude::*;
        let made = self
            .segments
            .par_iter()
            .map(|(id, keys)| Ok((*id, Arc::new(KeyFilter::of_terms(keys.terms())?))))
            .collect::<std::io::Result<_>>()?;
        Ok(SegmentKeyFilters(made))
    }
}

/// Key filters made for a [`LiveIndex`]'s segments, to hand back to it.
pub struct SegmentKeyFilters(Vec<(tantivy::index::SegmentId, Arc<KeyFilter>)>);

impl std::fmt::Debug for SegmentKeyFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentKeyFilters").field("n_filters", &self.0.len()).finish()
    }
}

/// Most shared keys first, ties by record id, at most `limit`.
fn rank(counts: HashMap<RecordId, u32>, limit: usize) -> Vec<Candidate> {
    rank_candidates(
        counts.into_iter().map(|(record_id, n_keys)| Candidate { record_id, n_keys }).collect(),
        limit,
    )
}

/// The one ranking every candidate source answers with: most shared keys first, ties
/// by record id (never by timing or layout), at most `limit`.
fn rank_candidates(mut candidates: Vec<Candidate>, limit: usize) -> Vec<Candidate> {
    candidates.sort_unstable_by(|a, b| b.n_keys.cmp(&a.n_keys).then(a.record_id.cmp(&b.record_id)));
    candidates.truncate(limit);
    candidates
}

/// Ranks the hits of [`MemoryIndex::hits`] (a record id once for each key it shares),
/// as every candidate source does: most shared keys first, ties by record id, at most
/// `limit`.
pub fn rank_hits(mut hits: Vec<RecordId>, limit: usize) -> Vec<Candidate> {
    hits.sort_unstable();
    let counted = hits
        .chunk_by(|a, b| a == b)
        .map(|run| Candidate { record_id: run[0], n_keys: run.len() as u32 })
        .collect();
    rank_candidates(counted, limit)
}

/// Anything that answers candidate queries with [`IndexSearcher::candidates`]'s contract.
pub trait CandidateSource {
    /// See [`IndexSearcher::candidates`].
    ///
    /// # Errors
    /// When reading the index fails.
    fn candidates(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError>;
}

impl CandidateSource for BlockingIndex {
    fn candidates(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        BlockingIndex::candidates(self, keys, below, exclude, limit)
    }
}

/// A near-real-time index for a service: every change is visible to the next query at
/// once, through an in-memory overlay of the changes since the last commit, while
/// tantivy commits (which cost a sync and a new segment) happen in groups.
pub struct LiveIndex {
    index: BlockingIndex,
    writer: BlockingIndexWriter,
    searcher: IndexSearcher,
    /// Keys of the records added or updated since the last commit.
    pending: HashMap<Key, Vec<RecordId>>,
    pending_keys: HashMap<RecordId, Vec<Key>>,
    /// Records whose committed documents no longer count (updated or deleted since).
    stale: std::collections::HashSet<RecordId>,
    changed_since: Option<std::time::Instant>,
}

impl std::fmt::Debug for LiveIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIndex").field("pending", &self.pending_keys.len()).finish()
    }
}

impl LiveIndex {
    /// Takes the index's one writer.
    ///
    /// # Errors
    /// When the writer or a searcher cannot be opened.
    pub fn new(index: BlockingIndex, memory_budget_bytes: usize) -> Result<LiveIndex, IndexError> {
        let writer = index.writer(memory_budget_bytes)?;
        let searcher = index.searcher()?;
        Ok(LiveIndex {
            index,
            writer,
            searcher,
            pending: HashMap::new(),
            pending_keys: HashMap::new(),
            stale: std::collections::HashSet::new(),
            changed_since: None,
        })
    }

    fn forget_pending(&mut self, record_id: RecordId) {
        if let Some(keys) = self.pending_keys.remove(&record_id) {
            for key in keys {
                if let Some(ids) = self.pending.get_mut(&key) {
                    ids.retain(|&id| id != record_id);
                    if ids.is_empty() {
                        self.pending.remove(&key);
                    }
                }
            }
        }
    }

    fn note_change(&mut self) {
        self.changed_since.get_or_insert_with(std::time::Instant::now);
    }

    /// Adds a record (visible at once).
    ///
    /// # Errors
    /// When tantivy refuses the document.
    pub fn add(&mut self, record_id: RecordId, keys: &[Key]) -> Result<(), IndexError> {
        self.writer.add(record_id, keys)?;
        self.forget_pending(record_id);
        for &key in keys {
            let ids = self.pending.entry(key).or_default();
            if !ids.contains(&record_id) {
                ids.push(record_id);
            }
        }
        self.pending_keys.insert(record_id, keys.to_vec());
        self.note_change();
        Ok(())
    }

    /// Replaces a record's keys (visible at once).
    ///
    /// # Errors
    /// When tantivy refuses the document.
    pub fn update(&mut self, record_id: RecordId, keys: &[Key]) -> Result<(), IndexError> {
        self.writer.delete(record_id)?;
        self.stale.insert(record_id);
        self.add(record_id, keys)
    }

    /// Removes a record (at once).
    ///
    /// # Errors
    /// Never in practice.
    pub fn delete(&mut self, record_id: RecordId) -> Result<(), IndexError> {
        self.writer.delete(record_id)?;
        self.stale.insert(record_id);
        self.forget_pending(record_id);
        self.note_change();
        Ok(())
    }

    /// Marks the index as changed, so that the next commit records a new payload even
    /// without new keys (the caller's store moved on).
    pub fn touch(&mut self) {
        self.note_change();
    }

    /// Changes not yet committed, and since when.
    pub fn uncommitted(&self) -> Option<std::time::Instant> {
        self.changed_since
    }

    /// Commits the changes with a payload and makes them the committed state.
    ///
    /// # Errors
    /// When the commit fails; the overlay then still answers for the changes.
    pub fn commit(&mut self, payload: &str) -> Result<(), IndexError> {
        self.writer.commit(payload)?;
        self.index.reload()?;
        self.searcher =
            IndexSearcher::new(&self.index.reader, self.index.fields, Some(&self.searcher))?;
        self.pending.clear();
        self.pending_keys.clear();
        self.stale.clear();
        self.changed_since = None;
        Ok(())
    }

    /// The committed segments that want a key filter and have none yet (after start-up,
    /// or a commit that brought a large segment in).
    pub fn unfiltered_segments(&self) -> UnfilteredSegments {
        UnfilteredSegments {
            segments: self
                .searcher
                .segments
                .iter()
                .filter(|segment| segment.wants_filter && segment.filter.is_none())
                .map(|segment| (segment.id, Arc::clone(&segment.keys)))
                .collect(),
        }
    }

    /// Puts in key filters made from [`LiveIndex::unfiltered_segments`]; those of
    /// segments a commit has since merged away are dropped.
    pub fn add_filters(&mut self, made: SegmentKeyFilters) {
        for (id, filter) in made.0 {
            if let Some(segment) =
                self.searcher.segments.iter_mut().find(|segment| segment.id == id)
            {
                segment.filter = Some(filter);
            }
        }
    }

    /// The committed segments by their key filter: made, still to be made, and not
    /// wanted (segments too small for one).
    pub fn key_filters(&self) -> KeyFilterCensus {
        let mut census = KeyFilterCensus::default();
        for segment in &self.searcher.segments {
            match (segment.wants_filter, segment.filter.is_some()) {
                (_, true) => census.made += 1,
                (true, false) => census.pending += 1,
                (false, false) => census.unwanted += 1,
            }
        }
        census
    }

    /// Records in the committed index plus those added since (an estimate while
    /// updates are pending).
    pub fn num_records(&self) -> u64 {
        self.index.num_records()
            + self.pending_keys.keys().filter(|id| !self.stale.contains(id)).count() as u64
    }

    /// The index's last commit payload.
    pub fn commit_payload(&self) -> Option<String> {
        self.index.commit_payload()
    }
}

impl CandidateSource for LiveIndex {
    fn candidates(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let mut counts: HashMap<RecordId, u32> = HashMap::new();
        let stale = |id: RecordId| self.stale.contains(&id) || self.pending_keys.contains_key(&id);
        self.searcher.count(keys, below, exclude, &stale, &mut counts)?;
        let mut distinct = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for key in distinct {
            for &record_id in self.pending.get(&key).into_iter().flatten() {
                if below.is_none_or(|below| record_id < below) && exclude != Some(record_id) {
                    *counts.entry(record_id).or_default() += 1;
                }
            }
        }
        Ok(rank(counts, limit))
    }
}

/// The index writer. Changes become visible after [`BlockingIndexWriter::commit`] and
/// [`BlockingIndex::reload`].
pub struct BlockingIndexWriter {
    writer: IndexWriter,
    fields: Fields,
}

impl std::fmt::Debug for BlockingIndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockingIndexWriter")
    }
}

impl BlockingIndexWriter {
    /// Adds a record under its keys.
    ///
    /// # Errors
    /// When tantivy refuses the document.
    pub fn add(&mut self, record_id: RecordId, keys: &[Key]) -> Result<(), IndexError> {
        let mut document = TantivyDocument::new();
        document.add_u64(self.fields.rid, record_id);
        document.add_u64(self.fields.rid_block, record_id >> RID_BLOCK_BITS);
        for &key in keys {
            document.add_u64(self.fields.key, key);
        }
        self.writer.add_document(document)?;
        Ok(())
    }

    /// Replaces a record's keys.
    ///
    /// # Errors
    /// When tantivy refuses the document.
    pub fn update(&mut self, record_id: RecordId, keys: &[Key]) -> Result<(), IndexError> {
        self.delete(record_id)?;
        self.add(record_id, keys)
    }

    /// Removes a record.
    ///
    /// # Errors
    /// When tantivy cannot build the query.
    pub fn delete(&mut self, record_id: RecordId) -> Result<(), IndexError> {
        self.delete_many(&[record_id])
    }

    /// Removes many records in one operation: for a batch that replaces a large share
    /// of the index. Each [`BlockingIndexWriter::delete`] holds a query in tantivy's
    /// delete queue until the commit (400,000 term deletes one by one once held
    /// 0.4 GB); one query for them all holds 8 bytes a record. Records added after
    /// this call are not affected, so call it before adding their new keys.
    ///
    /// # Errors
    /// When tantivy cannot build the query.
    pub fn delete_many(&mut self, record_ids: &[RecordId]) -> Result<(), IndexError> {
        if record_ids.is_empty() {
            return Ok(());
        }
        self.writer.delete_query(Box::new(RecordDocs::query(self.fields.rid_block, record_ids)))?;
        Ok(())
    }

    /// Removes every record (before a rebuild).
    ///
    /// # Errors
    /// When tantivy fails.
    pub fn delete_all(&mut self) -> Result<(), IndexError> {
        self.writer.delete_all_documents()?;
        Ok(())
    }

    /// Commits with a payload the caller uses to know how level the index is with
    /// its store.
    ///
    /// # Errors
    /// When the commit fails; the index keeps its previous commit.
    pub fn commit(&mut self, payload: &str) -> Result<(), IndexError> {
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(payload);
        prepared.commit()?;
        Ok(())
    }

    /// Prepares a commit (the costly part: flushing segments), then asks `payload` for
    /// the commit payload, which may wait for something else to finish: with a payload
    /// the changes are committed, without one they are dropped. Returns whether it
    /// committed.
    ///
    /// # Errors
    /// When tantivy fails; the index keeps its previous commit.
    pub fn commit_when(
        &mut self,
        payload: impl FnOnce() -> Option<String>,
    ) -> Result<bool, IndexError> {
        let mut prepared = self.writer.prepare_commit()?;
        match payload() {
            Some(payload) => {
                prepared.set_payload(&payload);
                prepared.commit()?;
                Ok(true)
            }
            None => {
                prepared.abort()?;
                Ok(false)
            }
        }
    }

    /// Drops uncommitted changes.
    ///
    /// # Errors
    /// When tantivy fails.
    pub fn rollback(&mut self) -> Result<(), IndexError> {
        self.writer.rollback()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// An in-memory blocking index with the same ranking as [`BlockingIndex`], for batch
/// runs: a batch holds every record's keys in memory already, and a sorted posting
/// list answers a query in a few microseconds where tantivy's term dictionary needs
/// one lookup per key per segment.
#[derive(Debug, Default)]
pub struct MemoryIndex {
    /// Distinct keys, [`spread`], sorted.
    keys: Vec<Key>,
    /// `keys[directory[p]..directory[p + 1]]` are the keys whose top `prefix_bits` bits
    /// are `p`: keys are hashes, so each range holds a key or two, and a lookup costs a
    /// couple of memory reads where a binary search over millions of keys costs twenty.
    directory: Vec<u32>,
    prefix_bits: u32,
    /// `ids[offsets[i]..offsets[i + 1]]` hold the records under `keys[i]`, sorted, each
    /// as its distance from `base` (the smallest record id): four bytes, not eight.
    offsets: Vec<u32>,
    base: RecordId,
    ids: Vec<u32>,
}

/// Builds a [`MemoryIndex`] a record at a time, so that a caller can make records'
/// keys a chunk at a time and never hold them all beside the index.
#[derive(Debug, Default)]
pub struct MemoryIndexBuilder {
    /// Every (key, record id) pair, flat.
    pairs: Vec<[u64; 2]>,
}

impl MemoryIndexBuilder {
    /// A builder with room for `n_keys` (key, record) pairs. Room never filled costs
    /// address space, not memory, so an overestimate is cheap and an underestimate
    /// only means the pairs are copied as they grow.
    pub fn with_capacity(n_keys: usize) -> MemoryIndexBuilder {
        MemoryIndexBuilder { pairs: Vec::with_capacity(n_keys) }
    }

    /// Adds a record under its keys (repeated keys count once).
    pub fn add(&mut self, record_id: RecordId, keys: &[Key]) {
        self.pairs.extend(keys.iter().map(|&key| [spread(key), record_id]));
    }

    /// The index.
    ///
    /// # Panics
    /// When the record ids span 2^32 or more (ids are given out in order: that is four
    /// billion records).
    pub fn build(self) -> MemoryIndex {
        use rayon::slice::ParallelSliceMut;
        let mut pairs = self.pairs;
        // In place, on every core (13 million pairs at a million records).
        pairs.par_sort_unstable();
        pairs.dedup();
        let base = pairs.iter().map(|&[_, record_id]| record_id).min().unwrap_or(0);
        // Room for the worst case (every key distinct), most of it never touched.
        let mut index = MemoryIndex {
            keys: Vec::with_capacity(pairs.len()),
            directory: Vec::new(),
            prefix_bits: 0,
            offsets: Vec::with_capacity(pairs.len() + 1),
            base,
            ids: Vec::with_capacity(pairs.len()),
        };
        let offset = |n: usize| u32::try_from(n).expect("fewer than 2^32 postings");
        for (position, &[key, record_id]) in pairs.iter().enumerate() {
            if index.keys.last() != Some(&key) {
                index.keys.push(key);
                index.offsets.push(offset(position));
            }
            index.ids.push(
                u32::try_from(record_id - base).expect("record ids of one index span under 2^32"),
            );
        }
        index.offsets.push(offset(pairs.len()));
        drop(pairs);
        index.prefix_bits = index.keys.len().max(1).ilog2().clamp(1, 26);
        let n_prefixes = 1usize << index.prefix_bits;
        index.directory = Vec::with_capacity(n_prefixes + 1);
        let mut next = 0;
        for prefix in 0..=n_prefixes {
            while next < index.keys.len() && index.prefix(index.keys[next]) < prefix {
                next += 1;
            }
            index.directory.push(u32::try_from(next).expect("fewer than 2^32 distinct keys"));
        }
        index
    }
}

/// A key as the memory index files it: multiplied by an odd constant, a one-to-one map
/// (two keys are equal exactly when their spreads are) that carries every bit of the key
/// into its top bits, which the directory reads. Keys need not be uniform in their top
/// bits: the tantivy index wants them alike there (see `mpi_matching::keys`).
fn spread(key: Key) -> Key {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl MemoryIndex {
    /// Builds the index from (record id, keys) pairs.
    pub fn build<K: AsRef<[Key]>>(records: impl IntoIterator<Item = (RecordId, K)>) -> MemoryIndex {
        let mut builder = MemoryIndexBuilder::default();
        for (record_id, keys) in records {
            builder.add(record_id, keys.as_ref());
        }
        builder.build()
    }

    fn prefix(&self, key: Key) -> usize {
        (key >> (64 - self.prefix_bits)) as usize
    }

    /// The postings of each distinct key of `keys` that the index holds. The look-ups
    /// go a step at a time for every key (directory, then keys, then offsets): each
    /// step's reads are independent of one another, and the processor overlaps their
    /// cache misses, where key by key it would wait on each miss in turn (at a million
    /// records the index is far larger than the caches, and these misses were most of
    /// a query's time).
    fn postings_of(&self, keys: &[Key]) -> impl Iterator<Item = &[u32]> {
        let mut spread_keys: Vec<Key> = keys.iter().map(|&key| spread(key)).collect();
        spread_keys.sort_unstable();
        spread_keys.dedup();
        if self.keys.is_empty() {
            // An empty index has no directory to read.
            spread_keys.clear();
        }
        let ranges: Vec<(usize, usize)> = spread_keys
            .iter()
            .map(|&key| {
                let prefix = self.prefix(key);
                (self.directory[prefix] as usize, self.directory[prefix + 1] as usize)
            })
            .collect();
        let slots: Vec<usize> = spread_keys
            .iter()
            .zip(ranges)
            .filter_map(|(key, (start, end))| {
                self.keys[start..end].binary_search(key).ok().map(|slot| start + slot)
            })
            .collect();
        let spans: Vec<(usize, usize)> = slots
            .iter()
            .map(|&slot| (self.offsets[slot] as usize, self.offsets[slot + 1] as usize))
            .collect();
        spans.into_iter().map(|(start, end)| &self.ids[start..end])
    }

    /// Adds to `hits` a record id for every distinct key of `keys` each record is
    /// indexed under, for the records `visible` keeps; [`rank_hits`] then ranks them
    /// as [`MemoryIndex::candidates`] would. For callers whose visible records are not
    /// simply those below an id, or who ask two indexes at once (a batch that updates
    /// records sees each one's old values before its turn and its new values after).
    pub fn hits(&self, keys: &[Key], visible: impl Fn(RecordId) -> bool, hits: &mut Vec<RecordId>) {
        let base = self.base;
        for postings in self.postings_of(keys) {
            hits.extend(
                postings
                    .iter()
                    .map(|&id| base + RecordId::from(id))
                    .filter(|&record_id| visible(record_id)),
            );
        }
    }

    /// Same contract as [`IndexSearcher::candidates`].
    pub fn candidates(
        &self,
        keys: &[Key],
        below: Option<RecordId>,
        exclude: Option<RecordId>,
        limit: usize,
    ) -> Vec<Candidate> {
        // Every posting of every key, then counted by sorting: posting lists are short
        // and sorting a few hundred ids beats hashing them. The excluded record is
        // dropped once counted, so whole posting lists are copied as they are.
        let mut hits: Vec<u32> = Vec::new();
        let base = self.base;
        for postings in self.postings_of(keys) {
            let end = below.map_or(postings.len(), |below| {
                postings.partition_point(|&id| base + RecordId::from(id) < below)
            });
            hits.extend_from_slice(&postings[..end]);
        }
        hits.sort_unstable();
        let counted = hits
            .chunk_by(|a, b| a == b)
            .map(|run| Candidate {
                record_id: base + RecordId::from(run[0]),
                n_keys: run.len() as u32,
            })
            .filter(|candidate| exclude != Some(candidate.record_id))
            .collect();
        rank_candidates(counted, limit)
    }
}
