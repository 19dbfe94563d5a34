//! The queries of the read connection, which runs beside the writer thanks to WAL.
//!
//! Each function runs on a blocking thread (see `Store::read`) and turns rows into records,
//! refusing with [`StoreError::Corrupt`] a row it cannot understand rather than guessing.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::records::{Category, EventQuery, EventRecord, InstanceRecord, MetricPoint, RestartRecord, ServerRecord};
use super::{StoreError, sqlite};

const SERVER_COLUMNS: &str = "id, name, spec, desired, created_ms, updated_ms, scan, code_dir";

/// A server row as SQLite gives it, before its JSON and enum columns are parsed.
struct RawServer {
    id: String,
    name: String,
    spec: String,
    desired: String,
    created_ms: i64,
    updated_ms: i64,
    scan: Option<String>,
    code_dir: String,
}

fn raw_server(row: &Row<'_>) -> rusqlite::Result<RawServer> {
    Ok(RawServer {
        id: row.get(0)?,
        name: row.get(1)?,
        spec: row.get(2)?,
        desired: row.get(3)?,
        created_ms: row.get(4)?,
        updated_ms: row.get(5)?,
        scan: row.get(6)?,
        code_dir: row.get(7)?,
    })
}

impl RawServer {
    fn parse(self) -> Result<ServerRecord, StoreError> {
        let corrupt =
            |what, detail: String| StoreError::Corrupt { table: "servers", row: self.id.clone(), what, detail };
        let spec = serde_json::from_str(&self.spec).map_err(|e| corrupt("spec", e.to_string()))?;
        let desired =
            self.desired.parse().map_err(|e: super::records::UnknownName| corrupt("desired", e.to_string()))?;
        let scan =
            self.scan.as_deref().map(serde_json::from_str).transpose().map_err(|e| corrupt("scan", e.to_string()))?;
        Ok(ServerRecord {
            spec,
            desired,
            scan,
            id: self.id,
            name: self.name,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            code_dir: self.code_dir,
        })
    }
}

pub(crate) fn servers(conn: &Connection) -> Result<Vec<ServerRecord>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY created_ms, id"))
        .map_err(sqlite("reading servers"))?;
    let raw = st
        .query_map([], raw_server)
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(sqlite("reading servers"))?;
    raw.into_iter().map(RawServer::parse).collect()
}

pub(crate) fn server(conn: &Connection, id: &str) -> Result<Option<ServerRecord>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {SERVER_COLUMNS} FROM servers WHERE id = ?1"))
        .map_err(sqlite("reading a server"))?;
    let raw = st.query_row([id], raw_server).optional().map_err(sqlite("reading a server"))?;
    raw.map(RawServer::parse).transpose()
}

/// Events matching the query, newest first.
pub(crate) fn events(conn: &Connection, q: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
    events_where(conn, q, None, "reading events")
}

/// Events matching the filters of `q` and, with `fts_match`, an FTS5 match over the search index,
/// newest first (by time, then id).
///
/// The statement is built per combination of filters (sixteen at most, each cached) rather than
/// with `?1 IS NULL OR ...` clauses, which would keep SQLite from using the indexes on server,
/// category and time; the text filter is a subquery on the index's rowids for the same reason.
pub(crate) fn events_where(
    conn: &Connection,
    q: &EventQuery,
    fts_match: Option<&str>,
    what: &'static str,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut filters = Vec::new();
    if fts_match.is_some() {
        filters.push("id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH :match)");
    }
    if q.server.is_some() {
        filters.push("server = :server");
    }
    if q.category.is_some() {
        filters.push("category = :category");
    }
    if q.since_ms.is_some() {
        filters.push("at_ms >= :since");
    }
    let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events {filter}
         ORDER BY at_ms DESC, id DESC LIMIT :limit"
    );
    let mut st = conn.prepare_cached(&sql).map_err(sqlite(what))?;
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let category = q.category.map(Category::as_str);
    let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":limit", &limit)];
    if let Some(matching) = &fts_match {
        named.push((":match", matching));
    }
    if let Some(server) = &q.server {
        named.push((":server", server));
    }
    if let Some(category) = &category {
        named.push((":category", category));
    }
    if let Some(since) = &q.since_ms {
        named.push((":since", since));
    }
    let raw = st
        .query_map(named.as_slice(), raw_event)
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(sqlite(what))?;
    raw.into_iter().map(RawEvent::parse).collect()
}

/// The columns [`raw_event`] reads, in its order.
const EVENT_COLUMNS: &str = "id, at_ms, category, server, kind, message, data";

/// An event row as SQLite gives it, before its category and data are parsed.
struct RawEvent {
    id: i64,
    at_ms: i64,
    category: String,
    server: Option<String>,
    kind: String,
    message: String,
    data: String,
}

/// Reads the columns of [`EVENT_COLUMNS`].
fn raw_event(row: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        id: row.get(0)?,
        at_ms: row.get(1)?,
        category: row.get(2)?,
        server: row.get(3)?,
        kind: row.get(4)?,
        message: row.get(5)?,
        data: row.get(6)?,
    })
}

impl RawEvent {
    pub(crate) fn parse(self) -> Result<EventRecord, StoreError> {
        let corrupt =
            |what, detail: String| StoreError::Corrupt { table: "events", row: self.id.to_string(), what, detail };
        Ok(EventRecord {
            id: self.id,
            at_ms: self.at_ms,
            category: self
                .category
                .parse()
                .map_err(|e: super::records::UnknownName| corrupt("category", e.to_string()))?,
            data: serde_json::from_str(&self.data).map_err(|e| corrupt("data", e.to_string()))?,
            server: self.server,
            kind: self.kind,
            message: self.message,
        })
    }
}

/// Raw samples and minute averages of one server since a time, oldest first. Minute rows are
/// dated at the start of their minute; raw samples are always newer than every minute row of
/// the same server, because only samples older than the compaction cutoff are folded.
pub(crate) fn metrics(conn: &Connection, server: &str, since_ms: i64) -> Result<Vec<MetricPoint>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT at_ms, cpu_percent, rss_bytes, processes FROM (
                 SELECT minute_ms AS at_ms, cpu_percent, rss_bytes, processes, 0 AS raw
                 FROM metrics_minute WHERE server = ?1 AND minute_ms >= ?2
                 UNION ALL
                 SELECT at_ms, cpu_percent, rss_bytes, processes, 1 AS raw
                 FROM metrics_raw WHERE server = ?1 AND at_ms >= ?2
             ) ORDER BY at_ms, raw",
        )
        .map_err(sqlite("reading metrics"))?;
    st.query_map(params![server, since_ms], |row| {
        Ok(MetricPoint {
            server: server.to_owned(),
            at_ms: row.get(0)?,
            cpu_percent: row.get(1)?,
            rss_bytes: row.get(2)?,
            processes: row.get(3)?,
        })
    })
    .and_then(Iterator::collect)
    .map_err(sqlite("reading metrics"))
}

/// Restarts since a time, of one server or all, oldest first.
pub(crate) fn restarts(
    conn: &Connection,
    server: Option<&str>,
    since_ms: i64,
) -> Result<Vec<RestartRecord>, StoreError> {
    let columns = "server, at_ms, generation, reason, exit_code, signal";
    let (sql, args): (String, Vec<&dyn rusqlite::ToSql>) = match &server {
        Some(server) => (
            format!("SELECT {columns} FROM restarts WHERE server = ?1 AND at_ms >= ?2 ORDER BY at_ms, id"),
            vec![server, &since_ms],
        ),
        None => (format!("SELECT {columns} FROM restarts WHERE at_ms >= ?1 ORDER BY at_ms, id"), vec![&since_ms]),
    };
    let mut st = conn.prepare_cached(&sql).map_err(sqlite("reading restarts"))?;
    st.query_map(args.as_slice(), |row| {
        Ok(RestartRecord {
            server: row.get(0)?,
            at_ms: row.get(1)?,
            generation: row.get(2)?,
            reason: row.get(3)?,
            exit_code: row.get(4)?,
            signal: row.get(5)?,
        })
    })
    .and_then(Iterator::collect)
    .map_err(sqlite("reading restarts"))
}

pub(crate) fn instances(conn: &Connection) -> Result<Vec<InstanceRecord>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT server, generation, pid, pgid, start_ticks, boot_id, recorded_ms FROM instances ORDER BY server",
        )
        .map_err(sqlite("reading instances"))?;
    st.query_map([], |row| {
        Ok(InstanceRecord {
            server: row.get(0)?,
            generation: row.get(1)?,
            pid: row.get(2)?,
            pgid: row.get(3)?,
            start_ticks: row.get(4)?,
            boot_id: row.get(5)?,
            recorded_ms: row.get(6)?,
        })
    })
    .and_then(Iterator::collect)
    .map_err(sqlite("reading instances"))
}

/// `PRAGMA integrity_check`: `["ok"]` for a sound database, else what SQLite found wrong.
pub(crate) fn integrity_check(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut st = conn.prepare("PRAGMA integrity_check").map_err(sqlite("checking integrity"))?;
    st.query_map([], |row| row.get(0)).and_then(Iterator::collect).map_err(sqlite("checking integrity"))
}
