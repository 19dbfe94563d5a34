//! End to end: real MCP servers started through hivehost's own launcher answer an rmcp client over
//! their stdin and stdout (the example package's FastMCP server on Python `mcp` 1.30.0, and a Node
//! server on the official TypeScript SDK), each in its sandbox with every layer on (as root; not as
//! root the sandbox part is skipped, saying so), and killing the tree afterwards leaves no process
//! and no cgroup.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actors::process::{DEFAULT_PATH, Incarnation, Launcher, ProcessLauncher};
use actors::sandbox::{CgroupRoot, HostCaps, LayerState, SandboxSpec};
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

/// Confines `spec` with every layer, network denied, as uid `uid`, reading `read` besides its code.
/// Returns the host's caps, or `None` (after saying so) when hivehost is not root here.
fn sandbox(spec: &mut ServerSpec, scratch: &Path, uid: u32, read: Vec<PathBuf>) -> Option<HostCaps> {
    let caps = HostCaps::detect();
    if !caps.root {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED the sandbox of {}: not root; it runs unconfined", spec.id);
        }
        return None;
    }
    spec.sandbox = SandboxSpec {
        confine: true,
        cgroup: true,
        uid,
        gid: uid,
        network: false,
        code_dir: spec.working_dir.clone(),
        state_dir: scratch.join("home"),
        writable_state: true,
        run_dir: scratch.join("run"),
        read_paths: read,
        require: true,
    };
    Some(caps)
}

/// Starts `spec` through hivehost's launcher and connects an MCP client over its stdout and stdin.
async fn launch(spec: &ServerSpec, caps: Option<HostCaps>) -> (Client, Incarnation) {
    let launcher = match caps {
        Some(caps) => {
            let root = CgroupRoot::new(caps.cgroup.clone(), format!("hivehost-test-mcp-{}", spec.id));
            ProcessLauncher::standalone_on(caps, root)
        }
        None => ProcessLauncher::standalone(),
    };
    let mut incarnation = launcher.launch(spec, 1).unwrap_or_else(|e| panic!("launching {}: {e}", spec.id));
    if spec.sandbox.confine {
        let off: Vec<_> = incarnation.sandbox.iter().filter(|r| !matches!(r.state, LayerState::Active(_))).collect();
        assert!(off.is_empty(), "every layer is on: {off:?}");
    }
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

/// Closes the client, kills the tree and waits for the exit: nothing of the server may be left,
/// not even its cgroups.
async fn stop(client: Client, incarnation: Incarnation, spec: &ServerSpec) {
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
    drop(incarnation.control);
    if spec.sandbox.confine {
        let root = CgroupRoot::new(HostCaps::detect().cgroup, format!("hivehost-test-mcp-{}", spec.id));
        let removed = tokio::task::spawn_blocking(move || root.remove_instance(DEADLINE)).await.unwrap();
        assert!(removed, "the server's cgroups are removed");
    }
}

#[tokio::test]
async fn python_fastmcp_example_answers_tool_calls_over_stdio() {
    let venv = peer("the Python MCP venv", peers::python_mcp_venv).await;
    let scratch = tempfile::tempdir().unwrap();
    let code = scratch.path().join("code");
    std::fs::create_dir(&code).unwrap();
    hivehost::package::example::write_files(&code).unwrap();
    let python = venv.join("bin/python").display().to_string();
    let mut spec = spec("example", vec![python, "server.py".into()], &code, scratch.path());
    let caps = sandbox(&mut spec, scratch.path(), 232_001, vec![venv.clone()]);
    peers::make_world_readable(scratch.path());

    let (client, incarnation) = launch(&spec, caps).await;
    assert_eq!(server_name(&client), "example-server");
    let tools = within("tools/list", client.list_all_tools()).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["process"]);
    assert_eq!(tools[0].input_schema.get("required"), Some(&json!(["input"])), "{:?}", tools[0].input_schema);

    let result = call(&client, "process", json!({ "input": "hello, hive" })).await;
    assert_eq!(texts(&result), ["Processed: hello, hive"]);
    // FastMCP 1.x wraps a tool's plain return value as `{"result": ...}` in structured content.
    assert_eq!(result.structured_content, Some(json!({ "result": "Processed: hello, hive" })));

    stop(client, incarnation, &spec).await;
}

#[tokio::test]
async fn node_sdk_server_answers_tool_calls_over_stdio() {
    let app = peer("the Node MCP fixture", peers::node_echo_dir).await;
    let scratch = tempfile::tempdir().unwrap();
    let mut spec = spec("node-echo", vec![peers::NODE.into(), "server.js".into()], &app, scratch.path());
    let caps = sandbox(&mut spec, scratch.path(), 232_002, vec![]);
    peers::make_world_readable(scratch.path());

    let (client, incarnation) = launch(&spec, caps).await;
    assert_eq!(server_name(&client), "node-echo");
    let tools = within("tools/list", client.list_all_tools()).await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["add", "echo", "slow"]);

    let text = "hello, hive \u{1f41d}";
    let result = call(&client, "echo", json!({ "text": text })).await;
    assert_eq!(texts(&result), [text]);

    let result = call(&client, "add", json!({ "a": 2, "b": 3.5 })).await;
    assert_eq!(texts(&result), ["5.5"]);
    assert_eq!(result.structured_content, Some(json!({ "sum": 5.5 })));

    stop(client, incarnation, &spec).await;
}
