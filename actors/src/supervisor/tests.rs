//! Actor-level tests of the supervisor on tokio's paused clock, with a scripted launcher instead of processes.
//!
//! Every test drives the supervisor only through its handle and its event stream. Time is paused and
//! advances on its own whenever every task waits, so delays are measured exactly: the launcher records
//! the tokio instant of every launch, signal and exit.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use policy::{Backoff, ExitKind, PolicyConfig, RestartMode};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::error::ActorsError;
use crate::event::{Event, EventKind};
use crate::process::{Incarnation, KillReport, Launcher, SpawnError, TreeControl, Usage};
use crate::spec::{LogSpec, ServerSpec};
use crate::state::ServerState;
use crate::supervisor::{SupervisorConfig, SupervisorExit, SupervisorHandle};

const MS: Duration = Duration::from_millis(1);

/// What one launch of the scripted launcher does.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The incarnation exits on its own with this kind after this long (sooner if it is signalled).
    ExitAfter(Duration, ExitKind),
    /// The incarnation runs until it is signalled; with `ignore_term` only a kill ends it.
    RunUntilStopped { ignore_term: bool },
    /// The launch fails as if the program did not exist.
    FailSpawn,
}

/// What the launcher saw happen, with the paused-clock instant it happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Launched,
    SpawnFailed,
    Terminated,
    Killed,
    Exited(ExitKind),
}

/// One thing that happened to one incarnation.
#[derive(Clone, Debug)]
struct Fact {
    server: String,
    generation: u64,
    at: Instant,
    what: What,
}

/// The facts of every incarnation; shared by the launcher and the trees it made.
#[derive(Default)]
struct Record {
    facts: Mutex<Vec<Fact>>,
}

impl Record {
    fn note(&self, server: &str, generation: u64, what: What) {
        let fact = Fact { server: server.to_owned(), generation, at: Instant::now(), what };
        self.facts.lock().unwrap_or_else(|p| p.into_inner()).push(fact);
    }
}

/// A launcher that plays a script: each launch takes the next step; an exhausted script runs until stopped.
struct ScriptedLauncher {
    script: Mutex<VecDeque<Step>>,
    record: Arc<Record>,
    trees: Mutex<Vec<Arc<FakeTree>>>,
}

impl ScriptedLauncher {
    fn new(script: impl IntoIterator<Item = Step>) -> ScriptedLauncher {
        ScriptedLauncher {
            script: Mutex::new(script.into_iter().collect()),
            record: Arc::new(Record::default()),
            trees: Mutex::new(Vec::new()),
        }
    }

    /// Every recorded fact that matches `what`.
    fn facts(&self, what: impl Fn(&What) -> bool) -> Vec<Fact> {
        self.record.facts.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|f| what(&f.what)).cloned().collect()
    }

    /// The instants of every launch attempt, failed ones included.
    fn launches(&self) -> Vec<Instant> {
        self.facts(|w| matches!(w, What::Launched | What::SpawnFailed)).iter().map(|f| f.at).collect()
    }

    /// The instants of every exit.
    fn exits(&self) -> Vec<Instant> {
        self.facts(|w| matches!(w, What::Exited(_))).iter().map(|f| f.at).collect()
    }

    fn count(&self, what: What) -> usize {
        self.facts(|w| *w == what).len()
    }

    /// Makes the most recent incarnation exit on its own, now, with `kind`.
    fn exit_latest(&self, kind: ExitKind) {
        let trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        let tree = trees.last().unwrap_or_else(|| unreachable!("exit_latest needs a launched incarnation"));
        tree.end(kind);
    }
}

impl Launcher for ScriptedLauncher {
    fn launch(&self, spec: &ServerSpec, generation: u64) -> Result<Incarnation, SpawnError> {
        let step = self.script.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let step = step.unwrap_or(Step::RunUntilStopped { ignore_term: false });
        let (natural, ignore_term) = match step {
            Step::FailSpawn => {
                self.record.note(&spec.id, generation, What::SpawnFailed);
                return Err(SpawnError::NotFound { program: "scripted-ghost".into(), searched: "the script".into() });
            }
            Step::ExitAfter(after, kind) => (Some((Instant::now() + after, kind)), false),
            Step::RunUntilStopped { ignore_term } => (None, ignore_term),
        };
        self.record.note(&spec.id, generation, What::Launched);
        let (exit, _) = watch::channel(None);
        let tree =
            Arc::new(FakeTree { server: spec.id.clone(), generation, ignore_term, exit, record: self.record.clone() });
        self.trees.lock().unwrap_or_else(|p| p.into_inner()).push(tree.clone());
        let waiting = tree.clone();
        Ok(Incarnation {
            pid: None,
            exit: Box::pin(async move { waiting.exited(natural).await }),
            stdin: None,
            stdout: None,
            log_pipes: Vec::new(),
            control: tree,
            sandbox: Vec::new(),
        })
    }
}

/// The process tree of one scripted incarnation: nothing but an exit status waiting to be set.
struct FakeTree {
    server: String,
    generation: u64,
    ignore_term: bool,
    exit: watch::Sender<Option<ExitKind>>,
    record: Arc<Record>,
}

impl FakeTree {
    /// Ends the incarnation with `kind` unless it has ended already; true if this call ended it.
    fn end(&self, kind: ExitKind) -> bool {
        self.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(kind);
            true
        })
    }

    /// Resolves when the incarnation has ended: at its natural exit, or when it was signalled.
    async fn exited(&self, natural: Option<(Instant, ExitKind)>) -> ExitKind {
        let mut ended = self.exit.subscribe();
        match natural {
            Some((at, kind)) => {
                tokio::select! {
                    _ = ended.wait_for(Option::is_some) => {}
                    () = tokio::time::sleep_until(at) => {
                        self.end(kind);
                    }
                }
            }
            None => {
                let _ = ended.wait_for(Option::is_some).await;
            }
        }
        let kind = (*self.exit.borrow()).unwrap_or(ExitKind::Signal(libc::SIGKILL));
        self.record.note(&self.server, self.generation, What::Exited(kind));
        kind
    }
}

impl TreeControl for FakeTree {
    fn terminate(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.record.note(&self.server, self.generation, What::Terminated);
            if !self.ignore_term {
                self.end(ExitKind::Signal(libc::SIGTERM));
            }
        })
    }

    fn kill(&self) -> Pin<Box<dyn Future<Output = KillReport> + Send + '_>> {
        Box::pin(async move {
            let killed = self.end(ExitKind::Signal(libc::SIGKILL));
            if killed {
                self.record.note(&self.server, self.generation, What::Killed);
            }
            KillReport { killed: usize::from(killed), survivors: 0 }
        })
    }

    fn kill_now(&self) {
        if self.end(ExitKind::Signal(libc::SIGKILL)) {
            self.record.note(&self.server, self.generation, What::Killed);
        }
    }

    fn usage(&self, _max_age: std::time::Duration) -> Pin<Box<dyn Future<Output = Option<Usage>> + Send + '_>> {
        Box::pin(async { None })
    }
}

/// Waiting on the event stream with deadlines on the paused clock.
mod wait {
    use std::time::Duration;

    use tokio::sync::broadcast;
    use tokio::sync::broadcast::error::RecvError;

    use crate::event::{Event, EventKind};
    use crate::state::ServerState;

    /// Longer than any delay a test configures; on the paused clock it costs nothing.
    const DEADLINE: Duration = Duration::from_secs(3600);

    /// The next event that matches `pred`; panics if none comes before the deadline.
    pub(super) async fn until(events: &mut broadcast::Receiver<Event>, pred: impl Fn(&Event) -> bool) -> Event {
        match tokio::time::timeout(DEADLINE, next(events, &pred)).await {
            Ok(event) => event,
            Err(_) => panic!("no matching event within {DEADLINE:?}"),
        }
    }

    /// The next change of `server` into `to`.
    pub(super) async fn state(events: &mut broadcast::Receiver<Event>, server: &str, to: ServerState) -> Event {
        until(events, |e| e.server == server && matches!(&e.kind, EventKind::StateChanged { to: t, .. } if *t == to))
            .await
    }

    /// Asserts that no event matching `pred` comes within `within`.
    pub(super) async fn none(events: &mut broadcast::Receiver<Event>, within: Duration, pred: impl Fn(&Event) -> bool) {
        if let Ok(event) = tokio::time::timeout(within, next(events, &pred)).await {
            panic!("unexpected event within {within:?}: {event:?}");
        }
    }

    /// Every event up to and including the first that matches `pred`.
    pub(super) async fn collect_until(
        events: &mut broadcast::Receiver<Event>,
        pred: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let mut seen = Vec::new();
        let collect = async {
            loop {
                let event = next(events, &|_: &Event| true).await;
                let last = pred(&event);
                seen.push(event);
                if last {
                    return;
                }
            }
        };
        if tokio::time::timeout(DEADLINE, collect).await.is_err() {
            panic!("no matching event within {DEADLINE:?}; saw {seen:?}");
        }
        seen
    }

    async fn next(events: &mut broadcast::Receiver<Event>, pred: &impl Fn(&Event) -> bool) -> Event {
        loop {
            match events.recv().await {
                Ok(event) if pred(&event) => return event,
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => panic!("the test fell behind the event stream by {missed} events"),
                Err(RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    }
}

/// A supervisor over a scripted launcher, and its event stream subscribed from the start.
struct Fixture {
    handle: SupervisorHandle,
    launcher: Arc<ScriptedLauncher>,
    events: broadcast::Receiver<Event>,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(script: impl IntoIterator<Item = Step>) -> Fixture {
        let launcher = Arc::new(ScriptedLauncher::new(script));
        let config = SupervisorConfig { launcher: Some(launcher.clone()), ..SupervisorConfig::default() };
        let handle = SupervisorHandle::spawn(config).await.expect("the supervisor starts");
        let events = handle.subscribe();
        let dir = tempfile::tempdir().expect("a tempdir");
        Fixture { handle, launcher, events, dir }
    }

    /// A spec for `id` with restart settings `policy` and a shutdown timeout of 5 s.
    fn spec(&self, id: &str, policy: PolicyConfig) -> ServerSpec {
        let logs = LogSpec::in_dir(self.dir.path().join(id));
        let mut spec = ServerSpec::new(id, vec!["scripted".into()], self.dir.path(), logs);
        spec.transport = crate::Transport::None;
        spec.policy = policy::RestartPolicy::new(policy).expect("a valid policy").0;
        spec.shutdown_timeout = Duration::from_secs(5);
        spec
    }

    /// Adds `id` with `policy` and starts it.
    async fn start(&mut self, id: &str, policy: PolicyConfig) {
        self.handle.add(self.spec(id, policy)).await.expect("add");
        self.handle.start(id).await.expect("start");
    }

    async fn state(&self, id: &str) -> ServerState {
        self.handle.status(id).await.expect("status").state
    }
}

/// Restart on failure with a fixed `delay`, a generous budget, and a reset after one minute of uptime.
fn fixed(delay: Duration) -> PolicyConfig {
    PolicyConfig {
        mode: RestartMode::OnFailure,
        max_restarts: 100,
        restart_window_ms: 3_600_000,
        restart_delay_ms: delay.as_millis() as u64,
        backoff: Backoff::Fixed,
        max_restart_delay_ms: delay.as_millis() as u64,
        jitter: 0.0,
        ..PolicyConfig::default()
    }
}

fn crash_after(after: Duration) -> Step {
    Step::ExitAfter(after, ExitKind::Code(1))
}

fn is_gave_up(e: &Event) -> bool {
    matches!(e.kind, EventKind::GaveUp { .. })
}

fn is_starting(e: &Event) -> bool {
    matches!(e.kind, EventKind::StateChanged { to: ServerState::Starting, .. })
}

/// The kind of an `Exited` event.
fn exit_kind(e: &Event) -> Option<ExitKind> {
    match &e.kind {
        EventKind::Exited { exit, .. } => Some(exit.kind),
        _ => None,
    }
}

/// The gaps between each exit and the launch that followed it.
fn gaps(launcher: &ScriptedLauncher) -> Vec<Duration> {
    let launches = launcher.launches();
    launcher.exits().iter().zip(launches.iter().skip(1)).map(|(exit, next)| *next - *exit).collect()
}

#[tokio::test(start_paused = true)]
async fn restarts_after_the_policy_delay_exactly() {
    let mut f = Fixture::new([crash_after(500 * MS)]).await;
    f.start("a", fixed(1000 * MS)).await;

    let restarted = wait::until(&mut f.events, |e| is_starting(e) && e.generation == 2).await;

    assert_eq!(restarted.server, "a");
    assert_eq!(gaps(&f.launcher), [1000 * MS]);
    let launches = f.launcher.launches();
    assert_eq!(launches[1] - launches[0], 1500 * MS, "500 ms of uptime, then exactly the 1000 ms delay");
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_doubles_then_caps() {
    let mut f = Fixture::new([crash_after(10 * MS); 5]).await;
    let policy = PolicyConfig {
        backoff: Backoff::Exponential,
        backoff_multiplier: 2.0,
        restart_delay_ms: 100,
        max_restart_delay_ms: 400,
        ..fixed(100 * MS)
    };
    f.start("a", policy).await;

    let mut scheduled = Vec::new();
    for _ in 0..5 {
        let event = wait::until(&mut f.events, |e| matches!(e.kind, EventKind::RestartScheduled { .. })).await;
        scheduled.push(event.kind);
    }
    wait::until(&mut f.events, |e| is_starting(e) && e.generation == 6).await;

    let expected = [(100, 1), (200, 2), (400, 3), (400, 4), (400, 5)];
    let expected: Vec<EventKind> =
        expected.iter().map(|&(delay_ms, attempt)| EventKind::RestartScheduled { delay_ms, attempt }).collect();
    assert_eq!(scheduled, expected);
    assert_eq!(gaps(&f.launcher), [100 * MS, 200 * MS, 400 * MS, 400 * MS, 400 * MS]);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_restarts_within_the_window() {
    let mut f = Fixture::new([crash_after(10 * MS); 4]).await;
    f.start("a", PolicyConfig { max_restarts: 3, restart_window_ms: 60_000, ..fixed(100 * MS) }).await;

    let gave_up = wait::until(&mut f.events, is_gave_up).await;

    let EventKind::GaveUp { reason } = &gave_up.kind else { unreachable!() };
    assert!(reason.contains("exited with code 1"), "{reason}");
    assert!(reason.contains("3 restarts within 60000 ms"), "{reason}");
    assert_eq!(f.launcher.launches().len(), 4, "the first run and 3 restarts");
    let status = f.handle.status("a").await.expect("status");
    assert_eq!(status.state, ServerState::Failed);
    assert_eq!(status.restarts, 3);
    assert_eq!(status.next_restart, None);
}

#[tokio::test(start_paused = true)]
async fn failed_is_absorbing_until_explicit_start() {
    let mut f = Fixture::new([crash_after(10 * MS); 8]).await;
    f.start("a", PolicyConfig { max_restarts: 3, ..fixed(100 * MS) }).await;
    wait::until(&mut f.events, is_gave_up).await;

    wait::none(&mut f.events, Duration::from_secs(600), is_starting).await;
    assert_eq!(f.launcher.launches().len(), 4);
    assert_eq!(f.state("a").await, ServerState::Failed);

    let started = f.handle.start("a").await.expect("start");
    assert_eq!(started.state, ServerState::Starting);
    assert_eq!(started.streak, 0, "an explicit start clears the streak");
    wait::until(&mut f.events, is_gave_up).await;

    // A cleared window grants the whole budget again: 3 more restarts before giving up.
    assert_eq!(f.launcher.launches().len(), 8);
    assert_eq!(f.state("a").await, ServerState::Failed);
}

#[tokio::test(start_paused = true)]
async fn failed_spawns_count_against_the_budget() {
    let mut f = Fixture::new([Step::FailSpawn; 10]).await;
    f.start("a", PolicyConfig { max_restarts: 2, ..fixed(100 * MS) }).await;

    let events = wait::collect_until(&mut f.events, is_gave_up).await;

    assert_eq!(f.launcher.launches().len(), 3, "the first attempt and 2 restarts");
    assert_eq!(f.launcher.count(What::Launched), 0);
    let incidents: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Incident { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(incidents.len(), 3);
    for message in incidents {
        assert!(message.starts_with("start failed: command not found: `scripted-ghost`"), "{message}");
    }
    let exits: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Exited { exit, .. } => Some(exit),
            _ => None,
        })
        .collect();
    assert_eq!(exits.len(), 3);
    for exit in exits {
        assert_eq!(exit.kind, ExitKind::SpawnFailed);
        assert!(exit.description.contains("command not found: `scripted-ghost`"), "{}", exit.description);
    }
    assert_eq!(f.state("a").await, ServerState::Failed);
}

#[tokio::test(start_paused = true)]
async fn stable_run_resets_the_streak() {
    let script = [crash_after(10 * MS), crash_after(10 * MS), crash_after(2000 * MS)];
    let mut f = Fixture::new(script).await;
    let policy = PolicyConfig {
        backoff: Backoff::Exponential,
        max_restart_delay_ms: 10_000,
        reset_after_ms: 1000,
        ..fixed(100 * MS)
    };
    f.start("a", policy).await;

    wait::until(&mut f.events, |e| is_starting(e) && e.generation == 4).await;

    assert_eq!(
        gaps(&f.launcher),
        [100 * MS, 200 * MS, 100 * MS],
        "a run of 2 s > reset_after starts over at the base delay"
    );
    let status = f.handle.status("a").await.expect("status");
    assert_eq!(status.streak, 1);
    assert_eq!(status.restarts, 3);
}

#[tokio::test(start_paused = true)]
async fn admin_stop_during_backoff_cancels_the_restart() {
    let mut f = Fixture::new([crash_after(10 * MS)]).await;
    f.start("a", fixed(1000 * MS)).await;
    wait::until(&mut f.events, |e| matches!(e.kind, EventKind::RestartScheduled { .. })).await;
    assert_eq!(f.state("a").await, ServerState::Backoff);

    let stopped = f.handle.stop("a").await.expect("stop");

    assert_eq!(stopped.state, ServerState::Stopped);
    assert_eq!(stopped.next_restart, None);
    wait::none(&mut f.events, Duration::from_secs(60), is_starting).await;
    assert_eq!(f.launcher.launches().len(), 1, "the stale timer launched nothing");
    assert_eq!(f.state("a").await, ServerState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn stop_escalates_to_kill_after_shutdown_timeout() {
    let mut f = Fixture::new([Step::RunUntilStopped { ignore_term: true }]).await;
    f.start("a", fixed(100 * MS)).await;
    wait::state(&mut f.events, "a", ServerState::Running).await;

    let asked = Instant::now();
    let stopped = f.handle.stop("a").await.expect("stop");

    assert_eq!(asked.elapsed(), Duration::from_secs(5), "stop returns exactly after shutdown_timeout");
    assert_eq!(stopped.state, ServerState::Stopped);
    assert_eq!(stopped.last_exit.map(|e| e.kind), Some(ExitKind::Signal(libc::SIGKILL)));
    let terminated = f.launcher.facts(|w| *w == What::Terminated);
    let killed = f.launcher.facts(|w| *w == What::Killed);
    assert_eq!(terminated.len(), 1);
    assert_eq!(killed.len(), 1);
    assert_eq!(terminated[0].at, asked);
    assert_eq!(killed[0].at - asked, Duration::from_secs(5));
    wait::none(&mut f.events, Duration::from_secs(60), is_starting).await;
}

#[tokio::test(start_paused = true)]
async fn clean_exit_is_not_restarted_on_failure_mode() {
    let mut f = Fixture::new([Step::ExitAfter(10 * MS, ExitKind::Code(0))]).await;
    f.start("a", fixed(100 * MS)).await;

    let stopped = wait::state(&mut f.events, "a", ServerState::Stopped).await;

    let EventKind::StateChanged { from, reason, .. } = &stopped.kind else { unreachable!() };
    assert_eq!(*from, ServerState::Running);
    assert!(reason.contains("clean exit under on-failure"), "{reason}");
    wait::none(&mut f.events, Duration::from_secs(60), is_starting).await;
    assert_eq!(f.launcher.launches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn always_mode_restarts_clean_exits() {
    let mut f = Fixture::new([Step::ExitAfter(10 * MS, ExitKind::Code(0))]).await;
    f.start("a", PolicyConfig { mode: RestartMode::Always, ..fixed(100 * MS) }).await;

    wait::until(&mut f.events, |e| is_starting(e) && e.generation == 2).await;

    assert_eq!(gaps(&f.launcher), [100 * MS]);
}

#[tokio::test(start_paused = true)]
async fn never_mode_never_restarts() {
    let mut f = Fixture::new([Step::ExitAfter(10 * MS, ExitKind::Signal(libc::SIGSEGV))]).await;
    f.start("a", PolicyConfig { mode: RestartMode::Never, ..fixed(100 * MS) }).await;

    let stopped = wait::state(&mut f.events, "a", ServerState::Stopped).await;

    let EventKind::StateChanged { reason, .. } = &stopped.kind else { unreachable!() };
    assert!(reason.contains("restart mode is never"), "{reason}");
    wait::none(&mut f.events, Duration::from_secs(60), is_starting).await;
    assert_eq!(f.launcher.launches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_command_stops_then_starts_a_new_generation() {
    let mut f = Fixture::new([]).await;
    f.start("a", fixed(100 * MS)).await;
    let first = wait::state(&mut f.events, "a", ServerState::Running).await;

    let restarted = f.handle.restart("a").await.expect("restart");

    assert!(restarted.generation > first.generation, "{} after {}", restarted.generation, first.generation);
    assert_eq!(restarted.state, ServerState::Starting);
    let running = wait::state(&mut f.events, "a", ServerState::Running).await;
    assert_eq!(running.generation, restarted.generation);
    let launched: Vec<u64> = f.launcher.facts(|w| *w == What::Launched).iter().map(|f| f.generation).collect();
    assert_eq!(launched, [first.generation, restarted.generation]);
    let terminated = f.launcher.facts(|w| *w == What::Terminated);
    assert_eq!(terminated.len(), 1);
    assert_eq!(terminated[0].generation, first.generation);
    assert_eq!(f.handle.status("a").await.expect("status").restarts, 0, "an operator restart is not charged");
}

#[tokio::test(start_paused = true)]
async fn delete_removes_the_server() {
    let mut f = Fixture::new([]).await;
    f.start("a", fixed(100 * MS)).await;
    wait::state(&mut f.events, "a", ServerState::Running).await;

    f.handle.delete("a").await.expect("delete");

    assert_eq!(f.handle.status("a").await.map(|s| s.state), Err(ActorsError::NotFound("a".into())));
    wait::until(&mut f.events, |e| e.server == "a" && e.kind == EventKind::Deleted).await;
    assert_eq!(f.launcher.count(What::Terminated), 1);
    assert!(f.handle.list().await.expect("list").is_empty());
}

#[tokio::test(start_paused = true)]
async fn delete_racing_a_natural_exit_still_removes_the_server() {
    let mut f = Fixture::new([]).await;
    f.start("a", fixed(100 * MS)).await;
    wait::state(&mut f.events, "a", ServerState::Running).await;

    // The exit reaches the server actor before the supervisor's stop does.
    f.launcher.exit_latest(ExitKind::Code(1));
    f.handle.delete("a").await.expect("delete");

    assert_eq!(f.handle.status("a").await.map(|s| s.state), Err(ActorsError::NotFound("a".into())));
    let exited = wait::until(&mut f.events, |e| matches!(e.kind, EventKind::Exited { .. })).await;
    assert_eq!(exit_kind(&exited), Some(ExitKind::Code(1)), "the exit must win the race for the test to mean anything");
    wait::until(&mut f.events, |e| e.server == "a" && e.kind == EventKind::Deleted).await;
}

#[tokio::test(start_paused = true)]
async fn restart_racing_a_natural_exit_still_starts_a_new_generation() {
    let mut f = Fixture::new([]).await;
    f.start("a", fixed(100 * MS)).await;
    let first = wait::state(&mut f.events, "a", ServerState::Running).await;

    // The exit reaches the server actor before the supervisor's stop does.
    f.launcher.exit_latest(ExitKind::Code(1));
    let restarted = f.handle.restart("a").await.expect("restart");

    assert!(restarted.generation > first.generation, "{} after {}", restarted.generation, first.generation);
    assert_eq!(restarted.state, ServerState::Starting);
    let exited = wait::until(&mut f.events, |e| matches!(e.kind, EventKind::Exited { .. })).await;
    assert_eq!(exit_kind(&exited), Some(ExitKind::Code(1)), "the exit must win the race for the test to mean anything");
    wait::state(&mut f.events, "a", ServerState::Running).await;
    assert_eq!(f.launcher.count(What::Launched), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_server_in_parallel() {
    let ids: Vec<String> = (0..10).map(|n| format!("s{n}")).collect();
    let mut f = Fixture::new([Step::RunUntilStopped { ignore_term: true }; 10]).await;
    for id in &ids {
        f.start(id, fixed(100 * MS)).await;
    }
    for _ in &ids {
        wait::until(&mut f.events, |e| matches!(e.kind, EventKind::StateChanged { to: ServerState::Running, .. }))
            .await;
    }

    let asked = Instant::now();
    f.handle.shutdown().await.expect("shutdown");

    let took = asked.elapsed();
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(6), "took {took:?}, not ~5 s");
    let killed = f.launcher.facts(|w| *w == What::Killed);
    let mut servers: Vec<&str> = killed.iter().map(|k| k.server.as_str()).collect();
    servers.sort_unstable();
    assert_eq!(servers, ids, "every server was killed once");
    assert!(killed.iter().all(|k| k.at - asked == Duration::from_secs(5)), "all at the same instant: {killed:?}");
    assert_eq!(f.handle.wait().await, SupervisorExit::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn events_carry_every_state_change_with_a_reason() {
    let mut f = Fixture::new([crash_after(10 * MS)]).await;
    f.start("a", fixed(100 * MS)).await;

    let events = wait::collect_until(&mut f.events, |e| {
        e.generation == 2 && matches!(e.kind, EventKind::StateChanged { to: ServerState::Running, .. })
    })
    .await;

    let changes: Vec<(ServerState, ServerState, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StateChanged { from, to, reason } => Some((*from, *to, reason.as_str())),
            _ => None,
        })
        .collect();
    use ServerState::{Backoff, Running, Starting, Stopped};
    let pairs: Vec<(ServerState, ServerState)> = changes.iter().map(|&(from, to, _)| (from, to)).collect();
    assert_eq!(
        pairs,
        [(Stopped, Starting), (Starting, Running), (Running, Backoff), (Backoff, Starting), (Starting, Running)]
    );
    assert!(changes.iter().all(|(_, _, reason)| !reason.is_empty()), "{changes:?}");
    assert!(changes.windows(2).all(|w| w[0].1 == w[1].0), "each change starts where the last ended");
    let backoff = changes[2].2;
    assert!(backoff.contains("exited with code 1") && backoff.contains("restart 1 in 100 ms"), "{backoff}");
    let exited = events.iter().position(|e| matches!(e.kind, EventKind::Exited { .. })).expect("an exit event");
    let to_backoff =
        events.iter().position(|e| matches!(e.kind, EventKind::StateChanged { to: Backoff, .. })).expect("backoff");
    assert!(exited < to_backoff, "the exit is reported before the state it causes");
}
