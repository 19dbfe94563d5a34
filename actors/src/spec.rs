//! What the supervisor needs to know to run one hosted server: the plain, already validated spec.

use std::path::PathBuf;
use std::time::Duration;

/// The identifier of a hosted server, unique within one supervisor.
pub type ServerId = String;

/// Everything needed to start, watch and stop one hosted server.
///
/// The root crate builds it from `server_config.json` and the host config; this crate never parses files.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub id: ServerId,
    pub name: String,
    /// The program and its arguments, run directly (never through a shell).
    pub command: Vec<String>,
    /// The working directory of the process; it must exist.
    pub working_dir: PathBuf,
    /// The complete environment of the process (already expanded); nothing of the host's leaks in.
    pub env: Vec<(String, String)>,
    pub transport: Transport,
    pub policy: policy::RestartPolicy,
    /// How long an incarnation may take to become ready (first passing health check, if any).
    pub start_timeout: Duration,
    /// How long a stopping server gets after SIGTERM before its whole tree is killed.
    pub shutdown_timeout: Duration,
    pub health: Option<HealthSpec>,
    pub limits: Limits,
    pub logs: LogSpec,
    /// How often the metrics sampler reads the process tree.
    pub metrics_interval: Duration,
    /// How many metric samples are kept per server (across incarnations).
    pub metrics_history: usize,
    /// How it is confined; the default confines nothing and makes no cgroup.
    pub sandbox: crate::sandbox::SandboxSpec,
}

/// How a hosted server speaks MCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// MCP over the child's stdin and stdout; stdout is not a log.
    Stdio,
    /// MCP over HTTP on this port; stdout is a log like stderr.
    Http { port: u16 },
    /// No MCP: a plain supervised process (a worker, a ticker); stdout is a log like stderr. It is
    /// ready once spawned and not reachable through the gateway.
    None,
}

impl Transport {
    /// Whether the child's stdout is a log (not an MCP channel).
    pub fn stdout_is_log(self) -> bool {
        !matches!(self, Transport::Stdio)
    }
}

/// A health check.
#[derive(Clone, Debug)]
pub struct HealthSpec {
    pub check: HealthCheck,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make the supervisor restart the server.
    pub failures_before_restart: u32,
}

/// How health is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// An `http://` URL answered with a 2xx status when healthy; the server is ready at the first.
    Http { url: String },
    /// An MCP `ping` over the upstream session of a stdio server (ready at the handshake).
    McpPing,
}

/// Resource limits of one server.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// The whole tree's resident memory; enforced by the metrics sampler (kill and incident).
    pub memory_mb: Option<u64>,
    /// Percent of one core; recorded, enforced once cgroups arrive.
    pub cpu_percent: Option<u32>,
    /// Processes in the tree; enforced with RLIMIT_NPROC only where that is safe (not as root).
    pub max_processes: Option<u32>,
    /// RLIMIT_NOFILE of the process.
    pub max_open_files: Option<u64>,
}

/// Where and how much of a server's output is kept.
#[derive(Clone, Debug)]
pub struct LogSpec {
    /// Rotated files go to `dir/current.log`, `dir/current.log.1`, ...
    pub dir: PathBuf,
    pub ring_lines: usize,
    pub max_line_bytes: usize,
    pub max_file_bytes: u64,
    pub max_files: u32,
}

impl LogSpec {
    /// Settings suited to tests and examples: a small ring and small files in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> LogSpec {
        LogSpec { dir: dir.into(), ring_lines: 200, max_line_bytes: 16 * 1024, max_file_bytes: 10 << 20, max_files: 5 }
    }
}

impl ServerSpec {
    /// A spec with the defaults of `server_config.json` for everything but the identity and command.
    pub fn new(
        id: impl Into<String>,
        command: Vec<String>,
        working_dir: impl Into<PathBuf>,
        logs: LogSpec,
    ) -> ServerSpec {
        let id = id.into();
        let default_policy = policy::RestartPolicy::new(policy::PolicyConfig::default())
            .map(|(policy, _warnings)| policy)
            .unwrap_or_else(|err| unreachable!("the default restart policy is valid: {err}"));
        ServerSpec {
            name: id.clone(),
            id,
            command,
            working_dir: working_dir.into(),
            env: Vec::new(),
            transport: Transport::Stdio,
            policy: default_policy,
            start_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            health: None,
            limits: Limits::default(),
            logs,
            metrics_interval: Duration::from_secs(5),
            metrics_history: 720,
            sandbox: crate::sandbox::SandboxSpec::default(),
        }
    }
}
