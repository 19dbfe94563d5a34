//! Logging: the one place that installs the tracing subscriber, always writing to stderr (stdout may carry MCP).

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `HIVEHOST_LOG` (or `RUST_LOG`) filters; by default `info`, but only
/// warnings from rmcp, which logs every MCP session's start and end at info.
pub fn init() {
    let filter = std::env::var("HIVEHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info,rmcp=warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
