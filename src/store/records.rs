//! The records the store keeps: servers, events, metric points, restarts, live instances.
//!
//! These are plain serde types: the frontends return them as JSON as they are, and nothing here
//! knows SQLite. Times are milliseconds since the Unix epoch, as `i64` (SQLite's integer).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A deployed server as the store keeps it: what to run and whether it should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub id: String,
    pub name: String,
    /// The merged `server_config.json` (the archive's file with the upload's overrides applied).
    pub spec: serde_json::Value,
    pub desired: Desired,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The scanner's report, once the package was scanned.
    pub scan: Option<serde_json::Value>,
    /// Where the server's code lives (`servers_dir/{id}`).
    pub code_dir: String,
}

/// Whether a server should be running: what recovery brings back after a restart of hivehost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

impl Desired {
    /// The text stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Desired {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Desired::Running),
            "stopped" => Ok(Desired::Stopped),
            other => Err(UnknownName { what: "desired state", found: other.to_owned(), expected: "running, stopped" }),
        }
    }
}

/// What an event is about: the seed's four kinds of "memories".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Infrastructure,
    Monitoring,
    Incidents,
    Optimization,
}

impl Category {
    /// Every category, in a stable order (for filters and dashboards).
    pub const ALL: [Category; 4] =
        [Category::Infrastructure, Category::Monitoring, Category::Incidents, Category::Optimization];

    /// The lowercase text stored in the database and accepted by `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Infrastructure => "infrastructure",
            Category::Monitoring => "monitoring",
            Category::Incidents => "incidents",
            Category::Optimization => "optimization",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownName {
            what: "event category",
            found: s.to_owned(),
            expected: "infrastructure, monitoring, incidents, optimization",
        })
    }
}

/// A name that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{found}`: expected one of {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub found: String,
    pub expected: &'static str,
}

/// An event to append: a lifecycle fact, an incident, a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at_ms: i64,
    pub category: Category,
    /// The server it is about; `None` for host-wide events.
    pub server: Option<String>,
    /// A short machine-readable name (`state_changed`, `exited`, `deployed`, ...).
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event dated now.
    pub fn now(
        category: Category,
        server: Option<&str>,
        kind: &str,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            at_ms: crate::store::now_ms(),
            category,
            server: server.map(str::to_owned),
            kind: kind.to_owned(),
            message: message.into(),
            data,
        }
    }
}

/// An event as stored, with its row id (ids only grow: never reused, even after deletions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub at_ms: i64,
    pub category: Category,
    pub server: Option<String>,
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
}

/// Which events to read: every filter that is `Some` must match; newest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    pub server: Option<String>,
    pub category: Option<Category>,
    /// Only events at or after this time.
    pub since_ms: Option<i64>,
    pub limit: usize,
}

impl EventQuery {
    /// The newest `limit` events of every server and category.
    pub fn latest(limit: usize) -> EventQuery {
        EventQuery { server: None, category: None, since_ms: None, limit }
    }
}

/// A search of the event history: words to find (in an event's kind, message or server), plus the
/// filters of [`EventQuery`]. Every part that is `Some` must match; newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventSearch {
    /// Words that must all occur, as a person types them (`oom kill`, `restart*`); never FTS5
    /// syntax: each word is matched literally, and a trailing `*` makes it a prefix. `None` or
    /// blank means no text filter.
    pub query: Option<String>,
    pub category: Option<Category>,
    /// Only events about this server (its exact id).
    pub server: Option<String>,
    /// Only events at or after this time.
    pub since_ms: Option<i64>,
    /// At most this many events, clamped to `1..=SEARCH_LIMIT_MAX`.
    pub limit: usize,
}

/// One metrics sample of a server's whole process tree (or, read back from history, the average of
/// a minute's samples, dated at the start of that minute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub server: String,
    pub at_ms: i64,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub processes: u32,
}

/// What `Store::compact` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReport {
    /// Raw samples older than an hour, now folded into minute averages and deleted.
    pub raw_compacted: u64,
    /// Minute rows written (or merged into) from those samples.
    pub minutes_written: u64,
    /// Minute rows older than a week, deleted.
    pub minutes_dropped: u64,
}

/// One restart of a server, as the supervisor decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    pub server: String,
    pub at_ms: i64,
    /// The generation of the incarnation that starts.
    pub generation: u64,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// The live incarnation of a server, recorded so that a hivehost that died can be followed by one
/// that finds and kills what it left (a pid alone could have been reused; pid, start time and boot
/// id together cannot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub server: String,
    pub generation: u64,
    pub pid: u32,
    pub pgid: u32,
    /// Field 22 of `/proc/PID/stat`: the process's start time in clock ticks since boot.
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was recorded.
    pub boot_id: String,
    pub recorded_ms: i64,
}

/// What the store holds and how its writer is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Size of the database file.
    pub db_bytes: u64,
    /// Size of its write-ahead log (`-wal`), which checkpoints fold back into the database.
    pub wal_bytes: u64,
    /// Operations waiting for the writer.
    pub queued: usize,
    /// Non-blocking appends (events, metrics, restarts) dropped because the queue was full. Should stay 0.
    pub dropped: u64,
    /// Non-blocking appends refused because the store was already closed.
    pub dropped_after_close: u64,
    /// Non-blocking appends that reached the writer but could not be written (logged with the reason).
    pub failed: u64,
}
