//! The fast path of `/servers/{id}/mcp` and `/mcp/gateway`: the requests a session only forwards
//! (a server's tools, resources, prompts and completions; the aggregate's tool calls) answered from
//! the HTTP handler itself, without rmcp's session machinery.
//!
//! rmcp's streamable HTTP service takes every POST of a 2025-11-25 session through the session's
//! worker task, the session's serve loop and a handler task of its own, and answers as an SSE
//! stream: about six task hand-offs in hivehost per call on top of the upstream hop, and most of
//! what the gateway added to a call (benches/README.md, "Gateway"). This path checks what rmcp
//! would check for such a request (the session exists; Host, Accept, Content-Type and the protocol
//! version), reads the message only as far as routing needs (method, id, `_meta`), sends it over
//! the server's upstream wire ([`actors::wire`]) from the connection's own task, and answers
//! `application/json` with the server's result as it wrote it, or an SSE stream once the server
//! reports progress. Everything else
//! (initialize, notifications, GET streams, DELETE, 2026-07-28 requests, anything malformed) goes
//! to rmcp's service untouched, which answers it or says what is wrong with it.
//!
//! The path keeps what the session would do for the requests it takes: the client's
//! `notifications/cancelled` and the session's DELETE cancel them upstream, progress reaches the
//! client under its own token, and a session busy only here is kept alive (rmcp closes a session
//! that hears nothing for `mcp_session_idle_timeout`) by a ping through it, at most five times per
//! timeout.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::McpLink;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use rmcp::model::{
    CallToolResult, ClientJsonRpcMessage, ClientRequest, ContentBlock, ErrorData, PingRequest, ProgressToken,
    ProtocolVersion, RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gateway::{Caller, Failure, ProgressOut, forward_raw};

type SessionId = Arc<str>;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// A session busy only on this path is pinged through rmcp, which closes a session after its idle
/// timeout without an event, at most this many times per timeout.
const TOUCHES_PER_IDLE_TIMEOUT: u32 = 5;

/// Session bookkeeping untouched for this many idle timeouts is dropped (its session has long
/// expired, or is busy only on rmcp's side, which needs none of it).
const FORGET_AFTER_IDLE_TIMEOUTS: u32 = 3;

/// The fast path of one server's endpoint.
pub(super) struct FastPath {
    route: Route,
    patience: Duration,
    sessions: Arc<LocalSessionManager>,
    allowed_hosts: Vec<String>,
    /// rmcp validates `Origin` under this config: such requests are left to it.
    checks_origin: bool,
    max_body: usize,
    /// How often at most a session busy only here is pinged through rmcp.
    touch_every: Duration,
    /// When its bookkeeping is dropped.
    forget_after: Duration,
    open: Mutex<HashMap<SessionId, SessionUse>>,
    pings: AtomicU64,
}

/// Where the fast path sends what it takes.
pub(super) enum Route {
    /// One server's endpoint: every request in [`FORWARDED`] goes to its link.
    Server(Arc<McpLink>),
    /// The aggregate: a `tools/call` of `server__tool` goes to that server's link as `tool`; the
    /// aggregate's own lists stay with rmcp's service.
    Aggregate(Arc<crate::App>),
}

impl Route {
    /// Whether a request of `method` with `params` is the fast path's (an aggregate call without
    /// a tool name is rmcp's to refuse).
    fn takes(&self, method: &str, params: Option<&Map<String, Value>>) -> bool {
        match self {
            Route::Server(_) => FORWARDED.contains(&method),
            Route::Aggregate(_) => {
                method == "tools/call" && params.and_then(|p| p.get("name")).is_some_and(Value::is_string)
            }
        }
    }
}

/// What the fast path keeps of one session.
#[derive(Default)]
struct SessionUse {
    /// When a ping last went through the session (`None`: never).
    touched: Option<Instant>,
    /// Its requests in flight here, by the client's id.
    calls: HashMap<RequestId, CancellationToken>,
}

/// What became of a request.
pub(super) enum Outcome {
    Answered(Response),
    /// Not the fast path's: for rmcp's service, as it came (the body re-attached if read).
    Pass(Request),
}

impl FastPath {
    pub(super) fn new(
        route: Route,
        patience: Duration,
        config: &StreamableHttpServerConfig,
        sessions: Arc<LocalSessionManager>,
    ) -> FastPath {
        // rmcp closes a session idle this long (`mcp_session_idle_timeout`).
        let idle = sessions.session_config.keep_alive.unwrap_or(Duration::from_secs(300));
        FastPath {
            route,
            patience,
            touch_every: idle / TOUCHES_PER_IDLE_TIMEOUT,
            forget_after: idle * FORGET_AFTER_IDLE_TIMEOUTS,
            sessions,
            allowed_hosts: config.allowed_hosts.clone(),
            // hivehost never asks rmcp to check an empty origin list (`mcp::http_config`).
            checks_origin: !config.allowed_origins.is_empty(),
            max_body: config.max_request_body_bytes,
            open: Mutex::new(HashMap::new()),
            pings: AtomicU64::new(0),
        }
    }

    /// Answers `request` if it is the fast path's, or gives it back for rmcp's service.
    pub(super) async fn serve(self: &Arc<Self>, request: Request) -> Outcome {
        let Some(session) = session_of(request.headers()) else {
            return Outcome::Pass(request);
        };
        if request.method() == Method::DELETE {
            // The session ends: so do its calls here. rmcp closes the session itself.
            self.end(&session);
            return Outcome::Pass(request);
        }
        if request.method() != Method::POST
            || !self.headers_fit(request.headers())
            || !self.sessions.has_session(&session).await.unwrap_or(false)
        {
            return Outcome::Pass(request);
        }
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, self.max_body).await {
            Ok(bytes) => bytes,
            Err(err) => {
                let message = format!(
                    "the request body could not be read, or is larger than the {} bytes allowed: {err}",
                    self.max_body
                );
                return Outcome::Answered(plain(StatusCode::PAYLOAD_TOO_LARGE, message));
            }
        };
        let pass = |parts, bytes: Bytes| Outcome::Pass(Request::from_parts(parts, Body::from(bytes)));
        let Ok(message) = serde_json::from_slice::<Incoming>(&bytes) else {
            return pass(parts, bytes);
        };
        if message.jsonrpc != "2.0" {
            return pass(parts, bytes);
        }
        let meta = message.params.as_ref().and_then(|p| p.get("_meta")).and_then(Value::as_object);
        match (message.id, message.method.as_str()) {
            // A request that names its own protocol version is a 2026-07-28 one: rmcp's.
            (Some(id), method)
                if self.route.takes(method, message.params.as_ref())
                    && !meta.is_some_and(|m| m.contains_key(PER_REQUEST_VERSION)) =>
            {
                let client_token =
                    meta.and_then(|m| m.get("progressToken")).and_then(|t| serde_json::from_value(t.clone()).ok());
                Outcome::Answered(self.call(session, id, message.method, message.params, client_token).await)
            }
            (None, "notifications/cancelled") => {
                let id = message
                    .params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
                match id {
                    Some(id) if self.cancel(&session, &id) => {
                        Outcome::Answered(plain(StatusCode::ACCEPTED, String::new()))
                    }
                    _ => pass(parts, bytes),
                }
            }
            _ => pass(parts, bytes),
        }
    }

    /// Whether the headers are those of a plain request of a 2025-11-25 (or older) session that
    /// rmcp would accept: otherwise rmcp's service judges it.
    fn headers_fit(&self, headers: &HeaderMap) -> bool {
        let version_fits = match headers.get(VERSION_HEADER).map(HeaderValue::to_str) {
            None => true,
            Some(Ok(version)) => {
                version < ProtocolVersion::V_2026_07_28.as_str()
                    && ProtocolVersion::KNOWN_VERSIONS.iter().any(|known| known.as_str() == version)
            }
            Some(Err(_)) => false,
        };
        version_fits
            && accepts_both(headers)
            && media_type(headers.get(header::CONTENT_TYPE)).is_some_and(|t| t.eq_ignore_ascii_case(JSON))
            && host_allowed(headers, &self.allowed_hosts)
            && !(self.checks_origin && headers.contains_key(header::ORIGIN))
    }

    /// Forwards one request and answers it: JSON, unless progress comes, then SSE.
    async fn call(
        self: &Arc<Self>,
        session: SessionId,
        id: RequestId,
        method: String,
        mut params: Option<Map<String, Value>>,
        client_token: Option<ProgressToken>,
    ) -> Response {
        let tool_call = method == "tools/call";
        let link = match &self.route {
            Route::Server(link) => link.clone(),
            Route::Aggregate(app) => {
                let name = params.as_ref().and_then(|p| p.get("name")).and_then(Value::as_str).unwrap_or_default();
                match super::aggregate::route_call(app, name).await {
                    Ok((link, tool)) => {
                        if let Some(params) = params.as_mut() {
                            params.insert("name".into(), Value::String(tool));
                        }
                        link
                    }
                    Err(failure) => return json(answer(&id, tool_call, Err(failure))),
                }
            }
        };
        let cancel = CancellationToken::new();
        let registered = self.register(&session, &id, &cancel);
        let (progress_tx, mut progress) = mpsc::unbounded_channel();
        let caller = Caller {
            progress: client_token.map(|token| (token, ProgressOut::Reply(progress_tx))),
            cancel: cancel.clone(),
        };
        let patience = self.patience;
        let mut forwarded = Box::pin(async move { forward_raw(&link, patience, &method, &mut params, caller).await });
        tokio::select! {
            biased;
            result = &mut forwarded => {
                let answer = answer(&id, tool_call, result);
                // Progress flushed just before the answer goes out first, in an SSE reply.
                let mut events = Vec::new();
                while let Ok(n) = progress.try_recv() {
                    events.push(notification(n));
                }
                if events.is_empty() {
                    return json(answer);
                }
                events.push(event(answer));
                let (tx, rx) = mpsc::unbounded_channel();
                for e in events {
                    let _ = tx.send(e);
                }
                sse(rx)
            }
            Some(first) = progress.recv() => {
                // The server reports progress: the answer becomes an SSE stream, fed by a task
                // that sees the call through (and cancels it if the client goes away).
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(notification(first));
                tokio::spawn(async move {
                    let _registered = registered;
                    let result = loop {
                        tokio::select! {
                            biased;
                            result = &mut forwarded => break result,
                            Some(n) = progress.recv() => {
                                let _ = tx.send(notification(n));
                            }
                            () = tx.closed(), if !cancel.is_cancelled() => cancel.cancel(),
                        }
                    };
                    while let Ok(n) = progress.try_recv() {
                        let _ = tx.send(notification(n));
                    }
                    let _ = tx.send(event(answer(&id, tool_call, result)));
                });
                sse(rx)
            }
        }
    }

    /// Notes a call in flight (until the guard drops) and keeps its session alive.
    fn register(self: &Arc<Self>, session: &SessionId, id: &RequestId, cancel: &CancellationToken) -> Registered {
        let now = Instant::now();
        let touch = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if !open.contains_key(session) {
                open.retain(|_, used| {
                    used.touched.is_some_and(|t| now - t < self.forget_after) || !used.calls.is_empty()
                });
            }
            let used = open.entry(session.clone()).or_default();
            used.calls.insert(id.clone(), cancel.clone());
            let due = used.touched.is_none_or(|t| now - t >= self.touch_every);
            if due {
                used.touched = Some(now);
            }
            due
        };
        if touch {
            self.touch(session.clone());
        }
        Registered { fast: self.clone(), session: session.clone(), id: id.clone() }
    }

    /// Pings through rmcp's session, which counts as the session's activity.
    fn touch(&self, session: SessionId) {
        let n = self.pings.fetch_add(1, Ordering::Relaxed);
        // A string id no client of this session chose: rmcp routes the answer by it.
        let id = RequestId::String(format!("hivehost-keepalive-{}-{n}", std::process::id()).into());
        let ping = ClientJsonRpcMessage::request(ClientRequest::PingRequest(PingRequest::default()), id);
        let sessions = self.sessions.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            if let Ok(stream) = sessions.create_stream(&session, ping).await {
                let mut stream = std::pin::pin!(stream);
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
            }
        });
    }

    /// Cancels a call of `session` in flight here; false if there is none by that id.
    fn cancel(&self, session: &SessionId, id: &RequestId) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get(session).and_then(|used| used.calls.get(id)) {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every call of `session` and forgets it.
    fn end(&self, session: &SessionId) {
        let ended = self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(session);
        for cancel in ended.into_iter().flat_map(|used| used.calls.into_values()) {
            cancel.cancel();
        }
    }
}

/// A call in flight; dropping it takes the call off its session's list.
struct Registered {
    fast: Arc<FastPath>,
    session: SessionId,
    id: RequestId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.fast.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = open.get_mut(&self.session) {
            used.calls.remove(&self.id);
        }
    }
}

/// The requests the gateway's sessions only forward upstream.
const FORWARDED: [&str; 8] = [
    "tools/call",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
];

/// The `_meta` key of a 2026-07-28 request's own protocol version.
const PER_REQUEST_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// A JSON-RPC message from a client, read only as far as routing needs.
#[derive(serde::Deserialize)]
struct Incoming {
    jsonrpc: String,
    #[serde(default)]
    id: Option<RequestId>,
    method: String,
    #[serde(default)]
    params: Option<Map<String, Value>>,
}

/// The answer to request `id`, as JSON text: as the gateway's sessions answer (its own failures in
/// a tool call are tool errors a model can read; the server's errors pass on as they are). The
/// server's result goes out as it wrote it.
fn answer(id: &RequestId, tool_call: bool, result: Result<Box<RawValue>, Failure>) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    let result = match result {
        Ok(result) => Ok(result.get().to_owned()),
        Err(Failure::Gateway(message)) if tool_call => {
            serde_json::to_string(&CallToolResult::error(vec![ContentBlock::text(message)]))
                .map_err(|err| ErrorData::internal_error(format!("the answer could not be serialized: {err}"), None))
        }
        Err(failure) => Err(failure.error()),
    };
    match result {
        Ok(result) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
        Err(error) => {
            let error = serde_json::to_string(&error).unwrap_or_else(|_| r#"{"code":-32603,"message":"?"}"#.into());
            format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
        }
    }
}

/// One progress notification as an SSE event.
fn notification(n: rmcp::model::ServerNotification) -> Bytes {
    match serde_json::to_string(&ServerJsonRpcMessage::notification(n)) {
        Ok(text) => event(text),
        Err(err) => {
            tracing::debug!(error = %err, "a progress notification could not be serialized");
            Bytes::new()
        }
    }
}

fn session_of(headers: &HeaderMap) -> Option<SessionId> {
    headers.get(SESSION_HEADER)?.to_str().ok().map(Arc::from)
}

/// The media type of a header value, without parameters.
fn media_type(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
    Some(value.split_once(';').map_or(value, |(essence, _)| essence).trim())
}

/// Whether `Accept` names both JSON and SSE, as the transport requires of a POST.
fn accepts_both(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        for item in value.to_str().unwrap_or_default().split(',') {
            let essence = item.split_once(';').map_or(item, |(essence, _)| essence).trim();
            json |= essence.eq_ignore_ascii_case(JSON);
            sse |= essence.eq_ignore_ascii_case(EVENT_STREAM);
        }
    }
    json && sse
}

/// Whether the `Host` header names an allowed host (with or without its port), as rmcp's DNS
/// rebinding check requires; anything unusual is left for rmcp to judge.
fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(name, _)| name),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.contains(':') { host } else { name }),
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(host))
}

fn plain(status: StatusCode, message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}

fn json(answer: String) -> Response {
    let mut response = Response::new(Body::from(answer));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// One SSE event carrying a message's JSON text.
fn event(data: String) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// An SSE answer of the events sent on `rx`, ending when its sender is done.
fn sse(rx: mpsc::UnboundedReceiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
