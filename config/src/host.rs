//! The host's `config.json`: the `mcp_hosting` block and its sections.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::reader::{Diags, Field, MinDuration, Obj, describe, is_env_name};

/// The languages a package may be written in, as `security.allowed_languages` names them.
const LANGUAGES: &[&str] = &["python", "node", "bash"];

/// The shortest API token accepted, in characters.
const MIN_TOKEN_CHARS: usize = 16;

/// Keys users put in `mcp_hosting` that belong to one of its sections.
const HOSTING_HINTS: &[(&str, &str)] = &[
    ("host", "dashboard.host"),
    ("port", "dashboard.port"),
    ("debug", "dashboard.debug"),
    ("token", "auth.token"),
    ("token_file", "auth.token_file"),
    ("allowed_languages", "security.allowed_languages"),
    ("sandbox_by_default", "security.sandbox_by_default"),
    ("max_upload_size_mb", "security.max_upload_size_mb"),
    ("scan_uploads", "security.scan_uploads"),
    ("require_sandbox", "security.require_sandbox"),
    ("restart_window", "supervisor.restart_window"),
    ("shutdown_timeout", "supervisor.shutdown_timeout"),
    ("ring_lines", "logs.ring_lines"),
    ("max_files", "logs.max_files"),
];

/// The host's settings: the `mcp_hosting` block of `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Whether hosting is on at all; the seed's master switch.
    pub enabled: bool,
    /// Where each server's code is extracted, one directory per server id; read-only to the server.
    pub servers_dir: PathBuf,
    /// Where incoming archives wait while they are checked.
    pub uploads_dir: PathBuf,
    /// Where each server's rotated log files go.
    pub logs_dir: PathBuf,
    /// Where each server gets its writable home directory.
    pub state_dir: PathBuf,
    /// The SQLite database holding servers, events, metrics and restarts.
    pub database: PathBuf,
    /// How many servers may be deployed at once, stopped ones included; at least 1.
    pub max_servers: u32,
    /// How often servers' health is checked unless a server sets its own interval; above zero.
    pub health_check_interval: Duration,
    /// Whether the janitor removes stale uploads, dead state, old logs and old metrics.
    pub auto_cleanup: bool,
    /// How often the janitor runs; above zero.
    pub cleanup_interval: Duration,
    /// The HTTP side: API, dashboard and MCP endpoints.
    pub dashboard: DashboardConfig,
    /// What uploads may contain and how servers are confined by default.
    pub security: SecurityConfig,
    /// How clients prove who they are.
    pub auth: AuthConfig,
    /// A server with no tool call through the gateway for this long is idle (a recommendation to
    /// stop it); above zero.
    pub idle_after: Duration,
    /// An MCP session over streamable HTTP (`/mcp`, `/mcp/gateway`, `/servers/{id}/mcp`) with no
    /// request or stream for this long is closed, and its client must initialize again; at least
    /// 1 s. A safety net for clients that vanish without ending their session.
    pub mcp_session_idle_timeout: Duration,
    /// How often each server's CPU, memory and process count are sampled; at least 100 ms.
    pub metrics_interval: Duration,
    /// How many metric samples are kept per server; at least 1.
    pub metrics_history: usize,
    /// Restart intensity of hivehost's own supervisors.
    pub supervisor: SupervisorConfig,
    /// How server output is kept in memory and on disk.
    pub logs: LogsConfig,
    /// Host environment variables that `${NAME}` in a server's environment may expand from.
    pub env_allowlist: Vec<String>,
    /// The most a server may ask for, and what it gets when it asks for nothing.
    pub resource_limits: HostLimits,
    /// How packages' dependencies are installed.
    pub dependencies: DependenciesConfig,
}

/// `mcp_hosting.resource_limits`: the ceiling of every server's `resource_limits`, and its default.
///
/// A server asking for more is clamped to these (with a warning); one asking for nothing gets them.
/// None of them can be turned off: 0 is not "unlimited" but an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Memory of a server's whole tree, in MiB; at least 16.
    pub memory_mb: u64,
    /// CPU as a percentage of one core; from 1 to 102400.
    pub cpu_percent: u32,
    /// Processes (and threads) of a server's tree; at least 1.
    pub max_processes: u32,
    /// Open files per process; at least 16.
    pub max_open_files: u64,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self { memory_mb: 1024, cpu_percent: 100, max_processes: 256, max_open_files: 1024 }
    }
}

/// `mcp_hosting.dependencies`: installing a package's `requirements.txt` or `package.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependenciesConfig {
    /// How long one install may take before the deploy fails; above zero.
    pub install_timeout: Duration,
    /// Whether pip may only install wheels: a source distribution runs its own build code as hivehost.
    pub python_only_binary: bool,
    /// Whether npm runs packages' install scripts; off by default for the same reason.
    pub npm_install_scripts: bool,
}

impl Default for DependenciesConfig {
    fn default() -> Self {
        Self { install_timeout: Duration::from_secs(300), python_only_binary: true, npm_install_scripts: false }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            servers_dir: PathBuf::from("data/mcp_servers"),
            uploads_dir: PathBuf::from("data/mcp_uploads"),
            logs_dir: PathBuf::from("data/mcp_logs"),
            state_dir: PathBuf::from("data/mcp_state"),
            database: PathBuf::from("data/hivehost.db"),
            max_servers: 10,
            health_check_interval: Duration::from_secs(30),
            auto_cleanup: true,
            cleanup_interval: Duration::from_secs(3600),
            dashboard: DashboardConfig::default(),
            security: SecurityConfig::default(),
            auth: AuthConfig::default(),
            idle_after: Duration::from_secs(24 * 3600),
            mcp_session_idle_timeout: Duration::from_secs(300),
            metrics_interval: Duration::from_secs(5),
            metrics_history: 720,
            supervisor: SupervisorConfig::default(),
            logs: LogsConfig::default(),
            env_allowlist: Vec::new(),
            resource_limits: HostLimits::default(),
            dependencies: DependenciesConfig::default(),
        }
    }
}

impl HostConfig {
    /// `security.max_upload_size_mb` in bytes.
    pub fn max_upload_size_bytes(&self) -> u64 {
        self.security.max_upload_size_mb.saturating_mul(1 << 20)
    }
}

/// `mcp_hosting.dashboard`: where the HTTP API, dashboard and MCP endpoints listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    /// Whether the HTTP side runs at all.
    pub enabled: bool,
    /// The address to bind: an IP address or a host name, without a port.
    pub host: String,
    /// The port to bind; 0 picks any free port.
    pub port: u16,
    /// Whether debug pages and verbose errors are served.
    pub debug: bool,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self { enabled: true, host: "127.0.0.1".to_owned(), port: 8910, debug: false }
    }
}

impl DashboardConfig {
    /// Whether `host` only accepts connections from this machine (127.0.0.0/8, `::1` or `localhost`).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// `mcp_hosting.security`: what uploads may contain and the default confinement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The languages packages may use, each `python`, `node` or `bash`.
    pub allowed_languages: Vec<String>,
    /// Whether servers are sandboxed unless their `server_config.json` says otherwise.
    pub sandbox_by_default: bool,
    /// The largest accepted archive, in MiB; from 1 to 4096.
    pub max_upload_size_mb: u64,
    /// Whether uploads are scanned before they are accepted.
    pub scan_uploads: bool,
    /// Whether a sandboxed server refuses to start when a layer it needs is unavailable; `None`
    /// (the default) means yes when hivehost runs as root, where every layer is expected.
    pub require_sandbox: Option<bool>,
    /// The first uid (and gid) given to sandboxed servers, one each.
    pub uid_first: u32,
    /// How many uids from `uid_first` on are hivehost's to give out.
    pub uid_count: u32,
}

impl SecurityConfig {
    /// `require_sandbox`, with its default resolved for a host where hivehost is (not) root.
    pub fn require_sandbox(&self, root: bool) -> bool {
        self.require_sandbox.unwrap_or(root)
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allowed_languages: LANGUAGES.iter().map(|l| (*l).to_owned()).collect(),
            sandbox_by_default: true,
            max_upload_size_mb: 100,
            scan_uploads: true,
            require_sandbox: None,
            uid_first: 200_000,
            uid_count: 65_536,
        }
    }
}

/// `mcp_hosting.auth`: the API token.
#[derive(PartialEq, Eq, Clone)]
pub struct AuthConfig {
    /// A fixed token of at least 16 visible ASCII characters; `None` means use `token_file`.
    pub token: Option<String>,
    /// Where the generated token is kept (mode 0600) when `token` is not set.
    pub token_file: PathBuf,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { token: None, token_file: PathBuf::from("data/api_token") }
    }
}

impl std::fmt::Debug for AuthConfig {
    /// Never shows the token, so a debug print of the config cannot leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// `mcp_hosting.supervisor`: how often hivehost's own supervisors may restart children before giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// How many server actors may crash within `restart_window` before the root supervisor exits.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts`; above zero.
    pub restart_window: Duration,
    /// How many times a helper (store writer, janitor, log tailer...) may be restarted within `helper_window`.
    pub helper_max_restarts: u32,
    /// The sliding window for `helper_max_restarts`; above zero.
    pub helper_window: Duration,
    /// How long `serve` waits at exit for all servers to stop.
    pub shutdown_timeout: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            helper_max_restarts: 5,
            helper_window: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// `mcp_hosting.logs`: how server output is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsConfig {
    /// Lines kept in memory per server for `logs` and the dashboard; from 1 to 100000.
    pub ring_lines: usize,
    /// The longest line kept, in bytes; longer lines are cut. From 256 to 1048576.
    pub max_line_bytes: usize,
    /// The size at which a log file is rotated; at least 4096.
    pub max_file_bytes: u64,
    /// How many log files are kept per server, the current one included; from 1 to 100.
    pub max_files: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self { ring_lines: 200, max_line_bytes: 16384, max_file_bytes: 10_485_760, max_files: 5 }
    }
}

/// Reads the whole `config.json` document, reporting problems into `diags`.
pub(crate) fn read(root: &Value, diags: &mut Diags) -> HostConfig {
    let Value::Object(top) = root else {
        diags.error("", format!("expected a JSON object with an \"mcp_hosting\" key, found {}", describe(root)));
        return HostConfig::default();
    };
    // The other top-level keys belong to other tools sharing the file, so this object is never finished.
    let mut top = Obj::new(String::new(), top);
    let Some(field) = top.field("mcp_hosting") else {
        top.missing(
            "mcp_hosting",
            diags,
            "put the hosting settings in an object under the top-level \"mcp_hosting\" key",
        );
        return HostConfig::default();
    };
    match field.object(diags) {
        Some(hosting) => read_hosting(hosting, diags),
        None => HostConfig::default(),
    }
}

fn read_hosting(mut o: Obj<'_>, diags: &mut Diags) -> HostConfig {
    let d = HostConfig::default();
    let config = HostConfig {
        enabled: o.bool("enabled", diags).unwrap_or(d.enabled),
        servers_dir: path(&mut o, "servers_dir", diags).unwrap_or(d.servers_dir),
        uploads_dir: path(&mut o, "uploads_dir", diags).unwrap_or(d.uploads_dir),
        logs_dir: path(&mut o, "logs_dir", diags).unwrap_or(d.logs_dir),
        state_dir: path(&mut o, "state_dir", diags).unwrap_or(d.state_dir),
        database: path(&mut o, "database", diags).unwrap_or(d.database),
        max_servers: o.int("max_servers", diags, 1, u64::MAX).unwrap_or(d.max_servers),
        health_check_interval: o
            .duration("health_check_interval", diags, MinDuration::Positive)
            .unwrap_or(d.health_check_interval),
        auto_cleanup: o.bool("auto_cleanup", diags).unwrap_or(d.auto_cleanup),
        cleanup_interval: o.duration("cleanup_interval", diags, MinDuration::Positive).unwrap_or(d.cleanup_interval),
        dashboard: read_dashboard(&mut o, diags),
        security: read_security(&mut o, diags),
        auth: read_auth(&mut o, diags),
        idle_after: o.duration("idle_after", diags, MinDuration::Positive).unwrap_or(d.idle_after),
        mcp_session_idle_timeout: o
            .duration("mcp_session_idle_timeout", diags, MinDuration::AtLeast(Duration::from_secs(1)))
            .unwrap_or(d.mcp_session_idle_timeout),
        metrics_interval: o
            .duration("metrics_interval", diags, MinDuration::AtLeast(Duration::from_millis(100)))
            .unwrap_or(d.metrics_interval),
        metrics_history: o.int("metrics_history", diags, 1, u64::MAX).unwrap_or(d.metrics_history),
        supervisor: read_supervisor(&mut o, diags),
        logs: read_logs(&mut o, diags),
        env_allowlist: read_env_allowlist(&mut o, diags).unwrap_or(d.env_allowlist),
        resource_limits: read_host_limits(&mut o, diags),
        dependencies: read_dependencies(&mut o, diags),
    };
    o.finish(diags, HOSTING_HINTS);
    config
}

fn read_dashboard(parent: &mut Obj<'_>, diags: &mut Diags) -> DashboardConfig {
    let d = DashboardConfig::default();
    let Some(mut o) = parent.object("dashboard", diags) else {
        return d;
    };
    let config = DashboardConfig {
        enabled: o.bool("enabled", diags).unwrap_or(d.enabled),
        host: o.field("host").and_then(|f| host(&f, diags)).unwrap_or(d.host),
        port: o.int("port", diags, 0, 65535).unwrap_or(d.port),
        debug: o.bool("debug", diags).unwrap_or(d.debug),
    };
    o.finish(diags, &[("address", "host"), ("bind", "host")]);
    config
}

fn read_security(parent: &mut Obj<'_>, diags: &mut Diags) -> SecurityConfig {
    let d = SecurityConfig::default();
    let Some(mut o) = parent.object("security", diags) else {
        return d;
    };
    let config = SecurityConfig {
        allowed_languages: o
            .field("allowed_languages")
            .and_then(|f| f.array(diags))
            .map(|items| items.iter().filter_map(|item| item.choice(diags, LANGUAGES)).map(str::to_owned).collect())
            .unwrap_or(d.allowed_languages),
        sandbox_by_default: o.bool("sandbox_by_default", diags).unwrap_or(d.sandbox_by_default),
        max_upload_size_mb: o.int("max_upload_size_mb", diags, 1, 4096).unwrap_or(d.max_upload_size_mb),
        scan_uploads: o.bool("scan_uploads", diags).unwrap_or(d.scan_uploads),
        require_sandbox: o.bool("require_sandbox", diags),
        // Above the usual ranges of system and login users (0 to 60000), below the 32-bit edge.
        uid_first: o.int("uid_first", diags, 65_536, 4_000_000_000).unwrap_or(d.uid_first),
        uid_count: o.int("uid_count", diags, 1, 1_000_000).unwrap_or(d.uid_count),
    };
    o.finish(diags, &[]);
    config
}

fn read_auth(parent: &mut Obj<'_>, diags: &mut Diags) -> AuthConfig {
    let d = AuthConfig::default();
    let Some(mut o) = parent.object("auth", diags) else {
        return d;
    };
    let config = AuthConfig {
        token: o.field("token").and_then(|f| token(&f, diags)),
        token_file: path(&mut o, "token_file", diags).unwrap_or(d.token_file),
    };
    o.finish(diags, &[("api_token", "token")]);
    config
}

fn read_supervisor(parent: &mut Obj<'_>, diags: &mut Diags) -> SupervisorConfig {
    let d = SupervisorConfig::default();
    let Some(mut o) = parent.object("supervisor", diags) else {
        return d;
    };
    let config = SupervisorConfig {
        max_restarts: o.int("max_restarts", diags, 0, u64::MAX).unwrap_or(d.max_restarts),
        restart_window: o.duration("restart_window", diags, MinDuration::Positive).unwrap_or(d.restart_window),
        helper_max_restarts: o.int("helper_max_restarts", diags, 0, u64::MAX).unwrap_or(d.helper_max_restarts),
        helper_window: o.duration("helper_window", diags, MinDuration::Positive).unwrap_or(d.helper_window),
        shutdown_timeout: o.duration("shutdown_timeout", diags, MinDuration::Zero).unwrap_or(d.shutdown_timeout),
    };
    o.finish(diags, &[]);
    config
}

fn read_logs(parent: &mut Obj<'_>, diags: &mut Diags) -> LogsConfig {
    let d = LogsConfig::default();
    let Some(mut o) = parent.object("logs", diags) else {
        return d;
    };
    let config = LogsConfig {
        ring_lines: o.int("ring_lines", diags, 1, 100_000).unwrap_or(d.ring_lines),
        max_line_bytes: o.int("max_line_bytes", diags, 256, 1_048_576).unwrap_or(d.max_line_bytes),
        max_file_bytes: o.int("max_file_bytes", diags, 4096, u64::MAX).unwrap_or(d.max_file_bytes),
        max_files: o.int("max_files", diags, 1, 100).unwrap_or(d.max_files),
    };
    o.finish(diags, &[]);
    config
}

fn read_host_limits(parent: &mut Obj<'_>, diags: &mut Diags) -> HostLimits {
    let d = HostLimits::default();
    let Some(mut o) = parent.object("resource_limits", diags) else {
        return d;
    };
    let config = HostLimits {
        memory_mb: o.int("memory_mb", diags, 16, u64::MAX >> 20).unwrap_or(d.memory_mb),
        cpu_percent: o.int("cpu_percent", diags, 1, 100 * 1024).unwrap_or(d.cpu_percent),
        max_processes: o.int("max_processes", diags, 1, u64::MAX).unwrap_or(d.max_processes),
        max_open_files: o.int("max_open_files", diags, 16, u64::MAX).unwrap_or(d.max_open_files),
    };
    o.finish(diags, &[("memory", "memory_mb"), ("cpu", "cpu_percent"), ("pids", "max_processes")]);
    config
}

fn read_dependencies(parent: &mut Obj<'_>, diags: &mut Diags) -> DependenciesConfig {
    let d = DependenciesConfig::default();
    let Some(mut o) = parent.object("dependencies", diags) else {
        return d;
    };
    let config = DependenciesConfig {
        install_timeout: o.duration("install_timeout", diags, MinDuration::Positive).unwrap_or(d.install_timeout),
        python_only_binary: o.bool("python_only_binary", diags).unwrap_or(d.python_only_binary),
        npm_install_scripts: o.bool("npm_install_scripts", diags).unwrap_or(d.npm_install_scripts),
    };
    o.finish(diags, &[("timeout", "install_timeout")]);
    config
}

fn read_env_allowlist(o: &mut Obj<'_>, diags: &mut Diags) -> Option<Vec<String>> {
    let items = o.field("env_allowlist")?.array(diags)?;
    let names = items
        .iter()
        .filter_map(|item| {
            let name = item.str(diags)?;
            if is_env_name(name) {
                Some(name.to_owned())
            } else {
                item.expected(
                    diags,
                    "an environment variable name (letters, digits and `_`, not starting with a digit)",
                );
                None
            }
        })
        .collect();
    Some(names)
}

/// Reads a non-empty path.
fn path(o: &mut Obj<'_>, key: &'static str, diags: &mut Diags) -> Option<PathBuf> {
    let field = o.field(key)?;
    let text = field.str(diags)?;
    if text.is_empty() || text.contains('\0') {
        field.expected(diags, "a non-empty path such as \"data/mcp_servers\"");
        return None;
    }
    Some(PathBuf::from(text))
}

/// Reads the address to bind: an IP address or a host name, without a port.
fn host(field: &Field<'_>, diags: &mut Diags) -> Option<String> {
    let text = field.str(diags)?;
    if text.parse::<IpAddr>().is_ok() || is_host_name(text) {
        return Some(text.to_owned());
    }
    let hint = if text.starts_with('[') {
        "; write an IPv6 address without brackets, such as \"::1\""
    } else if text.contains("://") {
        "; write only the address, without a scheme"
    } else if text.contains(':') {
        "; put the port in mcp_hosting.dashboard.port"
    } else {
        ""
    };
    field.error(
        diags,
        format!("expected an IP address or host name such as \"127.0.0.1\", found {}{hint}", describe(field.value)),
    );
    None
}

/// Whether `text` is a host name: dot-separated labels of letters, digits and inner `-`.
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Reads the API token, never echoing it back in a message.
fn token(field: &Field<'_>, diags: &mut Diags) -> Option<String> {
    let text = field.secret_str(diags)?;
    let chars = text.chars().count();
    if chars < MIN_TOKEN_CHARS {
        field.error(
            diags,
            format!(
                "the token is {chars} characters long and must be at least {MIN_TOKEN_CHARS}; use a longer random token, or remove the key to use the one generated in mcp_hosting.auth.token_file"
            ),
        );
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        field.error(
            diags,
            "the token may only hold visible ASCII characters (no spaces), since it travels in an HTTP header",
        );
        return None;
    }
    Some(text.to_owned())
}
