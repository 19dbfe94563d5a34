//! The server actor: one incarnation of one hosted server, its process tree and its helpers.
//!
//! It starts the process in `pre_start` (a failed spawn is a failed start), spawns the log tailer,
//! health poller and metrics sampler, turns exits, probes and samples into decisions for this
//! incarnation, and stops itself when the process is gone, leaving the outcome in its slot for the
//! supervisor. Helpers that crash are restarted on their own small budget; the process is untouched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::health::{HealthArgs, HealthPoller};
use crate::link::{LinkState, McpLink, Upstream, UpstreamHandler};
use crate::logs::{DrainGate, LogBook, LogTailer, LogTailerArgs, SharedPipe, Stream};
use crate::metrics::{MetricsArgs, MetricsRing, MetricsSample, MetricsSampler};
use crate::process::{ExitFuture, InPipe, Launcher, Pipe, TreeControl};
use crate::spec::{HealthCheck, ServerSpec, Transport};
use crate::supervisor::SupervisorMsg;

/// How long a crashed incarnation's pipes get to deliver their last lines before the restart.
const CRASH_DRAIN: Duration = Duration::from_millis(50);

/// How long a stopped tree's pipes get to deliver their last lines.
const STOP_DRAIN: Duration = Duration::from_secs(1);

/// The upstream MCP session of a stdio server's incarnation.
pub(crate) type Session = rmcp::service::RunningService<rmcp::RoleClient, UpstreamHandler>;

/// How an incarnation ended, as the supervisor learns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ended on its own, or was killed by hivehost for a reason in `exit` (health, memory, timeout).
    Exited(policy::ExitKind),
    /// It was stopped on request (admin stop, restart, delete, shutdown).
    Stopped(policy::ExitKind),
}

/// Where a server actor leaves what the supervisor needs after it is gone.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) pid: Mutex<Option<u32>>,
    pub(crate) outcome: Mutex<Option<Outcome>>,
    pub(crate) control: Mutex<Option<Arc<dyn TreeControl>>>,
    /// When the main process was reaped: the moment its exit became known.
    pub(crate) exited_at: Mutex<Option<std::time::Instant>>,
}

impl Slot {
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn exited_at(&self) -> Option<std::time::Instant> {
        *self.exited_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn control(&self) -> Option<Arc<dyn TreeControl>> {
        self.control.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) enum ServerMsg {
    /// The main process exited (and was reaped).
    Exited(policy::ExitKind),
    /// A health probe finished.
    Probe { ok: bool, detail: String },
    /// The metrics sampler measured the tree.
    Sampled(MetricsSample),
    /// The MCP handshake over stdin and stdout finished (or failed, or took too long).
    Handshake(Result<(Box<Session>, Arc<crate::wire::Wire>), String>),
    /// `start_timeout` passed.
    StartTimedOut,
    /// Stop on request: SIGTERM to the tree, SIGKILL after `shutdown_timeout`.
    Stop,
    /// The grace period is over: kill the tree.
    Escalate,
    /// Kill the tree now, without a grace period (a forced delete).
    KillNow,
    /// Everything is cleaned up; record the outcome and stop.
    Finish(Outcome),
    /// Respawn a helper that crashed.
    RespawnHelper(Helper),
}

/// The helper actors of an incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Helper {
    Logs,
    Health,
    Metrics,
}

impl Helper {
    fn name(self) -> &'static str {
        match self {
            Helper::Logs => "log tailer",
            Helper::Health => "health poller",
            Helper::Metrics => "metrics sampler",
        }
    }
}

pub(crate) struct ServerArgs {
    pub(crate) spec: Arc<ServerSpec>,
    pub(crate) generation: u64,
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) logs: Arc<LogBook>,
    pub(crate) metrics: Arc<MetricsRing>,
    pub(crate) link: Arc<McpLink>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) slot: Arc<Slot>,
    /// The restart budget of each helper.
    pub(crate) helper_policy: policy::RestartPolicy,
}

pub(crate) struct ServerState {
    spec: Arc<ServerSpec>,
    generation: u64,
    supervisor: ActorRef<SupervisorMsg>,
    slot: Arc<Slot>,
    logs: Arc<LogBook>,
    metrics: Arc<MetricsRing>,
    control: Arc<dyn TreeControl>,
    exit: Option<ExitFuture>,
    pipes: Vec<(Stream, SharedPipe)>,
    gate: Arc<DrainGate>,
    link: Arc<McpLink>,
    /// A stdio server's stdin and stdout, until the handshake takes them.
    stdin: Option<InPipe>,
    stdout: Option<Pipe>,
    /// The upstream MCP session of a stdio server, once the handshake is done.
    session: Option<Box<Session>>,
    tasks: Vec<JoinHandle<()>>,
    /// Why hivehost is killing it, if it is (health, memory, start timeout).
    kill_reason: Option<policy::ExitKind>,
    stopping: bool,
    exited: Option<policy::ExitKind>,
    ready: bool,
    health_failures: u32,
    /// Its limits are a cgroup's: the kernel enforces memory and CPU, not the sampler and throttle.
    kernel_limits: bool,
    /// Kernel OOM kills in its cgroup already reported.
    oom_reported: u64,
    helpers: HashMap<ActorId, Helper>,
    helper_policy: policy::RestartPolicy,
    helper_history: HashMap<Helper, policy::History>,
    epoch: Instant,
}

/// The server actor; one per incarnation.
pub(crate) struct ServerActor;

impl Actor for ServerActor {
    type Msg = ServerMsg;
    type State = ServerState;
    type Arguments = ServerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ServerMsg>,
        args: ServerArgs,
    ) -> Result<ServerState, ActorProcessingErr> {
        let incarnation = args.launcher.launch(&args.spec, args.generation)?;
        *args.slot.pid.lock().unwrap_or_else(|p| p.into_inner()) = incarnation.pid;
        *args.slot.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(incarnation.control.clone());
        let gate = Arc::new(DrainGate::new(incarnation.log_pipes.len()));
        let kernel_limits = incarnation.sandbox.iter().any(|r| {
            r.layer == crate::sandbox::Layer::Limits && matches!(r.state, crate::sandbox::LayerState::Active(_))
        });
        let pipes = incarnation
            .log_pipes
            .into_iter()
            .map(|(stream, pipe)| (stream, Arc::new(tokio::sync::Mutex::new(Some(pipe)))))
            .collect();
        let mut tasks = Vec::new();
        // Without a cgroup quota, CPU is held by stopping the tree for part of the time.
        if let (false, Some(percent)) = (kernel_limits, args.spec.limits.cpu_percent) {
            tasks.push(tokio::spawn(crate::process::throttle(incarnation.control.clone(), percent)));
        }
        Ok(ServerState {
            spec: args.spec,
            generation: args.generation,
            supervisor: args.supervisor,
            slot: args.slot,
            logs: args.logs,
            metrics: args.metrics,
            control: incarnation.control,
            exit: Some(incarnation.exit),
            pipes,
            gate,
            link: args.link,
            stdin: incarnation.stdin,
            stdout: incarnation.stdout,
            session: None,
            tasks,
            kill_reason: None,
            stopping: false,
            exited: None,
            ready: false,
            health_failures: 0,
            kernel_limits,
            oom_reported: 0,
            helpers: HashMap::new(),
            helper_policy: args.helper_policy,
            helper_history: HashMap::new(),
            epoch: Instant::now(),
        })
    }

    async fn post_start(&self, myself: ActorRef<ServerMsg>, state: &mut ServerState) -> Result<(), ActorProcessingErr> {
        if let Some(exit) = state.exit.take() {
            let me = myself.clone();
            let slot = state.slot.clone();
            state.tasks.push(tokio::spawn(async move {
                let kind = exit.await;
                *slot.exited_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                let _ = me.cast(ServerMsg::Exited(kind));
            }));
        }
        for helper in [Helper::Logs, Helper::Health, Helper::Metrics] {
            state.helper_history.entry(helper).or_default().admin_start(0);
            spawn_helper(&myself, state, helper).await;
        }
        let handshake = state.spec.transport == Transport::Stdio;
        if handshake {
            start_handshake(&myself, state);
        }
        if handshake || http_health(&state.spec) {
            myself.send_after(state.spec.start_timeout, || ServerMsg::StartTimedOut);
        } else {
            mark_ready(state);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ServerMsg>,
        msg: ServerMsg,
        state: &mut ServerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ServerMsg::Exited(kind) => on_exited(&myself, state, kind),
            ServerMsg::Probe { ok, detail } => on_probe(&myself, state, ok, detail),
            ServerMsg::Sampled(sample) => on_sample(&myself, state, sample),
            ServerMsg::Handshake(result) => on_handshake(&myself, state, result),
            ServerMsg::StartTimedOut => {
                if !state.ready {
                    let limit = state.spec.start_timeout;
                    let why = if state.spec.transport == Transport::Stdio && state.session.is_none() {
                        format!("no MCP handshake on its stdin and stdout within start_timeout ({limit:?})")
                    } else {
                        format!("not ready within start_timeout ({limit:?})")
                    };
                    incident(state, format!("{why}; stopping it"));
                    kill_for(&myself, state, policy::ExitKind::StartTimeout, true);
                }
            }
            ServerMsg::Stop => {
                if !state.stopping {
                    state.stopping = true;
                    retire(state, "it is stopping");
                    if state.exited.is_none() && state.kill_reason.is_none() {
                        start_ladder(&myself, state);
                    }
                }
            }
            ServerMsg::KillNow => {
                state.stopping = true;
                retire(state, "it is being killed");
                if state.exited.is_none() {
                    let control = state.control.clone();
                    state.tasks.push(tokio::spawn(async move {
                        control.kill().await;
                    }));
                }
            }
            ServerMsg::Escalate => {
                if state.exited.is_none() {
                    incident(
                        state,
                        format!("still running {:?} after SIGTERM; killing its tree", state.spec.shutdown_timeout),
                    );
                    let control = state.control.clone();
                    state.tasks.push(tokio::spawn(async move {
                        control.kill().await;
                    }));
                }
            }
            ServerMsg::Finish(outcome) => {
                *state.slot.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                myself.stop(None);
            }
            ServerMsg::RespawnHelper(helper) => {
                if state.exited.is_none() && !state.stopping {
                    spawn_helper(&myself, state, helper).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ServerMsg>,
        evt: SupervisionEvent,
        state: &mut ServerState,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden on purpose: ractor's default would stop this actor (and so the process) when a
        // helper dies. A helper's death restarts only that helper, on its own small budget.
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_else(|| "no reason".into())))
            }
            _ => return Ok(()),
        };
        let Some(helper) = state.helpers.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.exited.is_some() || state.stopping {
            return Ok(());
        }
        let now = state.epoch.elapsed().as_millis() as u64;
        let history = state.helper_history.entry(helper).or_default();
        let generation = history.generation();
        match history.exited(&state.helper_policy, generation, policy::ExitKind::Crashed, now, 0) {
            policy::Decision::Restart { delay_ms, generation, .. } => {
                history.timer_fired(generation);
                history.ready(generation, now);
                incident(state, format!("{} {why}; restarting it", helper.name()));
                myself.send_after(Duration::from_millis(delay_ms), move || ServerMsg::RespawnHelper(helper));
            }
            decision => {
                incident(
                    state,
                    format!("{} {why}; not restarted ({decision:?}); the server keeps running", helper.name()),
                );
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<ServerMsg>, state: &mut ServerState) -> Result<(), ActorProcessingErr> {
        for task in &state.tasks {
            task.abort();
        }
        Ok(())
    }
}

impl Drop for ServerState {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if self.slot.outcome().is_none() {
            // The actor died without finishing (killed, or it failed): the tree must not outlive it.
            self.control.kill_now();
        }
    }
}

async fn spawn_helper(myself: &ActorRef<ServerMsg>, state: &mut ServerState, helper: Helper) {
    let supervisor: ActorCell = myself.get_cell();
    let spawned = match helper {
        Helper::Logs => {
            if state.pipes.is_empty() {
                return;
            }
            let args = LogTailerArgs {
                book: state.logs.clone(),
                generation: state.generation,
                pipes: state.pipes.clone(),
                gate: state.gate.clone(),
            };
            Actor::spawn_linked(None, LogTailer, args, supervisor).await.map(|(actor, _)| actor.get_id())
        }
        Helper::Health => {
            let Some(spec) = state.spec.health.clone() else {
                return;
            };
            let args =
                HealthArgs { spec, server: myself.clone(), link: state.link.clone(), generation: state.generation };
            Actor::spawn_linked(None, HealthPoller, args, supervisor).await.map(|(actor, _)| actor.get_id())
        }
        Helper::Metrics => {
            let args = MetricsArgs {
                generation: state.generation,
                interval: state.spec.metrics_interval,
                control: state.control.clone(),
                ring: state.metrics.clone(),
                server: myself.clone(),
            };
            Actor::spawn_linked(None, MetricsSampler, args, supervisor).await.map(|(actor, _)| actor.get_id())
        }
    };
    match spawned {
        Ok(id) => {
            state.helpers.insert(id, helper);
        }
        Err(err) => incident(state, format!("could not start its {}: {err}", helper.name())),
    }
}

fn mark_ready(state: &mut ServerState) {
    if !state.ready {
        state.ready = true;
        let _ = state.supervisor.cast(SupervisorMsg::Ready { id: state.spec.id.clone(), generation: state.generation });
    }
}

fn incident(state: &ServerState, message: String) {
    tracing::warn!(server = %state.spec.id, generation = state.generation, "{message}");
    let _ = state.supervisor.cast(SupervisorMsg::Incident {
        id: state.spec.id.clone(),
        generation: state.generation,
        message,
    });
}

/// Whether readiness waits for an HTTP health check.
fn http_health(spec: &ServerSpec) -> bool {
    spec.health.as_ref().is_some_and(|h| matches!(h.check, HealthCheck::Http { .. }))
}

/// Opens the upstream MCP session on the child's stdin and stdout, in a task: the 2026-07-28
/// `server/discover` first, falling back to the `initialize` handshake of older servers.
fn start_handshake(myself: &ActorRef<ServerMsg>, state: &mut ServerState) {
    use rmcp::model::ProtocolVersion;
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    let (Some(stdout), Some(stdin)) = (state.stdout.take(), state.stdin.take()) else {
        let _ = myself.cast(ServerMsg::Handshake(Err("its stdin or stdout is not a pipe".into())));
        return;
    };
    let handler = state.link.handler();
    let limit = state.spec.start_timeout;
    let me = myself.clone();
    let (wire, transport, reader) = crate::wire::Wire::open(stdin, stdout);
    state.tasks.push(reader);
    state.tasks.push(tokio::spawn(async move {
        let lifecycle =
            ClientLifecycleMode::Auto { preferred_versions: vec![ProtocolVersion::V_2026_07_28], legacy_version: None };
        let result = match tokio::time::timeout(limit, handler.serve_with_lifecycle(transport, lifecycle)).await {
            Ok(Ok(session)) => Ok((Box::new(session), wire)),
            Ok(Err(err)) => Err(format!("the MCP handshake on its stdin and stdout failed: {err}")),
            Err(_) => Err(format!("no MCP handshake on its stdin and stdout within start_timeout ({limit:?})")),
        };
        let _ = me.cast(ServerMsg::Handshake(result));
    }));
}

fn on_handshake(
    myself: &ActorRef<ServerMsg>,
    state: &mut ServerState,
    result: Result<(Box<Session>, Arc<crate::wire::Wire>), String>,
) {
    if state.exited.is_some() || state.stopping || state.kill_reason.is_some() {
        return;
    }
    match result {
        Ok((session, wire)) => {
            let Some(info) = session.peer().peer_info() else {
                incident(state, "the MCP handshake ended without the server's info; stopping it".into());
                kill_for(myself, state, policy::ExitKind::StartTimeout, true);
                return;
            };
            let peer = session.peer().clone();
            tracing::debug!(server = %state.spec.id, generation = state.generation, protocol = %info.protocol_version, "MCP session up");
            if !info.protocol_version.has_initialize() {
                wire.stamp(info.protocol_version.clone());
            }
            state.link.set(LinkState::Up(Upstream { generation: state.generation, peer, wire, info }));
            state.session = Some(session);
            if !http_health(&state.spec) {
                mark_ready(state);
            }
        }
        Err(why) => {
            incident(state, format!("{why}; stopping it"));
            kill_for(myself, state, policy::ExitKind::StartTimeout, true);
        }
    }
}

/// Takes this incarnation's session off the link: gateway calls wait for the next one.
fn retire(state: &mut ServerState, why: &str) {
    state.link.retire(state.generation, format!("server {} has no live session: {why}", state.spec.id));
}

fn on_exited(myself: &ActorRef<ServerMsg>, state: &mut ServerState, kind: policy::ExitKind) {
    state.exited = Some(kind);
    retire(state, "its process exited");
    state.session = None;
    if kind == policy::ExitKind::MemoryLimit && state.kill_reason.is_none() {
        state.oom_reported = state.control.oom_kills();
        let limit = state.spec.limits.memory_mb.map_or("its".to_owned(), |mb| format!("{mb} MiB"));
        incident(
            state,
            format!(
                "out of memory: the kernel killed it at its memory limit of {limit} (resource_limits.memory_mb, enforced by its cgroup)"
            ),
        );
    }
    let outcome =
        if state.stopping { Outcome::Stopped(kind) } else { Outcome::Exited(state.kill_reason.unwrap_or(kind)) };
    let control = state.control.clone();
    let gate = state.gate.clone();
    let me = myself.clone();
    if state.stopping || state.kill_reason.is_some() {
        // Nothing of a stopped tree may survive: kill it all, then collect the last lines.
        let supervisor = state.supervisor.clone();
        let (id, generation) = (state.spec.id.clone(), state.generation);
        state.tasks.push(tokio::spawn(async move {
            let report = control.kill().await;
            if report.survivors > 0 {
                let message = format!("{} processes of its tree survived SIGKILL", report.survivors);
                let _ = supervisor.cast(SupervisorMsg::Incident { id, generation, message });
            }
            gate.wait(STOP_DRAIN).await;
            let _ = me.cast(ServerMsg::Finish(outcome));
        }));
    } else {
        // It ended on its own: hand over at once so the restart is fast, and kill any survivors
        // beside it. Survivors that hold a pipe open are killed before the hand-over.
        state.tasks.push(tokio::spawn(async move {
            if gate.wait(CRASH_DRAIN).await {
                tokio::spawn(async move {
                    control.sweep().await;
                });
            } else {
                control.kill().await;
                gate.wait(STOP_DRAIN).await;
            }
            let _ = me.cast(ServerMsg::Finish(outcome));
        }));
    }
}

fn on_probe(myself: &ActorRef<ServerMsg>, state: &mut ServerState, ok: bool, detail: String) {
    if state.exited.is_some() || state.stopping || state.kill_reason.is_some() {
        return;
    }
    let id = state.spec.id.clone();
    let generation = state.generation;
    if ok {
        mark_ready(state);
        if state.health_failures > 0 {
            state.health_failures = 0;
            let _ = state.supervisor.cast(SupervisorMsg::Health { id, generation, healthy: true, detail });
        }
        return;
    }
    if !state.ready {
        // Before the first success only start_timeout counts.
        return;
    }
    state.health_failures += 1;
    let failures = state.health_failures;
    let limit = state.spec.health.as_ref().map_or(u32::MAX, |h| h.failures_before_restart);
    let _ = state.supervisor.cast(SupervisorMsg::Health {
        id,
        generation,
        healthy: false,
        detail: format!("{detail} ({failures} of {limit} consecutive failures)"),
    });
    if failures >= limit {
        incident(state, format!("{failures} consecutive health check failures; restarting it"));
        kill_for(myself, state, policy::ExitKind::HealthCheck, true);
    }
}

fn on_sample(myself: &ActorRef<ServerMsg>, state: &mut ServerState, sample: MetricsSample) {
    // Where the kernel enforces the limits (a cgroup) the watchdog stands aside; the kernel's own
    // OOM kills of processes other than the main one are reported here (the main one's on exit).
    if state.kernel_limits {
        let kills = state.control.oom_kills();
        if kills > state.oom_reported && state.exited.is_none() {
            let limit = state.spec.limits.memory_mb.map_or("its".to_owned(), |mb| format!("{mb} MiB"));
            incident(
                state,
                format!(
                    "out of memory: the kernel killed {} process(es) of its tree at its memory limit of {limit} (resource_limits.memory_mb, enforced by its cgroup); the server runs on",
                    kills - state.oom_reported
                ),
            );
            state.oom_reported = kills;
        }
        return;
    }
    let Some(limit_mb) = state.spec.limits.memory_mb else {
        return;
    };
    let limit = limit_mb.saturating_mul(1024 * 1024);
    if sample.rss_bytes > limit && state.kill_reason.is_none() && !state.stopping && state.exited.is_none() {
        incident(
            state,
            format!(
                "memory limit exceeded: the tree uses {} MiB of {} MiB (resource_limits.memory_mb); killed",
                sample.rss_bytes / (1024 * 1024),
                limit_mb
            ),
        );
        kill_for(myself, state, policy::ExitKind::MemoryLimit, false);
    }
}

/// Kills the incarnation for `reason`: gracefully (SIGTERM, then SIGKILL after the timeout) or at once.
fn kill_for(myself: &ActorRef<ServerMsg>, state: &mut ServerState, reason: policy::ExitKind, graceful: bool) {
    if state.kill_reason.is_some() || state.stopping || state.exited.is_some() {
        return;
    }
    state.kill_reason = Some(reason);
    retire(state, "hivehost is killing it");
    if graceful {
        start_ladder(myself, state);
    } else {
        let control = state.control.clone();
        state.tasks.push(tokio::spawn(async move {
            control.kill().await;
        }));
    }
}

/// SIGTERM to the whole tree now; `Escalate` after `shutdown_timeout`.
fn start_ladder(myself: &ActorRef<ServerMsg>, state: &mut ServerState) {
    let control = state.control.clone();
    let me = myself.clone();
    let grace = state.spec.shutdown_timeout;
    state.tasks.push(tokio::spawn(async move {
        control.terminate().await;
        tokio::time::sleep(grace).await;
        let _ = me.cast(ServerMsg::Escalate);
    }));
}
