//! What isolation this host offers, found once at start by trying it.

use std::path::{Path, PathBuf};

/// The layers this host supports, as found by [`HostCaps::detect`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCaps {
    /// hivehost runs as root (uid switching, cgroups and namespaces need it).
    pub root: bool,
    pub cgroup: CgroupCaps,
    pub namespaces: NamespaceCaps,
    /// The Landlock ABI version, when Landlock is enabled.
    pub landlock_abi: Option<u32>,
    /// seccomp filters (SECCOMP_MODE_FILTER) are available.
    pub seccomp: bool,
}

/// Where hivehost may create cgroups: for each controller, the directory under which its own
/// cgroups go (the hierarchy's mount point joined with hivehost's current cgroup there), when
/// that directory is writable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupCaps {
    /// A v2 hierarchy hivehost may write (a tracking cgroup whose `cgroup.kill` ends a whole tree).
    pub v2: Option<PathBuf>,
    /// Controllers usable in that v2 hierarchy (`memory`, `cpu`, `pids`).
    pub v2_controllers: Vec<String>,
    /// v1 hierarchies by controller.
    pub v1_memory: Option<PathBuf>,
    pub v1_cpu: Option<PathBuf>,
    pub v1_pids: Option<PathBuf>,
    pub v1_freezer: Option<PathBuf>,
}

/// Namespaces hivehost could create (tried in a short-lived child).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceCaps {
    pub net: bool,
    pub mount: bool,
    pub ipc: bool,
}

impl CgroupCaps {
    /// Whether memory, CPU and process limits can all be set (v2 controllers, else v1).
    pub fn limits(&self) -> bool {
        let v2 = ["memory", "cpu", "pids"].iter().all(|c| self.v2_controllers.iter().any(|h| h == c));
        v2 || (self.v1_memory.is_some() && self.v1_cpu.is_some() && self.v1_pids.is_some())
    }

    /// Whether a whole tree can be killed at once (v2 `cgroup.kill`, else the v1 freezer).
    pub fn tree_kill(&self) -> bool {
        self.v2.is_some() || self.v1_freezer.is_some()
    }

    /// Whether v2 carries the limits (rather than v1).
    pub fn limits_on_v2(&self) -> bool {
        self.v2.is_some() && ["memory", "cpu", "pids"].iter().all(|c| self.v2_controllers.iter().any(|h| h == c))
    }
}

impl HostCaps {
    /// Looks at this host: mount table, own cgroups, a probe cgroup per hierarchy, a child that
    /// tries the namespaces, the Landlock ABI and seccomp.
    pub fn detect() -> HostCaps {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let cgroup = if root { detect_cgroups() } else { CgroupCaps::default() };
        HostCaps {
            root,
            cgroup,
            namespaces: if root { probe_namespaces() } else { NamespaceCaps::default() },
            landlock_abi: super::landlock::abi(),
            seccomp: seccomp_available(),
        }
    }

    /// One line for the log: what is available and what is not.
    pub fn summary(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let cg = &self.cgroup;
        let v1: Vec<&str> = [
            ("memory", cg.v1_memory.is_some()),
            ("cpu", cg.v1_cpu.is_some()),
            ("pids", cg.v1_pids.is_some()),
            ("freezer", cg.v1_freezer.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
        format!(
            "root: {}; cgroup v2: {} (controllers: {}); cgroup v1: {}; namespaces: net {}, mount {}, ipc {}; landlock: {}; seccomp: {}",
            yes(self.root),
            cg.v2.as_ref().map_or("no".to_owned(), |p| p.display().to_string()),
            if cg.v2_controllers.is_empty() { "none".to_owned() } else { cg.v2_controllers.join(" ") },
            if v1.is_empty() { "none".to_owned() } else { v1.join(" ") },
            yes(self.namespaces.net),
            yes(self.namespaces.mount),
            yes(self.namespaces.ipc),
            self.landlock_abi.map_or("no".to_owned(), |abi| format!("ABI {abi}")),
            yes(self.seccomp),
        )
    }
}

/// A cgroup mount: its root directory, and whether it is v2 or which v1 controllers it carries.
struct Mount {
    dir: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        // Fields: id parent maj:min root mountpoint options [optional...] - fstype source superoptions
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype), Some(super_opts)) = (left.get(4), right.first(), right.get(2)) else {
            continue;
        };
        // Only hierarchies mounted at their root: a bind of a sub-cgroup would shift every path.
        if left.get(3) != Some(&"/") {
            continue;
        }
        match *fstype {
            "cgroup2" => {
                mounts.push(Mount { dir: PathBuf::from(unescape(mount_point)), v2: true, controllers: vec![] })
            }
            "cgroup" => mounts.push(Mount {
                dir: PathBuf::from(unescape(mount_point)),
                v2: false,
                controllers: super_opts
                    .split(',')
                    .filter(|o| ["memory", "cpu", "pids", "freezer"].contains(o))
                    .map(str::to_owned)
                    .collect(),
            }),
            _ => {}
        }
    }
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// hivehost's own cgroup path in the hierarchy with `key` (`""` for v2, else a controller name).
fn own_path(proc_cgroup: &str, key: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if key.is_empty() { names.is_empty() } else { names.split(',').any(|n| n == key) };
        matches.then(|| path.to_owned())
    })
}

fn detect_cgroups() -> CgroupCaps {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut caps = CgroupCaps::default();
    for mount in cgroup_mounts(&mountinfo) {
        let key = if mount.v2 { "" } else { mount.controllers.first().map_or("", String::as_str) };
        if !mount.v2 && key.is_empty() {
            continue;
        }
        let Some(path) = own_path(&own, key) else { continue };
        let rel = path.trim_start_matches('/');
        let base = if rel.is_empty() { mount.dir.clone() } else { mount.dir.join(rel) };
        if !writable(&base) {
            continue;
        }
        if mount.v2 {
            let enabled = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
            caps.v2_controllers = enabled
                .split_whitespace()
                .filter(|c| ["memory", "cpu", "pids"].contains(c))
                .map(str::to_owned)
                .collect();
            caps.v2 = Some(base);
            continue;
        }
        for controller in &mount.controllers {
            let slot = match controller.as_str() {
                "memory" => &mut caps.v1_memory,
                "cpu" => &mut caps.v1_cpu,
                "pids" => &mut caps.v1_pids,
                "freezer" => &mut caps.v1_freezer,
                _ => continue,
            };
            *slot = Some(base.clone());
        }
    }
    caps
}

/// Whether a cgroup can be made (and removed again) under `base`.
fn writable(base: &Path) -> bool {
    // Unique per call: detections may run at once in one process (tests).
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = base.join(format!("hivehost-probe-{}-{n}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => std::fs::remove_dir(&probe).is_ok(),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => std::fs::remove_dir(&probe).is_ok(),
        Err(_) => false,
    }
}

/// Forks a child that tries each namespace and reports through its exit code.
fn probe_namespaces() -> NamespaceCaps {
    let try_one = |flag: libc::c_int| -> bool {
        // The reaper must not take this child: hold its registry from fork to wait.
        let _owned = crate::process::reaper_guard();
        // SAFETY: the child makes only async-signal-safe calls (unshare, _exit); the parent waits
        // for exactly that pid.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                let ok = libc::unshare(flag) == 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
            if pid < 0 {
                return false;
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0) == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    };
    NamespaceCaps {
        net: try_one(libc::CLONE_NEWNET),
        mount: try_one(libc::CLONE_NEWNS),
        ipc: try_one(libc::CLONE_NEWIPC),
    }
}

fn seccomp_available() -> bool {
    // SAFETY: prctl(PR_GET_SECCOMP) takes no pointers; it fails with EINVAL without seccomp.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 30 0:37 /sub /mnt/bound rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_controllers_and_the_v2_mount() {
        let mounts = cgroup_mounts(MOUNTINFO);
        let dirs: Vec<(String, bool, Vec<String>)> =
            mounts.iter().map(|m| (m.dir.display().to_string(), m.v2, m.controllers.clone())).collect();
        assert_eq!(dirs[0], ("/sys/fs/cgroup/cpu".into(), false, vec!["cpu".into()]));
        assert_eq!(dirs[1], ("/sys/fs/cgroup/memory".into(), false, vec!["memory".into()]));
        assert_eq!(dirs[4], ("/sys/fs/cgroup/cpu,cpuacct".into(), false, vec!["cpu".into()]));
        assert_eq!(dirs[5], ("/sys/fs/cgroup/unified".into(), true, vec![]));
        // A bind of a sub-cgroup is not a hierarchy root.
        assert_eq!(mounts.len(), 6);
    }

    #[test]
    fn own_cgroup_paths() {
        let own = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(own_path(own, "memory").as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(own, "cpuacct").as_deref(), Some("/x"));
        assert_eq!(own_path(own, "").as_deref(), Some("/"));
        assert_eq!(own_path(own, "pids"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
