//! Benchmark of the store: batched event appends against one-commit-per-insert and a raw transaction, and reading a server's last 100 events.
//!
//! Run with `cargo bench --bench store`. Every run writes 10,000 events into a fresh database:
//! (a) one raw rusqlite transaction with a prepared statement (the floor), (b) one INSERT per
//! autocommit transaction (what a naive store does), (c) `Store::append_event` for each, then
//! `Store::flush`. All three use the same file settings (the store creates each database: the current
//! schema, WAL, `synchronous = NORMAL`); (a) and (b) bind pre-serialized JSON, so they pay SQLite only.
//! (b') is (b) with SQLite's default `synchronous = FULL` (an fsync per commit), on a tenth of the
//! events, reported as a rate (the time column extrapolates it to the full count).
//! The three ways alternate, seven runs each, and the median counts. Then, on a database of 10,000
//! events over 10 servers: durable appends one at a time, and the last 100 events of one server
//! through `Store::events` against the same query on a raw connection. Without `--bench` it runs a
//! smoke version.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hivehost::store::{Category, EventQuery, NewEvent, Store};
use rusqlite::Connection;

struct Sizes {
    events: usize,
    runs: usize,
    reads: usize,
    durable: usize,
}

const FULL: Sizes = Sizes { events: 10_000, runs: 7, reads: 2_000, durable: 2_000 };
const SMOKE: Sizes = Sizes { events: 500, runs: 1, reads: 20, durable: 20 };
const SERVERS: usize = 10;
/// The fsync-per-commit baseline writes this fraction of the events: at a few milliseconds per
/// fsync, 10,000 would take most of a minute per run. Its rate is what the table compares.
const FULL_SHARE: usize = 10;

const INSERT: &str =
    "INSERT INTO events (at_ms, category, server, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const LAST_100: &str = "SELECT id, at_ms, category, server, kind, message, data FROM events WHERE server = ?1
     ORDER BY at_ms DESC, id DESC LIMIT 100";

/// An event row as the raw baseline reads it (no JSON parsing, no records).
type RawEvent = (i64, i64, String, Option<String>, String, String, String);

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full { FULL } else { SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let events = make_events(sizes.events);
    let (mut floor, mut naive, mut naive_full, mut hive) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..sizes.runs {
        let fresh = |way: &str| -> anyhow::Result<std::path::PathBuf> {
            let path = dir.path().join(format!("{way}-{run}.db"));
            runtime.block_on(Store::open(&path)?.close())?;
            Ok(path)
        };
        floor.push(raw_transaction(&fresh("floor")?, &events)?);
        naive.push(autocommit(&fresh("naive")?, &events, "NORMAL")?);
        naive_full.push(autocommit(&fresh("naive-full")?, &events[..events.len() / FULL_SHARE], "FULL")?);
        let path = fresh("hive")?;
        hive.push(runtime.block_on(batched(&path, events.clone()))?);
    }

    // Reads and durable appends, on the last hivehost database (10,000 events over 10 servers).
    let path = dir.path().join(format!("hive-{}.db", sizes.runs - 1));
    let (store_reads, raw_reads, durable) = runtime.block_on(reads_and_durable(&path, &sizes))?;
    let naive_full_rate = (sizes.events / FULL_SHARE) as f64 / median(naive_full).as_secs_f64();
    print(&sizes, full, &floor, &naive, naive_full_rate, &hive, &store_reads, &raw_reads, &durable);
    Ok(())
}

fn make_events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            at_ms: 1_764_000_000_000 + i as i64,
            category: Category::ALL[i % 4],
            server: Some(format!("server-{}", i % SERVERS)),
            kind: "state_changed".to_owned(),
            message: format!("server-{} went from starting to running (generation {i})", i % SERVERS),
            data: serde_json::json!({"from": "starting", "to": "running", "generation": i, "reason": "ready"}),
        })
        .collect()
}

/// Opens a raw connection with the store's settings (the file is already in WAL mode).
fn raw(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

/// Binds one event the way the store does, from pre-serialized JSON.
fn insert(conn: &Connection, ev: &NewEvent, data: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(INSERT)?.execute(rusqlite::params![
        ev.at_ms,
        ev.category.as_str(),
        ev.server,
        ev.kind,
        ev.message,
        data
    ])
}

/// (a) The floor: one transaction, one prepared statement.
fn raw_transaction(path: &Path, events: &[NewEvent]) -> anyhow::Result<Duration> {
    let mut conn = raw(path)?;
    let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
    let started = Instant::now();
    let tx = conn.transaction()?;
    for (ev, data) in events.iter().zip(&data) {
        insert(&tx, ev, data)?;
    }
    tx.commit()?;
    Ok(started.elapsed())
}

/// (b) The naive store: every INSERT its own (autocommit) transaction, with the store's
/// `synchronous = NORMAL` or SQLite's default `FULL` (an fsync per commit).
fn autocommit(path: &Path, events: &[NewEvent], synchronous: &str) -> anyhow::Result<Duration> {
    let conn = raw(path)?;
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}"))?;
    let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
    let started = Instant::now();
    for (ev, data) in events.iter().zip(&data) {
        insert(&conn, ev, data)?;
    }
    Ok(started.elapsed())
}

/// (c) hivehost: non-blocking appends, then a flush that returns once all are committed.
async fn batched(path: &Path, events: Vec<NewEvent>) -> anyhow::Result<Duration> {
    let store = Store::open(path)?;
    let n = events.len() as u64;
    let started = Instant::now();
    for ev in events {
        store.append_event(ev);
    }
    store.flush().await?;
    let elapsed = started.elapsed();
    let stats = store.stats();
    anyhow::ensure!(stats.dropped == 0 && stats.failed == 0, "appends were lost: {stats:?}");
    let stored = store.events(EventQuery::latest(usize::MAX)).await?.len() as u64;
    anyhow::ensure!(stored == n, "stored {stored} of {n} events");
    store.close().await?;
    Ok(elapsed)
}

/// Latencies of the last-100 read through the store and on a raw connection, and of durable appends.
async fn reads_and_durable(
    path: &Path,
    sizes: &Sizes,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    let store = Store::open(path)?;
    let query = || EventQuery { server: Some("server-3".to_owned()), category: None, since_ms: None, limit: 100 };
    let expected = store.events(query()).await?;
    anyhow::ensure!(expected.len() == 100.min(sizes.events / SERVERS), "read {} events", expected.len());
    let mut store_reads = Vec::with_capacity(sizes.reads);
    for _ in 0..sizes.reads {
        let started = Instant::now();
        let got = store.events(query()).await?;
        store_reads.push(started.elapsed());
        anyhow::ensure!(got.len() == expected.len());
    }
    let conn = raw(path)?;
    let mut raw_reads = Vec::with_capacity(sizes.reads);
    for _ in 0..sizes.reads {
        let started = Instant::now();
        let mut st = conn.prepare_cached(LAST_100)?;
        let rows: Vec<RawEvent> = st
            .query_map(["server-3"], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?
            .collect::<Result<_, _>>()?;
        raw_reads.push(started.elapsed());
        anyhow::ensure!(rows.len() == expected.len());
    }
    drop(conn);
    let mut durable = Vec::with_capacity(sizes.durable);
    for ev in make_events(sizes.durable) {
        let started = Instant::now();
        store.append_event_durable(ev).await.context("durable append")?;
        durable.push(started.elapsed());
    }
    store.close().await?;
    Ok((store_reads, raw_reads, durable))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn percentile(mut times: Vec<Duration>, p: f64) -> Duration {
    times.sort();
    let index = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
    times[index]
}

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#[allow(clippy::too_many_arguments, reason = "one table from every measurement")]
fn print(
    sizes: &Sizes,
    full: bool,
    floor: &[Duration],
    naive: &[Duration],
    naive_full_rate: f64,
    hive: &[Duration],
    store_reads: &[Duration],
    raw_reads: &[Duration],
    durable: &[Duration],
) {
    let note = if full { "" } else { " (smoke run: sizes are tiny, figures mean nothing)" };
    println!("\nstore: append {} events into a fresh database, median of {} runs{note}\n", sizes.events, sizes.runs);
    println!("| way                                         |     median |      events/s | each run (ms) |");
    println!("|---------------------------------------------|------------|---------------|---------------|");
    let row = |what: &str, runs: &[Duration]| {
        let t = median(runs.to_vec());
        let each: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.as_secs_f64() * 1e3)).collect();
        println!(
            "| {what:43} | {:>7.1} ms | {:>13.0} | {} |",
            t.as_secs_f64() * 1e3,
            sizes.events as f64 / t.as_secs_f64(),
            each.join(" ")
        );
    };
    row("(a) floor: one raw transaction, prepared", floor);
    row("(b) naive: one autocommit INSERT each", naive);
    row("(c) hivehost: append_event each, then flush", hive);
    println!(
        "| {:43} | {:>7.1} ms | {:>13.0} | ({} events each run) |",
        "(b') naive with synchronous = FULL",
        sizes.events as f64 / naive_full_rate * 1e3,
        naive_full_rate,
        sizes.events / FULL_SHARE
    );
    let rate = |runs: &[Duration]| sizes.events as f64 / median(runs.to_vec()).as_secs_f64();
    println!(
        "\n(c) = {:.0} events/s (target > 50,000); (c)/(a) = {:.0} %; (c)/(b) = {:.1}x",
        rate(hive),
        rate(hive) / rate(floor) * 100.0,
        rate(hive) / rate(naive)
    );
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let title = format!("one operation, on {} events over {SERVERS} servers", sizes.events);
    println!("\n| {title:49} |   median |      p99 |");
    println!("|---------------------------------------------------|----------|----------|");
    for (what, times) in [
        ("last 100 events of a server: Store::events", store_reads),
        ("same query, raw connection (baseline)", raw_reads),
        ("append_event_durable, one at a time", durable),
    ] {
        println!(
            "| {what:49} | {:>5.0} µs | {:>5.0} µs |",
            micros(median(times.to_vec())),
            micros(percentile(times.to_vec(), 0.99))
        );
    }
}
