//! A shared, coalescing snapshot of the host's process table (sysinfo), read by every tree.

use std::collections::HashMap;
use std::sync::Arc;

use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// One process as seen in a snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcInfo {
    pub(crate) ppid: u32,
    pub(crate) sid: u32,
    /// Seconds since the epoch at which it started; with the pid, its identity.
    pub(crate) start_time: u64,
    pub(crate) zombie: bool,
    pub(crate) cpu_percent: f32,
    pub(crate) rss_bytes: u64,
}

/// The process table at one instant.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// When the refresh that produced it began.
    pub(crate) taken: Instant,
    pub(crate) procs: HashMap<u32, ProcInfo>,
    /// Each parent's children, built once per snapshot for every tree that walks it.
    pub(crate) children: HashMap<u32, Vec<u32>>,
}

/// The process table, refreshed on demand; concurrent callers share one refresh.
///
/// Stopping 500 servers at once must not scan /proc 500 times: a caller asks for a snapshot taken
/// after some instant, and every caller that queued while a refresh ran is served by the next one.
pub(crate) struct ProcTable {
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` while a refresh runs on a blocking thread, or when sysinfo is unsupported here.
    system: Option<System>,
    latest: Arc<Snapshot>,
}

impl ProcTable {
    pub(crate) fn new() -> ProcTable {
        let empty = Arc::new(Snapshot { taken: Instant::now(), procs: HashMap::new(), children: HashMap::new() });
        let system = System::new().map_err(|err| tracing::error!(error = %err, "cannot read the process table")).ok();
        ProcTable { inner: Mutex::new(Inner { system, latest: empty }) }
    }

    /// A snapshot whose refresh began at or after `not_before`.
    pub(crate) async fn fresh(&self, not_before: Instant) -> Arc<Snapshot> {
        let mut inner = self.inner.lock().await;
        if inner.latest.taken >= not_before && !inner.latest.procs.is_empty() {
            return inner.latest.clone();
        }
        let taken = Instant::now();
        let Some(system) = inner.system.take() else {
            return inner.latest.clone();
        };
        let refreshed = tokio::task::spawn_blocking(move || refresh(system)).await;
        match refreshed {
            Ok((system, procs, children)) => {
                inner.system = Some(system);
                inner.latest = Arc::new(Snapshot { taken, procs, children });
            }
            Err(err) => {
                tracing::error!(error = %err, "process table refresh failed");
                inner.system = System::new().ok();
            }
        }
        inner.latest.clone()
    }
}

fn refresh(mut system: System) -> (System, HashMap<u32, ProcInfo>, HashMap<u32, Vec<u32>>) {
    // Without tasks: sysinfo would otherwise list every thread of every process as a process of its
    // own, reading /proc/PID/task/* for each; the tree needs processes only.
    let kind = ProcessRefreshKind::nothing().with_cpu().with_memory().without_tasks();
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    let procs: HashMap<u32, ProcInfo> = system
        .processes()
        .iter()
        .filter(|(_, proc_)| proc_.thread_kind().is_none())
        .map(|(pid, proc_)| {
            let info = ProcInfo {
                ppid: proc_.parent().map_or(0, |p| p.as_u32()),
                sid: proc_.session_id().map_or(0, |p| p.as_u32()),
                start_time: proc_.start_time(),
                zombie: matches!(proc_.status(), ProcessStatus::Zombie | ProcessStatus::Dead),
                cpu_percent: proc_.cpu_usage(),
                rss_bytes: proc_.memory(),
            };
            (pid.as_u32(), info)
        })
        .collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, info) in &procs {
        children.entry(info.ppid).or_default().push(*pid);
    }
    (system, procs, children)
}

/// The fields of /proc/PID/stat that identify a process and place it in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub zombie: bool,
    /// Field 22: clock ticks after boot at which it started; with the pid, its identity.
    pub start_ticks: u64,
    /// Fields 14 and 15: CPU time used so far, user plus system, in clock ticks.
    pub cpu_ticks: u64,
}

/// Reads /proc/PID/stat; `None` when the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        ppid: u32::try_from(num(4)?).ok()?,
        pgid: u32::try_from(num(5)?).ok()?,
        sid: u32::try_from(num(6)?).ok()?,
        zombie: matches!(fields.first(), Some(&"Z" | &"X")),
        start_ticks: num(22)?,
        cpu_ticks: num(14)?.saturating_add(num(15)?),
    })
}

/// The start time of `pid` in clock ticks after boot, if it is alive.
pub fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_ticks)
}
