//! A cgroup per incarnation: limits, membership, whole-tree kill, OOM counts, removal.
//!
//! Layout: under each hierarchy's base (hivehost's own cgroup there), one directory per hivehost
//! instance (named by the caller, stable across restarts of the same instance so a successor can
//! sweep what a crashed one left), and in it `{server}.{generation}`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupCaps;

/// The period CPU quotas are expressed in, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// How long a kill waits for a cgroup to empty.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where this hivehost instance's cgroups live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot {
    caps: CgroupCaps,
    /// The instance directory's name in every hierarchy.
    instance: String,
}

impl CgroupRoot {
    pub fn new(caps: CgroupCaps, instance: impl Into<String>) -> CgroupRoot {
        CgroupRoot { caps, instance: instance.into() }
    }

    pub fn caps(&self) -> &CgroupCaps {
        &self.caps
    }

    /// Removes the instance directories once they are empty, waiting up to `timeout` for
    /// incarnation cgroups still being removed; whether all went.
    pub fn remove_instance(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut left = self.instance_dirs();
        loop {
            left.retain(|dir| !remove_dir(dir));
            if left.is_empty() || Instant::now() >= deadline {
                return left.is_empty();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Each hierarchy's instance directory.
    fn instance_dirs(&self) -> Vec<PathBuf> {
        let c = &self.caps;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for base in [&c.v2, &c.v1_memory, &c.v1_cpu, &c.v1_pids, &c.v1_freezer].into_iter().flatten() {
            // cpu and cpuacct may share one mount: one directory, once.
            let dir = base.join(&self.instance);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }
}

/// Resource limits written into a cgroup.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CgroupLimits {
    pub memory_bytes: Option<u64>,
    pub cpu_percent: Option<u32>,
    pub pids: Option<u32>,
}

/// A cgroup's accounting at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CgroupStats {
    pub cpu_usec: u64,
    pub rss_bytes: u64,
    pub processes: u32,
}

/// The number after `name ` on a line of a flat-keyed cgroup file.
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Open accounting files of a cgroup, read again from the start at each sample.
#[derive(Debug)]
struct StatFiles {
    cpu: std::fs::File,
    memory: std::fs::File,
    procs: std::fs::File,
    buf: Vec<u8>,
}

/// The whole of `file` as text, read from offset 0 into `buf` (a cgroup file is generated anew
/// by each read from the start).
fn reread<'a>(file: &std::fs::File, buf: &'a mut Vec<u8>) -> io::Result<&'a str> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    std::str::from_utf8(buf).map_err(io::Error::other)
}

/// One incarnation's cgroups.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// Every directory made, deepest last within each hierarchy.
    dirs: Vec<PathBuf>,
    v2: Option<PathBuf>,
    v2_memory: bool,
    memory: Option<PathBuf>,
    freezer: Option<PathBuf>,
    pids: Option<PathBuf>,
    /// `cgroup.procs` of each, for the child to join before exec.
    join: Vec<CString>,
    /// Accounting files, opened at the first sample.
    stat_files: std::sync::Mutex<Option<StatFiles>>,
}

impl Cgroup {
    /// Makes the cgroups of incarnation `name` with `limits`. With `limits_wanted` false only the
    /// tracking (kill) cgroup is made.
    pub(crate) fn create(
        root: &CgroupRoot,
        name: &str,
        limits: CgroupLimits,
        limits_wanted: bool,
    ) -> io::Result<Cgroup> {
        let caps = &root.caps;
        let mut cg = Cgroup {
            dirs: vec![],
            v2: None,
            v2_memory: false,
            memory: None,
            freezer: None,
            pids: None,
            join: vec![],
            stat_files: std::sync::Mutex::new(None),
        };
        let make = |cg: &mut Cgroup, base: &Path| -> io::Result<PathBuf> {
            let instance = base.join(&root.instance);
            std::fs::create_dir_all(&instance)?;
            let dir = instance.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                // A leftover of an incarnation whose removal is still pending: take it over empty.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    kill_members(&dir, None)?;
                }
                Err(err) => return Err(err),
            }
            let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(io::Error::other)?;
            cg.join.push(procs);
            cg.dirs.push(dir.clone());
            Ok(dir)
        };
        let result = (|| -> io::Result<()> {
            let on_v2 = limits_wanted && caps.limits_on_v2();
            if let Some(base) = &caps.v2 {
                if on_v2 {
                    enable_controllers(base, &root.instance)?;
                }
                let dir = make(&mut cg, base)?;
                if on_v2 {
                    write_v2_limits(&dir, limits)?;
                    cg.v2_memory = true;
                    cg.pids = Some(dir.clone());
                }
                cg.v2 = Some(dir);
            }
            if limits_wanted && !on_v2 {
                if let Some(base) = &caps.v1_memory {
                    let dir = make(&mut cg, base)?;
                    if let Some(bytes) = limits.memory_bytes {
                        write(&dir, "memory.limit_in_bytes", bytes)?;
                        // No swap: memory+swap capped at the same figure, where swap is accounted.
                        if dir.join("memory.memsw.limit_in_bytes").exists() {
                            write(&dir, "memory.memsw.limit_in_bytes", bytes)?;
                        }
                        let _ = write(&dir, "memory.swappiness", 0);
                    }
                    cg.memory = Some(dir);
                }
                if let Some(base) = &caps.v1_cpu {
                    let dir = make(&mut cg, base)?;
                    if let Some(pct) = limits.cpu_percent {
                        write(&dir, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                        write(&dir, "cpu.cfs_quota_us", quota_us(pct))?;
                    }
                }
                if let Some(base) = &caps.v1_pids {
                    let dir = make(&mut cg, base)?;
                    if let Some(max) = limits.pids {
                        write(&dir, "pids.max", max)?;
                    }
                    cg.pids = Some(dir);
                }
            }
            if cg.v2.is_none()
                && let Some(base) = &caps.v1_freezer
            {
                cg.freezer = Some(make(&mut cg, base)?);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(err) => {
                cg.remove();
                Err(err)
            }
        }
    }

    /// `cgroup.procs` paths the child writes `0` into.
    pub(crate) fn join_paths(&self) -> &[CString] {
        &self.join
    }

    /// The hierarchy membership is read from.
    fn tracking(&self) -> Option<&Path> {
        self.v2.as_deref().or(self.freezer.as_deref()).or(self.pids.as_deref()).or(self.memory.as_deref())
    }

    /// Pids in the cgroup now.
    pub(crate) fn procs(&self) -> Vec<u32> {
        self.tracking().map(read_procs).unwrap_or_default()
    }

    /// Kills every process in the cgroup, now; returns how many were signalled.
    pub(crate) fn kill(&self) -> usize {
        let Some(dir) = self.tracking() else { return 0 };
        kill_members(dir, self.freezer.as_deref()).unwrap_or(0)
    }

    /// Waits until no process is left, up to `timeout`; whether it emptied.
    pub(crate) async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.procs().is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The tree's use from the kernel's own accounting, without looking at the process table:
    /// CPU time so far (v2 `cpu.stat`, kept in every v2 cgroup), memory as charged against its
    /// limit (`memory.usage_in_bytes` or `memory.current`: resident plus page cache, one counter
    /// read where `memory.stat` would format forty) and processes. `None` without those files.
    pub(crate) fn stats(&self) -> Option<CgroupStats> {
        let mut guard = self.stat_files.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.open_stat_files()?);
        }
        let files = guard.as_mut()?;
        let cpu_usec = stat_field(reread(&files.cpu, &mut files.buf).ok()?, "usage_usec")?;
        let rss_bytes = reread(&files.memory, &mut files.buf).ok()?.trim().parse().ok()?;
        let processes = reread(&files.procs, &mut files.buf).ok()?.lines().count();
        Some(CgroupStats { cpu_usec, rss_bytes, processes: u32::try_from(processes).unwrap_or(u32::MAX) })
    }

    /// The files [`Cgroup::stats`] reads, opened once: a sample then costs three reads, no path walks.
    fn open_stat_files(&self) -> Option<StatFiles> {
        let v2 = self.v2.as_deref()?;
        let memory = match (self.v2_memory, &self.memory) {
            (true, _) => v2.join("memory.current"),
            (false, Some(dir)) => dir.join("memory.usage_in_bytes"),
            (false, None) => return None,
        };
        Some(StatFiles {
            cpu: std::fs::File::open(v2.join("cpu.stat")).ok()?,
            memory: std::fs::File::open(memory).ok()?,
            procs: std::fs::File::open(v2.join("cgroup.procs")).ok()?,
            buf: Vec::with_capacity(512),
        })
    }

    /// Kernel OOM kills in this incarnation's memory cgroup so far.
    pub(crate) fn oom_kills(&self) -> u64 {
        let (dir, file) = match (&self.v2, self.v2_memory, &self.memory) {
            (Some(dir), true, _) => (dir, "memory.events"),
            (_, _, Some(dir)) => (dir, "memory.oom_control"),
            _ => return 0,
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// Removes the directories; those still busy are retried for a while on a thread of their own.
    fn remove(&mut self) {
        let busy: Vec<PathBuf> = self.dirs.drain(..).filter(|dir| !remove_dir(dir)).collect();
        if busy.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new().name("cgroup-rmdir".into()).spawn(move || {
            let deadline = Instant::now() + EMPTY_TIMEOUT;
            let mut left = busy;
            while !left.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                left.retain(|dir| {
                    let _ = kill_members(dir, None);
                    !remove_dir(dir)
                });
            }
            for dir in left {
                tracing::warn!(cgroup = %dir.display(), "a cgroup stayed busy and was left behind");
            }
        });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "could not start the cgroup removal thread");
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Open files keep nothing busy, but close them before the directories go.
        self.stat_files.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.kill();
        self.remove();
    }
}

/// Kills and removes every cgroup of instance `root` (what a crashed predecessor left); returns how
/// many processes were killed.
pub fn sweep_instance(root: &CgroupRoot) -> usize {
    let mut killed = 0;
    let instance_dirs = root.instance_dirs();
    // The freezer (or v2) first: that is where a kill can catch a forking tree.
    for instance in &instance_dirs {
        let Ok(entries) = std::fs::read_dir(instance) else { continue };
        let freezer_base = root.caps.v1_freezer.as_ref().map(|b| b.join(&root.instance));
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let freezer = (freezer_base.as_deref() == Some(instance.as_path())).then_some(dir.as_path());
            killed += kill_members(&dir, freezer).unwrap_or(0);
        }
    }
    let deadline = Instant::now() + EMPTY_TIMEOUT;
    for instance in &instance_dirs {
        let Ok(entries) = std::fs::read_dir(instance) else { continue };
        for entry in entries.flatten() {
            let dir = entry.path();
            while dir.is_dir() && !remove_dir(&dir) && Instant::now() < deadline {
                let _ = kill_members(&dir, None);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = std::fs::remove_dir(instance);
    }
    killed
}

fn quota_us(pct: u32) -> u64 {
    (u64::from(pct.max(1)) * CPU_PERIOD_US / 100).max(1000)
}

fn write(dir: &Path, file: &str, value: impl std::fmt::Display) -> io::Result<()> {
    std::fs::write(dir.join(file), value.to_string())
        .map_err(|err| io::Error::new(err.kind(), format!("writing {}: {err}", dir.join(file).display())))
}

fn write_v2_limits(dir: &Path, limits: CgroupLimits) -> io::Result<()> {
    if let Some(bytes) = limits.memory_bytes {
        write(dir, "memory.max", bytes)?;
        if dir.join("memory.swap.max").exists() {
            write(dir, "memory.swap.max", 0)?;
        }
    }
    if let Some(pct) = limits.cpu_percent {
        write(dir, "cpu.max", format!("{} {CPU_PERIOD_US}", quota_us(pct)))?;
    }
    if let Some(max) = limits.pids {
        write(dir, "pids.max", max)?;
    }
    Ok(())
}

/// Lets the instance's children use the v2 controllers.
fn enable_controllers(base: &Path, instance: &str) -> io::Result<()> {
    let dir = base.join(instance);
    std::fs::create_dir_all(&dir)?;
    let want = "+memory +cpu +pids";
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    if ["memory", "cpu", "pids"].iter().all(|c| enabled.split_whitespace().any(|e| e == *c)) {
        return Ok(());
    }
    write(base, "cgroup.subtree_control", want)?;
    write(&dir, "cgroup.subtree_control", want)
}

fn read_procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every member of cgroup `dir`: by `cgroup.kill` where the file exists (v2), else frozen
/// first through `freezer` (so nothing forks meanwhile), else by signalling each pid until none is
/// left. Returns how many pids were seen.
fn kill_members(dir: &Path, freezer: Option<&Path>) -> io::Result<usize> {
    let pids = read_procs(dir);
    if pids.is_empty() {
        return Ok(0);
    }
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() {
        std::fs::write(kill_file, "1")?;
        return Ok(pids.len());
    }
    let frozen = freezer.is_some_and(|f| freeze(f, true));
    let mut seen = 0;
    for _ in 0..64 {
        let pids = read_procs(dir);
        if pids.is_empty() {
            break;
        }
        seen = seen.max(pids.len());
        for pid in pids {
            crate::process::signal(pid, libc::SIGKILL);
        }
        if frozen {
            break;
        }
    }
    if let (Some(f), true) = (freezer, frozen) {
        freeze(f, false);
    }
    Ok(seen)
}

/// Freezes (or thaws) a v1 freezer cgroup; whether it reached the state.
fn freeze(dir: &Path, frozen: bool) -> bool {
    let state = if frozen { "FROZEN" } else { "THAWED" };
    if std::fs::write(dir.join("freezer.state"), state).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if std::fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == state) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn remove_dir(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(err) => err.kind() == io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_fields() {
        let text = "usage_usec 1500\nuser_usec 1000\nanon 4096\nanon_thp 0\n";
        assert_eq!(stat_field(text, "usage_usec"), Some(1500));
        assert_eq!(stat_field(text, "anon"), Some(4096));
        assert_eq!(stat_field(text, "user"), None);
    }

    #[test]
    fn quotas_are_percent_of_one_core() {
        assert_eq!(quota_us(30), 30_000);
        assert_eq!(quota_us(200), 200_000);
        // The kernel refuses quotas under 1 ms.
        assert_eq!(quota_us(0), 1_000);
    }
}
