//! `mpi serve`: the identity service, an axum HTTP API over the same engine, store and
//! index as `mpi link`.
//!
//! Requests run their engine and store work on tokio's blocking pool. The engine sits
//! behind a read-write lock (resolves and reads share it) and the store behind a
//! mutex. Every change goes to one writer thread ([`writer`]), which runs the changes
//! waiting for it together, each in a savepoint, and commits them in one SQLite
//! transaction (a group commit, synchronous=FULL) before any of them is answered; the
//! index is brought level in memory at once. Every response that carries personal
//! data is recorded in the audit log first, also group-committed.
//!
//! Logs carry the route template, status and latency, never a URI, a body or a value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use mpi_matching::{Demographics, Issue, NormalizedRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::engine::{DecisionKind, PersonKey};
use crate::online::{Engine, Match, OnlineError, ReviewAnswer, StewardError};
use crate::store::{ApiKey, AuditEntry, ReviewFilter, Store, now_rfc3339};
use mpi_index::CandidateSource;

mod fhir;
mod writer;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a looked-up API key is trusted before the store is asked again (so a
/// revocation takes effect within this time).
const KEY_CACHE_SECONDS: u64 = 5;

/// A caller's role. Each role includes `Reader`; `Admin` includes every role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Resolve, read persons, the change feed, metrics, the OpenAPI document.
    Reader,
    /// A reader that also ingests and deletes records.
    Writer,
    /// A reader that also works reviews, merges, splits and reads history.
    Steward,
    /// Everything, plus keys and audit.
    Admin,
}

impl Role {
    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "steward" => Some(Role::Steward),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Steward => "steward",
            Role::Admin => "admin",
        }
    }

    /// True when this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self == required || self == Role::Admin || required == Role::Reader
    }
}

/// The SHA-256 of an API token, hex: the store keeps only this.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Creates an API key: returns the stored key and its token (shown once).
///
/// # Errors
/// When the store fails.
pub fn create_api_key(
    store: &mut Store,
    role: Role,
    name: &str,
) -> Result<(ApiKey, String), crate::error::StoreError> {
    let token = format!("mpi_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let key = ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        created_at: now_rfc3339(),
        revoked_at: None,
    };
    store.add_api_key(&key, &token_hash(&token))?;
    Ok((key, token))
}

#[derive(Clone, Debug)]
struct Caller {
    key_id: String,
    role: Role,
}

/// Latency histogram bucket bounds, in seconds.
const LATENCY_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request and decision counters for `/metrics`.
#[derive(Debug, Default)]
struct Metrics {
    /// (route, method, status) to count.
    requests: HashMap<(String, String, u16), u64>,
    /// route to latency.
    latency: HashMap<String, Histogram>,
    /// decision word to count (online ingests).
    decisions: HashMap<&'static str, u64>,
}

impl Metrics {
    fn observe(&mut self, route: &str, method: &str, status: u16, seconds: f64) {
        *self.requests.entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
        let histogram = self.latency.entry(route.to_owned()).or_default();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(histogram.buckets.iter_mut()) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }
}

type AuditAck = std::sync::mpsc::SyncSender<Result<(), String>>;

/// An error with its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// Writes audit entries on its own connection and thread, many requests' entries in
/// one transaction (group commit); each request waits until its entry is committed.
#[derive(Debug)]
struct Auditor {
    sender: Mutex<std::sync::mpsc::Sender<(AuditEntry, AuditAck)>>,
}

/// Most entries one audit transaction takes.
const AUDIT_GROUP: usize = 512;

impl Auditor {
    fn start(mut store: Store) -> Auditor {
        let (sender, receiver) = std::sync::mpsc::channel::<(AuditEntry, AuditAck)>();
        std::thread::Builder::new()
            .name("audit".to_owned())
            .spawn(move || {
                while let Some(group) = writer::next_group(&receiver, AUDIT_GROUP) {
                    let entries: Vec<AuditEntry> =
                        group.iter().map(|(entry, _)| entry.clone()).collect();
                    let result = store.append_audit(&entries).map_err(|error| error_chain(&error));
                    for (_, ack) in group {
                        let _ = ack.send(result.clone());
                    }
                }
            })
            .expect("the audit thread starts");
        Auditor { sender: Mutex::new(sender) }
    }

    /// Blocks until the entry is committed.
    fn record(&self, entry: AuditEntry) -> Result<(), String> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send((entry, ack))
            .map_err(|_| "the audit writer stopped".to_owned())?;
        done.recv().map_err(|_| "the audit writer stopped".to_owned())?
    }
}

/// The service's shared state.
#[derive(Debug)]
pub struct Service {
    engine: Arc<RwLock<Engine>>,
    store: Arc<Mutex<Store>>,
    writer: writer::Writer,
    auditor: Auditor,
    checkpointer: Mutex<Store>,
    keys: Mutex<HashMap<String, (Caller, Instant)>>,
    metrics: Mutex<Metrics>,
}

impl Service {
    /// Wraps an engine and its store. `audit_store` and `checkpointer` are more
    /// connections to the same store: one for the audit log's group commits, one for
    /// the write-ahead log's checkpoints (the others make none of their own).
    ///
    /// # Errors
    /// When a connection's settings cannot be changed.
    pub fn new(
        engine: Engine,
        store: Store,
        audit_store: Store,
        checkpointer: Store,
    ) -> Result<Service, crate::error::StoreError> {
        store.disable_autocheckpoint()?;
        audit_store.disable_autocheckpoint()?;
        // Acknowledged writes (and their audit entries, in the same transaction)
        // survive power loss too: the sync this costs is shared by every change of a
        // group commit. The read audit's groups stay at `normal`: committed before the
        // answer and safe from a crash of the process; a power cut may lose its last
        // moments, and syncing them would halve resolve throughput (BENCHMARKS.md).
        store.set_synchronous_full()?;
        let engine = Arc::new(RwLock::new(engine));
        let store = Arc::new(Mutex::new(store));
        Ok(Service {
            writer: writer::Writer::start(Arc::clone(&engine), Arc::clone(&store)),
            engine,
            store,
            auditor: Auditor::start(audit_store),
            checkpointer: Mutex::new(checkpointer),
            keys: Mutex::new(HashMap::new()),
            metrics: Mutex::new(Metrics::default()),
        })
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A passive checkpoint of the store's write-ahead log.
    pub fn checkpoint(&self) {
        let checkpointer =
            self.checkpointer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = checkpointer.checkpoint() {
            tracing::warn!(error = %error_chain(&error), "checkpoint failed; retried in a second");
        }
    }

    /// Makes the key filters of the blocking index's large segments that have none
    /// (every segment of a batch after start-up; a large merged one after a commit)
    /// without holding the engine, then puts them in: until then queries go without,
    /// with the same answers.
    pub fn filter_index(&self) {
        let unfiltered = self.read_engine().index.unfiltered_segments();
        if unfiltered.is_empty() {
            return;
        }
        let started = Instant::now();
        match unfiltered.make() {
            Ok(made) => {
                self.write_engine().index.add_filters(made);
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "blocking index key filters made"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "making the index's key filters failed; retried in a second");
            }
        }
    }

    /// Commits the blocking index's changes older than `age`.
    pub fn flush_index(&self, age: Duration) {
        let due =
            self.read_engine().index.uncommitted().is_some_and(|since| since.elapsed() >= age);
        if due {
            self.write_engine().flush_index(age);
        }
    }

    /// Hands a change to the one writer, which runs it with the engine and the store
    /// held for writing and commits it with others in a group; returns once it is
    /// durable. The audit entry (the persons in `returned(&result)`, when any) is
    /// written in the same transaction, so a write costs one commit, not two.
    fn write<T: Send + 'static>(
        &self,
        caller: &Caller,
        action: &'static str,
        change: impl FnOnce(&mut Engine, &mut Store) -> Result<T, Problem> + Send + 'static,
        returned: fn(&T) -> Vec<String>,
    ) -> Result<T, Problem> {
        let (key_id, role) = (caller.key_id.clone(), caller.role.as_str().to_owned());
        let change = move |engine: &mut Engine, store: &mut Store| {
            let result = change(engine, store)?;
            let person_ids = returned(&result);
            if !person_ids.is_empty() {
                let entry = AuditEntry {
                    at: now_rfc3339(),
                    key_id,
                    role,
                    action: action.to_owned(),
                    person_ids,
                };
                store.append_audit(&[entry]).map_err(Problem::internal)?;
            }
            Ok(result)
        };
        self.writer.write(change).map_err(|failure| match failure {
            writer::WriteFailure::Change(problem) => problem,
            writer::WriteFailure::Store(reason) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the change could not be stored")
                    .detail(reason)
            }
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store itself consistent (SQLite
        // rolls back an unfinished transaction), so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_engine(&self) -> std::sync::RwLockReadGuard<'_, Engine> {
        self.engine.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_engine(&self) -> std::sync::RwLockWriteGuard<'_, Engine> {
        self.engine.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn authorize(&self, headers: &HeaderMap, required: Role) -> Result<Caller, Problem> {
        if self.writer.failed() {
            return Err(self.unavailable());
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Problem::new(StatusCode::UNAUTHORIZED, "missing bearer token")
                    .detail("send an API key as `Authorization: Bearer TOKEN`")
            })?;
        let hash = token_hash(token);
        let cached = {
            let keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            keys.get(&hash)
                .filter(|(_, at)| at.elapsed().as_secs() < KEY_CACHE_SECONDS)
                .map(|(caller, _)| caller.clone())
        };
        let caller = match cached {
            Some(caller) => caller,
            None => {
                let key = self.store().api_key_by_hash(&hash).map_err(Problem::internal)?;
                let key = key.ok_or_else(|| {
                    Problem::new(StatusCode::UNAUTHORIZED, "unknown or revoked API key")
                })?;
                let role = Role::parse(&key.role).ok_or_else(|| {
                    Problem::new(StatusCode::FORBIDDEN, "the API key has an unknown role")
                })?;
                let caller = Caller { key_id: key.id, role };
                self.keys
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(hash, (caller.clone(), Instant::now()));
                caller
            }
        };
        if caller.role.allows(required) {
            Ok(caller)
        } else {
            Err(Problem::new(StatusCode::FORBIDDEN, "this API key's role may not do this")
                .detail(format!("needs the {} role", required.as_str())))
        }
    }

    /// Stores one source record through the writer (see [`Service::write`]) and counts
    /// its decision.
    fn ingest(
        &self,
        caller: &Caller,
        action: &'static str,
        source: &str,
        local_id: &str,
        raw: Demographics,
    ) -> Result<crate::online::Ingested, Problem> {
        let (source, local_id, actor) =
            (source.to_owned(), local_id.to_owned(), caller.key_id.clone());
        let change = move |engine: &mut Engine, store: &mut Store| {
            engine.ingest(store, &source, &local_id, &raw, &actor).map_err(|error| match error {
                OnlineError::NothingToMatch { issues } => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the record has nothing to match on",
                )
                .detail(
                    "a record needs a valid NHS number, an identifier, a name or a date of birth",
                )
                .with("issues", issues_json(&issues)),
                error => Problem::internal(error),
            })
        };
        let ingested =
            self.write(caller, action, change, |ingested| vec![ingested.person_id.clone()])?;
        if !ingested.unchanged {
            *self.metrics().decisions.entry(ingested.decision.as_str()).or_default() += 1;
        }
        Ok(ingested)
    }

    /// The answer to every request once a group commit failed.
    fn unavailable(&self) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the store failed to commit")
            .detail("the service must be restarted; it reloads from the store")
    }

    /// Records an access to personal data; committed before the response is sent.
    fn audit(&self, caller: &Caller, action: &str, person_ids: Vec<String>) -> Result<(), Problem> {
        let entry = AuditEntry {
            at: now_rfc3339(),
            key_id: caller.key_id.clone(),
            role: caller.role.as_str().to_owned(),
            action: action.to_owned(),
            person_ids,
        };
        self.auditor.record(entry).map_err(|error| Problem::internal_message(&error))
    }
}

/// An error response, `application/problem+json` (RFC 9457). Its detail may name
/// fields, never values, and it is never logged.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: String,
    detail: Option<String>,
    extra: Option<(&'static str, Value)>,
}

impl Problem {
    fn new(status: StatusCode, title: &str) -> Problem {
        Problem { status, title: title.to_owned(), detail: None, extra: None }
    }

    fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    fn with(mut self, name: &'static str, value: Value) -> Problem {
        self.extra = Some((name, value));
        self
    }

    fn internal(error: impl std::error::Error) -> Problem {
        Problem::internal_message(&error_chain(&error))
    }

    fn internal_message(message: &str) -> Problem {
        // The messages name no personal data (the crate's errors and SQLite's never
        // carry values).
        tracing::error!(error = %message, "request failed");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, &format!("{what} not found"))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
        });
        if let Some(detail) = self.detail {
            body["detail"] = Value::String(detail);
        }
        if let Some((name, value)) = self.extra {
            body[name] = value;
        }
        (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"))],
            body.to_string(),
        )
            .into_response()
    }
}

type Reply = Result<Response, Problem>;

fn ok_json(status: StatusCode, body: Value) -> Reply {
    ok_serialized(status, &body)
}

/// A JSON answer written straight from its typed value (no `Value` tree between).
fn ok_serialized(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec(body).map_err(Problem::internal)?;
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
        .into_response())
}

/// Runs blocking work (engine, SQLite) off the async threads.
async fn blocking(
    service: Arc<Service>,
    work: impl FnOnce(&Service) -> Reply + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || work(&service)).await {
        Ok(Ok(response)) => response,
        Ok(Err(problem)) => problem.into_response(),
        Err(_) => Problem::internal_message("request task failed").into_response(),
    }
}

/// Parses a JSON body, naming the field and reason on failure.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|error| {
        let reason = match error.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not valid JSON"
            }
            _ => "the body does not match the expected fields and types",
        };
        Problem::new(StatusCode::BAD_REQUEST, reason).detail(describe_json_error(&error))
    })
}

/// serde_json's message without any value it quotes (it may quote what was sent).
fn describe_json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = match message.find(" at line ") {
        Some(at) => &message[..at],
        None => &message,
    };
    // "invalid type: string \"...\", expected ..." quotes the value: keep the kinds only.
    let cleaned = if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        let kind = found.split_whitespace().next().unwrap_or("value");
        format!("invalid type: {kind}, expected {expected}")
    } else if message.starts_with("invalid value") {
        "invalid value".to_owned()
    } else {
        message.to_owned()
    };
    format!("{cleaned} (line {}, column {})", error.line(), error.column())
}

fn issues_json(issues: &[Issue]) -> Value {
    Value::Array(
        issues
            .iter()
            .map(|issue| {
                json!({
                    "field": issue.field.as_str(),
                    "kind": issue.kind,
                    "reason": issue.kind.reason(),
                    "value_ignored": issue.kind.value_ignored(),
                })
            })
            .collect(),
    )
}

/// The match grade of a resolve's match: its probability's, but never above "possible"
/// when the engine would not link the pair without a steward (twins, a parent and
/// child of one name, one NHS number on a mother and her baby).
pub fn match_grade(
    found: &crate::online::Match,
    thresholds: mpi_matching::Thresholds,
) -> &'static str {
    match (found.caution, grade(found.probability, thresholds)) {
        (Some(_), "certain" | "probable") => "possible",
        (_, grade) => grade,
    }
}

/// The match grade of a probability, as FHIR's match-grade extension names them.
pub fn grade(probability: f64, thresholds: mpi_matching::Thresholds) -> &'static str {
    let middle = (thresholds.lower + thresholds.upper) / 2.0;
    if probability >= thresholds.upper {
        "certain"
    } else if probability >= middle {
        "probable"
    } else if probability >= thresholds.lower {
        "possible"
    } else {
        "certainly-not"
    }
}

/// Builds the router.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/v1/records/{source}/{local_id}",
            put(put_record).get(get_record).delete(delete_record),
        )
        .route("/v1/resolve", post(resolve))
        .route("/v1/persons/search", post(search_persons))
        .route("/v1/persons/{id}", get(get_person))
        .route("/v1/audit", get(read_audit))
        .route("/v1/events", get(read_events))
        .route("/v1/persons/{id}/history", get(person_history))
        .route("/v1/persons/{id}/merge", post(merge_persons))
        .route("/v1/persons/{id}/split", post(split_person))
        .route("/v1/reviews", get(list_reviews))
        .route("/v1/reviews/{id}", get(get_review))
        .route("/v1/reviews/{id}/decision", post(decide_review))
        .route("/fhir/Patient/$match", post(fhir::patient_match))
        .route("/fhir/Patient/{id}", get(fhir::patient_read))
        .route("/fhir/Patient", get(fhir::patient_search).put(fhir::patient_update))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn_with_state(service.clone(), track))
        .fallback(|| async { Problem::not_found("route").into_response() })
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::from_fn(shape_errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    // The route template, never the URI: ids and query strings may
                    // carry personal data.
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("request", method = %request.method(), route)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .with_state(service)
}

/// Serves until `shutdown` resolves; in-flight requests finish first.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The index is committed in groups: every second, whatever changed in the last.
    // The store's write-ahead log is checkpointed every second too, on a connection
    // of its own, so that no request ever waits for a checkpoint.
    let flusher = {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let service = Arc::clone(&service);
                let _ = tokio::task::spawn_blocking(move || {
                    service.flush_index(INDEX_COMMIT_AGE);
                    service.checkpoint();
                    service.filter_index();
                })
                .await;
            }
        })
    };
    let result =
        axum::serve(listener, router(Arc::clone(&service))).with_graceful_shutdown(shutdown).await;
    flusher.abort();
    // In-flight writes are done: commit what the index has.
    let _ = tokio::task::spawn_blocking(move || service.flush_index(Duration::ZERO)).await;
    result
}

/// Index changes older than this are committed by the next flush.
const INDEX_COMMIT_AGE: Duration = Duration::from_millis(900);

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Binds and logs the address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

/// Every error in the API's own format: problem+json, or under `/fhir` an
/// OperationOutcome (handlers answer problems; this re-shapes them there). Errors that
/// axum and the layers give before a handler runs (a query string of the wrong types, a
/// method a route does not take, a body over the limit, a request over time) are plain
/// text or empty, and become problems too. Headers they set (`Allow` on a 405) are kept.
async fn shape_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let fhir = request.uri().path().starts_with("/fhir/");
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is = |expected: &str| content_type.is_some_and(|value| value == expected);
    let problem_json = is("application/problem+json");
    if !(status.is_client_error() || status.is_server_error())
        || is("application/fhir+json")
        || (problem_json && !fhir)
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // (Problems and the layers' texts are small; anything longer is cut.)
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let problem = if problem_json {
        let value: Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut problem = Problem::new(status, value["title"].as_str().unwrap_or("error"));
        problem.detail = value["detail"].as_str().map(str::to_owned);
        problem
    } else {
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(status, "the body is too large")
                .detail(format!("a request body may hold at most {MAX_BODY_BYTES} bytes")),
            StatusCode::REQUEST_TIMEOUT => Problem::new(status, "the request took too long")
                .detail(format!(
                    "requests are answered within {} seconds",
                    REQUEST_TIMEOUT.as_secs()
                )),
            StatusCode::METHOD_NOT_ALLOWED => Problem::new(status, "method not allowed")
                .detail("the Allow header lists the methods this route takes"),
            _ => match text.strip_prefix("Failed to deserialize query string: ") {
                Some(why) => {
                    Problem::new(status, "the query string does not match the expected parameters")
                        .detail(why)
                }
                None => {
                    let title = status.canonical_reason().unwrap_or("error").to_lowercase();
                    let problem = Problem::new(status, &title);
                    if text.is_empty() { problem } else { problem.detail(text) }
                }
            },
        }
    };
    let mut shaped = if fhir { fhir::outcome(problem) } else { problem.into_response() };
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name, value.clone());
        }
    }
    shaped
}

/// Counts each routed request by its route template, method and status.
async fn track(
    State(service): State<Arc<Service>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    service.metrics().observe(&route, &method, response.status().as_u16(), seconds);
    response
}

async fn metrics(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    blocking(service, move |service| {
        service.authorize(&headers, Role::Reader)?;
        let (n_records, n_persons, model_version, key_filters) = {
            let engine = service.read_engine();
            let persons =
                engine.linker.persons.iter().filter(|person| !person.members.is_empty()).count();
            (engine.index.num_records(), persons, engine.model.version, engine.index.key_filters())
        };
        let open_reviews =
            service.store().count_reviews(&ReviewFilter::status("open")).map_err(Problem::internal)?;
        let mut text = String::new();
        let metrics = service.metrics();
        text.push_str("# HELP mpi_requests_total HTTP requests by route template, method and status.\n");
        text.push_str("# TYPE mpi_requests_total counter\n");
        let mut requests: Vec<_> = metrics.requests.iter().collect();
        requests.sort();
        for ((route, method, status), count) in requests {
            text.push_str(&format!(
                "mpi_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}\n"
            ));
        }
        text.push_str("# HELP mpi_request_duration_seconds Request latency by route template.\n");
        text.push_str("# TYPE mpi_request_duration_seconds histogram\n");
        let mut latency: Vec<_> = metrics.latency.iter().collect();
        latency.sort_by(|a, b| a.0.cmp(b.0));
        for (route, histogram) in latency {
            for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                text.push_str(&format!(
                    "mpi_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}\n"
                ));
            }
            text.push_str(&format!(
                "mpi_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n",
                histogram.count
            ));
            text.push_str(&format!(
                "mpi_request_duration_seconds_sum{{route=\"{route}\"}} {}\n",
                histogram.sum
            ));
            text.push_str(&format!(
                "mpi_request_duration_seconds_count{{route=\"{route}\"}} {}\n",
                histogram.count
            ));
        }
        text.push_str("# HELP mpi_decisions_total Decisions on records stored through the API.\n");
        text.push_str("# TYPE mpi_decisions_total counter\n");
        for decision in ["linked", "new", "review"] {
            let count = metrics.decisions.get(decision).copied().unwrap_or(0);
            text.push_str(&format!("mpi_decisions_total{{decision=\"{decision}\"}} {count}\n"));
        }
        drop(metrics);
        let (groups, changes) = service.writer.committed();
        for (name, help, value) in [
            ("mpi_write_groups_total", "Write groups committed (one transaction each).", groups),
            ("mpi_write_changes_total", "Changes committed in those groups.", changes),
        ] {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        for (name, help, value) in [
            ("mpi_review_queue_depth", "Open reviews.", open_reviews),
            ("mpi_records", "Records in the index.", n_records),
            ("mpi_persons", "Persons with at least one record.", n_persons as u64),
            ("mpi_model_version", "Model version in use.", u64::from(model_version)),
        ] {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
        }
        text.push_str(
            "# HELP mpi_index_segments Committed blocking-index segments by their key filter: \
             made, pending (made in the background after start-up or a commit), or none (too \
             small to want one).\n# TYPE mpi_index_segments gauge\n",
        );
        for (state, count) in [
            ("made", key_filters.made),
            ("pending", key_filters.pending),
            ("none", key_filters.unwanted),
        ] {
            text.push_str(&format!("mpi_index_segments{{key_filter=\"{state}\"}} {count}\n"));
        }
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))],
            text,
        )
            .into_response())
    })
    .await
}

/// The OpenAPI 3 description of the whole API.
pub const OPENAPI_JSON: &str = include_str!("service/openapi.json");

async fn openapi(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    blocking(service, move |service| {
        service.authorize(&headers, Role::Reader)?;
        Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response())
    })
    .await
}

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

async fn readyz(State(service): State<Arc<Service>>) -> Response {
    blocking(service, |service| {
        if service.writer.failed() {
            return Err(service.unavailable());
        }
        let engine = service.read_engine();
        ok_json(
            StatusCode::OK,
            json!({
                "status": "ready",
                "records": engine.index.num_records(),
                "model_version": engine.model.version,
            }),
        )
    })
    .await
}

async fn put_record(
    State(service): State<Arc<Service>>,
    Path((source, local_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Writer)?;
        check_id("source", &source)?;
        check_id("local_id", &local_id)?;
        let raw: Demographics = parse_body(&body)?;
        let ingested = service.ingest(&caller, "put_record", &source, &local_id, raw)?;
        let status = if ingested.unchanged { StatusCode::OK } else { StatusCode::CREATED };
        ok_json(
            status,
            json!({
                "record_id": ingested.record_id,
                "source_system": source,
                "local_id": local_id,
                "person_id": ingested.person_id,
                "decision": ingested.decision,
                "probability": ingested.probability,
                "unchanged": ingested.unchanged,
                "review": ingested.review.as_ref().map(|(id, reason)| json!({
                    "id": id, "reason": reason, "description": reason.as_str(),
                })),
                "evidence": ingested.evidence,
                "issues": issues_json(&ingested.issues),
            }),
        )
    })
    .await
}

fn check_id(field: &str, value: &str) -> Result<(), Problem> {
    if value.trim().is_empty() || value.len() > 200 {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid identifier in the path")
            .detail(format!("{field} must be 1 to 200 characters")));
    }
    Ok(())
}

async fn get_record(
    State(service): State<Arc<Service>>,
    Path((source, local_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let stored = service.store().record(&source, &local_id).map_err(Problem::internal)?;
        let stored = stored.ok_or_else(|| Problem::not_found("record"))?;
        service.audit(&caller, "read_record", vec![stored.person_id.clone()])?;
        ok_json(
            StatusCode::OK,
            json!({
                "record_id": stored.id,
                "source_system": stored.source_system,
                "local_id": stored.local_id,
                "person_id": stored.person_id,
                "decision": stored.decision,
                "probability": stored.probability,
                "values": stored.raw,
                "normalized": stored.normalized,
            }),
        )
    })
    .await
}

async fn delete_record(
    State(service): State<Arc<Service>>,
    Path((source, local_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Writer)?;
        let removed = service
            .write(
                &caller,
                "delete_record",
                {
                    let actor = caller.key_id.clone();
                    move |engine, store| {
                        engine.remove(store, &source, &local_id, &actor).map_err(Problem::internal)
                    }
                },
                |removed| removed.iter().map(|removed| removed.person_id.clone()).collect(),
            )?
            .ok_or_else(|| Problem::not_found("record"))?;
        ok_json(
            StatusCode::OK,
            json!({
                "record_id": removed.record_id,
                "person_id": removed.person_id,
                "person_retired": removed.person_retired,
            }),
        )
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResolveMode {
    /// At most one candidate, only when exactly one person is certain.
    Single,
    /// A ranked list (stewards).
    List,
}

async fn resolve(State(service): State<Arc<Service>>, headers: HeaderMap, body: Bytes) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let mut fields: serde_json::Map<String, Value> = parse_body(&body)?;
        let mode: ResolveMode = match fields.remove("mode") {
            Some(mode) => serde_json::from_value(mode).map_err(|_| {
                Problem::new(StatusCode::BAD_REQUEST, "invalid mode")
                    .detail("mode is `single` or `list`")
            })?,
            None => ResolveMode::Single,
        };
        let limit = match fields.remove("limit") {
            Some(limit) => limit.as_u64().filter(|&n| (1..=100).contains(&n)).ok_or_else(|| {
                Problem::new(StatusCode::BAD_REQUEST, "invalid limit")
                    .detail("limit is a whole number from 1 to 100")
            })? as usize,
            None => 10,
        };
        if matches!(mode, ResolveMode::List) && !caller.role.allows(Role::Steward) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "a ranked list needs the steward role",
            )
            .detail("systems with the reader role get one certain match or none"));
        }
        let raw: Demographics = parse_body(&serde_json::to_vec(&fields).unwrap_or_default())?;
        let engine = service.read_engine();
        let (probe, issues) = engine.prepare(&raw);
        if !crate::online::has_something_to_match(&probe) {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the probe has nothing to match on",
            )
            .detail("a probe needs a valid NHS number, an identifier, a name or a date of birth")
            .with("issues", issues_json(&issues)));
        }
        let matches = engine.resolve(&probe).map_err(Problem::internal)?;
        let thresholds = engine.thresholds;
        let chosen: Vec<&Match> = match mode {
            ResolveMode::List => matches.iter().take(limit).collect(),
            ResolveMode::Single => {
                let certain: Vec<&Match> =
                    matches.iter().filter(|found| found.is_certain(thresholds)).collect();
                if certain.len() == 1 { certain } else { Vec::new() }
            }
        };
        let candidates: Vec<ResolveCandidate<'_>> = chosen
            .iter()
            .map(|found| ResolveCandidate {
                person_id: engine.linker.persons[found.person as usize].id,
                probability: found.probability,
                grade: match_grade(found, thresholds),
                caution: found.caution.map(crate::engine::ReviewReason::code),
                explanation: &found.score,
            })
            .collect();
        drop(engine);
        let person_ids: Vec<String> =
            candidates.iter().map(|candidate| candidate.person_id.to_string()).collect();
        service.audit(&caller, "resolve", person_ids)?;
        ok_serialized(StatusCode::OK, &ResolveAnswer { candidates, issues: issues_json(&issues) })
    })
    .await
}

/// A resolve's answer, as the OpenAPI document describes it.
#[derive(serde::Serialize)]
struct ResolveAnswer<'a> {
    candidates: Vec<ResolveCandidate<'a>>,
    issues: Value,
}

/// One person a resolve answers with.
#[derive(serde::Serialize)]
struct ResolveCandidate<'a> {
    person_id: uuid::Uuid,
    probability: f64,
    grade: &'static str,
    caution: Option<&'static str>,
    explanation: &'a mpi_matching::Score,
}

/// The golden record of a person. Survivorship: the NHS number of a verified source
/// (a PDS trace), else the one most of its records agree on; former family names from
/// every record; every other field from the first record that has it, records taken in
/// order of source trust (the configured ranking; unlisted sources after listed ones)
/// and then newest first (highest record id). Ties between NHS numbers go the same way.
fn golden_record(engine: &Engine, person: PersonKey) -> Value {
    let linker = &engine.linker;
    // Survivorship order: the most trusted source first, then the newest record.
    let mut members: Vec<usize> = linker.persons[person as usize].members.clone();
    members.sort_by_key(|&position| {
        let entry = &linker.entries[position];
        (engine.trust_rank(&entry.source_system), std::cmp::Reverse(entry.id))
    });
    let records: Vec<NormalizedRecord> =
        members.iter().map(|&position| linker.records[position].to_normalized()).collect();
    let first = |pick: &dyn Fn(&NormalizedRecord) -> Option<Value>| {
        records.iter().find_map(pick).unwrap_or(Value::Null)
    };
    // A verified source's NHS number (a PDS trace) comes before any count.
    let verified = members.iter().find_map(|&position| {
        let entry = &linker.entries[position];
        engine
            .verified_sources
            .iter()
            .any(|source| **source == *entry.source_system)
            .then_some(linker.records[position].nhs_number())
            .flatten()
    });
    // Else the NHS number most records agree on; among equals, the first in
    // survivorship order.
    let nhs_number = verified.or_else(|| {
        crate::engine::majority_nhs_number(
            records.iter().filter_map(|record| record.nhs_number.as_deref()),
        )
    });
    let mut identifiers: Vec<&mpi_matching::Identifier> =
        records.iter().flat_map(|record| &record.identifiers).collect();
    identifiers.sort();
    identifiers.dedup();
    let family_name = first(&|r| r.family_name.as_ref().map(|v| json!(v)));
    // Every former family name its records give, but the one it goes by now.
    let mut former: Vec<&str> = records
        .iter()
        .flat_map(|record| record.previous_family_names.iter().map(|name| &**name))
        .filter(|name| family_name.as_str() != Some(*name))
        .collect();
    former.sort_unstable();
    former.dedup();
    json!({
        "nhs_number": nhs_number,
        "given_names": first(&|r| (!r.given_names.is_empty()).then(|| json!(r.given_names))),
        "family_name": family_name,
        "previous_family_names": former,
        "date_of_birth": first(&|r| r.date_of_birth.map(|d| json!(d.to_iso()))),
        "sex": first(&|r| r.sex.map(|v| json!(v))),
        "postcode": first(&|r| r.postcode.as_ref().map(|v| json!(v.code))),
        "address": first(&|r| r.address.as_ref().map(|v| json!(v.text))),
        "phone": first(&|r| r.phone.as_ref().map(|v| json!(v))),
        "email": first(&|r| r.email.as_ref().map(|v| json!(v))),
        "identifiers": identifiers,
    })
}

/// A person looked up by id for reading.
pub(crate) enum Found {
    /// A live person with records.
    Live(PersonKey),
    /// Merged away: the survivor's id.
    MergedInto(String),
}

/// Looks a person up: 404 when unknown (`what` names it), 410 when retired with no
/// records, the survivor when merged.
fn find_person(engine: &Engine, person_id: &str, what: &str) -> Result<Found, Problem> {
    let person = engine.person_of(person_id).ok_or_else(|| Problem::not_found(what))?;
    let live = engine.live_person(person);
    if live != person {
        return Ok(Found::MergedInto(engine.linker.persons[live as usize].id.to_string()));
    }
    if engine.linker.persons[person as usize].members.is_empty() {
        return Err(Problem::new(StatusCode::GONE, &format!("{what} retired"))
            .detail("the person has no records left"));
    }
    Ok(Found::Live(person))
}

async fn get_person(
    State(service): State<Arc<Service>>,
    Path(person_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let engine = service.read_engine();
        let person = match find_person(&engine, &person_id, "person")? {
            Found::Live(person) => person,
            // Merged: answer with the survivor, a redirect the client can follow.
            Found::MergedInto(survivor) => {
                return Ok((
                    StatusCode::PERMANENT_REDIRECT,
                    [(header::LOCATION, format!("/v1/persons/{survivor}"))],
                    json!({ "person_id": person_id, "merged_into": survivor }).to_string(),
                )
                    .into_response());
            }
        };
        let slot = &engine.linker.persons[person as usize];
        let golden = golden_record(&engine, person);
        let ids: Vec<u64> =
            slot.members.iter().map(|&position| engine.linker.entries[position].id).collect();
        let members: Vec<(u64, String, String, DecisionKind, Option<f64>)> = slot
            .members
            .iter()
            .map(|&position| {
                let entry = &engine.linker.entries[position];
                (
                    entry.id,
                    entry.source_system.to_string(),
                    entry.local_id.to_string(),
                    entry.decision,
                    entry.probability,
                )
            })
            .collect();
        let provisional = slot.provisional;
        drop(engine);
        let (raws, links) = {
            let store = service.store();
            let raws = store.raw_records(&ids).map_err(Problem::internal)?;
            let links = store.active_links(&ids).map_err(Problem::internal)?;
            (raws, links)
        };
        let raws: HashMap<u64, Demographics> = raws.into_iter().collect();
        let records: Vec<Value> = members
            .iter()
            .map(|(id, source, local_id, decision, probability)| {
                json!({
                    "record_id": id,
                    "source_system": source,
                    "local_id": local_id,
                    "decision": decision,
                    "probability": probability,
                    "values": raws.get(id),
                })
            })
            .collect();
        let links: Vec<Value> = links
            .iter()
            .map(|link| {
                json!({
                    "record_id": link.record_id,
                    "method": link.method,
                    "probability": link.probability,
                    "evidence": link.evidence.as_deref().and_then(|text| serde_json::from_str::<Value>(text).ok()),
                    "model_version": link.model_version,
                    "created_at": link.created_at,
                })
            })
            .collect();
        service.audit(&caller, "read_person", vec![person_id.clone()])?;
        ok_json(
            StatusCode::OK,
            json!({
                "person_id": person_id,
                "provisional": provisional,
                "golden": golden,
                "records": records,
                "links": links,
            }),
        )
    })
    .await
}

/// The live persons holding a probe's NHS number or identifier, each with the source
/// systems that hold it for them.
fn persons_holding(
    engine: &Engine,
    raw: &Demographics,
) -> Result<Vec<(PersonKey, Vec<String>)>, Problem> {
    let (probe, issues) = engine.prepare(raw);
    if probe.nhs_number().is_none() && probe.identifiers().len() == 0 {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unusable identifier")
            .with("issues", issues_json(&issues)));
    }
    // Every record holding the identifier, by person.
    let keys = mpi_matching::blocking_keys(&probe);
    let candidates =
        engine.index.candidates(&keys, None, None, usize::MAX).map_err(Problem::internal)?;
    let mut persons: Vec<(PersonKey, Vec<String>)> = Vec::new();
    for candidate in candidates {
        let Some(position) = engine.linker.position(candidate.record_id) else { continue };
        let (entry, record) = (&engine.linker.entries[position], &engine.linker.records[position]);
        let holds = match (probe.nhs_number(), probe.identifiers().next()) {
            (Some(nhs), _) => record.nhs_number() == Some(nhs),
            (None, Some(identifier)) => record.identifiers().any(|held| held == identifier),
            (None, None) => false,
        };
        if !holds || entry.person == PersonKey::MAX {
            continue;
        }
        match persons.iter_mut().find(|(person, _)| *person == entry.person) {
            Some((_, sources)) => sources.push(entry.source_system.to_string()),
            None => persons.push((entry.person, vec![entry.source_system.to_string()])),
        }
    }
    for (_, sources) in &mut persons {
        sources.sort();
        sources.dedup();
    }
    Ok(persons)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    nhs_number: Option<String>,
    identifier: Option<mpi_matching::Identifier>,
}

async fn search_persons(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Reader)?;
        let search: SearchBody = parse_body(&body)?;
        let engine = service.read_engine();
        let raw = match (&search.nhs_number, &search.identifier) {
            (Some(nhs), None) => {
                Demographics { nhs_number: Some(nhs.clone()), ..Demographics::default() }
            }
            (None, Some(identifier)) => {
                Demographics { identifiers: vec![identifier.clone()], ..Demographics::default() }
            }
            _ => {
                return Err(Problem::new(StatusCode::BAD_REQUEST, "search by one identifier")
                    .detail("send either `nhs_number` or `identifier: {system, value}`"));
            }
        };
        let mut persons = persons_holding(&engine, &raw)?;
        let found: Vec<Value> = persons
            .iter_mut()
            .map(|(person, sources)| {
                json!({
                    "person_id": engine.linker.persons[*person as usize].id,
                    "source_systems": sources,
                })
            })
            .collect();
        let person_ids: Vec<String> = persons
            .iter()
            .map(|(person, _)| engine.linker.persons[*person as usize].id.to_string())
            .collect();
        drop(engine);
        service.audit(&caller, "search_persons", person_ids)?;
        ok_json(StatusCode::OK, json!({ "persons": found }))
    })
    .await
}

impl From<StewardError> for Problem {
    fn from(error: StewardError) -> Problem {
        match error {
            StewardError::NotFound(what) => Problem::not_found(what),
            StewardError::Conflict(reason) => {
                Problem::new(StatusCode::CONFLICT, "the change does not fit the current state")
                    .detail(reason)
            }
            StewardError::Invalid(reason) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid change").detail(reason)
            }
            error => Problem::internal(error),
        }
    }
}

fn require_reason(reason: &str) -> Result<(), Problem> {
    if reason.trim().is_empty() || reason.len() > 2000 {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "a reason is required")
            .detail("reason: 1 to 2000 characters saying why"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    other: String,
    reason: String,
}

async fn merge_persons(
    State(service): State<Arc<Service>>,
    Path(person_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Steward)?;
        let merge: MergeBody = parse_body(&body)?;
        require_reason(&merge.reason)?;
        let (moved, _, _) = service.write(
            &caller,
            "merge",
            {
                let (survivor, other, actor) =
                    (person_id.clone(), merge.other.clone(), caller.key_id.clone());
                move |engine, store| {
                    let moved = engine.merge(store, &survivor, &other, &merge.reason, &actor)?;
                    Ok((moved, survivor, other))
                }
            },
            |(_, survivor, other)| vec![survivor.clone(), other.clone()],
        )?;
        ok_json(
            StatusCode::OK,
            json!({ "person_id": person_id, "merged": merge.other, "records_moved": moved }),
        )
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRef {
    source_system: String,
    local_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    records: Vec<RecordRef>,
    reason: String,
    into: Option<String>,
}

async fn split_person(
    State(service): State<Arc<Service>>,
    Path(person_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Steward)?;
        let split: SplitBody = parse_body(&body)?;
        require_reason(&split.reason)?;
        let records: Vec<(String, String)> = split
            .records
            .into_iter()
            .map(|record| (record.source_system, record.local_id))
            .collect();
        let (_, new_person) = service.write(
            &caller,
            "split",
            {
                let (person_id, actor) = (person_id.clone(), caller.key_id.clone());
                move |engine, store| {
                    let into = split.into.as_deref();
                    let new_person =
                        engine.split(store, &person_id, &records, into, &split.reason, &actor)?;
                    Ok((person_id, new_person))
                }
            },
            |(person_id, new_person)| vec![person_id.clone(), new_person.clone()],
        )?;
        ok_json(StatusCode::OK, json!({ "person_id": person_id, "new_person_id": new_person }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ReviewQuery {
    status: Option<String>,
    reason: Option<String>,
    priority: Option<u8>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_reviews(
    State(service): State<Arc<Service>>,
    Query(query): Query<ReviewQuery>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Steward)?;
        let status = query.status.unwrap_or_else(|| "open".to_owned());
        if !["open", "resolved", "superseded", "withdrawn"].contains(&status.as_str()) {
            return Err(Problem::new(StatusCode::BAD_REQUEST, "unknown status")
                .detail("status is open, resolved, superseded or withdrawn"));
        }
        let limit = query.limit.unwrap_or(50).clamp(1, 500);
        let filter = ReviewFilter {
            status: &status,
            reason: query.reason.as_deref(),
            priority: query.priority,
        };
        let (reviews, total) = {
            let store = service.store();
            let reviews = store
                .reviews(&filter, limit, query.offset.unwrap_or(0))
                .map_err(Problem::internal)?;
            (reviews, store.count_reviews(&filter).map_err(Problem::internal)?)
        };
        let person_ids: Vec<String> = reviews
            .iter()
            .flat_map(|review| review.candidate_persons.as_array().cloned().unwrap_or_default())
            .filter_map(|candidate| candidate["person_id"].as_str().map(str::to_owned))
            .collect();
        // An open review's record or candidates may have changed since it opened: its
        // probability now is the best over its (live) candidate persons.
        let reviews: Vec<Value> = {
            let engine = service.read_engine();
            reviews
                .iter()
                .map(|review| {
                    let current = (review.status == "open")
                        .then(|| engine.linker.position(review.record_id))
                        .flatten()
                        .and_then(|position| {
                            review
                                .candidate_persons
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|candidate| {
                                    engine.person_of(candidate["person_id"].as_str()?)
                                })
                                .filter_map(|person| {
                                    engine.best_pair(position, engine.live_person(person))
                                })
                                .map(|(_, score)| score.probability)
                                .reduce(f64::max)
                        });
                    let mut row = serde_json::to_value(review).unwrap_or_default();
                    row["current_probability"] = json!(current);
                    row
                })
                .collect()
        };
        service.audit(&caller, "list_reviews", person_ids)?;
        ok_json(StatusCode::OK, json!({ "reviews": reviews, "total": total }))
    })
    .await
}

/// One side of a review: a record with its values.
fn record_side(engine: &Engine, store: &Store, position: usize) -> Result<Value, Problem> {
    let entry = &engine.linker.entries[position];
    let raw = store.raw_records(&[entry.id]).map_err(Problem::internal)?;
    let person = (entry.person != PersonKey::MAX)
        .then(|| engine.linker.persons[entry.person as usize].id.to_string());
    Ok(json!({
        "record_id": entry.id,
        "source_system": &*entry.source_system,
        "local_id": &*entry.local_id,
        "person_id": person,
        "values": raw.into_iter().next().map(|(_, values)| values),
    }))
}

async fn get_review(
    State(service): State<Arc<Service>>,
    Path(review_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Steward)?;
        let engine = service.read_engine();
        let store = service.store();
        let review = store.review(&review_id).map_err(Problem::internal)?;
        let review = review.ok_or_else(|| Problem::not_found("review"))?;
        let position = engine
            .linker
            .position(review.record_id)
            .ok_or_else(|| Problem::not_found("record"))?;
        let record = record_side(&engine, &store, position)?;
        // The records the engine linked to the pending record (a match moves them too).
        let own = engine.linker.entries[position].person;
        let mut person_ids = Vec::new();
        let mut joined = Vec::new();
        if own != PersonKey::MAX {
            let slot = &engine.linker.persons[own as usize];
            person_ids.push(slot.id.to_string());
            if slot.provisional {
                for &member in slot.members.iter().filter(|&&member| member != position) {
                    joined.push(record_side(&engine, &store, member)?);
                }
            }
        }
        // Each candidate person with its best record and the per-field comparison.
        let mut candidates = Vec::new();
        for candidate in review.candidate_persons.as_array().cloned().unwrap_or_default() {
            let Some(person_id) = candidate["person_id"].as_str() else { continue };
            let Some(person) = engine.person_of(person_id) else { continue };
            let person = engine.live_person(person);
            person_ids.push(engine.linker.persons[person as usize].id.to_string());
            let best = engine.best_pair(position, person);
            let (best_record, comparison) = match best {
                Some((member, score)) => (Some(record_side(&engine, &store, member)?), Some(score)),
                None => (None, None),
            };
            candidates.push(json!({
                "person_id": engine.linker.persons[person as usize].id,
                "probability": comparison.as_ref().map(|score| score.probability),
                "grade": comparison.as_ref().map(|score| grade(score.probability, engine.thresholds)),
                "best_record": best_record,
                "comparison": comparison,
            }));
        }
        drop(store);
        drop(engine);
        service.audit(&caller, "read_review", person_ids)?;
        ok_json(
            StatusCode::OK,
            json!({ "review": review, "record": record, "joined": joined, "candidates": candidates }),
        )
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
    reason: String,
    person_id: Option<String>,
}

async fn decide_review(
    State(service): State<Arc<Service>>,
    Path(review_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Steward)?;
        let decision: DecisionBody = parse_body(&body)?;
        require_reason(&decision.reason)?;
        let answer = match decision.decision.as_str() {
            "match" => ReviewAnswer::Match(decision.person_id),
            "no_match" if decision.person_id.is_none() => ReviewAnswer::NoMatch,
            "no_match" => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "person_id goes with match only",
                ));
            }
            _ => {
                return Err(Problem::new(StatusCode::BAD_REQUEST, "unknown decision")
                    .detail("decision is `match` or `no_match`"));
            }
        };
        let person = service.write(
            &caller,
            "decide_review",
            {
                let (review_id, reason, actor) =
                    (review_id.clone(), decision.reason.clone(), caller.key_id.clone());
                move |engine, store| {
                    Ok(engine.decide_review(store, &review_id, &answer, &reason, &actor)?)
                }
            },
            |person| vec![person.clone()],
        )?;
        ok_json(
            StatusCode::OK,
            json!({ "review_id": review_id, "decision": decision.decision, "person_id": person }),
        )
    })
    .await
}

/// A cursor into an append-only log (the change feed, the audit log).
#[derive(Debug, Deserialize)]
struct FeedQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn read_events(
    State(service): State<Arc<Service>>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        service.authorize(&headers, Role::Reader)?;
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let after = query.after.unwrap_or(0);
        let events = service.store().events(after, limit).map_err(Problem::internal)?;
        let next = events.last().map_or(after, |event| event.seq);
        ok_json(StatusCode::OK, json!({ "events": events, "next": next }))
    })
    .await
}

async fn person_history(
    State(service): State<Arc<Service>>,
    Path(person_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        let caller = service.authorize(&headers, Role::Steward)?;
        if service.read_engine().person_of(&person_id).is_none() {
            return Err(Problem::not_found("person"));
        }
        let events = service.store().person_events(&person_id).map_err(Problem::internal)?;
        service.audit(&caller, "read_history", vec![person_id.clone()])?;
        ok_json(StatusCode::OK, json!({ "person_id": person_id, "history": events }))
    })
    .await
}

async fn read_audit(
    State(service): State<Arc<Service>>,
    Query(query): Query<FeedQuery>,
    headers: HeaderMap,
) -> Response {
    blocking(service, move |service| {
        service.authorize(&headers, Role::Admin)?;
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let entries =
            service.store().audit(query.after.unwrap_or(0), limit).map_err(Problem::internal)?;
        let entries: Vec<Value> = entries
            .into_iter()
            .map(|(seq, entry)| {
                json!({
                    "seq": seq,
                    "at": entry.at,
                    "key_id": entry.key_id,
                    "role": entry.role,
                    "action": entry.action,
                    "person_ids": entry.person_ids,
                })
            })
            .collect();
        ok_json(StatusCode::OK, json!({ "entries": entries }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_reader_and_admin_includes_all() {
        assert!(Role::Writer.allows(Role::Reader));
        assert!(Role::Steward.allows(Role::Reader));
        assert!(!Role::Writer.allows(Role::Steward));
        assert!(!Role::Steward.allows(Role::Writer));
        assert!(!Role::Reader.allows(Role::Writer));
        for role in [Role::Reader, Role::Writer, Role::Steward, Role::Admin] {
            assert!(Role::Admin.allows(role));
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }

    #[test]
    fn grades_follow_the_thresholds() {
        let thresholds = mpi_matching::Thresholds { upper: 0.9, lower: 0.3 };
        assert_eq!(grade(0.95, thresholds), "certain");
        assert_eq!(grade(0.9, thresholds), "certain");
        assert_eq!(grade(0.7, thresholds), "probable");
        assert_eq!(grade(0.4, thresholds), "possible");
        assert_eq!(grade(0.1, thresholds), "certainly-not");
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let error = serde_json::from_str::<Demographics>(r#"{"given_name": 42}"#).unwrap_err();
        let text = describe_json_error(&error);
        assert!(text.contains("invalid type: integer"), "{text}");
        assert!(!text.contains("42"), "{text}");
        let error = serde_json::from_str::<Demographics>(r#"{"surname": "Smith"}"#).unwrap_err();
        let text = describe_json_error(&error);
        assert!(text.contains("unknown field `surname`"), "{text}");
        assert!(!text.contains("Smith"), "{text}");
    }

    #[test]
    fn the_openapi_document_describes_every_route() {
        let document: Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        assert_eq!(document["openapi"], "3.0.3");
        let source = include_str!("service.rs");
        let router = &source[source.find("pub fn router").unwrap()..];
        let router = &router[..router.find(".route_layer").unwrap()];
        let mut routes = 0;
        for route in router.split(".route(").skip(1) {
            let path = route.split('"').nth(1).expect("a quoted path");
            let handlers = route.split('"').nth(2).expect("handlers after the path");
            for method in ["get", "put", "post", "delete"] {
                let routed = handlers
                    .match_indices(&format!("{method}("))
                    .any(|(at, _)| at == 0 || !handlers.as_bytes()[at - 1].is_ascii_alphanumeric());
                if routed {
                    routes += 1;
                    assert!(
                        document["paths"][path][method].is_object(),
                        "{method} {path} is in openapi.json"
                    );
                }
            }
        }
        assert!(routes > 20, "{routes} routes found");
    }

    #[test]
    fn token_hashes_are_stable_hex() {
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
    }
}
