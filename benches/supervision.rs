//! System benchmarks of the supervision tree in-process: restart overhead and 500 idle servers, each beside a bare tokio baseline.
//!
//! Run with `cargo bench --bench supervision`; add `-- idle`, `-- restart-loaded` or `-- restart` (both
//! restart parts) to run less. Without `--bench` on its command line (as under `cargo test --benches`)
//! it runs a smoke version in a second.
//! Baselines run before hivehost in the same process: once a supervisor has started, this process is a
//! child subreaper, and its orphan reaper would take the exit statuses the baselines wait for.

#[path = "../tests/support/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use actors::{EventKind, LogSpec, ServerSpec, ServerState, SupervisorConfig, SupervisorHandle};
use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast::error::RecvError;

/// The restart bench's child: exits at once (status 0, restarted because the mode is `always`).
const QUICK_EXIT: &str = "/bin/true";

/// The longest any single wait may take before the bench fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// How much to run: the real benchmark, or a smoke version for `cargo test --benches`.
struct Sizes {
    warmup: usize,
    restarts: usize,
    idle_servers: usize,
}

const FULL: Sizes = Sizes { warmup: 50, restarts: 1000, idle_servers: 500 };
const SMOKE: Sizes = Sizes { warmup: 2, restarts: 10, idle_servers: 5 };

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let sizes = if full { FULL } else { SMOKE };
    raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let mut table = Table::default();
    runtime.block_on(async {
        // Baselines first, while no supervisor has made this process a subreaper (see the module doc).
        let bare_restart =
            if wants("restart") { Some(bare_restart_loop(sizes.warmup, sizes.restarts).await?) } else { None };
        let loaded = wants("restart-loaded").then_some((sizes.warmup, sizes.restarts));
        let (bare_idle, bare_loaded) = if wants("idle") || loaded.is_some() {
            let (idle, loaded) = bare_idle(sizes.idle_servers, loaded).await?;
            (Some(idle), loaded)
        } else {
            (None, None)
        };
        if let Some(bare) = bare_restart {
            let hive = hivehost_restarts(dir.path(), sizes.warmup, sizes.restarts, 0).await?;
            table.restart(&hive, &bare, sizes.restarts, 0);
        }
        if let Some(bare) = bare_loaded {
            let hive = hivehost_restarts(dir.path(), sizes.warmup, sizes.restarts, sizes.idle_servers).await?;
            table.restart(&hive, &bare, sizes.restarts, sizes.idle_servers);
        }
        if let Some(bare) = bare_idle.filter(|_| wants("idle")) {
            let hive = hivehost_idle(dir.path(), sizes.idle_servers).await?;
            table.idle(&hive, &bare, sizes.idle_servers);
        }
        anyhow::Ok(())
    })?;
    table.print(if full { "" } else { " (smoke run: sizes are tiny, figures mean nothing)" });
    Ok(())
}

/// 500 servers take about 2,500 descriptors; a low soft limit must not be what is measured.
fn raise_nofile_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

// ---------------------------------------------------------------------------------------------
// Restart overhead.

/// What the restart bench measured under hivehost.
struct RestartFigures {
    /// `Exited` event to the next `StateChanged { to: Running }` event.
    exit_to_running: Vec<Duration>,
    /// `Running` to the next `Running`: one whole cycle, child run time included.
    cycle: Vec<Duration>,
    /// `Running` to the following `Exited`: child run, reaping, pipe drain and actor teardown.
    running_to_exit: Vec<Duration>,
    /// `Exited` to `Starting`: the decision, the server actor's spawn and the fork and exec in its `pre_start`.
    exit_to_starting: Vec<Duration>,
    /// `Starting` to `Running`: the helpers' spawn in `post_start` and the `Ready` message.
    starting_to_running: Vec<Duration>,
    lagged: u64,
}

/// The floor: spawn `/bin/true` with tokio, await its exit, spawn again.
async fn bare_restart_loop(warmup: usize, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let started = Instant::now();
        #[allow(clippy::disallowed_methods, reason = "the baseline spawns its child directly, without hivehost")]
        let mut cmd = tokio::process::Command::new(QUICK_EXIT);
        cmd.env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let status = cmd.spawn().context("spawning the baseline child")?.wait().await?;
        if !status.success() {
            bail!("{QUICK_EXIT} failed: {status}");
        }
        if i >= warmup {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// A policy that restarts every exit at once and never gives up: 1,000,000 restarts per 1 ms.
fn restart_forever() -> anyhow::Result<policy::RestartPolicy> {
    let cfg = policy::PolicyConfig {
        mode: policy::RestartMode::Always,
        max_restarts: 1_000_000,
        restart_window_ms: 1,
        restart_delay_ms: 0,
        backoff: policy::Backoff::Fixed,
        jitter: 0.0,
        ..policy::PolicyConfig::default()
    };
    Ok(policy::RestartPolicy::new(cfg)?.0)
}

fn spec(id: &str, dir: &Path, command: Vec<String>, marker: &str) -> ServerSpec {
    let mut spec = ServerSpec::new(id, command, dir, LogSpec::in_dir(dir.join("logs").join(id)));
    spec.env = vec![("PATH".into(), actors::process::DEFAULT_PATH.into()), (harness::MARK.into(), marker.into())];
    spec.shutdown_timeout = Duration::from_secs(5);
    spec.transport = actors::Transport::None;
    spec
}

/// Restarts `/bin/true` `warmup + n` times, with `neighbours` idle ticking servers running beside it.
async fn hivehost_restarts(dir: &Path, warmup: usize, n: usize, neighbours: usize) -> anyhow::Result<RestartFigures> {
    let sup = SupervisorHandle::spawn(SupervisorConfig::default()).await?;
    let ticker = vec!["/bin/sh".to_owned(), "-c".to_owned(), harness::TICKER.to_owned()];
    for i in 0..neighbours {
        let id = format!("neighbour-{i:03}");
        sup.add(spec(&id, dir, ticker.clone(), "restart-neighbour")).await?;
        sup.start(&id).await?;
    }
    let deadline = Instant::now() + DEADLINE;
    while sup.list().await?.iter().filter(|s| s.state == ServerState::Running).count() < neighbours {
        if Instant::now() >= deadline {
            bail!("the neighbours never all ran");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = "restarter";
    let mut spec = spec(id, dir, vec![QUICK_EXIT.into()], "restart");
    spec.policy = restart_forever()?;
    let mut events = sup.subscribe();
    sup.add(spec).await?;
    sup.start(id).await?;
    let mut figures = RestartFigures {
        exit_to_running: Vec::new(),
        cycle: Vec::new(),
        running_to_exit: Vec::new(),
        exit_to_starting: Vec::new(),
        starting_to_running: Vec::new(),
        lagged: 0,
    };
    let mut starting_at: Option<Instant> = None;
    let mut exited_at: Option<Instant> = None;
    let mut running_at: Option<Instant> = None;
    let mut seen = 0usize;
    while seen < warmup + n {
        let event = match tokio::time::timeout(DEADLINE, events.recv()).await {
            Err(_) => bail!("no event for {DEADLINE:?} after {seen} restarts"),
            Ok(Err(RecvError::Closed)) => bail!("the event stream closed after {seen} restarts"),
            Ok(Err(RecvError::Lagged(missed))) => {
                // Pairs spanning the gap would be wrong: start pairing afresh.
                figures.lagged += missed;
                exited_at = None;
                running_at = None;
                starting_at = None;
                continue;
            }
            Ok(Ok(event)) => event,
        };
        if event.server != id {
            continue;
        }
        let counted = seen >= warmup;
        match event.kind {
            EventKind::Exited { .. } => {
                if let (Some(running), true) = (running_at, counted) {
                    figures.running_to_exit.push(event.instant - running);
                }
                exited_at = Some(event.instant);
            }
            EventKind::StateChanged { to: ServerState::Starting, .. } => {
                if let (Some(exited), true) = (exited_at, counted) {
                    figures.exit_to_starting.push(event.instant - exited);
                    starting_at = Some(event.instant);
                }
            }
            EventKind::StateChanged { to: ServerState::Running, .. } => {
                if let (Some(starting), true) = (starting_at.take(), counted) {
                    figures.starting_to_running.push(event.instant - starting);
                }
                if let Some(exited) = exited_at.take() {
                    if counted {
                        figures.exit_to_running.push(event.instant - exited);
                        if let Some(running) = running_at {
                            figures.cycle.push(event.instant - running);
                        }
                    }
                    seen += 1;
                }
                running_at = Some(event.instant);
            }
            EventKind::GaveUp { reason } => bail!("the policy gave up: {reason}"),
            _ => {}
        }
    }
    sup.shutdown().await?;
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// 500 idle servers.

/// Wall times of starting and stopping many idle servers.
struct IdleFigures {
    /// Until the last start request returned (every process spawned).
    spawned: Duration,
    /// Until every server was running (hivehost) or spawned (baseline).
    start: Duration,
    /// Until every process tree was gone.
    stop: Duration,
    /// Processes of the bench's servers still alive after the stop.
    survivors: usize,
}

/// The floor: spawn the ticking children with tokio (stderr drained), then SIGTERM their groups and reap them.
///
/// With `restarts`, it runs the bare restart loop while the children run, as the floor of restarts beside them.
async fn bare_idle(n: usize, restarts: Option<(usize, usize)>) -> anyhow::Result<(IdleFigures, Option<Vec<Duration>>)> {
    let marker = format!("bare-idle-{}", std::process::id());
    let started = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        #[allow(clippy::disallowed_methods, reason = "the baseline spawns its children directly, without hivehost")]
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", harness::TICKER])
            .env_clear()
            .env("PATH", actors::process::DEFAULT_PATH)
            .env(harness::MARK, &marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning a baseline child")?;
        let mut stderr = child.stderr.take().context("the child's stderr")?;
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while matches!(stderr.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        children.push((child, drain));
    }
    let start = started.elapsed();
    let loaded = match restarts {
        Some((warmup, n)) => Some(bare_restart_loop(warmup, n).await?),
        None => None,
    };
    let stopping = Instant::now();
    for (child, _) in &children {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on the process group of a child this bench started and has not reaped.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGTERM);
            }
        }
    }
    for (mut child, drain) in children {
        child.wait().await?;
        // End of file on stderr: nothing of the group holds the pipe any more.
        drain.await?;
    }
    let stop = stopping.elapsed();
    Ok((IdleFigures { spawned: start, start, stop, survivors: harness::marked(&marker).len() }, loaded))
}

async fn hivehost_idle(dir: &Path, n: usize) -> anyhow::Result<IdleFigures> {
    let marker = format!("hive-idle-{}", std::process::id());
    let sup =
        SupervisorHandle::spawn(SupervisorConfig { max_servers: n.max(1), ..SupervisorConfig::default() }).await?;
    let specs: Vec<ServerSpec> = (0..n)
        .map(|i| {
            spec(&format!("idle-{i:03}"), dir, vec!["/bin/sh".into(), "-c".into(), harness::TICKER.into()], &marker)
        })
        .collect();
    let mut events = sup.subscribe();
    let poller = sup.clone();
    let all_running = tokio::spawn(async move {
        let mut running = 0usize;
        while running < n {
            match events.recv().await {
                Ok(event) => {
                    if matches!(event.kind, EventKind::StateChanged { to: ServerState::Running, .. }) {
                        running += 1;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Counting is lost: fall back to asking.
                    loop {
                        let list = poller.list().await?;
                        if list.iter().filter(|s| s.state == ServerState::Running).count() >= n {
                            return anyhow::Ok(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err(RecvError::Closed) => bail!("the event stream closed"),
            }
        }
        Ok(Instant::now())
    });
    let started = Instant::now();
    for spec in specs {
        let id = spec.id.clone();
        sup.add(spec).await?;
        sup.start(&id).await?;
    }
    let spawned = started.elapsed();
    let all_running =
        tokio::time::timeout(DEADLINE, all_running).await.context("waiting for every server to run")???;
    let start = all_running - started;
    let stopping = Instant::now();
    sup.shutdown().await?;
    let stop = stopping.elapsed();
    Ok(IdleFigures { spawned, start, stop, survivors: harness::marked(&marker).len() })
}

// ---------------------------------------------------------------------------------------------
// Reporting.

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: &str, measured: String, baseline: String, target: &str) {
        self.rows.push([what.to_owned(), measured, baseline, target.to_owned()]);
    }

    fn restart(&mut self, hive: &RestartFigures, bare: &[Duration], n: usize, neighbours: usize) {
        let label = if neighbours == 0 {
            format!("restart ({n} restarts of {QUICK_EXIT})")
        } else {
            format!("restart beside {neighbours} idle servers ({n} restarts)")
        };
        let e2r = &hive.exit_to_running;
        self.row(
            &format!("{label}: Exited -> Running, median"),
            ms(percentile(e2r, 50.0)),
            floor(bare, 50.0),
            "< 2 ms",
        );
        self.row(&format!("{label}: Exited -> Running, p99"), ms(percentile(e2r, 99.0)), floor(bare, 99.0), "< 10 ms");
        self.row(
            &format!("{label}: Exited -> Running, max"),
            ms(e2r.iter().copied().max().unwrap_or_default()),
            floor_max(bare),
            "",
        );
        for (phase, samples) in [
            ("Exited -> Starting (decide, spawn actor, fork+exec)", &hive.exit_to_starting),
            ("Starting -> Running (helpers, Ready message)", &hive.starting_to_running),
        ] {
            self.row(
                &format!("{label}: {phase}, median / p99"),
                format!("{} / {}", ms(percentile(samples, 50.0)), ms(percentile(samples, 99.0))),
                String::new(),
                "",
            );
        }
        self.row(
            &format!("{label}: Running -> Exited, median"),
            ms(percentile(&hive.running_to_exit, 50.0)),
            String::new(),
            "",
        );
        self.row(
            &format!("{label}: whole cycle Running -> Running, median"),
            ms(percentile(&hive.cycle, 50.0)),
            floor(bare, 50.0),
            "",
        );
        self.row(
            &format!("{label}: whole cycle Running -> Running, p99"),
            ms(percentile(&hive.cycle, 99.0)),
            floor(bare, 99.0),
            "",
        );
        if hive.lagged > 0 {
            self.row(
                &format!("{label}: events lost to lag (pairs skipped)"),
                hive.lagged.to_string(),
                String::new(),
                "",
            );
        }
    }

    fn idle(&mut self, hive: &IdleFigures, bare: &IdleFigures, n: usize) {
        let label = format!("{n} idle servers");
        self.row(
            &format!("{label}: start (add + start, until all running)"),
            secs(hive.start),
            secs(bare.start),
            "< 1.5 s",
        );
        self.row(&format!("{label}: last start() returned"), secs(hive.spawned), secs(bare.spawned), "");
        self.row(&format!("{label}: stop (shutdown() until it returns)"), secs(hive.stop), secs(bare.stop), "< 1.5 s");
        self.row(
            &format!("{label}: processes left after stop"),
            hive.survivors.to_string(),
            bare.survivors.to_string(),
            "0",
        );
    }

    #[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
    fn print(&self, note: &str) {
        let head = ["measure", "hivehost", "baseline (same run)", "target"];
        let widths: Vec<usize> =
            (0..4).map(|c| self.rows.iter().map(|r| r[c].len()).chain([head[c].len()]).max().unwrap_or(0)).collect();
        println!("\nsupervision benchmarks{note}");
        println!(
            "baselines: bare tokio spawn + wait of the same child (restart), tokio spawn + SIGTERM + reap (idle)\n"
        );
        let line = |cells: [&str; 4]| {
            println!(
                "| {:w0$} | {:>w1$} | {:>w2$} | {:w3$} |",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        };
        line(head);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for row in &self.rows {
            line([&row[0], &row[1], &row[2], &row[3]]);
        }
    }
}

/// A baseline percentile, labelled as the per-iteration floor.
fn floor(bare: &[Duration], p: f64) -> String {
    format!("{} (spawn+wait)", ms(percentile(bare, p)))
}

fn floor_max(bare: &[Duration]) -> String {
    format!("{} (spawn+wait)", ms(bare.iter().copied().max().unwrap_or_default()))
}
