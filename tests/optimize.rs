//! Recommendations end to end: metrics, exits and restarts stored through a real `App`'s store
//! (no server runs), `App::optimize_resources`, and the optimization events it records, found
//! again with `App::search_events`.

use std::path::Path;

use hivehost::App;
use hivehost::insights::{Kind, Recommendation, Severity};
use hivehost::store::{Category, Desired, EventQuery, EventSearch, MetricPoint, NewEvent, RestartRecord, ServerRecord};
use serde_json::json;

const MIN: i64 = 60_000;
const MB: u64 = 1024 * 1024;

fn host_config(dir: &Path) -> config::HostConfig {
    let text = json!({
        "mcp_hosting": {
            "servers_dir": dir.join("servers"),
            "uploads_dir": dir.join("uploads"),
            "logs_dir": dir.join("logs"),
            "state_dir": dir.join("state"),
            "database": dir.join("hivehost.db"),
            "auth": { "token_file": dir.join("api_token") },
            "resource_limits": { "memory_mb": 1024, "cpu_percent": 200 }
        }
    })
    .to_string();
    config::parse_host_config(&text).expect("a valid config").value
}

fn server(id: &str, limits: serde_json::Value) -> ServerRecord {
    let now = hivehost::store::now_ms();
    ServerRecord {
        id: id.to_owned(),
        name: id.to_owned(),
        spec: json!({ "name": id, "command": ["python", "server.py"], "resource_limits": limits }),
        desired: Desired::Stopped,
        created_ms: now,
        updated_ms: now,
        scan: None,
        code_dir: format!("/nowhere/{id}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_come_from_stored_history_and_are_recorded_as_optimization_events() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = App::start(host_config(dir.path())).await.expect("the platform starts");
    let store = app.store().clone();
    let now = hivehost::store::now_ms();

    // "hungry": an hour at 240 of 256 MiB and at its CPU quota.
    store.put_server(server("hungry", json!({ "memory_mb": 256, "cpu_percent": 50 }))).await.expect("put");
    // "crashy": three exits with code 2 in the last hours, as the recorder stores them.
    store.put_server(server("crashy", json!({ "memory_mb": 128 }))).await.expect("put");
    // "oomy": killed for memory three times, known only from restart records.
    store.put_server(server("oomy", json!({ "memory_mb": 128 }))).await.expect("put");
    for i in 0..60 {
        store.append_metric(MetricPoint {
            server: "hungry".to_owned(),
            at_ms: now - i * MIN,
            cpu_percent: 49.0,
            rss_bytes: 240 * MB,
            processes: 1,
        });
    }
    for hours in 1..=3 {
        let at_ms = now - hours * 60 * MIN;
        store.append_event(NewEvent {
            at_ms,
            category: Category::Incidents,
            server: Some("crashy".to_owned()),
            kind: "exited".to_owned(),
            message: "exited with code 2".to_owned(),
            data: json!({ "pid": 4242, "exit": "Code(2)", "generation": hours }),
        });
        store.record_restart(RestartRecord {
            server: "oomy".to_owned(),
            at_ms,
            generation: hours as u64,
            reason: "killed for exceeding its memory limit".to_owned(),
            exit_code: None,
            signal: None,
        });
    }
    store.flush().await.expect("flush");

    let recs = app.optimize_resources().await.expect("recommendations");
    let found = |server: &str, kind: Kind| -> &Recommendation {
        recs.iter()
            .find(|r| r.server == server && r.kind == kind)
            .unwrap_or_else(|| panic!("{server} {kind:?}: {recs:#?}"))
    };
    let memory = found("hungry", Kind::MemoryRaise);
    assert_eq!(memory.change, json!({ "resource_limits": { "memory_mb": 320 } }));
    assert_eq!(memory.evidence["samples"], 60);
    assert_eq!(memory.evidence["p99_bytes"], 240 * MB);
    assert_eq!(found("hungry", Kind::CpuRaise).change, json!({ "resource_limits": { "cpu_percent": 100 } }));
    let crash = found("crashy", Kind::CrashLoop);
    assert_eq!(crash.change, json!({ "auto_restart": false }));
    assert_eq!((crash.severity, &crash.evidence["dominant_cause"]), (Severity::Critical, &json!("exit_code_2")));
    assert_eq!(found("oomy", Kind::CrashLoop).change, json!({ "resource_limits": { "memory_mb": 192 } }));
    assert_eq!(found("oomy", Kind::MemoryRaise).change, json!({ "resource_limits": { "memory_mb": 192 } }));

    // Every recommendation is on record, whole.
    let recorded = store
        .events(EventQuery { category: Some(Category::Optimization), ..EventQuery::latest(100) })
        .await
        .expect("events");
    assert_eq!(recorded.len(), recs.len());
    for rec in &recs {
        let event = recorded
            .iter()
            .find(|e| e.data == serde_json::to_value(rec).expect("json"))
            .unwrap_or_else(|| panic!("{rec:?} was not recorded"));
        assert_eq!((event.kind.as_str(), event.server.as_deref()), ("recommendation", Some(rec.server.as_str())));
        assert_eq!(event.message, rec.summary);
    }

    // And an agent finds them by their words.
    let search = |query: &str, server: Option<&str>| EventSearch {
        query: Some(query.to_owned()),
        category: Some(Category::Optimization),
        server: server.map(str::to_owned),
        since_ms: Some(now - MIN),
        limit: 10,
    };
    let hits = app.search_events(search("raise memory*", Some("hungry"))).await.expect("search");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].message, memory.summary);
    let hits = app.search_events(search("exited abnormally", None)).await.expect("search");
    let mut servers: Vec<_> = hits.iter().filter_map(|e| e.server.as_deref()).collect();
    servers.sort_unstable();
    assert_eq!(servers, vec!["crashy", "oomy"]);
    app.shutdown().await;
}
