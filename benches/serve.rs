//! System benchmark of the real `hivehost serve` binary: its own memory and CPU with 500 idle servers, beside an idle platform with none.
//!
//! Run with `cargo bench --bench serve`. Each phase starts the release binary on a fresh temporary
//! config (dashboard on 127.0.0.1:0, `metrics_interval` 5 s), waits until `/healthz` reports every
//! server running, lets it settle, samples VmRSS and utime+stime from /proc over a window, then sends
//! SIGTERM and times the exit. Without `--bench` on its command line it runs a smoke version.

#[path = "../tests/support/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const DEADLINE: Duration = Duration::from_secs(120);

struct Sizes {
    servers: usize,
    settle: Duration,
    window: Duration,
}

const FULL: Sizes = Sizes { servers: 500, settle: Duration::from_secs(5), window: Duration::from_secs(30) };
const SMOKE: Sizes = Sizes { servers: 3, settle: Duration::from_millis(100), window: Duration::from_millis(500) };

/// What one phase measured.
struct Phase {
    servers: usize,
    /// From exec to `/healthz` reporting every server running.
    ready: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// utime+stime over the window, as a percentage of one core.
    cpu_percent: f64,
    /// Lines hivehost itself wrote to stderr during the window.
    own_log_lines: u64,
    /// From SIGTERM to exit.
    stop: Duration,
    exit_code: Option<i32>,
    survivors: usize,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full { FULL } else { SMOKE };
    let empty = phase(0, 5, &sizes).context("the phase with no servers")?;
    let loaded = phase(sizes.servers, 5, &sizes).context("the phase with servers")?;
    // A diagnosis, not a target: the same servers with the metrics samplers (nearly) never ticking.
    let quiet = phase(sizes.servers, 3600, &sizes).context("the phase with servers and no sampling")?;
    // The same-run reference: the minimal pidfd-driven supervisor, in Python.
    let reference = minimal_supervisor(&sizes).context("the minimal supervisor reference")?;
    print(&empty, &loaded, &quiet, &sizes, full);
    print_reference(&reference, &loaded);
    if [&empty, &loaded, &quiet].iter().any(|p| p.exit_code != Some(0)) {
        bail!("hivehost did not exit 0 on SIGTERM");
    }
    Ok(())
}

fn phase(servers: usize, metrics_interval_s: u64, sizes: &Sizes) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir()?;
    let marker = format!("serve-bench-{}-{servers}", std::process::id());
    for n in 0..servers {
        harness::write_server(dir.path(), &format!("idle-{n:03}"), &marker)?;
    }
    let config = harness::write_config(dir.path(), servers.max(1), metrics_interval_s)?;
    let started = Instant::now();
    let (mut child, addr, log_lines) = start_serve(dir.path(), &config)?;
    let pid = child.id();
    let result = (|| {
        wait_until("every server runs", || {
            harness::healthz(&addr).is_some_and(|h| h["running"] == servers && h["servers"] == servers)
        })?;
        let ready = started.elapsed();
        std::thread::sleep(sizes.settle);
        let lines_before = log_lines.load(Ordering::Relaxed);
        let ticks_before = harness::cpu_ticks(pid)?;
        let window_start = Instant::now();
        std::thread::sleep(sizes.window);
        let ticks = harness::cpu_ticks(pid)? - ticks_before;
        let elapsed = window_start.elapsed();
        let own_log_lines = log_lines.load(Ordering::Relaxed) - lines_before;
        let status = proc_status(pid)?;
        let cpu_percent = ticks as f64 / harness::clock_ticks_per_second() / elapsed.as_secs_f64() * 100.0;
        anyhow::Ok((ready, status, cpu_percent, own_log_lines))
    })();
    // Stop it whatever happened, and time the stop.
    let stopping = Instant::now();
    // SAFETY: kill(2) on the pid of the child this bench started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let exit = wait_exit(&mut child)?;
    let stop = stopping.elapsed();
    let (ready, status, cpu_percent, own_log_lines) = result?;
    Ok(Phase {
        servers,
        ready,
        rss_kib: status.rss_kib,
        hwm_kib: status.hwm_kib,
        threads: status.threads,
        cpu_percent,
        own_log_lines,
        stop,
        exit_code: exit.code(),
        survivors: harness::marked(&marker).len(),
    })
}

/// What the reference supervisor measured.
struct Reference {
    ready: Duration,
    rss_kib: u64,
    cpu_percent: f64,
    stop: Duration,
    survivors: usize,
}

/// Runs `benches/reference/minimal_supervisor.py` over the same ticking children and measures it
/// exactly as a phase measures hivehost.
fn minimal_supervisor(sizes: &Sizes) -> anyhow::Result<Reference> {
    let dir = tempfile::tempdir()?;
    let marker = format!("serve-bench-reference-{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/minimal_supervisor.py");
    let started = Instant::now();
    #[allow(clippy::disallowed_methods, reason = "the bench starts the reference supervisor")]
    let mut cmd = std::process::Command::new("python3");
    // The children's environment is the script's own; the marker goes on the command line instead.
    let ticker = format!(": {marker}; {}", harness::TICKER);
    let mut child = cmd
        .arg(&script)
        .arg(dir.path().join("logs"))
        .arg(sizes.servers.to_string())
        .args(["/bin/sh", "-c", &ticker])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting python3")?;
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().context("the reference's stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the reference supervisor did not start: {line:?}");
    }
    let ready = started.elapsed();
    std::thread::sleep(sizes.settle);
    let ticks_before = harness::cpu_ticks(pid)?;
    let window_start = Instant::now();
    std::thread::sleep(sizes.window);
    let ticks = harness::cpu_ticks(pid)? - ticks_before;
    let cpu_percent = ticks as f64 / harness::clock_ticks_per_second() / window_start.elapsed().as_secs_f64() * 100.0;
    let rss_kib = proc_status(pid)?.rss_kib;
    let stopping = Instant::now();
    // SAFETY: kill(2) on the pid of the child this bench started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let exit = wait_exit(&mut child)?;
    let stop = stopping.elapsed();
    if !exit.success() {
        bail!("the reference supervisor exited with {exit}");
    }
    let survivors = cmdline_marked(&marker);
    Ok(Reference { ready, rss_kib, cpu_percent, stop, survivors })
}

/// Live processes whose command line contains `marker`.
fn cmdline_marked(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .count()
}

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn print_reference(reference: &Reference, loaded: &Phase) {
    println!(
        "
same-run reference: benches/reference/minimal_supervisor.py (one Python thread, epoll, pidfds),"
    );
    println!(
        "the same {} ticking children, measured the same way
",
        loaded.servers
    );
    println!("| measure | hivehost serve | minimal Python supervisor |");
    println!("|---|---|---|");
    println!("| own RSS | {} | {} |", mib(loaded.rss_kib), mib(reference.rss_kib));
    println!("| CPU (% of one core) | {:.2} % | {:.2} % |", loaded.cpu_percent, reference.cpu_percent);
    println!(
        "| start until all running | {:.3} s | {:.3} s |",
        loaded.ready.as_secs_f64(),
        reference.ready.as_secs_f64()
    );
    println!("| SIGTERM until exit | {:.3} s | {:.3} s |", loaded.stop.as_secs_f64(), reference.stop.as_secs_f64());
    println!("| processes left after exit | {} | {} |", loaded.survivors, reference.survivors);
}

/// Starts the binary under test; returns it, its address (from its log) and a count of its log lines.
fn start_serve(dir: &Path, config: &Path) -> anyhow::Result<(harness::Serve, String, Arc<AtomicU64>)> {
    let lines = Arc::new(AtomicU64::new(0));
    let counted = lines.clone();
    let on_line = move |_: &str| {
        counted.fetch_add(1, Ordering::Relaxed);
    };
    let (serve, addr) = harness::spawn_serve(dir, config, &[], DEADLINE, on_line).map_err(anyhow::Error::msg)?;
    Ok((serve, addr, lines))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() >= deadline {
            bail!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn wait_exit(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("hivehost did not exit within {DEADLINE:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStatus { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:"), threads: field("Threads:") })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn print(empty: &Phase, loaded: &Phase, quiet: &Phase, sizes: &Sizes, full: bool) {
    let note = if full { "" } else { " (smoke run: sizes are tiny, figures mean nothing)" };
    println!(
        "\nhivehost serve (the binary cargo built for this run: release under cargo bench), own process only{note}"
    );
    println!(
        "window {:?} after {:?} of settling; baseline = the same binary with 0 servers; the last column is a \
         diagnosis (metrics sampling every hour instead of every 5 s)\n",
        sizes.window, sizes.settle
    );
    let phases = [loaded, empty, quiet];
    let cells = |f: &dyn Fn(&Phase) -> String| -> Vec<String> { phases.iter().map(|p| f(p)).collect() };
    let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
    let rows: Vec<(&str, Vec<String>, &str)> = vec![
        ("VmRSS", cells(&|p| mib(p.rss_kib)), "< 40 MiB"),
        ("VmHWM (peak RSS)", cells(&|p| mib(p.hwm_kib)), ""),
        ("CPU, utime+stime over the window (% of one core)", cells(&|p| format!("{:.2} %", p.cpu_percent)), "< 3 %"),
        ("threads", cells(&|p| p.threads.to_string()), ""),
        ("own log lines during the window", cells(&|p| p.own_log_lines.to_string()), ""),
        ("exec until /healthz reports all running", cells(&|p| secs(p.ready)), ""),
        ("SIGTERM until exit", cells(&|p| secs(p.stop)), ""),
        ("exit code", cells(&|p| format!("{:?}", p.exit_code)), "Some(0)"),
        ("hosted processes left after exit", cells(&|p| p.survivors.to_string()), "0"),
    ];
    let mut head = vec!["measure".to_owned()];
    head.push(format!("{} servers", loaded.servers));
    head.push(format!("{} servers (baseline)", empty.servers));
    head.push(format!("{} servers, metrics hourly", quiet.servers));
    head.push("target".to_owned());
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(what, values, target)| {
            let mut row = vec![what.to_owned()];
            row.extend(values);
            row.push(target.to_owned());
            row
        })
        .collect();
    let widths: Vec<usize> =
        (0..head.len()).map(|c| table.iter().map(|r| r[c].len()).chain([head[c].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(c, (cell, w))| {
                    if c == 0 || c == cells.len() - 1 { format!("{cell:<w$}") } else { format!("{cell:>w$}") }
                },
            )
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&head);
    println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
    for row in &table {
        line(row);
    }
}
