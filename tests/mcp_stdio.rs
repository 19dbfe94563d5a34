//! End to end: real MCP servers started through hivehost's own launcher answer an rmcp client over
//! their stdin and stdout (the example package's FastMCP server on Python `mcp` 1.30.0, and a Node
//! server on the official TypeScript SDK), and killing the tree afterwards leaves no process.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use actors::process::{DEFAULT_PATH, Incarnation, Launcher, ProcessLauncher};
use actors::{LogSpec, ServerSpec};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use serde_json::json;
use tokio::io::AsyncReadExt;

#[path = "support/peers.rs"]
mod peers;

/// The longest any one wait of a running server may take: a start, a call, a kill, an exit.
const DEADLINE: Duration = Duration::from_secs(60);

/// The longest making a peer (a venv, an `npm ci`) may take on a machine without the cache.
const SETUP_DEADLINE: Duration = Duration::from_secs(1200);

type Client = RunningService<RoleClient, ()>;

/// Awaits `fut`, panicking if it takes longer than `limit`.
async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Awaits `fut`, panicking if it takes longer than [`DEADLINE`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(DEADLINE, what, fut).await
}

/// Makes a peer on a blocking thread (it runs pip or npm), passing its panic on as it was.
async fn peer<T: Send + 'static>(what: &str, make: fn() -> T) -> T {
    match within_for(SETUP_DEADLINE, what, tokio::task::spawn_blocking(make)).await {
        Ok(made) => made,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// A stdio spec for `command` in `code`, with an environment of PATH and a HOME of its own.
fn spec(id: &str, command: Vec<String>, code: &Path, scratch: &Path) -> ServerSpec {
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut spec = ServerSpec::new(id, command, code, LogSpec::in_dir(scratch.join("logs")));
    spec.env = vec![("PATH".into(), DEFAULT_PATH.into()), ("HOME".into(), home.display().to_string())];
    spec
}

/// Starts `spec` through hivehost's launcher and connects an MCP client over its stdout and stdin.
async fn launch(spec: &ServerSpec) -> (Client, Incarnation) {
    let launcher = ProcessLauncher::standalone();
    let mut incarnation = launcher.launch(spec, 1).unwrap_or_else(|e| panic!("launching {}: {e}", spec.id));
    let stdout = incarnation.stdout.take().expect("a stdio server's stdout carries MCP");
    let stdin = incarnation.stdin.take().expect("a stdio server has a stdin");
    // Read stderr all along so a chatty server never blocks on it; shown if the start fails.
    let logs = std::mem::take(&mut incarnation.log_pipes);
    let stderr = tokio::spawn(async move {
        let mut text = Vec::new();
        for (_, mut pipe) in logs {
            let _ = pipe.read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let why = match tokio::time::timeout(DEADLINE, ().serve((stdout, stdin))).await {
        Ok(Ok(client)) => return (client, incarnation),
        Ok(Err(err)) => err.to_string(),
        Err(_) => format!("no answer to initialize within {DEADLINE:?}"),
    };
    within("the failed server's tree to be killed", incarnation.control.kill()).await;
    let stderr = within("the failed server's stderr to end", stderr).await.unwrap_or_default();
    panic!("{} did not start as an MCP server: {why}; its stderr:\n{stderr}", spec.id);
}

/// Calls `tool` with `arguments` and returns its result, failing on any protocol error.
async fn call(client: &Client, tool: &'static str, arguments: serde_json::Value) -> CallToolResult {
    let arguments = arguments.as_object().cloned().expect("tool arguments are a JSON object");
    let params = CallToolRequestParams::new(tool).with_arguments(arguments);
    let result = within(&format!("tools/call {tool}"), client.call_tool(params))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"));
    assert_ne!(result.is_error, Some(true), "{tool} reported an error: {result:?}");
    result
}

/// The text blocks of a tool result.
fn texts(result: &CallToolResult) -> Vec<&str> {
    result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.as_str()).collect()
}

/// The name the server gave in its handshake.
fn server_name(client: &Client) -> String {
    let info = client.peer_info().expect("the server answered the handshake");
    info.server_info.as_ref().map(|i| i.name.clone()).unwrap_or_default()
}

/// Closes the client, kills the tree and waits for the exit: nothing of the server may be left.
async fn stop(client: Client, incarnation: Incarnation) {
    within("the client to close", client.cancel()).await.expect("the client's task ends cleanly");
    let report = within("the tree to be killed", incarnation.control.kill()).await;
    assert_eq!(report.survivors, 0, "every process of the tree is gone: {report:?}");
    let exit = within("the server to exit", incarnation.exit).await;
    // Closing the client closes the server's stdin, on which it may exit by itself before the kill.
    assert!(
        matches!(exit, policy::ExitKind::Code(0) | policy::ExitKind::Signal(libc::SIGKILL)),
        "the server exited on end of input or by the kill: {}",
        actors::describe(exit)
    );
}

#[tokio::test]
async fn python_fastmcp_example_answers_tool_calls_over_stdio() {
    let venv = peer("the Python MCP venv", peers::python_mcp_venv).await;
    let scratch = tempfile::tempdir().unwrap();
    let code = scratch.path().join("code");
    std::fs::create_dir(&code).unwrap();
    hivehost::package::example::write_files(&code).unwrap();
    let python = venv.join("bin/python").display().to_string();
    let spec = spec("example", vec![python, "server.py".into()], &code, scratch.path());
    peers::make_world_readable(scratch.path());

    let (client, incarnation) = launch(&spec).await;
    assert_eq!(server_name(&client), "example-server");
    let tools = within("tools/list", client.list_all_tools()).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["process"]);
    assert_eq!(tools[0].input_schema.get("required"), Some(&json!(["input"])), "{:?}", tools[0].input_schema);

    let result = call(&client, "process", json!({ "input": "hello, hive" })).await;
    assert_eq!(texts(&result), ["Processed: hello, hive"]);
    // FastMCP 1.x wraps a tool's plain return value as `{"result": ...}` in structured content.
    assert_eq!(result.structured_content, Some(json!({ "result": "Processed: hello, hive" })));

    stop(client, incarnation).await;
}

#[tokio::test]
async fn node_sdk_server_answers_tool_calls_over_stdio() {
    let app = peer("the Node MCP fixture", peers::node_echo_dir).await;
    let scratch = tempfile::tempdir().unwrap();
    let spec = spec("node-echo", vec![peers::NODE.into(), "server.js".into()], &app, scratch.path());
    peers::make_world_readable(scratch.path());

    let (client, incarnation) = launch(&spec).await;
    assert_eq!(server_name(&client), "node-echo");
    let tools = within("tools/list", client.list_all_tools()).await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["add", "echo"]);

    let text = "hello, hive \u{1f41d}";
    let result = call(&client, "echo", json!({ "text": text })).await;
    assert_eq!(texts(&result), [text]);

    let result = call(&client, "add", json!({ "a": 2, "b": 3.5 })).await;
    assert_eq!(texts(&result), ["5.5"]);
    assert_eq!(result.structured_content, Some(json!({ "sum": 5.5 })));

    stop(client, incarnation).await;
}
