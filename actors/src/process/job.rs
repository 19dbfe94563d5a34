//! One-off jobs that are not hosted servers: a package's dependency install (`pip`, `npm`).
//!
//! A job runs like a server (no shell, cleared environment, and the same pre-exec steps: own
//! session, parent-death signal, no_new_privs, no core dumps) but is not supervised: it runs once,
//! its output lines go to the caller as they come, and it is killed, with its whole process group,
//! at its deadline or when the caller drops it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{SpawnError, reaper};

/// The longest output line passed on; longer lines are cut.
const MAX_LINE: usize = 4096;

/// What to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// An absolute path: jobs never search a `PATH`.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub working_dir: PathBuf,
    /// The whole environment of the job.
    pub env: Vec<(String, String)>,
    /// After this the job's process group is killed.
    pub timeout: Duration,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// It exited (or was killed by a signal) on its own.
    Exited(policy::ExitKind),
    /// It was killed at its deadline.
    TimedOut,
}

/// Runs `job` to its end, passing each line of its stdout and stderr to `on_line`.
pub async fn run_job(job: &Job, mut on_line: impl FnMut(&str) + Send) -> Result<JobEnd, SpawnError> {
    let name = job.program.display().to_string();
    if !job.program.is_absolute() {
        return Err(SpawnError::NotFound {
            program: name,
            searched: "nothing: a job's program must be absolute".into(),
        });
    }
    if !job.working_dir.is_dir() {
        return Err(SpawnError::NoWorkingDir(job.working_dir.display().to_string()));
    }
    #[allow(clippy::disallowed_methods, reason = "this module is the one door for processes")]
    let mut cmd = tokio::process::Command::new(&job.program);
    cmd.args(&job.args)
        .current_dir(&job.working_dir)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The same pre-exec steps as a server: own session, parent-death signal, no_new_privs, no cores.
    let limits = super::spawn::PreExecLimits::for_job();
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // system calls on a value computed before the fork.
    unsafe {
        cmd.pre_exec(move || limits.apply());
    }
    let mut child = {
        let mut owned = reaper::spawned();
        let child = cmd.spawn().map_err(|source| SpawnError::Io { program: name.clone(), source })?;
        if let Some(pid) = child.id() {
            owned.insert(pid);
        }
        child
    };
    let pid = child.id();
    // Kills the whole group on every way out, the caller dropping this future included.
    let _group = GroupGuard(pid);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(lines(out, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(lines(err, tx.clone())));
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + job.timeout;
    let mut status = None;
    let mut output_done = false;
    let end = loop {
        tokio::select! {
            line = rx.recv(), if !output_done => match line {
                Some(line) => on_line(&line),
                None => output_done = true,
            },
            result = child.wait(), if status.is_none() => {
                status = Some(result.map_err(|source| SpawnError::Io { program: name.clone(), source })?);
            },
            () = tokio::time::sleep_until(deadline) => break JobEnd::TimedOut,
        }
        if let (Some(status), true) = (status, output_done) {
            break JobEnd::Exited(super::spawn::exit_kind(status));
        }
    };
    for reader in readers {
        reader.abort();
    }
    if end == JobEnd::TimedOut {
        if let Some(pid) = pid {
            super::tree::signal_group(pid, libc::SIGKILL);
        }
        let _ = child.wait().await;
    }
    if let Some(pid) = pid {
        reaper::spawned().remove(&pid);
    }
    Ok(end)
}

/// Reads `pipe` and sends each line (cut at `MAX_LINE`, lossily decoded) to `tx`.
async fn lines(mut pipe: impl AsyncRead + Unpin, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' {
                let _ = tx.send(String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned());
                line.clear();
                cut = false;
            } else if line.len() < MAX_LINE {
                line.push(byte);
            } else if !cut {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    }
}

/// Kills what is left of the job's process group when dropped.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            super::tree::signal_group(pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests;
