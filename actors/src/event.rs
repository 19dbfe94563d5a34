//! The lifecycle facts the supervisor publishes: state changes, exits and incidents.

use std::time::{Instant, SystemTime};

use crate::spec::ServerId;
use crate::state::ServerState;

/// One lifecycle fact about one server.
#[derive(Clone, Debug)]
pub struct Event {
    pub server: ServerId,
    /// The incarnation it concerns (0 before the first start).
    pub generation: u64,
    /// Wall-clock time, for people and the store.
    pub at: SystemTime,
    /// Monotonic time, for measuring intervals between events; for `Exited`, the moment the main
    /// process was reaped (the event itself is published once its tree is cleaned up).
    pub instant: Instant,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// The server's state changed; `reason` says why in words.
    StateChanged { from: ServerState, to: ServerState, reason: String },
    /// An incarnation's main process started: the leader of its own session and process group.
    /// `start_ticks` (field 22 of /proc/PID/stat) tells it apart from a later process with its pid,
    /// so a restarted hivehost can find what a dead one left running.
    Spawned { pid: u32, start_ticks: Option<u64> },
    /// An incarnation ended.
    Exited { pid: Option<u32>, exit: Exit },
    /// A restart was scheduled after a delay.
    RestartScheduled { delay_ms: u64, attempt: u32 },
    /// The restart policy gave up; only an explicit start leaves `failed`.
    GaveUp { reason: String },
    /// Something went wrong that an operator should see (memory limit, helper crash, kill failure).
    Incident { message: String },
    /// The server was added to the supervisor.
    Added,
    /// The server was removed from the supervisor.
    Deleted,
}

/// How an incarnation ended, with the numbers an operator wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub kind: policy::ExitKind,
    /// A human description: `exited with code 1`, `killed by signal 9 (SIGKILL)`, ...
    pub description: String,
}

impl Exit {
    pub(crate) fn new(kind: policy::ExitKind) -> Exit {
        Exit { kind, description: describe(kind) }
    }
}

/// Words for an exit kind.
pub fn describe(kind: policy::ExitKind) -> String {
    use policy::ExitKind as K;
    match kind {
        K::Code(code) => format!("exited with code {code}"),
        K::Signal(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
        K::HealthCheck => "killed after failing its health checks".to_owned(),
        K::MemoryLimit => "killed for exceeding its memory limit".to_owned(),
        K::StartTimeout => "did not become ready within start_timeout".to_owned(),
        K::SpawnFailed => "could not be started".to_owned(),
        K::Crashed => "its supervising actor failed".to_owned(),
    }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown",
    }
}
