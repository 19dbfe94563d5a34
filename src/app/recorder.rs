//! Turns the supervisor's events into memories: every lifecycle fact becomes a stored event with a
//! category, restarts become restart records, and spawned main processes become instance records
//! (what recovery after a crash looks for).

use actors::{Event, EventKind, ServerState};
use std::collections::HashMap;
use tokio::sync::broadcast::error::RecvError;

use crate::store::{Category, InstanceRecord, NewEvent, RestartRecord, Store};

/// Records every event of `events` into `store` until the channel closes.
pub(crate) async fn run(mut events: tokio::sync::broadcast::Receiver<Event>, store: Store, boot_id: String) {
    let mut last_exit: HashMap<String, actors::Exit> = HashMap::new();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                store.append_event(NewEvent::now(
                    Category::Incidents,
                    None,
                    "events_lost",
                    format!("{missed} lifecycle events were not recorded: the recorder fell behind"),
                    serde_json::json!({ "missed": missed }),
                ));
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let at_ms = crate::store::millis(event.at);
        let server = event.server.to_string();
        match &event.kind {
            EventKind::Spawned { pid, start_ticks } => {
                // Durable before anything else: a crash right after must still find this process.
                let record = InstanceRecord {
                    server: server.clone(),
                    generation: event.generation,
                    pid: *pid,
                    pgid: *pid,
                    start_ticks: start_ticks.unwrap_or(0),
                    boot_id: boot_id.clone(),
                    recorded_ms: at_ms,
                };
                if let Err(err) = store.record_instance(record).await {
                    tracing::error!(server = %server, error = %err, "recording a spawned process failed");
                }
            }
            EventKind::Exited { exit, .. } => {
                last_exit.insert(server.clone(), exit.clone());
                if let Err(err) = store.clear_instance(&server, event.generation).await {
                    tracing::error!(server = %server, error = %err, "clearing an instance record failed");
                }
            }
            EventKind::RestartScheduled { .. } => {
                let exit = last_exit.get(&server);
                let (exit_code, signal) = match exit.map(|e| e.kind) {
                    Some(policy::ExitKind::Code(code)) => (Some(code), None),
                    Some(policy::ExitKind::Signal(sig)) => (None, Some(sig)),
                    _ => (None, None),
                };
                store.record_restart(RestartRecord {
                    server: server.clone(),
                    at_ms,
                    generation: event.generation,
                    reason: exit.map_or_else(|| "restart".to_owned(), |e| e.description.clone()),
                    exit_code,
                    signal,
                });
            }
            EventKind::Deleted => {
                last_exit.remove(&server);
            }
            _ => {}
        }
        store.append_event(memory(&event, at_ms));
    }
}

/// The stored form of one event.
fn memory(event: &Event, at_ms: i64) -> NewEvent {
    let server = Some(event.server.to_string());
    let generation = event.generation;
    let (category, kind, message, data) = match &event.kind {
        EventKind::StateChanged { from, to, reason } => {
            let category = if *to == ServerState::Failed || *to == ServerState::Unhealthy {
                Category::Incidents
            } else {
                Category::Infrastructure
            };
            (
                category,
                "state_changed",
                format!("{from} → {to}: {reason}"),
                serde_json::json!({ "from": from.to_string(), "to": to.to_string(), "reason": reason }),
            )
        }
        EventKind::Spawned { pid, start_ticks } => (
            Category::Infrastructure,
            "spawned",
            format!("started pid {pid}"),
            serde_json::json!({ "pid": pid, "start_ticks": start_ticks }),
        ),
        EventKind::Exited { pid, exit } => {
            let clean = exit.kind == policy::ExitKind::Code(0);
            (
                if clean { Category::Monitoring } else { Category::Incidents },
                "exited",
                exit.description.clone(),
                serde_json::json!({ "pid": pid, "exit": format!("{:?}", exit.kind) }),
            )
        }
        EventKind::RestartScheduled { delay_ms, attempt } => (
            Category::Monitoring,
            "restart_scheduled",
            format!("restart {attempt} in {delay_ms} ms"),
            serde_json::json!({ "delay_ms": delay_ms, "attempt": attempt }),
        ),
        EventKind::GaveUp { reason } => {
            (Category::Incidents, "gave_up", reason.clone(), serde_json::json!({ "reason": reason }))
        }
        EventKind::Incident { message } => {
            (Category::Incidents, "incident", message.clone(), serde_json::json!({ "message": message }))
        }
        EventKind::Added => {
            (Category::Infrastructure, "added", "added to the supervisor".to_owned(), serde_json::json!({}))
        }
        EventKind::Deleted => {
            (Category::Infrastructure, "deleted", "removed from the supervisor".to_owned(), serde_json::json!({}))
        }
    };
    let mut data = data;
    if let Some(map) = data.as_object_mut() {
        map.insert("generation".into(), generation.into());
    }
    NewEvent { at_ms, category, server, kind: kind.to_owned(), message, data }
}
