//! The one facade both frontends call: it owns the supervisor handle and the host config, and turns
//! requests into actor messages. It never holds server state of its own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Context;
use tokio::time::timeout;

use crate::servers::{SERVER_CONFIG, spec_for};

/// The running platform as the frontends see it.
pub struct App {
    config: config::HostConfig,
    supervisor: actors::SupervisorHandle,
    runtimes: crate::runtimes::Runtimes,
    /// Held for the life of the platform.
    _lock: crate::lock::DataLock,
}

impl App {
    /// Creates the data directories and starts the supervision tree.
    pub async fn start(mut config: config::HostConfig) -> anyhow::Result<App> {
        // First of all: no second hivehost on this data directory, or every server would run twice.
        let data_dir = config.database.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let lock = crate::lock::DataLock::acquire(data_dir)?;
        for dir in [&mut config.servers_dir, &mut config.uploads_dir, &mut config.logs_dir, &mut config.state_dir] {
            std::fs::create_dir_all(&*dir).with_context(|| format!("creating {}", dir.display()))?;
            // Children run elsewhere: every path they see must be absolute.
            *dir = std::fs::canonicalize(&*dir).with_context(|| format!("resolving {}", dir.display()))?;
        }
        let supervisor = actors::SupervisorHandle::spawn(actors::SupervisorConfig {
            max_restarts: config.supervisor.max_restarts,
            restart_window: config.supervisor.restart_window,
            helper_max_restarts: config.supervisor.helper_max_restarts,
            helper_window: config.supervisor.helper_window,
            max_servers: usize::try_from(config.max_servers).unwrap_or(usize::MAX),
            launcher: None,
        })
        .await?;
        let runtimes = crate::runtimes::Runtimes::detect();
        tracing::info!(python = ?runtimes.python, node = ?runtimes.node, bash = ?runtimes.bash, "runtimes");
        Ok(App { config, supervisor, runtimes, _lock: lock })
    }

    pub fn supervisor(&self) -> &actors::SupervisorHandle {
        &self.supervisor
    }

    /// Adds every server directory found in `servers_dir` and starts those whose config says
    /// `autostart`. A broken server is reported and skipped; it never stops the others.
    pub async fn load_servers(&self) {
        let dirs = match server_dirs(&self.config.servers_dir) {
            Ok(dirs) => dirs,
            Err(err) => {
                tracing::error!(dir = %self.config.servers_dir.display(), error = %err, "cannot list the servers directory");
                return;
            }
        };
        let mut autostart = Vec::new();
        for (id, dir) in dirs {
            match self.add_server_dir(&id, &dir).await {
                Ok(true) => autostart.push(id),
                Ok(false) => {}
                Err(err) => tracing::error!(server = %id, "not loaded: {err:#}"),
            }
        }
        for id in autostart {
            if let Err(err) = self.supervisor.start(&id).await {
                tracing::error!(server = %id, error = %err, "autostart failed");
            }
        }
    }

    /// Adds the server in `dir`; returns whether it wants to start at boot.
    async fn add_server_dir(&self, id: &str, dir: &Path) -> anyhow::Result<bool> {
        let path = dir.join(SERVER_CONFIG);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let parsed = config::parse_server_config(&text).map_err(|errors| {
            let all: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{} is invalid: {}", path.display(), all.join("; "))
        })?;
        for warning in &parsed.warnings {
            tracing::warn!(server = %id, "{}: {warning}", path.display());
        }
        let home = self.config.state_dir.join(id);
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let host_env = |name: &str| std::env::var(name).ok();
        let program = |runtime| self.runtimes.program(runtime, dir);
        let (spec, warnings) = spec_for(&self.config, id, dir, &home, &parsed.value, &host_env, &program)
            .map_err(|errors| anyhow::anyhow!("{}: {errors}", path.display()))?;
        for warning in warnings {
            tracing::warn!(server = %id, "{}: {warning}", path.display());
        }
        self.supervisor.add(spec).await?;
        Ok(parsed.value.autostart)
    }

    /// Stops every server in parallel within `supervisor.shutdown_timeout`.
    pub async fn shutdown(&self) {
        let limit = self.config.supervisor.shutdown_timeout;
        if timeout(limit, self.supervisor.shutdown()).await.is_err() {
            tracing::error!(?limit, "servers did not stop within mcp_hosting.supervisor.shutdown_timeout");
        }
    }
}

/// The server directories under `root`, as (id, absolute path), sorted by id.
fn server_dirs(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if let Err(err) = crate::servers::validate_id(&id) {
            tracing::warn!(dir = %entry.path().display(), "skipped: {err}");
            continue;
        }
        dirs.push((id, entry.path()));
    }
    dirs.sort();
    Ok(dirs)
}

impl dashboard::Backend for App {
    fn health(&self) -> Pin<Box<dyn Future<Output = Result<dashboard::HealthView, String>> + Send + '_>> {
        Box::pin(async move {
            let all = self.supervisor.list().await.map_err(|err| err.to_string())?;
            Ok(dashboard::HealthView {
                status: "ok",
                servers: all.len(),
                running: all.iter().filter(|s| s.state == actors::ServerState::Running).count(),
                failed: all.iter().filter(|s| s.state == actors::ServerState::Failed).count(),
            })
        })
    }
}
