//! Helpers shared by the end-to-end tests and the benchmarks (included with `#[path]`): /proc
//! checks for the processes a run created, and a plain-TCP `/healthz` probe.

#![allow(dead_code, reason = "each includer uses the part it needs")]

use std::io::{Read, Write};
use std::time::Duration;

/// Pids of live (not zombie) processes whose environment holds exactly `assignment` (`NAME=value`).
pub(crate) fn marked(assignment: &str) -> Vec<u32> {
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
