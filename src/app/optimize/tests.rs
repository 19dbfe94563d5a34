//! Tests of turning stored records into `insights` input, and of recording recommendations.

use serde_json::json;

use super::*;
use crate::store::Desired;

const NOW: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const MB: u64 = 1024 * 1024;

fn record(id: &str, spec: serde_json::Value) -> ServerRecord {
    ServerRecord {
        id: id.to_owned(),
        name: id.to_owned(),
        spec,
        desired: Desired::Running,
        created_ms: NOW - 100 * MIN,
        updated_ms: NOW - 100 * MIN,
        scan: None,
        code_dir: format!("/data/mcp_servers/{id}"),
    }
}

fn host() -> config::HostLimits {
    config::HostLimits { memory_mb: 1024, cpu_percent: 200, ..config::HostLimits::default() }
}

fn event(server: &str, at_ms: i64, kind: &str, data: serde_json::Value) -> EventRecord {
    EventRecord {
        id: at_ms,
        at_ms,
        category: Category::Incidents,
        server: Some(server.to_owned()),
        kind: kind.to_owned(),
        message: String::new(),
        data,
    }
}

fn restart(server: &str, at_ms: i64, reason: &str, exit_code: Option<i32>, signal: Option<i32>) -> RestartRecord {
    RestartRecord { server: server.to_owned(), at_ms, generation: 2, reason: reason.to_owned(), exit_code, signal }
}

#[test]
fn exit_kinds_are_read_back_as_the_recorder_writes_them() {
    for kind in [
        ExitKind::Code(0),
        ExitKind::Code(-1),
        ExitKind::Code(137),
        ExitKind::Signal(9),
        ExitKind::HealthCheck,
        ExitKind::MemoryLimit,
        ExitKind::StartTimeout,
        ExitKind::SpawnFailed,
        ExitKind::Crashed,
    ] {
        // `recorder::memory` stores `format!("{:?}", exit.kind)`.
        assert_eq!(exit_kind(&format!("{kind:?}")), Some(kind));
    }
    for text in ["", "Code()", "Code(x)", "Signal(9", "code(1)", "Other"] {
        assert_eq!(exit_kind(text), None, "{text:?}");
    }
}

#[test]
fn a_history_takes_limits_settings_exits_and_health_failures_from_the_records() {
    let spec = json!({
        "name": "alpha", "command": ["python", "server.py"],
        "resource_limits": {"memory_mb": 256, "cpu_percent": 400},
        "health_check_url": "http://127.0.0.1:9000/health", "health_check_timeout": 2, "failures_before_restart": 4,
        "start_timeout": "45s"
    });
    let metrics = vec![MetricPoint {
        server: "alpha".to_owned(),
        at_ms: NOW - MIN,
        cpu_percent: 12.5,
        rss_bytes: 100 * MB,
        processes: 2,
    }];
    let events = vec![
        event("alpha", NOW - 5 * MIN, "exited", json!({"exit": "MemoryLimit", "pid": 7})),
        event("alpha", NOW - 4 * MIN, "exited", json!({"exit": "Code(0)"})),
        event("alpha", NOW - 3 * MIN, "exited", json!({"exit": "something new"})),
        event("alpha", NOW - 2 * MIN, "state_changed", json!({"from": "running", "to": "unhealthy"})),
        event("alpha", NOW - MIN, "state_changed", json!({"from": "unhealthy", "to": "running"})),
        event("alpha", NOW, "incident", json!({"message": "exited"})),
    ];
    // Exits come from the events when there are any: these restarts are not counted again.
    let restarts = vec![restart("alpha", NOW - 5 * MIN, "killed for exceeding its memory limit", None, None)];
    let h = history(&record("alpha", spec), &host(), &metrics, &events, &restarts);
    assert_eq!(h.server, "alpha");
    assert_eq!(
        h.limits,
        Limits {
            memory_mb: Some(256),
            cpu_percent: Some(200),
            host_memory_mb: Some(1024),
            host_cpu_percent: Some(200)
        },
        "requests clamped to the host's ceilings"
    );
    assert_eq!(
        h.settings,
        Settings {
            health_interval_ms: Some(30_000),
            health_timeout_ms: Some(2_000),
            failures_before_restart: Some(4),
            start_timeout_ms: Some(45_000),
        }
    );
    assert_eq!(h.samples, vec![Sample { at_ms: NOW - MIN, cpu_percent: 12.5, rss_bytes: 100 * MB }]);
    assert_eq!(
        h.exits,
        vec![
            Exit { at_ms: NOW - 5 * MIN, kind: ExitKind::MemoryLimit },
            Exit { at_ms: NOW - 4 * MIN, kind: ExitKind::Code(0) },
        ]
    );
    assert_eq!(h.health_failures, vec![NOW - 2 * MIN]);
    assert_eq!(h.last_call_ms, None, "tool calls are live counts, added by the caller");
}

#[test]
fn without_exit_events_the_restart_records_give_the_exits() {
    let restarts = vec![
        restart("beta", NOW - 4 * MIN, "exited with code 3", Some(3), None),
        restart("beta", NOW - 3 * MIN, "killed by signal 11 (SIGSEGV)", None, Some(11)),
        restart("beta", NOW - 2 * MIN, "killed for exceeding its memory limit", None, None),
        restart("beta", NOW - MIN, "killed after failing its health checks", None, None),
        restart("beta", NOW, "restart", None, None),
    ];
    // A spec that does not parse: the host's ceilings and default settings stand in.
    let h = history(&record("beta", json!({"command": 5})), &host(), &[], &[], &restarts);
    assert_eq!(
        h.exits.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![ExitKind::Code(3), ExitKind::Signal(11), ExitKind::MemoryLimit, ExitKind::HealthCheck]
    );
    assert_eq!((h.limits.memory_mb, h.limits.cpu_percent), (Some(1024), Some(200)));
    assert_eq!(h.settings, Settings::default());
}

#[tokio::test]
async fn recommendations_are_recorded_as_optimization_events() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&dir.path().join(crate::store::DB_FILE)).expect("open");
    let spec = json!({"name": "alpha", "command": ["python", "server.py"], "resource_limits": {"memory_mb": 256}});
    store.put_server(record("alpha", spec)).await.expect("put");
    for i in 0..60 {
        store.append_metric(MetricPoint {
            server: "alpha".to_owned(),
            at_ms: NOW - i * MIN,
            cpu_percent: 1.0,
            rss_bytes: 250 * MB,
            processes: 1,
        });
    }
    // Outside the window: not part of the history.
    store.append_metric(MetricPoint {
        server: "alpha".to_owned(),
        at_ms: NOW - 25 * 60 * MIN,
        cpu_percent: 1.0,
        rss_bytes: 10 * MB,
        processes: 1,
    });
    store.flush().await.expect("flush");
    // alpha is reachable over MCP and has not been called for two days.
    let params = Params { idle_after_ms: Some(24 * 60 * MIN), ..Params::day_until(NOW) };
    let calls = Calls::from([("alpha".to_owned(), (Some(NOW - 48 * 60 * MIN), Some(NOW - 72 * 60 * MIN)))]);
    let recs = optimize(&store, &host(), &params, &calls).await.expect("optimize");
    let kinds: Vec<_> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![insights::Kind::MemoryRaise, insights::Kind::CpuLower, insights::Kind::Idle]);
    assert_eq!(recs[2].evidence["last_call_ms"], NOW - 48 * 60 * MIN);
    assert_eq!(recs[0].change, json!({"resource_limits": {"memory_mb": 336}}));
    assert_eq!(recs[0].evidence["samples"], 60);
    let recorded = store
        .events(EventQuery { category: Some(Category::Optimization), ..EventQuery::latest(100) })
        .await
        .expect("events");
    assert_eq!(recorded.len(), 3);
    for (event, rec) in recorded.iter().rev().zip(&recs) {
        assert_eq!(event.at_ms, NOW);
        assert_eq!(event.server.as_deref(), Some("alpha"));
        assert_eq!(event.kind, RECOMMENDATION_EVENT);
        assert_eq!(event.message, rec.summary);
        assert_eq!(serde_json::from_value::<Recommendation>(event.data.clone()).expect("a recommendation"), *rec);
    }

    // Asked again a minute later: the same advice comes back but is not recorded again.
    let later = Params { idle_after_ms: Some(24 * 60 * MIN), ..Params::day_until(NOW + MIN) };
    let again = optimize(&store, &host(), &later, &calls).await.expect("optimize again");
    assert_eq!(again.iter().map(|r| r.kind).collect::<Vec<_>>(), kinds);
    let optimization = EventQuery { category: Some(Category::Optimization), ..EventQuery::latest(100) };
    assert_eq!(store.events(optimization.clone()).await.expect("events").len(), 3, "the same advice twice");

    // Memory climbs: the memory advice changes and is recorded; the rest is as it was.
    for i in 0..200 {
        store.append_metric(MetricPoint {
            server: "alpha".to_owned(),
            at_ms: NOW + MIN + i * 1000,
            cpu_percent: 1.0,
            rss_bytes: 300 * MB,
            processes: 1,
        });
    }
    store.flush().await.expect("flush");
    let then = Params { idle_after_ms: Some(24 * 60 * MIN), ..Params::day_until(NOW + 5 * MIN) };
    let changed = optimize(&store, &host(), &then, &calls).await.expect("optimize after the climb");
    assert_ne!(changed[0].change, recs[0].change, "{:?}", changed[0]);
    let recorded = store.events(optimization).await.expect("events");
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert_eq!(recorded[0].at_ms, NOW + 5 * MIN);
    assert_eq!(
        serde_json::from_value::<Recommendation>(recorded[0].data.clone()).expect("a recommendation"),
        changed[0]
    );
    store.close().await.expect("close");
}
