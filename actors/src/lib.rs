//! The supervision tree of hivehost: a root supervisor, one server actor per incarnation of a
//! hosted server, and its helpers (log tailer, health poller, metrics sampler), over real processes.
//!
//! Frontends use [`SupervisorHandle`] only; nothing else here is theirs to touch.

mod error;
mod event;
mod health;
pub mod link;
mod logs;
mod metrics;
pub mod process;
pub mod sandbox;
mod server;
mod spec;
mod state;
mod status;
mod supervisor;
pub mod wire;

pub use error::ActorsError;
pub use event::{Event, EventKind, Exit, describe, signal_name};
pub use link::{LinkError, LinkState, LinkStats, McpLink, Upstream, UpstreamPeer};
pub use logs::{LogCounters, LogLine, Stream};
pub use metrics::MetricsSample;
pub use spec::{HealthCheck, HealthSpec, Limits, LogSpec, ServerId, ServerSpec, Transport};
pub use state::ServerState;
pub use status::{SandboxStatus, ServerStatus};
pub use supervisor::{SupervisorConfig, SupervisorExit, SupervisorHandle};
pub use wire::{Wire, WireError};
