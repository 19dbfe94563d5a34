//! One incarnation's process tree: who belongs to it, and how it is terminated and killed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::table::{ProcTable, Snapshot};
use super::{KillReport, TreeControl, Usage};
use crate::sandbox::Cgroup;

/// How many stop-and-rescan rounds a kill tries before it reports survivors.
const MAX_KILL_ROUNDS: usize = 64;

/// How long a sweep after a natural exit waits, so that quick successive exits share one look at
/// the process table instead of scanning /proc on the restart path.
const SWEEP_DELAY: Duration = Duration::from_millis(100);

/// The processes of one incarnation.
///
/// Members are the root, everything in its session (the root is a session leader), everything
/// descending from a member by parent link, and every process once seen as a member (tracked by pid
/// and start time, so a reused pid is not mistaken for one).
pub(crate) struct Tree {
    root: u32,
    table: Arc<ProcTable>,
    /// Members seen so far, by pid and start time, and when the newest snapshot that updated them was taken.
    tracked: Mutex<(HashMap<u32, u64>, Option<Instant>)>,
    /// Once the root is reaped its pid (and so its process group id) may be reused: no more group signals.
    root_reaped: AtomicBool,
    /// When the root was reaped.
    reaped_at: Mutex<Option<Instant>>,
    /// The root's start time, learnt from the first snapshot taken while it was surely ours (unreaped).
    root_start: std::sync::OnceLock<u64>,
    /// The incarnation's cgroup, where there is one: its members are members, whatever they did.
    cgroup: Option<Arc<Cgroup>>,
    /// The cgroup's CPU time at the last usage reading, for the share since then.
    last_cpu: Mutex<Option<(Instant, u64)>>,
}

impl Tree {
    pub(crate) fn new(root: u32, table: Arc<ProcTable>, cgroup: Option<Arc<Cgroup>>) -> Tree {
        Tree {
            root,
            table,
            tracked: Mutex::new((HashMap::new(), None)),
            root_reaped: AtomicBool::new(false),
            reaped_at: Mutex::new(None),
            root_start: std::sync::OnceLock::new(),
            cgroup,
            last_cpu: Mutex::new(None),
        }
    }

    /// Records that the root has been reaped.
    pub(crate) fn mark_root_reaped(&self) {
        *self.reaped_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.root_reaped.store(true, Ordering::SeqCst);
    }

    /// Signals the root's process group while the root's pid still names it.
    fn signal_group(&self, sig: i32) {
        if !self.root_reaped.load(Ordering::SeqCst) {
            signal_group(self.root, sig);
        }
    }

    /// The live members in `snap`; remembers them for later snapshots.
    ///
    /// With `orphans`, once the root is gone, every live child of hivehost that no waiter owns
    /// counts too: hivehost itself creates no such process, so it is what is left of a hosted tree
    /// whose root died (a daemon that left the session and lost its parent before anyone saw it).
    fn members_with(&self, snap: &Snapshot, orphans: bool) -> Vec<u32> {
        let mut guard = self.tracked.lock().unwrap_or_else(|poison| poison.into_inner());
        let (tracked, newest) = &mut *guard;
        // Only a snapshot at least as new as the last one may forget members: an older one (a
        // sampler allowed to be stale) has simply not seen the newer ones yet.
        if newest.is_none_or(|newest| snap.taken >= newest) {
            tracked.retain(|pid, start| snap.procs.get(pid).is_some_and(|p| p.start_time == *start && !p.zombie));
            *newest = Some(snap.taken);
        }
        let mut seeds: Vec<u32> = tracked.keys().copied().collect();
        let at_root = snap.procs.get(&self.root);
        let reaped = self.root_reaped.load(Ordering::SeqCst);
        if let (Some(info), false) = (at_root, reaped) {
            let _ = self.root_start.set(info.start_time);
        }
        // After the root is reaped its pid may name another process, which may lead a session of
        // its own; Linux reuses a pid only once no process uses it as a session id, so the session
        // seeds are ours unless the pid now belongs to a process that is not our root.
        let root_is_ours = at_root.is_some_and(|info| !reaped || self.root_start.get() == Some(&info.start_time));
        if root_is_ours {
            seeds.push(self.root);
        }
        if root_is_ours || at_root.is_none() {
            seeds.extend(snap.procs.iter().filter(|(_, p)| p.sid == self.root && !p.zombie).map(|(pid, _)| *pid));
        }
        if let Some(cgroup) = &self.cgroup {
            seeds.extend(cgroup.procs());
        }
        if orphans && reaped {
            let me = std::process::id();
            let owned = super::reaper::spawned();
            seeds.extend(
                snap.procs
                    .iter()
                    .filter(|(pid, p)| p.ppid == me && !p.zombie && !owned.contains(pid))
                    .map(|(pid, _)| *pid),
            );
        }
        let mut seen = HashSet::new();
        let mut stack = seeds;
        let mut alive = Vec::new();
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            if let Some(info) = snap.procs.get(&pid)
                && !info.zombie
            {
                alive.push(pid);
                tracked.insert(pid, info.start_time);
            }
            if let Some(kids) = snap.children.get(&pid) {
                stack.extend(kids.iter().copied());
            }
        }
        alive
    }

    fn members(&self, snap: &Snapshot) -> Vec<u32> {
        self.members_with(snap, false)
    }

    async fn snapshot(&self) -> Arc<Snapshot> {
        self.table.fresh(Instant::now()).await
    }

    async fn terminate_tree(&self) {
        // Collect the members before signalling: once the root dies its children are re-parented
        // and only the tracked set still ties them to this tree.
        let snap = self.snapshot().await;
        let members = self.members(&snap);
        self.signal_group(libc::SIGTERM);
        for pid in members {
            signal(pid, libc::SIGTERM);
            // A stopped process cannot act on SIGTERM.
            signal(pid, libc::SIGCONT);
        }
    }

    async fn kill_tree(&self) -> KillReport {
        self.kill_tree_from(Instant::now()).await
    }

    /// Kills the tree; the first look at the process table may be any taken after `first_look`.
    async fn kill_tree_from(&self, first_look: Instant) -> KillReport {
        // With a cgroup the kernel knows the whole tree: kill it at once and wait for it to empty.
        if let Some(cgroup) = &self.cgroup {
            let killed = cgroup.kill();
            self.signal_group(libc::SIGKILL);
            if cgroup.wait_empty(Duration::from_secs(2)).await {
                return KillReport { killed, survivors: 0 };
            }
            tracing::warn!(
                root = self.root,
                "the cgroup did not empty after a kill; falling back to the process table"
            );
        }
        // Freeze first: a stopped process cannot fork, and the children of a stopped parent stay
        // linked to it, so rescanning until no new member appears finds the whole tree.
        let mut stopped: HashSet<u32> = HashSet::new();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let snap = if rounds == 1 { self.table.fresh(first_look).await } else { self.snapshot().await };
            let fresh: Vec<u32> =
                self.members_with(&snap, true).into_iter().filter(|pid| !stopped.contains(pid)).collect();
            if fresh.is_empty() || rounds >= MAX_KILL_ROUNDS {
                break;
            }
            for pid in fresh {
                signal(pid, libc::SIGSTOP);
                stopped.insert(pid);
            }
        }
        for pid in &stopped {
            signal(*pid, libc::SIGKILL);
        }
        self.signal_group(libc::SIGKILL);
        // Confirm: SIGKILL to a stopped process is delivered at once, but exit takes a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        let survivors;
        loop {
            let snap = self.snapshot().await;
            let alive = self.members_with(&snap, true);
            if alive.is_empty() {
                survivors = 0;
                break;
            }
            for pid in &alive {
                signal(*pid, libc::SIGKILL);
            }
            if Instant::now() >= deadline {
                survivors = alive.len();
                tracing::error!(root = self.root, survivors, "processes survived SIGKILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        KillReport { killed: stopped.len(), survivors }
    }

    async fn sweep_after_exit(&self) -> KillReport {
        if let Some(cgroup) = &self.cgroup {
            // The cgroup answers at once whether anything is left: no delay, no process table.
            if cgroup.procs().is_empty() {
                return KillReport::default();
            }
            return self.kill_tree_from(Instant::now()).await;
        }
        tokio::time::sleep(SWEEP_DELAY).await;
        let reaped_at = *self.reaped_at.lock().unwrap_or_else(|p| p.into_inner());
        self.kill_tree_from(reaped_at.unwrap_or_else(Instant::now)).await
    }

    /// Members known without a look at the process table: those tracked, and the cgroup's.
    fn known_members(&self) -> Vec<u32> {
        let tracked = self.tracked.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut pids: Vec<u32> = tracked.0.keys().copied().collect();
        drop(tracked);
        if let Some(cgroup) = &self.cgroup {
            pids.extend(cgroup.procs().into_iter().filter(|pid| !pids.contains(pid)).collect::<Vec<_>>());
        }
        pids
    }

    /// Usage from the cgroup's accounting: CPU as the share of one core since the last call.
    fn cgroup_usage(&self, stats: crate::sandbox::CgroupStats) -> Option<Usage> {
        if stats.processes == 0 {
            return None;
        }
        let now = Instant::now();
        let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let cpu_percent = match *last {
            Some((at, usec)) if now > at => {
                let wall = now.duration_since(at).as_micros() as f64;
                (stats.cpu_usec.saturating_sub(usec) as f64 / wall * 100.0) as f32
            }
            _ => 0.0,
        };
        *last = Some((now, stats.cpu_usec));
        Some(Usage { processes: stats.processes, rss_bytes: stats.rss_bytes, cpu_percent })
    }

    async fn usage_now(&self, max_age: Duration) -> Option<Usage> {
        // The kernel's accounting where there is a cgroup: no look at the process table at all.
        if let Some(stats) = self.cgroup.as_ref().and_then(|cg| cg.stats()) {
            return self.cgroup_usage(stats);
        }
        let now = Instant::now();
        let snap = self.table.fresh(now.checked_sub(max_age).unwrap_or(now)).await;
        let members = self.members(&snap);
        if members.is_empty() {
            return None;
        }
        let mut usage = Usage::default();
        for pid in members {
            if let Some(info) = snap.procs.get(&pid) {
                usage.processes += 1;
                usage.rss_bytes += info.rss_bytes;
                usage.cpu_percent += info.cpu_percent;
            }
        }
        Some(usage)
    }
}

impl TreeControl for Tree {
    fn terminate(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.terminate_tree())
    }

    fn kill(&self) -> Pin<Box<dyn Future<Output = KillReport> + Send + '_>> {
        Box::pin(self.kill_tree())
    }

    fn kill_now(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
        self.signal_group(libc::SIGKILL);
        let tracked = self.tracked.lock().unwrap_or_else(|poison| poison.into_inner());
        for pid in tracked.0.keys() {
            signal(*pid, libc::SIGKILL);
        }
    }

    fn pause(&self, stopped: bool) {
        let sig = if stopped { libc::SIGSTOP } else { libc::SIGCONT };
        self.signal_group(sig);
        for pid in self.known_members() {
            signal(pid, sig);
        }
    }

    fn oom_kills(&self) -> u64 {
        self.cgroup.as_ref().map_or(0, |cg| cg.oom_kills())
    }

    fn cpu_ticks(&self) -> Option<u64> {
        let mut pids = self.known_members();
        if !self.root_reaped.load(Ordering::SeqCst) && !pids.contains(&self.root) {
            pids.push(self.root);
        }
        Some(pids.into_iter().filter_map(super::proc_stat).map(|s| s.cpu_ticks).sum())
    }

    fn sweep(&self) -> Pin<Box<dyn Future<Output = KillReport> + Send + '_>> {
        Box::pin(self.sweep_after_exit())
    }

    fn usage(&self, max_age: Duration) -> Pin<Box<dyn Future<Output = Option<Usage>> + Send + '_>> {
        Box::pin(self.usage_now(max_age))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // The tree owner is gone (actor killed, supervisor stopped): nothing of it may outlive it.
        self.kill_now();
    }
}

/// Sends `sig` to one process, ignoring processes that are already gone.
pub(crate) fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 || pid == std::process::id() as i32 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends `sig` to the process group led by `leader`.
pub(super) fn signal_group(leader: u32, sig: i32) {
    let Ok(pgid) = i32::try_from(leader) else {
        return;
    };
    if pgid <= 1 || pgid == std::process::id() as i32 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, sig);
    }
}
