//! System benchmark of the MCP gateway of the real `hivehost serve` binary: what a hosted stdio
//! server costs its clients through `/servers/{id}/mcp` (and `/mcp/gateway`), against talking to the
//! same server over its own stdin and stdout.
//!
//! Run with `cargo bench --bench gateway`. The bench binary is also the hosted server: run as
//! `gateway echo-server` it serves an rmcp stdio server with one tool, `echo`. The bench starts the
//! release binary on a fresh temporary config (dashboard on 127.0.0.1:0) hosting that echo server
//! (`sandboxed: false`, so it can run the bench binary out of `target/`), then measures:
//! 1. latency: sequential `tools/call echo` over (a) the bench's own stdio session with an echo
//!    server it spawned, (b) `/servers/echo/mcp`, (c) `/mcp/gateway` as `echo__echo`, and, as a
//!    same-run reference for what rmcp's streamable HTTP costs by itself, (d) the same echo server
//!    served by rmcp's `StreamableHttpService` in a process of its own (`gateway echo-http-server`,
//!    TCP_NODELAY on), and (e) a direct stdio session opened as hivehost opens its upstream one
//!    (`server/discover`, protocol 2026-07-28), the ways taking turns in rounds after a warm-up;
//! 2. throughput: one direct stdio client, then 1, 16 and 64 concurrent HTTP clients of the gateway,
//!    each its own MCP session and connection, calling in a loop over a fixed window, with the CPU of
//!    hivehost, of the echo server and of the bench's own clients over that window; for reference,
//!    the (d) server with as many clients as the largest gateway row, and as many callers sharing one
//!    direct (e) stdio session, which is what the gateway's one upstream session has to carry;
//! 3. the memory (VmRSS) and descriptors of hivehost per idle gateway session, and again after the
//!    sessions were closed and as many opened anew (a leak would grow it twice);
//! 4. for scale, what this machine charges for the hops a call makes: a one-byte round trip over
//!    two pipes to a child process (`gateway pipe-echo`) with both on one core, on two cores, and
//!    on two cores with this side polling instead of sleeping, the three taking turns.
//!
//! Without `--bench` on its command line it runs a smoke version of about a second.

#[path = "../tests/support/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::Peer;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};

/// The first argument that makes this binary the echo server (stdio).
const ECHO_ARG: &str = "echo-server";

/// The first argument that makes this binary the echo server over rmcp's streamable HTTP.
const ECHO_HTTP_ARG: &str = "echo-http-server";

/// The first argument that makes this binary echo bytes from stdin to stdout (blocking reads).
const PIPE_ECHO_ARG: &str = "pipe-echo";

/// The id of the hosted echo server.
const SERVER_ID: &str = "echo";

/// What every call sends and expects back.
const TEXT: &str = "hello through the gateway";

/// The longest any one step may take (a start, a phase's calls, an exit).
const DEADLINE: Duration = Duration::from_secs(120);

struct Sizes {
    /// Calls per way before the measured rounds.
    warmup: usize,
    rounds: usize,
    /// Calls per way per round.
    per_round: usize,
    /// Concurrent HTTP clients of the throughput phase (after one, and one direct).
    concurrency: [usize; 2],
    /// Calling before each throughput window opens.
    loop_warmup: Duration,
    window: Duration,
    /// Idle sessions opened for the memory figure.
    sessions: usize,
    settle: Duration,
}

const FULL: Sizes = Sizes {
    warmup: 200,
    rounds: 4,
    per_round: 500,
    concurrency: [16, 64],
    loop_warmup: Duration::from_secs(1),
    window: Duration::from_secs(10),
    sessions: 200,
    settle: Duration::from_secs(2),
};

const SMOKE: Sizes = Sizes {
    warmup: 10,
    rounds: 2,
    per_round: 20,
    concurrency: [2, 4],
    loop_warmup: Duration::from_millis(20),
    window: Duration::from_millis(100),
    sessions: 5,
    settle: Duration::from_millis(50),
};

type Client = RunningService<RoleClient, ()>;

// ---------------------------------------------------------------------------------------------
// The echo server (this binary, run as `gateway echo-server`).

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

#[derive(Clone)]
struct Echo {
    tool_router: ToolRouter<Self>,
}

#[tool_router(router = tool_router)]
impl Echo {
    #[tool(description = "Answers with the text it was given.")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("gateway-bench-echo", env!("CARGO_PKG_VERSION")))
    }
}

/// Serves [`Echo`] on stdin and stdout until stdin closes, through rmcp's `stdio_pipes` (tokio's
/// pipe driver: no hand-off to a blocking thread per read and write), as rmcp advises for a
/// server whose standard streams are pipes.
fn echo_server() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let service = Echo { tool_router: Echo::tool_router() }.serve(rmcp::transport::stdio_pipes()).await?;
        service.waiting().await?;
        anyhow::Ok(())
    })?;
    // Where stdin is not a pipe, its reader may still sit in a blocking read of the runtime's pool:
    // do not wait for it.
    runtime.shutdown_background();
    Ok(())
}

/// Serves [`Echo`] over rmcp's streamable HTTP (sessions on, as the gateway) at `/mcp` on
/// 127.0.0.1:0, prints `listening on http://ADDR` on stdout, and exits when stdin closes.
fn echo_http_server() -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let service: StreamableHttpService<Echo, LocalSessionManager> = StreamableHttpService::new(
            || Ok(Echo { tool_router: Echo::tool_router() }),
            Default::default(),
            StreamableHttpServerConfig::default().with_cancellation_token(cancel.child_token()),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        writeln!(std::io::stdout(), "listening on http://{}", listener.local_addr()?)?;
        // As hivehost does: without it a reused connection waits ~40 ms per call.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stdin_closed = async {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while stdin.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        };
        tokio::select! {
            served = axum::serve(listener, router).into_future() => served?,
            () = stdin_closed => cancel.cancel(),
        }
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bench.

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some(ECHO_ARG) => return echo_server(),
        Some(ECHO_HTTP_ARG) => return echo_http_server(),
        Some(PIPE_ECHO_ARG) => return pipe_echo(),
        _ => {}
    }
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full { FULL } else { SMOKE };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let load_before = loadavg();
    let started = Instant::now();

    let exe = std::env::current_exe().context("the bench binary's path")?;
    let dir = tempfile::tempdir()?;
    let marker = format!("gateway-bench-{}", std::process::id());
    let config = write_config(dir.path(), &exe, &marker)?;
    let (mut serve, addr, log) = start_serve(dir.path(), &config)?;
    let serve_pid = serve.id();

    let result = (|| {
        wait_until("the echo server runs", || {
            harness::healthz(&addr).is_some_and(|h| h["running"] == 1 && h["servers"] == 1)
        })?;
        let token = std::fs::read_to_string(dir.path().join("api_token")).context("the API token")?.trim().to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async {
            let urls = Urls {
                server: format!("http://{addr}/servers/{SERVER_ID}/mcp"),
                aggregate: format!("http://{addr}/mcp/gateway"),
                token,
            };
            let latency = within("the latency phase", latency(&sizes, &exe, &urls)).await?;
            let memory = within("the memory phase", memory(&sizes, &urls, serve_pid)).await?;
            let (throughput, hosted) =
                within("the throughput phase", throughput(&sizes, &exe, &urls, serve_pid, &marker)).await?;
            anyhow::Ok((latency, memory, throughput, hosted))
        })
    })();

    // Stop it whatever happened: SIGTERM to the pid this bench started, then wait for its exit.
    let stopping = Instant::now();
    let exit_code = serve.terminate();
    let stop = stopping.elapsed();
    let survivors = harness::marked(&marker).len();
    let lines = log.lines.load(Ordering::Relaxed);
    let notable = std::mem::take(&mut *log.notable.lock().unwrap_or_else(|p| p.into_inner()));
    drop(serve);
    let dir_path = dir.path().to_owned();
    dir.close().context("removing the temporary directory")?;
    let (latency, memory, throughput, hosted) = result?;
    let hops = hops(&exe, if full { 20_000 } else { 200 })?;
    let load_after = loadavg();

    print(&Report {
        full,
        sizes: &sizes,
        latency: &latency,
        memory: &memory,
        throughput: &throughput,
        hosted,
        exit_code,
        stop,
        survivors,
        log_lines: lines,
        notable,
        hops: &hops,
        load_before,
        load_after,
        wall: started.elapsed(),
    });
    if exit_code != Some(0) {
        bail!("hivehost did not exit 0 on SIGTERM: {exit_code:?}");
    }
    if survivors != 0 {
        bail!("{survivors} hosted processes were left after hivehost exited");
    }
    if dir_path.exists() {
        bail!("the temporary directory {} is still there", dir_path.display());
    }
    let errors = throughput.iter().map(|t| t.errors).sum::<u64>();
    if errors != 0 {
        bail!("{errors} calls failed in the throughput phase");
    }
    Ok(())
}

struct Urls {
    server: String,
    aggregate: String,
    token: String,
}

/// Writes the platform's config and the echo server's directory in `dir`.
fn write_config(dir: &Path, exe: &Path, marker: &str) -> anyhow::Result<PathBuf> {
    let config = harness::write_config(dir, 1, 5)?;
    // Let the echo server use both cores, as the bench's own directly spawned one may: the default
    // cap (and ceiling) is one core.
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&config)?)?;
    value["mcp_hosting"]["resource_limits"] = serde_json::json!({ "cpu_percent": 200 });
    std::fs::write(&config, serde_json::to_vec_pretty(&value)?)?;
    let server = dir.join("servers").join(SERVER_ID);
    std::fs::create_dir_all(&server)?;
    let cfg = serde_json::json!({
        "name": SERVER_ID,
        "command": ["bash", "-c", format!("exec \"$ECHO_BIN\" {ECHO_ARG}")],
        "environment": { "ECHO_BIN": exe, harness::MARK: marker },
        "autostart": true,
        // The sandbox's mount view would hide the bench binary in target/.
        "sandboxed": false,
        "resource_limits": { "cpu_percent": 200 },
        // The MCP ping runs every 5 s during the measurement. An rmcp 3.11 server on 2026-07-28
        // answers `ping` with -32601; hivehost counts any answer as alive (it once restarted the
        // server mid-run: see benches/README.md), and the state changes printed at the end show it.
        "health_check_interval": 5,
        "shutdown_timeout": 5
    });
    std::fs::write(server.join("server_config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    Ok(config)
}

/// What hivehost logged: how many lines, and the notable ones (warnings, errors, state changes).
#[derive(Default)]
struct Log {
    lines: AtomicU64,
    notable: Mutex<Vec<String>>,
}

/// At most this many notable lines are kept.
const NOTABLE: usize = 40;

/// Starts the binary under test; returns it (stopped when dropped), its address (from its log)
/// and what it logs.
fn start_serve(dir: &Path, config: &Path) -> anyhow::Result<(harness::Serve, String, Arc<Log>)> {
    let log = Arc::new(Log::default());
    let counted = log.clone();
    let on_line = move |line: &str| {
        counted.lines.fetch_add(1, Ordering::Relaxed);
        if [" WARN ", " ERROR ", " state server="].iter().any(|p| line.contains(p)) {
            let mut notable = counted.notable.lock().unwrap_or_else(|p| p.into_inner());
            if notable.len() < NOTABLE {
                notable.push(line.to_owned());
            }
        }
    };
    let (serve, addr) = harness::spawn_serve(dir, config, &[], DEADLINE, on_line).map_err(anyhow::Error::msg)?;
    Ok((serve, addr, log))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() >= deadline {
            bail!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

async fn within<T>(what: &str, fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE * 5, fut).await.with_context(|| format!("{what} timed out"))?
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// How a direct client opens its session.
#[derive(Clone, Copy)]
enum Lifecycle {
    /// `initialize`, protocol 2025-11-25: what `serve()` does, and what the HTTP clients here do.
    Initialize,
    /// `server/discover` first (2026-07-28, per-request metadata), as hivehost's upstream session.
    Discover,
}

/// An echo server this bench spawned itself, and its rmcp client over the child's stdin and stdout.
struct Direct {
    client: Client,
    child: tokio::process::Child,
}

impl Direct {
    async fn spawn(exe: &Path, lifecycle: Lifecycle) -> anyhow::Result<Direct> {
        #[allow(clippy::disallowed_methods, reason = "the baseline talks to an echo server of its own")]
        let mut cmd = tokio::process::Command::new(exe);
        let mut child = cmd
            .arg(ECHO_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the direct echo server")?;
        let stdout = child.stdout.take().context("the echo server's stdout")?;
        let stdin = child.stdin.take().context("the echo server's stdin")?;
        let client = match lifecycle {
            Lifecycle::Initialize => ().serve((stdout, stdin)).await,
            Lifecycle::Discover => {
                let preferred_versions = vec![rmcp::model::ProtocolVersion::V_2026_07_28];
                let auto = ClientLifecycleMode::Auto { preferred_versions, legacy_version: None };
                ().serve_with_lifecycle((stdout, stdin), auto).await
            }
        }
        .context("initializing the direct echo server")?;
        Ok(Direct { client, child })
    }

    /// Closes the session (and so the child's stdin) and checks that the child exits 0.
    async fn close(mut self) -> anyhow::Result<()> {
        let _ = self.client.cancel().await;
        let status =
            tokio::time::timeout(DEADLINE, self.child.wait()).await.context("the direct echo server's exit")??;
        if !status.success() {
            bail!("the direct echo server exited with {status}");
        }
        Ok(())
    }
}

/// The echo server over rmcp's streamable HTTP, in a process of its own (the reference way).
struct HttpEcho {
    child: tokio::process::Child,
    url: String,
}

impl HttpEcho {
    async fn spawn(exe: &Path) -> anyhow::Result<HttpEcho> {
        use tokio::io::AsyncBufReadExt;
        #[allow(clippy::disallowed_methods, reason = "the reference way runs an echo server of its own")]
        let mut cmd = tokio::process::Command::new(exe);
        let mut child = cmd
            .arg(ECHO_HTTP_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the HTTP echo server")?;
        let stdout = child.stdout.take().context("the HTTP echo server's stdout")?;
        let mut line = String::new();
        tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
        let addr = line.trim().strip_prefix("listening on http://").context("the HTTP echo server's address")?;
        Ok(HttpEcho { url: format!("http://{addr}/mcp"), child })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the HTTP echo server's pid")
    }

    /// Closes its stdin and checks that it exits 0.
    async fn close(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        let status =
            tokio::time::timeout(DEADLINE, self.child.wait()).await.context("the HTTP echo server's exit")??;
        if !status.success() {
            bail!("the HTTP echo server exited with {status}");
        }
        Ok(())
    }
}

/// A new MCP session (`initialize`) at `url`, on a connection pool of its own that keeps its
/// connection open between calls (rmcp's default client opens one per request); `token` is the
/// bearer token, if not empty.
async fn http_session(url: &str, token: &str) -> anyhow::Result<Client> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if !token.is_empty() {
        config = config.auth_header(token.to_owned());
    }
    let transport = StreamableHttpClientTransport::with_client(http, config);
    ().serve(transport).await.with_context(|| format!("initializing a session at {url}"))
}

/// The echo call: `tool` is `echo` or, through `/mcp/gateway`, `echo__echo`.
fn echo_params(tool: &str) -> CallToolRequestParams {
    let mut args = serde_json::Map::new();
    args.insert("text".into(), TEXT.into());
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args)
}

/// One call; `Err` says what was wrong with it.
async fn call(client: &Peer<RoleClient>, params: &CallToolRequestParams) -> anyhow::Result<()> {
    let result = client.call_tool(params.clone()).await?;
    let text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.as_str());
    if result.is_error == Some(true) || text != Some(TEXT) {
        bail!("unexpected answer: {result:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Latency.

/// The ways, in the order of [`Latency::ways`].
const WAYS: [&str; 5] = [
    "(a) direct stdio (baseline)",
    "(b) gateway /servers/echo/mcp",
    "(c) aggregate /mcp/gateway, echo__echo",
    "(d) reference: rmcp streamable HTTP, no gateway",
    "(e) direct stdio, 2026-07-28 as the upstream",
];

struct Latency {
    /// Per way: every measured call.
    ways: [Stats; 5],
    /// Per way, the median of each round.
    rounds: [Vec<Duration>; 5],
}

async fn latency(sizes: &Sizes, exe: &Path, urls: &Urls) -> anyhow::Result<Latency> {
    let direct = Direct::spawn(exe, Lifecycle::Initialize).await?;
    let modern = Direct::spawn(exe, Lifecycle::Discover).await?;
    let http_echo = HttpEcho::spawn(exe).await?;
    let gateway = http_session(&urls.server, &urls.token).await?;
    let aggregate = http_session(&urls.aggregate, &urls.token).await?;
    let reference = http_session(&http_echo.url, "").await?;
    let clients = [&direct.client, &gateway, &aggregate, &reference, &modern.client];
    let echo = echo_params("echo");
    let params = [&echo, &echo, &echo_params(&format!("{SERVER_ID}__echo")), &echo, &echo];
    for (client, params) in clients.iter().zip(params) {
        for _ in 0..sizes.warmup {
            call(client, params).await?;
        }
    }
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let mut rounds: [Vec<Duration>; 5] = Default::default();
    for round in 0..sizes.rounds {
        // Each round starts with another way, so none always follows the same one.
        for turn in 0..WAYS.len() {
            let way = (round + turn) % WAYS.len();
            let mut these = Vec::with_capacity(sizes.per_round);
            for _ in 0..sizes.per_round {
                let start = Instant::now();
                call(clients[way], params[way]).await.with_context(|| WAYS[way])?;
                these.push(start.elapsed());
            }
            rounds[way].push(Stats::of(&mut these.clone()).p50);
            samples[way].extend(these);
        }
    }
    direct.close().await?;
    modern.close().await?;
    let _ = gateway.cancel().await;
    let _ = aggregate.cancel().await;
    let _ = reference.cancel().await;
    http_echo.close().await?;
    Ok(Latency { ways: samples.map(|mut s| Stats::of(&mut s)), rounds })
}

#[derive(Clone, Copy, Default)]
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &mut [Duration]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
        let total: Duration = samples.iter().sum();
        Stats {
            n: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            mean: total / samples.len() as u32,
            max: samples[samples.len() - 1],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. What a hop costs on this machine.

/// Echoes each byte of stdin to stdout with blocking reads and writes, until stdin closes.
fn pipe_echo() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut byte = [0u8; 1];
    while input.read(&mut byte)? == 1 {
        output.write_all(&byte)?;
        output.flush()?;
    }
    Ok(())
}

/// Pins the calling thread (0: this thread; in a child, before exec, the child) to `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity take it by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One-byte round trips to a `pipe-echo` child, `n` per way in rounds of 1,000, the ways taking
/// turns, on a thread of its own (pinned to CPU 0): the child on CPU 0 too, on CPU 1, and on CPU 1
/// with this side reading in a non-blocking loop. Empty on a machine with one CPU.
fn hops(exe: &Path, n: usize) -> anyhow::Result<Vec<(&'static str, Stats)>> {
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        return Ok(Vec::new());
    }
    let exe = exe.to_owned();
    std::thread::spawn(move || -> anyhow::Result<Vec<(&'static str, Stats)>> {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        pin(0)?;
        let spawn = |cpu: usize| -> anyhow::Result<std::process::Child> {
            #[allow(clippy::disallowed_methods, reason = "the bench starts its own helper")]
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg(PIPE_ECHO_ARG).stdin(Stdio::piped()).stdout(Stdio::piped());
            // SAFETY: sched_setaffinity is async-signal-safe.
            unsafe { cmd.pre_exec(move || pin(cpu)) };
            Ok(cmd.spawn()?)
        };
        let ways: [(&'static str, usize, bool); 3] = [
            ("both on one core, blocking reads", 0, false),
            ("on two cores, blocking reads", 1, false),
            ("on two cores, this side polling", 1, true),
        ];
        let mut children = Vec::new();
        for &(_, cpu, polls) in &ways {
            let mut child = spawn(cpu)?;
            let stdin = child.stdin.take().context("the helper's stdin")?;
            let stdout = child.stdout.take().context("the helper's stdout")?;
            if polls {
                // SAFETY: fcntl on a descriptor this process owns.
                unsafe {
                    let fd = stdout.as_raw_fd();
                    libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
                }
            }
            children.push((child, stdin, stdout));
        }
        let mut samples: [Vec<Duration>; 3] = Default::default();
        let mut byte = [b'x'];
        let rounds = n.div_ceil(1000);
        for round in 0..rounds {
            for turn in 0..ways.len() {
                let way = (round + turn) % ways.len();
                let (_, stdin, stdout) = &mut children[way];
                for _ in 0..n.min(1000) {
                    let start = Instant::now();
                    stdin.write_all(&byte)?;
                    loop {
                        match stdout.read(&mut byte) {
                            Ok(1) => break,
                            Ok(_) => bail!("the pipe-echo helper closed its stdout"),
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                            Err(err) => return Err(err.into()),
                        }
                    }
                    samples[way].push(start.elapsed());
                }
            }
        }
        for (mut child, stdin, stdout) in children {
            drop((stdin, stdout));
            child.wait()?;
        }
        Ok(ways.iter().zip(samples).map(|(w, mut s)| (w.0, Stats::of(&mut s))).collect())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the hop measurement panicked"))?
}

// ---------------------------------------------------------------------------------------------
// 2. Throughput.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    Gateway,
    Reference,
}

struct Throughput {
    way: Way,
    label: String,
    clients: usize,
    calls: usize,
    errors: u64,
    window: Duration,
    stats: Stats,
    /// % of one core over the window: hivehost, the echo server that answered, the bench process
    /// (its clients).
    cpu_hivehost: f64,
    cpu_server: f64,
    cpu_bench: f64,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.window.as_secs_f64()
    }
}

async fn throughput(
    sizes: &Sizes,
    exe: &Path,
    urls: &Urls,
    serve_pid: u32,
    marker: &str,
) -> anyhow::Result<(Vec<Throughput>, BTreeSet<u32>)> {
    // The hosted echo server's pids, found before each gateway window (a restart would change them).
    let mut hosted_seen = BTreeSet::new();
    let mut results = Vec::new();

    let most = sizes.concurrency[1];

    let direct = Direct::spawn(exe, Lifecycle::Initialize).await?;
    let pid = direct.child.id().context("the direct echo server's pid")?;
    let measured = run_window(sizes, vec![direct.client.peer().clone()], serve_pid, vec![pid]).await?;
    results.push(measured.labelled(Way::Direct, "(a) direct stdio (baseline), 1 client", 1));
    direct.close().await?;

    // What one stdio session carries when many callers share it, as the gateway's upstream does.
    let shared = Direct::spawn(exe, Lifecycle::Discover).await?;
    let pid = shared.child.id().context("the direct echo server's pid")?;
    let peers = vec![shared.client.peer().clone(); most];
    let measured = run_window(sizes, peers, serve_pid, vec![pid]).await?;
    let label = format!("(e) one stdio session (2026-07-28, as the upstream), {most} callers");
    results.push(measured.labelled(Way::Direct, &label, most));
    shared.close().await?;

    for n in [1, sizes.concurrency[0], most] {
        let clients = sessions(n, &urls.server, &urls.token).await?;
        let peers = clients.iter().map(|c| c.peer().clone()).collect();
        let hosted = harness::marked(marker);
        hosted_seen.extend(&hosted);
        let measured = run_window(sizes, peers, serve_pid, hosted).await?;
        let label = format!("(b) gateway /servers/echo/mcp, {n} client{}", if n == 1 { "" } else { "s" });
        results.push(measured.labelled(Way::Gateway, &label, n));
        close_all(clients).await;
    }

    let http_echo = HttpEcho::spawn(exe).await?;
    let clients = sessions(most, &http_echo.url, "").await?;
    let peers = clients.iter().map(|c| c.peer().clone()).collect();
    let measured = run_window(sizes, peers, serve_pid, vec![http_echo.pid()?]).await?;
    results.push(measured.labelled(
        Way::Reference,
        &format!("(d) reference: rmcp streamable HTTP, {most} clients"),
        most,
    ));
    close_all(clients).await;
    http_echo.close().await?;
    Ok((results, hosted_seen))
}

/// `n` sessions at `url`, opened one after the other.
async fn sessions(n: usize, url: &str, token: &str) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(http_session(url, token).await?);
    }
    Ok(clients)
}

async fn close_all(clients: Vec<Client>) {
    for client in clients {
        let _ = client.cancel().await;
    }
}

impl Throughput {
    fn labelled(mut self, way: Way, label: &str, clients: usize) -> Throughput {
        self.way = way;
        label.clone_into(&mut self.label);
        self.clients = clients;
        self
    }
}

/// Every client (a peer each; several may share a session) calls echo in a loop: for
/// `loop_warmup`, then for the window. Counts the calls that ended inside the window; samples CPU
/// from /proc at its edges (on a thread of its own, so a busy runtime does not move them):
/// hivehost, `server` (the echo server that answers), this process.
async fn run_window(
    sizes: &Sizes,
    clients: Vec<Peer<RoleClient>>,
    serve_pid: u32,
    server: Vec<u32>,
) -> anyhow::Result<Throughput> {
    let opens = Instant::now() + sizes.loop_warmup;
    let closes = opens + sizes.window;
    let params = Arc::new(echo_params("echo"));
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let params = params.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            loop {
                let start = Instant::now();
                let ok = call(&client, &params).await.is_ok();
                let end = Instant::now();
                if end >= closes {
                    break;
                }
                if end >= opens {
                    if ok {
                        samples.push(end - start);
                    } else {
                        errors += 1;
                    }
                }
            }
            (samples, errors)
        }));
    }
    let sampled = tokio::task::spawn_blocking(move || -> anyhow::Result<([u64; 3], Duration)> {
        let read = || -> anyhow::Result<[u64; 3]> {
            let server: u64 = server.iter().map(|p| harness::cpu_ticks(p).unwrap_or(0)).sum();
            Ok([harness::cpu_ticks(serve_pid)?, server, harness::cpu_ticks("self")?])
        };
        std::thread::sleep(opens.saturating_duration_since(Instant::now()));
        let before = read()?;
        let from = Instant::now();
        std::thread::sleep(closes.saturating_duration_since(Instant::now()));
        let after = read()?;
        Ok(([0, 1, 2].map(|i| after[i].saturating_sub(before[i])), from.elapsed()))
    });
    let mut samples = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut some, failed) = task.await?;
        samples.append(&mut some);
        errors += failed;
    }
    let (ticks, elapsed) = sampled.await??;
    let percent = |t: u64| t as f64 / harness::clock_ticks_per_second() / elapsed.as_secs_f64() * 100.0;
    Ok(Throughput {
        way: Way::Direct,
        label: String::new(),
        clients: 0,
        calls: samples.len(),
        errors,
        window: sizes.window,
        stats: Stats::of(&mut samples),
        cpu_hivehost: percent(ticks[0]),
        cpu_server: percent(ticks[1]),
        cpu_bench: percent(ticks[2]),
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Memory per idle session.

/// hivehost's VmRSS (KiB) and open descriptors at one moment.
#[derive(Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    fds: usize,
}

impl Footprint {
    fn of(pid: u32) -> anyhow::Result<Footprint> {
        Ok(Footprint { rss_kib: rss_kib(pid)?, fds: fds(pid)? })
    }
}

/// Open and close cycles of the memory phase: later cycles show whether closed sessions' memory
/// is reused or lost.
const CYCLES: usize = 3;

struct Memory {
    sessions: usize,
    before: Footprint,
    /// Per cycle: with the sessions open, and after closing them.
    cycles: Vec<(Footprint, Footprint)>,
    /// Opening the first cycle's sessions, one after the other.
    open_time: Duration,
}

async fn memory(sizes: &Sizes, urls: &Urls, serve_pid: u32) -> anyhow::Result<Memory> {
    tokio::time::sleep(sizes.settle).await;
    let before = Footprint::of(serve_pid)?;
    let mut cycles = Vec::with_capacity(CYCLES);
    let mut open_time = Duration::ZERO;
    for cycle in 0..CYCLES {
        let opening = Instant::now();
        let clients = sessions(sizes.sessions, &urls.server, &urls.token).await?;
        if cycle == 0 {
            open_time = opening.elapsed();
        }
        tokio::time::sleep(sizes.settle).await;
        let open = Footprint::of(serve_pid)?;
        close_all(clients).await;
        tokio::time::sleep(sizes.settle).await;
        cycles.push((open, Footprint::of(serve_pid)?));
    }
    Ok(Memory { sessions: sizes.sessions, before, cycles, open_time })
}

// ---------------------------------------------------------------------------------------------
// /proc.

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The report.

struct Report<'a> {
    full: bool,
    sizes: &'a Sizes,
    latency: &'a Latency,
    memory: &'a Memory,
    throughput: &'a [Throughput],
    hosted: BTreeSet<u32>,
    exit_code: Option<i32>,
    stop: Duration,
    survivors: usize,
    log_lines: u64,
    notable: Vec<String>,
    hops: &'a [(&'static str, Stats)],
    load_before: String,
    load_after: String,
    wall: Duration,
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn signed_us(later: Duration, earlier: Duration) -> String {
    let diff = later.as_secs_f64() - earlier.as_secs_f64();
    format!("{:+.0} µs", diff * 1e6)
}

/// Prints a Markdown table, first column left-aligned, the others right-aligned.
#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn table(head: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([head[c].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                let pad = " ".repeat(w - cell.chars().count());
                if c == 0 { format!("{cell}{pad}") } else { format!("{pad}{cell}") }
            })
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(head.iter().map(|h| (*h).to_owned()).collect());
    println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
    for row in rows {
        line(row.clone());
    }
}

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn print(r: &Report<'_>) {
    let note = if r.full { "" } else { " (smoke run: sizes are tiny, figures mean nothing)" };
    let s = r.sizes;
    println!("\nhivehost MCP gateway (the binary cargo built for this run: release under cargo bench){note}");
    println!(
        "load average before {} / after {}; wall time {:.1} s\n",
        r.load_before,
        r.load_after,
        r.wall.as_secs_f64()
    );

    let lat = r.latency;
    println!(
        "1. latency of sequential tools/call echo ({TEXT:?}), one session per way: {} warm-up calls per way, \
         then {} rounds of {} per way, the ways taking turns\n",
        s.warmup, s.rounds, s.per_round
    );
    let rows: Vec<Vec<String>> = WAYS
        .iter()
        .zip(&lat.ways)
        .zip(&lat.rounds)
        .map(|((way, st), rounds)| {
            vec![
                (*way).to_owned(),
                st.n.to_string(),
                us(st.p50),
                us(st.p99),
                us(st.mean),
                us(st.max),
                format!("{:.0}", 1.0 / st.mean.as_secs_f64()),
                rounds.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e6)).collect::<Vec<_>>().join(" / "),
            ]
        })
        .collect();
    table(&["way", "calls", "p50", "p99", "mean", "max", "calls/s (1/mean)", "p50 per round, µs"], &rows);
    let [direct, gateway, aggregate, reference, modern] = &lat.ways;
    let diff = |what: &str, a: &Stats, b: &Stats, target: &str| {
        vec![
            what.to_owned(),
            signed_us(a.p50, b.p50),
            signed_us(a.p99, b.p99),
            signed_us(a.mean, b.mean),
            target.to_owned(),
        ]
    };
    println!();
    table(
        &["added", "p50", "p99", "mean", "target"],
        &[
            diff("by the gateway: (b) − (a)", gateway, direct, "< 300 µs at p50"),
            diff("by the aggregate gateway: (c) − (a)", aggregate, direct, ""),
            diff("by rmcp's streamable HTTP alone: (d) − (a)", reference, direct, ""),
            diff("by hivehost's forwarding on top of that: (b) − (d)", gateway, reference, ""),
            diff("by the upstream's protocol (2026-07-28) alone: (e) − (a)", modern, direct, ""),
        ],
    );

    println!(
        "\n2. throughput: each HTTP client its own MCP session and connection (the callers of (e) share one \
         stdio session), calling echo in a loop; {:?} of calls first, then a {:?} window; CPU = utime+stime \
         over the window, % of one core (2 cores in all)\n",
        s.loop_warmup, s.window
    );
    let rows: Vec<Vec<String>> = r
        .throughput
        .iter()
        .map(|t| {
            let pct = |p: f64| format!("{p:.1} %");
            vec![
                t.label.clone(),
                format!("{:.0}", t.per_second()),
                us(t.stats.p50),
                us(t.stats.p99),
                t.errors.to_string(),
                if t.way == Way::Gateway { pct(t.cpu_hivehost) } else { "(idle)".to_owned() },
                pct(t.cpu_server),
                pct(t.cpu_bench),
                if t.way == Way::Gateway && t.cpu_hivehost > 0.0 {
                    format!("{:.0}", t.per_second() / (t.cpu_hivehost / 100.0))
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    table(
        &[
            "way",
            "calls/s",
            "p50",
            "p99",
            "errors",
            "CPU hivehost",
            "CPU echo server",
            "CPU bench clients",
            "calls/s per hivehost core",
        ],
        &rows,
    );
    println!(
        "(the hosted echo server, found by its marker before each gateway window: pid {})",
        r.hosted.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    );

    let best =
        r.throughput.iter().filter(|t| t.way == Way::Gateway).max_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    let added = gateway.p50.as_secs_f64() - direct.p50.as_secs_f64();
    let verdict = |met: bool| if met { "met" } else { "missed" };
    println!("\ntargets:");
    println!("- added by the gateway at p50: {:.0} µs; target < 300 µs: {}", added * 1e6, verdict(added < 300e-6));
    if let Some(best) = best {
        println!(
            "- gateway throughput: {:.0} calls/s at best ({} clients); target ≥ 6,000 calls/s (5× the 1.2k of \
             mcp-proxy and supergateway): {}",
            best.per_second(),
            best.clients,
            verdict(best.per_second() >= 6000.0)
        );
    }

    let m = r.memory;
    println!(
        "\n3. idle gateway sessions: {} opened (initialize only; the first {} in {:.2} s) and kept open, \
         then closed, {CYCLES} times; hivehost's VmRSS and open descriptors after {:?} of settling each time\n",
        m.sessions,
        m.sessions,
        m.open_time.as_secs_f64(),
        s.settle
    );
    let kib = |f: Footprint| format!("{} KiB", f.rss_kib);
    let per = |f: Footprint| format!("{:+.1} KiB", (f.rss_kib as f64 - m.before.rss_kib as f64) / m.sessions as f64);
    let mut rows = vec![vec!["before".to_owned(), kib(m.before), String::new(), m.before.fds.to_string()]];
    for (n, (open, closed)) in m.cycles.iter().enumerate() {
        rows.push(vec![format!("cycle {}: {} open", n + 1, m.sessions), kib(*open), per(*open), open.fds.to_string()]);
        rows.push(vec![format!("cycle {}: closed", n + 1), kib(*closed), per(*closed), closed.fds.to_string()]);
    }
    table(&["when", "VmRSS", "(VmRSS − before) / sessions", "open descriptors"], &rows);
    if let Some((open, _)) = m.cycles.first() {
        println!(
            "\nmemory per idle gateway session (first cycle): {:.1} KiB",
            (open.rss_kib as f64 - m.before.rss_kib as f64) / m.sessions as f64
        );
    }

    if !r.hops.is_empty() {
        println!(
            "\n4. a hop on this machine: one byte to a child process and back over two pipes, {} round trips per way, the ways taking turns; this side on CPU 0\n",
            r.hops[0].1.n
        );
        let rows: Vec<Vec<String>> =
            r.hops.iter().map(|(way, s)| vec![(*way).to_owned(), us(s.p50), us(s.p99), us(s.mean)]).collect();
        table(&["child process", "p50", "p99", "mean"], &rows);
    }

    println!(
        "\nstop: SIGTERM until exit {:.3} s, exit code {:?}, hosted processes left {}, hivehost log lines {}",
        r.stop.as_secs_f64(),
        r.exit_code,
        r.survivors,
        r.log_lines
    );
    println!("hivehost's warnings, errors and state changes (at most {NOTABLE}):");
    for line in &r.notable {
        println!("    {line}");
    }
}
