//! The writer thread: the only owner of the write connection, committing queued operations in batches.
//!
//! Operations arrive on a bounded channel. The thread waits for one, takes whatever else is queued
//! (up to [`BATCH_CAP`]), applies them all in one transaction, commits, and only then answers the
//! operations that wait for durability. One commit per batch instead of one per write is what makes
//! 10,000 events a second cheap; the non-blocking appends of the actors never wait for any of it.
//!
//! Within a batch, one operation failing (a metric for a server deleted a moment earlier, say)
//! does not fail the others: a single statement that fails leaves the transaction as it was, and
//! operations of several statements run inside a savepoint that is rolled back on failure. If
//! SQLite itself abandons the transaction (disk full, I/O error), the whole batch fails and every
//! waiting caller is told.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::records::{CompactReport, Desired, InstanceRecord, MetricPoint, NewEvent, RestartRecord, ServerRecord};
use super::{StoreError, sqlite};

/// The most operations one transaction takes. Large enough that a burst of appends costs a few
/// commits, small enough that a durable operation queued behind a burst waits milliseconds.
pub(crate) const BATCH_CAP: usize = 4096;

/// Raw samples younger than this stay raw.
pub(crate) const RAW_KEEP_MS: i64 = 60 * 60 * 1000;
/// Minute averages younger than this are kept.
pub(crate) const MINUTE_KEEP_MS: i64 = 7 * 24 * 60 * 60 * 1000;
const MINUTE_MS: i64 = 60 * 1000;

/// Where a durable operation's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One request to the writer.
pub(crate) enum Op {
    PutServer(ServerRecord, Reply<()>),
    SetDesired {
        id: String,
        desired: Desired,
        at_ms: i64,
        reply: Reply<()>,
    },
    DeleteServer(String, Reply<()>),
    /// An event; with a reply it is a durable append that learns its row id.
    Event(NewEvent, Option<Reply<i64>>),
    Metric(MetricPoint),
    Restart(RestartRecord),
    RecordInstance(InstanceRecord, Reply<()>),
    ClearInstance {
        server: String,
        generation: u64,
        reply: Reply<()>,
    },
    Compact {
        now_ms: i64,
        reply: Reply<CompactReport>,
    },
    /// Answered once everything queued before it is committed.
    Flush(Reply<()>),
    /// Stops the writer once everything queued before it is committed; answered after the write
    /// connection is closed.
    Close(Reply<()>),
}

/// Counters the writer shares with [`Store::stats`](super::Store::stats).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) dropped: AtomicU64,
    pub(crate) dropped_after_close: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// What an applied operation answers.
enum Done {
    Unit,
    Id(i64),
    Compacted(CompactReport),
}

/// The writer thread's body: runs until the store is closed or every handle to it is gone.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Op>, counters: Arc<Counters>) {
    conn.set_prepared_statement_cache_capacity(32);
    let mut batch = Vec::with_capacity(BATCH_CAP);
    let mut closers = Vec::new();
    // The outcome of the last batch written after a close was asked for, which the close reports.
    let mut closing_error = None;
    while let Some(op) = rx.blocking_recv() {
        take(op, &mut batch, &mut closers, &mut rx);
        while batch.len() < BATCH_CAP {
            match rx.try_recv() {
                Ok(op) => take(op, &mut batch, &mut closers, &mut rx),
                Err(_) => break,
            }
        }
        let outcome = write_batch(&mut conn, &mut batch, &counters);
        if !closers.is_empty() {
            closing_error = outcome.err().or(closing_error);
        }
    }
    // Everything is committed; fold the WAL back into the database so the files left behind are
    // small, then close the connection before answering, so a caller that reopens the file next
    // finds it released.
    if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %err, "the store's final checkpoint failed; the WAL is folded in at the next open");
    }
    if let Err((_, err)) = conn.close() {
        tracing::warn!(error = %err, "closing the store's write connection failed");
    }
    for closer in closers {
        let _ = closer.send(closing_error.clone().map_or(Ok(()), Err));
    }
}

/// Adds an operation to the batch, or on `Close` stops the channel: the operations already queued
/// are still received (and written), new ones are refused.
fn take(op: Op, batch: &mut Vec<Op>, closers: &mut Vec<Reply<()>>, rx: &mut mpsc::Receiver<Op>) {
    match op {
        Op::Close(reply) => {
            closers.push(reply);
            rx.close();
        }
        op => batch.push(op),
    }
}

/// Applies the batch in one transaction and answers every operation in it. Returns the error that
/// failed the whole batch, if one did.
fn write_batch(conn: &mut Connection, batch: &mut Vec<Op>, counters: &Counters) -> Result<(), StoreError> {
    let results = apply_all(conn, batch);
    let outcome = results.as_ref().map(|_| ()).map_err(Clone::clone);
    if let Err(err) = &outcome {
        tracing::error!(error = %err, ops = batch.len(), "a store batch failed; its writes are lost");
    }
    match results {
        // One result per operation, in order: `apply_all` pushes one for each.
        Ok(results) => batch.drain(..).zip(results).for_each(|(op, result)| answer(op, result, counters, true)),
        // The failure was logged once above, not once per lost append.
        Err(err) => batch.drain(..).for_each(|op| answer(op, Err(err.clone()), counters, false)),
    }
    outcome
}

/// Runs every operation inside one transaction; the outer error means nothing was committed.
fn apply_all(conn: &mut Connection, batch: &[Op]) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite("starting a batch"))?;
    let mut results = Vec::with_capacity(batch.len());
    for op in batch {
        let result = apply(&mut tx, op);
        if let Err(err) = &result
            && tx.is_autocommit()
        {
            // SQLite rolled the whole transaction back (disk full, I/O error): the earlier
            // operations of the batch are gone too, and later ones must not run outside a transaction.
            return Err(err.clone());
        }
        results.push(result);
    }
    // The batch's events join the search index in its own transaction, all in one statement.
    if batch.iter().any(|op| matches!(op, Op::Event(..))) {
        match super::search::index_new_events(&tx) {
            Ok(_) => {}
            Err(err) if tx.is_autocommit() => return Err(sqlite("indexing events for search")(err)),
            Err(err) => {
                tracing::warn!(error = %err, "indexing events for search failed; a later batch tries again");
            }
        }
    }
    tx.commit().map_err(sqlite("committing a batch"))?;
    Ok(results)
}

/// Sends a durable operation its answer; counts a failed non-blocking one, and logs it if `log`.
fn answer(op: Op, result: Result<Done, StoreError>, counters: &Counters, log: bool) {
    let unit = |r: Result<Done, StoreError>| r.map(|_| ());
    match op {
        Op::PutServer(_, reply)
        | Op::SetDesired { reply, .. }
        | Op::DeleteServer(_, reply)
        | Op::RecordInstance(_, reply)
        | Op::ClearInstance { reply, .. }
        | Op::Flush(reply)
        | Op::Close(reply) => {
            let _ = reply.send(unit(result));
        }
        // `apply` answers an event with its id and a compaction with its report: the fallbacks
        // are never taken.
        Op::Event(_, Some(reply)) => {
            let _ = reply.send(result.map(|done| if let Done::Id(id) = done { id } else { 0 }));
        }
        Op::Compact { reply, .. } => {
            let _ =
                reply.send(result.map(|done| if let Done::Compacted(r) = done { r } else { CompactReport::default() }));
        }
        Op::Event(ev, None) => note_failure(result, counters, log, "event", ev.server.as_deref()),
        Op::Metric(m) => note_failure(result, counters, log, "metric", Some(&m.server)),
        Op::Restart(r) => note_failure(result, counters, log, "restart", Some(&r.server)),
    }
}

fn note_failure(result: Result<Done, StoreError>, counters: &Counters, log: bool, what: &str, server: Option<&str>) {
    if let Err(err) = result {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        if log {
            tracing::warn!(error = %err, server = server.unwrap_or("-"), "a {what} was not stored");
        }
    }
}

/// Applies one operation inside the batch's transaction.
fn apply(tx: &mut Transaction<'_>, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::PutServer(rec, _) => put_server(tx, rec).map(|()| Done::Unit),
        Op::SetDesired { id, desired, at_ms, .. } => {
            let changed = tx
                .prepare_cached("UPDATE servers SET desired = ?2, updated_ms = ?3 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id, desired.as_str(), at_ms]))
                .map_err(sqlite("setting a server's desired state"))?;
            if changed == 0 { Err(StoreError::NotFound { id: id.clone() }) } else { Ok(Done::Unit) }
        }
        Op::DeleteServer(id, _) => {
            // Several statements: all of them or none.
            let sp = tx.savepoint().map_err(sqlite("deleting a server"))?;
            for sql in [
                "DELETE FROM metrics_raw WHERE server = ?1",
                "DELETE FROM metrics_minute WHERE server = ?1",
                "DELETE FROM restarts WHERE server = ?1",
                "DELETE FROM instances WHERE server = ?1",
                "DELETE FROM servers WHERE id = ?1",
            ] {
                sp.prepare_cached(sql).and_then(|mut st| st.execute([id])).map_err(sqlite("deleting a server"))?;
            }
            sp.commit().map_err(sqlite("deleting a server"))?;
            Ok(Done::Unit)
        }
        Op::Event(ev, _) => insert_event(tx, ev).map(Done::Id),
        Op::Metric(m) => tx
            .prepare_cached(
                "INSERT INTO metrics_raw (server, at_ms, cpu_percent, rss_bytes, processes) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![m.server, m.at_ms, m.cpu_percent, m.rss_bytes, m.processes]))
            .map(|_| Done::Unit)
            .map_err(owned_by(&m.server, "metrics", "storing a metric")),
        Op::Restart(r) => tx
            .prepare_cached(
                "INSERT INTO restarts (server, at_ms, generation, reason, exit_code, signal)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| st.execute(params![r.server, r.at_ms, r.generation, r.reason, r.exit_code, r.signal]))
            .map(|_| Done::Unit)
            .map_err(owned_by(&r.server, "restarts", "storing a restart")),
        Op::RecordInstance(i, _) => tx
            .prepare_cached(
                "INSERT INTO instances (server, generation, pid, pgid, start_ticks, boot_id, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (server) DO UPDATE SET generation = excluded.generation, pid = excluded.pid,
                     pgid = excluded.pgid, start_ticks = excluded.start_ticks, boot_id = excluded.boot_id,
                     recorded_ms = excluded.recorded_ms",
            )
            .and_then(|mut st| {
                st.execute(params![i.server, i.generation, i.pid, i.pgid, i.start_ticks, i.boot_id, i.recorded_ms])
            })
            .map(|_| Done::Unit)
            .map_err(owned_by(&i.server, "instance", "recording an instance")),
        Op::ClearInstance { server, generation, .. } => tx
            .prepare_cached("DELETE FROM instances WHERE server = ?1 AND generation = ?2")
            .and_then(|mut st| st.execute(params![server, generation]))
            .map(|_| Done::Unit)
            .map_err(sqlite("clearing an instance")),
        Op::Compact { now_ms, .. } => compact(tx, *now_ms).map(Done::Compacted),
        Op::Flush(_) | Op::Close(_) => Ok(Done::Unit),
    }
}

fn put_server(tx: &Transaction<'_>, rec: &ServerRecord) -> Result<(), StoreError> {
    let spec = json_text(&rec.spec, "spec")?;
    let scan = rec.scan.as_ref().map(|scan| json_text(scan, "scan report")).transpose()?;
    // An upsert, not `INSERT OR REPLACE`: a replace deletes the old row first, and the cascade
    // would take the server's metrics, restarts and instance with it.
    tx.prepare_cached(
        "INSERT INTO servers (id, name, spec, desired, created_ms, updated_ms, scan, code_dir)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, spec = excluded.spec, desired = excluded.desired,
             created_ms = excluded.created_ms, updated_ms = excluded.updated_ms, scan = excluded.scan,
             code_dir = excluded.code_dir",
    )
    .and_then(|mut st| {
        st.execute(params![
            rec.id,
            rec.name,
            spec,
            rec.desired.as_str(),
            rec.created_ms,
            rec.updated_ms,
            scan,
            rec.code_dir
        ])
    })
    .map(|_| ())
    .map_err(sqlite("storing a server"))
}

fn insert_event(tx: &Transaction<'_>, ev: &NewEvent) -> Result<i64, StoreError> {
    let data = json_text(&ev.data, "event data")?;
    let mut st = tx
        .prepare_cached(
            "INSERT INTO events (at_ms, category, server, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sqlite("storing an event"))?;
    st.execute(params![ev.at_ms, ev.category.as_str(), ev.server, ev.kind, ev.message, data])
        .map_err(sqlite("storing an event"))?;
    Ok(tx.last_insert_rowid())
}

/// Folds raw samples older than an hour into per-minute averages and drops minute rows older than a
/// week, all in one savepoint.
///
/// The raw cutoff is rounded down to a minute, so a minute is always folded whole and raw samples
/// stay at least an hour. A sample that arrives late for a minute already folded is merged into
/// that minute's averages, weighted by the samples each side holds.
fn compact(tx: &mut Transaction<'_>, now_ms: i64) -> Result<CompactReport, StoreError> {
    let raw_cutoff = floor_minute(now_ms - RAW_KEEP_MS);
    let minute_cutoff = now_ms - MINUTE_KEEP_MS;
    let sp = tx.savepoint().map_err(sqlite("compacting metrics"))?;
    let minutes_written = sp
        .execute(
            "INSERT INTO metrics_minute (server, minute_ms, cpu_percent, rss_bytes, processes, samples)
             SELECT server, at_ms - (at_ms % 60000) AS minute, avg(cpu_percent),
                    CAST(round(avg(rss_bytes)) AS INTEGER), CAST(round(avg(processes)) AS INTEGER), count(*)
             FROM metrics_raw WHERE at_ms < ?1 GROUP BY server, minute
             ON CONFLICT (server, minute_ms) DO UPDATE SET
                 cpu_percent = (cpu_percent * samples + excluded.cpu_percent * excluded.samples)
                     / (samples + excluded.samples),
                 rss_bytes = CAST(round((rss_bytes * 1.0 * samples + excluded.rss_bytes * 1.0 * excluded.samples)
                     / (samples + excluded.samples)) AS INTEGER),
                 processes = CAST(round((processes * 1.0 * samples + excluded.processes * 1.0 * excluded.samples)
                     / (samples + excluded.samples)) AS INTEGER),
                 samples = samples + excluded.samples",
            [raw_cutoff],
        )
        .map_err(sqlite("compacting metrics"))?;
    let raw_compacted =
        sp.execute("DELETE FROM metrics_raw WHERE at_ms < ?1", [raw_cutoff]).map_err(sqlite("compacting metrics"))?;
    let minutes_dropped = sp
        .execute("DELETE FROM metrics_minute WHERE minute_ms < ?1", [minute_cutoff])
        .map_err(sqlite("compacting metrics"))?;
    sp.commit().map_err(sqlite("compacting metrics"))?;
    Ok(CompactReport {
        raw_compacted: raw_compacted as u64,
        minutes_written: minutes_written as u64,
        minutes_dropped: minutes_dropped as u64,
    })
}

fn floor_minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

fn json_text(value: &serde_json::Value, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Encode { what, detail: err.to_string() })
}

/// Maps a failed write of a row that belongs to a server: a foreign-key failure means the server
/// is not (or no longer) in the store.
fn owned_by<'a>(
    server: &'a str,
    what: &'static str,
    during: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |err| {
        let foreign_key = matches!(&err, rusqlite::Error::SqliteFailure(e, _)
            if e.code == ErrorCode::ConstraintViolation
                && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY);
        if foreign_key { StoreError::UnknownServer { id: server.to_owned(), what } } else { sqlite(during)(err) }
    }
}
