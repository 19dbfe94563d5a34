//! The health poller: every interval, an HTTP GET of the server's health URL or an MCP `ping` over
//! its upstream session, reported to its server actor.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::link::{LinkState, McpLink};
use crate::server::ServerMsg;
use crate::spec::{HealthCheck, HealthSpec};

/// While the server is not yet ready, probe this often (or at the interval, if shorter).
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The actor that probes one incarnation's health.
pub(crate) struct HealthPoller;

pub(crate) struct HealthArgs {
    pub(crate) spec: HealthSpec,
    pub(crate) server: ActorRef<ServerMsg>,
    pub(crate) link: Arc<McpLink>,
    pub(crate) generation: u64,
}

pub(crate) enum HealthMsg {
    Tick,
    Done {
        ok: bool,
        detail: String,
    },
    /// Nothing to probe yet (no upstream session): try again at the next tick.
    Skipped,
}

pub(crate) struct HealthState {
    spec: HealthSpec,
    server: ActorRef<ServerMsg>,
    link: Arc<McpLink>,
    generation: u64,
    client: reqwest::Client,
    passed_once: bool,
    probe: Option<JoinHandle<()>>,
}

impl Actor for HealthPoller {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        let client = reqwest::Client::builder()
            .timeout(args.spec.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        myself.cast(HealthMsg::Tick)?;
        // An MCP ping starts after the handshake, which already made the server ready.
        let passed_once = args.spec.check == HealthCheck::McpPing;
        Ok(HealthState {
            spec: args.spec,
            server: args.server,
            link: args.link,
            generation: args.generation,
            client,
            passed_once,
            probe: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        msg: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Tick => {
                // The probe runs beside the mailbox and reports back, so the actor stays responsive.
                let me = myself.clone();
                state.probe = Some(match &state.spec.check {
                    HealthCheck::Http { url } => {
                        let client = state.client.clone();
                        let url = url.clone();
                        tokio::spawn(async move {
                            let (ok, detail) = probe(&client, &url).await;
                            let _ = me.cast(HealthMsg::Done { ok, detail });
                        })
                    }
                    HealthCheck::McpPing => {
                        let up = match state.link.state() {
                            LinkState::Up(up) if up.generation == state.generation => Some(up),
                            _ => None,
                        };
                        let timeout = state.spec.timeout;
                        tokio::spawn(async move {
                            let msg = match up {
                                Some(up) => {
                                    let (ok, detail) = ping(&up.peer, timeout).await;
                                    HealthMsg::Done { ok, detail }
                                }
                                None => HealthMsg::Skipped,
                            };
                            let _ = me.cast(msg);
                        })
                    }
                });
            }
            HealthMsg::Skipped => {
                myself.send_after(state.spec.interval, || HealthMsg::Tick);
            }
            HealthMsg::Done { ok, detail } => {
                state.passed_once |= ok;
                let _ = state.server.cast(ServerMsg::Probe { ok, detail });
                let next = if state.passed_once {
                    state.spec.interval
                } else {
                    state.spec.interval.min(STARTUP_PROBE_INTERVAL)
                };
                myself.send_after(next, || HealthMsg::Tick);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<HealthMsg>, state: &mut HealthState) -> Result<(), ActorProcessingErr> {
        if let Some(probe) = state.probe.take() {
            probe.abort();
        }
        Ok(())
    }
}

/// One MCP ping over the upstream session; healthy on an answer within `timeout`. An error answer
/// counts: 2026-07-28 servers have no `ping` and answer "method not found", which still shows the
/// process reading its input and answering.
async fn ping(peer: &crate::link::UpstreamPeer, timeout: Duration) -> (bool, String) {
    let request = rmcp::model::ClientRequest::PingRequest(rmcp::model::PingRequest::default());
    match tokio::time::timeout(timeout, peer.send_request(request)).await {
        Ok(Ok(_)) => (true, "answered an MCP ping".to_owned()),
        Ok(Err(rmcp::ServiceError::McpError(err))) => {
            (true, format!("answered an MCP ping (with error {}: {})", err.code.0, err.message))
        }
        Ok(Err(err)) => (false, format!("MCP ping failed: {err}")),
        Err(_) => (false, format!("MCP ping not answered within {timeout:?}")),
    }
}

/// One GET; healthy on a 2xx status.
async fn probe(client: &reqwest::Client, url: &str) -> (bool, String) {
    match client.get(url).send().await {
        Ok(resp) if resp.status().is_success() => (true, format!("HTTP {}", resp.status().as_u16())),
        Ok(resp) => (false, format!("health check {url} answered HTTP {}", resp.status().as_u16())),
        Err(err) if err.is_timeout() => (false, format!("health check {url} timed out")),
        Err(err) if err.is_connect() => (false, format!("health check {url}: connection refused or unreachable")),
        Err(err) => (false, format!("health check {url} failed: {err}")),
    }
}
