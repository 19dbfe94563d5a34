//! The fast path of `/servers/{id}/mcp`: the requests a session only forwards (tools, resources,
//! prompts, completions) answered from the HTTP handler itself, without rmcp's session machinery.
//!
//! rmcp's streamable HTTP service takes every POST of a 2025-11-25 session through the session's
//! worker task, the session's serve loop and a handler task of its own, and answers as an SSE
//! stream: about six task hand-offs in hivehost per call on top of the upstream hop, and most of
//! what the gateway added to a call (benches/README.md, "Gateway"). This path checks what rmcp
//! would check for such a request (the session exists; Host, Accept, Content-Type and the protocol
//! version), sends it over the server's upstream session from the connection's own task, and
//! answers `application/json`, or an SSE stream once the server reports progress. Everything else
//! (initialize, notifications, GET streams, DELETE, 2026-07-28 requests, anything malformed) goes
//! to rmcp's service untouched, which answers it or says what is wrong with it.
//!
//! The path keeps what the session would do for the requests it takes: the client's
//! `notifications/cancelled` and the session's DELETE cancel them upstream, progress reaches the
//! client under its own token, and a session busy only here is kept alive (rmcp closes a session
//! that hears nothing for five minutes) by a ping through it at most once a minute.

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
    CallToolResult, ClientJsonRpcMessage, ClientNotification, ClientRequest, ContentBlock, GetMeta, PingRequest,
    ProtocolVersion, RequestId, ServerJsonRpcMessage, ServerResult,
};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gateway::{Caller, Failure, ProgressOut, forward_on};

type SessionId = Arc<str>;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// How often at most a session busy only on this path is pinged through rmcp, which closes a
/// session after five minutes without an event.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Session bookkeeping untouched for this long is dropped (its session has long expired, or is
/// busy only on rmcp's side, which needs none of it).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The fast path of one server's endpoint.
pub(super) struct FastPath {
    link: Arc<McpLink>,
    patience: Duration,
    sessions: Arc<LocalSessionManager>,
    allowed_hosts: Vec<String>,
    /// rmcp validates `Origin` under this config: such requests are left to it.
    checks_origin: bool,
    max_body: usize,
    open: Mutex<HashMap<SessionId, SessionUse>>,
    pings: AtomicU64,
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
        link: Arc<McpLink>,
        patience: Duration,
        config: &StreamableHttpServerConfig,
        sessions: Arc<LocalSessionManager>,
    ) -> FastPath {
        FastPath {
            link,
            patience,
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
        match serde_json::from_slice::<ClientJsonRpcMessage>(&bytes) {
            Ok(ClientJsonRpcMessage::Request(request))
                if forwarded(&request.request) && request.request.get_meta().protocol_version().is_none() =>
            {
                Outcome::Answered(self.call(session, request.id, request.request).await)
            }
            Ok(ClientJsonRpcMessage::Notification(notification)) => match notification.notification {
                ClientNotification::CancelledNotification(cancelled)
                    if cancelled.params.request_id.as_ref().is_some_and(|id| self.cancel(&session, id)) =>
                {
                    Outcome::Answered(plain(StatusCode::ACCEPTED, String::new()))
                }
                _ => pass(parts, bytes),
            },
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
    async fn call(self: &Arc<Self>, session: SessionId, id: RequestId, request: ClientRequest) -> Response {
        let tool_call = matches!(request, ClientRequest::CallToolRequest(_));
        let cancel = CancellationToken::new();
        let registered = self.register(&session, &id, &cancel);
        let (progress_tx, mut progress) = mpsc::unbounded_channel();
        let caller = Caller {
            progress: request.get_meta().get_progress_token().map(|token| (token, ProgressOut::Reply(progress_tx))),
            cancel: cancel.clone(),
        };
        let fast = self.clone();
        let mut forwarded = Box::pin(async move { forward_on(&fast.link, fast.patience, request, caller).await });
        tokio::select! {
            biased;
            result = &mut forwarded => {
                let answer = answer(id, tool_call, result);
                // Progress flushed just before the answer goes out first, in an SSE reply.
                let mut events = Vec::new();
                while let Ok(n) = progress.try_recv() {
                    events.push(event(&ServerJsonRpcMessage::notification(n)));
                }
                if events.is_empty() {
                    return json(&answer);
                }
                events.push(event(&answer));
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
                let _ = tx.send(event(&ServerJsonRpcMessage::notification(first)));
                tokio::spawn(async move {
                    let _registered = registered;
                    let result = loop {
                        tokio::select! {
                            biased;
                            result = &mut forwarded => break result,
                            Some(n) = progress.recv() => {
                                let _ = tx.send(event(&ServerJsonRpcMessage::notification(n)));
                            }
                            () = tx.closed(), if !cancel.is_cancelled() => cancel.cancel(),
                        }
                    };
                    while let Ok(n) = progress.try_recv() {
                        let _ = tx.send(event(&ServerJsonRpcMessage::notification(n)));
                    }
                    let _ = tx.send(event(&answer(id, tool_call, result)));
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
                open.retain(|_, used| used.touched.is_some_and(|t| now - t < FORGET_AFTER) || !used.calls.is_empty());
            }
            let used = open.entry(session.clone()).or_default();
            used.calls.insert(id.clone(), cancel.clone());
            let due = used.touched.is_none_or(|t| now - t >= TOUCH_EVERY);
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
fn forwarded(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::CallToolRequest(_)
            | ClientRequest::ListToolsRequest(_)
            | ClientRequest::ListResourcesRequest(_)
            | ClientRequest::ListResourceTemplatesRequest(_)
            | ClientRequest::ReadResourceRequest(_)
            | ClientRequest::ListPromptsRequest(_)
            | ClientRequest::GetPromptRequest(_)
            | ClientRequest::CompleteRequest(_)
    )
}

/// The answer to request `id`: as the gateway's sessions answer (its own failures in a tool call
/// are tool errors a model can read; the server's errors pass on as they are).
fn answer(id: RequestId, tool_call: bool, result: Result<ServerResult, Failure>) -> ServerJsonRpcMessage {
    match result {
        Ok(result) => ServerJsonRpcMessage::response(result, id),
        Err(Failure::Gateway(message)) if tool_call => ServerJsonRpcMessage::response(
            ServerResult::CallToolResult(CallToolResult::error(vec![ContentBlock::text(message)])),
            id,
        ),
        Err(failure) => ServerJsonRpcMessage::error(failure.error(), Some(id)),
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

fn json(message: &ServerJsonRpcMessage) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
            response
        }
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("the answer could not be serialized: {err}")),
    }
}

/// One SSE event carrying `message`.
fn event(message: &ServerJsonRpcMessage) -> Bytes {
    let data = serde_json::to_string(message).unwrap_or_else(|err| {
        format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32603,"message":"the answer could not be serialized: {err}"}}}}"#
        )
    });
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
