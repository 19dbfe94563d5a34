//! Crash safety of the store: a writer killed with SIGKILL mid-stream leaves a sound database that
//! holds every append it reported as committed.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable), reads the
//! ids it prints after each durable append, kills it by its pid mid-stream, and then inspects the
//! file with a plain SQLite connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hivehost::store::{Category, DB_FILE, NewEvent, Store};

/// Set in the child: the database it writes to.
const CHILD_ENV: &str = "HIVEHOST_STORE_CRASH_CHILD";
/// This test's name, which the child runs alone.
const TEST_NAME: &str = "a_killed_writer_leaves_every_reported_commit";
/// How many committed ids the parent reads before it kills the child.
const IDS_BEFORE_KILL: usize = 300;
/// Non-blocking appends the child queues before each durable one, so that batches hold many rows
/// and the kill is likely to land inside a transaction.
const FLOOD_PER_DURABLE: usize = 20;
/// How long the child writes if nobody kills it, and how long the parent waits for a line.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_killed_writer_leaves_every_reported_commit() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        write_until_killed(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(DB_FILE);
    let exe = std::env::current_exe().expect("the test binary");
    #[allow(clippy::disallowed_methods, reason = "the test re-runs its own binary as the writer it kills")]
    let mut cmd = std::process::Command::new(exe);
    let mut child = cmd
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");

    // Lines arrive through a thread, so a silent child fails the test at a deadline instead of
    // hanging it.
    let stdout = child.stdout.take().expect("the child's stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Searched for rather than expected at the start: with `--nocapture`, the first id shares its
    // line with libtest's "test NAME ... ".
    let committed = |line: &str| line.split_once("committed ").and_then(|(_, id)| id.trim().parse::<i64>().ok());
    let mut ids = Vec::new();
    while ids.len() < IDS_BEFORE_KILL {
        match rx.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => ids.extend(committed(&line)),
            Err(err) => {
                let _ = child.kill();
                panic!("the writer printed {} ids, then nothing for {LINE_TIMEOUT:?}: {err}", ids.len());
            }
        }
    }
    // `Child::kill` sends SIGKILL to the child's pid.
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reap the writer");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the writer died of the kill, not on its own: {status}");
    // Ids printed before the kill landed are promises too.
    reader.join().expect("the reader thread");
    ids.extend(rx.try_iter().filter_map(|line| committed(&line)));

    let conn = rusqlite::Connection::open(&path).expect("open the database left behind");
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| st.query_map([], |row| row.get(0))?.collect())
        .expect("integrity_check");
    assert_eq!(check, vec!["ok".to_owned()]);
    let mut find = conn.prepare("SELECT kind, message FROM events WHERE id = ?1").expect("prepare");
    let mut missing = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        match find.query_row([id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))) {
            Ok((kind, message)) => {
                assert_eq!((kind.as_str(), message), ("durable", format!("durable append {n}")), "event {id}");
            }
            Err(_) => missing.push(*id),
        }
    }
    assert!(missing.is_empty(), "{} of {} reported ids are missing: {missing:?}", missing.len(), ids.len());
    let total: i64 = conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).expect("count");
    assert!(total > ids.len() as i64, "the flood was written too: {total} rows for {} durable ids", ids.len());
    drop(find);
    drop(conn);

    // And hivehost opens it again and goes on writing.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = Store::open(&path).expect("reopen after the kill");
        let last = *ids.iter().max().expect("ids");
        let next = store.append_event_durable(event("after", "after the crash".into())).await.expect("append");
        assert!(next > last, "ids go on growing: {next} after {last}");
        store.close().await.expect("close");
    });
}

fn event(kind: &str, message: String) -> NewEvent {
    NewEvent {
        at_ms: hivehost::store::now_ms(),
        category: Category::Infrastructure,
        server: Some("crash".to_owned()),
        kind: kind.to_owned(),
        message,
        data: serde_json::json!({"padding": "x".repeat(200)}),
    }
}

/// The child: appends durable events in a loop, behind a flood of non-blocking ones, and prints
/// each committed id. Stops on its own after `CHILD_LIFETIME` if nobody kills it.
fn write_until_killed(path: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = Store::open(path).expect("open the database");
        let mut out = std::io::stdout().lock();
        let started = Instant::now();
        let mut n = 0_u64;
        while started.elapsed() < CHILD_LIFETIME {
            for _ in 0..FLOOD_PER_DURABLE {
                store.append_event(event("flood", "queued without waiting".into()));
            }
            let id = store.append_event_durable(event("durable", format!("durable append {n}"))).await.expect("append");
            writeln!(out, "committed {id}").expect("stdout");
            out.flush().expect("stdout");
            n += 1;
        }
    });
}
