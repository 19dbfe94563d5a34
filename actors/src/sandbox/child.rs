//! Preparing a server's box in the parent, and applying it in the child between fork and exec.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use seccompiler::BpfProgram;

use super::cgroup::{Cgroup, CgroupLimits, CgroupRoot};
use super::landlock::{self, Ruleset};
use super::mounts::{self, Access, MountPlan};
use super::{HostCaps, LayerReport, Plan, SandboxSpec, seccomp};

/// Everything the child applies, computed before the fork.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    join: Vec<CString>,
    unshare: libc::c_int,
    mounts: Option<MountPlan>,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    landlock: Option<Ruleset>,
    seccomp: Option<Vec<BpfProgram>>,
    /// Which layers are on, for the server's status.
    pub(crate) report: Vec<LayerReport>,
    /// Where the private /tmp lies on the host, when no mount namespace shows it at /tmp.
    pub(crate) tmpdir_env: Option<String>,
    /// RLIMIT_NPROC is a safe backstop only for a uid of its own, and needed only without cgroups.
    pub(crate) nproc_backstop: bool,
}

/// Does the parent's share of the work for one incarnation named `name`: cgroups with `limits`,
/// the state and tmp directories, the mount plan, the Landlock ruleset and the BPF programs.
pub(crate) fn prepare(
    spec: &SandboxSpec,
    plan: &Plan,
    caps: &HostCaps,
    cgroups: Option<&CgroupRoot>,
    name: &str,
    limits: CgroupLimits,
    workdir: &Path,
) -> io::Result<Prepared> {
    let mut prepared = Prepared { report: plan.report.clone(), ..Prepared::default() };
    if plan.cgroup
        && let Some(root) = cgroups
    {
        let cg = Cgroup::create(root, name, limits, caps.cgroup.limits())?;
        prepared.join = cg.join_paths().to_vec();
        prepared.cgroup = Some(Arc::new(cg));
    }
    if !spec.confine {
        return Ok(prepared);
    }
    let tmp = spec.run_dir.join("tmp");
    let new_root = spec.run_dir.join("root");
    // A fresh private /tmp each start; an empty directory for the new root to be mounted on.
    if tmp.exists() {
        // Moved aside at once and removed on a thread of its own: a server may have left
        // thousands of files there, and this runs on the actor's async worker.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let old = spec.run_dir.join(format!("tmp.old-{nanos}"));
        std::fs::rename(&tmp, &old)?;
        std::thread::Builder::new().name("tmp-remove".into()).spawn(move || {
            if let Err(err) = std::fs::remove_dir_all(&old) {
                tracing::warn!(dir = %old.display(), error = %err, "could not remove a server's old /tmp");
            }
        })?;
    }
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&new_root)?;
    std::fs::create_dir_all(&spec.state_dir)?;
    if plan.identity {
        for dir in [&tmp, &spec.state_dir] {
            std::os::unix::fs::chown(dir, Some(spec.uid), Some(spec.gid))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        prepared.ids = Some((spec.uid, spec.gid));
    }
    prepared.nproc_backstop = plan.identity && !(plan.cgroup && caps.cgroup.limits());
    let view = mounts::view(&spec.code_dir, &spec.state_dir, spec.writable_state, &tmp, &spec.read_paths)?;
    if plan.netns {
        prepared.unshare |= libc::CLONE_NEWNET;
    }
    if plan.mountns {
        prepared.unshare |= libc::CLONE_NEWNS;
        if caps.namespaces.ipc {
            prepared.unshare |= libc::CLONE_NEWIPC;
        }
        prepared.mounts = Some(MountPlan::new(&view, &new_root, workdir)?);
    } else {
        prepared.tmpdir_env = Some(tmp.display().to_string());
    }
    if plan.landlock
        && let Some(abi) = caps.landlock_abi
    {
        let ruleset = Ruleset::new(abi, !spec.network)?;
        for entry in &view {
            let access = match entry.access {
                Access::Read => landlock::READ,
                Access::Write => ruleset.write_rights(),
                Access::Device => landlock::READ_FILE | landlock::WRITE_FILE,
            };
            // A link is followed to its target, which the view holds in its own right.
            if entry.link.is_none() {
                ruleset.allow(&entry.host, access)?;
            }
        }
        if !plan.mountns {
            // Without a mount namespace the host's /proc and /dev/shm are what it sees.
            ruleset.allow(Path::new("/proc"), landlock::READ)?;
            if Path::new("/dev/shm").is_dir() {
                ruleset.allow(Path::new("/dev/shm"), ruleset.write_rights())?;
            }
        }
        prepared.landlock = Some(ruleset);
    }
    if plan.seccomp {
        prepared.seccomp = Some(seccomp::programs(!spec.network).map_err(io::Error::other)?);
    }
    Ok(prepared)
}

fn check(step: i32, res: libc::c_int) -> io::Result<()> {
    if res == -1 { Err(tagged(step, io::Error::last_os_error())) } else { Ok(()) }
}

/// Steps of the child's setup, numbered so that a failure can say which one failed: the child
/// can only hand the parent an errno (std sends that through its exec-error pipe), so the step is
/// folded into it as `step * 1000 + errno`, without allocating.
const STEPS: &[(i32, &str)] = &[
    (1, "joining its cgroups"),
    (2, "creating its namespaces"),
    (4, "switching to its uid and gid"),
    (5, "adding the Landlock rule for /proc"),
    (6, "adding the Landlock rule for /dev/shm"),
    (7, "enforcing Landlock"),
    (8, "installing the seccomp filter"),
    (20, "making its own session"),
    (21, "setting its resource limits"),
    (22, "linking it to hivehost (parent-death signal, subreaper, no_new_privs)"),
    (30, "building its root (mkdir/symlink)"),
    (31, "making mounts private"),
    (32, "mounting the tmpfs of its new root"),
    (33, "creating a file mount point"),
    (34, "bind-mounting a path of its view"),
    (35, "making a bind mount read-only"),
    (36, "mounting its /proc"),
    (37, "mounting its /dev/shm"),
    (38, "entering its new root"),
    (39, "pivot_root into its new root"),
    (40, "detaching the old root"),
    (41, "entering /"),
    (42, "making its root read-only"),
    (43, "entering its working directory"),
];

/// `err` from step `step`, in the form the parent decodes with [`describe_setup_error`].
pub(crate) fn tagged(step: i32, err: io::Error) -> io::Error {
    io::Error::from_raw_os_error(step * 1000 + err.raw_os_error().unwrap_or(libc::EIO))
}

/// Words for an error of the child's setup: the step, then the system's message.
pub fn describe_setup_error(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) if code >= 1000 => {
            let (step, errno) = (code / 1000, code % 1000);
            let what = STEPS.iter().find(|(n, _)| *n == step).map_or("setting up its sandbox", |(_, w)| w);
            format!("{what} failed: {}", io::Error::from_raw_os_error(errno))
        }
        _ => err.to_string(),
    }
}

impl Prepared {
    /// In the child, after the session is made: joins the cgroups, enters the namespaces and
    /// builds the new root. Async-signal-safe.
    pub(crate) fn enter(&self) -> io::Result<()> {
        // SAFETY: open/write/close on NUL-terminated paths owned by `self`; unshare on flags.
        unsafe {
            // Join before anything can fork, so nothing escapes the accounting.
            for procs in &self.join {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(1, fd)?;
                let wrote = libc::write(fd, c"0".as_ptr().cast(), 1);
                libc::close(fd);
                if wrote != 1 {
                    return Err(tagged(1, io::Error::last_os_error()));
                }
            }
            if self.unshare != 0 {
                check(2, libc::unshare(self.unshare))?;
            }
        }
        if let Some(mounts) = &self.mounts {
            mounts.apply_in_child()?;
            // Rules for what only exists in its new root, added now: the open files it inherited
            // (close-on-exec, still open until exec) may exceed the limit set next.
            if let Some(ruleset) = &self.landlock {
                ruleset.allow_in_child(&mounts.proc_dir, landlock::READ).map_err(|e| tagged(5, e))?;
                ruleset.allow_in_child(&mounts.shm_dir, ruleset.write_rights()).map_err(|e| tagged(6, e))?;
            }
        }
        Ok(())
    }

    /// In the child, after rlimits: drops to the server's uid and gid. Async-signal-safe.
    pub(crate) fn drop_identity(&self) -> io::Result<()> {
        let Some((uid, gid)) = self.ids else { return Ok(()) };
        // SAFETY: plain calls with integers (setgroups with an empty list).
        unsafe {
            check(4, libc::setgroups(0, std::ptr::null()))?;
            check(4, libc::setresgid(gid, gid, gid))?;
            check(4, libc::setresuid(uid, uid, uid))?;
        }
        Ok(())
    }

    /// In the child, last before exec: Landlock, then seccomp (which forbids what came before).
    pub(crate) fn restrict(&self) -> io::Result<()> {
        if let Some(ruleset) = &self.landlock {
            ruleset.restrict_self().map_err(|e| tagged(7, e))?;
        }
        if let Some(programs) = &self.seccomp {
            for program in programs {
                seccompiler::apply_filter(program).map_err(|_| tagged(8, io::Error::last_os_error()))?;
            }
        }
        Ok(())
    }
}
