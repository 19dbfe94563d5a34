//! The store: what hivehost keeps across restarts, in one SQLite file (`data/hivehost.db`).
//!
//! It holds the deployed servers with their desired state, the event history ("memories", with a
//! full-text index over it: `store/search.rs`), metrics history (raw samples for an hour, minute
//! averages for a week), restart records, and the live instance of each server (what recovery
//! needs to find and kill processes a dead hivehost left behind). This is the only module of hivehost that names SQLite.
//!
//! # How it writes
//! One writer thread (`store/writer.rs`) owns the write connection. Operations reach it over a bounded
//! queue of [`QUEUE_CAPACITY`]; it takes everything queued (up to a batch cap), applies it in one
//! transaction, commits, and then answers the operations that wait. The `async` writes return once
//! their change is committed; `append_event`, `append_metric` and `record_restart` never block or
//! await (actors call them) and are committed with the next batch, or dropped and counted in
//! [`StoreStats::dropped`] if the queue is full. [`Store::flush`] waits until everything queued
//! before it is committed. Reads run on a second connection on a blocking thread, beside the
//! writer (WAL lets readers and the writer proceed together); a read sees every write that has
//! returned.
//!
//! # What survives what
//! The database runs in WAL mode with `synchronous = NORMAL`: a commit is written to the WAL when
//! it returns but the WAL is synced only at checkpoints. A killed hivehost (`kill -9`, a panic, an
//! OOM kill) loses nothing that was committed, and an interrupted batch is rolled back whole
//! (`tests/store_crash.rs` kills a writer mid-stream and checks both). A power loss or kernel
//! crash may lose the last commits before the latest checkpoint, never the database's integrity:
//! `synchronous = FULL` would close that window at the price of an fsync per batch, which the
//! host's guarantees (its processes die with the machine anyway) do not need.
//!
//! # Schema
//! Forward-only migrations numbered by `PRAGMA user_version` (`store/schema.rs`); a database newer than
//! this build is refused, never downgraded. The file is created with mode 0600.

mod read;
mod records;
mod schema;
mod search;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

pub use records::{
    Category, CompactReport, Desired, EventQuery, EventRecord, EventSearch, InstanceRecord, MetricPoint, NewEvent,
    RestartRecord, ServerRecord, StoreStats, UnknownName,
};
pub use search::{SEARCH_LIMIT_MAX, SEARCH_WORDS_MAX};
use writer::{Counters, Op, Reply};

/// How many operations may wait for the writer. At about 100,000 appends a second of writer
/// throughput this is over half a second of a burst absorbed before anything is dropped.
pub const QUEUE_CAPACITY: usize = 65_536;

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "hivehost.db";

/// Why the store could not do what was asked, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database file {}: {source}: check that its directory exists and is writable", .path.display())]
    Create { path: PathBuf, source: Arc<std::io::Error> },
    #[error("cannot open the database {}: {source}: check the file's permissions and that it is a SQLite database", .path.display())]
    Open { path: PathBuf, source: Arc<rusqlite::Error> },
    #[error(
        "the database {} cannot use write-ahead logging (journal mode stayed {mode}): keep the data directory on a local file system",
        .path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "{} is not a hivehost database (application_id {application_id:#x}, or tables of another program): move it away or choose another data directory",
        .path.display()
    )]
    Foreign { path: PathBuf, application_id: i32 },
    #[error("database {} has schema version {found} but this hivehost knows up to {known}: upgrade hivehost", .path.display())]
    SchemaTooNew { path: PathBuf, found: u32, known: u32 },
    #[error(
        "migrating database {} to schema version {version} failed: {source}: the database was left at the previous version; free disk space or restore a backup, then start again",
        .path.display()
    )]
    Migration { path: PathBuf, version: u32, source: Arc<rusqlite::Error> },
    #[error("no server with id `{id}` in the store: list the servers to see which exist")]
    NotFound { id: String },
    #[error("server `{id}` is not in the store, so its {what} cannot be recorded: store the server first")]
    UnknownServer { id: String, what: &'static str },
    #[error("the store failed while {during}: {source}: check free disk space and the database file")]
    Sqlite { during: &'static str, source: Arc<rusqlite::Error> },
    #[error(
        "the {what} of row {row} of table {table} cannot be read ({detail}): it was changed outside hivehost; fix or delete the row"
    )]
    Corrupt { table: &'static str, row: String, what: &'static str, detail: String },
    /// Search text that cannot be searched for; `problem` says why and what to type instead.
    #[error("cannot search the events for `{query}`: {problem}")]
    Search { query: String, problem: &'static str },
    #[error("the {what} cannot be written as JSON: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error("cannot start the store's writer thread: {0}: the system is out of threads or memory")]
    Thread(Arc<std::io::Error>),
    #[error("the store is closed and takes no more writes: this is a bug if hivehost is not shutting down")]
    Closed,
    #[error("the store's writer thread panicked ({0}): restart hivehost and report the bug")]
    WriterPanicked(String),
    #[error("a store read did not finish ({0}): try again")]
    ReadAborted(String),
}

/// Wraps a SQLite error with what the store was doing.
pub(crate) fn sqlite(during: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { during, source: Arc::new(source) }
}

/// A handle to the store; clones share one writer and one read connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    queue: mpsc::Sender<Op>,
    read: Mutex<Connection>,
    counters: Arc<Counters>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating it with mode 0600 if absent) and migrates the database, then starts the
    /// writer thread. Blocking: call it before serving, or inside `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        schema::create_private(path)?;
        let mut write = schema::connect(path)?;
        let found = schema::migrate(&mut write, path)?;
        // Events inserted by hand since the last run join the search index now; the writer
        // indexes its own as it commits them.
        if let Err(err) = search::index_new_events(&write) {
            tracing::warn!(path = %path.display(), error = %err, "indexing events for search failed");
        }
        let read = schema::connect(path)?;
        read.execute_batch("PRAGMA query_only = ON")
            .map_err(|source| StoreError::Open { path: path.to_owned(), source: Arc::new(source) })?;
        read.set_prepared_statement_cache_capacity(32);
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let writer_counters = counters.clone();
        let writer = std::thread::Builder::new()
            .name("hivehost-store".into())
            .spawn(move || writer::run(write, rx, writer_counters))
            .map_err(|err| StoreError::Thread(Arc::new(err)))?;
        tracing::debug!(path = %path.display(), found, version = schema::latest_version(), "store open");
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                queue,
                read: Mutex::new(read),
                counters,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Inserts the server or replaces the record of the same id; committed when it returns.
    ///
    /// Replacing keeps the server's metrics, restarts and instance.
    pub async fn put_server(&self, rec: ServerRecord) -> Result<(), StoreError> {
        self.call(|reply| Op::PutServer(rec, reply)).await
    }

    /// Sets whether the server should run (and its `updated_ms` to now); [`StoreError::NotFound`] if
    /// the store has no such server.
    pub async fn set_desired(&self, id: &str, desired: Desired) -> Result<(), StoreError> {
        let (id, at_ms) = (id.to_owned(), now_ms());
        self.call(|reply| Op::SetDesired { id, desired, at_ms, reply }).await
    }

    /// Removes the server with its metrics, restarts and instance, in one transaction. Its events
    /// stay: the history outlives the server. Deleting an absent server succeeds, so a delete
    /// interrupted by a crash can simply be repeated.
    pub async fn delete_server(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(|reply| Op::DeleteServer(id, reply)).await
    }

    /// Every server, oldest first.
    pub async fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        self.read(read::servers).await
    }

    pub async fn server(&self, id: &str) -> Result<Option<ServerRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| read::server(conn, &id)).await
    }

    /// Queues an event without waiting (actors call this); it is committed with the next batch.
    /// Dropped, and counted in [`StoreStats::dropped`], only if the queue is full.
    pub fn append_event(&self, ev: NewEvent) {
        self.offer(Op::Event(ev, None));
    }

    /// Appends an event and returns its id once it is committed.
    pub async fn append_event_durable(&self, ev: NewEvent) -> Result<i64, StoreError> {
        self.call(|reply| Op::Event(ev, Some(reply))).await
    }

    /// Returns once everything queued before it (appends included) is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(Op::Flush).await
    }

    /// Events matching the query, newest first (by time, then id). Non-blocking appends are
    /// visible once committed: call [`Store::flush`] first to read your own.
    pub async fn events(&self, q: EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.read(move |conn| read::events(conn, &q)).await
    }

    /// Events whose kind, message or server contain every word of `q.query` (see [`EventSearch`]),
    /// filtered like [`Store::events`], newest first; at most `q.limit` clamped to
    /// `1..=`[`SEARCH_LIMIT_MAX`]. Text with no letter or digit in it is refused with
    /// [`StoreError::Search`]; no text at all lists events.
    pub async fn search_events(&self, q: EventSearch) -> Result<Vec<EventRecord>, StoreError> {
        self.read(move |conn| search::search(conn, &q)).await
    }

    /// Queues a metrics sample without waiting; see [`Store::append_event`]. A sample of a server
    /// that is not in the store (deleted a moment earlier, say) is refused by the writer and
    /// counted in [`StoreStats::failed`].
    pub fn append_metric(&self, m: MetricPoint) {
        self.offer(Op::Metric(m));
    }

    /// A server's metrics since a time, oldest first: minute averages (dated at the start of their
    /// minute) for what is older than an hour and compacted, raw samples after.
    pub async fn metrics(&self, server: &str, since_ms: i64) -> Result<Vec<MetricPoint>, StoreError> {
        let server = server.to_owned();
        self.read(move |conn| read::metrics(conn, &server, since_ms)).await
    }

    /// Folds raw samples older than an hour (rounded down to a whole minute) into per-minute
    /// averages and deletes minute rows older than a week, in one transaction.
    pub async fn compact(&self, now_ms: i64) -> Result<CompactReport, StoreError> {
        self.call(|reply| Op::Compact { now_ms, reply }).await
    }

    /// Queues a restart record without waiting; see [`Store::append_event`]. Like a metric, it must
    /// belong to a server in the store.
    pub fn record_restart(&self, r: RestartRecord) {
        self.offer(Op::Restart(r));
    }

    /// Restarts since a time, of one server or of all, oldest first.
    pub async fn restarts(&self, server: Option<&str>, since_ms: i64) -> Result<Vec<RestartRecord>, StoreError> {
        let server = server.map(str::to_owned);
        self.read(move |conn| read::restarts(conn, server.as_deref(), since_ms)).await
    }

    /// Records the server's live incarnation, replacing the previous one; committed when it
    /// returns, because recovery after a crash relies on it.
    pub async fn record_instance(&self, rec: InstanceRecord) -> Result<(), StoreError> {
        self.call(|reply| Op::RecordInstance(rec, reply)).await
    }

    /// Forgets the server's instance if it is still the given generation (a late clear of an older
    /// incarnation leaves the newer record alone).
    pub async fn clear_instance(&self, server: &str, generation: u64) -> Result<(), StoreError> {
        let server = server.to_owned();
        self.call(|reply| Op::ClearInstance { server, generation, reply }).await
    }

    pub async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.read(read::instances).await
    }

    /// `PRAGMA integrity_check` of the database: `["ok"]` when it is sound.
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        self.read(read::integrity_check).await
    }

    pub fn stats(&self) -> StoreStats {
        let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        let counters = &self.inner.counters;
        StoreStats {
            db_bytes: size(&self.inner.path),
            wal_bytes: size(Path::new(&wal)),
            queued: self.inner.queue.max_capacity() - self.inner.queue.capacity(),
            dropped: counters.dropped.load(Ordering::Relaxed),
            dropped_after_close: counters.dropped_after_close.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Commits everything queued, stops the writer and waits for its thread. Other clones of the
    /// store can still read; their writes fail with [`StoreError::Closed`]. Closing twice is fine.
    /// Dropping the last handle instead also commits what was queued, but on a thread nobody waits
    /// for: call `close` at shutdown so the process does not exit first.
    pub async fn close(self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let result = match self.inner.queue.send(Op::Close(reply)).await {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let handle = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|err| StoreError::WriterPanicked(err.to_string()))?;
            joined.map_err(|panic| StoreError::WriterPanicked(panic_message(&*panic)))?;
        }
        result
    }

    /// Sends an operation that waits for its answer; waits for room in the queue.
    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner.queue.send(op(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues an operation nobody waits for, or counts it as dropped.
    fn offer(&self, op: Op) {
        match self.inner.queue.try_send(op) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Logged at the first drop and then at every 1,024th, so a flood cannot flood the log too.
                let dropped = self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if dropped.is_multiple_of(1024) {
                    tracing::warn!(dropped = dropped + 1, "the store's queue is full: dropping appends");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.inner.counters.dropped_after_close.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs a query on the read connection on a blocking thread.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another read cannot leave the connection half-used: every statement
            // resets when dropped, so a poisoned lock is safe to take.
            let conn = inner.read.lock().unwrap_or_else(PoisonError::into_inner);
            query(&conn)
        })
        .await
        .map_err(|err| StoreError::ReadAborted(err.to_string()))?
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> i64 {
    millis(SystemTime::now())
}

/// `t` as milliseconds since the Unix epoch, the store's time unit (0 before the epoch).
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}
