//! The janitor (`auto_cleanup` every `cleanup_interval`) and the metrics recorder.
//!
//! The janitor removes what no one owns: staging directories of deploys that never finished, stale
//! files in `uploads_dir`, log directories of servers that no longer exist, and metrics past their
//! retention (the store's compaction). It never deletes a deployed server's code or state: a server
//! that keeps failing stays, with its history, until someone deletes it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::App;
use super::deploy::STAGING_PREFIX;
use crate::store::MetricPoint;

/// Staging directories and uploads older than this are stale.
const STALE: Duration = Duration::from_secs(3600);

/// How often resource history is copied from the samplers' rings into the store.
const METRICS_EVERY: Duration = Duration::from_secs(60);

/// Removes every staging directory: at start no deploy is in flight, so all are leftovers.
pub(crate) fn remove_staging(servers_dir: &Path) {
    remove_old(servers_dir, |name| name.starts_with(STAGING_PREFIX), Duration::ZERO);
}

/// Runs the janitor until the platform stops.
pub(crate) async fn run(app: Arc<App>) {
    if !app.config.auto_cleanup {
        return;
    }
    let mut tick = tokio::time::interval(app.config.cleanup_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        sweep(&app).await;
    }
}

async fn sweep(app: &App) {
    let known: HashSet<String> = match app.store.servers().await {
        Ok(records) => records.into_iter().map(|r| r.id).collect(),
        Err(_) => return,
    };
    let (servers_dir, uploads_dir, logs_dir) =
        (app.config.servers_dir.clone(), app.config.uploads_dir.clone(), app.config.logs_dir.clone());
    // Removing trees is blocking file work: off the async workers.
    let swept = tokio::task::spawn_blocking(move || {
        let removed = remove_old(&servers_dir, |name| name.starts_with(STAGING_PREFIX), STALE)
            + remove_old(&uploads_dir, |name| !name.starts_with('.'), STALE);
        (removed, remove_old(&logs_dir, |name| !known.contains(name), STALE))
    })
    .await;
    let Ok((removed, orphaned_logs)) = swept else { return };
    let compacted = app.store.compact(crate::store::now_ms()).await;
    tracing::info!(removed, orphaned_logs, ?compacted, "cleanup done");
}

/// Removes the entries of `dir` whose name matches and that were last modified over `age` ago.
fn remove_old(dir: &Path, matches: impl Fn(&str) -> bool, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let old =
            entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= age);
        if !matches(name) || !old {
            continue;
        }
        let path = entry.path();
        let result = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match result {
            Ok(()) => removed += 1,
            Err(err) => tracing::warn!(path = %path.display(), error = %err, "cleanup could not remove it"),
        }
    }
    removed
}

/// Copies new samples from the samplers' rings into the store, which keeps the history that
/// recommendations need (raw for an hour, minute averages for a week).
pub(crate) async fn record_metrics(app: Arc<App>) {
    let mut last: HashMap<String, SystemTime> = HashMap::new();
    let mut tick = tokio::time::interval(METRICS_EVERY);
    loop {
        tick.tick().await;
        let Ok(servers) = app.supervisor.list().await else { return };
        // Deleted servers drop out of the map.
        let mut seen: HashMap<String, SystemTime> = HashMap::with_capacity(servers.len());
        for status in servers {
            let since = last.get(&status.id).copied().unwrap_or(UNIX_EPOCH);
            let samples = app.supervisor.metrics_since(&status.id, since).await.unwrap_or_default();
            for sample in &samples {
                app.store.append_metric(MetricPoint {
                    server: status.id.clone(),
                    at_ms: crate::store::millis(sample.at),
                    cpu_percent: f64::from(sample.cpu_percent),
                    rss_bytes: sample.rss_bytes,
                    processes: sample.processes,
                });
            }
            seen.insert(status.id, samples.last().map_or(since, |s| s.at));
        }
        last = seen;
    }
}
