//! The aggregate gateway at `/mcp/gateway`: one MCP server whose tools are the tools of every
//! running hosted stdio server, each named `{server}__{tool}`. Clients hear
//! `notifications/tools/list_changed` when a server comes up or goes away, or says its tools changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::{EventKind, LinkState, McpLink, ServerState, Upstream};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest, Implementation, InitializeRequestParams,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, ServerNotification,
    SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::fast::{FastPath, Route};
use super::gateway::{Caller, Failure, forward_on, tool_response};
use super::next_where;
use crate::App;

/// Between a server's name and its tool's.
pub const SEPARATOR: &str = "__";

/// How long one server may take to list its tools before the list goes out without them.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Changes that come together (a boot starting every server) make one notification.
const SETTLE: Duration = Duration::from_millis(100);

/// What every aggregate session shares: the signal that the set of tools may have changed.
pub struct Aggregate {
    app: Arc<App>,
    patience: Duration,
    changed: broadcast::Sender<()>,
    watcher: JoinHandle<()>,
}

impl Drop for Aggregate {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Aggregate {
    /// Starts watching the servers; `patience` is how long a call waits for a restarting server.
    pub fn new(app: Arc<App>, patience: Duration) -> Arc<Aggregate> {
        let changed = broadcast::Sender::new(16);
        let watcher = tokio::spawn(watch(app.clone(), changed.clone()));
        Arc::new(Aggregate { app, patience, changed, watcher })
    }

    /// `/mcp/gateway` over streamable HTTP: rmcp's service, and the fast path in front of it that
    /// answers its sessions' tool calls.
    pub(super) fn service(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> (StreamableHttpService<AggregateProxy, LocalSessionManager>, Arc<FastPath>) {
        let config = super::http_config(self.app.config(), cancel);
        let sessions = Arc::new(super::session_manager(self.app.config()));
        let fast =
            Arc::new(FastPath::new(Route::Aggregate(self.app.clone()), self.patience, &config, sessions.clone()));
        let shared = self.clone();
        let service = StreamableHttpService::new(
            move || Ok(AggregateProxy { shared: shared.clone(), relay: Mutex::new(None) }),
            sessions,
            config,
        );
        (service, fast)
    }
}

/// Signals a change whenever a server comes up or goes away, or a running one says its tools changed.
async fn watch(app: Arc<App>, changed: broadcast::Sender<()>) {
    let mut events = app.supervisor().subscribe();
    let mut relays: HashMap<String, JoinHandle<()>> = HashMap::new();
    let follow = |link: Arc<McpLink>, changed: broadcast::Sender<()>| {
        tokio::spawn(async move {
            let mut rx = link.notifications();
            let tools_changed =
                |n: &ServerNotification| matches!(n, ServerNotification::ToolListChangedNotification(_));
            while next_where(&mut rx, tools_changed).await.is_some() {
                let _ = changed.send(());
            }
        })
    };
    if let Ok(links) = app.supervisor().links().await {
        for link in links {
            relays.insert(link.id().to_owned(), follow(link, changed.clone()));
        }
    }
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = changed.send(());
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let signal = match &event.kind {
            EventKind::StateChanged { from, to, .. } => {
                let live = |s: &ServerState| matches!(s, ServerState::Running | ServerState::Unhealthy);
                live(from) != live(to)
            }
            EventKind::Added => {
                if let Ok(link) = app.supervisor().link(&event.server).await
                    && let Some(old) = relays.insert(event.server.clone(), follow(link, changed.clone()))
                {
                    old.abort();
                }
                false
            }
            EventKind::Deleted => {
                if let Some(relay) = relays.remove(&event.server) {
                    relay.abort();
                }
                true
            }
            _ => false,
        };
        if signal {
            let _ = changed.send(());
        }
    }
}

/// One client session of the aggregate gateway.
pub struct AggregateProxy {
    shared: Arc<Aggregate>,
    relay: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for AggregateProxy {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.lock().unwrap_or_else(|p| p.into_inner()).take() {
            relay.abort();
        }
    }
}

/// The server a call of the aggregate tool `name` goes to, and the tool's own name there; `Err`
/// is a tool error for the caller (no such server), or, for the supervisor's failure, a protocol
/// error.
pub(super) async fn route_call(app: &App, name: &str) -> Result<(Arc<McpLink>, String), Failure> {
    let links =
        app.supervisor().links().await.map_err(|e| Failure::Server(ErrorData::internal_error(e.to_string(), None)))?;
    match split_name(name, &links) {
        Some((link, tool)) => Ok((link, tool.to_owned())),
        None => Err(Failure::Gateway(format!(
            "no tool {name}: gateway tools are named server{SEPARATOR}tool after a hosted server; tools/list shows them"
        ))),
    }
}

/// Splits `{server}__{tool}` at the first separator whose left side names a known server (server
/// ids may hold `__` themselves).
fn split_name<'a>(name: &'a str, known: &[Arc<McpLink>]) -> Option<(Arc<McpLink>, &'a str)> {
    name.match_indices(SEPARATOR).find_map(|(at, _)| {
        let (server, tool) = (&name[..at], &name[at + SEPARATOR.len()..]);
        known.iter().find(|link| link.id() == server).map(|link| (link.clone(), tool))
    })
}

/// Whether a call of `tool` (named by [`tools_of`]) would reach the server that listed it. With
/// servers `my` and `my__server`, the second's tool `x` is `my__server__x`, which names the first's
/// tool `server__x`: such a tool is left out of the list (with a warning), never listed to reach
/// another server.
fn routes_home(name: &str, owner: &McpLink, links: &[Arc<McpLink>]) -> bool {
    match split_name(name, links) {
        Some((link, _)) if link.id() == owner.id() => true,
        routed => {
            tracing::warn!(
                tool = %name,
                server = owner.id(),
                reaches = routed.as_ref().map_or("nothing", |(l, _)| l.id()),
                "left out of /mcp/gateway: its name would reach another server's tool; rename one of the servers"
            );
            false
        }
    }
}

/// The live session of `link`, if its server is up now.
fn live(link: &McpLink) -> Option<Upstream> {
    match link.state() {
        LinkState::Up(up) if !up.peer.is_transport_closed() => Some(up),
        _ => None,
    }
}

/// The tools of one running server, renamed into the aggregate's namespace.
async fn tools_of(link: Arc<McpLink>, up: Upstream) -> Result<Vec<Tool>, String> {
    let listed = tokio::time::timeout(LIST_TIMEOUT, up.peer.list_all_tools()).await;
    let tools = match listed {
        Ok(Ok(tools)) => tools,
        Ok(Err(err)) => return Err(format!("server {} could not list its tools: {err}", link.id())),
        Err(_) => return Err(format!("server {} did not list its tools within {LIST_TIMEOUT:?}", link.id())),
    };
    Ok(tools
        .into_iter()
        .map(|mut tool| {
            tool.name = format!("{}{SEPARATOR}{}", link.id(), tool.name).into();
            let description = tool.description.as_deref().unwrap_or_default();
            tool.description = Some(format!("[{}] {description}", link.id()).trim_end().to_owned().into());
            tool
        })
        .collect())
}

impl AggregateProxy {
    async fn all_tools(&self) -> Result<Vec<Tool>, ErrorData> {
        let links =
            self.shared.app.supervisor().links().await.map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let mut set = tokio::task::JoinSet::new();
        for link in &links {
            if let Some(up) = live(link) {
                let link = link.clone();
                set.spawn(async move { (link.clone(), tools_of(link, up).await) });
            }
        }
        let mut tools = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((owner, Ok(mut some))) => {
                    some.retain(|tool| routes_home(&tool.name, &owner, &links));
                    tools.append(&mut some);
                }
                Ok((_, Err(why))) => tracing::warn!("{why}; its tools are left out of /mcp/gateway for now"),
                Err(err) => tracing::warn!(error = %err, "listing a server's tools failed"),
            }
        }
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tools)
    }
}

impl ServerHandler for AggregateProxy {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
            .with_server_info(Implementation::new("hivehost-gateway", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "The tools of every MCP server running on this hivehost, each named server{SEPARATOR}tool. The list changes as servers start and stop."
            ))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let relay = tokio::spawn(relay_changes(self.shared.changed.subscribe(), context.peer));
        if let Some(old) = self.relay.lock().unwrap_or_else(|p| p.into_inner()).replace(relay) {
            old.abort();
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.all_tools().await?))
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (link, tool) = match route_call(&self.shared.app, &request.name).await {
            Ok(routed) => routed,
            Err(failure) => return tool_response(Err(failure)),
        };
        request.name = tool.into();
        let forwarded = ClientRequest::CallToolRequest(CallToolRequest::new(request));
        tool_response(forward_on(&link, self.shared.patience, forwarded, Caller::of(&context)).await)
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.shared.changed.subscribe();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                received = next_where(&mut changes, |_| true) => {
                    if received.is_none() {
                        return Ok(());
                    }
                    settle(&mut changes).await;
                    let changed = ServerNotification::ToolListChangedNotification(Default::default());
                    let _ = context.sink().send(changed).await;
                }
            }
        }
    }
}

/// Swallows the changes that follow within [`SETTLE`], so a burst makes one notification.
async fn settle(changes: &mut broadcast::Receiver<()>) {
    let until = tokio::time::Instant::now() + SETTLE;
    while let Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) =
        tokio::time::timeout_at(until, changes.recv()).await
    {}
}

/// Tells one client session that the tool list changed, once per burst of changes.
async fn relay_changes(mut changes: broadcast::Receiver<()>, client: Peer<RoleServer>) {
    while next_where(&mut changes, |_| true).await.is_some() {
        settle(&mut changes).await;
        if client.notify_tool_list_changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links of stdio servers `echo`, `my__server` and `my` (whose names can clash).
    fn links() -> Vec<Arc<McpLink>> {
        ["echo", "my__server", "my"].iter().map(|id| Arc::new(McpLink::new(id, actors::Transport::Stdio))).collect()
    }

    #[test]
    fn names_split_at_the_first_separator_naming_a_server() {
        let links = links();
        let split = |name: &str| split_name(name, &links).map(|(link, tool)| (link.id().to_owned(), tool.to_owned()));
        assert_eq!(split("echo__add"), Some(("echo".into(), "add".into())));
        assert_eq!(split("echo__add__more"), Some(("echo".into(), "add__more".into())));
        assert_eq!(split("my__server__x"), Some(("my".into(), "server__x".into())));
        assert_eq!(split("unknown__add"), None);
        assert_eq!(split("echo"), None);
    }

    #[test]
    fn a_tool_whose_name_reaches_another_server_is_left_out_of_the_list() {
        let links = links();
        let [echo, my_server, my] = [&links[0], &links[1], &links[2]];
        assert!(routes_home("echo__add", echo, &links));
        assert!(routes_home("my__server__x", my, &links), "my's tool server__x");
        assert!(!routes_home("my__server__x", my_server, &links), "my__server's tool x would reach my");
        // Without `my`, my__server's tools are its own again.
        let without_my = &links[..2];
        assert!(routes_home("my__server__x", my_server, without_my));
    }
}
