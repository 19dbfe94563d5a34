//! The status of one server, as queries return it.

use std::time::SystemTime;

use crate::event::Exit;
use crate::link::{LinkState, LinkStats};
use crate::logs::LogCounters;
use crate::metrics::MetricsSample;
use crate::sandbox::{HostCaps, LayerReport, SandboxSpec, plan};
use crate::state::ServerState;

/// A server's state and vital signs at one instant.
#[derive(Clone, Debug)]
pub struct ServerStatus {
    pub id: String,
    pub name: String,
    pub state: ServerState,
    /// When it entered `state`.
    pub since: SystemTime,
    /// The generation of the current or last incarnation.
    pub generation: u64,
    pub pid: Option<u32>,
    /// When the current incarnation started.
    pub started_at: Option<SystemTime>,
    /// Automatic restarts since it was added.
    pub restarts: u64,
    /// Restarts in the current failure streak.
    pub streak: u32,
    pub last_exit: Option<Exit>,
    /// When the scheduled restart is due, in `backoff`.
    pub next_restart: Option<SystemTime>,
    pub health_failures: u32,
    pub last_health: Option<String>,
    pub usage: Option<MetricsSample>,
    pub logs: LogCounters,
    pub sandbox: SandboxStatus,
    /// The live MCP session (a stdio server the gateway can reach now): its protocol version and
    /// the server's name and version, as it gave them.
    pub mcp_session: Option<(String, String)>,
    /// Its use through the gateway: sessions and calls, across incarnations.
    pub gateway: LinkStats,
}

/// The protocol version and the server's name and version of a live session.
pub(crate) fn session(state: &LinkState) -> Option<(String, String)> {
    match state {
        LinkState::Up(up) if !up.peer.is_transport_closed() => {
            let server = up.info.server_info.as_ref().map_or_else(String::new, |i| format!("{} {}", i.name, i.version));
            Some((up.info.protocol_version.to_string(), server))
        }
        _ => None,
    }
}

/// A server's sandbox on this host: each layer's state, and whether a start would be refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxStatus {
    pub layers: Vec<LayerReport>,
    /// Some layer it would get is unavailable here.
    pub degraded: bool,
    /// Why a start is refused (`security.require_sandbox` with a layer missing).
    pub refused: Option<String>,
}

impl SandboxStatus {
    /// The plan for `spec` on a host with `caps`, as shown to users.
    pub(crate) fn of(spec: &SandboxSpec, caps: &HostCaps) -> SandboxStatus {
        match plan(spec, caps) {
            Ok(plan) => SandboxStatus { degraded: plan.degraded(), layers: plan.report, refused: None },
            Err(refused) => {
                let relaxed = SandboxSpec { require: false, ..spec.clone() };
                let layers = plan(&relaxed, caps).map(|p| p.report).unwrap_or_default();
                SandboxStatus { layers, degraded: true, refused: Some(refused.to_string()) }
            }
        }
    }
}
