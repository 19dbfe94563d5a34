//! Unit tests of the store: round trips of every record, deletion, compaction, queries, schema
//! versions, file permissions, the queue's limits, and the checked-in v1 fixture.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(DB_FILE);
    (dir, path)
}

fn server(id: &str) -> ServerRecord {
    ServerRecord {
        id: id.to_owned(),
        name: format!("{id} server"),
        spec: json!({"command": ["python", "server.py"], "environment": {"MODE": "test"}}),
        desired: Desired::Running,
        created_ms: 1_000,
        updated_ms: 2_000,
        scan: Some(json!({"findings": [{"rule": "shell", "severity": "warning", "file": "server.py", "line": 3}]})),
        code_dir: format!("/data/mcp_servers/{id}"),
    }
}

fn event(at_ms: i64, category: Category, server: Option<&str>, kind: &str) -> NewEvent {
    NewEvent {
        at_ms,
        category,
        server: server.map(str::to_owned),
        kind: kind.to_owned(),
        message: format!("{kind} at {at_ms}"),
        data: json!({"at": at_ms, "nested": {"list": [1, 2, 3]}}),
    }
}

/// The record an appended event becomes.
fn stored(id: i64, e: NewEvent) -> EventRecord {
    EventRecord {
        id,
        at_ms: e.at_ms,
        category: e.category,
        server: e.server,
        kind: e.kind,
        message: e.message,
        data: e.data,
    }
}

fn metric(server: &str, at_ms: i64, cpu_percent: f64, rss_bytes: u64, processes: u32) -> MetricPoint {
    MetricPoint { server: server.to_owned(), at_ms, cpu_percent, rss_bytes, processes }
}

fn restart(server: &str, at_ms: i64, generation: u64) -> RestartRecord {
    RestartRecord {
        server: server.to_owned(),
        at_ms,
        generation,
        reason: "exited with code 1".to_owned(),
        exit_code: Some(1),
        signal: None,
    }
}

fn instance(server: &str, generation: u64) -> InstanceRecord {
    InstanceRecord {
        server: server.to_owned(),
        generation,
        pid: 4242,
        pgid: 4242,
        start_ticks: 123_456_789_012,
        boot_id: "2f1c6a57-8a55-4d4b-9d43-0f6c1e0e2b11".to_owned(),
        recorded_ms: 5_000,
    }
}

fn all_events() -> EventQuery {
    EventQuery::latest(usize::MAX)
}

#[tokio::test]
async fn servers_round_trip_and_replacing_one_keeps_its_history() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    let mut a = server("a");
    let mut b = server("b");
    b.scan = None;
    b.created_ms = 500;
    store.put_server(a.clone()).await.expect("put a");
    store.put_server(b.clone()).await.expect("put b");
    assert_eq!(store.servers().await.expect("servers"), vec![b.clone(), a.clone()], "oldest first");
    assert_eq!(store.server("a").await.expect("server a"), Some(a.clone()));
    assert_eq!(store.server("absent").await.expect("server absent"), None);

    store.record_restart(restart("a", 10, 2));
    store.record_instance(instance("a", 2)).await.expect("instance");
    a.name = "renamed".to_owned();
    a.spec = json!({"command": ["node", "index.js"]});
    a.desired = Desired::Stopped;
    a.scan = None;
    a.updated_ms = 9_000;
    store.put_server(a.clone()).await.expect("replace a");
    assert_eq!(store.server("a").await.expect("server a"), Some(a));
    assert_eq!(store.restarts(Some("a"), 0).await.expect("restarts").len(), 1, "replacing keeps restarts");
    assert_eq!(store.instances().await.expect("instances"), vec![instance("a", 2)], "and the instance");
    store.close().await.expect("close");
}

#[tokio::test]
async fn set_desired_changes_the_state_and_refuses_an_absent_server() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.put_server(server("a")).await.expect("put");
    let before = now_ms();
    store.set_desired("a", Desired::Stopped).await.expect("set");
    let stored = store.server("a").await.expect("read").expect("present");
    assert_eq!(stored.desired, Desired::Stopped);
    assert!(stored.updated_ms >= before, "updated_ms moves to now: {} < {before}", stored.updated_ms);

    let err = store.set_desired("ghost", Desired::Running).await.expect_err("absent server");
    assert!(matches!(&err, StoreError::NotFound { id } if id == "ghost"), "{err:?}");
    assert_eq!(err.to_string(), "no server with id `ghost` in the store: list the servers to see which exist");
    store.close().await.expect("close");
}

#[tokio::test]
async fn deleting_a_server_removes_its_rows_and_keeps_its_events() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.put_server(server("a")).await.expect("put a");
    store.put_server(server("b")).await.expect("put b");
    for id in ["a", "b"] {
        store.append_event(event(100, Category::Infrastructure, Some(id), "deployed"));
        store.append_metric(metric(id, 100, 1.5, 1_000, 1));
        store.record_restart(restart(id, 100, 1));
        store.record_instance(instance(id, 1)).await.expect("instance");
    }
    store.flush().await.expect("flush");
    // Old enough to compact, so a minute row exists too.
    store.append_metric(metric("a", 1_000, 3.0, 2_000, 2));
    store.compact(10 * writer::RAW_KEEP_MS).await.expect("compact");

    store.delete_server("a").await.expect("delete");
    assert_eq!(store.server("a").await.expect("read"), None);
    assert!(store.metrics("a", 0).await.expect("metrics").is_empty(), "raw and minute rows go");
    assert!(store.restarts(Some("a"), 0).await.expect("restarts").is_empty());
    assert_eq!(store.instances().await.expect("instances"), vec![instance("b", 1)]);
    let kept = store.events(EventQuery { server: Some("a".to_owned()), ..all_events() }).await.expect("events");
    assert_eq!(kept.len(), 1, "the history outlives the server");
    // The other server is untouched, and deleting again is not an error.
    assert_eq!(store.metrics("b", 0).await.expect("metrics b").len(), 1);
    assert_eq!(store.restarts(Some("b"), 0).await.expect("restarts b").len(), 1);
    store.delete_server("a").await.expect("deleting twice");
    store.close().await.expect("close");
}

#[tokio::test]
async fn durable_events_return_their_ids_and_read_back_whole() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    let first = store.append_event_durable(event(10, Category::Incidents, Some("a"), "crashed")).await.expect("first");
    let second = store.append_event_durable(event(20, Category::Monitoring, None, "tick")).await.expect("second");
    assert!(second > first, "ids grow: {first} then {second}");
    let read = store.events(all_events()).await.expect("events");
    let expected = vec![
        stored(second, event(20, Category::Monitoring, None, "tick")),
        stored(first, event(10, Category::Incidents, Some("a"), "crashed")),
    ];
    assert_eq!(read, expected, "newest first");
    store.close().await.expect("close");
}

#[tokio::test]
async fn non_blocking_appends_are_committed_by_flush() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.put_server(server("a")).await.expect("put");
    for i in 0..1_000 {
        store.append_event(event(i, Category::Monitoring, Some("a"), "sampled"));
    }
    store.append_metric(metric("a", 7, 12.5, 3 << 40, 4));
    store.append_metric(metric("a", 3, 0.25, 1 << 20, 1));
    store.record_restart(RestartRecord { signal: Some(9), exit_code: None, ..restart("a", 30, 2) });
    store.record_restart(restart("a", 20, 1));
    store.flush().await.expect("flush");

    assert_eq!(store.events(all_events()).await.expect("events").len(), 1_000);
    assert_eq!(
        store.metrics("a", 0).await.expect("metrics"),
        vec![metric("a", 3, 0.25, 1 << 20, 1), metric("a", 7, 12.5, 3 << 40, 4)],
        "oldest first"
    );
    assert_eq!(store.metrics("a", 5).await.expect("metrics since").len(), 1);
    assert_eq!(
        store.restarts(None, 0).await.expect("restarts"),
        vec![restart("a", 20, 1), RestartRecord { signal: Some(9), exit_code: None, ..restart("a", 30, 2) }]
    );
    assert_eq!(store.restarts(Some("a"), 25).await.expect("restarts since").len(), 1);
    assert_eq!(store.restarts(Some("b"), 0).await.expect("restarts of b"), vec![]);
    let stats = store.stats();
    assert_eq!((stats.queued, stats.dropped, stats.failed), (0, 0, 0), "{stats:?}");
    assert!(stats.db_bytes > 0 && stats.wal_bytes > 0, "{stats:?}");
    store.close().await.expect("close");
}

#[tokio::test]
async fn event_queries_filter_by_server_category_and_time_newest_first() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    let servers = [Some("a"), Some("b"), None];
    for i in 0..60_i64 {
        let category = Category::ALL[(i % 4) as usize];
        store.append_event(event(1_000 + i, category, servers[(i % 3) as usize], "kind"));
    }
    // Two events at the same time: the later id comes first.
    let same_a = store.append_event_durable(event(2_000, Category::Optimization, Some("a"), "x")).await.expect("x");
    let same_b = store.append_event_durable(event(2_000, Category::Optimization, Some("a"), "y")).await.expect("y");

    let all = store.events(all_events()).await.expect("all");
    assert_eq!(all.len(), 62);
    assert_eq!((all[0].id, all[1].id), (same_b, same_a));
    assert!(all.windows(2).all(|w| (w[0].at_ms, w[0].id) > (w[1].at_ms, w[1].id)), "newest first");

    let query = |server: Option<&str>, category: Option<Category>, since_ms: Option<i64>, limit: usize| EventQuery {
        server: server.map(str::to_owned),
        category,
        since_ms,
        limit,
    };
    let matches = |q: &EventQuery, e: &EventRecord| {
        q.server.as_ref().is_none_or(|s| e.server.as_ref() == Some(s))
            && q.category.is_none_or(|c| e.category == c)
            && q.since_ms.is_none_or(|t| e.at_ms >= t)
    };
    for q in [
        query(Some("a"), None, None, 100),
        query(None, Some(Category::Incidents), None, 100),
        query(None, None, Some(1_030), 100),
        query(Some("b"), Some(Category::Monitoring), None, 100),
        query(Some("a"), Some(Category::Optimization), Some(1_010), 100),
        query(None, None, None, 7),
        query(Some("a"), None, Some(1_040), 3),
        query(Some("nobody"), None, None, 100),
        query(None, None, None, 0),
    ] {
        let expected: Vec<_> = all.iter().filter(|e| matches(&q, e)).take(q.limit).cloned().collect();
        let got = store.events(q.clone()).await.expect("query");
        assert_eq!(got, expected, "{q:?}");
    }
    // The filters are not vacuous: each picks a proper, non-empty subset.
    assert_eq!(store.events(query(Some("a"), None, None, 100)).await.expect("a").len(), 22);
    assert_eq!(store.events(query(None, Some(Category::Incidents), None, 100)).await.expect("incidents").len(), 15);
    assert_eq!(store.events(query(None, None, Some(1_030), 100)).await.expect("since").len(), 32);
    store.close().await.expect("close");
}

#[tokio::test]
async fn compaction_averages_old_samples_per_minute_and_drops_week_old_minutes() {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.put_server(server("a")).await.expect("put a");
    store.put_server(server("b")).await.expect("put b");
    // `now` is 30 s into a minute, so the raw cutoff (an hour before, rounded down) is `m - HOUR`.
    let m = 20_000 * DAY;
    let now = m + 30_000;
    let minute_a = m - 2 * HOUR;
    let minute_b = m - 90 * MIN;
    let cut_minute = m - HOUR - MIN;
    for p in [
        metric("a", minute_a, 10.0, 100, 1),
        metric("a", minute_a + 20_000, 20.0, 200, 2),
        metric("a", minute_a + 40_000, 60.0, 301, 2),
        metric("b", minute_a + 10_000, 99.0, 9_999, 9),
        metric("a", minute_b + 59_999, 5.0, 1_000, 3),
        // 3,640 s old: folded, into the minute just before the cutoff.
        metric("a", cut_minute + 50_000, 7.0, 70, 7),
        // 3,590 s old: younger than an hour, stays raw.
        metric("a", m - HOUR + 40_000, 8.0, 80, 8),
        metric("a", now - 10 * MIN, 9.0, 90, 1),
    ] {
        store.append_metric(p);
    }
    let report = store.compact(now).await.expect("compact");
    assert_eq!(report, CompactReport { raw_compacted: 6, minutes_written: 4, minutes_dropped: 0 });
    assert_eq!(
        store.metrics("a", 0).await.expect("metrics a"),
        vec![
            // (10 + 20 + 60) / 3 = 30; (100 + 200 + 301) / 3 = 200.33 → 200; (1 + 2 + 2) / 3 = 1.67 → 2.
            metric("a", minute_a, 30.0, 200, 2),
            metric("a", minute_b, 5.0, 1_000, 3),
            metric("a", cut_minute, 7.0, 70, 7),
            metric("a", m - HOUR + 40_000, 8.0, 80, 8),
            metric("a", now - 10 * MIN, 9.0, 90, 1),
        ]
    );
    assert_eq!(store.metrics("b", 0).await.expect("metrics b"), vec![metric("b", minute_a, 99.0, 9_999, 9)]);
    assert_eq!(store.metrics("a", minute_b).await.expect("since").len(), 4, "since counts minute starts");

    // A late sample for a folded minute merges into it, weighted by the samples on each side.
    store.append_metric(metric("a", minute_a + 50_000, 70.0, 1_000, 6));
    let report = store.compact(now).await.expect("compact late");
    assert_eq!(report, CompactReport { raw_compacted: 1, minutes_written: 1, minutes_dropped: 0 });
    let merged = store.metrics("a", 0).await.expect("metrics")[0].clone();
    // (30 * 3 + 70) / 4 = 40; (200 * 3 + 1000) / 4 = 400; (2 * 3 + 6) / 4 = 3.
    assert_eq!(merged, metric("a", minute_a, 40.0, 400, 3));

    // Eight days on: the minute rows are older than a week and go; the two raw samples are folded
    // and then go as well, being as old.
    let later = now + 8 * DAY;
    let report = store.compact(later).await.expect("compact a week later");
    assert_eq!(report, CompactReport { raw_compacted: 2, minutes_written: 2, minutes_dropped: 6 });
    assert_eq!(store.metrics("a", 0).await.expect("metrics"), vec![]);
    assert_eq!(store.metrics("b", 0).await.expect("metrics b"), vec![]);
    store.close().await.expect("close");
}

#[tokio::test]
async fn instances_round_trip_and_clear_only_their_own_generation() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.put_server(server("a")).await.expect("put a");
    store.put_server(server("b")).await.expect("put b");
    store.record_instance(instance("b", 1)).await.expect("b1");
    store.record_instance(instance("a", 1)).await.expect("a1");
    let newer = InstanceRecord { pid: 5151, pgid: 5150, start_ticks: u64::MAX >> 1, ..instance("a", 2) };
    store.record_instance(newer.clone()).await.expect("a2 replaces a1");
    assert_eq!(store.instances().await.expect("instances"), vec![newer.clone(), instance("b", 1)]);

    store.clear_instance("a", 1).await.expect("stale clear");
    assert_eq!(store.instances().await.expect("instances").len(), 2, "a stale generation clears nothing");
    store.clear_instance("a", 2).await.expect("clear");
    assert_eq!(store.instances().await.expect("instances"), vec![instance("b", 1)]);
    store.close().await.expect("close");
}

#[tokio::test]
async fn rows_of_an_unknown_server_are_refused_without_failing_their_batch() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    let err = store.record_instance(instance("ghost", 1)).await.expect_err("no such server");
    assert!(matches!(&err, StoreError::UnknownServer { id, .. } if id == "ghost"), "{err:?}");
    assert_eq!(
        err.to_string(),
        "server `ghost` is not in the store, so its instance cannot be recorded: store the server first"
    );

    store.put_server(server("a")).await.expect("put");
    // One batch: the ghost's rows fail alone, the others are committed.
    store.append_metric(metric("ghost", 1, 1.0, 1, 1));
    store.record_restart(restart("ghost", 1, 1));
    store.append_metric(metric("a", 1, 1.0, 1, 1));
    store.append_event(event(1, Category::Incidents, Some("ghost"), "events need no server"));
    store.flush().await.expect("flush");
    assert_eq!(store.stats().failed, 2);
    assert_eq!(store.metrics("a", 0).await.expect("metrics").len(), 1);
    assert_eq!(store.events(all_events()).await.expect("events").len(), 1);
    assert_eq!(store.restarts(None, 0).await.expect("restarts"), vec![]);
    store.close().await.expect("close");
}

#[tokio::test]
async fn close_commits_what_was_queued_and_later_writes_fail() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    let other = store.clone();
    for i in 0..500 {
        store.append_event(event(i, Category::Monitoring, None, "queued"));
    }
    store.close().await.expect("close");
    let err = other.append_event_durable(event(1, Category::Monitoring, None, "late")).await.expect_err("closed");
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    other.append_event(event(1, Category::Monitoring, None, "late"));
    assert_eq!(other.stats().dropped_after_close, 1);
    assert_eq!(other.events(all_events()).await.expect("reads still work").len(), 500);
    other.close().await.expect("closing twice");

    let reopened = Store::open(&path).expect("reopen");
    assert_eq!(reopened.events(all_events()).await.expect("events").len(), 500);
    reopened.close().await.expect("close");
}

#[tokio::test]
async fn a_full_queue_drops_appends_and_counts_them() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    // Another connection holds the write lock, so the writer stalls in its first batch while the
    // queue fills behind it.
    let blocker = rusqlite::Connection::open(&path).expect("second connection");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    // The stalled writer holds at most one batch; the queue takes QUEUE_CAPACITY more.
    let offered = QUEUE_CAPACITY + writer::BATCH_CAP + 5;
    for i in 0..offered {
        store.append_event(event(i as i64, Category::Monitoring, None, "flood"));
    }
    let dropped = store.stats().dropped;
    assert!(dropped >= 5, "{:?}", store.stats());
    blocker.execute_batch("ROLLBACK").expect("release the lock");
    store.flush().await.expect("flush");
    let stored = store.events(all_events()).await.expect("events").len() as u64;
    // Every append is accounted for: stored, or dropped and counted. (The stalled batch may have
    // timed out waiting for the lock on a slow machine, and is then counted as failed.)
    let stats = store.stats();
    assert_eq!(stored + stats.dropped + stats.failed, offered as u64, "{stats:?}");
    assert_eq!(stats.dropped, dropped, "nothing drops once the writer drains the queue");
    store.close().await.expect("close");
}

#[tokio::test]
async fn the_database_files_are_private() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.append_event_durable(event(1, Category::Infrastructure, None, "started")).await.expect("append");
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    for file in [path.clone(), PathBuf::from(wal)] {
        let mode = std::fs::metadata(&file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn reopening_keeps_everything_and_applies_no_migration_twice() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    store.put_server(server("a")).await.expect("put");
    store.append_event(event(1, Category::Infrastructure, Some("a"), "deployed"));
    store.close().await.expect("close");
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.servers().await.expect("servers"), vec![server("a")]);
    assert_eq!(store.events(all_events()).await.expect("events").len(), 1);
    assert_eq!(store.integrity_check().await.expect("check"), vec!["ok".to_owned()]);
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, schema::latest_version());
}

#[test]
fn a_database_newer_than_this_build_is_refused() {
    let (_dir, path) = temp_db();
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch(&format!("PRAGMA user_version = 7; PRAGMA application_id = {};", schema::APPLICATION_ID))
        .expect("stamp");
    drop(conn);
    let err = Store::open(&path).err().expect("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "database {} has schema version 7 but this hivehost knows up to {}: upgrade hivehost",
            path.display(),
            schema::latest_version()
        )
    );
}

#[test]
fn another_programs_database_is_refused() {
    let (_dir, path) = temp_db();
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch("CREATE TABLE notes (body TEXT)").expect("create");
    drop(conn);
    let err = Store::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a hivehost database"), "{err}");
}

#[test]
fn a_missing_directory_is_reported_with_the_path() {
    let (dir, _) = temp_db();
    let path = dir.path().join("absent").join(DB_FILE);
    let err = Store::open(&path).err().expect("refused");
    assert!(err.to_string().starts_with(&format!("cannot create the database file {}: ", path.display())), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Event search (schema 2, FTS5).
// ---------------------------------------------------------------------------------------------

#[test]
fn the_bundled_sqlite_has_fts5() {
    let conn = rusqlite::Connection::open_in_memory().expect("in memory");
    let used: i64 =
        conn.query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| r.get(0)).expect("compile options");
    assert_eq!(used, 1, "rusqlite's `bundled` SQLite is built with FTS5");
    conn.execute_batch("CREATE VIRTUAL TABLE probe USING fts5 (body)").expect("an FTS5 table");
}

#[test]
fn search_text_becomes_quoted_words_anded() {
    for (text, expected) in [
        ("", None),
        ("   \t\n", None),
        ("\0\r", None),
        ("oom", Some(r#""oom""#)),
        ("OOM kill", Some(r#""OOM" AND "kill""#)),
        ("rest*", Some(r#""rest"*"#)),
        ("rest**", Some(r#""rest"*"#)),
        ("*rest", Some(r#""*rest""#)),
        ("re*st", Some(r#""re*st""#)),
        (r#"say "hi""#, Some(r#""say" AND """hi""""#)),
        ("a OR b", Some(r#""a" AND "OR" AND "b""#)),
        ("NEAR(a b)", Some(r#""NEAR(a" AND "b)""#)),
        ("- crash -x ( )", Some(r#""crash" AND "-x""#)),
        ("kind:exited", Some(r#""kind:exited""#)),
        ("état 日本語", Some(r#""état" AND "日本語""#)),
        // Control characters separate words: a NUL would end the query string inside FTS5.
        ("exi\0ted\u{7}x", Some(r#""exi" AND "ted" AND "x""#)),
    ] {
        assert_eq!(search::fts_query(text).expect(text).as_deref(), expected, "{text:?}");
    }
}

#[test]
fn search_text_without_a_word_is_refused_with_advice() {
    for text in [r#"""#, "*", "- ( ) ^ :", "🔥", "\0*\0", "\"\" \u{301}"] {
        let err = search::fts_query(text).expect_err(text);
        assert!(matches!(&err, StoreError::Search { .. }), "{text:?}: {err:?}");
        let message = err.to_string();
        assert!(message.starts_with("cannot search the events for `"), "{message}");
        assert!(message.contains("give at least one letter or digit"), "{message}");
        assert!(message.contains("leave the query empty"), "{message}");
    }
    let long = vec!["word"; SEARCH_WORDS_MAX + 1].join(" ");
    let err = search::fts_query(&long).expect_err("too many words");
    assert!(err.to_string().contains(&format!("more than {SEARCH_WORDS_MAX} words")), "{err}");
    assert!(err.to_string().len() < 200, "the error repeats only the start of the text: {err}");
    assert!(search::fts_query(&vec!["word"; SEARCH_WORDS_MAX].join(" ")).is_ok());
}

/// The events every search test runs against: distinct words, several servers and categories.
fn searchable_events() -> Vec<NewEvent> {
    let ev = |at_ms, category, server: Option<&str>, kind: &str, message: &str| NewEvent {
        at_ms,
        category,
        server: server.map(str::to_owned),
        kind: kind.to_owned(),
        message: message.to_owned(),
        data: json!({"at": at_ms}),
    };
    vec![
        ev(1_000, Category::Infrastructure, Some("weather-api"), "deployed", "deployed weather (python runtime)"),
        ev(2_000, Category::Incidents, Some("weather-api"), "exited", "exited with code 1"),
        ev(3_000, Category::Incidents, Some("alpha"), "exited", "killed by signal 9 (SIGKILL)"),
        ev(4_000, Category::Incidents, Some("alpha"), "state_changed", "running → unhealthy: health check timed out"),
        ev(5_000, Category::Incidents, Some("alpha"), "incident", "memory limit exceeded: OOM kill at 95%"),
        ev(6_000, Category::Monitoring, Some("weather-api"), "restart_scheduled", "restart 3 in 500 ms"),
        ev(7_000, Category::Optimization, None, "recommendation", "lower alpha's memory to 128 MiB"),
        ev(8_000, Category::Incidents, Some("beta"), "incident", "Café server crashed: 日本語 ログ"),
        ev(9_000, Category::Monitoring, Some("beta"), "exited", "exited with code 0"),
    ]
}

/// A store holding `searchable_events()`, with the records as stored (newest first).
async fn searchable_store() -> (tempfile::TempDir, Store, Vec<EventRecord>) {
    let (dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    let mut stored_events = Vec::new();
    for e in searchable_events() {
        let id = store.append_event_durable(e.clone()).await.expect("append");
        stored_events.push(stored(id, e));
    }
    stored_events.reverse();
    (dir, store, stored_events)
}

fn search_for(text: &str) -> EventSearch {
    EventSearch { query: Some(text.to_owned()), limit: SEARCH_LIMIT_MAX, ..EventSearch::default() }
}

fn ids(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn search_finds_events_by_word_and_prefix_and_filters_them() {
    let (_dir, store, all) = searchable_store().await;
    let at = |at_ms: i64| all.iter().find(|e| e.at_ms == at_ms).expect("an event at that time").id;
    let cases: Vec<(EventSearch, Vec<i64>)> = vec![
        (search_for("exited"), vec![at(9_000), at(3_000), at(2_000)]),
        (search_for("EXITED code"), vec![at(9_000), at(2_000)]),
        (search_for("code 1"), vec![at(2_000)]),
        (search_for("exit*"), vec![at(9_000), at(3_000), at(2_000)]),
        (search_for("exit"), vec![]),
        (search_for("mem* kill"), vec![at(5_000)]),
        // The kind and the server are indexed too; `_` and `-` split words on both sides.
        (search_for("state_changed"), vec![at(4_000)]),
        (search_for("weather-api restart"), vec![at(6_000)]),
        (search_for("weath*"), vec![at(6_000), at(2_000), at(1_000)]),
        (search_for("alpha"), vec![at(7_000), at(5_000), at(4_000), at(3_000)]),
        // Case and accents fold; CJK words are found whole.
        (search_for("cafe"), vec![at(8_000)]),
        (search_for("CAFÉ"), vec![at(8_000)]),
        (search_for("日本語"), vec![at(8_000)]),
        (EventSearch { category: Some(Category::Incidents), ..search_for("exited") }, vec![at(3_000), at(2_000)]),
        (EventSearch { server: Some("alpha".to_owned()), ..search_for("kill*") }, vec![at(5_000), at(3_000)]),
        (EventSearch { server: Some("alph".to_owned()), ..search_for("kill*") }, vec![]),
        (EventSearch { since_ms: Some(3_000), ..search_for("exited") }, vec![at(9_000), at(3_000)]),
        (
            EventSearch {
                server: Some("weather-api".to_owned()),
                category: Some(Category::Incidents),
                since_ms: Some(1_500),
                ..search_for("code")
            },
            vec![at(2_000)],
        ),
        (EventSearch { limit: 2, ..search_for("e*") }, vec![at(9_000), at(5_000)]),
        // No text: the filters alone, like `events`.
        (EventSearch { query: None, ..search_for("") }, ids(&all)),
        (search_for("  "), ids(&all)),
        (EventSearch { category: Some(Category::Monitoring), ..search_for("") }, vec![at(9_000), at(6_000)]),
    ];
    for (q, expected) in cases {
        let got = store.search_events(q.clone()).await.expect("search");
        assert_eq!(ids(&got), expected, "{q:?}");
        for e in &got {
            assert_eq!(Some(e), all.iter().find(|a| a.id == e.id), "whole records come back");
        }
    }
    store.close().await.expect("close");
}

#[tokio::test]
async fn search_limits_are_clamped() {
    let (dir, path) = temp_db();
    let store = Store::open(&path).expect("open");
    for i in 0..(SEARCH_LIMIT_MAX as i64 + 20) {
        store.append_event(event(i, Category::Monitoring, Some("a"), "sampled"));
    }
    store.flush().await.expect("flush");
    for (limit, expected) in
        [(0, 1), (1, 1), (5, 5), (SEARCH_LIMIT_MAX, SEARCH_LIMIT_MAX), (usize::MAX, SEARCH_LIMIT_MAX)]
    {
        for text in ["sampled", ""] {
            let got = store.search_events(EventSearch { limit, ..search_for(text) }).await.expect("search");
            assert_eq!(got.len(), expected, "limit {limit}, text {text:?}");
            assert_eq!(got[0].at_ms, SEARCH_LIMIT_MAX as i64 + 19, "newest first");
        }
    }
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')", []).expect("the index matches");
    drop(dir);
}

/// What a search must find, computed without SQLite: every word with a letter or digit must occur
/// in one column as its consecutive tokens (the last one a prefix if the word ends in `*`), where
/// tokens are the runs of letters and digits, lowercased. Accents are not folded here: the text
/// given to it avoids them.
fn reference_match(text: &str, e: &EventRecord) -> bool {
    let tokens = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
    };
    let columns: Vec<Vec<String>> = [Some(e.kind.as_str()), Some(e.message.as_str()), e.server.as_deref()]
        .into_iter()
        .flatten()
        .map(tokens)
        .collect();
    text.split(|c: char| c.is_whitespace() || c.is_control()).all(|word| {
        let stem = word.trim_end_matches('*');
        let prefix = stem.len() < word.len();
        let phrase = tokens(stem);
        if phrase.is_empty() {
            return true;
        }
        columns.iter().any(|column| {
            column.windows(phrase.len()).any(|window| {
                window.iter().zip(&phrase).enumerate().all(|(i, (have, want))| {
                    if prefix && i == phrase.len() - 1 { have.starts_with(want.as_str()) } else { have == want }
                })
            })
        })
    })
}

#[tokio::test]
async fn hostile_search_text_never_breaks_the_query_nor_matches_unrelated_events() {
    let (_dir, store, all) = searchable_store().await;
    let hostile = [
        r#"""#,
        r#""""#,
        r#""exited"#,
        r#""exited" OR "killed""#,
        "OR",
        "AND",
        "NOT",
        "exited OR killed",
        "exited NOT code",
        "NEAR(",
        "NEAR(exited code)",
        "NEAR(exited code, 2)",
        "*",
        "**",
        "* exited",
        "*exited",
        "e*",
        "exit*ed",
        "-",
        "-exited",
        "exited -code",
        "(",
        ")",
        "(exited)",
        "exited)",
        "((code",
        "kind:exited",
        "message : code",
        "{kind message}: code",
        "^exited",
        "exited^",
        "+exited",
        "'; DROP TABLE events; --",
        "\0",
        "exi\0ted",
        "🔥",
        "🔥killed",
        "日本語",
        "ログ*",
        "signal 9 (SIGKILL)",
        "95%",
        "→",
        "running → unhealthy",
        "\u{202e}exited",
        "null",
        "rowid",
        "events_fts",
        "\"\"\"\"\"\"",
    ];
    for text in hostile {
        let searchable = text.chars().any(char::is_alphanumeric);
        let blank = text.chars().all(|c| c.is_whitespace() || c.is_control());
        match store.search_events(search_for(text)).await {
            Ok(got) if blank => assert_eq!(got, all, "{text:?} is blank: no text filter"),
            Ok(got) => {
                assert!(searchable, "{text:?} has no word, yet it was searched");
                let expected: Vec<i64> = all.iter().filter(|e| reference_match(text, e)).map(|e| e.id).collect();
                assert_eq!(ids(&got), expected, "{text:?}");
            }
            Err(StoreError::Search { .. }) => assert!(!searchable, "{text:?} has a word, yet it was refused"),
            Err(err) => panic!("{text:?} broke the query: {err}"),
        }
    }
    // The reference is not vacuous: some of the hostile texts find events.
    assert_eq!(ids(&store.search_events(search_for("(exited)")).await.expect("search")).len(), 3);
    assert_eq!(store.events(all_events()).await.expect("events"), all, "nothing was changed");
    store.close().await.expect("close");
}

#[tokio::test]
async fn the_index_follows_rows_deleted_or_changed_outside_the_store() {
    let (dir, store, all) = searchable_store().await;
    let path = store.path().to_owned();
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute("DELETE FROM events WHERE message = 'exited with code 1'", []).expect("delete");
    conn.execute("UPDATE events SET message = 'renamed to zebra' WHERE message = 'exited with code 0'", [])
        .expect("update");
    conn.execute(
        "INSERT INTO events (at_ms, category, kind, message, data) VALUES (10000, 'monitoring', 'note', 'added by hand', '{}')",
        [],
    )
    .expect("insert");
    drop(conn);
    let store = Store::open(&path).expect("reopen");
    let killed = all.iter().find(|e| e.at_ms == 3_000).expect("the kill").id;
    let renamed = all.iter().find(|e| e.at_ms == 9_000).expect("the clean exit").id;
    assert_eq!(ids(&store.search_events(search_for("exited")).await.expect("search")), vec![renamed, killed]);
    assert_eq!(store.search_events(search_for("zebra")).await.expect("search").len(), 1);
    assert_eq!(store.search_events(search_for("code")).await.expect("search"), vec![]);
    assert_eq!(store.search_events(search_for("hand")).await.expect("search").len(), 1, "indexed at open");
    // The writer's batches index what was added by hand since, too.
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "INSERT INTO events (at_ms, category, kind, message, data) VALUES (10001, 'monitoring', 'note', 'later by hand', '{}')",
        [],
    )
    .expect("insert");
    drop(conn);
    store.append_event_durable(event(10_002, Category::Monitoring, None, "batch")).await.expect("append");
    assert_eq!(store.search_events(search_for("hand")).await.expect("search").len(), 2);
    assert_eq!(store.integrity_check().await.expect("check"), vec!["ok".to_owned()]);
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')", []).expect("the index matches");
    drop(dir);
}

// ---------------------------------------------------------------------------------------------
// The v1 fixture.
//
// tests/fixtures/store-v1.db is a database of schema version 1 with the rows of `v1_rows()`,
// written by `write_v1_fixture` below with plain SQL against migration 1 (never through the current
// `Store`, which will write later schemas). Later migrations must keep it loading: the test
// `the_v1_fixture_still_loads` opens a copy through `Store::open` and reads every row back.
// To regenerate it (only ever needed if it is lost; migration 1 never changes), run
//     HIVEHOST_WRITE_STORE_FIXTURE=1 cargo test -p hivehost store::tests::the_v1_fixture_generator
// ---------------------------------------------------------------------------------------------

const FIXTURE: &str = "tests/fixtures/store-v1.db";

struct V1Rows {
    servers: Vec<ServerRecord>,
    events: Vec<EventRecord>,
    /// Server "alpha"'s metrics as `metrics` returns them: the minute row first, then raw samples.
    minute: MetricPoint,
    minute_samples: i64,
    raw: Vec<MetricPoint>,
    restarts: Vec<RestartRecord>,
    instances: Vec<InstanceRecord>,
}

fn v1_rows() -> V1Rows {
    let alpha = ServerRecord {
        id: "alpha".to_owned(),
        name: "Alpha tools".to_owned(),
        spec: json!({"name": "Alpha tools", "command": ["python", "server.py"], "transport": "stdio",
                     "resource_limits": {"memory_mb": 256, "cpu_percent": 50, "max_processes": 8}}),
        desired: Desired::Running,
        created_ms: 1_764_000_000_000,
        updated_ms: 1_764_000_100_000,
        scan: Some(
            json!({"findings": [{"rule": "subprocess", "severity": "warning", "file": "server.py", "line": 12}],
                          "blocked": false}),
        ),
        code_dir: "data/mcp_servers/alpha".to_owned(),
    };
    let beta = ServerRecord {
        id: "beta".to_owned(),
        name: "Beta".to_owned(),
        spec: json!({"command": ["node", "index.js"], "environment": {"LEVEL": "debug"}}),
        desired: Desired::Stopped,
        created_ms: 1_764_000_200_000,
        updated_ms: 1_764_000_200_000,
        scan: None,
        code_dir: "data/mcp_servers/beta".to_owned(),
    };
    let ev = |id, at_ms, category, server: Option<&str>, kind: &str, message: &str, data| EventRecord {
        id,
        at_ms,
        category,
        server: server.map(str::to_owned),
        kind: kind.to_owned(),
        message: message.to_owned(),
        data,
    };
    V1Rows {
        servers: vec![alpha, beta],
        // Newest first, as `events` returns them.
        events: vec![
            ev(4, 1_764_000_400_000, Category::Optimization, None, "recommendation", "lower beta's memory", json!({})),
            ev(
                3,
                1_764_000_300_000,
                Category::Monitoring,
                Some("alpha"),
                "unhealthy",
                "health check failed",
                json!({"status": 503}),
            ),
            ev(
                2,
                1_764_000_200_000,
                Category::Incidents,
                Some("gone"),
                "exited",
                "exited with signal 9",
                json!({"signal": 9, "generation": 3}),
            ),
            ev(
                1,
                1_764_000_000_000,
                Category::Infrastructure,
                Some("alpha"),
                "deployed",
                "deployed alpha",
                json!({"files": 3}),
            ),
        ],
        minute: MetricPoint {
            server: "alpha".to_owned(),
            at_ms: 1_764_000_000_000,
            cpu_percent: 12.5,
            rss_bytes: 50_000_000,
            processes: 2,
        },
        minute_samples: 12,
        raw: vec![
            MetricPoint {
                server: "alpha".to_owned(),
                at_ms: 1_764_003_600_000,
                cpu_percent: 3.25,
                rss_bytes: 52_000_000,
                processes: 2,
            },
            MetricPoint {
                server: "alpha".to_owned(),
                at_ms: 1_764_003_605_000,
                cpu_percent: 4.0,
                rss_bytes: 5_000_000_000,
                processes: 3,
            },
        ],
        restarts: vec![
            RestartRecord {
                server: "alpha".to_owned(),
                at_ms: 1_764_000_250_000,
                generation: 2,
                reason: "exited with code 1".to_owned(),
                exit_code: Some(1),
                signal: None,
            },
            RestartRecord {
                server: "alpha".to_owned(),
                at_ms: 1_764_000_260_000,
                generation: 3,
                reason: "killed by signal 9".to_owned(),
                exit_code: None,
                signal: Some(9),
            },
        ],
        instances: vec![InstanceRecord {
            server: "alpha".to_owned(),
            generation: 3,
            pid: 31_337,
            pgid: 31_337,
            start_ticks: 987_654_321,
            boot_id: "6c3f0b1e-2a4d-4e8f-9b7a-1d2c3e4f5a6b".to_owned(),
            recorded_ms: 1_764_000_260_500,
        }],
    }
}

/// Writes the v1 fixture with plain SQL: migration 1, then the rows of `v1_rows()`. The file stays
/// in rollback-journal mode, so it is one self-contained file.
fn write_v1_fixture(path: &Path) {
    let rows = v1_rows();
    let conn = rusqlite::Connection::open(path).expect("create the fixture");
    conn.execute_batch(schema::MIGRATIONS[0]).expect("migration 1");
    conn.execute_batch(&format!("PRAGMA user_version = 1; PRAGMA application_id = {};", schema::APPLICATION_ID))
        .expect("stamp version 1");
    for s in &rows.servers {
        conn.execute(
            "INSERT INTO servers (id, name, spec, desired, created_ms, updated_ms, scan, code_dir)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                s.id,
                s.name,
                s.spec.to_string(),
                s.desired.as_str(),
                s.created_ms,
                s.updated_ms,
                s.scan.as_ref().map(ToString::to_string),
                s.code_dir
            ],
        )
        .expect("server row");
    }
    for e in rows.events.iter().rev() {
        conn.execute(
            "INSERT INTO events (id, at_ms, category, server, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![e.id, e.at_ms, e.category.as_str(), e.server, e.kind, e.message, e.data.to_string()],
        )
        .expect("event row");
    }
    let m = &rows.minute;
    conn.execute(
        "INSERT INTO metrics_minute (server, minute_ms, cpu_percent, rss_bytes, processes, samples)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![m.server, m.at_ms, m.cpu_percent, m.rss_bytes, m.processes, rows.minute_samples],
    )
    .expect("minute row");
    for p in &rows.raw {
        conn.execute(
            "INSERT INTO metrics_raw (server, at_ms, cpu_percent, rss_bytes, processes) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![p.server, p.at_ms, p.cpu_percent, p.rss_bytes, p.processes],
        )
        .expect("raw row");
    }
    for r in &rows.restarts {
        conn.execute(
            "INSERT INTO restarts (server, at_ms, generation, reason, exit_code, signal) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![r.server, r.at_ms, r.generation, r.reason, r.exit_code, r.signal],
        )
        .expect("restart row");
    }
    for i in &rows.instances {
        conn.execute(
            "INSERT INTO instances (server, generation, pid, pgid, start_ticks, boot_id, recorded_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![i.server, i.generation, i.pid, i.pgid, i.start_ticks, i.boot_id, i.recorded_ms],
        )
        .expect("instance row");
    }
    conn.execute_batch("VACUUM").expect("compact the fixture");
}

/// Opens a copy of a v1 database through `Store::open` and checks every row of `v1_rows()`.
async fn assert_loads_v1_rows(source: &Path) {
    let (_dir, path) = temp_db();
    std::fs::copy(source, &path).expect("copy the fixture");
    let store = Store::open(&path).expect("a v1 database opens and migrates");
    let rows = v1_rows();
    assert_eq!(store.servers().await.expect("servers"), rows.servers);
    assert_eq!(store.events(all_events()).await.expect("events"), rows.events);
    let mut metrics = vec![rows.minute.clone()];
    metrics.extend(rows.raw.clone());
    assert_eq!(store.metrics("alpha", 0).await.expect("metrics"), metrics);
    assert_eq!(store.restarts(None, 0).await.expect("restarts"), rows.restarts);
    assert_eq!(store.instances().await.expect("instances"), rows.instances);
    // The minute row's sample count survives too: a late sample merges with the right weight
    // (12.5 * 12 + 25.5) / 13 = 13.5.
    store.append_metric(MetricPoint { at_ms: rows.minute.at_ms + 1_000, cpu_percent: 25.5, ..rows.minute.clone() });
    store.compact(rows.minute.at_ms + 2 * writer::RAW_KEEP_MS).await.expect("compact");
    assert_eq!(store.metrics("alpha", 0).await.expect("metrics")[0].cpu_percent, 13.5);
    // The database takes new rows after the old ones.
    let id = store.append_event_durable(event(1, Category::Monitoring, None, "after")).await.expect("append");
    assert_eq!(id, 5);
    // Migration 2 indexed the old rows for search, and the new one joins them.
    let found = |text: &str| {
        let store = store.clone();
        let q = EventSearch { query: Some(text.to_owned()), limit: 100, ..EventSearch::default() };
        async move { store.search_events(q).await.expect("search").into_iter().map(|e| e.id).collect::<Vec<_>>() }
    };
    assert_eq!(found("health").await, vec![3]);
    assert_eq!(found("alpha").await, vec![3, 1], "by server and by message");
    assert_eq!(found("signal 9").await, vec![2]);
    assert_eq!(found("recommend*").await, vec![4]);
    assert_eq!(found("after").await, vec![5]);
    assert_eq!(store.integrity_check().await.expect("check"), vec!["ok".to_owned()]);
    store.close().await.expect("close");
}

#[tokio::test]
async fn the_v1_fixture_still_loads() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let conn = rusqlite::Connection::open_with_flags(&fixture, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the fixture is checked in");
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, 1, "the fixture stays at schema 1");
    drop(conn);
    assert_loads_v1_rows(&fixture).await;
}

#[tokio::test]
async fn the_v1_fixture_generator_writes_rows_the_store_reads_back() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let generated = dir.path().join("store-v1.db");
    write_v1_fixture(&generated);
    assert_loads_v1_rows(&generated).await;
    if std::env::var_os("HIVEHOST_WRITE_STORE_FIXTURE").is_some() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
        std::fs::create_dir_all(fixture.parent().expect("a parent")).expect("tests/fixtures");
        std::fs::copy(&generated, &fixture).expect("write the fixture");
    }
}
