//! The embedded SQLite store: the source of truth for records, persons, links,
//! reviews and model versions. The blocking index is derived from it.
//!
//! One connection, WAL journal, versioned migrations (`PRAGMA user_version`).
//! Every batch is written in one transaction: a run either lands whole or not at all.

use std::path::Path;

use mpi_matching::{Demographics, Model, NormalizedRecord};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;

/// The schema, one entry per version. Never edit a shipped migration: add one.
const MIGRATIONS: &[&str] = &[
    // 1: records, persons, links, reviews, models, identifiers.
    r#"
    CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        source_system TEXT NOT NULL,
        local_id TEXT NOT NULL,
        raw TEXT NOT NULL,
        normalized TEXT NOT NULL,
        issues TEXT NOT NULL,
        person_id TEXT NOT NULL,
        decision TEXT NOT NULL,
        probability REAL,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX records_source_local ON records (source_system, local_id);
    CREATE INDEX records_person ON records (person_id);
    CREATE TABLE persons (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        provisional INTEGER NOT NULL DEFAULT 0,
        retired_into TEXT
    );
    CREATE TABLE links (
        id INTEGER PRIMARY KEY,
        record_id INTEGER NOT NULL,
        person_id TEXT NOT NULL,
        matched_record_id INTEGER,
        method TEXT NOT NULL,
        probability REAL,
        evidence TEXT,
        model_version INTEGER,
        upper_threshold REAL,
        lower_threshold REAL,
        created_at TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX links_record ON links (record_id);
    CREATE TABLE reviews (
        id TEXT PRIMARY KEY,
        record_id INTEGER NOT NULL,
        candidate_persons TEXT NOT NULL,
        best_record_id INTEGER,
        probability REAL NOT NULL,
        reason TEXT NOT NULL,
        evidence TEXT,
        status TEXT NOT NULL DEFAULT 'open',
        created_at TEXT NOT NULL
    );
    CREATE INDEX reviews_status ON reviews (status);
    CREATE INDEX reviews_record ON reviews (record_id, status);
    CREATE TABLE models (
        version INTEGER PRIMARY KEY,
        created_at TEXT NOT NULL,
        model TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('generation', '0');
    "#,
    // 2: the HTTP service: API keys (hashes only), the audit log of personal-data
    // access, retired persons, and the highest record id ever given (ids of deleted
    // records are never reused).
    r#"
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        person_ids TEXT NOT NULL
    );
    ALTER TABLE persons ADD COLUMN retired_at TEXT;
    ALTER TABLE records ADD COLUMN manual INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE records ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reviews ADD COLUMN reason_code TEXT NOT NULL DEFAULT 'uncertain';
    ALTER TABLE reviews ADD COLUMN priority INTEGER NOT NULL DEFAULT 4;
    ALTER TABLE reviews ADD COLUMN decision TEXT;
    ALTER TABLE reviews ADD COLUMN decided_by TEXT;
    ALTER TABLE reviews ADD COLUMN decided_at TEXT;
    ALTER TABLE reviews ADD COLUMN decision_reason TEXT;
    CREATE INDEX reviews_open ON reviews (status, priority, created_at);
    CREATE TABLE separations (
        record_id INTEGER NOT NULL,
        person_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        actor TEXT NOT NULL,
        PRIMARY KEY (record_id, person_id)
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        person_id TEXT,
        record_id INTEGER,
        other_person_id TEXT,
        detail TEXT,
        actor TEXT NOT NULL
    );
    CREATE INDEX events_person ON events (person_id);
    CREATE INDEX events_other_person ON events (other_person_id) WHERE other_person_id IS NOT NULL;
    INSERT INTO meta (key, value) SELECT 'last_record_id', coalesce(max(id), 0) FROM records;
    "#,
];

/// SQLite's page cache per connection, and while a large batch writes.
const DEFAULT_CACHE_MIB: u32 = 32;
const BATCH_CACHE_MIB: u32 = 32;

/// Batches at least this large drop and rebuild the secondary indexes around their
/// inserts.
const BULK_THRESHOLD: usize = 100_000;

const DROP_SECONDARY_INDEXES: &str = "
    DROP INDEX records_source_local;
    DROP INDEX records_person;
    DROP INDEX links_record;
    DROP INDEX reviews_record;
    DROP INDEX events_person;
    DROP INDEX events_other_person;
";

const CREATE_SECONDARY_INDEXES: &str = "
    CREATE UNIQUE INDEX records_source_local ON records (source_system, local_id);
    CREATE INDEX records_person ON records (person_id);
    CREATE INDEX links_record ON links (record_id);
    CREATE INDEX reviews_record ON reviews (record_id, status);
    CREATE INDEX events_person ON events (person_id);
    CREATE INDEX events_other_person ON events (other_person_id) WHERE other_person_id IS NOT NULL;
";

/// A record as stored.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Record id (also its id in the blocking index).
    pub id: u64,
    /// Source system.
    pub source_system: String,
    /// Id in the source system.
    pub local_id: String,
    /// Raw values as sent.
    pub raw: Demographics,
    /// Normalised values.
    pub normalized: NormalizedRecord,
    /// The person the record belongs to.
    pub person_id: String,
    /// Its last decision (`linked`, `new`, `review`).
    pub decision: String,
    /// Probability of that decision's best match.
    pub probability: Option<f64>,
}

/// A record to insert or update, with its decision.
#[derive(Debug)]
pub struct RecordWrite<'a> {
    /// Record id.
    pub id: u64,
    /// Source system.
    pub source_system: &'a str,
    /// Id in the source system.
    pub local_id: &'a str,
    /// Raw values, as JSON.
    pub raw: std::borrow::Cow<'a, str>,
    /// Normalised values, as JSON (a [`NormalizedRecord`]).
    pub normalized: String,
    /// Issues found normalising, as JSON (a list of [`mpi_matching::Issue`]).
    pub issues: String,
    /// Person.
    pub person_id: std::borrow::Cow<'a, str>,
    /// Decision.
    pub decision: &'a str,
    /// Probability of the best match, if any.
    pub probability: Option<f64>,
}

/// A link with its evidence.
#[derive(Debug)]
pub struct LinkWrite<'a> {
    /// Record linked.
    pub record_id: u64,
    /// Person it joins.
    pub person_id: std::borrow::Cow<'a, str>,
    /// The record of that person it matched best.
    pub matched_record_id: Option<u64>,
    /// `automatic` or `manual`.
    pub method: &'a str,
    /// Match probability.
    pub probability: Option<f64>,
    /// Per-field contributions as JSON.
    pub evidence: Option<String>,
    /// Model version used.
    pub model_version: Option<u32>,
    /// Upper threshold in force.
    pub upper: f64,
    /// Lower threshold in force.
    pub lower: f64,
}

/// A review item to open.
#[derive(Debug)]
pub struct ReviewWrite<'a> {
    /// Review id.
    pub id: &'a str,
    /// The record in review (alone in its provisional person).
    pub record_id: u64,
    /// Candidate persons with probabilities, as JSON.
    pub candidate_persons: String,
    /// The best candidate record.
    pub best_record_id: Option<u64>,
    /// Best probability.
    pub probability: f64,
    /// Why it is in review.
    pub reason: &'a str,
    /// The reason's code (`uncertain`, `possible_twins`, ...).
    pub reason_code: &'a str,
    /// Priority, 1 (first) to 4.
    pub priority: u8,
    /// Per-field contributions of the best pair, as JSON.
    pub evidence: Option<String>,
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    connection: Connection,
    /// True while a group transaction ([`Store::begin_group`]) is open: each write
    /// then runs in a savepoint inside it.
    in_group: bool,
}

/// One write: its own IMMEDIATE transaction, or a savepoint inside an open group.
/// Dropped without [`WriteTransaction::commit`], it rolls back.
enum WriteTransaction<'c> {
    Own(rusqlite::Transaction<'c>),
    InGroup(rusqlite::Savepoint<'c>),
}

impl WriteTransaction<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTransaction::Own(transaction) => transaction.commit(),
            WriteTransaction::InGroup(savepoint) => savepoint.commit(),
        }
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            WriteTransaction::Own(transaction) => transaction,
            WriteTransaction::InGroup(savepoint) => savepoint,
        }
    }
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Plain data (records, issues, ids) as JSON.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serialises")
}

impl Store {
    /// Opens (creating if needed) the store at `dir/mpi.sqlite3` and migrates it.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        let connection = Connection::open(dir.join("mpi.sqlite3"))?;
        Store::from_connection(connection)
    }

    /// An in-memory store, for tests.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(connection: Connection) -> Result<Store, StoreError> {
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        tracing::debug!(journal_mode = %mode, "store opened");
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // A batch's one transaction can grow the write-ahead log past a gigabyte; once
        // checkpointed, the file is cut back to this.
        connection.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        // A modest page cache; a large batch write raises it for its own transaction.
        connection.pragma_update(None, "cache_size", -i64::from(DEFAULT_CACHE_MIB) * 1024)?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { connection, in_group: false };
        store.migrate()?;
        Ok(store)
    }

    /// Sets SQLite's page cache for this connection (the default suits batch runs, which
    /// insert a million rows into several indexes; a serving process needs far less).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn set_cache_mib(&self, mib: u32) -> Result<(), StoreError> {
        self.connection.pragma_update(None, "cache_size", -i64::from(mib) * 1024)?;
        Ok(())
    }

    /// Turns off SQLite's automatic checkpoints on this connection: a service leaves
    /// them to [`Store::checkpoint`] on a connection of its own, so that no request
    /// waits while the write-ahead log is copied into the database.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn disable_autocheckpoint(&self) -> Result<(), StoreError> {
        self.connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Copies what it can of the write-ahead log into the database without waiting
    /// for, or blocking, readers and writers (a passive checkpoint).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// A write transaction that takes SQLite's write lock when it begins (waiting up to
    /// the busy timeout for another connection's), so that it never fails half way
    /// because another connection wrote after it first read.
    /// Inside a group it is a savepoint: it rolls back alone, and commits with the group.
    fn write_transaction(&mut self) -> Result<WriteTransaction<'_>, StoreError> {
        Ok(if self.in_group {
            WriteTransaction::InGroup(self.connection.savepoint()?)
        } else {
            WriteTransaction::Own(
                self.connection
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
            )
        })
    }

    /// Opens a group transaction (taking SQLite's write lock): the writes that follow,
    /// until [`Store::commit_group`], each run in a savepoint of their own and become
    /// durable together, with one commit (and one sync of the log) for all of them.
    ///
    /// # Errors
    /// When the write lock cannot be had within the busy timeout, or SQLite fails.
    pub fn begin_group(&mut self) -> Result<(), StoreError> {
        assert!(!self.in_group, "groups do not nest");
        self.connection.execute_batch("BEGIN IMMEDIATE")?;
        self.in_group = true;
        Ok(())
    }

    /// Commits the open group. On failure the whole group is rolled back.
    ///
    /// # Errors
    /// When the commit fails (nothing of the group is stored then).
    pub fn commit_group(&mut self) -> Result<(), StoreError> {
        self.in_group = false;
        if let Err(error) = self.connection.execute_batch("COMMIT") {
            if !self.connection.is_autocommit() {
                let _ = self.connection.execute_batch("ROLLBACK");
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Sets how hard a commit syncs to disk: `full` makes a committed write survive
    /// power loss as well as a crash of the process (WAL with `normal` survives only
    /// the latter). The service uses `full` and amortises the sync over group commits.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn set_synchronous_full(&self) -> Result<(), StoreError> {
        self.connection.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: usize =
            self.connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew { found: version, supported: MIGRATIONS.len() });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let transaction = self.write_transaction()?;
            transaction.execute_batch(migration)?;
            transaction.pragma_update(None, "user_version", index + 1)?;
            transaction.commit()?;
        }
        Ok(())
    }

    /// The store's write generation: bumped by every committed batch. The index
    /// records the generation it is level with.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn generation(&self) -> Result<u64, StoreError> {
        let value: String = self.connection.query_row(
            "SELECT value FROM meta WHERE key = 'generation'",
            [],
            |row| row.get(0),
        )?;
        Ok(value.parse().unwrap_or(0))
    }

    /// Number of records.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn n_records(&self) -> Result<u64, StoreError> {
        Ok(self.connection.query_row("SELECT count(*) FROM records", [], |row| row.get(0))?)
    }

    /// Highest record id ever given, deleted records included (0 when none): new
    /// records take ids above it.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn max_record_id(&self) -> Result<u64, StoreError> {
        Ok(self.connection.query_row(
            "SELECT max((SELECT coalesce(max(id), 0) FROM records),
                        (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_record_id'))",
            [],
            |row| row.get(0),
        )?)
    }

    /// Deletes a record: its row goes, its links are closed, its open reviews are
    /// withdrawn, and its person is retired when `retire_person` (it had no other
    /// record), superseding the open reviews that offered that person. History (links, reviews) keeps the record id, which is never reused.
    /// Returns the new generation.
    ///
    /// # Errors
    /// When SQLite fails; nothing is written then.
    pub fn delete_record(
        &mut self,
        record_id: u64,
        retire_person: Option<&str>,
        events: &[Event],
        actor: &str,
    ) -> Result<u64, StoreError> {
        let now = now_rfc3339();
        let transaction = self.write_transaction()?;
        insert_events(&transaction, events, actor, &now)?;
        transaction.execute("DELETE FROM records WHERE id = ?1", params![record_id])?;
        transaction.execute(
            "UPDATE links SET active = 0 WHERE record_id = ?1 AND active = 1",
            params![record_id],
        )?;
        transaction.execute(
            "UPDATE reviews SET status = 'withdrawn' WHERE record_id = ?1 AND status = 'open'",
            params![record_id],
        )?;
        if let Some(person) = retire_person {
            transaction.execute(
                "UPDATE persons SET retired_at = ?2 WHERE id = ?1",
                params![person, now],
            )?;
            // Reviews that offered the retired person have nothing left to decide on.
            // (Person ids are UUIDs: a substring match on the candidates' JSON is exact.)
            transaction.execute(
                "UPDATE reviews SET status = 'superseded'
                 WHERE status = 'open' AND instr(candidate_persons, ?1) > 0",
                params![person],
            )?;
        }
        let generation = bump_generation(&transaction)?;
        transaction.commit()?;
        Ok(generation)
    }

    /// One stored record by its source and local id.
    ///
    /// # Errors
    /// When SQLite fails or the stored values cannot be read back.
    pub fn record(&self, source: &str, local_id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let row = self
            .connection
            .query_row(
                "SELECT id, raw, normalized, person_id, decision, probability
                 FROM records WHERE source_system = ?1 AND local_id = ?2",
                params![source, local_id],
                |row| {
                    Ok((
                        row.get::<_, u64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<f64>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, raw, normalized, person_id, decision, probability)) = row else {
            return Ok(None);
        };
        let corrupt = |_| StoreError::Corrupt { record_id: id };
        Ok(Some(StoredRecord {
            id,
            source_system: source.to_owned(),
            local_id: local_id.to_owned(),
            raw: serde_json::from_str(&raw).map_err(corrupt)?,
            normalized: serde_json::from_str(&normalized).map_err(corrupt)?,
            person_id,
            decision,
            probability,
        }))
    }

    /// Raw values of records by id, for showing source records.
    ///
    /// # Errors
    /// When SQLite fails or a stored value cannot be read back.
    pub fn raw_records(&self, ids: &[u64]) -> Result<Vec<(u64, Demographics)>, StoreError> {
        let mut statement =
            self.connection.prepare_cached("SELECT raw FROM records WHERE id = ?1")?;
        let mut found = Vec::with_capacity(ids.len());
        for &id in ids {
            let raw: Option<String> =
                statement.query_row(params![id], |row| row.get(0)).optional()?;
            if let Some(raw) = raw {
                let raw = serde_json::from_str(&raw)
                    .map_err(|_| StoreError::Corrupt { record_id: id })?;
                found.push((id, raw));
            }
        }
        Ok(found)
    }

    /// Active links of records, newest first: (record id, method, probability,
    /// evidence JSON, model version, created at).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn active_links(&self, ids: &[u64]) -> Result<Vec<LinkRow>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT record_id, method, probability, evidence, model_version, created_at
             FROM links WHERE record_id = ?1 AND active = 1 ORDER BY id DESC",
        )?;
        let mut links = Vec::new();
        for &id in ids {
            let rows = statement.query_map(params![id], |row| {
                Ok(LinkRow {
                    record_id: row.get(0)?,
                    method: row.get(1)?,
                    probability: row.get(2)?,
                    evidence: row.get(3)?,
                    model_version: row.get(4)?,
                    created_at: row.get(5)?,
                })
            })?;
            for row in rows {
                links.push(row?);
            }
        }
        Ok(links)
    }

    /// Adds an API key (its token's hash only).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn add_api_key(&mut self, key: &ApiKey, token_hash: &str) -> Result<(), StoreError> {
        self.connection.execute(
            "INSERT INTO api_keys (id, name, role, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.id, key.name, key.role, token_hash, key.created_at],
        )?;
        Ok(())
    }

    /// Every API key, revoked ones included.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )?;
        let rows = statement.query_map([], api_key_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The live (not revoked) key with this token hash.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn api_key_by_hash(&self, token_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .connection
            .query_row(
                "SELECT id, name, role, created_at, revoked_at FROM api_keys
                 WHERE token_hash = ?1 AND revoked_at IS NULL",
                params![token_hash],
                api_key_row,
            )
            .optional()?)
    }

    /// Revokes a key by id or name; returns how many keys were revoked.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn revoke_api_key(&mut self, id_or_name: &str) -> Result<usize, StoreError> {
        Ok(self.connection.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE (id = ?1 OR name = ?1) AND revoked_at IS NULL",
            params![id_or_name, now_rfc3339()],
        )?)
    }

    /// Change-feed events after sequence number `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT seq, at, kind, person_id, record_id, other_person_id, detail, actor FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit as u64], stored_event)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every event about a person (as the person or the other person), oldest first.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn person_events(&self, person_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT seq, at, kind, person_id, record_id, other_person_id, detail, actor FROM events
             WHERE person_id = ?1 UNION
             SELECT seq, at, kind, person_id, record_id, other_person_id, detail, actor FROM events
             WHERE other_person_id = ?1 ORDER BY seq",
        )?;
        let rows = statement.query_map(params![person_id], stored_event)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends audit entries in one transaction (a group commit).
    ///
    /// # Errors
    /// When SQLite fails; none of the entries is written then.
    pub fn append_audit(&mut self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let transaction = self.write_transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO audit (at, key_id, role, action, person_ids) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for entry in entries {
                insert.execute(params![
                    entry.at,
                    entry.key_id,
                    entry.role,
                    entry.action,
                    json(&entry.person_ids)
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Audit entries after sequence number `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT seq, at, key_id, role, action, person_ids FROM audit WHERE seq > ?1
             ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit as u64], |row| {
            let person_ids: String = row.get(5)?;
            Ok((
                row.get::<_, u64>(0)?,
                AuditEntry {
                    at: row.get(1)?,
                    key_id: row.get(2)?,
                    role: row.get(3)?,
                    action: row.get(4)?,
                    person_ids: serde_json::from_str(&person_ids).unwrap_or_default(),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every record as the engine needs it (no raw values), in id order, handed over
    /// in chunks of `chunk` records so that a caller can prepare one chunk while the
    /// next is read, and never hold the whole store twice.
    ///
    /// # Errors
    /// When SQLite fails, a stored value cannot be read back, or `each` fails.
    pub fn for_each_record_chunk<E: From<StoreError>>(
        &self,
        chunk: usize,
        mut each: impl FnMut(Vec<LoadedRecord>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, source_system, local_id, normalized, person_id, decision, probability, manual
                 FROM records ORDER BY id",
            )
            .map_err(StoreError::from)?;
        let mut rows = statement.query([]).map_err(StoreError::from)?;
        let mut records = Vec::with_capacity(chunk);
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            let id: u64 = row.get(0).map_err(StoreError::from)?;
            let normalized: String = row.get(3).map_err(StoreError::from)?;
            let normalized = serde_json::from_str(&normalized)
                .map_err(|_| StoreError::Corrupt { record_id: id })?;
            records.push(LoadedRecord {
                id,
                source_system: row.get(1).map_err(StoreError::from)?,
                local_id: row.get(2).map_err(StoreError::from)?,
                normalized,
                person_id: row.get(4).map_err(StoreError::from)?,
                decision: row.get(5).map_err(StoreError::from)?,
                probability: row.get(6).map_err(StoreError::from)?,
                manual: row.get(7).map_err(StoreError::from)?,
            });
            if records.len() == chunk {
                each(std::mem::replace(&mut records, Vec::with_capacity(chunk)))?;
            }
        }
        if !records.is_empty() {
            each(records)?;
        }
        Ok(())
    }

    /// Normalises every record again from its raw values when the store was normalised
    /// by a version of the normalisation before `version` (a store that never said is
    /// at version 1), and records `version`. `normalize` gives a record's normalised
    /// values and issues, as JSON, from its raw values. The records whose values change
    /// are written with a new store generation, so that an index level with the old
    /// one re-indexes them (see `Workspace::replay_index`); decisions already made
    /// stand. One transaction: a crash leaves the store as it was, to be done again.
    /// Returns how many records changed, or None when the store was up to date.
    ///
    /// # Errors
    /// When SQLite fails or a record's raw values cannot be read; nothing changes then.
    pub fn renormalize(
        &mut self,
        version: u32,
        normalize: &(dyn Fn(&Demographics) -> (String, String) + Sync),
    ) -> Result<Option<u64>, StoreError> {
        use rayon::prelude::*;
        let stored: u32 = self
            .connection
            .query_row("SELECT value FROM meta WHERE key = 'normalization_version'", [], |row| {
                row.get::<_, String>(0)
            })
            .optional()?
            .and_then(|value| value.parse().ok())
            .unwrap_or(1);
        if stored >= version {
            return Ok(None);
        }
        let generation = self.generation()? + 1;
        let transaction = self.write_transaction()?;
        let mut changed = 0;
        let mut after = 0u64;
        loop {
            let chunk: Vec<(u64, String, String, String)> = transaction
                .prepare_cached(
                    "SELECT id, raw, normalized, issues FROM records WHERE id > ?1
                     ORDER BY id LIMIT 8192",
                )?
                .query_map(params![after], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            let Some(&(last, ..)) = chunk.last() else { break };
            after = last;
            let updates: Vec<(u64, String, String)> = chunk
                .into_par_iter()
                .map(|(id, raw, normalized, issues)| {
                    let raw: Demographics = serde_json::from_str(&raw)
                        .map_err(|_| StoreError::Corrupt { record_id: id })?;
                    let (new_normalized, new_issues) = normalize(&raw);
                    Ok((new_normalized != normalized || new_issues != issues).then_some((
                        id,
                        new_normalized,
                        new_issues,
                    )))
                })
                .filter_map(Result::transpose)
                .collect::<Result<_, StoreError>>()?;
            let mut update = transaction.prepare_cached(
                "UPDATE records SET normalized = ?2, issues = ?3, generation = ?4 WHERE id = ?1",
            )?;
            for (id, normalized, issues) in &updates {
                update.execute(params![id, normalized, issues, generation])?;
            }
            changed += updates.len() as u64;
        }
        transaction.execute(
            "INSERT INTO meta (key, value) VALUES ('normalization_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![version.to_string()],
        )?;
        if changed > 0 {
            transaction.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'generation'",
                params![generation.to_string()],
            )?;
        }
        transaction.commit()?;
        Ok(Some(changed))
    }

    /// Ids of the records written after store generation `generation`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn records_written_after(&self, generation: u64) -> Result<Vec<u64>, StoreError> {
        let mut statement =
            self.connection.prepare("SELECT id FROM records WHERE generation > ?1 ORDER BY id")?;
        let rows = statement.query_map(params![generation], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Persons with no records left: (id, the person they were merged into, if any).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn retired_persons(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT id, retired_into FROM persons WHERE retired_into IS NOT NULL OR retired_at IS NOT NULL",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every steward separation: (record id, person id it must not join).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn separations(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut statement =
            self.connection.prepare("SELECT record_id, person_id FROM separations")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reviews with a status, by priority then age, at most `limit` after `offset`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn reviews(
        &self,
        filter: &ReviewFilter<'_>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ReviewRow>, StoreError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "{REVIEW_SELECT} WHERE {REVIEW_FILTER} ORDER BY r.priority, r.created_at, r.id LIMIT ?4 OFFSET ?5"
        ))?;
        let rows = statement.query_map(
            params![filter.status, filter.reason, filter.priority, limit as u64, offset as u64],
            review_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of reviews with a status.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn count_reviews(&self, filter: &ReviewFilter<'_>) -> Result<u64, StoreError> {
        Ok(self.connection.query_row(
            &format!("SELECT count(*) FROM reviews r WHERE {REVIEW_FILTER}"),
            params![filter.status, filter.reason, filter.priority],
            |row| row.get(0),
        )?)
    }

    /// One review.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn review(&self, id: &str) -> Result<Option<ReviewRow>, StoreError> {
        Ok(self
            .connection
            .query_row(&format!("{REVIEW_SELECT} WHERE r.id = ?1"), params![id], review_row)
            .optional()?)
    }

    /// Writes a steward's change in one transaction: records moved between persons
    /// (manual links), persons created and retired, separations, a review resolved,
    /// and the events; returns the new generation.
    ///
    /// # Errors
    /// When SQLite fails; nothing is written then.
    pub fn write_steward(&mut self, change: &StewardChange) -> Result<u64, StoreError> {
        let now = now_rfc3339();
        let transaction = self.write_transaction()?;
        {
            let mut insert_person = transaction.prepare_cached(
                "INSERT INTO persons (id, created_at, provisional) VALUES (?1, ?2, 0)",
            )?;
            for person in &change.new_persons {
                insert_person.execute(params![person, now])?;
            }
            let mut confirm =
                transaction.prepare_cached("UPDATE persons SET provisional = 0 WHERE id = ?1")?;
            for person in &change.confirmed_persons {
                confirm.execute(params![person])?;
            }
            let mut revive = transaction.prepare_cached(
                "UPDATE persons SET retired_into = NULL, retired_at = NULL WHERE id = ?1",
            )?;
            for person in &change.revived_persons {
                revive.execute(params![person])?;
            }
            let mut move_record = transaction.prepare_cached(
                "UPDATE records SET person_id = ?2, decision = ?3, manual = ?5, updated_at = ?4 WHERE id = ?1",
            )?;
            let mut deactivate = transaction.prepare_cached(
                "UPDATE links SET active = 0 WHERE record_id = ?1 AND active = 1",
            )?;
            let mut insert_link = transaction.prepare_cached(
                "INSERT INTO links (record_id, person_id, matched_record_id, method, probability, evidence, created_at)
                 VALUES (?1, ?2, ?3, 'manual', ?4, ?5, ?6)",
            )?;
            for moved in &change.moves {
                move_record.execute(params![
                    moved.record_id,
                    moved.person_id,
                    moved.decision,
                    now,
                    moved.manual
                ])?;
                deactivate.execute(params![moved.record_id])?;
                insert_link.execute(params![
                    moved.record_id,
                    moved.person_id,
                    moved.matched_record_id,
                    moved.probability,
                    moved.evidence,
                    now
                ])?;
            }
            let mut retire = transaction.prepare_cached(
                "UPDATE persons SET retired_into = ?2, retired_at = ?3 WHERE id = ?1",
            )?;
            for (person, survivor) in &change.retired_persons {
                retire.execute(params![person, survivor, now])?;
            }
            let mut separate = transaction.prepare_cached(
                "INSERT OR IGNORE INTO separations (record_id, person_id, created_at, actor) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (record_id, person) in &change.separations {
                separate.execute(params![record_id, person, now, change.actor])?;
            }
            let mut close = transaction.prepare_cached(
                "UPDATE reviews SET status = 'superseded' WHERE record_id = ?1 AND status = 'open'",
            )?;
            for moved in &change.moves {
                close.execute(params![moved.record_id])?;
            }
            if let Some((review_id, decision, reason)) = &change.resolved_review {
                transaction.execute(
                    "UPDATE reviews SET status = 'resolved', decision = ?2, decision_reason = ?3,
                       decided_by = ?4, decided_at = ?5 WHERE id = ?1",
                    params![review_id, decision, reason, change.actor, now],
                )?;
            }
        }
        insert_events(&transaction, &change.events, &change.actor, &now)?;
        let generation = bump_generation(&transaction)?;
        transaction.commit()?;
        Ok(generation)
    }

    /// The latest model version, if any.
    ///
    /// # Errors
    /// When SQLite fails or the stored model is invalid.
    pub fn latest_model(&self) -> Result<Option<Model>, StoreError> {
        let text: Option<String> = self
            .connection
            .query_row("SELECT model FROM models ORDER BY version DESC LIMIT 1", [], |row| {
                row.get(0)
            })
            .optional()?;
        text.map(|text| Model::from_json(&text).map_err(StoreError::Model)).transpose()
    }

    /// Saves a model as a new version and returns the version number.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn save_model(&mut self, model: &mut Model) -> Result<u32, StoreError> {
        let transaction = self.write_transaction()?;
        let version: u32 = transaction.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM models",
            [],
            |row| row.get(0),
        )?;
        model.version = version;
        transaction.execute(
            "INSERT INTO models (version, created_at, model) VALUES (?1, ?2, ?3)",
            params![version, now_rfc3339(), model.to_json()],
        )?;
        transaction.commit()?;
        Ok(version)
    }

    /// Writes one batch in one transaction: records (insert or update), new persons,
    /// persons retired, links and reviews; bumps the generation and returns it.
    ///
    /// A bulk batch (100,000 new records or more, outside a group) is written with a
    /// rollback journal instead of the write-ahead log: pages the store did not have
    /// before are written once, into the database, where the log would hold them all and
    /// a checkpoint then copy them again. The journal (fully synced) still makes the
    /// transaction atomic and durable (a crash rolls it back on the next open); the store
    /// returns to WAL afterwards.
    ///
    /// # Errors
    /// When SQLite fails; nothing is written then.
    pub fn write_batch(&mut self, batch: &Batch<'_>) -> Result<u64, StoreError> {
        let shape = BatchShape {
            actor: &batch.actor,
            n_records: batch.records.len(),
            all_new: batch.updated_records.is_empty(),
        };
        self.write_batch_chunks(&shape, |write| write(batch))
    }

    /// [`Store::write_batch`] for a batch handed over in chunks, so that a million
    /// records' rows never sit in memory at once: `produce` calls `write` once per
    /// chunk, in order, and everything is committed in one transaction when it returns.
    /// Each chunk's `actor` is ignored (the shape's is used); its `updated_records`
    /// name the updated records among its own. Feed events are written after every
    /// chunk's rows, in chunk order, as one batch would write them.
    ///
    /// # Errors
    /// When SQLite fails or `produce` does; nothing is written then.
    pub fn write_batch_chunks<F>(
        &mut self,
        shape: &BatchShape<'_>,
        produce: F,
    ) -> Result<u64, StoreError>
    where
        F: FnOnce(&mut dyn FnMut(&Batch<'_>) -> Result<(), StoreError>) -> Result<(), StoreError>,
    {
        let bulk = shape.n_records >= BULK_THRESHOLD && shape.all_new;
        // Leaving WAL needs the only connection; if another is open it stays in WAL.
        let journaled = bulk
            && !self.in_group
            && self
                .connection
                .pragma_update_and_check(None, "journal_mode", "DELETE", |row| {
                    row.get::<_, String>(0)
                })
                .is_ok_and(|mode| mode.eq_ignore_ascii_case("delete"));
        if journaled {
            // A rollback journal is safe against power loss only when fully synced.
            self.connection.pragma_update(None, "synchronous", "FULL")?;
        }
        if bulk {
            // Rebuilding the secondary indexes sorts every key; in a temporary file
            // that sort spills to disk instead of holding a million keys in memory.
            self.connection.pragma_update(None, "temp_store", "FILE")?;
        }
        let written = self.write_batch_transaction(shape, produce);
        if bulk {
            self.connection.pragma_update(None, "temp_store", "MEMORY")?;
        }
        if journaled {
            self.connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                row.get::<_, String>(0)
            })?;
            self.connection.pragma_update(None, "synchronous", "NORMAL")?;
        }
        written
    }

    fn write_batch_transaction<F>(
        &mut self,
        shape: &BatchShape<'_>,
        produce: F,
    ) -> Result<u64, StoreError>
    where
        F: FnOnce(&mut dyn FnMut(&Batch<'_>) -> Result<(), StoreError>) -> Result<(), StoreError>,
    {
        let started = std::time::Instant::now();
        let lap = |phase: &str| {
            tracing::debug!(phase, seconds = started.elapsed().as_secs_f64(), "write")
        };
        let now = now_rfc3339();
        let transaction = self.write_transaction()?;
        // A large batch inserts into the tables without their secondary indexes and
        // builds them afterwards: building an index by sorting is far cheaper than
        // inserting a million random keys into a B-tree one by one.
        let bulk = shape.n_records >= BULK_THRESHOLD && shape.all_new;
        if bulk {
            transaction.execute_batch(DROP_SECONDARY_INDEXES)?;
        }
        // A large batch inserts into several B-tree indexes, and a small cache turns
        // that into IO: it gets a large one while it writes.
        let large = shape.n_records >= BULK_THRESHOLD / 10;
        if large {
            transaction.pragma_update(None, "cache_size", -i64::from(BATCH_CACHE_MIB) * 1024)?;
        }
        // Records above this id and persons above this rowid are the batch's new ones;
        // the records it writes carry the generation it will commit (the transaction
        // holds the write lock, so no other can take it).
        let (last_record, last_person, next_generation): (u64, i64, u64) = transaction.query_row(
            "SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_record_id'),
                    (SELECT coalesce(max(rowid), 0) FROM persons),
                    (SELECT CAST(value AS INTEGER) + 1 FROM meta WHERE key = 'generation')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        // The chunks' own events wait for the end: the feed lists them after the
        // set-wise events of the batch's new persons and records, as one batch would.
        let mut events: Vec<Event> = Vec::new();
        let mut highest: Option<u64> = None;
        {
            let mut insert_record = transaction.prepare(
                "INSERT INTO records (id, source_system, local_id, raw, normalized, issues, person_id, decision, probability, updated_at, generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET raw = excluded.raw, normalized = excluded.normalized,
                   issues = excluded.issues, person_id = excluded.person_id, decision = excluded.decision,
                   probability = excluded.probability, updated_at = excluded.updated_at,
                   generation = excluded.generation",
            )?;
            let mut insert_person = transaction
                .prepare("INSERT INTO persons (id, created_at, provisional) VALUES (?1, ?2, ?3)")?;
            let mut retire =
                transaction.prepare("UPDATE persons SET retired_into = ?2 WHERE id = ?1")?;
            let mut deactivate = transaction
                .prepare("UPDATE links SET active = 0 WHERE record_id = ?1 AND active = 1")?;
            let mut insert_link = transaction.prepare(
                "INSERT INTO links (record_id, person_id, matched_record_id, method, probability, evidence, model_version, upper_threshold, lower_threshold, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut close_reviews = transaction.prepare(
                "UPDATE reviews SET status = 'superseded' WHERE record_id = ?1 AND status = 'open'",
            )?;
            let mut insert_review = transaction.prepare(
                "INSERT INTO reviews (id, record_id, candidate_persons, best_record_id, probability, reason, evidence, created_at, reason_code, priority)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut write = |batch: &Batch<'_>| -> Result<(), StoreError> {
                for record in &batch.records {
                    insert_record.execute(params![
                        record.id,
                        record.source_system,
                        record.local_id,
                        record.raw,
                        record.normalized,
                        record.issues,
                        record.person_id,
                        record.decision,
                        record.probability,
                        now,
                        next_generation,
                    ])?;
                    highest = highest.max(Some(record.id));
                }
                for (person, provisional) in &batch.new_persons {
                    insert_person.execute(params![person, now, provisional])?;
                }
                for (person, survivor) in &batch.retired_persons {
                    retire.execute(params![person, survivor])?;
                }
                for link in &batch.links {
                    if batch.updated_records.contains(&link.record_id) {
                        deactivate.execute(params![link.record_id])?;
                    }
                    insert_link.execute(params![
                        link.record_id,
                        link.person_id,
                        link.matched_record_id,
                        link.method,
                        link.probability,
                        link.evidence,
                        link.model_version,
                        link.upper,
                        link.lower,
                        now,
                    ])?;
                }
                for record in
                    batch.records.iter().filter(|record| batch.updated_records.contains(&record.id))
                {
                    if record.decision != "review" {
                        close_reviews.execute(params![record.id])?;
                    }
                }
                for review in &batch.reviews {
                    if batch.updated_records.contains(&review.record_id) {
                        close_reviews.execute(params![review.record_id])?;
                    }
                    insert_review.execute(params![
                        review.id,
                        review.record_id,
                        review.candidate_persons,
                        review.best_record_id,
                        review.probability,
                        review.reason,
                        review.evidence,
                        now,
                        review.reason_code,
                        review.priority,
                    ])?;
                }
                events.extend(batch.events.iter().cloned());
                Ok(())
            };
            produce(&mut write)?;
        }
        lap("records, persons, links and reviews");
        // The feed's events for new persons and new records are made set-wise here (a
        // million rows bound one by one from Rust would double a batch's write time);
        // the batch carries only the rest (updates, reviews, retirements).
        transaction.execute(
            "INSERT INTO events (at, kind, person_id, actor)
             SELECT ?1, 'person_created', id, ?2 FROM persons WHERE rowid > ?3 ORDER BY rowid",
            params![now, shape.actor, last_person],
        )?;
        transaction.execute(
            "INSERT INTO events (at, kind, person_id, record_id, detail, actor)
             SELECT ?1, 'record_linked', person_id, id, json_object('decision', decision), ?2
             FROM records WHERE id > ?3 ORDER BY id",
            params![now, shape.actor, last_record],
        )?;
        insert_events(&transaction, &events, shape.actor, &now)?;
        lap("events");
        if bulk {
            // One sorter thread: the blocking index's threads still run beside these
            // builds, and two sorters (tried) were no faster and held 20-40 MB more at
            // the run's peak.
            transaction.execute_batch(CREATE_SECONDARY_INDEXES)?;
        }
        lap("indexes");
        if let Some(highest) = highest {
            transaction.execute(
                "UPDATE meta SET value = max(CAST(value AS INTEGER), ?1) WHERE key = 'last_record_id'",
                params![highest],
            )?;
        }
        let generation = bump_generation(&transaction)?;
        transaction.commit()?;
        lap("commit");
        if large {
            self.set_cache_mib(DEFAULT_CACHE_MIB)?;
        }
        Ok(generation)
    }
}

fn insert_events(
    transaction: &Connection,
    events: &[Event],
    actor: &str,
    now: &str,
) -> Result<(), StoreError> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO events (at, kind, person_id, record_id, other_person_id, detail, actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for event in events {
        insert.execute(params![
            now,
            event.kind,
            event.person_id,
            event.record_id,
            event.other_person_id,
            event.detail.as_ref().map(serde_json::Value::to_string),
            actor,
        ])?;
    }
    Ok(())
}

fn bump_generation(transaction: &Connection) -> Result<u64, StoreError> {
    Ok(transaction.query_row(
        "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'
         RETURNING CAST(value AS INTEGER)",
        [],
        |row| row.get(0),
    )?)
}

/// A stored link, for showing a person's evidence.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinkRow {
    /// The linked record.
    pub record_id: u64,
    /// `automatic` or `manual`.
    pub method: String,
    /// Its probability.
    pub probability: Option<f64>,
    /// Evidence JSON.
    pub evidence: Option<String>,
    /// Model version.
    pub model_version: Option<u32>,
    /// When.
    pub created_at: String,
}

/// An API key as stored (never its token).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Its role.
    pub role: String,
    /// When it was made.
    pub created_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// An `api_keys` row of (id, name, role, created_at, revoked_at).
fn api_key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        role: row.get(2)?,
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
    })
}

/// One audited access to personal data.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditEntry {
    /// When.
    pub at: String,
    /// The API key used.
    pub key_id: String,
    /// Its role.
    pub role: String,
    /// What was done (`resolve`, `read_person`, ...).
    pub action: String,
    /// Every person id the response carried.
    pub person_ids: Vec<String>,
}

/// What [`Store::write_batch_chunks`] needs to know before the first chunk.
#[derive(Clone, Copy, Debug)]
pub struct BatchShape<'a> {
    /// Who made the changes: an API key id, or `mpi link`.
    pub actor: &'a str,
    /// Records the chunks will write, in all.
    pub n_records: usize,
    /// True when none of them is already in the store (only then may a large batch
    /// drop and rebuild the secondary indexes).
    pub all_new: bool,
}

/// Everything one run writes, committed in one transaction.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// Records inserted or updated.
    pub records: Vec<RecordWrite<'a>>,
    /// Persons created: (id, provisional).
    pub new_persons: Vec<(String, bool)>,
    /// Persons left with no records: (id, the person that took their records).
    pub retired_persons: Vec<(String, String)>,
    /// Links made.
    pub links: Vec<LinkWrite<'a>>,
    /// Reviews opened.
    pub reviews: Vec<ReviewWrite<'a>>,
    /// Ids of records that existed before this batch (their old links and reviews are
    /// closed).
    pub updated_records: std::collections::HashSet<u64>,
    /// Change-feed events beyond those every batch makes for itself (a
    /// `person_created` for each new person and a `record_linked` for each new record).
    pub events: Vec<Event>,
    /// Who made the changes: an API key id, or `mpi link`.
    pub actor: String,
}

/// A record as the engine loads it.
#[derive(Clone, Debug)]
pub struct LoadedRecord {
    /// Record id.
    pub id: u64,
    /// Source system.
    pub source_system: String,
    /// Id in the source system.
    pub local_id: String,
    /// Normalised values.
    pub normalized: NormalizedRecord,
    /// Its person.
    pub person_id: String,
    /// Its last decision.
    pub decision: String,
    /// Probability of that decision's best match.
    pub probability: Option<f64>,
    /// True when a steward placed it (the engine keeps it where it is).
    pub manual: bool,
}

/// A record moved by a steward.
#[derive(Clone, Debug)]
pub struct RecordMove {
    /// The record.
    pub record_id: u64,
    /// Its new person.
    pub person_id: String,
    /// Its decision word (`linked` or `new`).
    pub decision: String,
    /// The record of that person it was matched to, if any.
    pub matched_record_id: Option<u64>,
    /// Probability against that record.
    pub probability: Option<f64>,
    /// Evidence JSON.
    pub evidence: Option<String>,
    /// True when the record is pinned where the steward put it.
    pub manual: bool,
}

/// A steward's change, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct StewardChange {
    /// Records moved (manual links).
    pub moves: Vec<RecordMove>,
    /// Persons created (confirmed).
    pub new_persons: Vec<String>,
    /// Provisional persons confirmed.
    pub confirmed_persons: Vec<String>,
    /// Persons retired by a merge that take records again (a merge undone).
    pub revived_persons: Vec<String>,
    /// Persons left empty: (id, survivor).
    pub retired_persons: Vec<(String, Option<String>)>,
    /// (record id, person id) pairs the engine must never link.
    pub separations: Vec<(u64, String)>,
    /// (review id, decision, reason).
    pub resolved_review: Option<(String, String, String)>,
    /// Events.
    pub events: Vec<Event>,
    /// The steward's key id.
    pub actor: String,
}

/// A review as stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReviewRow {
    /// Review id.
    pub id: String,
    /// The record in review.
    pub record_id: u64,
    /// Candidate persons with probabilities (JSON).
    pub candidate_persons: serde_json::Value,
    /// The best candidate record.
    pub best_record_id: Option<u64>,
    /// Best probability.
    pub probability: f64,
    /// Reason code.
    pub reason: String,
    /// Reason, in words.
    pub description: String,
    /// Priority, 1 first.
    pub priority: u8,
    /// open, resolved, superseded, withdrawn.
    pub status: String,
    /// Opened at.
    pub created_at: String,
    /// match or no_match, once decided.
    pub decision: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<String>,
    /// Why, in the steward's words.
    pub decision_reason: Option<String>,
}

/// Which reviews to list.
#[derive(Clone, Copy, Debug)]
pub struct ReviewFilter<'a> {
    /// open, resolved, superseded or withdrawn.
    pub status: &'a str,
    /// Only this reason code.
    pub reason: Option<&'a str>,
    /// Only this priority.
    pub priority: Option<u8>,
}

impl ReviewFilter<'_> {
    /// Reviews with a status.
    pub fn status(status: &str) -> ReviewFilter<'_> {
        ReviewFilter { status, reason: None, priority: None }
    }
}

const REVIEW_FILTER: &str =
    "r.status = ?1 AND (?2 IS NULL OR r.reason_code = ?2) AND (?3 IS NULL OR r.priority = ?3)";

const REVIEW_SELECT: &str = "SELECT r.id, r.record_id, r.candidate_persons, r.best_record_id, r.probability,
    r.reason_code, r.reason, r.priority, r.status, r.created_at, r.decision, r.decided_by, r.decided_at,
    r.decision_reason FROM reviews r";

fn review_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewRow> {
    let candidates: String = row.get(2)?;
    Ok(ReviewRow {
        id: row.get(0)?,
        record_id: row.get(1)?,
        candidate_persons: serde_json::from_str(&candidates).unwrap_or_default(),
        best_record_id: row.get(3)?,
        probability: row.get(4)?,
        reason: row.get(5)?,
        description: row.get(6)?,
        priority: row.get(7)?,
        status: row.get(8)?,
        created_at: row.get(9)?,
        decision: row.get(10)?,
        decided_by: row.get(11)?,
        decided_at: row.get(12)?,
        decision_reason: row.get(13)?,
    })
}

/// An event as stored: sequence number, time, who, and the event.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredEvent {
    /// Position in the feed.
    pub seq: u64,
    /// When.
    pub at: String,
    /// Who: an API key id, or `mpi link`.
    pub actor: String,
    /// What.
    #[serde(flatten)]
    pub event: Event,
}

fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let detail: Option<String> = row.get(6)?;
    Ok(StoredEvent {
        seq: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(7)?,
        event: Event {
            kind: row.get(2)?,
            person_id: row.get(3)?,
            record_id: row.get(4)?,
            other_person_id: row.get(5)?,
            detail: detail.and_then(|text| serde_json::from_str(&text).ok()),
        },
    })
}

/// One change-feed event.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Event {
    /// `person_created`, `record_linked`, `record_unlinked`, `review_opened`,
    /// `review_resolved`, `persons_merged`, `person_split`, `person_retired`,
    /// `nhs_number_changed`.
    pub kind: String,
    /// The person concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    /// The record concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<u64>,
    /// The other person (merge, split, unlink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_person_id: Option<String>,
    /// Details as JSON (a decision, a review id, a reason; never personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Event {
    /// An event about a person (and maybe a record).
    pub fn new(kind: &str, person_id: impl ToString, record_id: Option<u64>) -> Event {
        Event {
            kind: kind.to_owned(),
            person_id: Some(person_id.to_string()),
            record_id,
            other_person_id: None,
            detail: None,
        }
    }

    /// Sets the other person.
    pub fn other(mut self, person_id: impl ToString) -> Event {
        self.other_person_id = Some(person_id.to_string());
        self
    }

    /// Sets the details.
    pub fn detail(mut self, detail: serde_json::Value) -> Event {
        self.detail = Some(detail);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_and_counts_generations() {
        let mut store = Store::open_in_memory().expect("open");
        assert_eq!(store.generation().expect("generation"), 0);
        assert_eq!(store.write_batch(&Batch::default()).expect("write"), 1);
        assert_eq!(store.write_batch(&Batch::default()).expect("write"), 2);
        assert_eq!(store.n_records().expect("count"), 0);
    }

    #[test]
    fn a_group_commits_its_writes_together_and_a_failed_write_alone_rolls_back() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut writer = Store::open(dir.path()).expect("open");
        let reader = Store::open(dir.path()).expect("open a second connection");
        let persons = |store: &Store| -> u64 {
            store
                .connection
                .query_row("SELECT count(*) FROM persons", [], |row| row.get(0))
                .unwrap()
        };
        let batch = |ids: &[&str]| Batch {
            new_persons: ids.iter().map(|id| ((*id).to_owned(), false)).collect(),
            ..Batch::default()
        };
        writer.begin_group().expect("begin");
        assert_eq!(writer.write_batch(&batch(&["a"])).expect("first write"), 1);
        // The second person id repeats: this write fails after inserting one row.
        assert!(writer.write_batch(&batch(&["b", "b"])).is_err());
        assert_eq!(writer.write_batch(&batch(&["c"])).expect("third write"), 2);
        assert_eq!(persons(&writer), 2, "the failed write left nothing behind");
        assert_eq!(persons(&reader), 0, "nothing is visible before the group commits");
        writer.commit_group().expect("commit");
        assert_eq!(persons(&reader), 2);
        assert_eq!(reader.generation().expect("generation"), 2);
        // Outside a group, each write is its own transaction again.
        assert_eq!(writer.write_batch(&batch(&["d"])).expect("write"), 3);
        assert_eq!(persons(&reader), 3);
    }

    #[test]
    fn a_bulk_batch_lands_whole_and_the_store_stays_in_wal() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        let normalized = NormalizedRecord::default();
        let local_ids: Vec<String> = (0..BULK_THRESHOLD).map(|i| format!("L{i}")).collect();
        let batch = |first_id: u64| Batch {
            new_persons: vec![("p".to_owned(), false)],
            records: local_ids
                .iter()
                .enumerate()
                .map(|(i, local_id)| RecordWrite {
                    id: first_id + i as u64,
                    source_system: "s",
                    local_id,
                    raw: "{}".into(),
                    normalized: json(&normalized),
                    issues: "[]".to_owned(),
                    person_id: "p".into(),
                    decision: "new",
                    probability: None,
                })
                .collect(),
            ..Batch::default()
        };
        let mode = |store: &Store| -> String {
            store.connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap()
        };
        assert_eq!(store.write_batch(&batch(1)).expect("bulk write"), 1);
        assert_eq!(store.n_records().expect("count"), BULK_THRESHOLD as u64);
        assert_eq!(mode(&store), "wal");
        // The same person and local ids again (under new record ids) are refused, and
        // nothing of the failed bulk batch remains.
        let failed = store.write_batch(&batch(1_000_000));
        assert!(failed.is_err());
        assert_eq!(store.n_records().expect("count"), BULK_THRESHOLD as u64);
        assert_eq!(store.generation().expect("generation"), 1);
        assert_eq!(mode(&store), "wal");
    }

    #[test]
    fn a_batch_in_chunks_is_one_transaction_with_its_events_after_its_rows() {
        let mut store = Store::open_in_memory().expect("open");
        let normalized = NormalizedRecord::default();
        let chunk = |id: u64, person: &'static str| Batch {
            new_persons: vec![(person.to_owned(), false)],
            records: vec![RecordWrite {
                id,
                source_system: "s",
                local_id: person,
                raw: "{}".into(),
                normalized: json(&normalized),
                issues: "[]".to_owned(),
                person_id: person.into(),
                decision: "new",
                probability: None,
            }],
            events: vec![Event::new("person_retired", person, None)],
            ..Batch::default()
        };
        let shape = BatchShape { actor: "test", n_records: 2, all_new: true };
        let generation = store
            .write_batch_chunks(&shape, |write| {
                write(&chunk(1, "a"))?;
                write(&chunk(2, "b"))
            })
            .expect("write");
        assert_eq!(generation, 1);
        assert_eq!(store.n_records().expect("count"), 2);
        let kinds: Vec<(String, String)> = store
            .connection
            .prepare("SELECT kind, person_id FROM events ORDER BY seq")
            .expect("prepare")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let kinds: Vec<(&str, &str)> =
            kinds.iter().map(|(kind, person)| (kind.as_str(), person.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("person_created", "a"),
                ("person_created", "b"),
                ("record_linked", "a"),
                ("record_linked", "b"),
                ("person_retired", "a"),
                ("person_retired", "b"),
            ]
        );
        // A producer that fails after its first chunk leaves nothing of the batch.
        let failed = store.write_batch_chunks(&shape, |write| {
            write(&chunk(3, "c"))?;
            Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        });
        assert!(failed.is_err());
        assert_eq!(store.n_records().expect("count"), 2);
        assert_eq!(store.generation().expect("generation"), 1);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
