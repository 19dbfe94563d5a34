//! Helpers shared by the end-to-end tests and the benchmarks (included with `#[path]`): a data
//! directory with ticking servers for `hivehost serve`, /proc checks for the processes a run
//! created, and a plain-TCP `/healthz` probe.

#![allow(dead_code, reason = "each includer uses the part it needs")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that marks every process a run created, so /proc checks find them.
pub(crate) const MARK: &str = "HIVEHOST_MARK";

/// A child that prints a line a second on stderr: an idle hosted server.
pub(crate) const TICKER: &str = "while :; do echo tick >&2; sleep 1; done";

/// Writes a config whose data lives in `dir`, with the HTTP side on 127.0.0.1:0.
pub(crate) fn write_config(dir: &Path, max_servers: usize, metrics_interval_s: u64) -> std::io::Result<PathBuf> {
    let config = serde_json::json!({
        "mcp_hosting": {
            "servers_dir": dir.join("servers"),
            "uploads_dir": dir.join("uploads"),
            "logs_dir": dir.join("logs"),
            "state_dir": dir.join("state"),
            "database": dir.join("hivehost.db"),
            "max_servers": max_servers,
            "metrics_interval": metrics_interval_s,
            "dashboard": { "host": "127.0.0.1", "port": 0 },
            "auth": { "token_file": dir.join("api_token") },
            "supervisor": { "shutdown_timeout": 30 }
        }
    });
    std::fs::create_dir_all(dir.join("servers"))?;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}

/// Writes a server directory `id` running [`TICKER`] at boot, its processes marked with `marker`.
pub(crate) fn write_server(dir: &Path, id: &str, marker: &str) -> std::io::Result<()> {
    let server = dir.join("servers").join(id);
    std::fs::create_dir_all(&server)?;
    let cfg = serde_json::json!({
        "name": id,
        "command": ["bash", "-c", TICKER],
        "transport": "none",
        "environment": { MARK: marker },
        "autostart": true,
        "shutdown_timeout": 5
    });
    std::fs::write(server.join("server_config.json"), serde_json::to_vec(&cfg)?)
}

/// Pids of live (not zombie) processes whose environment has [`MARK`] set to `marker`.
pub(crate) fn marked(marker: &str) -> Vec<u32> {
    let assignment = format!("{MARK}={marker}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.rfind(')').is_some_and(|at| s[at + 1..].trim_start().starts_with(['Z', 'X'])));
        if !zombie && environ.split(|b| *b == 0).any(|var| var == assignment.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// GET /healthz over plain TCP; `None` until it answers with JSON.
pub(crate) fn healthz(addr: &str) -> Option<serde_json::Value> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    serde_json::from_str(body.split("\r\n\r\n").nth(1)?).ok()
}

/// One request to the API at `addr`, through the command-line client's own code: the status and
/// the body as JSON.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, serde_json::Value)> {
    hivehost::client::Client::new(addr.to_owned(), token.map(str::to_owned)).send(method, path, body)
}

/// A `hivehost serve` the test started: stopped (SIGTERM, then SIGKILL after 30 s) when dropped,
/// so a failing test leaves no platform and no hosted process behind.
pub(crate) struct Serve(pub(crate) std::process::Child);

impl std::ops::Deref for Serve {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Serve {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Serve {
    /// Sends SIGTERM and waits up to 30 s for the exit: `Some(exit code)`, or `None` if it did not
    /// exit in time (or died by a signal); the drop guard then kills it.
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return None;
        }
        // SAFETY: kill(2) on the pid of the child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.terminate().is_none() && matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `hivehost serve --config CONFIG` in `dir` to its end and returns what it printed: for
/// configurations it must refuse.
pub(crate) fn serve_once(dir: &Path, config: &Path) -> std::process::Output {
    #[allow(clippy::disallowed_methods, reason = "the test runs the binary under test")]
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hivehost"));
    cmd.args(["serve", "--config"]).arg(config).current_dir(dir).env("NO_COLOR", "1").output().expect("hivehost runs")
}

/// Starts `hivehost serve --config CONFIG` in `dir`; returns it and the address it logged.
pub(crate) fn start_serve(dir: &Path, config: &Path) -> (Serve, String) {
    spawn_serve(dir, config, &[("HIVEHOST_LOG", "info,rmcp=warn")], Duration::from_secs(60), |_| {})
        .expect("serve logs its address")
}

/// Starts `hivehost serve --config CONFIG` in `dir` with `env` added, hands every line it logs to
/// `on_line`, and returns it with the address it logged; `Err` if it logged none within
/// `patience` (the guard then stops it).
pub(crate) fn spawn_serve(
    dir: &Path,
    config: &Path,
    env: &[(&str, &str)],
    patience: Duration,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Result<(Serve, String), String> {
    use std::io::BufRead;
    use std::process::Stdio;
    #[allow(clippy::disallowed_methods, reason = "tests and benches start the binary under test")]
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hivehost"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|err| format!("starting hivehost: {err}"))?;
    let stderr = child.stderr.take().ok_or("hivehost's stderr is not piped")?;
    let serve = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            on_line(&line);
            if let Some(at) = line.find("listening on http://") {
                let addr = line[at + "listening on http://".len()..].split_whitespace().next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(patience) {
        Ok(addr) => Ok((serve, addr)),
        Err(_) => Err(format!("hivehost never logged its address within {patience:?}")),
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub(crate) fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of `pid` (a number or `self`), in clock ticks, from /proc/PID/stat.
pub(crate) fn cpu_ticks(pid: impl std::fmt::Display) -> anyhow::Result<u64> {
    use anyhow::Context;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = stat.rfind(')').map(|at| &stat[at + 1..]).context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second, for [`cpu_ticks`].
pub(crate) fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}
