//! End to end through the gateway: a real `hivehost serve` hosts the example package (FastMCP on
//! Python `mcp`, its dependencies installed by the deploy) and a Node server on the official
//! TypeScript SDK, each sandboxed. The official Python SDK and an rmcp client use both through
//! `/servers/{id}/mcp` and through `/mcp/gateway`: tool calls, progress, cancellation, a kill in
//! the middle of a call, tools/list_changed as servers come and go, both protocol generations, and
//! the token.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[path = "support/harness.rs"]
mod harness;
#[path = "support/peers.rs"]
mod peers;

use harness::{request, start_serve, wait_until, write_config};
use hivehost::package::{IntakeLimits, pack_dir};
use rmcp::model::{CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

/// The longest a start, a deploy step or a call may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// The Node server's package: the fixture's code and lock file, with a quick restart.
fn node_package(root: &Path) -> Vec<u8> {
    let dir = root.join("pkg-node-echo");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/node-echo");
    for file in ["server.js", "package.json", "package-lock.json"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    let config = json!({
        "name": "node-echo",
        "command": ["node", "server.js"],
        "restart_delay": 1,
        "start_timeout": 60,
        "shutdown_timeout": 2,
        "resource_limits": { "memory_mb": 256, "max_processes": 32 }
    });
    std::fs::write(dir.join("server_config.json"), config.to_string()).unwrap();
    pack_dir(&dir, &IntakeLimits::new(100 << 20)).unwrap()
}

/// Uploads `zip` as `name`, started; waits until it runs.
fn deploy(addr: &str, token: &str, name: &str, zip: &[u8]) {
    let (status, body) =
        request(addr, "POST", &format!("/api/v1/servers?name={name}&start=true"), Some(token), zip).unwrap();
    assert_eq!(status, 201, "deploying {name}: {body}");
    wait_until(&format!("{name} runs"), DEADLINE, || state(addr, token, name)["state"] == "running");
}

/// The status of server `id` as the API shows it.
fn state(addr: &str, token: &str, id: &str) -> Value {
    request(addr, "GET", &format!("/api/v1/servers/{id}"), Some(token), b"").map(|(_, body)| body).unwrap_or_default()
}

/// Whether server `id` has logged a line containing `text`.
fn logged(addr: &str, token: &str, id: &str, text: &str) -> bool {
    let (_, body) = request(addr, "GET", &format!("/api/v1/servers/{id}/logs?lines=500"), Some(token), b"").unwrap();
    body["lines"]
        .as_array()
        .is_some_and(|lines| lines.iter().any(|l| l["text"].as_str().is_some_and(|t| t.contains(text))))
}

/// Runs the Python SDK client against `url` with `calls`; returns its report.
fn python_client(url: &str, token: &str, calls: Value) -> Value {
    python_client_with(url, token, calls, &[])
}

/// [`python_client`] with more arguments (`extras`: resources, prompts and completions too).
fn python_client_with(url: &str, token: &str, calls: Value, more: &[&str]) -> Value {
    let venv = peers::python_mcp_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/gateway_client.py");
    #[allow(clippy::disallowed_methods, reason = "the test runs a real MCP client")]
    let mut child = std::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .args([url, token, &calls.to_string()])
        .args(more)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the Python client timed out; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Python client failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// An rmcp client that reports each tools/list_changed notification on a channel.
struct Watcher(tokio::sync::mpsc::UnboundedSender<()>);

impl ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.0.send(());
    }
}

type Client<H> = RunningService<RoleClient, H>;

fn transport(url: &str, token: &str) -> StreamableHttpClientTransport<reqwest::Client> {
    StreamableHttpClientTransport::from_config(StreamableHttpClientTransportConfig::with_uri(url).auth_header(token))
}

/// A call's arguments from JSON.
fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().cloned().unwrap_or_default())
}

fn text(result: &CallToolResult) -> String {
    result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default()
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// Runs a blocking harness call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[test]
fn hosted_servers_answer_the_python_sdk_and_rmcp_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 5, 1).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = std::fs::read_to_string(dir.path().join("api_token")).unwrap().trim().to_owned();
    let scratch = tempfile::tempdir().unwrap();
    // The Python SDK's venv is made (or found in the cache) while the servers deploy.
    let venv = std::thread::spawn(peers::python_mcp_venv);
    deploy(
        &addr,
        &token,
        "example",
        &hivehost::package::example::zip(&IntakeLimits::new(100 << 20), scratch.path()).unwrap(),
    );
    deploy(&addr, &token, "node-echo", &node_package(scratch.path()));
    venv.join().unwrap();

    // The token guards every gateway route; an unknown server is a 404 that says what to do.
    for path in ["/servers/example/mcp", "/mcp/gateway"] {
        let (status, _) = request(&addr, "POST", path, None, b"{}").unwrap();
        assert_eq!(status, 401, "{path} without the token");
    }
    let (status, body) = request(&addr, "POST", "/servers/nope/mcp", Some(&token), b"{}").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("list_mcp_servers"), "{body}");

    // The Python SDK, per server.
    let base = format!("http://{addr}");
    let example = python_client(
        &format!("{base}/servers/example/mcp"),
        &token,
        json!([{ "tool": "process", "args": { "input": "via the gateway" } }]),
    );
    assert_eq!(example["server"], "example-server", "{example}");
    assert_eq!(example["tools"], json!(["process"]), "{example}");
    assert_eq!(example["calls"][0]["text"], "Processed: via the gateway", "{example}");
    let node = python_client_with(
        &format!("{base}/servers/node-echo/mcp"),
        &token,
        json!([
            { "tool": "add", "args": { "a": 2, "b": 3 } },
            { "tool": "slow", "args": { "ms": 300, "steps": 3 } },
        ]),
        &["extras"],
    );
    assert_eq!(node["server"], "node-echo", "{node}");
    assert_eq!(node["tools"], json!(["add", "echo", "slow"]), "{node}");
    assert_eq!(node["calls"][0]["structured"], json!({ "sum": 5 }), "{node}");
    // The server's progress reached the client under the client's own token.
    assert_eq!(node["calls"][1]["progress"], json!([1.0, 2.0, 3.0]), "{node}");
    assert_eq!(node["calls"][1]["text"], "slept 300 ms", "{node}");
    // Resources, prompts and completions are forwarded too.
    assert_eq!(
        node["extras"],
        json!({
            "resources": ["hive://greeting"],
            "read": "hello from node-echo",
            "prompts": ["shout"],
            "prompt": "Shout HIVE!",
            "completions": ["hello", "hive", "honey"],
        }),
        "{node}"
    );

    // The Python SDK, through the aggregate.
    let all = python_client(
        &format!("{base}/mcp/gateway"),
        &token,
        json!([
            { "tool": "example__process", "args": { "input": "aggregated" } },
            { "tool": "node-echo__add", "args": { "a": 40, "b": 2 } },
            { "tool": "nope__add", "args": {} },
        ]),
    );
    assert_eq!(
        all["tools"],
        json!(["example__process", "node-echo__add", "node-echo__echo", "node-echo__slow"]),
        "{all}"
    );
    assert_eq!(all["calls"][0]["text"], "Processed: aggregated", "{all}");
    assert_eq!(all["calls"][1]["structured"], json!({ "sum": 42 }), "{all}");
    assert_eq!(all["calls"][2]["is_error"], true, "{all}");
    assert!(all["calls"][2]["text"].as_str().unwrap().contains("tools/list"), "{all}");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(rmcp_part(Arc::new((addr.clone(), token.clone()))));
    runtime.block_on(raw_part(Arc::new((addr.clone(), token.clone()))));

    // The gateway's use shows in the server's status.
    let node_status = state(&addr, &token, "node-echo");
    assert!(node_status["gateway"]["calls"].as_u64().unwrap() >= 6, "{node_status}");
    assert!(node_status["gateway"]["sessions_total"].as_u64().unwrap() >= 2, "{node_status}");
    assert!(node_status["gateway"]["last_call_ms"].is_u64(), "{node_status}");
    assert_eq!(serve.terminate(), Some(0));
}

/// The rmcp client's part: both protocol generations, a kill mid-call, a cancellation, and
/// tools/list_changed from the aggregate.
async fn rmcp_part(at: Arc<(String, String)>) {
    let (addr, token) = (at.0.clone(), at.1.clone());
    let url = |path: &str| format!("http://{addr}{path}");

    // The 2026-07-28 protocol (server/discover, no session) to the example through the gateway.
    let modern = within(
        "a 2026-07-28 client",
        ().serve_with_lifecycle(
            transport(&url("/servers/example/mcp"), &token),
            ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
        ),
    )
    .await
    .expect("the gateway speaks 2026-07-28");
    let info = modern.peer_info().expect("the gateway answered discovery");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);
    let result =
        within("a modern call", modern.call_tool(call("process", json!({ "input": "modern" })))).await.unwrap();
    assert_eq!(text(&result), "Processed: modern");
    let _ = modern.cancel().await;

    // A 2025-11-25 session to the Node server.
    let node: Client<()> =
        within("a session", ().serve(transport(&url("/servers/node-echo/mcp"), &token))).await.unwrap();
    let result = within("echo", node.call_tool(call("echo", json!({ "text": "hello" })))).await.unwrap();
    assert_eq!(text(&result), "hello");

    // Two sessions' concurrent calls (their request ids start alike) each get their own answers.
    let other: Client<()> =
        within("a session", ().serve(transport(&url("/servers/node-echo/mcp"), &token))).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for (session, peer) in [node.peer().clone(), other.peer().clone()].into_iter().enumerate() {
        for n in 0..20 {
            let peer = peer.clone();
            calls.spawn(async move {
                let said = format!("session {session} call {n}");
                let result = peer.call_tool(call("echo", json!({ "text": said }))).await.expect("an answer");
                (said, text(&result))
            });
        }
    }
    while let Some(joined) = within("concurrent calls", calls.join_next()).await {
        let (said, heard) = joined.unwrap();
        assert_eq!(heard, said);
    }
    let _ = other.cancel().await;

    // A kill in the middle of a call.
    let peer = node.peer().clone();
    let long = tokio::spawn(async move { peer.call_tool(call("slow", json!({ "ms": 60_000 }))).await });
    let (a, t) = (addr.clone(), token.clone());
    blocking(move || wait_until("the slow call runs", DEADLINE, || logged(&a, &t, "node-echo", "slow: started 60000")))
        .await;
    let (a, t) = (addr.clone(), token.clone());
    let before = blocking(move || state(&a, &t, "node-echo")).await;
    let pid = before["pid"].as_u64().expect("a pid") as i32;
    // SAFETY: kill(2) on the hosted server's main process, which this test had deployed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = within("the killed call's answer", long).await.unwrap().expect("a tool result, not a protocol error");
    assert_eq!(killed.is_error, Some(true), "{killed:?}");
    assert!(text(&killed).contains("stopped during the call"), "{}", text(&killed));
    // The next call waits for the restart and succeeds.
    let result =
        within("a call after the restart", node.call_tool(call("echo", json!({ "text": "again" })))).await.unwrap();
    assert_eq!(text(&result), "again");
    let (a, t) = (addr.clone(), token.clone());
    let after = blocking(move || state(&a, &t, "node-echo")).await;
    assert!(after["restarts"].as_u64().unwrap() > before["restarts"].as_u64().unwrap(), "{after}");

    // A cancelled call is cancelled upstream.
    let slow = ClientRequest::CallToolRequest(CallToolRequest::new(call("slow", json!({ "ms": 30_001 }))));
    let handle = node.peer().send_cancellable_request(slow, PeerRequestOptions::no_options()).await.unwrap();
    let (a, t) = (addr.clone(), token.clone());
    blocking(move || wait_until("the call runs", DEADLINE, || logged(&a, &t, "node-echo", "slow: started 30001")))
        .await;
    handle.cancel(Some("the test changed its mind".into())).await.unwrap();
    let (a, t) = (addr.clone(), token.clone());
    blocking(move || {
        wait_until("the server saw the cancel", DEADLINE, || logged(&a, &t, "node-echo", "slow: cancelled"))
    })
    .await;
    let _ = node.cancel().await;

    // The aggregate tells its clients when a server goes away and comes back.
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let all = within("an aggregate session", Watcher(tx).serve(transport(&url("/mcp/gateway"), &token))).await.unwrap();
    let names = |tools: Vec<rmcp::model::Tool>| tools.into_iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
    let tools = names(within("the tools", all.list_all_tools()).await.unwrap());
    assert!(tools.contains(&"node-echo__echo".to_owned()), "{tools:?}");
    let result =
        within("a call through the aggregate", all.call_tool(call("example__process", json!({ "input": "rmcp" }))))
            .await
            .unwrap();
    assert_eq!(text(&result), "Processed: rmcp");
    let (a, t) = (addr.clone(), token.clone());
    let (status, body) =
        blocking(move || request(&a, "POST", "/api/v1/servers/node-echo/stop", Some(&t), b"")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    within("tools/list_changed after a stop", changes.recv()).await.expect("a notification");
    let tools = names(within("the tools", all.list_all_tools()).await.unwrap());
    assert_eq!(tools, ["example__process"], "only the running server's tools");
    let result = within("a call to a stopped server", all.call_tool(call("node-echo__echo", json!({ "text": "x" }))))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).contains("start_mcp_server"), "{}", text(&result));
    let (a, t) = (addr.clone(), token.clone());
    let (status, body) =
        blocking(move || request(&a, "POST", "/api/v1/servers/node-echo/start", Some(&t), b"")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    within("tools/list_changed after a start", changes.recv()).await.expect("a notification");
    let result =
        within("a call through the aggregate", all.call_tool(call("node-echo__echo", json!({ "text": "back" }))))
            .await
            .unwrap();
    assert_eq!(text(&result), "back");
    let _ = all.cancel().await;
}

/// A session's messages as plain HTTP, to see the answers themselves: a forwarded call is answered
/// as JSON, a call that reports progress as SSE, and ending the session cancels its calls upstream.
/// A JSON-RPC POST to `url`, in `session` if given (a 2025-11-25 one).
fn raw_post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    let mut request = http
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session).header("mcp-protocol-version", "2025-11-25");
    }
    request.send()
}

/// Opens a 2025-11-25 session at `url` (initialize, then initialized) and returns its id.
async fn raw_session(http: &reqwest::Client, url: &str, token: &str) -> String {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "raw", "version": "1" } }
    });
    let answer = within("initialize", raw_post(http, url, token, None, initialize)).await.unwrap();
    assert_eq!(answer.status(), 200);
    let session = answer.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = within("the initialize answer", answer.text()).await.unwrap();
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let answer = within("initialized", raw_post(http, url, token, Some(&session), initialized)).await.unwrap();
    assert_eq!(answer.status(), 202);
    session
}

async fn raw_part(at: Arc<(String, String)>) {
    let (addr, token) = (at.0.clone(), at.1.clone());
    let url = format!("http://{addr}/servers/node-echo/mcp");
    let http = reqwest::Client::new();
    let post = |session: Option<&str>, body: Value| raw_post(&http, &url, &token, session, body);
    let session = raw_session(&http, &url, &token).await;

    // A plain call: one JSON answer with the client's own id.
    let echo = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": { "name": "echo", "arguments": { "text": "raw" } } });
    let answer = within("a call", post(Some(&session), echo)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let body: Value = within("its answer", answer.json()).await.unwrap();
    assert_eq!(body["id"], 7, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "raw", "{body}");

    // A call that reports progress: SSE, the progress under the client's token, then the answer.
    let slow = json!({
        "jsonrpc": "2.0", "id": "eight", "method": "tools/call",
        "params": { "name": "slow", "arguments": { "ms": 300, "steps": 3 }, "_meta": { "progressToken": "mine" } }
    });
    let answer = within("a call with progress", post(Some(&session), slow)).await.unwrap();
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    let text = within("its events", answer.text()).await.unwrap();
    let events: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let progress: Vec<&Value> = events.iter().filter(|e| e["method"] == "notifications/progress").collect();
    assert_eq!(progress.len(), 3, "{text}");
    assert!(progress.iter().all(|p| p["params"]["progressToken"] == "mine"), "{text}");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["id"], &last["result"]["content"][0]["text"]),
        (&json!("eight"), &json!("slept 300 ms")),
        "{text}"
    );

    // Ending the session cancels its call in flight upstream, and the session is gone.
    let long = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": { "name": "slow", "arguments": { "ms": 30_002 } } });
    let pending = tokio::spawn(post(Some(&session), long));
    let (a, t) = (addr.clone(), token.clone());
    blocking(move || wait_until("the call runs", DEADLINE, || logged(&a, &t, "node-echo", "slow: started 30002")))
        .await;
    let deleted = within("DELETE", http.delete(&url).bearer_auth(&token).header("mcp-session-id", &session).send())
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let (a, t) = (addr.clone(), token.clone());
    blocking(move || {
        wait_until("the server saw the cancel", DEADLINE, || logged(&a, &t, "node-echo", "slow: cancelled 30002"))
    })
    .await;
    let answer = within("the cancelled call's answer", pending).await.unwrap().unwrap();
    let body = within("its body", answer.text()).await.unwrap();
    assert!(body.contains("cancelled"), "{body}");
    let echo = json!({ "jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": { "name": "echo", "arguments": { "text": "x" } } });
    let answer = within("a call in the ended session", post(Some(&session), echo)).await.unwrap();
    assert_eq!(answer.status(), 404);

    // The aggregate answers its tool calls the same way: JSON, with the client's id; an unknown
    // server's tool is a tool error that says where the names come from.
    let all = format!("http://{addr}/mcp/gateway");
    let session = raw_session(&http, &all, &token).await;
    let calls = [("node-echo__echo", json!({ "text": "all" })), ("nope__add", json!({}))];
    let mut answers = Vec::new();
    for (n, (tool, arguments)) in calls.into_iter().enumerate() {
        let call = json!({ "jsonrpc": "2.0", "id": n + 20, "method": "tools/call", "params": { "name": tool, "arguments": arguments } });
        let answer = within("an aggregate call", raw_post(&http, &all, &token, Some(&session), call)).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "application/json");
        answers.push(within("its answer", answer.json::<Value>()).await.unwrap());
    }
    assert_eq!(
        (&answers[0]["id"], &answers[0]["result"]["content"][0]["text"]),
        (&json!(20), &json!("all")),
        "{answers:?}"
    );
    assert_eq!((&answers[1]["id"], &answers[1]["result"]["isError"]), (&json!(21), &json!(true)), "{answers:?}");
    let why = answers[1]["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(why.contains("no tool nope__add") && why.contains("tools/list"), "{why}");
}

#[test]
fn a_session_busy_with_calls_outlives_the_idle_timeout_and_an_idle_one_is_closed() {
    // The gateway answers a session's calls itself, out of sight of rmcp's session, which closes
    // a session idle for `mcp_session_idle_timeout`: the gateway keeps a busy one alive.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 2, 1).unwrap();
    let mut settings: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    settings["mcp_hosting"]["mcp_session_idle_timeout"] = json!(2);
    std::fs::write(&config, settings.to_string()).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = std::fs::read_to_string(dir.path().join("api_token")).unwrap().trim().to_owned();
    let scratch = tempfile::tempdir().unwrap();
    deploy(&addr, &token, "node-echo", &node_package(scratch.path()));

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let url = format!("http://{addr}/servers/node-echo/mcp");
        let http = reqwest::Client::new();
        let busy = raw_session(&http, &url, &token).await;
        let idle = raw_session(&http, &url, &token).await;
        let echo = |n: u64| json!({ "jsonrpc": "2.0", "id": n, "method": "tools/call", "params": { "name": "echo", "arguments": { "text": "x" } } });
        // A call every quarter second for three idle timeouts: the session stays.
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(6) {
            let answer = within("a call", raw_post(&http, &url, &token, Some(&busy), echo(n))).await.unwrap();
            assert_eq!(answer.status(), 200, "call {n}, {:?} after the first", started.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The other session, untouched as long, is gone.
        let answer = within("a call in the idle session", raw_post(&http, &url, &token, Some(&idle), echo(n))).await.unwrap();
        assert_eq!(answer.status(), 404, "the idle session was closed");
    });
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn a_server_on_the_2026_protocol_answers_a_2025_client_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 5, 1).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = std::fs::read_to_string(dir.path().join("api_token")).unwrap().trim().to_owned();
    let venv = std::thread::spawn(peers::python_mcp_venv);
    // The hosted server is hivehost's own MCP server (rmcp 3.11, `hivehost mcp`) on a platform of
    // its own: it answers `server/discover`, so the upstream session speaks 2026-07-28. It runs
    // unconfined: the sandbox's view of the file system would not hold the binary under test.
    let nested = dir.path().join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    let nested_config = write_config(&nested, 1, 5).unwrap();
    let pkg = dir.path().join("pkg-inner");
    std::fs::create_dir_all(&pkg).unwrap();
    let server_config = json!({
        "name": "inner",
        "command": ["bash", "-c", "exec \"$HIVEHOST\" mcp --config \"$CONFIG\""],
        "environment": { "HIVEHOST": env!("CARGO_BIN_EXE_hivehost"), "CONFIG": nested_config },
        "sandboxed": false,
        "start_timeout": 60,
        "shutdown_timeout": 10
    });
    std::fs::write(pkg.join("server_config.json"), server_config.to_string()).unwrap();
    deploy(&addr, &token, "inner", &pack_dir(&pkg, &IntakeLimits::new(100 << 20)).unwrap());
    let status = state(&addr, &token, "inner");
    assert_eq!(status["mcp_session"]["protocol"], "2026-07-28", "{status}");
    assert!(status["mcp_session"]["server"].as_str().unwrap().starts_with("hivehost "), "{status}");
    venv.join().unwrap();

    // The Python SDK (mcp 1.30) speaks 2025-11-25 to the gateway, which speaks 2026-07-28 upstream.
    let report = python_client(
        &format!("http://{addr}/servers/inner/mcp"),
        &token,
        json!([{ "tool": "list_mcp_servers", "args": {} }]),
    );
    assert_eq!(report["protocol"], "2025-11-25", "{report}");
    assert!(report["tools"].as_array().unwrap().contains(&json!("upload_mcp_server")), "{report}");
    assert_eq!(report["calls"][0]["is_error"], false, "{report}");
    assert_eq!(report["calls"][0]["structured"]["count"], 0, "the inner platform hosts nothing: {report}");
    assert_eq!(serve.terminate(), Some(0));
    // Stopping the outer platform stopped the inner one: its data directory is unlocked.
    let unlocked =
        std::fs::OpenOptions::new().write(true).open(nested.join("hivehost.lock")).is_ok_and(|f| f.try_lock().is_ok());
    assert!(unlocked, "the inner platform has stopped");
}
