//! Logging: the one place that installs the tracing subscriber, always writing to stderr (stdout may carry MCP).

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `HIVEHOST_LOG` (or `RUST_LOG`) filters, `info` by default.
pub fn init() {
    let filter = std::env::var("HIVEHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
