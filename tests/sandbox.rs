//! End to end: `hivehost serve` reports the host's isolation, runs each deployed server in its
//! own sandbox (its own uid from the configured range, `user: nobody` mapped onto it, every layer
//! active as root), and records a kernel OOM kill as an incident with its cause. Not as root, the
//! layers are shown unavailable and the root-only checks are skipped, saying so.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

#[path = "support/harness.rs"]
mod harness;

use harness::{marked, request, start_serve, wait_until, write_config};
use hivehost::package::{IntakeLimits, pack_dir};

const SHORT: Duration = Duration::from_secs(60);

fn package(root: &Path, name: &str, files: &[(&str, &str)], config: serde_json::Value) -> Vec<u8> {
    let dir = root.join(format!("pkg-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    std::fs::write(dir.join("server_config.json"), config.to_string()).unwrap();
    pack_dir(&dir, &IntakeLimits::new(100 << 20)).unwrap()
}

/// The uid a process runs as.
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// Cgroup directories named like hivehost's instances, in every hierarchy.
fn instance_cgroups() -> HashSet<String> {
    let mut found = HashSet::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return found };
    for hierarchy in hierarchies.flatten() {
        let mut stack = vec![hierarchy.path()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                if entry.file_name().to_string_lossy().starts_with("hivehost-") {
                    found.insert(path.display().to_string());
                } else if stack.len() < 64 {
                    stack.push(path);
                }
            }
        }
    }
    found
}

#[test]
fn deployed_servers_run_sandboxed_under_their_own_uids_and_an_oom_is_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 5, 1).unwrap();
    let cgroups_before = instance_cgroups();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = std::fs::read_to_string(dir.path().join("api_token")).unwrap().trim().to_owned();

    let (status, host) = request(&addr, "GET", "/api/v1/host", Some(&token), b"").unwrap();
    assert_eq!(status, 200, "{host}");
    let root = host["sandbox"]["root"].as_bool().expect("root is reported");
    assert!(host["sandbox"]["summary"].as_str().is_some_and(|s| s.contains("landlock")), "{host}");
    assert_eq!(host["require_sandbox"], serde_json::json!(root), "required by default exactly when root: {host}");
    let (status, _) = request(&addr, "GET", "/api/v1/host", None, b"").unwrap();
    assert_eq!(status, 401, "the host report needs the token too");

    let mark = format!("boxed-{}", std::process::id());
    let boxed = package(
        dir.path(),
        "boxed",
        &[("server.sh", "echo up >&2\nwhile :; do sleep 1; done\n")],
        serde_json::json!({
            "name": "boxed",
            "command": ["bash", "server.sh"],
            "transport": "none",
            "environment": { harness::MARK: mark },
            "user": "nobody",
            "allowed_network": false,
            "allowed_filesystem": ["read", "write"],
            "shutdown_timeout": 2
        }),
    );
    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=boxed&start=true", Some(&token), &boxed).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("boxed runs", SHORT, || !marked(&mark).is_empty());
    let (_, status_body) = request(&addr, "GET", "/api/v1/servers/boxed", Some(&token), b"").unwrap();
    let layers = status_body["sandbox"]["layers"].as_array().expect("layers are shown").clone();
    assert_eq!(layers.len(), 8, "{status_body}");

    let hog = package(
        dir.path(),
        "hog",
        &[("hog.py", "import time\nchunks = [bytearray(1 << 20) for _ in range(1024)]\ntime.sleep(60)\n")],
        serde_json::json!({
            "name": "hog",
            "command": ["python", "hog.py"],
            "transport": "none",
            "auto_restart": false,
            "resource_limits": { "memory_mb": 32 }
        }),
    );
    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=hog&start=true", Some(&token), &hog).unwrap();
    assert_eq!(status, 201, "{body}");
    let mut last = serde_json::Value::Null;
    wait_until("hog is killed for its memory", SHORT, || {
        last = request(&addr, "GET", "/api/v1/servers/hog", Some(&token), b"").map(|r| r.1).unwrap_or_default();
        last["last_exit"].as_str().is_some_and(|e| e.contains("memory limit"))
    });

    if root {
        for layer in &layers {
            assert_eq!(layer["state"], "active", "every layer is on as root: {layer}");
        }
        let pid = marked(&mark)[0];
        let uid = uid_of(pid).expect("uid");
        assert!((200_000..265_536).contains(&uid), "its own uid from security.uid_first/uid_count, not nobody: {uid}");
        use std::os::unix::fs::MetadataExt;
        let state = std::fs::metadata(dir.path().join("state/boxed")).unwrap();
        assert_eq!(state.uid(), uid, "its state directory is its own");
        let code = std::fs::metadata(dir.path().join("servers/boxed/server.sh")).unwrap();
        assert_eq!(code.uid(), 0, "its code stays root's");
        let hog_state = std::fs::metadata(dir.path().join("state/hog")).unwrap();
        assert_ne!(hog_state.uid(), uid, "each server has a uid of its own");
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED the root-only checks: not root");
        }
        assert_eq!(status_body["sandbox"]["degraded"], true, "{status_body}");
    }

    assert_eq!(serve.terminate(), Some(0));
    assert_eq!(marked(&mark), Vec::<u32>::new(), "nothing outlives the serve");
    let left: Vec<String> = instance_cgroups().difference(&cgroups_before).cloned().collect();
    assert!(left.is_empty(), "the serve's cgroups are removed: {left:?}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = hivehost::store::Store::open(&dir.path().join("hivehost.db")).unwrap();
        let query = hivehost::store::EventQuery {
            server: Some("hog".into()),
            category: Some(hivehost::store::Category::Incidents),
            since_ms: None,
            limit: 100,
        };
        let incidents = store.events(query).await.unwrap();
        let messages: Vec<&str> = incidents.iter().map(|e| e.message.as_str()).collect();
        let expected = if root { "out of memory: the kernel killed it" } else { "memory limit exceeded" };
        assert!(messages.iter().any(|m| m.contains(expected) && m.contains("32 MiB")), "{messages:?}");
        store.close().await.unwrap();
    });
}
