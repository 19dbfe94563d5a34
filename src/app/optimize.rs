//! Resource recommendations and event search for the frontends: the stored history of every
//! server goes through `insights` (pure), and each recommendation comes back as an optimization
//! event, so the history says what was advised and when.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use anyhow::Context;
use policy::ExitKind;
use serde::Deserialize;

use super::App;
use crate::insights::{self, Exit, Limits, Params, Recommendation, Sample, ServerHistory, Settings};
use crate::store::{
    Category, EventQuery, EventRecord, EventSearch, MetricPoint, NewEvent, RestartRecord, ServerRecord, Store,
    StoreError,
};

/// The most events read per server for one analysis (newest first). A day of a healthy server is
/// a handful; a crash-looping one gives up after a few restarts; past this, the oldest in the
/// window are left out.
const EVENTS_PER_SERVER: usize = 10_000;

/// The kind of the optimization events that record recommendations.
pub const RECOMMENDATION_EVENT: &str = "recommendation";

impl App {
    /// Recommendations for every stored server from its last day of metrics, exits and health
    /// failures (see [`crate::insights`]), each also recorded as an `optimization` event (kind
    /// `recommendation`, the summary as its message, the whole recommendation as its data).
    pub async fn optimize_resources(&self) -> anyhow::Result<Vec<Recommendation>> {
        let now = crate::store::now_ms();
        let idle_after = i64::try_from(self.config.idle_after.as_millis()).unwrap_or(i64::MAX);
        let params = Params { idle_after_ms: Some(idle_after), ..Params::day_until(now) };
        let mut calls = Calls::new();
        for status in self.supervisor().list().await.context("asking the supervisor")? {
            // Only a server reachable over MCP now can be judged idle: calls are counted from the
            // start of its incarnation (or of this hivehost), not across restarts of hivehost.
            if status.mcp_session.is_some() {
                let since = status.started_at.map(crate::store::millis);
                calls.insert(status.id, (status.gateway.last_call_ms, since));
            }
        }
        optimize(&self.store, &self.config.resource_limits, &params, &calls).await
    }

    /// Events matching words and filters, newest first; see [`Store::search_events`].
    pub async fn search_events(&self, q: EventSearch) -> Result<Vec<EventRecord>, StoreError> {
        self.store.search_events(q).await
    }
}

/// Per server reachable over MCP now: its last gateway call and since when calls are counted.
pub(crate) type Calls = HashMap<String, (Option<i64>, Option<i64>)>;

/// Loads every server's history within `params`' window, runs the rules, and records each
/// recommendation not yet given in that window (the same server, kind and change) as an
/// optimization event dated `params.now_ms`; returns them all once committed. Asking again does
/// not fill the history with the same advice.
pub(crate) async fn optimize(
    store: &Store,
    host: &config::HostLimits,
    params: &Params,
    calls: &Calls,
) -> anyhow::Result<Vec<Recommendation>> {
    let since = params.now_ms.saturating_sub(params.window_ms);
    let servers = store.servers().await.context("reading the servers")?;
    let mut restarts: HashMap<String, Vec<RestartRecord>> = HashMap::new();
    for r in store.restarts(None, since).await.context("reading restarts")? {
        restarts.entry(r.server.clone()).or_default().push(r);
    }
    let mut histories = Vec::with_capacity(servers.len());
    let mut given: Vec<(String, insights::Kind, serde_json::Value)> = Vec::new();
    for record in &servers {
        let metrics =
            store.metrics(&record.id, since).await.with_context(|| format!("reading {}'s metrics", record.id))?;
        let query = EventQuery {
            server: Some(record.id.clone()),
            category: None,
            since_ms: Some(since),
            limit: EVENTS_PER_SERVER,
        };
        let events = store.events(query).await.with_context(|| format!("reading {}'s events", record.id))?;
        given.extend(advised(&events).map(|(kind, change)| (record.id.clone(), kind, change)));
        let restarts = restarts.remove(&record.id).unwrap_or_default();
        let mut history = history(record, host, &metrics, &events, &restarts);
        if let Some(&(last, since)) = calls.get(&record.id) {
            history.last_call_ms = last;
            history.calls_counted_since_ms = since;
        }
        histories.push(history);
    }
    let recommendations = insights::recommend_all(params, &histories);
    let new = recommendations.iter().filter(|rec| {
        !given.iter().any(|(server, kind, change)| *server == rec.server && *kind == rec.kind && *change == rec.change)
    });
    for rec in new {
        let data = serde_json::to_value(rec).context("encoding a recommendation")?;
        store.append_event(NewEvent {
            at_ms: params.now_ms,
            category: Category::Optimization,
            server: Some(rec.server.clone()),
            kind: RECOMMENDATION_EVENT.to_owned(),
            message: rec.summary.clone(),
            data,
        });
    }
    // One commit for all of them.
    store.flush().await.context("recording the recommendations")?;
    Ok(recommendations)
}

/// The advice already recorded among `events`: each recommendation event's kind and change.
pub(crate) fn advised(events: &[EventRecord]) -> impl Iterator<Item = (insights::Kind, serde_json::Value)> + '_ {
    events
        .iter()
        .filter(|e| e.category == Category::Optimization && e.kind == RECOMMENDATION_EVENT)
        .filter_map(|e| Some((insights::Kind::deserialize(e.data.get("kind")?).ok()?, e.data.get("change")?.clone())))
}

/// What `insights` needs to know about one server, from its stored records.
///
/// Limits are the server's requests clamped to the host's ceilings, or the ceilings when it asks
/// for none (as `config::admit` gives them). Exits come from the `exited` events; only when there
/// are none (events dropped under load, or a database from before they were recorded) from the
/// restart records, which lack the exits that ended in a give-up. Health failures are the
/// `state_changed` events into `unhealthy`. Tool calls are live counts, not stored: the caller adds
/// them ([`Calls`]).
pub(crate) fn history(
    record: &ServerRecord,
    host: &config::HostLimits,
    metrics: &[MetricPoint],
    events: &[EventRecord],
    restarts: &[RestartRecord],
) -> ServerHistory {
    let parsed = config::parse_server_config_value(&record.spec).ok().map(|p| p.value);
    let requested = parsed.as_ref().map(|c| c.resource_limits).unwrap_or_default();
    let limits = Limits {
        memory_mb: Some(requested.memory_mb.map_or(host.memory_mb, |mb| mb.min(host.memory_mb))),
        cpu_percent: Some(requested.cpu_percent.map_or(host.cpu_percent, |p| p.min(host.cpu_percent))),
        host_memory_mb: Some(host.memory_mb),
        host_cpu_percent: Some(host.cpu_percent),
    };
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let settings = parsed.as_ref().map_or_else(Settings::default, |c| Settings {
        health_interval_ms: c.health.as_ref().map(|h| ms(h.interval)),
        health_timeout_ms: c.health.as_ref().map(|h| ms(h.timeout)),
        failures_before_restart: c.health.as_ref().map(|h| h.failures_before_restart),
        start_timeout_ms: Some(ms(c.restart.start_timeout)),
    });
    let samples =
        metrics.iter().map(|m| Sample { at_ms: m.at_ms, cpu_percent: m.cpu_percent, rss_bytes: m.rss_bytes }).collect();
    let mut exits: Vec<Exit> = events
        .iter()
        .filter(|e| e.kind == "exited")
        .filter_map(|e| Some(Exit { at_ms: e.at_ms, kind: exit_kind(e.data.get("exit")?.as_str()?)? }))
        .collect();
    if exits.is_empty() {
        exits = restarts.iter().filter_map(|r| Some(Exit { at_ms: r.at_ms, kind: restart_cause(r)? })).collect();
    }
    let health_failures = events
        .iter()
        .filter(|e| e.kind == "state_changed" && e.data.get("to").and_then(|t| t.as_str()) == Some("unhealthy"))
        .map(|e| e.at_ms)
        .collect();
    ServerHistory {
        server: record.id.clone(),
        limits,
        settings,
        samples,
        exits,
        health_failures,
        last_call_ms: None,
        calls_counted_since_ms: None,
    }
}

/// An exit kind as the recorder stores it in an `exited` event's `exit` (its `Debug` form:
/// `Code(1)`, `Signal(9)`, `MemoryLimit`, ...).
pub(crate) fn exit_kind(text: &str) -> Option<ExitKind> {
    let number = |prefix: &str| text.strip_prefix(prefix)?.strip_suffix(')')?.parse::<i32>().ok();
    match text {
        "HealthCheck" => Some(ExitKind::HealthCheck),
        "MemoryLimit" => Some(ExitKind::MemoryLimit),
        "StartTimeout" => Some(ExitKind::StartTimeout),
        "SpawnFailed" => Some(ExitKind::SpawnFailed),
        "Crashed" => Some(ExitKind::Crashed),
        _ => number("Code(").map(ExitKind::Code).or_else(|| number("Signal(").map(ExitKind::Signal)),
    }
}

/// The exit that led to a restart: its code or signal, else the kind whose description is its reason.
fn restart_cause(r: &RestartRecord) -> Option<ExitKind> {
    if let Some(code) = r.exit_code {
        return Some(ExitKind::Code(code));
    }
    if let Some(signal) = r.signal {
        return Some(ExitKind::Signal(signal));
    }
    [ExitKind::MemoryLimit, ExitKind::HealthCheck, ExitKind::StartTimeout, ExitKind::SpawnFailed, ExitKind::Crashed]
        .into_iter()
        .find(|kind| actors::describe(*kind) == r.reason)
}
