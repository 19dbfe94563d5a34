//! The one facade both frontends call: it owns the supervisor handle, the store and the host config,
//! and turns requests into actor messages and store writes. It holds no server state of its own:
//! the supervisor has the live state, the store what must survive a crash.

pub(crate) mod backend;
mod deploy;
mod janitor;
mod optimize;
mod recorder;
mod recovery;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub use deploy::DeployError;
pub use optimize::RECOMMENDATION_EVENT;

use crate::runtimes::Runtimes;
use crate::servers::Confinement;
use crate::servers::{SERVER_CONFIG, spec_for};
use crate::store::{Category, Desired, NewEvent, ServerRecord, Store};

/// Under the state directory: each sandboxed server's private /tmp and new-root mount point.
/// Server ids never start with a dot, so it cannot collide with one.
const RUN_DIR: &str = ".run";

/// The name of this installation's cgroup directories: stable for one data directory, distinct
/// between installations on one host (tests run many at once).
fn cgroup_instance(data_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = crc32fast::hash(canonical.as_os_str().as_encoded_bytes());
    format!("hivehost-{hash:08x}")
}

/// The running platform as the frontends see it.
pub struct App {
    config: config::HostConfig,
    supervisor: actors::SupervisorHandle,
    runtimes: Runtimes,
    /// The isolation this host offers, found once at start.
    caps: actors::sandbox::HostCaps,
    /// Serializes handing out sandbox uids.
    uids: Mutex<()>,
    store: Store,
    /// Ids being deployed right now, so two uploads of one name cannot race.
    deploying: Mutex<HashSet<String>>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Held for the life of the platform.
    _lock: crate::lock::DataLock,
}

impl App {
    /// Locks the data directory, opens the store, starts the supervision tree and kills whatever a
    /// previous instance that died left running. Servers are loaded by [`App::load_servers`].
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
        let db = config.database.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&db))
            .await?
            .with_context(|| format!("opening the store {}", config.database.display()))?;
        let caps = tokio::task::spawn_blocking(actors::sandbox::HostCaps::detect).await?;
        let require = config.security.require_sandbox(caps.root);
        tracing::info!(require_sandbox = require, "sandbox: {}", caps.summary());
        std::fs::create_dir_all(config.state_dir.join(RUN_DIR))?;
        let instance = cgroup_instance(data_dir);
        // Recovery before anything starts: what a dead instance left in its cgroups dies first
        // (even a daemon that left its session and lost its parent).
        let root = actors::sandbox::CgroupRoot::new(caps.cgroup.clone(), instance.clone());
        let swept = tokio::task::spawn_blocking(move || actors::sandbox::sweep_instance(&root)).await?;
        let supervisor = actors::SupervisorHandle::spawn(actors::SupervisorConfig {
            max_restarts: config.supervisor.max_restarts,
            restart_window: config.supervisor.restart_window,
            helper_max_restarts: config.supervisor.helper_max_restarts,
            helper_window: config.supervisor.helper_window,
            max_servers: usize::try_from(config.max_servers).unwrap_or(usize::MAX),
            launcher: None,
            caps: caps.clone(),
            // Stable for this data directory: a successor after a crash sweeps what was left.
            cgroup_instance: Some(instance),
        })
        .await?;
        let runtimes = Runtimes::detect();
        tracing::info!(python = ?runtimes.python, node = ?runtimes.node, bash = ?runtimes.bash, "runtimes");
        let boot = recovery::boot_id();
        // Recovery before anything starts: what a dead instance left running dies first.
        let leftovers = store.instances().await?;
        let killed = swept + actors::process::kill_leftovers(&recovery::leftovers(&leftovers, &boot)).await;
        for record in &leftovers {
            store.clear_instance(&record.server, record.generation).await?;
        }
        if killed > 0 {
            tracing::warn!(killed, "killed processes left running by a previous hivehost that died");
            store.append_event(NewEvent::now(
                Category::Incidents,
                None,
                "recovered",
                format!("killed {killed} processes left running by a previous hivehost that died"),
                serde_json::json!({ "killed": killed }),
            ));
        }
        janitor::remove_staging(&config.servers_dir);
        let recorder = tokio::spawn(recorder::run(supervisor.subscribe(), store.clone(), boot));
        let app = App {
            config,
            supervisor,
            runtimes,
            caps,
            uids: Mutex::new(()),
            store,
            deploying: Mutex::new(HashSet::new()),
            background: Mutex::new(vec![recorder]),
            _lock: lock,
        };
        Ok(app)
    }

    pub fn supervisor(&self) -> &actors::SupervisorHandle {
        &self.supervisor
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &config::HostConfig {
        &self.config
    }

    /// Starts the janitor and the metrics recorder; they end with the platform.
    pub fn start_background(self: &std::sync::Arc<Self>) {
        let tasks = [tokio::spawn(janitor::run(self.clone())), tokio::spawn(janitor::record_metrics(self.clone()))];
        self.background.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks);
    }

    /// Adds every stored server, adopts server directories that have no record (placed by hand, or
    /// a deploy cut short after its last step), and starts those whose desired state is running.
    /// A broken server is reported and skipped; it never stops the others.
    pub async fn load_servers(&self) {
        let records = match self.store.servers().await {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the servers from the store");
                return;
            }
        };
        let mut known: HashSet<String> = HashSet::new();
        let mut start = Vec::new();
        for record in records {
            known.insert(record.id.clone());
            let dir = self.config.servers_dir.join(&record.id);
            if !dir.is_dir() {
                self.incident(
                    &record.id,
                    "missing_code",
                    format!("its code directory {} is missing; redeploy it", dir.display()),
                );
                continue;
            }
            match self.add_server(&record.id, &dir, &record.spec).await {
                Ok(()) if record.desired == Desired::Running => start.push(record.id),
                Ok(()) => {}
                Err(err) => self.incident(&record.id, "not_loaded", format!("not loaded: {err:#}")),
            }
        }
        let dirs = match server_dirs(&self.config.servers_dir) {
            Ok(dirs) => dirs,
            Err(err) => {
                tracing::error!(dir = %self.config.servers_dir.display(), error = %err, "cannot list the servers directory");
                Vec::new()
            }
        };
        // Adopted servers are recorded all at once: the store commits them in a few batches
        // instead of one commit per directory in turn.
        let mut records = tokio::task::JoinSet::new();
        for (id, dir) in dirs.into_iter().filter(|(id, _)| !known.contains(id)) {
            match self.adopt(&id, &dir).await {
                Ok(record) => {
                    if record.desired == Desired::Running {
                        start.push(id.clone());
                    }
                    let store = self.store.clone();
                    records.spawn(async move { (id, store.put_server(record).await) });
                }
                Err(err) => tracing::error!(server = %id, "not loaded: {err:#}"),
            }
        }
        while let Some(done) = records.join_next().await {
            if let Ok((id, Err(err))) = done {
                tracing::error!(server = %id, error = %err, "recording an adopted server failed");
            }
        }
        for id in start {
            if let Err(err) = self.supervisor.start(&id).await {
                tracing::error!(server = %id, error = %err, "start at boot failed");
            }
        }
    }

    /// Adds a server directory that has no record yet; returns the record to store (its desired
    /// state is running when its config says `autostart`).
    async fn adopt(&self, id: &str, dir: &Path) -> anyhow::Result<ServerRecord> {
        let path = dir.join(SERVER_CONFIG);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let spec: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        self.add_server(id, dir, &spec).await?;
        let autostart = spec.get("autostart").and_then(serde_json::Value::as_bool).unwrap_or(false);
        let now = crate::store::now_ms();
        let name = spec.get("name").and_then(serde_json::Value::as_str).unwrap_or(id).to_owned();
        let desired = if autostart { Desired::Running } else { Desired::Stopped };
        let record = ServerRecord {
            id: id.to_owned(),
            name,
            spec,
            desired,
            created_ms: now,
            updated_ms: now,
            scan: None,
            code_dir: dir.display().to_string(),
        };
        Ok(record)
    }

    /// Adds server `id` (code in `dir`, settings `spec`) to the supervisor.
    async fn add_server(&self, id: &str, dir: &Path, spec: &serde_json::Value) -> anyhow::Result<()> {
        let parsed = config::parse_server_config_value(spec).map_err(|errors| {
            let all: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("its server_config.json is invalid: {}", all.join("; "))
        })?;
        for warning in &parsed.warnings {
            tracing::warn!(server = %id, "{warning}");
        }
        let home = self.config.state_dir.join(id);
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let confinement = Confinement {
            uid: self.uid_for(id, &home)?,
            run_dir: self.config.state_dir.join(RUN_DIR).join(id),
            require: self.config.security.require_sandbox(self.caps.root),
        };
        let host_env = |name: &str| std::env::var(name).ok();
        let program = |runtime| self.runtimes.program(runtime, dir);
        let (spec, warnings) = spec_for(&self.config, id, dir, &home, &confinement, &parsed.value, &host_env, &program)
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        for warning in warnings {
            tracing::warn!(server = %id, "{warning}");
        }
        self.supervisor.add(spec).await?;
        Ok(())
    }

    /// The uid of server `id` (whose state directory is `home`): the owner of its state directory
    /// when that lies in `security.uid_first..+uid_count`, else the lowest uid of that range no
    /// other state directory owns, given to it at once by owning its state directory. The state
    /// directories are the record: nothing else needs storing. Without root there is no uid to give.
    fn uid_for(&self, id: &str, home: &Path) -> anyhow::Result<u32> {
        use std::os::unix::fs::MetadataExt;
        let sec = &self.config.security;
        let range = u64::from(sec.uid_first)..u64::from(sec.uid_first) + u64::from(sec.uid_count);
        if !self.caps.root {
            return Ok(sec.uid_first);
        }
        let _one_at_a_time = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        let own = std::fs::metadata(home).with_context(|| format!("reading {}", home.display()))?.uid();
        if range.contains(&u64::from(own)) {
            return Ok(own);
        }
        let mut taken = HashSet::new();
        for entry in std::fs::read_dir(&self.config.state_dir)?.flatten() {
            if entry.file_name() != id
                && let Ok(meta) = entry.metadata()
                && meta.is_dir()
            {
                taken.insert(meta.uid());
            }
        }
        let uid =
            range.clone().filter_map(|u| u32::try_from(u).ok()).find(|u| !taken.contains(u)).ok_or_else(|| {
                anyhow::anyhow!(
                    "every sandbox uid ({} from {}) is taken; raise mcp_hosting.security.uid_count",
                    sec.uid_count,
                    sec.uid_first
                )
            })?;
        std::os::unix::fs::chown(home, Some(uid), Some(uid))
            .with_context(|| format!("giving {} to uid {uid}", home.display()))?;
        Ok(uid)
    }

    /// Deploys a package: checks, extracts, scans and installs it, moves it into place, records it,
    /// adds it to the supervisor, and starts it when asked. Returns its id and what was found.
    pub async fn deploy(
        &self,
        name: &str,
        archive: Vec<u8>,
        overrides: serde_json::Value,
        start: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Deployed, DeployError> {
        let id = deploy::id_from_name(name)?;
        // The archive's size is checked by `package::unpack`, before anything is written.
        let claim = Claim::take(&self.deploying, &id)?;
        let existing = self.store.servers().await.map_err(|e| DeployError::Internal(e.to_string()))?;
        if existing.iter().any(|r| r.id == id) || self.config.servers_dir.join(&id).exists() {
            return Err(DeployError::Refused(format!(
                "a server with id `{id}` is already deployed; delete it first, or choose another name"
            )));
        }
        // Deploys in flight count too, or two at once could both take the last place.
        let others_in_flight = claim.others();
        let max = usize::try_from(self.config.max_servers).unwrap_or(usize::MAX);
        if existing.len() + others_in_flight >= max {
            return Err(DeployError::Refused(format!(
                "{} servers are deployed and {others_in_flight} more being deployed, the most mcp_hosting.max_servers ({max}) allows; delete one, or raise the limit",
                existing.len()
            )));
        }
        let staged = deploy::stage(&self.config, &self.runtimes, &id, name, archive, overrides, progress).await?;
        let dir = self.config.servers_dir.join(&id);
        // The one step that makes it a server: a rename on one file system.
        if let Err(err) = std::fs::rename(&staged.dir, &dir) {
            deploy::remove_tree(staged.dir).await;
            return Err(DeployError::Internal(format!("moving the package into {}: {err}", dir.display())));
        }
        if !staged.installed.is_empty() {
            let logs = self.config.logs_dir.join(&id);
            let written = std::fs::create_dir_all(&logs)
                .and_then(|()| std::fs::write(logs.join("install.log"), staged.installed.join("\n") + "\n"));
            if let Err(err) = written {
                tracing::warn!(server = %id, error = %err, "keeping the install log failed");
            }
        }
        let now = crate::store::now_ms();
        let scan = serde_json::to_value(&staged.scan).ok();
        let record = ServerRecord {
            id: id.clone(),
            name: staged.config.name.clone(),
            spec: staged.spec.clone(),
            desired: if start { Desired::Running } else { Desired::Stopped },
            created_ms: now,
            updated_ms: now,
            scan: scan.clone(),
            code_dir: dir.display().to_string(),
        };
        if let Err(err) = self.store.put_server(record).await {
            deploy::remove_tree(dir).await;
            return Err(DeployError::Internal(format!("recording the server: {err}")));
        }
        let deployed = NewEvent::now(
            Category::Infrastructure,
            Some(&id),
            "deployed",
            format!("deployed {} ({} runtime): {}", staged.config.name, staged.runtime, staged.scan.summary()),
            serde_json::json!({ "scan": scan, "warnings": staged.warnings }),
        );
        let _ = self.store.append_event_durable(deployed).await;
        if let Err(err) = self.add_server(&id, &dir, &staged.spec).await {
            return Err(DeployError::Internal(format!("deployed, but it could not be added: {err:#}")));
        }
        let mut started = None;
        if start {
            started = Some(self.supervisor.start(&id).await.map(|s| s.state.to_string()).map_err(|e| e.to_string()));
        }
        Ok(Deployed { id, scan: staged.scan, warnings: staged.warnings, installed: staged.installed, started })
    }

    /// Starts, stops or restarts a server, recording the desired state first.
    pub async fn control(
        &self,
        id: &str,
        action: dashboard::Action,
    ) -> Result<actors::ServerStatus, actors::ActorsError> {
        let desired = match action {
            dashboard::Action::Stop => Desired::Stopped,
            dashboard::Action::Start | dashboard::Action::Restart => Desired::Running,
        };
        // The record first: a crash between the two then errs on the side of the operator's wish.
        if let Err(err) = self.store.set_desired(id, desired).await {
            tracing::warn!(server = %id, error = %err, "recording the desired state failed");
        }
        match action {
            dashboard::Action::Start => self.supervisor.start(id).await,
            dashboard::Action::Stop => self.supervisor.stop(id).await,
            dashboard::Action::Restart => self.supervisor.restart(id).await,
        }
    }

    /// Deletes a server: stops it (`force`: kills it at once), then removes its code, state, logs
    /// and record. Its events stay.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), actors::ActorsError> {
        match if force { self.supervisor.delete_now(id).await } else { self.supervisor.delete(id).await } {
            Ok(()) => {}
            // Recorded but never loaded (its code went missing): still deletable.
            Err(actors::ActorsError::NotFound(_)) if self.store.server(id).await.ok().flatten().is_some() => {}
            Err(err) => return Err(err),
        }
        // A venv holds thousands of files: removed off the async workers.
        let run = self.config.state_dir.join(RUN_DIR);
        for dir in [&self.config.servers_dir, &self.config.state_dir, &self.config.logs_dir, &run] {
            deploy::remove_tree(dir.join(id)).await;
        }
        if let Err(err) = self.store.delete_server(id).await {
            tracing::error!(server = %id, error = %err, "removing the server's record failed");
        }
        let message = if force { "deleted (forced)" } else { "deleted" };
        let deleted = NewEvent::now(
            Category::Infrastructure,
            Some(id),
            "deleted",
            message,
            serde_json::json!({ "force": force }),
        );
        let _ = self.store.append_event_durable(deleted).await;
        Ok(())
    }

    /// Stops every server in parallel within `supervisor.shutdown_timeout`, then flushes the store.
    pub async fn shutdown(&self) {
        let limit = self.config.supervisor.shutdown_timeout;
        if timeout(limit, self.supervisor.shutdown()).await.is_err() {
            tracing::error!(?limit, "servers did not stop within mcp_hosting.supervisor.shutdown_timeout");
        }
        for task in self.background.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        if let Err(err) = self.store.flush().await {
            tracing::error!(error = %err, "flushing the store at shutdown failed");
        }
    }

    fn incident(&self, id: &str, kind: &str, message: String) {
        tracing::error!(server = %id, "{message}");
        self.store.append_event(NewEvent::now(Category::Incidents, Some(id), kind, message, serde_json::json!({})));
    }
}

/// What a deploy produced.
#[derive(Debug)]
pub struct Deployed {
    pub id: String,
    pub scan: crate::package::scan::ScanReport,
    pub warnings: Vec<String>,
    /// The dependency installer's output lines.
    pub installed: Vec<String>,
    /// The state after the requested start, or why it failed.
    pub started: Option<Result<String, String>>,
}

/// A deploy's claim on its id; released on drop.
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<String>>, id: &str) -> Result<Claim<'a>, DeployError> {
        if !set.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned()) {
            return Err(DeployError::Refused(format!(
                "`{id}` is being deployed right now; wait for that deploy to finish"
            )));
        }
        Ok(Claim { set, id: id.to_owned() })
    }

    /// How many other deploys are in flight.
    fn others(&self) -> usize {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).len().saturating_sub(1)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// The server directories under `root`, as (id, absolute path), sorted by id; staging directories excluded.
fn server_dirs(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if id.starts_with('.') {
            continue;
        }
        if let Err(err) = crate::servers::validate_id(&id) {
            tracing::warn!(dir = %entry.path().display(), "skipped: {err}");
            continue;
        }
        dirs.push((id, entry.path()));
    }
    dirs.sort();
    Ok(dirs)
}
