//! The schema as forward-only migrations, and how a connection is opened and brought up to date.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each migration runs in its own
//! transaction together with the bump of `user_version`, so a crash leaves the database at the
//! previous version or the next, never between. A migration is never edited once released: a
//! change is a new entry at the end of [`MIGRATIONS`], and `tests/fixtures/store-v1.db` (made by
//! the first one) must keep loading.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// `PRAGMA application_id` of a hivehost database ("hive" in ASCII), so that hivehost never
/// migrates some other program's SQLite file that happens to sit at its path.
pub(crate) const APPLICATION_ID: i32 = 0x6869_7665;

/// How long a statement waits for a lock held by another connection (the writer's checkpoint, a
/// `sqlite3` shell someone left open) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order: entry `n` takes the database from version `n` to `n + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2];

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Schema 1: servers, events, metrics (raw and per minute), restarts, live instances.
///
/// Tables are STRICT so a wrongly typed value is refused at the door instead of read back
/// wrongly. Events have no foreign key: the history outlives the server it is about. Everything
/// else belongs to its server and goes with it (`ON DELETE CASCADE`, beside the explicit deletes of
/// `delete_server`). `AUTOINCREMENT` on events keeps ids growing even if old events are pruned one
/// day, so a client resuming a stream by id never sees an id twice.
const V1: &str = "
CREATE TABLE servers (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    desired     TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    scan        TEXT,
    code_dir    TEXT NOT NULL
) STRICT;

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    category    TEXT NOT NULL
                CHECK (category IN ('infrastructure', 'monitoring', 'incidents', 'optimization')),
    server      TEXT,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT NOT NULL
) STRICT;
CREATE INDEX events_by_server ON events (server, at_ms);
CREATE INDEX events_by_category ON events (category, at_ms);
CREATE INDEX events_by_time ON events (at_ms);

CREATE TABLE metrics_raw (
    server      TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    at_ms       INTEGER NOT NULL,
    cpu_percent REAL NOT NULL,
    rss_bytes   INTEGER NOT NULL,
    processes   INTEGER NOT NULL
) STRICT;
CREATE INDEX metrics_raw_by_server ON metrics_raw (server, at_ms);
CREATE INDEX metrics_raw_by_time ON metrics_raw (at_ms);

CREATE TABLE metrics_minute (
    server      TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    minute_ms   INTEGER NOT NULL,
    cpu_percent REAL NOT NULL,
    rss_bytes   INTEGER NOT NULL,
    processes   INTEGER NOT NULL,
    samples     INTEGER NOT NULL,
    PRIMARY KEY (server, minute_ms)
) STRICT, WITHOUT ROWID;
CREATE INDEX metrics_minute_by_time ON metrics_minute (minute_ms);

CREATE TABLE restarts (
    id          INTEGER PRIMARY KEY,
    server      TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    at_ms       INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    exit_code   INTEGER,
    signal      INTEGER
) STRICT;
CREATE INDEX restarts_by_server ON restarts (server, at_ms);
CREATE INDEX restarts_by_time ON restarts (at_ms);

CREATE TABLE instances (
    server      TEXT PRIMARY KEY NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    generation  INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    pgid        INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    boot_id     TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL
) STRICT;
";

/// Schema 2: full-text search over events (`events_fts`, SQLite FTS5), for `Store::search_events`.
///
/// An external-content table: the text stays once, in `events`, and the index holds only the
/// tokens of `kind`, `message` and `server`. `unicode61` with `remove_diacritics 2` folds case and
/// accents, so `cafe` finds `Café`; `_` and `-` separate words, so `state_changed` is the two
/// words `state changed` both in the index and in a quoted query.
///
/// New events are indexed in bulk, not by a trigger: `events_fts_state.indexed_to` is the highest
/// event id in the index, and the writer indexes every event above it at the end of each batch, in
/// the batch's transaction (`search::index_new_events`). A per-row trigger would make FTS5 flush
/// its pending terms at the end of every INSERT statement, one tiny segment per event: batched
/// appends fell to about 23,000 events/s, against 94,000 this way (`benches/README.md`).
/// Deletes and updates of indexed rows (only ever made outside hivehost) are followed by
/// triggers; an external-content index must never be told to delete a row it does not hold,
/// hence their `WHEN`. `rebuild` indexes the rows written before this migration.
const V2: &str = "
CREATE VIRTUAL TABLE events_fts USING fts5 (
    kind, message, server,
    content = 'events', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE events_fts_state (
    indexed_to  INTEGER NOT NULL
) STRICT;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events
WHEN old.id <= (SELECT indexed_to FROM events_fts_state) BEGIN
    INSERT INTO events_fts (events_fts, rowid, kind, message, server)
    VALUES ('delete', old.id, old.kind, old.message, old.server);
END;
CREATE TRIGGER events_fts_update AFTER UPDATE ON events
WHEN old.id <= (SELECT indexed_to FROM events_fts_state) BEGIN
    INSERT INTO events_fts (events_fts, rowid, kind, message, server)
    VALUES ('delete', old.id, old.kind, old.message, old.server);
    INSERT INTO events_fts (rowid, kind, message, server) VALUES (new.id, new.kind, new.message, new.server);
END;
INSERT INTO events_fts (events_fts) VALUES ('rebuild');
INSERT INTO events_fts_state (indexed_to) SELECT coalesce(max(id), 0) FROM events;
";

/// Creates the file with mode 0600 if it is absent, so the database (and the `-wal` and `-shm`
/// files, which SQLite creates with the database's mode) is never readable by other users, whatever
/// the umask.
pub(crate) fn create_private(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(StoreError::Create { path: path.to_owned(), source: err.into() }),
    }
}

/// Opens a connection with the settings every connection of the store shares.
///
/// WAL lets the read connection run beside the writer. `synchronous = NORMAL` in WAL mode syncs at
/// checkpoints, not at each commit: a commit is in the WAL (in the OS's page cache) when it
/// returns, which survives the death of hivehost (even `kill -9`) but not a power loss or a kernel
/// crash, which may lose the last commits (never corrupt the database). That is the trade the
/// store makes for batched appends without an fsync per batch.
pub(crate) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let open = |source| StoreError::Open { path: path.to_owned(), source: std::sync::Arc::new(source) };
    let conn = Connection::open(path).map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal { path: path.to_owned(), mode });
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").map_err(open)?;
    Ok(conn)
}

/// Refuses a database that is not hivehost's or is newer than this build, then applies the
/// missing migrations, each in its own transaction. Returns the version it found.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let open = |source| StoreError::Open { path: path.to_owned(), source: std::sync::Arc::new(source) };
    let found: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(open)?;
    let application_id: i32 = conn.query_row("PRAGMA application_id", [], |row| row.get(0)).map_err(open)?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(StoreError::Foreign { path: path.to_owned(), application_id });
    }
    let known = latest_version();
    if found > known {
        return Err(StoreError::SchemaTooNew { path: path.to_owned(), found, known });
    }
    if found == 0 && application_id == 0 {
        // A version-0 file with tables of its own is some other program's database.
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'", [], |row| row.get(0))
            .map_err(open)?;
        if tables > 0 {
            return Err(StoreError::Foreign { path: path.to_owned(), application_id });
        }
    }
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = u32::try_from(done + 1).unwrap_or(u32::MAX);
        let failed =
            |source| StoreError::Migration { path: path.to_owned(), version, source: std::sync::Arc::new(source) };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        // Both pragmas are part of the database header, which changes inside the transaction.
        tx.execute_batch(&format!("PRAGMA user_version = {version}; PRAGMA application_id = {APPLICATION_ID};"))
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(path = %path.display(), version, "migrated the store");
    }
    Ok(found)
}
