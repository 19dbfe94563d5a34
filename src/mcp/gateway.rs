//! The gateway: every hosted stdio server as an MCP server of its own at `/servers/{id}/mcp`
//! (streamable HTTP, both protocol generations), forwarded over the one upstream session its
//! server actor holds on the child's stdin and stdout.
//!
//! Each client session is a [`ServerProxy`]. It forwards tools, resources, prompts, completions
//! and logging requests over the upstream wire ([`actors::wire`]) under the wire's own request ids
//! (so clients' ids never meet),
//! relays the progress of its own requests under its own progress tokens, passes the server's
//! logging and list-changed notifications on, and cancels the upstream request when its client
//! cancels or goes away. While the server restarts, a request waits on the link for the next
//! incarnation up to [`Gateway::patience`], then fails saying why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::wire::Sent;
use actors::{LinkState, McpLink, Upstream, WireError};
#[allow(deprecated, reason = "logging and resource subscriptions are still forwarded for 2025-11-25 clients")]
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotification,
    CancelledNotificationParam, ClientNotification, ClientRequest, CompleteRequest, CompleteRequestParams,
    CompleteResult, ContentBlock, ErrorCode, GetPromptRequest, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressToken, ReadResourceRequest,
    ReadResourceRequestParams, ReadResourceResponse, RequestId, ServerCapabilities, ServerConfig, ServerNotification,
    ServerResult, SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServerHandler};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::fast::{FastPath, Route};
use super::next_where;
use crate::App;

/// How long a request waits for a restarting server before it fails.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

type ProxyService = StreamableHttpService<ServerProxy, LocalSessionManager>;

/// The per-server MCP endpoints, made when first asked for.
pub struct Gateway {
    app: Arc<App>,
    cancel: CancellationToken,
    patience: Duration,
    endpoints: Mutex<HashMap<String, Endpoint>>,
}

/// One server's `/servers/{id}/mcp`: rmcp's streamable HTTP service for sessions and everything
/// else, and the fast path for the calls of those sessions.
#[derive(Clone)]
pub struct Endpoint {
    link: Arc<McpLink>,
    pub(super) service: ProxyService,
    pub(super) fast: Arc<FastPath>,
}

/// Why the gateway has no endpoint for a server.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no server {0}; list_mcp_servers shows the ids")]
    NotFound(String),
    #[error("the supervisor did not answer: {0}")]
    Supervisor(String),
}

impl Gateway {
    pub fn new(app: Arc<App>, cancel: CancellationToken) -> Arc<Gateway> {
        Arc::new(Gateway { app, cancel, patience: DEFAULT_PATIENCE, endpoints: Mutex::new(HashMap::new()) })
    }

    /// How long a request waits for a restarting server.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// The endpoint of server `id`.
    pub async fn endpoint(&self, id: &str) -> Result<Endpoint, GatewayError> {
        if let Some(endpoint) = self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            // A deleted server's link stays down for good; a server added again has a new one.
            if !endpoint.link.is_down() {
                return Ok(endpoint.clone());
            }
        }
        let link = self.app.supervisor().link(id).await.map_err(|err| match err {
            actors::ActorsError::NotFound(id) => GatewayError::NotFound(id),
            other => GatewayError::Supervisor(other.to_string()),
        })?;
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = endpoints.get(id)
            && Arc::ptr_eq(&known.link, &link)
        {
            return Ok(known.clone());
        }
        let endpoint = endpoint(link, self.patience, self.app.config(), self.cancel.child_token());
        endpoints.insert(id.to_owned(), endpoint.clone());
        Ok(endpoint)
    }
}

/// The endpoint of one server's link.
fn endpoint(
    link: Arc<McpLink>,
    patience: Duration,
    config: &config::HostConfig,
    cancel: CancellationToken,
) -> Endpoint {
    let http = super::http_config(config, cancel);
    let sessions = Arc::new(super::session_manager(config));
    let fast = Arc::new(FastPath::new(Route::Server(link.clone()), patience, &http, sessions.clone()));
    let proxied = link.clone();
    let service = StreamableHttpService::new(move || Ok(ServerProxy::new(proxied.clone(), patience)), sessions, http);
    Endpoint { link, service, fast }
}

/// One client session of one hosted server.
pub struct ServerProxy {
    link: Arc<McpLink>,
    patience: Duration,
    /// Counts this session while it lives (set by `initialize`; stateless requests are not sessions).
    session: Mutex<Option<actors::link::SessionGuard>>,
    /// Passes the server's notifications on to this session's client.
    relay: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ServerProxy {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.lock().unwrap_or_else(|p| p.into_inner()).take() {
            relay.abort();
        }
    }
}

impl ServerProxy {
    pub fn new(link: Arc<McpLink>, patience: Duration) -> ServerProxy {
        ServerProxy { link, patience, session: Mutex::new(None), relay: Mutex::new(None) }
    }

    /// Forwards `request` upstream and waits for its answer, relaying its progress and cancelling
    /// it upstream if the client cancels or goes away.
    async fn forward(&self, request: ClientRequest, ctx: &RequestContext<RoleServer>) -> Result<ServerResult, Failure> {
        forward_on(&self.link, self.patience, request, Caller::of(ctx)).await
    }
}

/// Who a forwarded request answers to: where its progress goes, and what cancels it.
pub(super) struct Caller {
    /// The client's progress token, and where progress under it goes.
    pub(super) progress: Option<(ProgressToken, ProgressOut)>,
    /// Cancelled when the client cancels the request or goes away.
    pub(super) cancel: CancellationToken,
}

impl Caller {
    /// A request an rmcp session of the gateway received.
    pub(super) fn of(ctx: &RequestContext<RoleServer>) -> Caller {
        Caller {
            progress: ctx.meta.get_progress_token().map(|token| (token, ProgressOut::Session(ctx.peer.clone()))),
            cancel: ctx.ct.clone(),
        }
    }
}

/// Where a forwarded request's progress goes.
pub(super) enum ProgressOut {
    /// To the client's session, through rmcp.
    Session(Peer<RoleServer>),
    /// Into the answer of the request's own HTTP POST (the fast path, `super::fast`).
    Reply(tokio::sync::mpsc::UnboundedSender<ServerNotification>),
}

/// Forwards `request` over `link`'s live session (see [`forward_raw`]) and reads the result.
pub(super) async fn forward_on(
    link: &McpLink,
    patience: Duration,
    request: ClientRequest,
    caller: Caller,
) -> Result<ServerResult, Failure> {
    let (method, mut params) = match serde_json::to_value(&request) {
        Ok(Value::Object(mut request)) => {
            let method = match request.remove("method") {
                Some(Value::String(method)) => method,
                _ => return Err(Failure::Gateway("a request without a method".into())),
            };
            let params = match request.remove("params") {
                Some(Value::Object(params)) => Some(params),
                _ => None,
            };
            (method, params)
        }
        Ok(_) => return Err(Failure::Gateway("a request that is not a JSON object".into())),
        Err(err) => return Err(Failure::Gateway(format!("the request could not be written as JSON: {err}"))),
    };
    let raw = forward_raw(link, patience, &method, &mut params, caller).await?;
    serde_json::from_str(raw.get())
        .map_err(|err| Failure::Gateway(format!("server {}: its answer could not be read: {err}", link.id())))
}

/// Forwards a request of `method` with `params` over `link`'s live session, waiting up to
/// `patience` for one, and gives back the server's result as it wrote it. A request that could not
/// even be written (the process had just died) goes to the next incarnation instead: it never
/// reached the server, so sending it again cannot run it twice.
pub(super) async fn forward_raw(
    link: &McpLink,
    patience: Duration,
    method: &str,
    params: &mut Option<Map<String, Value>>,
    mut caller: Caller,
) -> Result<Box<RawValue>, Failure> {
    let mut up = link.upstream(patience).await.map_err(|err| Failure::Gateway(err.to_string()))?;
    let mut result = forward_to(&up, method, params, &mut caller).await;
    if matches!(result, Err(Miss::Wire(WireError::NotSent(_)))) {
        up = link.upstream_after(up.generation, patience).await.map_err(|err| Failure::Gateway(err.to_string()))?;
        result = forward_to(&up, method, params, &mut caller).await;
    }
    link.count_call(result.is_ok());
    result.map_err(|err| Failure::of(err, link.id(), up.generation))
}

/// Why one attempt at a forwarded request has no result.
enum Miss {
    Wire(WireError),
    Cancelled,
}

/// Why a forwarded request has no result.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server answered with an error: passed on as it is.
    Server(ErrorData),
    /// The gateway could not get an answer (the server is down, restarting, or died mid-call).
    Gateway(String),
}

impl Failure {
    fn of(miss: Miss, id: &str, generation: u64) -> Failure {
        match miss {
            Miss::Wire(WireError::Server(err)) => Failure::Server(err),
            Miss::Wire(WireError::Closed | WireError::NotSent(_)) => Failure::Gateway(format!(
                "server {id} stopped during the call (its incarnation {generation} ended); hivehost restarts it if its restart policy allows: call again, or see get_mcp_server_status and get_mcp_server_logs"
            )),
            Miss::Wire(err @ WireError::Garbled(_)) => Failure::Gateway(format!("server {id}: {err}")),
            Miss::Cancelled => {
                Failure::Gateway(format!("the call to server {id} was cancelled: the client cancelled it or went away"))
            }
        }
    }

    /// As a protocol error.
    pub(super) fn error(self) -> ErrorData {
        match self {
            Failure::Server(err) => err,
            Failure::Gateway(message) => ErrorData::new(ErrorCode::INTERNAL_ERROR, message, None),
        }
    }
}

/// A tool call's answer from a forwarded result: the gateway's own failures are tool errors a
/// model can read; the server's protocol errors stay protocol errors.
pub(super) fn tool_response(result: Result<ServerResult, Failure>) -> Result<CallToolResponse, ErrorData> {
    match result {
        Ok(ServerResult::CallToolResult(result)) => Ok(CallToolResponse::Complete(result)),
        Ok(ServerResult::EmptyResult(_)) => Ok(CallToolResponse::Complete(CallToolResult::success(Vec::new()))),
        Ok(other) => Err(unexpected(other)),
        Err(Failure::Server(err)) => Err(err),
        Err(Failure::Gateway(message)) => {
            Ok(CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(message)])))
        }
    }
}

/// Passes a forwarded request's progress on under the client's own token.
async fn pass_on(
    out: &ProgressOut,
    client_token: &ProgressToken,
    mut progress: rmcp::model::ProgressNotificationParam,
) {
    progress.progress_token = client_token.clone();
    let n = ServerNotification::ProgressNotification(rmcp::model::ProgressNotification::new(progress));
    match out {
        ProgressOut::Session(client) => {
            let _ = client.send_notification(n).await;
        }
        ProgressOut::Reply(reply) => {
            let _ = reply.send(n);
        }
    }
}

/// Forwards one request over `up`, relaying progress under the caller's token and cancelling
/// upstream when the caller's token is cancelled (the client's `notifications/cancelled`, or its
/// session ending).
async fn forward_to(
    up: &Upstream,
    method: &str,
    params: &mut Option<Map<String, Value>>,
    caller: &mut Caller,
) -> Result<Box<RawValue>, Miss> {
    let Sent { id, mut answer, mut progress } = up.wire.send(method, params).await.map_err(Miss::Wire)?;
    let mut guard = CancelOnDrop { peer: up.peer.clone(), id: Some(id) };
    let result = loop {
        tokio::select! {
            result = answer.get() => {
                guard.id = None;
                break result.map_err(Miss::Wire);
            }
            () = caller.cancel.cancelled() => break Err(Miss::Cancelled),
            Some(p) = progress.recv() => {
                if let Some((token, out)) = &caller.progress {
                    pass_on(out, token, p).await;
                }
            }
        }
    };
    // The wire hands over a request's lines in the order the server wrote them: the progress sent
    // before the answer is all here now, and goes out before the answer does.
    while let Ok(p) = progress.try_recv() {
        if let Some((token, out)) = &caller.progress {
            pass_on(out, token, p).await;
        }
    }
    result
}

/// Sends `notifications/cancelled` upstream for a request abandoned before its answer.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let peer = self.peer.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let why = "the gateway's client cancelled it or went away".to_owned();
                let notification = ClientNotification::CancelledNotification(CancelledNotification::new(
                    CancelledNotificationParam::new(Some(id), Some(why)),
                ));
                let _ = peer.send_notification(notification).await;
            });
        }
    }
}

/// The capabilities the gateway passes on: tools, resources, prompts, completions and logging,
/// as the server declared them; nothing it cannot forward (tasks, extensions, experimental).
pub(super) fn forwarded_capabilities(of: &ServerCapabilities) -> ServerCapabilities {
    let mut caps = ServerCapabilities::default();
    caps.tools = of.tools.clone();
    caps.resources = of.resources.clone();
    caps.prompts = of.prompts.clone();
    caps.completions = of.completions.clone();
    caps.logging = of.logging.clone();
    caps
}

/// The server as its clients see it: what it said in its handshake, or, before its first one, a
/// server offering tools.
fn server_config(link: &McpLink, up: Option<&Upstream>) -> ServerConfig {
    let up = match up {
        Some(up) => Some(up.clone()),
        None => match link.state() {
            LinkState::Up(up) => Some(up),
            _ => None,
        },
    };
    match up {
        Some(up) => {
            let implementation =
                up.info.server_info.clone().unwrap_or_else(|| Implementation::new(link.id(), "unknown"));
            let mut config =
                ServerConfig::new(forwarded_capabilities(&up.info.capabilities)).with_server_info(implementation);
            config.instructions = up.info.instructions.clone();
            config
        }
        None => ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(link.id(), "unknown")),
    }
}

macro_rules! forward {
    ($self:ident, $ctx:ident, $request:expr, $Res:ident) => {
        match $self.forward($request, &$ctx).await.map_err(Failure::error)? {
            ServerResult::$Res(result) => Ok(result.into()),
            other => Err(unexpected(other)),
        }
    };
}

/// A `*/list` request with the client's cursor.
fn listing<M: Default>(
    params: Option<PaginatedRequestParams>,
) -> rmcp::model::RequestOptionalParam<M, PaginatedRequestParams> {
    rmcp::model::RequestOptionalParam { method: M::default(), params, extensions: Default::default() }
}

pub(super) fn unexpected(result: ServerResult) -> ErrorData {
    ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        format!("the server answered with an unexpected result: {result:?}"),
        None,
    )
}

#[allow(deprecated, reason = "logging and resource subscriptions are forwarded for 2025-11-25 clients")]
impl ServerHandler for ServerProxy {
    fn get_info(&self) -> ServerConfig {
        server_config(&self.link, None)
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        // The answer is the server's own: wait for it if it is (re)starting.
        self.link.upstream(self.patience).await.map_err(|err| Failure::Gateway(err.to_string()).error())?;
        context.peer.set_peer_info(request.clone());
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.link.open_session());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let rx = self.link.notifications();
        let relay = tokio::spawn(relay_session(rx, context.peer));
        if let Some(old) = self.relay.lock().unwrap_or_else(|p| p.into_inner()).replace(relay) {
            old.abort();
        }
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        forward!(self, context, ClientRequest::ListToolsRequest(listing(request)), ListToolsResult)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let forwarded = self.forward(ClientRequest::CallToolRequest(CallToolRequest::new(request)), &context).await;
        tool_response(forwarded)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        forward!(self, context, ClientRequest::ListResourcesRequest(listing(request)), ListResourcesResult)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        forward!(
            self,
            context,
            ClientRequest::ListResourceTemplatesRequest(listing(request)),
            ListResourceTemplatesResult
        )
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        forward!(
            self,
            context,
            ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request)),
            ReadResourceResult
        )
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        forward!(self, context, ClientRequest::SubscribeRequest(SubscribeRequest::new(request)), EmptyResult)
            .map(|_: rmcp::model::EmptyResult| ())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        forward!(self, context, ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request)), EmptyResult)
            .map(|_: rmcp::model::EmptyResult| ())
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        forward!(self, context, ClientRequest::ListPromptsRequest(listing(request)), ListPromptsResult)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        forward!(self, context, ClientRequest::GetPromptRequest(GetPromptRequest::new(request)), GetPromptResult)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        forward!(self, context, ClientRequest::CompleteRequest(CompleteRequest::new(request)), CompleteResult)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        forward!(self, context, ClientRequest::SetLevelRequest(SetLevelRequest::new(request)), EmptyResult)
            .map(|_: rmcp::model::EmptyResult| ())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        // 2026-07-28 clients hear of list changes on a listen stream instead of the session.
        let mut rx = self.link.notifications();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                received = next_where(&mut rx, is_session_notification) => match received {
                    Some(notification) => {
                        let _ = context.sink().send(notification).await;
                    }
                    None => return Ok(()),
                },
            }
        }
    }
}

/// Notifications meant for every client of the server (not one request's progress or cancellation).
fn is_session_notification(notification: &ServerNotification) -> bool {
    matches!(
        notification,
        ServerNotification::LoggingMessageNotification(_)
            | ServerNotification::ResourceUpdatedNotification(_)
            | ServerNotification::ResourceListChangedNotification(_)
            | ServerNotification::ToolListChangedNotification(_)
            | ServerNotification::PromptListChangedNotification(_)
    )
}

/// Passes the server's logging and list-changed notifications on to one client session.
async fn relay_session(mut rx: broadcast::Receiver<ServerNotification>, client: Peer<RoleServer>) {
    while let Some(notification) = next_where(&mut rx, is_session_notification).await {
        if client.send_notification(notification).await.is_err() {
            return;
        }
    }
}
