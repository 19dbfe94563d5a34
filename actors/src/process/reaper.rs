//! hivehost as a child subreaper: orphans of hosted trees come back to it, and it reaps them.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Pids of the processes this crate spawned and whose own waiter reaps them.
///
/// The reaper must never reap those (their waiter would lose the exit status), so spawning holds
/// this lock from fork until the pid is registered, and the reaper holds it while it reaps.
pub(crate) fn spawned() -> MutexGuard<'static, HashSet<u32>> {
    static SPAWNED: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    SPAWNED.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Makes this process a child subreaper: orphaned descendants are re-parented to it, not to init.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory of ours.
    let res = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if res == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The shortest time between two scans for orphans.
const REAP_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Spawns the task that reaps orphans whenever a child-state signal arrives.
pub(crate) fn spawn_reaper() -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigchld = signal(SignalKind::child())?;
    Ok(tokio::spawn(async move {
        loop {
            // A blocking /proc scan: off the async workers.
            let reaped = tokio::task::spawn_blocking(reap_orphans).await.unwrap_or(0);
            if reaped > 0 {
                tracing::debug!(reaped, "reaped orphaned processes");
            }
            // Coalesce: a burst of exits (a restart loop, a mass stop) costs one scan per period,
            // and the scans stay off the restart path. Signals arriving meanwhile are kept.
            tokio::time::sleep(REAP_PERIOD).await;
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    }))
}

/// Reaps every zombie child of this process that no waiter owns; returns how many.
pub(crate) fn reap_orphans() -> usize {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let zombies: Vec<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| zombie_child_of(*pid, me))
        .collect();
    if zombies.is_empty() {
        return 0;
    }
    let owned = spawned();
    let mut reaped = 0;
    for pid in zombies {
        if owned.contains(&pid) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a specific pid writes only into `status`.
        let res = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if res > 0 {
            reaped += 1;
        }
    }
    reaped
}

/// Whether `pid` is a zombie whose parent is `parent`.
fn zombie_child_of(pid: u32, parent: u32) -> bool {
    super::proc_stat(pid).is_some_and(|s| s.zombie && s.ppid == parent)
}
