//! The service's one writer: every change (records stored or deleted, review
//! decisions, merges, splits) runs on one thread, many requests' changes in one SQLite
//! transaction (a group commit). Each change runs in a savepoint of its own, so a
//! change that fails rolls back alone; the group then commits once, with one sync of
//! the write-ahead log, and only then is any request of the group answered.
//!
//! The writer holds the engine for writing and the store from the first change of a
//! group to its commit, so no request ever sees a change before it is durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::online::Engine;
use crate::store::Store;

/// Most changes one group takes.
const WRITE_GROUP: usize = 256;

/// A group slower than this is logged (with where its time went).
const SLOW_GROUP: Duration = Duration::from_millis(200);

/// What a change leaves to do once its group's commit is known: answer its request.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// A change waiting for the writer: run with the engine and the store, or refused
/// with a reason (then it answers its request at once).
type Job<E> = Box<dyn FnOnce(Result<(&mut E, &mut Store), &str>) -> Option<Finish> + Send>;

/// Why a change was not made durable.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteFailure<P> {
    /// The change itself failed (its savepoint was rolled back).
    Change(P),
    /// The group's commit failed (the store is then marked failed), or the writer stopped.
    Store(String),
}

/// The handle requests use to hand changes to the writer. `E` is the in-memory state
/// the changes update with the store: the service's [`Engine`].
pub struct Writer<E = Engine> {
    sender: Mutex<Sender<Job<E>>>,
    state: Arc<WriterState>,
}

impl<E> std::fmt::Debug for Writer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("state", &self.state).finish_non_exhaustive()
    }
}

/// What the writer thread shares with the handle.
#[derive(Debug, Default)]
struct WriterState {
    /// Set once a group commit failed.
    failed: AtomicBool,
    /// Groups committed.
    groups: AtomicU64,
    /// Changes committed in them.
    changes: AtomicU64,
}

impl<E: Send + Sync + 'static> Writer<E> {
    /// Starts the writer thread over the service's engine and store.
    pub fn start(engine: Arc<RwLock<E>>, store: Arc<Mutex<Store>>) -> Writer<E> {
        let (sender, receiver) = std::sync::mpsc::channel::<Job<E>>();
        let state = Arc::new(WriterState::default());
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("writer".to_owned())
            .spawn(move || run(&receiver, &engine, &store, &shared))
            .expect("the writer thread starts");
        Writer { sender: Mutex::new(sender), state }
    }

    /// Groups committed so far, and the changes they held.
    pub fn committed(&self) -> (u64, u64) {
        (self.state.groups.load(Ordering::Relaxed), self.state.changes.load(Ordering::Relaxed))
    }

    /// True once a group commit has failed: the engine in memory is then ahead of the
    /// store, and the service must be restarted (it reloads from the store).
    pub fn failed(&self) -> bool {
        self.state.failed.load(Ordering::Acquire)
    }

    /// Runs `change` on the writer thread and blocks until its group is committed.
    ///
    /// # Errors
    /// [`WriteFailure::Change`] with the change's own error, or
    /// [`WriteFailure::Store`] when the group could not be committed.
    pub fn write<T, P>(
        &self,
        change: impl FnOnce(&mut E, &mut Store) -> Result<T, P> + Send + 'static,
    ) -> Result<T, WriteFailure<P>>
    where
        T: Send + 'static,
        P: Send + 'static,
    {
        let (reply, answer): (SyncSender<Result<T, WriteFailure<P>>>, _) =
            std::sync::mpsc::sync_channel(1);
        let job: Job<E> = Box::new(move |access| match access {
            Ok((engine, store)) => {
                let outcome = change(engine, store);
                Some(Box::new(move |committed: Result<(), &str>| {
                    let answer = match (committed, outcome) {
                        (Err(error), _) => Err(WriteFailure::Store(error.to_owned())),
                        (Ok(()), outcome) => outcome.map_err(WriteFailure::Change),
                    };
                    let _ = reply.send(answer);
                }) as Finish)
            }
            Err(why) => {
                let _ = reply.send(Err(WriteFailure::Store(why.to_owned())));
                None
            }
        });
        let stopped = || WriteFailure::Store("the writer stopped".to_owned());
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

/// Waits for the next item, then takes whatever else is already waiting, up to `max`
/// in all: a group for one commit. None once every sender is gone.
pub(super) fn next_group<T>(receiver: &Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut group = vec![receiver.recv().ok()?];
    while group.len() < max {
        match receiver.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    Some(group)
}

fn run<E>(
    receiver: &Receiver<Job<E>>,
    engine: &RwLock<E>,
    store: &Mutex<Store>,
    state: &WriterState,
) {
    while let Some(group) = next_group(receiver, WRITE_GROUP) {
        let started = Instant::now();
        let mut engine = engine.write().unwrap_or_else(PoisonError::into_inner);
        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
        let locked = started.elapsed();
        if state.failed.load(Ordering::Acquire) {
            drop((engine, store));
            refuse(group, "an earlier commit failed: restart the service");
            continue;
        }
        if let Err(error) = store.begin_group() {
            drop((engine, store));
            tracing::error!(error = %error, changes = group.len(), "could not begin a write group");
            refuse(group, "the store is busy or failing");
            continue;
        }
        let size = group.len();
        let finishes: Vec<Option<Finish>> = group
            .into_iter()
            .map(|job| {
                // A change that panics answers its request with an error (its reply is
                // dropped) and leaves the others of its group to commit.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    job(Ok((&mut engine, &mut store)))
                }))
                .ok()
                .flatten()
            })
            .collect();
        let ran = started.elapsed();
        let committed = store.commit_group();
        let took = started.elapsed();
        if took >= SLOW_GROUP {
            tracing::warn!(
                changes = size,
                lock_ms = locked.as_millis() as u64,
                run_ms = (ran - locked).as_millis() as u64,
                commit_ms = (took - ran).as_millis() as u64,
                "slow write group"
            );
        }
        if committed.is_ok() {
            state.groups.fetch_add(1, Ordering::Relaxed);
            state.changes.fetch_add(size as u64, Ordering::Relaxed);
        }
        if let Err(error) = &committed {
            // The engine holds the group's changes, the store does not: refuse every
            // later request rather than answer from state that is not durable.
            state.failed.store(true, Ordering::Release);
            tracing::error!(error = %error, changes = size, "a write group failed to commit; the service must restart");
        }
        drop((engine, store));
        let committed = committed.as_ref().map(|_| ()).map_err(|_| "the store failed to commit");
        for finish in finishes.into_iter().flatten() {
            finish(committed);
        }
    }
}

/// Answers every request of a group that could not run.
fn refuse<E>(group: Vec<Job<E>>, why: &str) {
    for job in group {
        job(Err(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;

    fn person(id: &str) -> Batch<'static> {
        Batch { new_persons: vec![(id.to_owned(), false)], ..Batch::default() }
    }

    #[test]
    fn concurrent_changes_commit_in_groups_and_a_failed_change_rolls_back_alone() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = Arc::new(Mutex::new(Store::open(dir.path()).expect("open")));
        let state = Arc::new(RwLock::new(Vec::<u32>::new()));
        let writer = Arc::new(Writer::start(Arc::clone(&state), store));
        let threads: Vec<_> = (0..8u32)
            .map(|thread| {
                let writer = Arc::clone(&writer);
                std::thread::spawn(move || {
                    for i in 0..25u32 {
                        let n = thread * 100 + i;
                        let written = writer.write(move |state: &mut Vec<u32>, store| {
                            state.push(n);
                            store.write_batch(&person(&format!("p{n}"))).map_err(|e| e.to_string())
                        });
                        assert!(written.is_ok(), "{written:?}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a writing thread");
        }
        // One change fails half way (a person id twice): only its own rows go.
        let failed = writer.write(|_: &mut Vec<u32>, store| {
            store.write_batch(&Batch {
                new_persons: vec![("q".to_owned(), false), ("q".to_owned(), false)],
                ..Batch::default()
            })
        });
        assert!(matches!(failed, Err(WriteFailure::Change(_))));
        let reader = Store::open(dir.path()).expect("a second connection");
        let created = reader.events(0, 10_000).expect("events");
        assert_eq!(created.len(), 200, "every acknowledged change is stored, the failed one not");
        assert_eq!(state.read().unwrap().len(), 200);
        let (groups, changes) = writer.committed();
        assert_eq!(changes, 201, "the failed change's group committed too");
        assert!(groups <= changes);
        assert!(!writer.failed());
    }

    #[test]
    fn a_failed_commit_fails_its_group_and_refuses_what_follows() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = Arc::new(Mutex::new(Store::open(dir.path()).expect("open")));
        let writer = Writer::start(Arc::new(RwLock::new(())), store);
        assert!(writer.write(|(), store| store.write_batch(&person("a"))).is_ok());
        // A change that ends the group's transaction itself makes the group's commit fail.
        let broken = writer.write(|(), store| {
            store.write_batch(&person("b"))?;
            store.commit_group()
        });
        assert!(matches!(broken, Err(WriteFailure::Store(_))), "{broken:?}");
        assert!(writer.failed());
        let refused = writer.write(|(), store| store.write_batch(&person("c")));
        match refused {
            Err(WriteFailure::Store(reason)) => assert!(reason.contains("restart"), "{reason}"),
            other => panic!("refused, not {other:?}"),
        }
    }
}
