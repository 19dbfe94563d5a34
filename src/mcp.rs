//! hivehost's own MCP server: the hosting tools of shared/DESIGN.md, over stdio (`hivehost mcp`) and
//! streamable HTTP (`/mcp` on the serve port, behind the API token).
//!
//! A frontend like the HTTP API: every tool goes through the same `dashboard::Backend` methods of
//! [`App`], so both answer alike; a refusal is a tool error (`isError`) whose text says what was
//! wrong and what to do, never a protocol error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashboard::{Action, ApiError, Backend};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

pub mod aggregate;
mod fast;
pub mod gateway;

use crate::App;
use crate::package::IntakeLimits;
use crate::store::now_ms;

/// The hosting tools, over one [`App`].
#[derive(Clone)]
pub struct HostingTools {
    app: Arc<App>,
    counters: Arc<Counters>,
    tool_router: ToolRouter<Self>,
}

/// Tool calls made to hivehost's own MCP server, for `get_hosting_stats`.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    calls: AtomicU64,
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        Arc::new(Counters { started: Instant::now(), calls: AtomicU64::new(0) })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UploadArgs {
    /// The server's name; its id is derived from it (lowercase letters, digits, `-`, `_`).
    pub name: String,
    /// The package: a ZIP holding `server_config.json` and the code, base64-encoded.
    pub archive_base64: String,
    /// Overrides `command` of its `server_config.json` (an array; the first item `python`, `node` or `bash`).
    pub command: Option<Vec<String>>,
    /// Overrides `description`.
    pub description: Option<String>,
    /// Variables merged over `environment`.
    pub environment: Option<serde_json::Map<String, Value>>,
    /// Merged over `resource_limits` (`memory_mb`, `cpu_percent`, `max_processes`).
    pub resource_limits: Option<serde_json::Map<String, Value>>,
    /// Overrides `health_check_url`.
    pub health_check_url: Option<String>,
    /// Start it once deployed (default true).
    pub start: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ServerArgs {
    /// The server's id, as `list_mcp_servers` shows it.
    pub server_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteArgs {
    /// The server's id, as `list_mcp_servers` shows it.
    pub server_id: String,
    /// Kill it at once instead of stopping it gracefully (default false).
    pub force: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogsArgs {
    /// The server's id, as `list_mcp_servers` shows it.
    pub server_id: String,
    /// How many of the last lines (default 50, at most 10000).
    pub lines: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// Words that must all occur in an event's kind, message or server (`oom`, `restart*` for a
    /// prefix); matched literally, never as a query language. Omit for every event.
    pub query: Option<String>,
    /// Only this category: `infrastructure`, `monitoring`, `incidents` or `optimization`.
    pub category: Option<String>,
    /// Only events about this server.
    pub server_id: Option<String>,
    /// Only events newer than this long ago: a number and a unit, `90s`, `30m`, `2h`, `7d`.
    pub since: Option<String>,
    /// At most this many, newest first (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// `90s`, `30m`, `2h`, `7d` as milliseconds.
fn ago_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 =
        number.parse().map_err(|_| format!("since: `{text}` should be a number and a unit, such as 30m or 2h"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("since: unit `{unit}` is not one of s, m, h, d (as in 30m or 2h)")),
    };
    Ok(n.saturating_mul(unit_ms))
}

/// A tool's answer: the JSON as structured content and as text, or a tool error saying what to do.
fn answer(result: Result<Value, ApiError>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(wrap(value)),
        Err(err) => CallToolResult::structured_error(json!({ "error": { "code": err.code, "message": err.message } })),
    }
}

/// Structured content must be an object: a list goes under `items`.
fn wrap(value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        Value::Array(items) => json!({ "count": items.len(), "items": items }),
        other => json!({ "value": other }),
    }
}

#[tool_router(router = tool_router)]
impl HostingTools {
    pub fn new(app: Arc<App>, counters: Arc<Counters>) -> HostingTools {
        HostingTools { app, counters, tool_router: Self::tool_router() }
    }

    fn count(&self) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
    }

    #[tool(
        description = "Deploy an MCP server from a base64-encoded ZIP package (server_config.json plus code; requirements.txt or package.json are installed). Returns its id, scan findings and install outcome. The optional fields override the package's server_config.json."
    )]
    async fn upload_mcp_server(
        &self,
        Parameters(args): Parameters<UploadArgs>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.count();
        let limits = IntakeLimits::new(self.app.config().max_upload_size_bytes());
        let archive = match crate::package::decode_base64(&args.archive_base64, &limits) {
            Ok(bytes) => bytes,
            Err(err) => {
                return answer(Err(ApiError::new(
                    422,
                    err.rule(),
                    format!("archive_base64: {err}; send the ZIP file's bytes in standard base64"),
                )));
            }
        };
        let mut overrides = serde_json::Map::new();
        if let Some(command) = args.command {
            overrides.insert("command".into(), json!(command));
        }
        if let Some(description) = args.description {
            overrides.insert("description".into(), json!(description));
        }
        if let Some(environment) = args.environment {
            overrides.insert("environment".into(), Value::Object(environment));
        }
        if let Some(limits) = args.resource_limits {
            overrides.insert("resource_limits".into(), Value::Object(limits));
        }
        if let Some(url) = args.health_check_url {
            overrides.insert("health_check_url".into(), json!(url));
        }
        // Each step of the deploy (scan, install output) is a progress notification when the
        // client asked for them; a task sends them in order, the deploy never waits for it.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let notifier = context.meta.get_progress_token().map(|token| {
            let peer = context.peer.clone();
            tokio::spawn(async move {
                let mut step = 0.0;
                while let Some(message) = rx.recv().await {
                    step += 1.0;
                    let note = ProgressNotificationParam::new(token.clone(), step).with_message(message);
                    if peer.notify_progress(note).await.is_err() {
                        break;
                    }
                }
            })
        });
        let name = args.name.clone();
        let progress = move |line: &str| {
            tracing::info!(server = %name, "deploy: {line}");
            let _ = tx.send(line.to_owned());
        };
        let start = args.start.unwrap_or(true);
        let deployed = self.app.deploy(&args.name, archive, Value::Object(overrides), start, &progress).await;
        drop(progress);
        if let Some(notifier) = notifier {
            let _ = notifier.await;
        }
        answer(deployed.map(|d| crate::app::backend::deployed_view(&d)).map_err(crate::app::backend::deploy_error))
    }

    #[tool(description = "Start a stopped or failed server. Returns its status.")]
    async fn start_mcp_server(&self, Parameters(args): Parameters<ServerArgs>) -> CallToolResult {
        self.count();
        answer(Backend::control(self.app.as_ref(), args.server_id, Action::Start).await)
    }

    #[tool(
        description = "Stop a server: SIGTERM to its whole process tree, then SIGKILL after its shutdown_timeout. Returns its status."
    )]
    async fn stop_mcp_server(&self, Parameters(args): Parameters<ServerArgs>) -> CallToolResult {
        self.count();
        answer(Backend::control(self.app.as_ref(), args.server_id, Action::Stop).await)
    }

    #[tool(description = "Restart a server (stop, then start). Returns its status.")]
    async fn restart_mcp_server(&self, Parameters(args): Parameters<ServerArgs>) -> CallToolResult {
        self.count();
        answer(Backend::control(self.app.as_ref(), args.server_id, Action::Restart).await)
    }

    #[tool(
        description = "Delete a server: stop it (force=true kills it at once), remove its code, state and logs. Its events stay on record."
    )]
    async fn delete_mcp_server(&self, Parameters(args): Parameters<DeleteArgs>) -> CallToolResult {
        self.count();
        answer(Backend::delete(self.app.as_ref(), args.server_id, args.force.unwrap_or(false)).await)
    }

    #[tool(
        description = "One server's status: state, pid, restarts, last exit, health, resource use, and each sandbox layer."
    )]
    async fn get_mcp_server_status(&self, Parameters(args): Parameters<ServerArgs>) -> CallToolResult {
        self.count();
        answer(Backend::server(self.app.as_ref(), args.server_id).await)
    }

    #[tool(description = "Every hosted server with its status.")]
    async fn list_mcp_servers(&self) -> CallToolResult {
        self.count();
        answer(Backend::servers(self.app.as_ref()).await)
    }

    #[tool(description = "The last lines of a server's output (stderr, and stdout for http servers).")]
    async fn get_mcp_server_logs(&self, Parameters(args): Parameters<LogsArgs>) -> CallToolResult {
        self.count();
        let lines = args.lines.unwrap_or(50).clamp(1, 10_000);
        answer(Backend::logs(self.app.as_ref(), args.server_id, lines).await)
    }

    #[tool(
        description = "Recommendations from each server's stored history (a day of metrics, exits and health checks): memory limits right-sized from p99 memory with headroom, CPU quotas against observed saturation, steady memory growth, crash loops by dominant cause, flapping health. Each carries its evidence and a server_config.json change, and is recorded as an optimization event the first time it is given (the same advice again within the day is not recorded twice)."
    )]
    async fn optimize_server_resources(&self) -> CallToolResult {
        self.count();
        let result = self.app.optimize_resources().await;
        answer(
            result
                .map(|recs| json!({ "count": recs.len(), "recommendations": recs }))
                .map_err(|e| ApiError::new(500, "internal", format!("reading the history failed: {e:#}"))),
        )
    }

    #[tool(
        description = "Search what happened: stored events (deploys, starts, exits, restarts, incidents such as OOM kills, recommendations) by words, category, server and age, newest first."
    )]
    async fn search_hosting_events(&self, Parameters(args): Parameters<SearchArgs>) -> CallToolResult {
        self.count();
        answer(self.search(args).await)
    }

    #[tool(
        description = "Platform statistics: servers by state and by language, CPU and memory totals and per server, restarts in the last hour, uptime, tool calls, the store's size."
    )]
    async fn get_hosting_stats(&self) -> CallToolResult {
        self.count();
        answer(self.stats().await)
    }
}

impl HostingTools {
    async fn search(&self, args: SearchArgs) -> Result<Value, ApiError> {
        let refused = |message: String| ApiError::new(422, "invalid_argument", message);
        let category = match args.category.as_deref() {
            Some(name) => Some(name.parse::<crate::store::Category>().map_err(|e| refused(format!("category: {e}")))?),
            None => None,
        };
        let since_ms = match args.since.as_deref() {
            Some(text) => Some(now_ms() - ago_ms(text).map_err(refused)?),
            None => None,
        };
        let search = crate::store::EventSearch {
            query: args.query,
            category,
            server: args.server_id,
            since_ms,
            limit: args.limit.unwrap_or(50).clamp(1, 1000),
        };
        let events = self.app.search_events(search).await.map_err(|e| refused(e.to_string()))?;
        Ok(json!({ "count": events.len(), "events": events }))
    }

    async fn stats(&self) -> Result<Value, ApiError> {
        let internal = |e: String| ApiError::new(500, "internal", e);
        let statuses = self.app.supervisor().list().await.map_err(|e| internal(e.to_string()))?;
        let records = self.app.store().servers().await.map_err(|e| internal(e.to_string()))?;
        let now = now_ms();
        let restarts = self.app.store().restarts(None, now - 3_600_000).await.map_err(|e| internal(e.to_string()))?;
        let mut by_state = serde_json::Map::new();
        let mut by_language = serde_json::Map::new();
        let (mut cpu, mut rss) = (0.0_f64, 0_u64);
        let mut per_server = Vec::new();
        let mut gateway = actors::LinkStats::default();
        for status in &statuses {
            gateway.sessions += status.gateway.sessions;
            gateway.sessions_total += status.gateway.sessions_total;
            gateway.calls += status.gateway.calls;
            gateway.failed_calls += status.gateway.failed_calls;
            let state = status.state.to_string();
            let n = by_state.get(&state).and_then(Value::as_u64).unwrap_or(0);
            by_state.insert(state, json!(n + 1));
            let language = records
                .iter()
                .find(|r| r.id == status.id)
                .and_then(|r| r.spec.get("command")?.get(0)?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into());
            let n = by_language.get(&language).and_then(Value::as_u64).unwrap_or(0);
            by_language.insert(language, json!(n + 1));
            if let Some(usage) = status.usage {
                cpu += f64::from(usage.cpu_percent);
                rss += usage.rss_bytes;
            }
            per_server.push(json!({
                "id": status.id,
                "state": status.state.to_string(),
                "cpu_percent": status.usage.map(|u| u.cpu_percent),
                "rss_bytes": status.usage.map(|u| u.rss_bytes),
                "processes": status.usage.map(|u| u.processes),
                "restarts": status.restarts,
                "restarts_last_hour": restarts.iter().filter(|r| r.server == status.id).count(),
                "gateway_sessions": status.gateway.sessions,
                "gateway_calls": status.gateway.calls,
                "last_gateway_call_ms": status.gateway.last_call_ms,
            }));
        }
        let uptime = self.counters.started.elapsed().as_secs_f64();
        let calls = self.counters.calls.load(Ordering::Relaxed);
        let store = self.app.store().stats();
        Ok(json!({
            "servers": statuses.len(),
            "by_state": by_state,
            "by_language": by_language,
            "cpu_percent_total": cpu,
            "rss_bytes_total": rss,
            "per_server": per_server,
            "restarts_last_hour": restarts.len(),
            "uptime_seconds": uptime,
            "tool_calls": calls,
            "tool_calls_per_second": if uptime > 0.0 { calls as f64 / uptime } else { 0.0 },
            "gateway": {
                "sessions": gateway.sessions,
                "sessions_total": gateway.sessions_total,
                "calls": gateway.calls,
                "failed_calls": gateway.failed_calls,
                "calls_per_second": if uptime > 0.0 { gateway.calls as f64 / uptime } else { 0.0 },
            },
            "store": { "db_bytes": store.db_bytes, "wal_bytes": store.wal_bytes },
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HostingTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hivehost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "hivehost hosts MCP servers: upload a ZIP package with upload_mcp_server, then start, stop, inspect and delete them; get_hosting_stats for the platform as a whole.",
            )
    }
}

/// The next message of `rx` that `keep` accepts, past what a slow receiver missed; `None` once
/// the channel is closed. Every relay of the gateway reads its broadcast channel this way.
pub(crate) async fn next_where<T: Clone>(
    rx: &mut tokio::sync::broadcast::Receiver<T>,
    keep: impl Fn(&T) -> bool,
) -> Option<T> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(message) if keep(&message) => return Some(message),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return None,
        }
    }
}

/// The streamable HTTP settings of every MCP endpoint: requests may be as large as a base64
/// upload of the largest package the config accepts; the `Host` header must name a loopback host
/// or the configured `dashboard.host` (DNS rebinding).
pub(crate) fn http_config(
    config: &config::HostConfig,
    cancel: tokio_util::sync::CancellationToken,
) -> rmcp::transport::streamable_http_server::StreamableHttpServerConfig {
    let max_upload = usize::try_from(config.max_upload_size_bytes()).unwrap_or(usize::MAX);
    let max_body = max_upload.div_ceil(3).saturating_mul(4).saturating_add(1 << 20);
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let configured = config.dashboard.host.trim_matches(['[', ']']).to_owned();
    if !hosts.contains(&configured) {
        hosts.push(configured);
    }
    rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(max_body)
        .with_allowed_hosts(hosts)
}

/// A session manager for an MCP endpoint: it closes a session idle for the configured
/// `mcp_session_idle_timeout`.
pub(crate) fn session_manager(
    config: &config::HostConfig,
) -> rmcp::transport::streamable_http_server::session::local::LocalSessionManager {
    let mut sessions = rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(config.mcp_session_idle_timeout);
    sessions
}

/// The hosting tools over streamable HTTP, for `/mcp` (the caller puts it behind the token).
pub fn http_service(
    app: Arc<App>,
    counters: Arc<Counters>,
    cancel: tokio_util::sync::CancellationToken,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    HostingTools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let config = http_config(app.config(), cancel);
    let sessions = Arc::new(session_manager(app.config()));
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(HostingTools::new(app.clone(), counters.clone())),
        sessions,
        config,
    )
}

/// The MCP routes of the serve port, each behind the API token: the hosting tools at `/mcp`, the
/// aggregate gateway at `/mcp/gateway`, and each hosted stdio server at `/servers/{id}/mcp`.
pub fn router(
    app: Arc<App>,
    counters: Arc<Counters>,
    cancel: tokio_util::sync::CancellationToken,
    token: dashboard::Token,
) -> axum::Router {
    let gateway = gateway::Gateway::new(app.clone(), cancel.child_token());
    let aggregate = aggregate::Aggregate::new(app.clone(), gateway.patience());
    let (service, fast) = aggregate.service(cancel.child_token());
    let all = axum::routing::any(move |request: axum::extract::Request| {
        let (service, fast) = (service.clone(), fast.clone());
        async move { fast_then(&fast, &service, request).await }
    });
    let routes = axum::Router::new()
        .route_service("/mcp", http_service(app, counters, cancel.child_token()))
        .route("/mcp/gateway", all)
        .route("/servers/{id}/mcp", axum::routing::any(per_server).with_state(gateway));
    dashboard::protect(routes, token)
}

/// `/servers/{id}/mcp`: the request goes to that server's proxy service.
async fn per_server(
    axum::extract::State(gateway): axum::extract::State<Arc<gateway::Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match gateway.endpoint(&id).await {
        Ok(endpoint) => fast_then(&endpoint.fast, &endpoint.service, request).await,
        Err(err @ gateway::GatewayError::NotFound(_)) => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": "not_found", "message": err.to_string()}})),
        )
            .into_response(),
        Err(err) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"code": "unavailable", "message": err.to_string()}})),
        )
            .into_response(),
    }
}

/// Answers `request` on the fast path if it is the fast path's, else through rmcp's `service`.
async fn fast_then<S, M>(
    fast: &Arc<fast::FastPath>,
    service: &rmcp::transport::streamable_http_server::StreamableHttpService<S, M>,
    request: axum::extract::Request,
) -> axum::response::Response
where
    S: rmcp::ServerHandler + Send + 'static,
    M: rmcp::transport::streamable_http_server::session::SessionManager,
{
    match fast.serve(request).await {
        fast::Outcome::Answered(response) => response,
        fast::Outcome::Pass(request) => service.handle(request).await.map(axum::body::Body::new),
    }
}

/// Serves the hosting tools over this process's stdin and stdout until the client goes away:
/// through tokio's pipe driver when both are pipes (as MCP clients launch a stdio server), with no
/// hand-off to a blocking thread per read and write; otherwise through tokio's blocking stdio.
pub async fn serve_stdio(app: Arc<App>, counters: Arc<Counters>) {
    use rmcp::ServiceExt;
    match HostingTools::new(app, counters).serve(rmcp::transport::stdio_pipes()).await {
        Ok(service) => {
            if let Err(err) = service.waiting().await {
                tracing::warn!(error = %err, "the stdio MCP session ended with an error");
            }
        }
        Err(err) => tracing::error!(error = %err, "the stdio MCP session could not start"),
    }
}
