//! The only place that creates processes: the launcher, process trees, the subreaper.
//!
//! Every hosted process runs directly (no shell) in its own session, with a cleared environment, an
//! explicit working directory, no core dumps, a parent-death signal and `no_new_privs`. It is made a child
//! subreaper itself, so orphans inside its tree stay linked to it while it lives, and hivehost is a
//! subreaper for everything else. A tree is stopped with SIGTERM to every member, then, after the
//! shutdown timeout, by stopping every member with SIGSTOP until no new member appears and killing
//! them all with SIGKILL: nothing that double-forks or calls `setsid` survives.

mod job;
mod leftovers;
mod reaper;
mod spawn;
mod table;
mod throttle;
mod tree;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncRead;

pub use job::{Job, JobEnd, run_job};
pub use leftovers::{Leftover, kill_leftovers};
pub use reaper::become_subreaper;
pub(crate) use reaper::spawn_reaper;
pub use spawn::DEFAULT_PATH;
pub(crate) use table::ProcTable;
pub(crate) use tree::signal;

/// Holds the reaper off from fork until the child is waited for (or registered).
pub(crate) fn reaper_guard() -> std::sync::MutexGuard<'static, std::collections::HashSet<u32>> {
    reaper::spawned()
}
pub use table::{ProcStat, proc_stat, start_ticks};
pub(crate) use throttle::throttle;

use crate::sandbox::{CgroupRoot, HostCaps, LayerReport, SandboxRefused};
use crate::spec::ServerSpec;

/// A pipe from the child (its stdout or stderr).
pub type Pipe = Box<dyn AsyncRead + Send + Unpin>;

/// A pipe into the child (its stdin).
pub type InPipe = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Resolves when the incarnation's main process has exited (and has been reaped).
pub type ExitFuture = Pin<Box<dyn Future<Output = policy::ExitKind> + Send>>;

/// Why a launch failed, in words that say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the command is empty: give at least the program to run")]
    EmptyCommand,
    #[error("command not found: `{program}` (searched {searched}); install it or give its absolute path")]
    NotFound { program: String, searched: String },
    #[error("working directory `{0}` does not exist")]
    NoWorkingDir(String),
    #[error("{0}")]
    SandboxRefused(#[from] SandboxRefused),
    #[error("{0}")]
    Sandbox(String),
    #[error("could not start `{program}`: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Starts incarnations; the narrow interface behind which other runtimes (containers, pods) could sit.
pub trait Launcher: Send + Sync + 'static {
    /// Starts one incarnation of `spec`.
    fn launch(&self, spec: &ServerSpec, generation: u64) -> Result<Incarnation, SpawnError>;
}

/// Signals for a running incarnation's whole tree.
pub trait TreeControl: Send + Sync + 'static {
    /// Asks every process of the tree to stop (SIGTERM).
    fn terminate(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Kills every process of the tree and returns once none is left (or the attempt gave up).
    fn kill(&self) -> Pin<Box<dyn Future<Output = KillReport> + Send + '_>>;
    /// Kills what is left synchronously, without waiting; used on drop.
    fn kill_now(&self);
    /// Kills what is left after the root exited on its own. It may wait a moment first, so that
    /// the sweeps of many quick exits share one look at the process table.
    fn sweep(&self) -> Pin<Box<dyn Future<Output = KillReport> + Send + '_>> {
        self.kill()
    }
    /// Stops (SIGSTOP) or continues (SIGCONT) every known member: the CPU throttle of a tree
    /// without a cgroup quota.
    fn pause(&self, _stopped: bool) {}
    /// Kernel OOM kills in the tree's memory cgroup so far (0 without one).
    fn oom_kills(&self) -> u64 {
        0
    }
    /// CPU time used so far by the root and every member seen, in clock ticks; `None` when
    /// unknown (a test double). Members that exited drop out, so it can go down.
    fn cpu_ticks(&self) -> Option<u64> {
        None
    }
    /// The live members of the tree, for metrics: (process count, resident bytes, cpu percent of
    /// one core), from a look at the process table at most `max_age` old.
    fn usage(&self, max_age: std::time::Duration) -> Pin<Box<dyn Future<Output = Option<Usage>> + Send + '_>>;
}

/// The measured resource use of a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub processes: u32,
    pub rss_bytes: u64,
    pub cpu_percent: f32,
}

/// What killing a tree did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillReport {
    /// Processes that were sent SIGKILL.
    pub killed: usize,
    /// Processes still alive when it gave up (should be 0).
    pub survivors: usize,
}

/// One running incarnation: its exit, its pipes, and control over its tree.
pub struct Incarnation {
    pub pid: Option<u32>,
    pub exit: ExitFuture,
    pub stdin: Option<InPipe>,
    /// Stdout when it carries MCP (stdio transport); else it is in `log_pipes`.
    pub stdout: Option<Pipe>,
    /// Pipes whose lines are logs: stderr, and stdout for http servers.
    pub log_pipes: Vec<(crate::logs::Stream, Pipe)>,
    pub control: Arc<dyn TreeControl>,
    /// The layers of its sandbox, as applied.
    pub sandbox: Vec<LayerReport>,
}

/// The real launcher: child processes of this host.
pub struct ProcessLauncher {
    table: Arc<ProcTable>,
    caps: HostCaps,
    cgroups: Option<CgroupRoot>,
}

impl ProcessLauncher {
    /// A launcher that reads process trees through `table`, on a host with `caps`, making cgroups
    /// under `cgroups`.
    pub(crate) fn new(table: Arc<ProcTable>, caps: HostCaps, cgroups: Option<CgroupRoot>) -> ProcessLauncher {
        ProcessLauncher { table, caps, cgroups }
    }

    /// A launcher with a process table of its own, for running a spec without a supervisor (tests,
    /// one-off tools). It sets up no reaper and does not make the caller a subreaper: orphans of
    /// its trees go to the caller's nearest subreaper or to init. Launch inside a tokio runtime.
    pub fn standalone() -> ProcessLauncher {
        ProcessLauncher::new(Arc::new(ProcTable::new()), HostCaps::default(), None)
    }

    /// A launcher of its own on a host with `caps`, making cgroups under `cgroups` (remove its
    /// instance directories with [`CgroupRoot::remove_instance`] when done).
    pub fn standalone_on(caps: HostCaps, cgroups: CgroupRoot) -> ProcessLauncher {
        ProcessLauncher::new(Arc::new(ProcTable::new()), caps, Some(cgroups))
    }
}

impl Launcher for ProcessLauncher {
    fn launch(&self, spec: &ServerSpec, generation: u64) -> Result<Incarnation, SpawnError> {
        let host = spawn::SandboxHost { caps: &self.caps, cgroups: self.cgroups.as_ref() };
        spawn::launch(spec, generation, &self.table, host)
    }
}
