//! The states of a hosted server, as the supervisor reports them.

use std::fmt;

/// `stopped → starting → running ⇄ unhealthy → stopping → stopped`; an exit or failed start goes to
/// `backoff` (restart scheduled) or `failed` (gave up; only an explicit start leaves it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    Stopped,
    Starting,
    Running,
    Unhealthy,
    Stopping,
    Backoff,
    Failed,
}

impl ServerState {
    /// The lowercase name used in events, APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Stopped => "stopped",
            ServerState::Starting => "starting",
            ServerState::Running => "running",
            ServerState::Unhealthy => "unhealthy",
            ServerState::Stopping => "stopping",
            ServerState::Backoff => "backoff",
            ServerState::Failed => "failed",
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
