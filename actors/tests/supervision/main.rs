//! Supervision over real processes: restarts per policy, stop ladders, trees, logs, health and memory.

mod mcp;
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
    assert!(matches!(
        exit.kind,
        EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::Signal(15), .. }, .. }
    ));
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_runs_reset_the_backoff_streak() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    // Each incarnation runs 400 ms, longer than reset_after: every restart is the first of its streak.
    let mut spec = sh_spec("stable", dir.path(), "sleep 0.4; exit 1");
    spec.policy = policy(policy::PolicyConfig {
        max_restarts: 10,
        restart_delay_ms: 20,
        backoff: policy::Backoff::Exponential,
        backoff_multiplier: 10.0,
        max_restart_delay_ms: 10_000,
        reset_after_ms: 200,
        ..Default::default()
    });
    sup.add(spec).await.unwrap();
    sup.start("stable").await.unwrap();
    for _ in 0..3 {
        let event = wait_event(&mut events, "stable", |k| matches!(k, EventKind::RestartScheduled { .. })).await;
        assert_eq!(event.kind, EventKind::RestartScheduled { delay_ms: 20, attempt: 1 });
    }
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_runs_grow_the_backoff_streak() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = sh_spec("flappy", dir.path(), "exit 1");
    spec.policy = policy(policy::PolicyConfig {
        max_restarts: 10,
        restart_delay_ms: 5,
        backoff: policy::Backoff::Exponential,
        backoff_multiplier: 2.0,
        max_restart_delay_ms: 10_000,
        reset_after_ms: 60_000,
        ..Default::default()
    });
    sup.add(spec).await.unwrap();
    sup.start("flappy").await.unwrap();
    for (delay_ms, attempt) in [(5, 1), (10, 2), (20, 3)] {
        let event = wait_event(&mut events, "flappy", |k| matches!(k, EventKind::RestartScheduled { .. })).await;
        assert_eq!(event.kind, EventKind::RestartScheduled { delay_ms, attempt });
    }
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_sigterm_is_killed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = sh_spec("stubborn", dir.path(), "trap '' TERM; echo ready >&2; while :; do sleep 0.05; done");
    spec.shutdown_timeout = Duration::from_millis(500);
    sup.add(spec).await.unwrap();
    sup.start("stubborn").await.unwrap();
    wait_state(&mut events, "stubborn", ServerState::Running).await;
    wait_log(&sup, "stubborn", "ready").await;
    let pid = sup.status("stubborn").await.unwrap().pid.unwrap();
    let began = std::time::Instant::now();
    let status = sup.stop("stubborn").await.unwrap();
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(500), "it had its grace period: {took:?}");
    assert!(!alive(pid), "killed");
    assert_eq!(status.state, ServerState::Stopped);
    assert_eq!(status.last_exit.unwrap().kind, policy::ExitKind::Signal(9));
    sup.shutdown().await.unwrap();
}

/// A server that leaves daemons behind, one through `setsid`, one through a double fork, all
/// ignoring SIGTERM, so only the kill after the grace period can end them.
const DAEMONIZER: &str = "trap '' TERM; \
     setsid sh -c 'sleep 600 </dev/null >/dev/null 2>&1 &'; \
     ( ( sleep 601 </dev/null >/dev/null 2>&1 & ) & ); \
     echo daemons-started >&2; exec sleep 602";

/// Starts the daemonizer, waits for its three processes, ends it with `end`, and checks that
/// nothing marked as its own survives.
async fn daemons_die_with(name: &str, end: impl AsyncFnOnce(&actors::SupervisorHandle)) {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mark = format!("{name}-{}", std::process::id());
    let marker = format!("HIVEHOST_TEST_MARK={mark}");
    let mut spec = sh_spec("daemonizer", dir.path(), DAEMONIZER);
    spec.shutdown_timeout = Duration::from_millis(300);
    spec.env.push(("HIVEHOST_TEST_MARK".into(), mark));
    sup.add(spec).await.unwrap();
    sup.start("daemonizer").await.unwrap();
    wait_log(&sup, "daemonizer", "daemons-started").await;
    wait_until("three marked processes run", || pids_with_env(&marker).len() >= 3).await;
    end(&sup).await;
    assert_eq!(pids_with_env(&marker), Vec::<u32>::new(), "nothing of the tree survives {name}");
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_daemons_that_double_forked_and_called_setsid() {
    daemons_die_with("stop", async |sup| {
        sup.stop("daemonizer").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_kills_daemons_that_double_forked_and_called_setsid() {
    daemons_die_with("delete", async |sup| {
        sup.delete("daemonizer").await.unwrap();
        assert!(matches!(sup.status("daemonizer").await, Err(actors::ActorsError::NotFound(_))));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_is_drained_bounded_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    // 1,000,000 lines of 100 bytes: 100 MB on stderr, as fast as Python can write them.
    let script =
        "import sys\nline = b'x' * 99 + b'\\n'\nw = sys.stderr.buffer.write\nfor _ in range(1_000_000):\n    w(line)\n";
    let mut spec = sh_spec("flood", dir.path(), "");
    spec.command = vec!["python3".into(), "-c".into(), script.into()];
    spec.logs.ring_lines = 100;
    spec.logs.max_file_bytes = 10 << 20;
    spec.logs.max_files = 5;
    spec.policy = policy(policy::PolicyConfig { mode: policy::RestartMode::Never, ..Default::default() });
    sup.add(spec).await.unwrap();
    sup.start("flood").await.unwrap();
    let exit = wait_event(&mut events, "flood", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(matches!(exit.kind, EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::Code(0), .. }, .. }));
    let status = sup.status("flood").await.unwrap();
    assert_eq!(status.logs.lines, 1_000_000, "every line was read: {:?}", status.logs);
    let tail = sup.logs("flood", 1000).await.unwrap();
    assert_eq!(tail.len(), 100, "the ring holds ring_lines lines");
    assert!(tail.iter().all(|l| l.text.len() == 99));
    sup.shutdown().await.unwrap();
    // The writer has flushed: files are rotated, none over the limit, and no more than max_files.
    let log_dir = dir.path().join("logs").join("flood");
    let mut files: Vec<_> = std::fs::read_dir(&log_dir).unwrap().flatten().collect();
    files.sort_by_key(|f| f.file_name());
    let names: Vec<String> = files.iter().map(|f| f.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["current.log", "current.log.1", "current.log.2", "current.log.3", "current.log.4"]);
    let mut on_disk_lines = 0u64;
    for file in &files {
        let len = file.metadata().unwrap().len();
        assert!(len <= 10 << 20, "{} is {len} bytes", file.path().display());
        on_disk_lines += len / 100;
    }
    // What is on disk plus what rotated away plus what was dropped is everything.
    assert!(on_disk_lines >= 400_000, "the last files are full: {on_disk_lines} lines");
}

/// A one-route HTTP server on 127.0.0.1:0 answering 200 to the first `healthy_for` requests, then 503.
async fn flaky_health_endpoint(healthy_for: usize) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            served += 1;
            let status = if served <= healthy_for { "200 OK" } else { "503 Service Unavailable" };
            let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_make_it_unhealthy_then_restart_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, endpoint) = flaky_health_endpoint(2).await;
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = sh_spec("sickly", dir.path(), "exec sleep 600");
    spec.health = Some(actors::HealthSpec {
        check: actors::HealthCheck::Http { url },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        failures_before_restart: 3,
    });
    spec.policy = policy(policy::PolicyConfig { restart_delay_ms: 10, ..Default::default() });
    spec.shutdown_timeout = Duration::from_millis(500);
    sup.add(spec).await.unwrap();
    sup.start("sickly").await.unwrap();
    wait_state(&mut events, "sickly", ServerState::Running).await;
    let pid = sup.status("sickly").await.unwrap().pid.unwrap();
    wait_state(&mut events, "sickly", ServerState::Unhealthy).await;
    let exit = wait_event(&mut events, "sickly", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(matches!(
        exit.kind,
        EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::HealthCheck, .. }, .. }
    ));
    assert!(!alive(pid), "the unhealthy incarnation is gone");
    wait_state(&mut events, "sickly", ServerState::Backoff).await;
    wait_state(&mut events, "sickly", ServerState::Starting).await;
    assert_eq!(sup.status("sickly").await.unwrap().restarts, 1);
    sup.shutdown().await.unwrap();
    endpoint.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_killed_and_an_incident_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = sh_spec("hog", dir.path(), "");
    // 200 MiB of touched memory, far over a 64 MiB limit.
    spec.command = vec![
        "python3".into(),
        "-c".into(),
        "import time\nb = b'x' * (200 << 20)\nprint('allocated', flush=True)\ntime.sleep(600)\n".into(),
    ];
    spec.transport = actors::Transport::Http { port: 1 };
    spec.limits.memory_mb = Some(64);
    spec.metrics_interval = Duration::from_millis(100);
    spec.policy = policy(policy::PolicyConfig { max_restarts: 0, ..Default::default() });
    sup.add(spec).await.unwrap();
    sup.start("hog").await.unwrap();
    let incident = wait_event(&mut events, "hog", |k| matches!(k, EventKind::Incident { .. })).await;
    let EventKind::Incident { message } = incident.kind else { unreachable!() };
    assert!(message.contains("memory limit exceeded"), "{message}");
    let exit = wait_event(&mut events, "hog", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(matches!(
        exit.kind,
        EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::MemoryLimit, .. }, .. }
    ));
    wait_state(&mut events, "hog", ServerState::Failed).await;
    let samples = sup.metrics("hog").await.unwrap();
    assert!(samples.iter().any(|s| s.rss_bytes > 64 << 20), "the sample that tripped the limit is kept");
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_see_output_lines_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    // A plain process (transport none): stdout is a log like stderr.
    sup.add(sh_spec("talker", dir.path(), "echo one >&2; echo two; echo three >&2; exec sleep 600")).await.unwrap();
    let mut live = sup.follow_logs("talker").await.unwrap();
    sup.start("talker").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(DEADLINE, live.recv()).await.expect("a line in time").unwrap();
        seen.push((line.stream, line.text));
    }
    let stream_of = |text: &str| seen.iter().find(|(_, t)| t == text).map(|(s, _)| *s);
    assert_eq!(stream_of("one"), Some(actors::Stream::Stderr), "{seen:?}");
    assert_eq!(stream_of("two"), Some(actors::Stream::Stdout), "{seen:?}");
    assert_eq!(stream_of("three"), Some(actors::Stream::Stderr), "{seen:?}");
    let stderr: Vec<&str> =
        seen.iter().filter(|(s, _)| *s == actors::Stream::Stderr).map(|(_, t)| t.as_str()).collect();
    assert_eq!(stderr, ["one", "three"], "lines of one stream keep their order");
    let mut kept: Vec<String> = sup.logs("talker", 10).await.unwrap().into_iter().map(|l| l.text).collect();
    kept.sort();
    assert_eq!(kept, ["one", "three", "two"]);
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_exits_leaves_no_daemon_behind() {
    let dir = tempfile::tempdir().unwrap();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let marker = format!("HIVEHOST_TEST_MARK=exit-{}", std::process::id());
    // The daemon leaves the session and outlives its parent at once, then the server exits:
    // nothing ever saw it as part of the tree while the server lived.
    let mut spec = sh_spec(
        "leaver",
        dir.path(),
        "setsid sh -c \"trap '' TERM; sleep 600 </dev/null >/dev/null 2>&1 &\"; sleep 0.05; exit 1",
    );
    spec.env.push(("HIVEHOST_TEST_MARK".into(), marker["HIVEHOST_TEST_MARK=".len()..].into()));
    spec.metrics_interval = Duration::from_secs(3600);
    spec.policy = policy(policy::PolicyConfig { mode: policy::RestartMode::Never, ..Default::default() });
    sup.add(spec).await.unwrap();
    sup.start("leaver").await.unwrap();
    wait_event(&mut events, "leaver", |k| matches!(k, EventKind::Exited { .. })).await;
    wait_until("the daemon is killed", || pids_with_env(&marker).is_empty()).await;
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_never_ready_is_stopped_at_start_timeout_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sup = supervisor().await;
    let mut events = sup.subscribe();
    let mut spec = sh_spec("mute", dir.path(), "exec sleep 600");
    spec.health = Some(actors::HealthSpec {
        check: actors::HealthCheck::Http { url: format!("http://127.0.0.1:{port}/health") },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(40),
        failures_before_restart: 3,
    });
    spec.start_timeout = Duration::from_millis(300);
    spec.shutdown_timeout = Duration::from_millis(300);
    spec.policy = policy(policy::PolicyConfig { restart_delay_ms: 10, ..Default::default() });
    sup.add(spec).await.unwrap();
    sup.start("mute").await.unwrap();
    let exit = wait_event(&mut events, "mute", |k| matches!(k, EventKind::Exited { .. })).await;
    assert!(matches!(
        exit.kind,
        EventKind::Exited { exit: actors::Exit { kind: policy::ExitKind::StartTimeout, .. }, .. }
    ));
    wait_state(&mut events, "mute", ServerState::Backoff).await;
    wait_state(&mut events, "mute", ServerState::Starting).await;
    let status = sup.status("mute").await.unwrap();
    assert_eq!(status.restarts, 1);
    assert_ne!(status.state, ServerState::Running, "never ready, never running");
    sup.shutdown().await.unwrap();
}
