//! A data folder opened for linking: the store, the blocking index level with it,
//! and the in-memory linkage state loaded from it.

use std::path::{Path, PathBuf};

use mpi_index::{BlockingIndex, RecordId};
use mpi_matching::{
    BlockingKey, ComparableRecord, NORMALIZATION_VERSION, NormalizeOptions, Normalizer,
    blocking_keys,
};
use rayon::prelude::*;

use crate::engine::{DecisionKind, Entry, Linker, PersonKey};
use crate::error::StoreError;
use crate::store::{LoadedRecord, Store};

/// Errors opening or keeping a data folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking index failed.
    #[error("blocking index failed")]
    Index(#[from] mpi_index::IndexError),
    /// Another process (a running `mpi serve`, another `mpi link`) holds the data folder.
    #[error(
        "the data folder {} is in use by another mpi process (a running `mpi serve`?): one process owns a store at a time",
        dir.display()
    )]
    InUse {
        /// The data folder.
        dir: PathBuf,
    },
    /// A person id in the store is not a UUID (the store was edited by hand).
    #[error("the store holds a person id that is not a UUID: {id:?}")]
    PersonId {
        /// The id as stored (a generated id, not personal data).
        id: String,
    },
    /// The lock file could not be opened.
    #[error("could not open the lock file in {}", dir.display())]
    Lock {
        /// The data folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Records loaded and prepared at a time when a workspace opens.
const LOAD_CHUNK: usize = 50_000;

/// Memory the index writer may use for indexing before it flushes a segment.
pub const INDEX_WRITER_BUDGET: usize = 64 * 1024 * 1024;

/// The key format an index payload names (`k11`: kind-tagged 40-bit keys, 36 bits of
/// hash, of twelve kinds, the identifier's one-edit keys among them; since `k9` a
/// family name's particle written apart joins the next word, `o brien` as `obrien`;
/// since `k10` the home with the birth date is a kind of its own; since `k11` a home's
/// street is named by the word before its type, `mill` in `5 mill road`; since `k12`
/// a former family name is keyed with the birth date as the family name is). A
/// change to what `mpi_matching::blocking_keys` makes moves it on, so that an index
/// built by an older version with other keys is rebuilt.
const KEY_FORMAT: &str = "k12";

/// The store generation an index payload names, when it names one in this key format.
fn payload_generation(payload: &str) -> Option<u64> {
    payload.strip_prefix(KEY_FORMAT)?.strip_prefix(" gen:")?.parse().ok()
}

/// The index commit payload that says the index is level with store generation `g`,
/// in this key format.
pub fn index_payload(generation: u64) -> String {
    format!("{KEY_FORMAT} gen:{generation}")
}

/// A stored person id as the engine holds it.
fn parse_person_id(id: &str) -> Result<uuid::Uuid, WorkspaceError> {
    uuid::Uuid::parse_str(id).map_err(|_| WorkspaceError::PersonId { id: id.to_owned() })
}

/// Takes the data folder's exclusive lock (released when the file is dropped or the
/// process ends, however it ends).
fn lock_dir(dir: &Path) -> Result<std::fs::File, WorkspaceError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|source| WorkspaceError::Lock { dir: dir.to_owned(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(WorkspaceError::InUse { dir: dir.to_owned() })
        }
        Err(std::fs::TryLockError::Error(source)) => {
            Err(WorkspaceError::Lock { dir: dir.to_owned(), source })
        }
    }
}

/// An opened data folder.
#[derive(Debug)]
pub struct Workspace {
    /// The data folder.
    pub dir: PathBuf,
    /// The store.
    pub store: Store,
    /// The blocking index (derived from the store).
    pub index: BlockingIndex,
    /// Records and persons in memory.
    pub linker: Linker,
    /// The normaliser.
    pub normalizer: Normalizer,
    /// The options the normaliser was built with.
    pub normalize_options: NormalizeOptions,
    /// True when the index was rebuilt from the store on opening.
    pub rebuilt_index: bool,
    /// An exclusive lock on `dir/lock`, held while the workspace is open.
    pub lock: std::fs::File,
}

impl Workspace {
    /// Opens `dir`, loads every record and brings the index level with the store,
    /// rebuilding it when it is missing or behind (it is derived data).
    ///
    /// # Errors
    /// When the store or the index cannot be opened.
    pub fn open(dir: &Path, options: NormalizeOptions) -> Result<Workspace, WorkspaceError> {
        let mut store = Store::open(dir)?;
        let lock = lock_dir(dir)?;
        let normalizer = Normalizer::new(options);
        let nicknames = normalizer.nicknames();
        // Records a former version normalised are normalised again, as new ones are.
        let renormalize = |raw: &mpi_matching::Demographics| {
            let (normalized, issues) = normalizer.normalize(raw);
            let record = ComparableRecord::new(normalized, nicknames);
            (crate::store::json(&record.to_normalized()), crate::store::json(&issues))
        };
        if let Some(changed) = store.renormalize(NORMALIZATION_VERSION, &renormalize)? {
            tracing::info!(
                changed,
                version = NORMALIZATION_VERSION,
                "stored records normalised again by this version"
            );
        }
        let mut linker = Linker::default();
        let mut sources = crate::engine::SourceNames::default();
        // Room reserved up front for half as many again: growing a vector of a million
        // entries later would copy it whole, and a service would briefly hold it twice.
        // (Capacity that is never written costs address space, not memory.)
        let stored = usize::try_from(store.n_records()?).unwrap_or(0);
        linker.reserve_exact(stored + stored / 2 + 4096);
        // A chunk at a time: each record's normalised values move into its prepared
        // form in parallel, and the store is never held twice over.
        store.for_each_record_chunk(LOAD_CHUNK, |chunk| -> Result<(), WorkspaceError> {
            let prepared: Vec<(LoadedRecord, ComparableRecord)> = chunk
                .into_par_iter()
                .map(|mut record| {
                    let normalized = std::mem::take(&mut record.normalized);
                    (record, ComparableRecord::new(normalized, nicknames))
                })
                .collect();
            for (record, comparable) in prepared {
                let person = linker
                    .person_key(parse_person_id(&record.person_id)?, record.decision == "review");
                let entry = Entry {
                    id: record.id,
                    source_system: sources.intern(&record.source_system),
                    local_id: record.local_id.into(),
                    person: PersonKey::MAX,
                    decision: DecisionKind::parse(&record.decision).unwrap_or(DecisionKind::New),
                    probability: record.probability,
                    manual: record.manual,
                };
                // Made again here, one after another on this thread: made on the
                // workers, records sit between the freed temporaries of parsing and a
                // million of them hold twice their size in pages (1M: 1.26 GiB peak
                // for a batch on top of a loaded store, 0.98 with this).
                linker.push(entry, comparable.clone());
                let position = linker.entries.len() - 1;
                linker.assign(position, person);
            }
            Ok(())
        })?;
        // Persons with no records left, so that their ids still answer (a merged one
        // with its survivor), and the steward's separations.
        for (person_id, survivor) in store.retired_persons()? {
            let person = linker.person_key(parse_person_id(&person_id)?, false);
            if let Some(survivor) = survivor {
                let survivor = linker.person_key(parse_person_id(&survivor)?, false);
                linker.persons[person as usize].retired_into = Some(survivor);
            }
        }
        for (record_id, person_id) in store.separations()? {
            if let Some(position) = linker.position(record_id) {
                let person = linker.person_key(parse_person_id(&person_id)?, false);
                linker.separated.entry(position).or_default().push(person);
            }
        }
        crate::alloc::release_freed_memory();
        let index = BlockingIndex::open_or_create(&dir.join("index"))?;
        let mut workspace = Workspace {
            dir: dir.to_owned(),
            store,
            index,
            linker,
            normalizer,
            normalize_options: options,
            rebuilt_index: false,
            lock,
        };
        let generation = workspace.store.generation()?;
        let payload = workspace.index.commit_payload();
        if payload.as_deref() != Some(index_payload(generation).as_str()) {
            match payload.as_deref().and_then(payload_generation) {
                // Behind (a crash before its last commit): replay what it missed.
                Some(indexed) if indexed < generation => workspace.replay_index(indexed)?,
                _ => workspace.rebuild_index()?,
            }
        }
        Ok(workspace)
    }

    /// Brings an index that was level with store generation `indexed` level with the
    /// store: records written since are re-indexed and records no longer in the store
    /// removed.
    ///
    /// # Errors
    /// When the store or the index fails.
    pub fn replay_index(&mut self, indexed: u64) -> Result<(), WorkspaceError> {
        let written = self.store.records_written_after(indexed)?;
        let in_index = self.index.record_ids()?;
        let mut writer = self.index.writer(INDEX_WRITER_BUDGET)?;
        let mut removed = 0;
        for &id in &in_index {
            if self.linker.position(id).is_none() {
                writer.delete(id)?;
                removed += 1;
            }
        }
        for &id in &written {
            if let Some(position) = self.linker.position(id) {
                writer.update(id, &blocking_keys(&self.linker.records[position]))?;
            }
        }
        writer.commit(&index_payload(self.store.generation()?))?;
        self.index.reload()?;
        tracing::info!(
            replayed = written.len(),
            removed,
            "brought the blocking index level with the store (replayed what it missed)"
        );
        Ok(())
    }

    /// Rebuilds the blocking index from the records in memory (loaded from the store).
    ///
    /// # Errors
    /// When the index fails.
    pub fn rebuild_index(&mut self) -> Result<(), WorkspaceError> {
        tracing::info!(
            n_records = self.linker.entries.len(),
            "rebuilding the blocking index from the store"
        );
        let linker = &self.linker;
        let keys: Vec<(RecordId, Vec<BlockingKey>)> = linker
            .in_person_order(0..linker.entries.len())
            .into_par_iter()
            .map(|position| (linker.entries[position].id, blocking_keys(&linker.records[position])))
            .collect();
        // As a batch does: merges started while it indexes would be cut off when it
        // commits and drops the writer; later writers merge the small segments.
        let mut writer = self.index.bulk_writer(INDEX_WRITER_BUDGET)?;
        writer.delete_all()?;
        for (id, record_keys) in &keys {
            writer.add(*id, record_keys)?;
        }
        writer.commit(&index_payload(self.store.generation()?))?;
        self.index.reload()?;
        // A new, empty store has nothing to rebuild worth mentioning.
        self.rebuilt_index = !self.linker.entries.is_empty();
        Ok(())
    }
}
