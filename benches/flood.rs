//! System benchmark of the log path: a child floods 100 MB of 100-byte lines to stderr, timed into /dev/null, piped into `cat > file`, and under hivehost.
//!
//! Run with `cargo bench --bench flood`. The writer is `dd bs=100` reading a prepared file of
//! 100-byte lines, so every line is one write(2), as an unbuffered C `stderr` does. The two baselines
//! and hivehost take turns five times, each after a sync(2), and the median counts. Without `--bench` it runs a smoke version.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use actors::{EventKind, LogCounters, LogSpec, ServerSpec, SupervisorConfig, SupervisorHandle};
use anyhow::{Context, bail};
use tokio::sync::broadcast::error::RecvError;

/// One line of the flood: 99 bytes and a newline.
const LINE: &[u8; 100] =
    b"flood flood flood flood flood flood flood flood flood flood flood flood flood flood flood flood flo\n";

const DEADLINE: Duration = Duration::from_secs(120);

struct Sizes {
    lines: usize,
    runs: usize,
}

const FULL: Sizes = Sizes { lines: 1_000_000, runs: 5 };
const SMOKE: Sizes = Sizes { lines: 10_000, runs: 1 };

/// One run of one way.
#[derive(Clone, Copy)]
struct Run {
    /// From spawning the writer until its exit was seen.
    writer: Duration,
    /// Until every byte was handed to the file system (cat exited; hivehost's log writer flushed).
    stored: Duration,
}

/// What hivehost's log book counted in one run.
struct HiveRun {
    run: Run,
    counters: LogCounters,
    kept_bytes: u64,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full { FULL } else { SMOKE };
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("lines");
    std::fs::write(&input, LINE.repeat(sizes.lines))?;
    let (mut null, mut cat, mut hive) = (Vec::new(), Vec::new(), Vec::new());
    // The three ways take turns, each after a `sync`, so the write-back of one run's 100 MB falls on
    // no other run. Each hivehost run has a runtime of its own, dropped before the next baseline:
    // a supervisor's reaper and its delayed sweeps of unowned children would otherwise take a
    // baseline's writer for what a dead server left behind.
    for run in 0..sizes.runs {
        sync();
        null.push(to_dev_null(&input)?);
        sync();
        cat.push(into_cat(&input, &dir.path().join("cat.out"))?);
        let _ = std::fs::remove_file(dir.path().join("cat.out"));
        sync();
        let logs = dir.path().join(format!("logs-{run}"));
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        hive.push(runtime.block_on(under_hivehost(&input, dir.path(), &logs))?);
        runtime.shutdown_timeout(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&logs);
    }
    print(&null, &cat, &hive, &sizes, full);
    Ok(())
}

/// Writes every dirty page back, so no run pays for the previous one's write-back.
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn dd(input: &Path) -> [String; 4] {
    [format!("if={}", input.display()), "bs=100".into(), "status=none".into(), "of=/dev/stderr".into()]
}

/// (a) The writer's stderr is /dev/null.
fn to_dev_null(input: &Path) -> anyhow::Result<Run> {
    let started = Instant::now();
    #[allow(clippy::disallowed_methods, reason = "the baseline runs the writer directly, without hivehost")]
    let mut cmd = std::process::Command::new("dd");
    let status = cmd
        .args(dd(input))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create("/dev/null")?)
        .status()
        .context("running dd")?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("dd failed: {status}");
    }
    Ok(Run { writer: elapsed, stored: elapsed })
}

/// (b) The writer's stderr is a pipe into `cat > file`.
fn into_cat(input: &Path, out: &Path) -> anyhow::Result<Run> {
    #[allow(clippy::disallowed_methods, reason = "the baseline's reader, started directly")]
    let mut cat_cmd = std::process::Command::new("cat");
    let mut cat = cat_cmd.env_clear().stdin(Stdio::piped()).stdout(File::create(out)?).spawn()?;
    let pipe = cat.stdin.take().context("cat's stdin")?;
    let started = Instant::now();
    let status = {
        #[allow(clippy::disallowed_methods, reason = "the baseline runs the writer directly, without hivehost")]
        let mut cmd = std::process::Command::new("dd");
        // The command holds our copy of the pipe's write end: it must be dropped before cat can see the end.
        cmd.args(dd(input)).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(pipe).status()?
    };
    let writer = started.elapsed();
    let cat_status = cat.wait()?;
    let stored = started.elapsed();
    if !status.success() || !cat_status.success() {
        bail!("dd ({status}) or cat ({cat_status}) failed");
    }
    Ok(Run { writer, stored })
}

/// (c) The writer is a hosted server; its stderr goes through the log tailer into rotated files.
async fn under_hivehost(input: &Path, dir: &Path, logs: &Path) -> anyhow::Result<HiveRun> {
    let sup = SupervisorHandle::spawn(SupervisorConfig::default()).await?;
    let id = "flood";
    let mut spec =
        ServerSpec::new(id, std::iter::once("dd".to_owned()).chain(dd(input)).collect(), dir, LogSpec::in_dir(logs));
    spec.env = vec![("PATH".into(), actors::process::DEFAULT_PATH.into())];
    spec.transport = actors::Transport::None;
    spec.policy = policy::RestartPolicy::new(policy::PolicyConfig {
        mode: policy::RestartMode::Never,
        ..policy::PolicyConfig::default()
    })?
    .0;
    let mut events = sup.subscribe();
    sup.add(spec).await?;
    let started = Instant::now();
    sup.start(id).await?;
    let exited = loop {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Err(_) => bail!("dd did not exit within {DEADLINE:?}"),
            Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) => bail!("the event stream closed"),
            Ok(Ok(event)) => {
                if let EventKind::Exited { exit, .. } = event.kind {
                    if exit.kind != policy::ExitKind::Code(0) {
                        bail!("dd under hivehost {}", exit.description);
                    }
                    break event.instant;
                }
            }
        }
    };
    let counters = sup.status(id).await?.logs;
    // Shutting down flushes the log writer: everything queued is on disk when it returns.
    sup.shutdown().await?;
    let stored = started.elapsed();
    Ok(HiveRun { run: Run { writer: exited - started, stored }, counters, kept_bytes: dir_bytes(logs) })
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn print(null: &[Run], cat: &[Run], hive: &[HiveRun], sizes: &Sizes, full: bool) {
    let note = if full { "" } else { " (smoke run: sizes are tiny, figures mean nothing)" };
    let megabytes = (sizes.lines * LINE.len()) as f64 / 1e6;
    println!("\nlog flood: dd bs=100 writes {megabytes:.0} MB in {} lines of 100 bytes to stderr{note}", sizes.lines);
    println!(
        "median of {} runs each (the three ways in turn, each after sync); speed = MB / time until the writer's exit is seen\n",
        sizes.runs
    );
    let writer = |runs: &[Run]| median(runs.iter().map(|r| r.writer).collect());
    let stored = |runs: &[Run]| median(runs.iter().map(|r| r.stored).collect());
    let hive_runs: Vec<Run> = hive.iter().map(|h| h.run).collect();
    let (t_null, t_cat, t_hive) = (writer(null), writer(cat), writer(&hive_runs));
    let speed = |t: Duration| megabytes / t.as_secs_f64();
    let row = |what: &str, t: Duration, all: &[Run], stored_t: Duration| {
        let each: Vec<String> = all.iter().map(|r| format!("{:.3}", r.writer.as_secs_f64())).collect();
        println!(
            "| {what:32} | {:>8.3} s | {:>8.1} MB/s | {:>6.1} % | {:>6.1} % | {:>11.3} s | {} |",
            t.as_secs_f64(),
            speed(t),
            t_null.as_secs_f64() / t.as_secs_f64() * 100.0,
            t_cat.as_secs_f64() / t.as_secs_f64() * 100.0,
            stored_t.as_secs_f64(),
            each.join(" ")
        );
    };
    println!(
        "| way                              |     median |         speed |  of null |   of cat |    all stored | each run (s) |"
    );
    println!(
        "|----------------------------------|------------|---------------|----------|----------|---------------|--------------|"
    );
    row("(a) stderr to /dev/null", t_null, null, stored(null));
    row("(b) stderr piped into cat > file", t_cat, cat, stored(cat));
    row("(c) under hivehost (log tailer)", t_hive, &hive_runs, stored(&hive_runs));
    println!(
        "\n(c)/(b) = {:.1} % (target >= 90 %); (b)/(a) = {:.1} %",
        t_cat.as_secs_f64() / t_hive.as_secs_f64() * 100.0,
        t_null.as_secs_f64() / t_cat.as_secs_f64() * 100.0
    );
    for (n, h) in hive.iter().enumerate() {
        println!(
            "hivehost run {n}: lines {} (expected {}), dropped {} (writer fell behind), truncated {}, kept on disk {:.1} MB (rotation keeps 5 x 10 MiB)",
            h.counters.lines,
            sizes.lines,
            h.counters.dropped,
            h.counters.truncated,
            h.kept_bytes as f64 / 1e6
        );
    }
}
