//! Shared helpers of the real-process supervision tests: specs, event waits with deadlines, /proc checks.

use std::path::Path;
use std::time::Duration;

use actors::{Event, EventKind, LogSpec, ServerSpec, ServerState, SupervisorConfig, SupervisorHandle};
use tokio::sync::broadcast;

/// The longest any single wait in these tests may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn supervisor() -> SupervisorHandle {
    SupervisorHandle::spawn(SupervisorConfig::default()).await.expect("supervisor starts")
}

/// A spec running `script` with /bin/sh in `dir`, with a fast fixed restart policy.
pub(crate) fn sh_spec(id: &str, dir: &Path, script: &str) -> ServerSpec {
    let mut spec = ServerSpec::new(
        id,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        dir,
        LogSpec::in_dir(dir.join("logs").join(id)),
    );
    spec.env = vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())];
    // A shell script, not an MCP server: no handshake, stdout is a log.
    spec.transport = actors::Transport::None;
    spec.shutdown_timeout = Duration::from_secs(2);
    spec.metrics_interval = Duration::from_millis(200);
    spec
}

/// A restart policy from plain numbers.
pub(crate) fn policy(cfg: policy::PolicyConfig) -> policy::RestartPolicy {
    policy::RestartPolicy::new(cfg).expect("valid policy").0
}

/// Waits for the first event of `id` that satisfies `pred`; panics with the events seen at the deadline.
pub(crate) async fn wait_event(
    events: &mut broadcast::Receiver<Event>,
    id: &str,
    pred: impl Fn(&EventKind) -> bool,
) -> Event {
    let mut seen = Vec::new();
    let res = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(event) if event.server == id && pred(&event.kind) => return event,
                Ok(event) => seen.push(format!("{:?}", event.kind)),
                Err(broadcast::error::RecvError::Lagged(n)) => seen.push(format!("(lagged {n})")),
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("event stream closed; seen: {seen:#?}")
                }
            }
        }
    })
    .await;
    match res {
        Ok(event) => event,
        Err(_) => panic!("no matching event for {id} within {DEADLINE:?}; seen: {seen:#?}"),
    }
}

/// Waits until `id` enters `state`.
pub(crate) async fn wait_state(events: &mut broadcast::Receiver<Event>, id: &str, state: ServerState) -> Event {
    wait_event(events, id, |k| matches!(k, EventKind::StateChanged { to, .. } if *to == state)).await
}

/// Waits until a log line of `id` equals `text`.
pub(crate) async fn wait_log(sup: &SupervisorHandle, id: &str, text: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let lines = sup.logs(id, 1000).await.expect("logs");
        if lines.iter().any(|l| l.text == text) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never logged {text:?}; last lines: {lines:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `cond` until it holds or the deadline passes.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').is_some_and(|at| !stat[at + 1..].trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Pids of live processes whose environment holds `marker` (a variable the test gave its server).
pub(crate) fn pids_with_env(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) && alive(pid) {
            found.push(pid);
        }
    }
    found
}
