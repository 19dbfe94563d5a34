//! Supervision over real processes: restarts per policy, stop ladders, trees, logs, health and memory.

mod support;

use std::time::Duration;

use actors::{EventKind, ServerState};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_restarts_exactly_per_policy_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = sh_spec("crasher", dir.path(), "echo boom >&2; exit 3");
    spec.policy = policy(policy::PolicyConfig {
        max_restarts: 3,
        restart_delay_ms: 20,
        restart_window_ms: 60_000,
        ..Default::default()
    });
    sup.add(spec).await.unwrap();
    sup.start("crasher").await.unwrap();
    wait_state(&mut events, "crasher", ServerState::Failed).await;
    let status = sup.status("crasher").await.unwrap();
    assert_eq!(status.restarts, 3, "three restarts, then give up at the fourth failure");
    assert_eq!(status.last_exit.unwrap().kind, policy::ExitKind::Code(3));
    let lines = sup.logs("crasher", 10).await.unwrap();
    assert_eq!(lines.iter().filter(|l| l.text == "boom").count(), 4, "one line per incarnation: {lines:?}");
    // Failed is absorbing: nothing happens until an explicit start.
    let quiet = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
    assert!(quiet.is_err(), "no event after giving up: {quiet:?}");
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_server_stays_up_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    sup.add(sh_spec("steady", dir.path(), "echo up >&2; exec sleep 600")).await.unwrap();
    sup.start("steady").await.unwrap();
    wait_state(&mut events, "steady", ServerState::Running).await;
    let pid = sup.status("steady").await.unwrap().pid.expect("a pid");
    assert!(alive(pid));
    let status = sup.stop("steady").await.unwrap();
    assert_eq!(status.state, ServerState::Stopped);
    assert!(!alive(pid), "the process is gone once stop returns");
    assert_eq!(status.restarts, 0);
    let exit = wait_event(&mut events, "steady", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(matches!(exit.kind, EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::Signal(15), .. }, .. }));
    sup.shutdown().await.unwrap();
}
