//! A package's `server_config.json`: what to run, how to restart it, how to check it and how to confine it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::expand_vars;
use crate::reader::{Diags, Field, MinDuration, Obj, describe, is_env_name, quote};

/// The longest server name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// The longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 1024;
/// The most items `command` may have.
const MAX_COMMAND_ITEMS: usize = 256;
/// The longest `command` item, in bytes.
const MAX_COMMAND_ITEM_BYTES: usize = 4096;
/// The most entries `environment` may have.
const MAX_ENVIRONMENT_ENTRIES: usize = 256;
/// The largest `memory_mb` whose size in bytes still fits a `u64`.
const MAX_MEMORY_MB: u64 = u64::MAX >> 20;

/// Variables that change how a loader, interpreter or shell runs whatever it runs: a package may not
/// set them, since they defeat what was scanned and what the runtime check allowed.
const DENIED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONINSPECT",
    "PYTHONEXECUTABLE",
    "PYTHONBREAKPOINT",
    "PYTHONSAFEPATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_REPL_EXTERNAL_MODULE",
    "NODE_EXTRA_CA_CERTS",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYOPT",
    "RUBYLIB",
    "GCONV_PATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RESOLV_HOST_CONF",
];

/// Prefixes of variables refused for the same reason (`LD_PRELOAD`, `LD_AUDIT`, exported bash functions).
const DENIED_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "MALLOC_"];

/// Whether a package may set the variable `name`.
pub fn env_name_allowed(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    !DENIED_ENV.contains(&upper.as_str()) && !DENIED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Keys users put at the top level that are spelt differently or belong to a section.
const SERVER_HINTS: &[(&str, &str)] = &[
    ("env", "environment"),
    ("cwd", "working_dir"),
    ("workdir", "working_dir"),
    ("args", "command"),
    ("memory_mb", "resource_limits.memory_mb"),
    ("cpu_percent", "resource_limits.cpu_percent"),
    ("max_processes", "resource_limits.max_processes"),
    ("max_open_files", "resource_limits.max_open_files"),
    ("health_check_timeout_seconds", "health_check_timeout"),
];

/// One hosted server's settings, from its package's `server_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// A display name: 1 to 64 letters, digits, spaces, `-`, `_` or `.`.
    pub name: String,
    /// Free text for people, at most 1024 characters.
    pub description: String,
    /// The program and its arguments, run from the server's directory; never through a shell.
    pub command: Vec<String>,
    /// Variables set for the server in its otherwise cleared environment; values may hold `${NAME}`.
    pub environment: BTreeMap<String, String>,
    /// A directory inside the server's directory to run in; `None` is the server's directory itself.
    pub working_dir: Option<String>,
    /// How hivehost talks MCP with the server.
    pub transport: Transport,
    /// Whether the server starts when `hivehost serve` boots.
    pub autostart: bool,
    /// When and how fast the server is restarted after it exits or fails its health check.
    pub restart: RestartConfig,
    /// An HTTP health check; `None` means the MCP ping over the server's own session.
    pub health: Option<HealthConfig>,
    /// How often and how patiently a stdio server without `health_check_url` is pinged over MCP
    /// (the same `health_check_interval`, `health_check_timeout` and `failures_before_restart` keys).
    pub ping: PingConfig,
    /// Caps on the server's process tree.
    pub resource_limits: ResourceLimits,
    /// Whether to sandbox the server; `None` follows `security.sandbox_by_default`.
    pub sandboxed: Option<bool>,
    /// Whether the server may use the network.
    pub allowed_network: bool,
    /// What the server may do with its files, each `read` or `write`.
    pub allowed_filesystem: Vec<String>,
    /// The user to run as, when the host may switch users.
    pub user: Option<String>,
}

/// How hivehost talks MCP with a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Over the child's stdin and stdout.
    #[default]
    Stdio,
    /// Over streamable HTTP on this port of 127.0.0.1.
    Http {
        /// The port the server listens on.
        port: u16,
    },
    /// No MCP at all (`"transport": "none"`): a plain supervised process whose stdout is a log.
    None,
}

/// When a server is restarted, as the `restart_mode` key names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Never restart.
    Never,
    /// Restart after a crash, a non-zero exit or a failed health check.
    OnFailure,
    /// Restart after any exit, a clean one included.
    Always,
}

/// How the delay between restarts grows, as the `backoff` key names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Always `restart_delay`.
    Fixed,
    /// `restart_delay` times `backoff_multiplier` per consecutive failure, up to `max_restart_delay`.
    Exponential,
}

/// The restart policy, read from flat top-level keys as the seed wrote them.
///
/// Only types and basic ranges are checked here; the policy crate checks how the values fit together.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    /// `auto_restart`: false means never restart, whatever `restart_mode` says.
    pub auto_restart: bool,
    /// `restart_mode`, when given; see [`RestartConfig::effective_mode`].
    pub restart_mode: Option<RestartMode>,
    /// `max_restarts` within `restart_window` before giving up.
    pub max_restarts: u32,
    /// `restart_delay`: the first delay.
    pub restart_delay: Duration,
    /// `restart_window`: the sliding window for `max_restarts`.
    pub restart_window: Duration,
    /// `backoff`, when given; see [`RestartConfig::effective_backoff`].
    pub backoff: Option<Backoff>,
    /// `backoff_multiplier`: growth per consecutive failure.
    pub backoff_multiplier: f64,
    /// `max_restart_delay`: the cap on the delay.
    pub max_restart_delay: Duration,
    /// `jitter`: the random fraction added to each delay.
    pub jitter: f64,
    /// `reset_after`: healthy running time that ends a failure streak.
    pub reset_after: Duration,
    /// `start_timeout`: how long a start may take before it counts as failed; above zero.
    pub start_timeout: Duration,
    /// `shutdown_timeout`: how long a stop waits after SIGTERM before SIGKILL.
    pub shutdown_timeout: Duration,
    /// Whether `backoff_multiplier` or `max_restart_delay` was given, which implies exponential backoff.
    pub backoff_tuned: bool,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            auto_restart: true,
            restart_mode: None,
            max_restarts: 5,
            restart_delay: Duration::from_secs(5),
            restart_window: Duration::from_secs(60),
            backoff: None,
            backoff_multiplier: 2.0,
            max_restart_delay: Duration::from_secs(60),
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
            start_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            backoff_tuned: false,
        }
    }
}

impl RestartConfig {
    /// The backoff in force: `backoff` if given, else exponential if its parameters were tuned, else fixed.
    ///
    /// So a config with only the seed's keys keeps the seed's fixed delay.
    pub fn effective_backoff(&self) -> Backoff {
        match self.backoff {
            Some(backoff) => backoff,
            None if self.backoff_tuned => Backoff::Exponential,
            None => Backoff::Fixed,
        }
    }

    /// The mode in force: never when `auto_restart` is false, else `restart_mode`, else on-failure.
    pub fn effective_mode(&self) -> RestartMode {
        if self.auto_restart { self.restart_mode.unwrap_or(RestartMode::OnFailure) } else { RestartMode::Never }
    }
}

/// An HTTP health check of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// An `http://` URL answered with a 2xx status while the server is healthy.
    pub url: String,
    /// Time between checks.
    pub interval: Duration,
    /// How long one check may take; shorter than `interval`.
    pub timeout: Duration,
    /// Consecutive failed checks that make the server restart; at least 1.
    pub failures_before_restart: u32,
}

/// The MCP ping of a stdio server without an HTTP health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingConfig {
    /// `None`: the host's `health_check_interval`.
    pub interval: Option<Duration>,
    pub timeout: Duration,
    pub failures_before_restart: u32,
}

impl Default for PingConfig {
    fn default() -> Self {
        let d = HealthConfig::with_url(String::new());
        PingConfig { interval: None, timeout: d.timeout, failures_before_restart: d.failures_before_restart }
    }
}

impl HealthConfig {
    /// A check of `url` with the default interval (30 s), timeout (5 s) and failure count (3).
    pub fn with_url(url: String) -> Self {
        Self { url, interval: Duration::from_secs(30), timeout: Duration::from_secs(5), failures_before_restart: 3 }
    }
}

/// Caps on a server's process tree; `None` means no cap of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceLimits {
    /// Memory of the whole tree, in MiB; at least 16.
    pub memory_mb: Option<u64>,
    /// CPU time as a percentage of one core, like systemd's `CPUQuota` (200 is two cores); 1 to 102400.
    pub cpu_percent: Option<u32>,
    /// Processes and threads in the tree; at least 1.
    pub max_processes: Option<u32>,
    /// Open files per process; at least 16.
    pub max_open_files: Option<u64>,
}

/// Reads the whole `server_config.json` document, reporting problems into `diags`.
pub(crate) fn read(root: &Value, diags: &mut Diags) -> ServerConfig {
    let mut o = match root {
        Value::Object(map) => Obj::new(String::new(), map),
        other => {
            diags.error(
                "",
                format!(
                    "expected a JSON object such as {{\"name\": \"weather\", \"command\": [\"python\", \"server.py\"]}}, found {}",
                    describe(other)
                ),
            );
            return placeholder();
        }
    };
    let name = read_name(&mut o, diags);
    let description = read_description(&mut o, diags);
    let command = read_command(&mut o, diags);
    let environment = read_environment(&mut o, diags);
    let working_dir = o.field("working_dir").and_then(|f| working_dir(&f, diags));
    let transport = read_transport(&mut o, diags);
    let autostart = o.bool("autostart", diags).unwrap_or(false);
    let restart = read_restart(&mut o, diags);
    let (health, ping) = read_health(&mut o, diags, transport);
    let config = ServerConfig {
        name,
        description,
        command,
        environment,
        working_dir,
        transport,
        autostart,
        restart,
        health,
        ping,
        resource_limits: read_limits(&mut o, diags),
        sandboxed: o.bool("sandboxed", diags),
        allowed_network: o.bool("allowed_network", diags).unwrap_or(true),
        allowed_filesystem: read_filesystem(&mut o, diags),
        user: o.field("user").and_then(|f| user(&f, diags)),
    };
    o.finish(diags, SERVER_HINTS);
    config
}

/// A config returned alongside errors, so it is never looked at.
fn placeholder() -> ServerConfig {
    ServerConfig {
        name: String::new(),
        description: String::new(),
        command: Vec::new(),
        environment: BTreeMap::new(),
        working_dir: None,
        transport: Transport::Stdio,
        autostart: false,
        restart: RestartConfig::default(),
        health: None,
        ping: PingConfig::default(),
        resource_limits: ResourceLimits::default(),
        sandboxed: None,
        allowed_network: true,
        allowed_filesystem: vec!["read".to_owned()],
        user: None,
    }
}

fn read_name(o: &mut Obj<'_>, diags: &mut Diags) -> String {
    let Some(field) = o.field("name") else {
        o.missing("name", diags, "give the server a name such as \"weather\"");
        return String::new();
    };
    let Some(name) = field.str(diags) else {
        return String::new();
    };
    let chars = name.chars().count();
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.');
    let problem = if chars == 0 || chars > MAX_NAME_CHARS {
        Some(format!("must be 1 to {MAX_NAME_CHARS} characters long, not {chars}"))
    } else if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        Some(format!("contains {}", quote(&bad.to_string())))
    } else if name.starts_with(' ') || name.ends_with(' ') {
        Some("starts or ends with a space".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => {
            field.error(
                diags,
                format!("the name {problem}; use 1 to {MAX_NAME_CHARS} letters, digits, spaces, `-`, `_` or `.`"),
            );
            String::new()
        }
        None => name.to_owned(),
    }
}

fn read_description(o: &mut Obj<'_>, diags: &mut Diags) -> String {
    let Some(field) = o.field("description") else {
        return String::new();
    };
    let Some(text) = field.str(diags) else {
        return String::new();
    };
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        field.error(
            diags,
            format!("the description is {chars} characters long; shorten it to at most {MAX_DESCRIPTION_CHARS}"),
        );
    }
    text.to_owned()
}

fn read_command(o: &mut Obj<'_>, diags: &mut Diags) -> Vec<String> {
    const EXAMPLE: &str = "an array of strings such as [\"python\", \"server.py\"]";
    let Some(field) = o.field("command") else {
        o.missing("command", diags, &format!("give the program to run as {EXAMPLE}"));
        return Vec::new();
    };
    if let Value::String(s) = field.value {
        field.error(
            diags,
            format!(
                "expected {EXAMPLE}, found {}; split the program and each argument into separate strings",
                quote(s)
            ),
        );
        return Vec::new();
    }
    let Some(items) = field.array(diags) else {
        return Vec::new();
    };
    if items.is_empty() {
        field.error(diags, format!("the command is empty; give the program to run as {EXAMPLE}"));
        return Vec::new();
    }
    if items.len() > MAX_COMMAND_ITEMS {
        field.error(diags, format!("the command has {} items; it may have at most {MAX_COMMAND_ITEMS}", items.len()));
        return Vec::new();
    }
    items
        .iter()
        .filter_map(|item| {
            let text = item.str(diags)?;
            if text.is_empty() {
                item.error(diags, "empty argument; remove it or give it a value");
                None
            } else if text.contains('\0') {
                item.error(diags, "contains a NUL character, which no program can receive; remove it");
                None
            } else if text.len() > MAX_COMMAND_ITEM_BYTES {
                item.error(
                    diags,
                    format!(
                        "the argument is {} bytes long; shorten it to at most {MAX_COMMAND_ITEM_BYTES}",
                        text.len()
                    ),
                );
                None
            } else {
                Some(text.to_owned())
            }
        })
        .collect()
}

fn read_environment(o: &mut Obj<'_>, diags: &mut Diags) -> BTreeMap<String, String> {
    let mut environment = BTreeMap::new();
    let Some(field) = o.field("environment") else {
        return environment;
    };
    let Value::Object(map) = field.value else {
        field.expected(diags, "an object of strings such as {\"LOG_LEVEL\": \"info\"}");
        return environment;
    };
    if map.len() > MAX_ENVIRONMENT_ENTRIES {
        field.error(
            diags,
            format!("the environment has {} entries; it may have at most {MAX_ENVIRONMENT_ENTRIES}", map.len()),
        );
        return environment;
    }
    let section = Obj::new(field.path.clone(), map);
    for (key, value) in map {
        let path = section.key_path(key);
        if !is_env_name(key) {
            diags.error(&path, "invalid variable name; use letters, digits and `_`, not starting with a digit");
            continue;
        }
        if !env_name_allowed(key) {
            diags.error(
                &path,
                "this variable changes how the runtime loads code, so packages may not set it; remove it (hivehost sets PATH and HOME itself)",
            );
            continue;
        }
        // Values are never shown back: they may be secrets.
        let text = match value {
            Value::String(text) => text,
            Value::Number(_) | Value::Bool(_) => {
                diags.error(
                    &path,
                    format!("expected a string, found {}; put the value in quotes", crate::reader::kind(value)),
                );
                continue;
            }
            other => {
                diags.error(&path, format!("expected a string, found {}", describe_kind(other)));
                continue;
            }
        };
        if text.contains('\0') {
            diags.error(&path, "the value contains a NUL character, which no program can receive; remove it");
            continue;
        }
        // Only the syntax can be checked here: which host variables exist is the caller's business.
        if let Err(problem) = expand_vars(text, &|_| Some(String::new())) {
            diags.error(&path, problem);
            continue;
        }
        environment.insert(key.clone(), text.clone());
    }
    environment
}

fn describe_kind(value: &Value) -> String {
    match value {
        Value::Null => "null; remove the entry or give it a string".to_owned(),
        other => crate::reader::kind(other).to_owned(),
    }
}

fn working_dir(field: &Field<'_>, diags: &mut Diags) -> Option<String> {
    let text = field.str(diags)?;
    let problem = if text.is_empty() {
        Some("it is empty")
    } else if text.contains('\0') {
        Some("it contains a NUL character")
    } else if text.starts_with('/') || text.starts_with('\\') {
        Some("it is absolute")
    } else if text.split(['/', '\\']).any(|part| part == "..") {
        Some("it contains `..`")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            field.error(
                diags,
                format!(
                    "{problem}; give a relative path inside the server's directory, such as \"src\", or remove the key"
                ),
            );
            None
        }
        None => Some(text.to_owned()),
    }
}

fn read_transport(o: &mut Obj<'_>, diags: &mut Diags) -> Transport {
    let kind = o.field("transport").map(|f| f.choice(diags, &["stdio", "http", "none"]));
    let port_field = o.field("port");
    let port = port_field.as_ref().and_then(|f| f.int::<u16>(diags, 1, 65535));
    match (kind, port_field) {
        (Some(Some("http")), Some(_)) => port.map_or(Transport::Stdio, |port| Transport::Http { port }),
        (Some(Some("http")), None) => {
            o.missing(
                "port",
                diags,
                "\"transport\": \"http\" needs the port the server listens on, such as \"port\": 8080",
            );
            Transport::Stdio
        }
        (None | Some(Some(_)), Some(field)) => {
            field.error(diags, "a port is only used with \"transport\": \"http\"; set that, or remove the port");
            Transport::Stdio
        }
        (Some(Some("none")), None) => Transport::None,
        _ => Transport::Stdio,
    }
}

fn read_restart(o: &mut Obj<'_>, diags: &mut Diags) -> RestartConfig {
    let d = RestartConfig::default();
    let auto_restart = o.bool("auto_restart", diags);
    let mode_field = o.field("restart_mode");
    let restart_mode =
        mode_field.as_ref().and_then(|f| f.choice(diags, &["never", "on-failure", "always"])).map(|mode| match mode {
            "never" => RestartMode::Never,
            "always" => RestartMode::Always,
            _ => RestartMode::OnFailure,
        });
    if let Some(field) = &mode_field {
        match (auto_restart, restart_mode) {
            (Some(false), Some(RestartMode::OnFailure | RestartMode::Always)) => {
                field.error(diags, "contradicts \"auto_restart\": false; remove one of the two keys")
            }
            (Some(true), Some(RestartMode::Never)) => diags.warn(
                &field.path,
                "\"auto_restart\": true is overridden by \"restart_mode\": \"never\"; remove one of the two keys",
            ),
            _ => {}
        }
    }
    let max_restarts = o.int("max_restarts", diags, 0, u64::MAX).unwrap_or(d.max_restarts);
    let restart_delay = o.duration("restart_delay", diags, MinDuration::Zero).unwrap_or(d.restart_delay);
    let restart_window = o.duration("restart_window", diags, MinDuration::Zero).unwrap_or(d.restart_window);
    let backoff = o
        .field("backoff")
        .and_then(|f| f.choice(diags, &["fixed", "exponential"]))
        .map(|b| if b == "fixed" { Backoff::Fixed } else { Backoff::Exponential });
    let multiplier_field = o.field("backoff_multiplier");
    let backoff_multiplier = multiplier_field.as_ref().and_then(|f| f.float(diags));
    if let (Some(field), Some(Backoff::Fixed)) = (&multiplier_field, backoff) {
        diags.warn(
            &field.path,
            "ignored because \"backoff\" is \"fixed\"; remove it, or set \"backoff\": \"exponential\"",
        );
    }
    let max_delay_field = o.field("max_restart_delay");
    let max_restart_delay = max_delay_field.as_ref().and_then(|f| f.duration(diags, MinDuration::Zero));
    RestartConfig {
        auto_restart: auto_restart.unwrap_or(d.auto_restart),
        restart_mode,
        max_restarts,
        restart_delay,
        restart_window,
        backoff,
        backoff_multiplier: backoff_multiplier.unwrap_or(d.backoff_multiplier),
        max_restart_delay: max_restart_delay.unwrap_or(d.max_restart_delay),
        jitter: o.float("jitter", diags).unwrap_or(d.jitter),
        reset_after: o.duration("reset_after", diags, MinDuration::Zero).unwrap_or(d.reset_after),
        start_timeout: o.duration("start_timeout", diags, MinDuration::Positive).unwrap_or(d.start_timeout),
        shutdown_timeout: o.duration("shutdown_timeout", diags, MinDuration::Zero).unwrap_or(d.shutdown_timeout),
        backoff_tuned: multiplier_field.is_some() || max_delay_field.is_some(),
    }
}

/// The HTTP health check, if `health_check_url` is set, and the MCP ping's timing otherwise.
fn read_health(o: &mut Obj<'_>, diags: &mut Diags, transport: Transport) -> (Option<HealthConfig>, PingConfig) {
    let url_field = o.field("health_check_url");
    let url = url_field.as_ref().and_then(|f| health_url(f, diags));
    let d = HealthConfig::with_url(String::new());
    let interval_field = o.field("health_check_interval");
    let interval = interval_field.as_ref().and_then(|f| f.duration(diags, MinDuration::Positive));
    let timeout_field = o.field("health_check_timeout");
    let timeout = timeout_field.as_ref().and_then(|f| f.duration(diags, MinDuration::Positive));
    let failures_field = o.field("failures_before_restart");
    let failures = failures_field.as_ref().and_then(|f| f.int::<u32>(diags, 1, u64::MAX));
    let url_given = url_field.as_ref().is_some_and(|f| f.value.as_str() != Some(""));
    if !url_given && transport != Transport::Stdio {
        for field in [&interval_field, &timeout_field, &failures_field].into_iter().flatten() {
            diags.warn(&field.path, "ignored because health_check_url is not set; set it, or remove this key");
        }
        return (None, PingConfig::default());
    }
    let health = HealthConfig {
        url: url.unwrap_or_default(),
        interval: interval.unwrap_or(d.interval),
        timeout: timeout.unwrap_or(d.timeout),
        failures_before_restart: failures.unwrap_or(d.failures_before_restart),
    };
    let both_valid = (interval_field.is_none() || interval.is_some()) && (timeout_field.is_none() || timeout.is_some());
    // The MCP ping's default timeout shrinks to half a short interval (see `spec_for`); one given
    // explicitly, or an HTTP check's, must be shorter than the interval.
    let checked = url_given || timeout_field.is_some();
    if both_valid && checked && health.timeout >= health.interval {
        let path = timeout_field.as_ref().map_or_else(|| o.key_path("health_check_timeout"), |f| f.path.clone());
        diags.error(
            &path,
            format!(
                "the timeout ({}) must be shorter than health_check_interval ({}); lower it or raise the interval",
                crate::duration::format(health.timeout),
                crate::duration::format(health.interval)
            ),
        );
    }
    if !url_given {
        // A stdio server without a URL is pinged over MCP with the same timing.
        let ping = PingConfig {
            interval: interval_field.is_some().then_some(health.interval),
            timeout: health.timeout,
            failures_before_restart: health.failures_before_restart,
        };
        return (None, ping);
    }
    (Some(health), PingConfig::default())
}

/// Reads a health check URL: `http://` with a host, optionally a port and path; `""` means none.
fn health_url(field: &Field<'_>, diags: &mut Diags) -> Option<String> {
    let text = field.str(diags)?;
    if text.is_empty() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("https://") {
        field.error(diags, "https is not supported yet; use http://, which is fine for a server on this machine");
        return None;
    }
    let problem = match lower.strip_prefix("http://") {
        None => Some("it does not start with http://"),
        Some(rest) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some("it contains spaces or control characters")
            } else if authority.contains('@') {
                Some("it contains credentials (`user@`), which are not supported")
            } else if !valid_authority(authority) {
                Some("it has no valid host and port")
            } else {
                None
            }
        }
    };
    match problem {
        Some(problem) => {
            field.error(
                diags,
                format!(
                    "{problem}; expected a URL such as \"http://localhost:8080/health\", found {}",
                    describe(field.value)
                ),
            );
            None
        }
        None => Some(text.to_owned()),
    }
}

/// Whether `authority` is `host` or `host:port`, the host possibly a bracketed IPv6 address.
fn valid_authority(authority: &str) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => ("v6", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok =
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

fn read_limits(o: &mut Obj<'_>, diags: &mut Diags) -> ResourceLimits {
    let Some(mut section) = o.object("resource_limits", diags) else {
        return ResourceLimits::default();
    };
    let limits = ResourceLimits {
        memory_mb: section.int("memory_mb", diags, 16, MAX_MEMORY_MB),
        cpu_percent: section.int("cpu_percent", diags, 1, 100 * 1024),
        max_processes: section.int("max_processes", diags, 1, u64::MAX),
        max_open_files: section.int("max_open_files", diags, 16, u64::MAX),
    };
    section.finish(diags, &[("memory", "memory_mb"), ("cpu", "cpu_percent"), ("pids", "max_processes")]);
    limits
}

fn read_filesystem(o: &mut Obj<'_>, diags: &mut Diags) -> Vec<String> {
    let Some(items) = o.field("allowed_filesystem").and_then(|f| f.array(diags)) else {
        return vec!["read".to_owned()];
    };
    items.iter().filter_map(|item| item.choice(diags, &["read", "write"])).map(str::to_owned).collect()
}

/// Reads a user name (or numeric id): letters, digits, `_`, `.`, `-`, not starting with `-`, at most 32.
fn user(field: &Field<'_>, diags: &mut Diags) -> Option<String> {
    let text = field.str(diags)?;
    let body = text.strip_suffix('$').unwrap_or(text);
    let valid = !body.is_empty()
        && text.len() <= 32
        && !body.starts_with('-')
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid && (body == "root" || body.bytes().all(|b| b.is_ascii_digit()) && body.trim_start_matches('0').is_empty())
    {
        field.error(
            diags,
            "servers never run as root; remove the key (hivehost gives each sandboxed server a user of its own)",
        );
        None
    } else if valid {
        Some(text.to_owned())
    } else {
        field.expected(
            diags,
            "a user name such as \"nobody\" (letters, digits, `_`, `.` or `-`, at most 32 characters)",
        );
        None
    }
}
