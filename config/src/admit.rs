//! Admission of a parsed `server_config.json` on this host: the runtime it may use, its resource
//! limits clamped to the host's ceiling, and the upload's arguments laid over the archive's file.
//!
//! Pure, like the rest of the crate: which interpreter a runtime resolves to is the caller's business.

use std::fmt;

use serde_json::{Map, Value};

use crate::{ConfigErrors, Diagnostic, HostConfig, ServerConfig};

/// The runtimes a package may name as the first item of `command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `python` or `python3`: the server's own venv once its requirements are installed.
    Python,
    /// `node`.
    Node,
    /// `bash` or `sh`.
    Bash,
}

impl Runtime {
    /// The name `security.allowed_languages` uses.
    pub fn language(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Bash => "bash",
        }
    }

    /// The runtime a bare program name stands for, if any.
    pub fn from_program(program: &str) -> Option<Runtime> {
        match program {
            "python" | "python3" => Some(Runtime::Python),
            "node" | "nodejs" => Some(Runtime::Node),
            "bash" | "sh" => Some(Runtime::Bash),
            _ => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.language())
    }
}

/// The limits a server runs with: its requests, clamped to the host's ceiling, or the ceiling itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub memory_mb: u64,
    pub cpu_percent: u32,
    pub max_processes: u32,
    pub max_open_files: u64,
}

/// A server config admitted on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The runtime `command[0]` names.
    pub runtime: Runtime,
    /// The limits it runs with.
    pub limits: EffectiveLimits,
    /// Requests that were lowered to the host's ceiling, and the like.
    pub warnings: Vec<Diagnostic>,
}

/// Checks `cfg` against the host: `command[0]` must be an allowed runtime named bare (`python`, not
/// `/usr/bin/python3`), a script argument must stay inside the server's directory, and resource
/// requests above the host's ceiling are lowered to it.
pub fn admit(cfg: &ServerConfig, host: &HostConfig) -> Result<Admitted, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let allowed = &host.security.allowed_languages;
    let runtime = match cfg.command.first().map(String::as_str) {
        None => {
            errors.push(diag(
                "command",
                "the command is empty; give the program to run, such as [\"python\", \"server.py\"]",
            ));
            None
        }
        Some(program) => match Runtime::from_program(program) {
            Some(runtime) if allowed.iter().any(|l| l == runtime.language()) => Some(runtime),
            Some(runtime) => {
                errors.push(diag(
                    "command[0]",
                    format!(
                        "{runtime} servers are not allowed on this host (mcp_hosting.security.allowed_languages is [{}]); \
                         use one of those, or ask the operator to allow {runtime}",
                        allowed.join(", ")
                    ),
                ));
                None
            }
            None => {
                errors.push(diag(
                    "command[0]",
                    format!(
                        "`{}` is not an allowed runtime; start the command with one of {}, named without a path \
                         (hivehost picks the interpreter)",
                        printable(program),
                        allowed.join(", ")
                    ),
                ));
                None
            }
        },
    };
    if let Some(script) = cfg.command.get(1)
        && !script.starts_with('-')
        && let Some(problem) = outside(script)
    {
        errors.push(diag(
            "command[1]",
            format!("the script path {problem}; give a path inside the package, such as \"server.py\""),
        ));
    }
    let ceiling = host.resource_limits;
    let req = cfg.resource_limits;
    let mut clamp = |key: &str, asked: Option<u64>, max: u64| -> u64 {
        match asked {
            Some(asked) if asked > max => {
                warnings.push(diag(
                    &format!("resource_limits.{key}"),
                    format!("{asked} is above this host's ceiling of {max} (mcp_hosting.resource_limits.{key}); lowered to {max}"),
                ));
                max
            }
            Some(asked) => asked,
            None => max,
        }
    };
    let limits = EffectiveLimits {
        memory_mb: clamp("memory_mb", req.memory_mb, ceiling.memory_mb),
        cpu_percent: u32::try_from(clamp(
            "cpu_percent",
            req.cpu_percent.map(u64::from),
            u64::from(ceiling.cpu_percent),
        ))
        .unwrap_or(ceiling.cpu_percent),
        max_processes: u32::try_from(clamp(
            "max_processes",
            req.max_processes.map(u64::from),
            u64::from(ceiling.max_processes),
        ))
        .unwrap_or(ceiling.max_processes),
        max_open_files: clamp("max_open_files", req.max_open_files, ceiling.max_open_files),
    };
    match (runtime, errors.is_empty()) {
        (Some(runtime), true) => Ok(Admitted { runtime, limits, warnings }),
        _ => Err(ConfigErrors { errors, warnings }),
    }
}

/// Lays the arguments of `upload_mcp_server` over the archive's `server_config.json`.
///
/// Each key given in `overrides` replaces the file's, except `environment` and `resource_limits`,
/// which are merged key by key (so an upload can add one variable without restating the rest).
/// Returns an error when either is not a JSON object.
pub fn apply_overrides(file: &mut Value, overrides: &Value) -> Result<(), ConfigErrors> {
    let (Value::Object(target), Value::Object(over)) = (&mut *file, overrides) else {
        return Err(ConfigErrors {
            errors: vec![diag("", "server_config.json and the upload's arguments must both be JSON objects")],
            warnings: Vec::new(),
        });
    };
    for (key, value) in over {
        if value.is_null() {
            continue;
        }
        match (key.as_str(), target.get_mut(key), value) {
            ("environment" | "resource_limits", Some(Value::Object(existing)), Value::Object(added)) => {
                merge(existing, added);
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn merge(existing: &mut Map<String, Value>, added: &Map<String, Value>) {
    for (key, value) in added {
        existing.insert(key.clone(), value.clone());
    }
}

/// Why a script path leaves the server's directory, if it does.
fn outside(path: &str) -> Option<&'static str> {
    if path.starts_with('/') || path.starts_with('\\') || path.starts_with('~') {
        Some("is absolute")
    } else if path.split(['/', '\\']).any(|part| part == "..") {
        Some("contains `..`")
    } else {
        None
    }
}

/// A program name as it may appear in a message: control characters escaped, long names cut.
fn printable(text: &str) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).take(64).collect();
    escaped
}

fn diag(path: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic { path: path.to_owned(), message: message.into() }
}
