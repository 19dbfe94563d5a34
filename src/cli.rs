//! The command line: `hivehost serve [--config FILE]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// hivehost: hosts MCP servers the way OTP hosts processes.
#[derive(Debug, Parser)]
#[command(name = "hivehost", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: the supervision tree and the HTTP side, until SIGINT or SIGTERM.
    Serve {
        /// The configuration file (its `mcp_hosting` block).
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
}

/// Runs the command on a new tokio runtime.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = load_config(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve(config))
        }
    }
}

/// Reads and validates the configuration file, reporting every problem at once.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<config::HostConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (give another file with --config)", path.display()))?;
    match config::parse_host_config(&text) {
        Ok(parsed) => {
            for warning in &parsed.warnings {
                tracing::warn!("{}: {warning}", path.display());
            }
            Ok(parsed.value)
        }
        Err(errors) => {
            for warning in &errors.warnings {
                tracing::warn!("{}: {warning}", path.display());
            }
            bail!("{} is invalid:\n{errors}", path.display())
        }
    }
}

async fn serve(config: config::HostConfig) -> anyhow::Result<ExitCode> {
    // Each hosted server holds about five descriptors (pipes, pidfd, log file): raise the soft
    // open-files limit to the hard one, or 1,024 would cap us near 200 servers.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "could not raise the open files limit"),
    }
    if !config.enabled {
        bail!("mcp_hosting.enabled is false in the configuration: set it to true to host servers");
    }
    let listener = if config.dashboard.enabled {
        if !config.dashboard.is_loopback() && config.auth.token.is_none() {
            bail!(
                "mcp_hosting.dashboard.host is {}, which is not a loopback address, and no mcp_hosting.auth.token is set: \
                 refusing to expose hivehost without authentication",
                config.dashboard.host
            );
        }
        let addr = format!("{}:{}", config.dashboard.host, config.dashboard.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr} (mcp_hosting.dashboard.host and .port)"))?;
        let local: SocketAddr = listener.local_addr()?;
        tracing::info!(%local, "listening on http://{local}");
        Some(listener)
    } else {
        None
    };
    match crate::run(config, listener, crate::shutdown::signal()).await? {
        crate::Ended::Shutdown => {
            tracing::info!("every server stopped; bye");
            Ok(ExitCode::SUCCESS)
        }
        crate::Ended::Meltdown(why) => {
            tracing::error!("the supervision tree gave up: {why}");
            Ok(ExitCode::from(70))
        }
    }
}
