//! The command-line client of a running `hivehost serve`: `deploy`, `ls`, `status`, `logs`,
//! `start`, `stop`, `restart`, `rm`, over the HTTP API with the API token.
//!
//! A plain HTTP/1.1 exchange over a TCP connection to `dashboard.host:port` is all it needs: one
//! request, `Connection: close`, a JSON answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a request may take: a deploy installs dependencies.
const TIMEOUT: Duration = Duration::from_secs(900);

/// Where and how to reach the API.
pub struct Client {
    addr: String,
    token: Option<String>,
}

impl Client {
    /// The API of the `serve` that `config` describes, with its token. `HIVEHOST_ADDR`
    /// (`host:port`), when set, names the address instead (a serve on port 0 announces its own).
    pub fn from_config(config: &config::HostConfig) -> anyhow::Result<Client> {
        let token = match &config.auth.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(&config.auth.token_file)
                .with_context(|| {
                    format!(
                        "reading the API token from {} (is hivehost serve running here?)",
                        config.auth.token_file.display()
                    )
                })?
                .trim()
                .to_owned(),
        };
        let host = if config.dashboard.host.contains(':') {
            format!("[{}]", config.dashboard.host)
        } else {
            config.dashboard.host.clone()
        };
        let addr = std::env::var("HIVEHOST_ADDR").unwrap_or_else(|_| format!("{host}:{}", config.dashboard.port));
        Ok(Client::new(addr, Some(token)))
    }

    /// A client of the API at `addr` (`host:port`), sending `token` when given.
    pub fn new(addr: String, token: Option<String>) -> Client {
        Client { addr, token }
    }

    /// Sends one request; returns the JSON answer, or an error carrying the API's message.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<serde_json::Value> {
        let (status, value) = self.send(method, path, body)?;
        if !(200..300).contains(&status) {
            let message = value["error"]["message"].as_str().map_or_else(|| value.to_string(), str::to_owned);
            bail!("{message} (HTTP {status})");
        }
        Ok(value)
    }

    /// Sends one request; returns the HTTP status and the answer as JSON (`Null` if it is not JSON).
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut stream = TcpStream::connect(&self.addr)
            .with_context(|| format!("connecting to hivehost at {} (is hivehost serve running?)", self.addr))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("a malformed answer from hivehost")?;
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        // axum answers JSON with a length, never chunked.
        Ok((status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null)))
    }
}

/// Query-string escaping of one value.
pub fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
