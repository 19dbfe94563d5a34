//! End to end: the official Python MCP SDK (`mcp` 1.30.0) drives hivehost's hosting tools through a
//! whole lifecycle, over streamable HTTP at `/mcp` (behind the API token) and over stdio
//! (`hivehost mcp`), and a request without the token is refused.

use std::path::Path;
use std::time::Duration;

#[path = "support/harness.rs"]
mod harness;
#[path = "support/peers.rs"]
mod peers;

use base64::Engine;
use harness::{start_serve, write_config};
use hivehost::package::{IntakeLimits, pack_dir};

/// Every tool of shared/DESIGN.md that this build serves.
const TOOLS: &[&str] = &[
    "delete_mcp_server",
    "get_hosting_stats",
    "get_mcp_server_logs",
    "get_mcp_server_status",
    "list_mcp_servers",
    "optimize_server_resources",
    "restart_mcp_server",
    "search_hosting_events",
    "start_mcp_server",
    "stop_mcp_server",
    "upload_mcp_server",
];

/// A bash server that logs a line a second, as a base64 ZIP in a file. It carries 8 MiB of
/// incompressible text, so its upload is larger than rmcp's default request limit (4 MiB).
fn ticker_package(root: &Path) -> std::path::PathBuf {
    let dir = root.join("pkg-ticker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.sh"), "while :; do echo tick >&2; sleep 1; done\n").unwrap();
    let mut noise = vec![0u8; 6 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for byte in &mut noise {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(dir.join("data.txt"), base64::engine::general_purpose::STANDARD.encode(noise)).unwrap();
    let config = serde_json::json!({ "name": "ticker", "command": ["bash", "server.sh"], "transport": "none", "shutdown_timeout": 2 });
    std::fs::write(dir.join("server_config.json"), config.to_string()).unwrap();
    let zip = pack_dir(&dir, &IntakeLimits::new(100 << 20)).unwrap();
    assert!(zip.len() > 4 << 20, "the package is larger than rmcp's default limit: {}", zip.len());
    let file = root.join("ticker.b64");
    std::fs::write(&file, base64::engine::general_purpose::STANDARD.encode(zip)).unwrap();
    file
}

/// Runs the Python client with `args`, with a deadline; returns its JSON report.
fn client(args: &[&str]) -> serde_json::Value {
    let venv = peers::python_mcp_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/tools_client.py");
    #[allow(clippy::disallowed_methods, reason = "the test runs a real MCP client")]
    let mut child = std::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the MCP client timed out; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the MCP client failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Checks the lifecycle report of the Python client.
fn check(report: &serde_json::Value) {
    let tools: Vec<&str> = report["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for tool in TOOLS {
        assert!(tools.contains(tool), "{tool} is listed: {tools:?}");
    }
    let calls = report["calls"].as_array().unwrap();
    let call = |i: usize, tool: &str| -> &serde_json::Value {
        assert_eq!(calls[i]["tool"], tool, "call {i}: {calls:#?}");
        &calls[i]
    };
    let upload = call(0, "upload_mcp_server");
    assert_eq!(upload["is_error"], false, "{upload}");
    assert_eq!(upload["structured"]["id"], "ticker", "{upload}");
    // Its steps arrived as progress notifications, because the client asked for them.
    let steps: Vec<&str> = upload["progress"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert_eq!(steps, ["checking and extracting the archive", "scanning the code"], "{upload}");
    // The same JSON is in the text.
    let text: serde_json::Value = serde_json::from_str(upload["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, upload["structured"]);
    let list = call(1, "list_mcp_servers");
    assert_eq!(list["structured"]["count"], 1, "{list}");
    assert_eq!(list["structured"]["items"][0]["id"], "ticker");
    let status = call(2, "get_mcp_server_status");
    assert_eq!(status["structured"]["sandbox"]["layers"].as_array().map(Vec::len), Some(8), "{status}");
    let logs = call(3, "get_mcp_server_logs");
    assert!(logs["structured"]["lines"].as_array().is_some_and(|l| !l.is_empty()), "{logs}");
    assert_eq!(call(4, "stop_mcp_server")["structured"]["state"], "stopped");
    assert_eq!(call(5, "start_mcp_server")["is_error"], false);
    assert_eq!(call(6, "restart_mcp_server")["is_error"], false);
    let stats = call(7, "get_hosting_stats");
    assert_eq!(stats["structured"]["servers"], 1, "{stats}");
    assert_eq!(stats["structured"]["by_language"]["bash"], 1, "{stats}");
    assert!(stats["structured"]["tool_calls"].as_u64().unwrap() >= 7, "{stats}");
    assert_eq!(call(8, "delete_mcp_server")["is_error"], false);
    let missing = call(9, "get_mcp_server_status");
    assert_eq!(missing["is_error"], true, "{missing}");
    assert!(missing["structured"]["error"]["message"].as_str().unwrap().contains("list them"), "{missing}");
    let broken = call(10, "upload_mcp_server");
    assert_eq!(broken["is_error"], true, "{broken}");
    assert!(broken["structured"]["error"]["message"].as_str().unwrap().contains("archive_base64"), "{broken}");
    let optimize = call(11, "optimize_server_resources");
    assert_eq!(optimize["is_error"], false, "{optimize}");
    assert!(optimize["structured"]["recommendations"].is_array(), "{optimize}");
    let found = call(12, "search_hosting_events");
    assert_eq!(found["is_error"], false, "{found}");
    let events = found["structured"]["events"].as_array().unwrap();
    assert!(!events.is_empty() && events.iter().all(|e| e["server"] == "ticker"), "{found}");
    assert!(events.iter().any(|e| e["kind"] == "deleted"), "{found}");
    let bad = call(13, "search_hosting_events");
    assert_eq!(bad["is_error"], true, "{bad}");
    assert!(bad["structured"]["error"]["message"].as_str().unwrap().contains("category"), "{bad}");
}

#[test]
fn python_sdk_drives_every_tool_over_streamable_http_and_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 5, 1).unwrap();
    let b64 = ticker_package(dir.path());
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = std::fs::read_to_string(dir.path().join("api_token")).unwrap().trim().to_owned();
    // Without the token: refused before any MCP.
    let (status, _) = harness::request(&addr, "POST", "/mcp", None, b"{}").unwrap();
    assert_eq!(status, 401);
    let (status, _) = harness::request(&addr, "POST", "/mcp", Some("wrong-token-wrong-token"), b"{}").unwrap();
    assert_eq!(status, 401);
    let report = client(&["http", &format!("http://{addr}/mcp"), &token, b64.to_str().unwrap()]);
    check(&report);
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn python_sdk_drives_every_tool_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 5, 1).unwrap();
    let b64 = ticker_package(dir.path());
    let report = client(&["stdio", env!("CARGO_BIN_EXE_hivehost"), config.to_str().unwrap(), b64.to_str().unwrap()]);
    check(&report);
    // The client closing stdin stopped the platform: nothing of it or its servers is left.
    harness::wait_until("the platform released its lock", Duration::from_secs(30), || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("hivehost.lock"))
            .is_ok_and(|f| f.try_lock().is_ok())
    });
}
