//! Parses and validates hivehost's `config.json` and a package's `server_config.json` from text.
//!
//! The crate is pure: it never reads files or the environment, so the caller decides where text comes
//! from and which host variables `${NAME}` may expand from. Every parser reports all problems at once,
//! each with the JSON path it concerns (`mcp_hosting.dashboard.port: expected a number from 0 to
//! 65535, found "abc"`), because fixing a config one error per run is tedious. Unknown keys are
//! warnings, not errors, so a newer file still loads in an older hivehost; when an unknown key is
//! close to a known one the warning suggests it.
//!
//! Durations are written either as a JSON number of seconds (`5`, `0.25`) or as a string with a unit
//! (`"250ms"`, `"5s"`, `"2m"`, `"1h"`; a bare `"5"` means seconds).

mod admit;
mod duration;
mod host;
mod reader;
mod server;
mod vars;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

pub use admit::{Admitted, EffectiveLimits, Runtime, admit, apply_overrides};
pub use host::{
    AuthConfig, DashboardConfig, DependenciesConfig, HostConfig, HostLimits, LogsConfig, SecurityConfig,
    SupervisorConfig,
};
pub use server::{
    Backoff, HealthConfig, PingConfig, ResourceLimits, RestartConfig, RestartMode, ServerConfig, Transport,
    env_name_allowed,
};
pub use vars::expand_vars;

use reader::Diags;

/// The shipped `config/config.json`: every key present with its default value.
pub const DEFAULT_CONFIG_JSON: &str = include_str!("../config.json");

/// One problem found in a config file, located by its JSON path.
///
/// The path uses dots for object keys and brackets for array indexes (`security.allowed_languages[1]`);
/// a key that is not a plain word is quoted (`environment["MY VAR"]`). Problems with the document as a
/// whole, such as a JSON syntax error, have an empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is, e.g. `mcp_hosting.dashboard.port`; empty for the whole document.
    pub path: String,
    /// What is wrong and how to fix it; lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// Writes `path: message`, or only the message when the path is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every error found in a config file, with the warnings found alongside them.
///
/// Its `Display` writes one error per line; warnings are left to the caller, which usually logs them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The errors, in the order the fields are read; never empty.
    pub errors: Vec<Diagnostic>,
    /// Warnings such as unknown keys, which alone would not have failed the parse.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A successfully parsed config and the warnings (unknown keys and the like) met on the way.
#[derive(Debug)]
pub struct Parsed<T> {
    /// The validated config.
    pub value: T,
    /// Problems that did not stop the parse; worth logging.
    pub warnings: Vec<Diagnostic>,
}

/// Parses the host's `config.json`.
///
/// The top level must be an object with an `mcp_hosting` key; its other keys belong to other tools
/// sharing the file and are ignored silently. Missing keys take their defaults.
pub fn parse_host_config(text: &str) -> Result<Parsed<HostConfig>, ConfigErrors> {
    parse_with(text, host::read)
}

/// Parses a package's `server_config.json`.
///
/// `name` and `command` are required; everything else has a default. Values in `environment` may
/// contain `${NAME}` references: their syntax is checked here, and the caller expands them with
/// [`expand_vars`] once it knows which host variables are allowed.
pub fn parse_server_config(text: &str) -> Result<Parsed<ServerConfig>, ConfigErrors> {
    parse_with(text, server::read)
}

/// Validates an already decoded `server_config.json`.
///
/// This serves callers that merge several sources first, e.g. the arguments of `upload_mcp_server`
/// laid over the archive's file, and want the diagnostics of the merged result.
pub fn parse_server_config_value(value: &Value) -> Result<Parsed<ServerConfig>, ConfigErrors> {
    let mut diags = Diags::default();
    let config = server::read(value, &mut diags);
    diags.finish(config)
}

fn parse_with<T>(text: &str, read: impl FnOnce(&Value, &mut Diags) -> T) -> Result<Parsed<T>, ConfigErrors> {
    let mut diags = Diags::default();
    // Editors on some systems save a byte-order mark, which JSON does not allow; it carries no meaning.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        diags.error("", "the file is empty; it must hold a JSON object");
        return Err(diags.into_errors());
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            diags.error(
                "",
                format!("invalid JSON: {error}; fix the syntax there (a trailing comma or a missing quote is the usual cause)"),
            );
            return Err(diags.into_errors());
        }
    };
    let config = read(&value, &mut diags);
    diags.finish(config)
}
