//! End to end: the real `hivehost serve` binary with real servers, shut down by SIGTERM.

use std::time::Duration;

#[path = "support/harness.rs"]
mod harness;

use harness::{healthz, marked, serve_once, start_serve, write_config, write_server};

const DEADLINE: Duration = Duration::from_secs(60);

fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    harness::wait_until(what, DEADLINE, cond);
}

#[test]
fn sigterm_stops_fifty_servers_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("serve-{}", std::process::id());
    for n in 0..50 {
        write_server(dir.path(), &format!("server-{n:02}"), &marker).unwrap();
    }
    let config = write_config(dir.path(), 100, 5).unwrap();
    let (mut child, addr) = start_serve(dir.path(), &config);
    wait_until("all 50 servers run", || healthz(&addr).is_some_and(|h| h["running"] == 50));
    assert!(marked(&marker).len() >= 50, "every server has a process");
    assert_eq!(child.terminate(), Some(0), "a requested shutdown exits 0 within 30 s");
    assert_eq!(marked(&marker), Vec::<u32>::new(), "no hosted process is left behind");
}

#[test]
fn invalid_config_is_reported_with_its_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"mcp_hosting": {"dashboard": {"port": "abc"}, "max_servers": 0}}"#).unwrap();
    let out = serve_once(dir.path(), &config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mcp_hosting.dashboard.port"), "{stderr}");
    assert!(stderr.contains("mcp_hosting.max_servers"), "{stderr}");
}

#[test]
fn a_second_instance_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10, 5).unwrap();
    let (mut first, addr) = start_serve(dir.path(), &config);
    wait_until("the first instance answers", || healthz(&addr).is_some());
    let out = serve_once(dir.path(), &config);
    let first_pid = first.id();
    let first_exit = first.terminate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second instance must not run: {stderr}");
    assert!(stderr.contains(&format!("another hivehost (pid {first_pid}) is running")), "{stderr}");
    assert_eq!(first_exit, Some(0), "the first instance is untouched and stops cleanly");
}
