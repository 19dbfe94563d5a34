//! The root supervisor: owns every hosted server, applies the restart policy when an incarnation
//! ends, and answers the frontends' commands and queries.
//!
//! Per server it keeps the spec, the desired state, the policy history, the log book and metrics
//! ring (which outlive incarnations) and the current incarnation (a linked `ServerActor`). It is
//! one_for_one over servers, with its own intensity limit over server actors that *fail* (bugs, not
//! process exits); past it the supervisor stops and `wait` reports a meltdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::error::ActorsError;
use crate::event::{Event, EventKind, Exit};
use crate::link::{LinkState, McpLink};
use crate::logs::{LogBook, LogLine, LogWriter};
use crate::metrics::{MetricsRing, MetricsSample};
use crate::process::{Launcher, ProcTable, ProcessLauncher};
use crate::sandbox::{CgroupRoot, HostCaps};
use crate::server::{Outcome, ServerActor, ServerArgs, ServerMsg, Slot};
use crate::spec::{ServerId, ServerSpec, Transport};
use crate::state::ServerState;
use crate::status::{SandboxStatus, ServerStatus};

type Reply<T> = RpcReplyPort<Result<T, ActorsError>>;

/// Settings of the supervisor itself.
#[derive(Clone)]
pub struct SupervisorConfig {
    /// Server actors that may fail (a bug, not a process exit) within `restart_window` before the
    /// supervisor gives up and stops everything.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// Restarts each helper (log tailer, health poller, metrics sampler) may use within `helper_window`.
    pub helper_max_restarts: u32,
    pub helper_window: Duration,
    /// Most servers it accepts.
    pub max_servers: usize,
    /// Where incarnations come from; `None` means real child processes.
    pub launcher: Option<Arc<dyn Launcher>>,
    /// What isolation the host offers (`HostCaps::detect()`); the default offers none, so that
    /// only servers whose sandbox is not required start.
    pub caps: HostCaps,
    /// The name of this instance's cgroup directory, stable across restarts of one installation so
    /// that a successor can kill and remove what a crashed instance left (`sandbox::sweep_instance`,
    /// before spawning); `None` names it by pid.
    pub cgroup_instance: Option<String>,
}

impl Default for SupervisorConfig {
    fn default() -> SupervisorConfig {
        SupervisorConfig {
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            helper_max_restarts: 5,
            helper_window: Duration::from_secs(60),
            max_servers: 10_000,
            launcher: None,
            caps: HostCaps::default(),
            cgroup_instance: None,
        }
    }
}

/// How the supervisor ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupervisorExit {
    /// It was shut down on request.
    Shutdown,
    /// Its intensity limit was exceeded, or it failed: the platform should exit non-zero.
    Meltdown(String),
}

pub(crate) enum SupervisorMsg {
    Add(Box<ServerSpec>, Reply<ServerStatus>),
    Start(ServerId, Reply<ServerStatus>),
    Stop(ServerId, Reply<ServerStatus>),
    Restart(ServerId, Reply<ServerStatus>),
    /// Delete; `true` kills the tree at once instead of stopping it gracefully.
    Delete(ServerId, bool, Reply<ServerStatus>),
    Status(ServerId, Reply<ServerStatus>),
    List(RpcReplyPort<Vec<ServerStatus>>),
    Books(ServerId, Reply<(Arc<LogBook>, Arc<MetricsRing>)>),
    Link(ServerId, Reply<Arc<McpLink>>),
    Links(RpcReplyPort<Vec<Arc<McpLink>>>),
    Shutdown(RpcReplyPort<()>),
    /// From a server actor: its incarnation is ready.
    Ready {
        id: ServerId,
        generation: u64,
    },
    /// From a server actor: a health probe result changed its health.
    Health {
        id: ServerId,
        generation: u64,
        healthy: bool,
        detail: String,
    },
    /// From a server actor: something an operator should know.
    Incident {
        id: ServerId,
        generation: u64,
        message: String,
    },
    /// A restart delay passed.
    RestartTimer {
        id: ServerId,
        generation: u64,
    },
}

/// What to do once the current incarnation has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterStop {
    Nothing,
    Start,
    Delete,
}

struct Live {
    actor: ActorRef<ServerMsg>,
    generation: u64,
    slot: Arc<Slot>,
    started: SystemTime,
}

struct Entry {
    spec: Arc<ServerSpec>,
    state: ServerState,
    since: SystemTime,
    history: policy::History,
    live: Option<Live>,
    logs: Arc<LogBook>,
    metrics: Arc<MetricsRing>,
    /// Its MCP link (stdio servers): the upstream session of the live incarnation, if any.
    link: Arc<McpLink>,
    restarts: u64,
    last_exit: Option<Exit>,
    last_pid: Option<u32>,
    health_failures: u32,
    last_health: Option<String>,
    next_restart: Option<SystemTime>,
    after_stop: AfterStop,
    waiters: Vec<Reply<ServerStatus>>,
    /// Its sandbox on this host (the spec and the host's caps are fixed while it is added).
    sandbox: SandboxStatus,
}

pub(crate) struct SupervisorArgs {
    config: SupervisorConfig,
    events: broadcast::Sender<Event>,
    exit: watch::Sender<Option<SupervisorExit>>,
}

pub(crate) struct Supervisor;

pub(crate) struct SupervisorState {
    /// This instance's cgroup directories, where it makes cgroups.
    cgroups: Option<CgroupRoot>,
    config: SupervisorConfig,
    launcher: Arc<dyn Launcher>,
    writer: LogWriter,
    events: broadcast::Sender<Event>,
    exit: watch::Sender<Option<SupervisorExit>>,
    servers: HashMap<ServerId, Entry>,
    by_actor: HashMap<ActorId, ServerId>,
    epoch: Instant,
    rng: u64,
    helper_policy: policy::RestartPolicy,
    own_policy: policy::RestartPolicy,
    own_history: policy::History,
    shutting_down: bool,
    shutdown_waiters: Vec<RpcReplyPort<()>>,
    reaper: Option<tokio::task::JoinHandle<()>>,
}

fn budget(max_restarts: u32, window: Duration) -> Result<policy::RestartPolicy, ActorsError> {
    let cfg = policy::PolicyConfig {
        mode: policy::RestartMode::Always,
        max_restarts,
        restart_window_ms: window.as_millis().max(1) as u64,
        restart_delay_ms: 0,
        backoff: policy::Backoff::Fixed,
        ..policy::PolicyConfig::default()
    };
    policy::RestartPolicy::new(cfg).map(|(p, _)| p).map_err(|err| ActorsError::Config(err.to_string()))
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        if let Err(err) = crate::process::become_subreaper() {
            tracing::warn!(error = %err, "could not become a child subreaper; orphans of hosted servers go to init");
        }
        let reaper = match crate::process::spawn_reaper() {
            Ok(task) => Some(task),
            Err(err) => {
                tracing::warn!(error = %err, "could not watch SIGCHLD; orphans are not reaped");
                None
            }
        };
        let table = Arc::new(ProcTable::new());
        let mut cgroups = None;
        let launcher = match args.config.launcher.clone() {
            Some(launcher) => launcher,
            None => {
                let caps = args.config.caps.clone();
                // Without a stable name, one per supervisor (several may share a process in tests).
                // A named instance's leftovers are the caller's to sweep (`sweep_instance`) first.
                static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let instance = args.config.cgroup_instance.clone().unwrap_or_else(|| {
                    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    format!("hivehost-{}-{n}", std::process::id())
                });
                let root = (caps.cgroup.v2.is_some() || caps.cgroup.limits() || caps.cgroup.tree_kill())
                    .then(|| CgroupRoot::new(caps.cgroup.clone(), instance));
                cgroups = root.clone();
                Arc::new(ProcessLauncher::new(table, caps, root))
            }
        };
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut own_history = policy::History::new();
        own_history.admin_start(0);
        Ok(SupervisorState {
            helper_policy: budget(args.config.helper_max_restarts, args.config.helper_window)?,
            own_policy: budget(args.config.max_restarts, args.config.restart_window)?,
            own_history,
            config: args.config,
            launcher,
            writer: LogWriter::start()?,
            events: args.events,
            exit: args.exit,
            servers: HashMap::new(),
            by_actor: HashMap::new(),
            epoch: Instant::now(),
            rng: seed ^ u64::from(std::process::id()) | 1,
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            reaper,
            cgroups,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Add(spec, reply) => {
                let res = state.add(*spec);
                let _ = reply.send(res);
            }
            SupervisorMsg::Start(id, reply) => {
                let res = state.start(&myself, &id).await;
                let _ = reply.send(res);
            }
            SupervisorMsg::Stop(id, reply) => state.stop(&id, AfterStop::Nothing, reply),
            SupervisorMsg::Restart(id, reply) => {
                let has_process = state.servers.get(&id).is_some_and(|e| e.live.is_some());
                if has_process {
                    state.stop(&id, AfterStop::Start, reply);
                } else {
                    let res = state.start(&myself, &id).await;
                    let _ = reply.send(res);
                }
            }
            SupervisorMsg::Delete(id, force, reply) => {
                state.stop(&id, AfterStop::Delete, reply);
                if force && let Some(live) = state.servers.get(&id).and_then(|e| e.live.as_ref()) {
                    let _ = live.actor.cast(ServerMsg::KillNow);
                }
            }
            SupervisorMsg::Status(id, reply) => {
                let _ = reply.send(state.servers.get(&id).map(status_of).ok_or(ActorsError::NotFound(id)));
            }
            SupervisorMsg::List(reply) => {
                let mut all: Vec<ServerStatus> = state.servers.values().map(status_of).collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(all);
            }
            SupervisorMsg::Books(id, reply) => {
                let res = state
                    .servers
                    .get(&id)
                    .map(|e| (e.logs.clone(), e.metrics.clone()))
                    .ok_or(ActorsError::NotFound(id));
                let _ = reply.send(res);
            }
            SupervisorMsg::Link(id, reply) => {
                let _ = reply.send(state.servers.get(&id).map(|e| e.link.clone()).ok_or(ActorsError::NotFound(id)));
            }
            SupervisorMsg::Links(reply) => {
                let mut links: Vec<Arc<McpLink>> = state.servers.values().map(|e| e.link.clone()).collect();
                links.sort_by(|a, b| a.id().cmp(b.id()));
                let _ = reply.send(links);
            }
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                state.shutdown_waiters.push(reply);
                let ids: Vec<ServerId> = state.servers.keys().cloned().collect();
                for id in ids {
                    let now = state.now_ms();
                    if let Some(entry) = state.servers.get_mut(&id) {
                        entry.history.admin_stop(now);
                        entry.after_stop = AfterStop::Nothing;
                        if entry.live.is_some() {
                            if entry.state != ServerState::Stopping {
                                state.begin_stop(&id, "hivehost is shutting down");
                            }
                        } else if entry.state == ServerState::Backoff {
                            state.set_state(&id, ServerState::Stopped, "hivehost is shutting down".into());
                        }
                    }
                }
                state.check_shutdown_done();
            }
            SupervisorMsg::Ready { id, generation } => {
                let now = state.now_ms();
                let Some(entry) = state.current(&id, generation) else {
                    return Ok(());
                };
                entry.history.ready(generation, now);
                if entry.state == ServerState::Starting {
                    state.set_state(&id, ServerState::Running, "ready".into());
                }
            }
            SupervisorMsg::Health { id, generation, healthy, detail } => {
                let Some(entry) = state.current(&id, generation) else {
                    return Ok(());
                };
                entry.last_health = Some(detail.clone());
                entry.health_failures = if healthy { 0 } else { entry.health_failures + 1 };
                match (entry.state, healthy) {
                    (ServerState::Running, false) => state.set_state(&id, ServerState::Unhealthy, detail),
                    (ServerState::Unhealthy, true) => {
                        state.set_state(&id, ServerState::Running, format!("healthy again: {detail}"))
                    }
                    _ => {}
                }
            }
            SupervisorMsg::Incident { id, generation, message } => {
                state.emit(&id, generation, EventKind::Incident { message });
            }
            SupervisorMsg::RestartTimer { id, generation } => {
                if state.shutting_down {
                    return Ok(());
                }
                let Some(entry) = state.servers.get_mut(&id) else {
                    return Ok(());
                };
                if entry.history.timer_fired(generation) {
                    entry.next_restart = None;
                    state.launch(&myself, &id, generation, "restarting").await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden on purpose: ractor's default stops the supervisor when any child ends.
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let Some(id) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.incarnation_ended(&myself, &id, None).await;
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(server = %id, error = %err, "server actor failed");
                state.incarnation_ended(&myself, &id, Some(err.to_string())).await;
                let now = state.now_ms();
                let generation = state.own_history.generation();
                let decision =
                    state.own_history.exited(&state.own_policy, generation, policy::ExitKind::Crashed, now, 0);
                match decision {
                    policy::Decision::Restart { generation, .. } => {
                        state.own_history.timer_fired(generation);
                        state.own_history.ready(generation, now);
                    }
                    other => {
                        let why = format!(
                            "more than {} server actors failed within {:?} ({other:?})",
                            state.config.max_restarts, state.config.restart_window
                        );
                        tracing::error!("{why}: the supervisor gives up");
                        let _ = state.exit.send(Some(SupervisorExit::Meltdown(why.clone())));
                        myself.stop(Some(why));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reaper) = state.reaper.take() {
            reaper.abort();
        }
        // Whatever still runs (a meltdown) is killed: the trees die with their owner.
        for entry in state.servers.values() {
            if let Some(control) = entry.live.as_ref().and_then(|l| l.slot.control()) {
                control.kill().await;
            }
        }
        // The instance's cgroup directories go once the incarnations' own are gone.
        if let Some(root) = state.cgroups.take() {
            let _ = tokio::task::spawn_blocking(move || root.remove_instance(Duration::from_secs(2))).await;
        }
        // Everything the drains queued reaches the disk before the supervisor is gone.
        let writer = state.writer.clone();
        let _ = tokio::task::spawn_blocking(move || writer.flush()).await;
        state.exit.send_if_modified(|exit| {
            if exit.is_none() {
                *exit = Some(SupervisorExit::Shutdown);
                true
            } else {
                false
            }
        });
        Ok(())
    }
}

impl SupervisorState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn jitter_sample(&mut self) -> u32 {
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    /// The entry of `id` if `generation` is its current incarnation.
    fn current(&mut self, id: &str, generation: u64) -> Option<&mut Entry> {
        self.servers.get_mut(id).filter(|e| e.live.as_ref().is_some_and(|l| l.generation == generation))
    }

    fn emit(&self, id: &str, generation: u64, kind: EventKind) {
        self.emit_at(id, generation, kind, std::time::Instant::now());
    }

    /// Emits an event that happened at `instant` (earlier than now, for exits learnt through a message).
    fn emit_at(&self, id: &str, generation: u64, kind: EventKind, instant: std::time::Instant) {
        let at = SystemTime::now().checked_sub(instant.elapsed()).unwrap_or_else(SystemTime::now);
        let event = Event { server: id.to_owned(), generation, at, instant, kind };
        tracing::debug!(server = %id, generation, event = ?event.kind, "event");
        let _ = self.events.send(event);
    }

    fn set_state(&mut self, id: &str, to: ServerState, reason: String) {
        let Some(entry) = self.servers.get_mut(id) else {
            return;
        };
        let from = entry.state;
        if from == to {
            return;
        }
        entry.state = to;
        entry.since = SystemTime::now();
        if entry.spec.transport == Transport::Stdio {
            match to {
                ServerState::Starting | ServerState::Backoff | ServerState::Stopping => {
                    entry.link.set_unless_up(LinkState::Waiting(format!("server {id} is {to}: {reason}")))
                }
                ServerState::Stopped | ServerState::Failed => entry
                    .link
                    .set(LinkState::Down(format!("server {id} is {to} ({reason}); start it with start_mcp_server"))),
                ServerState::Running | ServerState::Unhealthy => {}
            }
        }
        let generation = entry.history.generation();
        tracing::info!(server = %id, generation, %from, %to, %reason, "state");
        self.emit(id, generation, EventKind::StateChanged { from, to, reason });
    }

    fn add(&mut self, spec: ServerSpec) -> Result<ServerStatus, ActorsError> {
        if self.shutting_down {
            return Err(ActorsError::ShuttingDown);
        }
        if self.servers.contains_key(&spec.id) {
            return Err(ActorsError::AlreadyExists(spec.id));
        }
        if self.servers.len() >= self.config.max_servers {
            return Err(ActorsError::TooMany { max: self.config.max_servers });
        }
        if spec.command.is_empty() {
            return Err(ActorsError::InvalidSpec(format!("server {}: the command is empty", spec.id)));
        }
        let id = spec.id.clone();
        let entry = Entry {
            sandbox: SandboxStatus::of(&spec.sandbox, &self.config.caps),
            logs: Arc::new(LogBook::new(&spec.logs, self.writer.clone())),
            metrics: Arc::new(MetricsRing::new(spec.metrics_history)),
            link: Arc::new(McpLink::new(&spec.id, spec.transport)),
            spec: Arc::new(spec),
            state: ServerState::Stopped,
            since: SystemTime::now(),
            history: policy::History::new(),
            live: None,
            restarts: 0,
            last_exit: None,
            last_pid: None,
            health_failures: 0,
            last_health: None,
            next_restart: None,
            after_stop: AfterStop::Nothing,
            waiters: Vec::new(),
        };
        let status = status_of(&entry);
        self.servers.insert(id.clone(), entry);
        self.emit(&id, 0, EventKind::Added);
        Ok(status)
    }

    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str) -> Result<ServerStatus, ActorsError> {
        if self.shutting_down {
            return Err(ActorsError::ShuttingDown);
        }
        let now = self.now_ms();
        let entry = self.servers.get_mut(id).ok_or_else(|| ActorsError::NotFound(id.to_owned()))?;
        match entry.state {
            ServerState::Starting | ServerState::Running | ServerState::Unhealthy => {}
            ServerState::Stopping => {
                if entry.after_stop == AfterStop::Nothing {
                    entry.after_stop = AfterStop::Start;
                }
            }
            ServerState::Stopped | ServerState::Failed | ServerState::Backoff => {
                let generation = entry.history.admin_start(now);
                entry.next_restart = None;
                self.launch(myself, id, generation, "start requested").await;
            }
        }
        self.servers.get(id).map(status_of).ok_or_else(|| ActorsError::NotFound(id.to_owned()))
    }

    /// Spawns the server actor of incarnation `generation` (its `pre_start` starts the process).
    async fn launch(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str, generation: u64, reason: &str) {
        let Some(entry) = self.servers.get(id) else {
            return;
        };
        let slot = Arc::new(Slot::default());
        let args = ServerArgs {
            spec: entry.spec.clone(),
            generation,
            launcher: self.launcher.clone(),
            logs: entry.logs.clone(),
            metrics: entry.metrics.clone(),
            link: entry.link.clone(),
            supervisor: myself.clone(),
            slot: slot.clone(),
            helper_policy: self.helper_policy.clone(),
        };
        match Actor::spawn_linked(None, ServerActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                self.by_actor.insert(actor.get_id(), id.to_owned());
                if let Some(entry) = self.servers.get_mut(id) {
                    entry.last_pid = slot.pid();
                    entry.health_failures = 0;
                    entry.live = Some(Live { actor, generation, slot, started: SystemTime::now() });
                }
                let pid = self.servers.get(id).and_then(|e| e.last_pid);
                if let Some(pid) = pid {
                    let start_ticks = crate::process::start_ticks(pid);
                    self.emit(id, generation, EventKind::Spawned { pid, start_ticks });
                }
                let reason = match pid {
                    Some(pid) => format!("{reason} (pid {pid})"),
                    None => reason.to_owned(),
                };
                self.set_state(id, ServerState::Starting, reason);
            }
            Err(err) => {
                let message = match err {
                    ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
                    other => other.to_string(),
                };
                self.emit(id, generation, EventKind::Incident { message: format!("start failed: {message}") });
                if let Some(entry) = self.servers.get_mut(id) {
                    entry.last_pid = None;
                }
                // A failed start is charged like any exit; the policy may start it again (boxed: recursion).
                Box::pin(self.apply_exit(
                    myself,
                    id,
                    generation,
                    Outcome::Exited(policy::ExitKind::SpawnFailed),
                    Some(message),
                    None,
                ))
                .await;
            }
        }
    }

    /// An incarnation's actor is gone: read its outcome and decide.
    async fn incarnation_ended(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str, failure: Option<String>) {
        let Some(entry) = self.servers.get_mut(id) else {
            return;
        };
        let Some(live) = entry.live.take() else {
            return;
        };
        let outcome = match live.slot.outcome() {
            Some(outcome) => outcome,
            None => {
                // The actor failed or was killed before it finished: make sure its tree is gone.
                if let Some(control) = live.slot.control() {
                    tokio::spawn(async move {
                        control.kill().await;
                    });
                }
                if entry.state == ServerState::Stopping {
                    Outcome::Stopped(policy::ExitKind::Crashed)
                } else {
                    Outcome::Exited(policy::ExitKind::Crashed)
                }
            }
        };
        self.apply_exit(myself, id, live.generation, outcome, failure, live.slot.exited_at()).await;
    }

    async fn apply_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
        generation: u64,
        outcome: Outcome,
        detail: Option<String>,
        exited_at: Option<std::time::Instant>,
    ) {
        let now = self.now_ms();
        let sample = self.jitter_sample();
        let Some(entry) = self.servers.get_mut(id) else {
            return;
        };
        // An incarnation that ends on its own while a stop is under way was still stopped on request:
        // the request's follow-up (start again, delete) must happen and its waiters learn the result.
        let outcome = match outcome {
            Outcome::Exited(kind) if entry.state == ServerState::Stopping => Outcome::Stopped(kind),
            other => other,
        };
        let (Outcome::Exited(kind) | Outcome::Stopped(kind)) = outcome;
        let mut exit = Exit::new(kind);
        if let Some(detail) = detail {
            exit.description = format!("{}: {detail}", exit.description);
        }
        entry.last_exit = Some(exit.clone());
        let pid = entry.last_pid;
        let description = exit.description.clone();
        self.emit_at(
            id,
            generation,
            EventKind::Exited { pid, exit },
            exited_at.unwrap_or_else(std::time::Instant::now),
        );
        let Some(entry) = self.servers.get_mut(id) else {
            return;
        };
        match outcome {
            Outcome::Stopped(_) => {
                let after = std::mem::replace(&mut entry.after_stop, AfterStop::Nothing);
                if entry.state != ServerState::Failed {
                    self.set_state(id, ServerState::Stopped, format!("stopped on request ({description})"));
                }
                match after {
                    AfterStop::Start if !self.shutting_down => {
                        let generation = self.servers.get_mut(id).map(|e| e.history.admin_start(now)).unwrap_or(0);
                        self.launch(myself, id, generation, "restart requested").await;
                    }
                    AfterStop::Delete => {
                        self.remove(id);
                        return;
                    }
                    _ => {}
                }
                self.reply_waiters(id);
            }
            Outcome::Exited(kind) => {
                let decision = entry.history.exited(&entry.spec.policy, generation, kind, now, sample);
                match decision {
                    policy::Decision::Restart { delay_ms, generation, attempt } => {
                        entry.restarts += 1;
                        entry.next_restart = Some(SystemTime::now() + Duration::from_millis(delay_ms));
                        self.set_state(
                            id,
                            ServerState::Backoff,
                            format!("{description}; restart {attempt} in {delay_ms} ms"),
                        );
                        self.emit(id, generation, EventKind::RestartScheduled { delay_ms, attempt });
                        if self.shutting_down {
                            // No new incarnation during shutdown; the stopped server just waits.
                        } else if delay_ms == 0 {
                            if let Some(entry) = self.servers.get_mut(id)
                                && entry.history.timer_fired(generation)
                            {
                                entry.next_restart = None;
                                self.launch(myself, id, generation, "restarting").await;
                            }
                        } else {
                            let id = id.to_owned();
                            myself.send_after(Duration::from_millis(delay_ms), move || SupervisorMsg::RestartTimer {
                                id,
                                generation,
                            });
                        }
                    }
                    policy::Decision::GiveUp { reason } => {
                        let reason = format!("{description}; gave up: {reason}");
                        self.emit(id, generation, EventKind::GaveUp { reason: reason.clone() });
                        self.set_state(id, ServerState::Failed, reason);
                    }
                    policy::Decision::Stay { reason } => {
                        self.set_state(id, ServerState::Stopped, format!("{description}; not restarted: {reason}"));
                    }
                }
                self.reply_waiters(id);
            }
        }
        self.check_shutdown_done();
    }

    fn reply_waiters(&mut self, id: &str) {
        let Some(entry) = self.servers.get_mut(id) else {
            return;
        };
        if entry.live.as_ref().is_some_and(|_| entry.state == ServerState::Stopping) {
            return;
        }
        let waiters = std::mem::take(&mut entry.waiters);
        let status = status_of(entry);
        for waiter in waiters {
            let _ = waiter.send(Ok(status.clone()));
        }
    }

    fn begin_stop(&mut self, id: &str, reason: &str) {
        let Some(entry) = self.servers.get(id) else {
            return;
        };
        let Some(live) = entry.live.as_ref() else {
            return;
        };
        let _ = live.actor.cast(ServerMsg::Stop);
        self.set_state(id, ServerState::Stopping, reason.to_owned());
    }

    fn stop(&mut self, id: &str, after: AfterStop, reply: Reply<ServerStatus>) {
        let now = self.now_ms();
        let Some(entry) = self.servers.get_mut(id) else {
            let _ = reply.send(Err(ActorsError::NotFound(id.to_owned())));
            return;
        };
        entry.history.admin_stop(now);
        entry.next_restart = None;
        if after != AfterStop::Nothing || entry.after_stop == AfterStop::Nothing {
            entry.after_stop = after;
        }
        if entry.live.is_some() {
            entry.waiters.push(reply);
            if entry.state != ServerState::Stopping {
                let reason = match after {
                    AfterStop::Nothing => "stop requested",
                    AfterStop::Start => "restart requested",
                    AfterStop::Delete => "delete requested",
                };
                self.begin_stop(id, reason);
            }
            return;
        }
        if entry.state == ServerState::Backoff {
            self.set_state(id, ServerState::Stopped, "stop requested during backoff".into());
        }
        match after {
            AfterStop::Delete => {
                let status = self.servers.get(id).map(status_of);
                self.remove(id);
                if let Some(status) = status {
                    let _ = reply.send(Ok(status));
                }
            }
            _ => {
                if let Some(entry) = self.servers.get_mut(id) {
                    entry.after_stop = AfterStop::Nothing;
                    let _ = reply.send(Ok(status_of(entry)));
                }
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(entry) = self.servers.get(id) {
            entry.link.set(LinkState::Down(format!("server {id} was deleted")));
        }
        if let Some(entry) = self.servers.remove(id) {
            entry.logs.close();
            let generation = entry.history.generation();
            let mut status = status_of(&entry);
            status.state = ServerState::Stopped;
            for waiter in entry.waiters {
                let _ = waiter.send(Ok(status.clone()));
            }
            self.emit(id, generation, EventKind::Deleted);
        }
    }

    fn check_shutdown_done(&mut self) {
        if !self.shutting_down || self.servers.values().any(|e| e.live.is_some()) {
            return;
        }
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

fn status_of(entry: &Entry) -> ServerStatus {
    ServerStatus {
        id: entry.spec.id.clone(),
        name: entry.spec.name.clone(),
        state: entry.state,
        since: entry.since,
        generation: entry.history.generation(),
        pid: entry.live.as_ref().and_then(|l| l.slot.pid()),
        started_at: entry.live.as_ref().map(|l| l.started),
        restarts: entry.restarts,
        streak: entry.history.streak(),
        last_exit: entry.last_exit.clone(),
        next_restart: entry.next_restart,
        health_failures: entry.health_failures,
        last_health: entry.last_health.clone(),
        usage: entry.metrics.latest(),
        logs: entry.logs.counters(),
        sandbox: entry.sandbox.clone(),
        mcp_session: crate::status::session(&entry.link.state()),
        gateway: entry.link.stats(),
    }
}

/// The frontends' handle to the supervision tree: commands, queries and the event stream.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
    events: broadcast::Sender<Event>,
    exit: watch::Receiver<Option<SupervisorExit>>,
}

/// How long queries wait for the supervisor before they report it unavailable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

impl SupervisorHandle {
    /// Starts the supervision tree.
    pub async fn spawn(config: SupervisorConfig) -> Result<SupervisorHandle, ActorsError> {
        let (events, _) = broadcast::channel(4096);
        let (exit_tx, exit) = watch::channel(None);
        let args = SupervisorArgs { config, events: events.clone(), exit: exit_tx };
        let (actor, _join) =
            Actor::spawn(None, Supervisor, args).await.map_err(|err| ActorsError::Unavailable(err.to_string()))?;
        Ok(SupervisorHandle { actor, events, exit })
    }

    async fn ask<T: Send + 'static>(
        &self,
        timeout: Option<Duration>,
        msg: impl FnOnce(RpcReplyPort<Result<T, ActorsError>>) -> SupervisorMsg,
    ) -> Result<T, ActorsError> {
        match self.actor.call(msg, timeout).await {
            Ok(ractor::rpc::CallResult::Success(res)) => res,
            Ok(ractor::rpc::CallResult::Timeout) => Err(ActorsError::Timeout),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                Err(ActorsError::Unavailable("the supervisor has stopped".into()))
            }
        }
    }

    /// Adds a server (stopped); start it with `start`.
    pub async fn add(&self, spec: ServerSpec) -> Result<ServerStatus, ActorsError> {
        self.ask(Some(QUERY_TIMEOUT), |r| SupervisorMsg::Add(Box::new(spec), r)).await
    }

    /// Starts a server (clears `failed` and the restart history); returns once its process is spawned.
    pub async fn start(&self, id: &str) -> Result<ServerStatus, ActorsError> {
        let id = id.to_owned();
        self.ask(Some(QUERY_TIMEOUT), |r| SupervisorMsg::Start(id, r)).await
    }

    /// Stops a server and returns once its whole process tree is gone.
    pub async fn stop(&self, id: &str) -> Result<ServerStatus, ActorsError> {
        let id = id.to_owned();
        self.ask(None, |r| SupervisorMsg::Stop(id, r)).await
    }

    /// Stops the server (if running) and starts it again.
    pub async fn restart(&self, id: &str) -> Result<ServerStatus, ActorsError> {
        let id = id.to_owned();
        self.ask(None, |r| SupervisorMsg::Restart(id, r)).await
    }

    /// Stops the server and forgets it; its files are the caller's to remove.
    pub async fn delete(&self, id: &str) -> Result<(), ActorsError> {
        let id = id.to_owned();
        self.ask(None, |r| SupervisorMsg::Delete(id, false, r)).await.map(|_| ())
    }

    /// Deletes the server after killing its tree at once, without the graceful stop.
    pub async fn delete_now(&self, id: &str) -> Result<(), ActorsError> {
        let id = id.to_owned();
        self.ask(None, |r| SupervisorMsg::Delete(id, true, r)).await.map(|_| ())
    }

    pub async fn status(&self, id: &str) -> Result<ServerStatus, ActorsError> {
        let id = id.to_owned();
        self.ask(Some(QUERY_TIMEOUT), |r| SupervisorMsg::Status(id, r)).await
    }

    pub async fn list(&self) -> Result<Vec<ServerStatus>, ActorsError> {
        match self.actor.call(SupervisorMsg::List, Some(QUERY_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(all)) => Ok(all),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ActorsError::Timeout),
            _ => Err(ActorsError::Unavailable("the supervisor has stopped".into())),
        }
    }

    /// The last `lines` log lines of a server, oldest first.
    pub async fn logs(&self, id: &str, lines: usize) -> Result<Vec<LogLine>, ActorsError> {
        let (book, _) = self.books(id).await?;
        Ok(book.tail(lines))
    }

    /// Live log lines of a server from now on.
    pub async fn follow_logs(&self, id: &str) -> Result<broadcast::Receiver<LogLine>, ActorsError> {
        let (book, _) = self.books(id).await?;
        Ok(book.subscribe())
    }

    /// The kept metrics history of a server, oldest first.
    pub async fn metrics(&self, id: &str) -> Result<Vec<MetricsSample>, ActorsError> {
        let (_, ring) = self.books(id).await?;
        Ok(ring.all())
    }

    /// The samples of a server's history taken after `after`, oldest first.
    pub async fn metrics_since(&self, id: &str, after: SystemTime) -> Result<Vec<MetricsSample>, ActorsError> {
        let (_, ring) = self.books(id).await?;
        Ok(ring.since(after))
    }

    /// The MCP link of a server: its upstream session whenever an incarnation is up.
    pub async fn link(&self, id: &str) -> Result<Arc<McpLink>, ActorsError> {
        let id = id.to_owned();
        self.ask(Some(QUERY_TIMEOUT), |r| SupervisorMsg::Link(id, r)).await
    }

    /// The MCP links of every server, by id.
    pub async fn links(&self) -> Result<Vec<Arc<McpLink>>, ActorsError> {
        match self.actor.call(SupervisorMsg::Links, Some(QUERY_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(links)) => Ok(links),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ActorsError::Timeout),
            _ => Err(ActorsError::Unavailable("the supervisor has stopped".into())),
        }
    }

    async fn books(&self, id: &str) -> Result<(Arc<LogBook>, Arc<MetricsRing>), ActorsError> {
        let id = id.to_owned();
        self.ask(Some(QUERY_TIMEOUT), |r| SupervisorMsg::Books(id, r)).await
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stops every server in parallel, waits until all trees are gone, then stops the supervisor.
    pub async fn shutdown(&self) -> Result<(), ActorsError> {
        match self.actor.call(SupervisorMsg::Shutdown, None).await {
            Ok(ractor::rpc::CallResult::Success(())) => {}
            _ => {
                return Err(ActorsError::Unavailable("the supervisor has stopped".into()));
            }
        }
        let _ = self.actor.stop_and_wait(None, None).await;
        Ok(())
    }

    /// Waits until the supervisor has ended and says how.
    pub async fn wait(&self) -> SupervisorExit {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(SupervisorExit::Shutdown),
            Err(_) => SupervisorExit::Meltdown("the supervisor vanished".into()),
        }
    }
}

#[cfg(test)]
mod tests;
