//! After a crash: killing what a dead hivehost left running, before anything is started again.
//!
//! The caller (which recorded them) names the main processes of the dead instance's incarnations.
//! Their own death came with hivehost's (parent-death signal), but what they forked lives on in
//! their sessions, now under init. A recorded pid that still names the same process (same start
//! ticks) is killed, and so is every member of its session or process group (Linux reuses no pid
//! while it names a session or group) and every descendant of those. A daemon that left the
//! session with `setsid` and lost its parent is beyond reach without cgroups.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::table::{ProcStat, proc_stat};
use super::tree::signal;

/// How long to wait for killed processes to disappear.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// A main process a previous hivehost started: its pid and its start time in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub pid: u32,
    pub start_ticks: u64,
}

/// Kills the trees of `roots` (stopping each process first, so none forks away); returns how many
/// processes were killed.
pub async fn kill_leftovers(roots: &[Leftover]) -> usize {
    if roots.is_empty() {
        return 0;
    }
    let me = std::process::id();
    let table = snapshot();
    let mut doomed: HashSet<u32> = HashSet::new();
    for root in roots {
        let root_is_it = table.iter().any(|p| p.pid == root.pid && p.start_ticks == root.start_ticks);
        let mut stack: Vec<u32> = table
            .iter()
            .filter(|p| {
                (p.pid == root.pid && root_is_it) || (p.pid != root.pid && (p.sid == root.pid || p.pgid == root.pid))
            })
            .map(|p| p.pid)
            .collect();
        while let Some(pid) = stack.pop() {
            if pid == me || pid <= 1 || !doomed.insert(pid) {
                continue;
            }
            stack.extend(table.iter().filter(|p| p.ppid == pid).map(|p| p.pid));
        }
    }
    doomed.retain(|pid| table.iter().any(|p| p.pid == *pid && !p.zombie));
    for pid in &doomed {
        signal(*pid, libc::SIGSTOP);
    }
    for pid in &doomed {
        signal(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let alive = doomed.iter().filter(|pid| proc_stat(**pid).is_some_and(|s| !s.zombie)).count();
        if alive == 0 {
            break;
        }
        if Instant::now() >= deadline {
            tracing::error!(alive, "processes left by the previous hivehost survived SIGKILL");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Those now reparented to hivehost (a subreaper) are reaped by the orphan reaper.
    doomed.len()
}

/// Every process of the host.
fn snapshot() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter_map(proc_stat).collect()
}
