//! After a crash: kill what a dead hivehost left running, before anything is started again.
//!
//! Every spawned main process was recorded (pid, start ticks, boot id). Its own death came with
//! hivehost's (parent-death signal), but what it forked lives on in its session, now under init.
//! A record of this boot whose pid still names the same process (same start ticks), or whose
//! session still has members, is killed: the session, the process group and every descendant.
//! A daemon that left the session with `setsid` and lost its parent is beyond reach without
//! cgroups; the sandbox issue brings those.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actors::process::{ProcStat, proc_stat};

use crate::store::InstanceRecord;

/// How long to wait for killed processes to disappear.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// The id of this boot, which tells whether a recorded pid can still mean anything.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Kills the leftovers of `records` (those of this boot); returns how many processes were killed.
pub(crate) async fn kill_leftovers(records: &[InstanceRecord], boot: &str) -> usize {
    let records: Vec<&InstanceRecord> = records.iter().filter(|r| r.boot_id == boot).collect();
    if records.is_empty() {
        return 0;
    }
    let me = std::process::id();
    let table = snapshot();
    let mut doomed: HashSet<u32> = HashSet::new();
    for record in &records {
        let root_is_it = table.iter().any(|p| p.pid == record.pid && p.start_ticks == record.start_ticks);
        // The session and group of a dead root keep its pid as their id until their last member is gone,
        // and Linux reuses no pid while it names a session or group: those members are its leftovers.
        let seeds: Vec<u32> = table
            .iter()
            .filter(|p| {
                (p.pid == record.pid && root_is_it)
                    || (p.pid != record.pid && (p.sid == record.pid || p.pgid == record.pid))
            })
            .map(|p| p.pid)
            .collect();
        let mut stack = seeds;
        while let Some(pid) = stack.pop() {
            if pid == me || pid <= 1 || !doomed.insert(pid) {
                continue;
            }
            stack.extend(table.iter().filter(|p| p.ppid == pid).map(|p| p.pid));
        }
    }
    doomed.retain(|pid| table.iter().any(|p| p.pid == *pid && !p.zombie));
    if doomed.is_empty() {
        return 0;
    }
    for pid in &doomed {
        // Stop first, so nothing forks away between the look and the kill.
        signal(*pid, libc::SIGSTOP);
    }
    for pid in &doomed {
        signal(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let alive = doomed.iter().filter(|pid| proc_stat(**pid).is_some_and(|s| !s.zombie)).count();
        if alive == 0 || Instant::now() >= deadline {
            if alive > 0 {
                tracing::error!(alive, "processes left by the previous hivehost survived SIGKILL");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Some may be our children now (we are a subreaper); the reaper collects them.
    doomed.len()
}

fn snapshot() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter_map(proc_stat).collect()
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a pid recorded as a hosted server's leftover and checked just before.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}
