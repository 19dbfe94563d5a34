//! The MCP link of one hosted stdio server: the upstream MCP client session on its child's stdin
//! and stdout, as the gateway and the health poller see it across incarnations.
//!
//! Each incarnation's [`ServerActor`](crate::server) opens the session (the handshake must finish
//! within `start_timeout`) and publishes it here; the supervisor marks the link waiting or down as
//! the server's state changes. Frontends hold the link, never the actor: a call waits on the link
//! for the next incarnation up to its own deadline, and the server's notifications reach every
//! subscriber through one broadcast channel. The link outlives incarnations, like the log book.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ServerNotification, ServerPeerInfo};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, Service, ServiceRole};
use rmcp::{ErrorData, Peer};
use tokio::sync::{broadcast, watch};

use crate::spec::{ServerId, Transport};

/// The client side of an upstream session: what the gateway sends requests through.
pub type UpstreamPeer = Peer<RoleClient>;

/// How many of a server's notifications a slow subscriber may fall behind before it loses some.
const NOTIFICATION_BUFFER: usize = 256;

/// One incarnation's live MCP session.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub generation: u64,
    pub peer: UpstreamPeer,
    /// The incarnation's stdin and stdout, for direct requests that skip rmcp's serve loop.
    pub wire: Arc<crate::wire::Wire>,
    /// What the server said of itself in the handshake: protocol version, capabilities, name.
    pub info: Arc<ServerPeerInfo>,
}

/// Whether a caller can reach the server now, should wait, or should give up.
#[derive(Clone, Debug)]
pub enum LinkState {
    /// An incarnation is starting, restarting or backing off: a session should come.
    Waiting(String),
    Up(Upstream),
    /// Stopped, failed or deleted: nothing comes without an explicit start.
    Down(String),
}

/// Why a caller could not get a session.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Down(String),
    #[error("server {id} did not come back within {waited:?} ({why})")]
    TimedOut { id: ServerId, waited: Duration, why: String },
}

/// Counters of the gateway's use of one server, across incarnations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Client sessions open now.
    pub sessions: u64,
    /// Sessions ever opened.
    pub sessions_total: u64,
    /// Requests forwarded.
    pub calls: u64,
    /// Forwarded requests that ended in an error (the server's, or the process going away).
    pub failed_calls: u64,
    /// When the last request was forwarded (ms since the epoch), if ever.
    pub last_call_ms: Option<i64>,
}

/// The MCP link of one server. Cheap to share; frontends hold it for as long as they like.
#[derive(Debug)]
pub struct McpLink {
    id: ServerId,
    state: watch::Sender<LinkState>,
    notifications: broadcast::Sender<ServerNotification>,
    sessions: AtomicU64,
    sessions_total: AtomicU64,
    calls: AtomicU64,
    failed_calls: AtomicU64,
    last_call_ms: AtomicI64,
}

impl McpLink {
    /// The link of server `id`; the supervisor makes one per server when it is added.
    pub fn new(id: &str, transport: Transport) -> McpLink {
        let why = match transport {
            Transport::Stdio => format!("server {id} is stopped; start it with start_mcp_server"),
            Transport::Http { port } => format!(
                "server {id} speaks MCP over HTTP on its own port {port}, not over stdio: the gateway reaches only stdio servers"
            ),
            Transport::None => format!("server {id} has \"transport\": \"none\": it speaks no MCP"),
        };
        McpLink {
            id: id.to_owned(),
            state: watch::Sender::new(LinkState::Down(why)),
            notifications: broadcast::Sender::new(NOTIFICATION_BUFFER),
            sessions: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            last_call_ms: AtomicI64::new(0),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state now.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Whether nothing will come without an explicit start (stopped, failed, deleted).
    pub fn is_down(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Down(_))
    }

    /// Watches the state, for callers that follow servers coming and going.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// The live session, waiting up to `patience` for one while the server starts or restarts.
    /// A session whose process has gone counts as none: the caller waits for the next one.
    pub async fn upstream(&self, patience: Duration) -> Result<Upstream, LinkError> {
        self.upstream_after(0, patience).await
    }

    /// Like [`upstream`](Self::upstream), but only a session of an incarnation after `generation`:
    /// for a caller whose request could not even be sent to that one (its process was gone).
    pub async fn upstream_after(&self, generation: u64, patience: Duration) -> Result<Upstream, LinkError> {
        // The common case, a live session, without subscribing.
        if let LinkState::Up(up) = &*self.state.borrow()
            && up.generation > generation
            && !up.peer.is_transport_closed()
        {
            return Ok(up.clone());
        }
        let mut rx = self.state.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let why = match &*rx.borrow_and_update() {
                LinkState::Up(up) if !up.peer.is_transport_closed() && up.generation > generation => {
                    return Ok(up.clone());
                }
                LinkState::Up(up) => format!("its incarnation {} ended", up.generation),
                LinkState::Waiting(why) => why.clone(),
                LinkState::Down(why) => return Err(LinkError::Down(why.clone())),
            };
            let timed_out = || LinkError::TimedOut { id: self.id.clone(), waited: patience, why: why.clone() };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(timed_out()),
            }
        }
    }

    /// The server's notifications (logging, list changes, resource updates, progress), from
    /// whichever incarnation is live.
    pub fn notifications(&self) -> broadcast::Receiver<ServerNotification> {
        self.notifications.subscribe()
    }

    /// Counts a client session until the guard is dropped.
    pub fn open_session(self: &Arc<Self>) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }

    /// Counts one forwarded request and its outcome.
    pub fn count_call(&self, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed_calls.fetch_add(1, Ordering::Relaxed);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.last_call_ms.store(now, Ordering::Relaxed);
    }

    pub fn stats(&self) -> LinkStats {
        let last = self.last_call_ms.load(Ordering::Relaxed);
        LinkStats {
            sessions: self.sessions.load(Ordering::Relaxed),
            sessions_total: self.sessions_total.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            failed_calls: self.failed_calls.load(Ordering::Relaxed),
            last_call_ms: (last > 0).then_some(last),
        }
    }

    pub(crate) fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    /// Marks the link waiting or down, unless a session is up and still open.
    pub(crate) fn set_unless_up(&self, state: LinkState) {
        self.state.send_if_modified(|now| {
            if matches!(now, LinkState::Up(up) if !up.peer.is_transport_closed()) {
                return false;
            }
            *now = state;
            true
        });
    }

    /// Takes the session of `generation` down (its process is going), if it is the live one.
    pub(crate) fn retire(&self, generation: u64, why: String) {
        self.state.send_if_modified(|now| {
            if matches!(now, LinkState::Up(up) if up.generation == generation) {
                *now = LinkState::Waiting(why);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn handler(&self) -> UpstreamHandler {
        UpstreamHandler { notifications: self.notifications.clone() }
    }
}

/// Decrements the open-session count when dropped.
#[derive(Debug)]
pub struct SessionGuard(Arc<McpLink>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// hivehost as the client of a hosted server, in the handshake and in direct requests' `_meta`.
pub(crate) fn client_info() -> Implementation {
    Implementation::new("hivehost", env!("CARGO_PKG_VERSION"))
}

/// What hivehost offers a hosted server as its client: nothing beyond the basics.
pub(crate) fn client_capabilities() -> ClientCapabilities {
    ClientCapabilities::default()
}

/// hivehost as the client of a hosted server: it passes the server's notifications on, answers
/// pings, and refuses the server's own requests (sampling, elicitation, roots): one upstream
/// session serves many clients, so no single one could answer them.
pub(crate) struct UpstreamHandler {
    notifications: broadcast::Sender<ServerNotification>,
}

impl Service<RoleClient> for UpstreamHandler {
    async fn handle_request(
        &self,
        request: <RoleClient as ServiceRole>::PeerReq,
        _context: RequestContext<RoleClient>,
    ) -> Result<<RoleClient as ServiceRole>::Resp, ErrorData> {
        use rmcp::model::{ClientResult, ErrorCode, ServerRequest};
        match request {
            ServerRequest::PingRequest(_) => Ok(ClientResult::empty(())),
            _ => Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                "hivehost's gateway does not pass a server's sampling, elicitation or roots requests on to clients",
                None,
            )),
        }
    }

    async fn handle_notification(
        &self,
        notification: <RoleClient as ServiceRole>::PeerNot,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), ErrorData> {
        // No subscriber is fine: nobody is connected through the gateway.
        let _ = self.notifications.send(notification);
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(client_capabilities(), client_info())
    }
}
