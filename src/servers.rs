//! From a server directory and its `server_config.json` to the supervisor's `ServerSpec`.
//!
//! The conversion is pure (files are read by the caller): it checks the id, expands `${NAME}` only
//! from host variables the config allows, validates the restart policy, and lays out paths.

use std::path::{Path, PathBuf};

use actors::{HealthCheck, HealthSpec, Limits, LogSpec, ServerSpec, Transport};
use config::{HostConfig, Runtime, ServerConfig};

/// The file in a server directory that describes the server.
pub const SERVER_CONFIG: &str = "server_config.json";

/// Checks a server id: 1 to 64 of `a-z`, `A-Z`, `0-9`, `-`, `_`, not starting with `-` or `.`.
pub fn validate_id(id: &str) -> Result<(), String> {
    let ok_chars = id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if id.is_empty() || id.len() > 64 || !ok_chars || id.starts_with('-') {
        return Err(format!(
            "invalid server id `{id}`: use 1 to 64 letters, digits, `-` or `_`, not starting with `-`"
        ));
    }
    Ok(())
}

/// Everything that was wrong with one server, each problem naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<String>);

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Where and as whom a server is confined, decided by the app (not by its config).
#[derive(Clone, Debug)]
pub struct Confinement {
    /// Its uid and gid, when sandboxed.
    pub uid: u32,
    /// Where its private /tmp and new root's mount point go.
    pub run_dir: PathBuf,
    /// `security.require_sandbox`, resolved for this host.
    pub require: bool,
}

/// System directories every sandboxed server may read; an interpreter elsewhere is added to its view.
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64"];

/// Builds the spec of server `id`, whose code lies in `code_dir` (absolute) and whose writable home
/// is `home_dir` (absolute), confined as `confinement` says when it is sandboxed. `program` names
/// the interpreter of a runtime for this server. Returns the spec and warnings, or every error.
#[allow(clippy::too_many_arguments)]
pub fn spec_for(
    host: &HostConfig,
    id: &str,
    code_dir: &Path,
    home_dir: &Path,
    confinement: &Confinement,
    cfg: &ServerConfig,
    host_env: &dyn Fn(&str) -> Option<String>,
    program: &dyn Fn(Runtime) -> Result<PathBuf, String>,
) -> Result<(ServerSpec, Vec<String>), SpecErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Err(err) = validate_id(id) {
        errors.push(err);
    }
    let admitted = match config::admit(cfg, host) {
        Ok(admitted) => {
            warnings.extend(admitted.warnings.iter().map(ToString::to_string));
            Some(admitted)
        }
        Err(refused) => {
            errors.extend(refused.errors.iter().map(ToString::to_string));
            None
        }
    };
    let mut command = cfg.command.clone();
    if let Some(admitted) = &admitted {
        match program(admitted.runtime) {
            Ok(path) => command[0] = path.display().to_string(),
            Err(err) => errors.push(format!("command[0]: {err}")),
        }
    }
    let allowed = |name: &str| {
        if host.env_allowlist.iter().any(|allowed| allowed == name) { host_env(name) } else { None }
    };
    // A cleared environment plus the few variables every program expects; the server's own win.
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), actors::process::DEFAULT_PATH.into()),
        ("HOME".into(), home_dir.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for (name, value) in &cfg.environment {
        match config::expand_vars(value, &allowed) {
            Ok(value) => {
                env.retain(|(k, _)| k != name);
                env.push((name.clone(), value));
            }
            Err(err) => errors.push(format!("environment.{name}: {err}")),
        }
    }
    let restart = &cfg.restart;
    let policy_cfg = policy::PolicyConfig {
        mode: match restart.effective_mode() {
            config::RestartMode::Never => policy::RestartMode::Never,
            config::RestartMode::OnFailure => policy::RestartMode::OnFailure,
            config::RestartMode::Always => policy::RestartMode::Always,
        },
        max_restarts: restart.max_restarts,
        restart_window_ms: millis(restart.restart_window),
        restart_delay_ms: millis(restart.restart_delay),
        backoff: match restart.effective_backoff() {
            config::Backoff::Fixed => policy::Backoff::Fixed,
            config::Backoff::Exponential => policy::Backoff::Exponential,
        },
        backoff_multiplier: restart.backoff_multiplier,
        max_restart_delay_ms: millis(restart.max_restart_delay),
        jitter: restart.jitter,
        reset_after_ms: millis(restart.reset_after),
    };
    let policy = match policy::RestartPolicy::new(policy_cfg) {
        Ok((policy, policy_warnings)) => {
            warnings.extend(policy_warnings.iter().map(ToString::to_string));
            Some(policy)
        }
        Err(invalid) => {
            errors.extend(invalid.problems.iter().map(ToString::to_string));
            None
        }
    };
    let working_dir = match &cfg.working_dir {
        Some(sub) => code_dir.join(sub),
        None => code_dir.to_path_buf(),
    };
    let (Some(policy), Some(admitted), true) = (policy, admitted, errors.is_empty()) else {
        return Err(SpecErrors(errors));
    };
    let logs = LogSpec {
        dir: host.logs_dir.join(id),
        ring_lines: host.logs.ring_lines,
        max_line_bytes: host.logs.max_line_bytes,
        max_file_bytes: host.logs.max_file_bytes,
        max_files: host.logs.max_files,
    };
    let mut spec = ServerSpec::new(id, command, working_dir, logs);
    spec.name = cfg.name.clone();
    spec.env = env;
    spec.transport = match cfg.transport {
        config::Transport::Stdio => Transport::Stdio,
        config::Transport::Http { port } => Transport::Http { port },
        config::Transport::None => Transport::None,
    };
    spec.policy = policy;
    spec.start_timeout = restart.start_timeout;
    spec.shutdown_timeout = restart.shutdown_timeout;
    spec.health = match (&cfg.health, cfg.transport) {
        (Some(h), _) => Some(HealthSpec {
            check: HealthCheck::Http { url: h.url.clone() },
            interval: h.interval,
            timeout: h.timeout,
            failures_before_restart: h.failures_before_restart,
        }),
        // A stdio server without a URL is pinged over its own MCP session.
        (None, config::Transport::Stdio) => Some(HealthSpec {
            check: HealthCheck::McpPing,
            interval: cfg.ping.interval.unwrap_or(host.health_check_interval),
            // Shorter than the interval, whichever set it.
            timeout: cfg.ping.timeout.min(cfg.ping.interval.unwrap_or(host.health_check_interval) / 2),
            failures_before_restart: cfg.ping.failures_before_restart,
        }),
        (None, _) => None,
    };
    spec.limits = Limits {
        memory_mb: Some(admitted.limits.memory_mb),
        cpu_percent: Some(admitted.limits.cpu_percent),
        max_processes: Some(admitted.limits.max_processes),
        max_open_files: Some(admitted.limits.max_open_files),
    };
    spec.metrics_interval = host.metrics_interval;
    spec.metrics_history = host.metrics_history;
    let confine = cfg.sandboxed.unwrap_or(host.security.sandbox_by_default);
    if let (config::Transport::Http { port }, false, true) = (cfg.transport, cfg.allowed_network, confine) {
        return Err(SpecErrors(vec![format!(
            "transport http (port {port}) with allowed_network false: the server would listen inside a network namespace of its own, where hivehost cannot reach it; use the stdio transport, or set allowed_network to true"
        )]));
    }
    if let (Some(user), true) = (&cfg.user, confine) {
        warnings.push(format!(
            "user: \"{user}\" is not used: hivehost runs each sandboxed server as a uid of its own ({}), never a shared account",
            confinement.uid
        ));
    }
    // An interpreter outside the system directories and the code is added to what it may read.
    let program = std::fs::canonicalize(&spec.command[0]).unwrap_or_else(|_| PathBuf::from(&spec.command[0]));
    let read_paths = if program.starts_with(code_dir) || SYSTEM_DIRS.iter().any(|d| program.starts_with(d)) {
        Vec::new()
    } else {
        vec![program]
    };
    spec.sandbox = actors::sandbox::SandboxSpec {
        confine,
        cgroup: true,
        uid: confinement.uid,
        gid: confinement.uid,
        network: cfg.allowed_network,
        code_dir: code_dir.to_path_buf(),
        state_dir: home_dir.to_path_buf(),
        writable_state: cfg.allowed_filesystem.iter().any(|f| f == "write"),
        run_dir: confinement.run_dir.clone(),
        read_paths,
        require: confinement.require,
    };
    Ok((spec, warnings))
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
