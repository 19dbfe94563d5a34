//! The upstream MCP session of stdio servers: the handshake is readiness, the link follows the
//! server across restarts, and an unanswered MCP ping restarts it.

use std::path::Path;
use std::time::Duration;

use actors::{EventKind, HealthCheck, HealthSpec, LinkError, LinkState, ServerSpec, ServerState, Transport};
use rmcp::model::CallToolRequestParams;

use crate::support::*;

/// A stdio server on the plain-Python MCP server of `fixtures/line_mcp.py`, given `args`.
fn mcp_spec(id: &str, dir: &Path, args: &[&str]) -> ServerSpec {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/supervision/fixtures/line_mcp.py");
    let mut spec = sh_spec(id, dir, "");
    spec.command = ["/usr/bin/python3".to_owned(), script.display().to_string()]
        .into_iter()
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect();
    spec.transport = Transport::Stdio;
    spec.start_timeout = Duration::from_secs(20);
    spec.policy = policy(policy::PolicyConfig { restart_delay_ms: 20, ..Default::default() });
    spec
}

/// The text of an `echo` call through the live session.
async fn echo(link: &actors::McpLink, text: &str) -> (u64, String) {
    let up = link.upstream(DEADLINE).await.expect("a live session");
    let args = serde_json::json!({ "text": text }).as_object().cloned().unwrap();
    let result =
        up.peer.call_tool(CallToolRequestParams::new("echo").with_arguments(args)).await.expect("echo answers");
    let text = result.content[0].as_text().expect("text content").text.clone();
    (up.generation, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_runs_once_its_handshake_is_done_and_its_link_follows_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    sup.add(mcp_spec("line", dir.path(), &[])).await.unwrap();
    let link = sup.link("line").await.unwrap();
    assert!(matches!(link.state(), LinkState::Down(_)), "no session before a start");
    sup.start("line").await.unwrap();
    wait_state(&mut events, "line", ServerState::Running).await;
    let LinkState::Up(up) = link.state() else { panic!("running means the session is up: {:?}", link.state()) };
    assert_eq!(up.info.server_info.as_ref().map(|i| i.name.as_str()), Some("line-mcp"));
    assert_eq!(echo(&link, "one").await, (1, "one".to_owned()));

    // Killed: once the exit is known, a caller waits on the link for the next incarnation's session.
    let pid = sup.status("line").await.unwrap().pid.expect("a pid");
    // SAFETY: kill(2) on the pid of the server this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    wait_event(&mut events, "line", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(!matches!(link.state(), LinkState::Up(ref up) if up.generation == 1), "{:?}", link.state());
    let waiting = tokio::spawn({
        let link = link.clone();
        async move { echo(&link, "two").await }
    });
    wait_state(&mut events, "line", ServerState::Running).await;
    let answered = tokio::time::timeout(DEADLINE, waiting).await.expect("in time").unwrap();
    assert_eq!(answered, (2, "two".to_owned()));

    // Stopped: a caller is told at once, without waiting.
    sup.stop("line").await.unwrap();
    let started = tokio::time::Instant::now();
    let refused = link.upstream(DEADLINE).await.expect_err("no session while stopped");
    assert!(matches!(refused, LinkError::Down(_)), "{refused:?}");
    assert!(refused.to_string().contains("start_mcp_server"), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(1), "no wait on a stopped server");
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_that_never_completes_the_handshake_fails_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = mcp_spec("mute", dir.path(), &["--mute-handshake"]);
    spec.start_timeout = Duration::from_millis(1500);
    spec.policy = policy(policy::PolicyConfig { mode: policy::RestartMode::Never, ..Default::default() });
    sup.add(spec).await.unwrap();
    sup.start("mute").await.unwrap();
    let incident = wait_event(&mut events, "mute", |k| matches!(k, EventKind::Incident { .. })).await;
    let EventKind::Incident { message } = incident.kind else { unreachable!() };
    assert!(message.contains("MCP handshake") && message.contains("start_timeout"), "{message}");
    let exited = wait_event(&mut events, "mute", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(
        matches!(
            exited.kind,
            EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::StartTimeout, .. }, .. }
        ),
        "{:?}",
        exited.kind
    );
    let link = sup.link("mute").await.unwrap();
    wait_until("the link is down", || matches!(link.state(), LinkState::Down(_))).await;
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_mcp_pings_restart_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = mcp_spec("hangs", dir.path(), &["--mute-pings-after", "2"]);
    spec.health = Some(HealthSpec {
        check: HealthCheck::McpPing,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        failures_before_restart: 2,
    });
    sup.add(spec).await.unwrap();
    sup.start("hangs").await.unwrap();
    wait_state(&mut events, "hangs", ServerState::Running).await;
    wait_state(&mut events, "hangs", ServerState::Unhealthy).await;
    let exited = wait_event(&mut events, "hangs", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(
        matches!(exited.kind, EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::HealthCheck, .. }, .. }),
        "{:?}",
        exited.kind
    );
    let status = sup.status("hangs").await.unwrap();
    assert!(status.last_health.as_deref().is_some_and(|h| h.contains("MCP ping")), "{:?}", status.last_health);
    wait_state(&mut events, "hangs", ServerState::Running).await;
    sup.shutdown().await.unwrap();
}
