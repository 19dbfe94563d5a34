//! The status of one server, as queries return it.

use std::time::SystemTime;

use crate::event::Exit;
use crate::logs::LogCounters;
use crate::metrics::MetricsSample;
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
}
