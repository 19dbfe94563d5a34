//! The command line: `hivehost serve [--config FILE]`, `example-package`, `package DIR`, and the
//! client commands of a running serve (`deploy`, `ls`, `status`, `logs`, `start`, `stop`, `restart`, `rm`).

use std::io::Write as _;
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
    /// Run the platform with its MCP tools on stdin and stdout (for desktop MCP clients), and the
    /// HTTP side too if the dashboard is enabled; stops when the client closes stdin.
    Mcp {
        /// The configuration file (its `mcp_hosting` block).
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Write the ready-to-deploy example package: a FastMCP server, its requirements and its config.
    ExamplePackage {
        /// Where to write the ZIP.
        #[arg(short, long, default_value = "example-server.zip")]
        output: PathBuf,
    },
    /// Deploy a package to the running `serve` (over its HTTP API).
    Deploy {
        /// The package ZIP.
        package: PathBuf,
        /// The server's name; the file's name without `.zip` by default.
        #[arg(long)]
        name: Option<String>,
        /// Start it once deployed.
        #[arg(long)]
        start: bool,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// List the servers of the running `serve`.
    Ls {
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Show one server's status.
    Status {
        id: String,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Show a server's last log lines.
    Logs {
        id: String,
        /// How many lines.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Start a server.
    Start {
        id: String,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Stop a server.
    Stop {
        id: String,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Restart a server.
    Restart {
        id: String,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Delete a server: stop it (`--force`: kill it at once) and remove its code, state and logs.
    Rm {
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long, default_value = "config/config.json")]
        config: PathBuf,
    },
    /// Check a server directory (its server_config.json and every file) and zip it into a package.
    Package {
        /// The server directory.
        dir: PathBuf,
        /// Where to write the ZIP; `<DIR>.zip` by default.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The configuration whose upload limit applies.
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
            runtime.block_on(serve(config, false))
        }
        Command::Mcp { config } => {
            let config = load_config(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve(config, true))
        }
        Command::Deploy { package, name, start, config } => {
            let client = client(&config)?;
            let bytes = std::fs::read(&package).with_context(|| format!("reading {}", package.display()))?;
            let name = name.unwrap_or_else(|| {
                package.file_stem().map_or_else(|| "server".to_owned(), |s| s.to_string_lossy().into_owned())
            });
            let path = format!("/api/v1/servers?name={}&start={start}", crate::client::escape(&name));
            show(&client.call("POST", &path, &bytes)?)
        }
        Command::Ls { config } => show(&client(&config)?.call("GET", "/api/v1/servers", b"")?),
        Command::Status { id, config } => show(&client(&config)?.call("GET", &server_path(&id, ""), b"")?),
        Command::Logs { id, lines, config } => {
            let answer = client(&config)?.call("GET", &server_path(&id, &format!("/logs?lines={lines}")), b"")?;
            let text: Vec<String> = answer["lines"]
                .as_array()
                .map(|lines| lines.iter().filter_map(|l| l["text"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let mut out = std::io::stdout().lock();
            for line in text {
                writeln!(out, "{line}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { id, config } => show(&client(&config)?.call("POST", &server_path(&id, "/start"), b"")?),
        Command::Stop { id, config } => show(&client(&config)?.call("POST", &server_path(&id, "/stop"), b"")?),
        Command::Restart { id, config } => show(&client(&config)?.call("POST", &server_path(&id, "/restart"), b"")?),
        Command::Rm { id, force, config } => {
            show(&client(&config)?.call("DELETE", &server_path(&id, &format!("?force={force}")), b"")?)
        }
        Command::ExamplePackage { output } => {
            let scratch = tempfile::tempdir().context("creating a scratch directory")?;
            let limits = crate::package::IntakeLimits::new(config::HostConfig::default().max_upload_size_bytes());
            let zip = crate::package::example::zip(&limits, scratch.path())?;
            write_atomically(&output, &zip)?;
            tracing::info!(file = %output.display(), bytes = zip.len(), "wrote the example package");
            Ok(ExitCode::SUCCESS)
        }
        Command::Package { dir, output, config } => {
            let limit = if config.exists() {
                load_config(&config)?.max_upload_size_bytes()
            } else {
                config::HostConfig::default().max_upload_size_bytes()
            };
            let zip = crate::package::pack_dir(&dir, &crate::package::IntakeLimits::new(limit))?;
            let output = output.unwrap_or_else(|| {
                let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(ToOwned::to_owned));
                PathBuf::from(name.unwrap_or_else(|| "package".into())).with_extension("zip")
            });
            write_atomically(&output, &zip)?;
            tracing::info!(file = %output.display(), bytes = zip.len(), "wrote the package");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn client(config: &std::path::Path) -> anyhow::Result<crate::client::Client> {
    crate::client::Client::from_config(&load_config(config)?)
}

fn server_path(id: &str, rest: &str) -> String {
    format!("/api/v1/servers/{}{rest}", crate::client::escape(id))
}

/// Prints an answer as pretty JSON on stdout (the one place the binary writes to stdout).
fn show(value: &serde_json::Value) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it: never half a file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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

async fn serve(config: config::HostConfig, stdio: bool) -> anyhow::Result<ExitCode> {
    // Each hosted server holds about five descriptors (pipes, pidfd, log file): raise the soft
    // open-files limit to the hard one, or 1,024 would cap us near 200 servers.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "could not raise the open files limit"),
    }
    if !config.enabled {
        bail!("mcp_hosting.enabled is false in the configuration: set it to true to host servers");
    }
    // The token exists before the address is announced, so a client that sees one finds the other.
    crate::token::load_or_create(&config.auth)?;
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
    match crate::run(config, listener, stdio, crate::shutdown::signal()).await? {
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
