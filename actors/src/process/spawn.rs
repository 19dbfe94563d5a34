//! Building and starting the command of one incarnation.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use super::table::ProcTable;
use super::tree::Tree;
use super::{Incarnation, SpawnError, reaper};
use crate::logs::{Stream, log_pipe};
use crate::sandbox::{self, CgroupLimits, CgroupRoot, HostCaps, tagged};
use crate::spec::ServerSpec;

/// Where programs are looked up when the server's environment names no PATH.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Default open-files limit of a hosted process.
const DEFAULT_NOFILE: u64 = 4096;

/// What the launcher knows of the host's isolation.
pub(super) struct SandboxHost<'a> {
    pub(super) caps: &'a HostCaps,
    pub(super) cgroups: Option<&'a CgroupRoot>,
}

pub(super) fn launch(
    spec: &ServerSpec,
    generation: u64,
    table: &Arc<ProcTable>,
    host: SandboxHost<'_>,
) -> Result<Incarnation, SpawnError> {
    let program = resolve_program(spec)?;
    if !spec.working_dir.is_dir() {
        return Err(SpawnError::NoWorkingDir(spec.working_dir.display().to_string()));
    }
    let plan = sandbox::plan(&spec.sandbox, host.caps)?;
    let cgroup_limits = CgroupLimits {
        memory_bytes: spec.limits.memory_mb.map(|mb| mb.saturating_mul(1 << 20)),
        cpu_percent: spec.limits.cpu_percent,
        pids: spec.limits.max_processes,
    };
    let name = format!("{}.{generation}", spec.id);
    let prepared =
        sandbox::prepare(&spec.sandbox, &plan, host.caps, host.cgroups, &name, cgroup_limits, &spec.working_dir)
            .map_err(|source| SpawnError::Sandbox(source.to_string()))?;
    #[allow(clippy::disallowed_methods, reason = "this module is the one door for processes")]
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg0(&spec.command[0])
        .args(&spec.command[1..])
        .current_dir(&spec.working_dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .envs(prepared.tmpdir_env.iter().map(|dir| ("TMPDIR", dir)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut limits = PreExecLimits::new(spec);
    if prepared.nproc_backstop {
        limits.nproc = spec.limits.max_processes.map(u64::from);
    }
    let cgroup = prepared.cgroup.clone();
    let report = prepared.report.clone();
    let prepared = Arc::new(prepared);
    let in_child = prepared.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls on values computed before the fork (no allocation, no locks). The order
    // matters: the session first; cgroups before anything can fork; namespaces and mounts while
    // still root; the uid drop before the parent-death signal (a uid change clears it); Landlock,
    // then seccomp last, since it forbids the calls made before it.
    unsafe {
        cmd.pre_exec(move || {
            limits.session().map_err(|e| tagged(20, e))?;
            in_child.enter()?;
            limits.rlimits().map_err(|e| tagged(21, e))?;
            in_child.drop_identity()?;
            limits.parent_link().map_err(|e| tagged(22, e))?;
            in_child.restrict()
        });
    }
    let mut child = {
        // Hold the registry from fork until the pid is registered, so the reaper never takes it.
        let mut owned = reaper::spawned();
        let child = cmd.spawn().map_err(|source| {
            if spec.sandbox.confine || cgroup.is_some() {
                SpawnError::Sandbox(format!(
                    "starting `{}` in its sandbox: {}",
                    spec.command[0],
                    sandbox::describe_setup_error(&source)
                ))
            } else {
                SpawnError::Io { program: spec.command[0].clone(), source }
            }
        })?;
        if let Some(pid) = child.id() {
            owned.insert(pid);
        }
        child
    };
    let pid = child.id();
    tracing::debug!(server = %spec.id, generation, pid, program = %program.display(), "spawned");
    drop(prepared);
    let tree = Arc::new(Tree::new(pid.unwrap_or(0), table.clone(), cgroup.clone()));
    let stdin = child.stdin.take().map(|p| Box::new(p) as super::InPipe);
    if let Some(err) = child.stderr.as_ref() {
        grow_pipe(err);
    }
    // Log pipes move to the drain thread's reactor; stdout of a stdio server carries MCP and stays.
    let io_error = |source| SpawnError::Io { program: spec.command[0].clone(), source };
    let stdout_is_log = spec.transport.stdout_is_log();
    let stdout = match child.stdout.take() {
        Some(out) if stdout_is_log => {
            grow_pipe(&out);
            Some(out.into_owned_fd().and_then(log_pipe).map_err(io_error)?)
        }
        Some(out) => Some(Box::new(out) as super::Pipe),
        None => None,
    };
    let stderr = match child.stderr.take() {
        Some(err) => Some(err.into_owned_fd().and_then(log_pipe).map_err(io_error)?),
        None => None,
    };
    let mut log_pipes = Vec::new();
    if let Some(stderr) = stderr {
        log_pipes.push((Stream::Stderr, stderr));
    }
    let stdout = match (stdout_is_log, stdout) {
        (true, Some(out)) => {
            log_pipes.push((Stream::Stdout, out));
            None
        }
        (_, out) => out,
    };
    let waiter_tree = tree.clone();
    let exit = Box::pin(async move {
        let status = child.wait().await;
        if let Some(pid) = pid {
            waiter_tree.mark_root_reaped();
            reaper::spawned().remove(&pid);
        }
        match status {
            // A SIGKILL with an OOM kill counted in its memory cgroup is the kernel enforcing memory_mb.
            Ok(status)
                if cgroup.as_ref().is_some_and(|cg| cg.oom_kills() > 0)
                    && exit_kind(status) == policy::ExitKind::Signal(libc::SIGKILL) =>
            {
                policy::ExitKind::MemoryLimit
            }
            Ok(status) => exit_kind(status),
            Err(err) => {
                tracing::error!(error = %err, "waiting for the child failed");
                policy::ExitKind::Crashed
            }
        }
    });
    Ok(Incarnation { pid, exit, stdin, stdout, log_pipes, control: tree, sandbox: report })
}

pub(super) fn exit_kind(status: std::process::ExitStatus) -> policy::ExitKind {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => policy::ExitKind::Code(code),
        (None, Some(sig)) => policy::ExitKind::Signal(sig),
        (None, None) => policy::ExitKind::Crashed,
    }
}

/// Finds the program: a path (relative to the working directory) or a name on the server's PATH.
fn resolve_program(spec: &ServerSpec) -> Result<PathBuf, SpawnError> {
    let Some(program) = spec.command.first() else {
        return Err(SpawnError::EmptyCommand);
    };
    if program.contains('/') {
        let path = spec.working_dir.join(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(SpawnError::NotFound { program: program.clone(), searched: spec.working_dir.display().to_string() })
        };
    }
    let search = spec.env.iter().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let dir = Path::new(dir);
        let dir = if dir.is_absolute() { dir.to_path_buf() } else { spec.working_dir.join(dir) };
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotFound { program: program.clone(), searched: search.to_owned() })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the child applies to itself between fork and exec besides its sandbox, computed before
/// the fork.
#[derive(Clone, Copy)]
pub(super) struct PreExecLimits {
    parent: libc::pid_t,
    nofile: u64,
    nproc: Option<u64>,
}

fn check(res: libc::c_int) -> std::io::Result<()> {
    if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

impl PreExecLimits {
    fn new(spec: &ServerSpec) -> PreExecLimits {
        // RLIMIT_NPROC counts every process of the uid system-wide and is ignored for root: it only
        // means something for a server running under a uid of its own (set by the sandbox).
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        let nproc = if is_root { None } else { spec.limits.max_processes.map(u64::from) };
        PreExecLimits {
            parent: std::process::id() as libc::pid_t,
            nofile: spec.limits.max_open_files.unwrap_or(DEFAULT_NOFILE),
            nproc,
        }
    }

    /// What a one-off job (a dependency install) runs with: the default open-files limit, no
    /// process cap.
    pub(super) fn for_job() -> PreExecLimits {
        PreExecLimits { parent: std::process::id() as libc::pid_t, nofile: DEFAULT_NOFILE, nproc: None }
    }

    /// Runs in the child: everything, for a child without a sandbox.
    pub(super) fn apply(&self) -> std::io::Result<()> {
        self.session()?;
        self.rlimits()?;
        self.parent_link()
    }

    /// Own session and process group, no controlling terminal. Async-signal-safe.
    pub(super) fn session(&self) -> std::io::Result<()> {
        // SAFETY: setsid takes no arguments.
        check(unsafe { libc::setsid() })
    }

    /// No core dumps (they would leak memory contents to disk), open files, processes.
    /// Async-signal-safe.
    pub(super) fn rlimits(&self) -> std::io::Result<()> {
        rlimit::setrlimit(rlimit::Resource::CORE, 0, 0)?;
        let (_, nofile_hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        let nofile = self.nofile.min(nofile_hard);
        rlimit::setrlimit(rlimit::Resource::NOFILE, nofile, nofile)?;
        if let Some(nproc) = self.nproc {
            rlimit::setrlimit(rlimit::Resource::NPROC, nproc, nproc)?;
        }
        Ok(())
    }

    /// Dies with hivehost (set after any uid change, which clears it), keeps its orphans, gains no
    /// privileges by exec. Async-signal-safe.
    pub(super) fn parent_link(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on integers; no memory of the parent is touched.
        unsafe {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
            // If hivehost already died between fork and here, give up now.
            if libc::getppid() != self.parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Orphans inside the tree stay linked to the server while it lives.
            check(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0))?;
        }
        Ok(())
    }
}

/// Pipe capacity asked for a server's log pipe: a flooding child then rarely waits for the drain.
const LOG_PIPE_BYTES: libc::c_int = 1 << 20;

/// Enlarges a log pipe, as root only: for other users large pipes count against
/// `fs.pipe-user-pages-soft`, past which every new pipe of theirs shrinks to a page.
fn grow_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: geteuid has no preconditions; fcntl(F_SETPIPE_SZ) on a pipe we own touches no memory.
    unsafe {
        if libc::geteuid() == 0 {
            libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, LOG_PIPE_BYTES);
        }
    }
}
