//! What the sandbox costs a start: median and p90 of 100 starts of a tiny program, from the
//! launch call to its first byte on stdout (fork, cgroups, namespaces, new root, uid drop,
//! Landlock, seccomp, exec), for each way of starting it, taking turns so that drift in the
//! machine's load hits every way alike. The baseline is a bare `tokio::process::Command` of the
//! same program, in the same run.
//!
//! Run with `cargo bench --bench sandbox` (as root, on a host with cgroups, for every layer).
//! Without `--bench` on its command line (as under `cargo test --benches`) it runs 3 starts of each.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use actors::process::{Launcher, ProcessLauncher};
use actors::sandbox::{CgroupRoot, HostCaps, LayerState, SandboxSpec};
use actors::{LogSpec, ServerSpec};
use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;

const PROGRAM: &str = "/bin/echo";
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    /// tokio::process::Command, nothing else.
    Bare,
    /// hivehost's launcher, no sandbox, no cgroup.
    Plain,
    /// hivehost's launcher with a cgroup (limits + kill) but not confined.
    Cgroup,
    /// Every layer, network allowed (no network namespace).
    Sandbox,
    /// Every layer, network denied (a network namespace too).
    SandboxNoNet,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Bare => "bare tokio::process::Command (baseline)",
            Way::Plain => "launcher, no sandbox",
            Way::Cgroup => "launcher, cgroup only",
            Way::Sandbox => "launcher, every layer, network allowed",
            Way::SandboxNoNet => "launcher, every layer, network denied",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let starts = if full { 100 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(starts, Duration::ZERO, "back to back, the host as it is"))?;
    // Spaced starts, as restarts after a delay are: nothing a previous start left warm helps.
    let gap = if full { SPACING } else { Duration::from_millis(10) };
    runtime.block_on(run(starts, gap, "spaced 200 ms apart, the host as it is"))?;
    Ok(())
}

/// The quiet time before each spaced start.
const SPACING: Duration = Duration::from_millis(200);

async fn run(starts: usize, gap: Duration, host: &str) -> anyhow::Result<()> {
    let caps = HostCaps::detect();
    let mut ways = vec![Way::Bare, Way::Plain];
    if caps.root && caps.cgroup.limits() {
        ways.push(Way::Cgroup);
    }
    let full_box = caps.root
        && caps.namespaces.mount
        && caps.namespaces.net
        && caps.landlock_abi.is_some()
        && caps.seccomp
        && caps.cgroup.limits();
    if full_box {
        ways.extend([Way::Sandbox, Way::SandboxNoNet]);
    } else {
        tracing_note(&format!("sandboxed ways skipped: this host offers {}", caps.summary()));
    }
    let dir = tempfile::tempdir()?;
    let code = dir.path().join("code");
    std::fs::create_dir_all(&code)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o755))?;
    let instance = format!("hivehost-bench-{}", std::process::id());
    let plain = ProcessLauncher::standalone();
    let boxed = ProcessLauncher::standalone_on(caps.clone(), CgroupRoot::new(caps.cgroup.clone(), instance.clone()));
    let mut times: Vec<(Way, Vec<Duration>)> = ways.iter().map(|w| (*w, Vec::new())).collect();
    // One untimed round first: page cache, lazily made directories.
    for round in 0..=starts {
        for (way, samples) in &mut times {
            // Idle time between starts is part of what is measured (see SPACING), not a wait for a condition.
            tokio::time::sleep(gap).await;
            let took = match way {
                Way::Bare => bare_start().await?,
                Way::Plain => launcher_start(&plain, &spec(*way, dir.path(), &code, round)).await?,
                _ => launcher_start(&boxed, &spec(*way, dir.path(), &code, round)).await?,
            };
            if round > 0 {
                samples.push(took);
            }
        }
    }
    let removed = tokio::task::spawn_blocking(move || {
        CgroupRoot::new(caps.cgroup, instance).remove_instance(Duration::from_secs(10))
    })
    .await?;
    if !removed {
        bail!("the bench's cgroups were not all removed");
    }
    let base = median(&mut times[0].1.clone());
    let plain_median = median(&mut times[1].1.clone());
    let mut table = String::from(
        "| way | median | p90 | added over bare | added over launcher without sandbox |\n|---|---|---|---|---|\n",
    );
    for (way, samples) in &mut times {
        let m = median(samples);
        let p90 = percentile(samples, 0.9);
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            way.label(),
            ms(m),
            ms(p90),
            ms(m.saturating_sub(base)),
            if *way == Way::Bare { "-".to_owned() } else { ms(m.saturating_sub(plain_median)) },
        ));
    }
    tracing_note(&format!("{host}: {starts} starts of `{PROGRAM} ready` per way, taking turns:\n{table}"));
    Ok(())
}

/// Prints a result (the bench's output is its report).
#[allow(clippy::print_stdout)]
fn tracing_note(text: &str) {
    println!("{text}");
}

fn spec(way: Way, root: &Path, code: &Path, round: usize) -> ServerSpec {
    let id = format!("s{round}");
    let mut spec =
        ServerSpec::new(id.clone(), vec![PROGRAM.into(), "ready".into()], code, LogSpec::in_dir(root.join("logs")));
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    let confine = matches!(way, Way::Sandbox | Way::SandboxNoNet);
    spec.sandbox = SandboxSpec {
        confine,
        cgroup: way != Way::Plain,
        uid: 233_000,
        gid: 233_000,
        network: way != Way::SandboxNoNet,
        code_dir: code.to_path_buf(),
        state_dir: root.join("state").join(&id),
        writable_state: true,
        run_dir: root.join("run").join(&id),
        read_paths: vec![],
        require: true,
    };
    spec.limits.memory_mb = Some(256);
    spec.limits.cpu_percent = Some(100);
    spec.limits.max_processes = Some(64);
    spec
}

/// From the launch call to the first byte on stdout; then waits for the exit and the cleanup.
async fn launcher_start(launcher: &ProcessLauncher, spec: &ServerSpec) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut inc = launcher.launch(spec, 1).with_context(|| format!("launching {}", spec.id))?;
    let mut out = inc.stdout.take().context("stdout")?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, out.read_exact(&mut byte)).await.context("first byte")??;
    let took = t0.elapsed();
    if spec.sandbox.confine && inc.sandbox.iter().any(|r| matches!(r.state, LayerState::Unavailable(_))) {
        bail!("a layer was unavailable: {:?}", inc.sandbox);
    }
    tokio::time::timeout(DEADLINE, inc.exit).await.context("exit")?;
    tokio::time::timeout(DEADLINE, inc.control.kill()).await.context("kill")?;
    Ok(took)
}

async fn bare_start() -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    #[allow(clippy::disallowed_methods, reason = "the baseline: a process started without hivehost")]
    let mut child = tokio::process::Command::new(PROGRAM)
        .arg("ready")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(DEADLINE, out.read_exact(&mut byte)).await.context("first byte")??;
    let took = t0.elapsed();
    child.wait().await?;
    Ok(took)
}

fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
