//! The HTTP side's view of the platform: `dashboard::Backend` over [`App`], with JSON views.

use dashboard::{Action, ApiError, BoxFuture, DeployRequest, HealthView};
use serde_json::{Value, json};

use super::{App, DeployError};

use crate::store::millis as ms;

/// The JSON form of a server's live status.
pub(crate) fn status_view(s: &actors::ServerStatus) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "state": s.state.to_string(),
        "since_ms": ms(s.since),
        "generation": s.generation,
        "pid": s.pid,
        "started_ms": s.started_at.map(ms),
        "restarts": s.restarts,
        "streak": s.streak,
        "last_exit": s.last_exit.as_ref().map(|e| e.description.clone()),
        "next_restart_ms": s.next_restart.map(ms),
        "health_failures": s.health_failures,
        "last_health": s.last_health,
        "usage": s.usage.map(|u| json!({ "cpu_percent": u.cpu_percent, "rss_bytes": u.rss_bytes, "processes": u.processes })),
        "logs": { "lines": s.logs.lines, "truncated": s.logs.truncated, "dropped": s.logs.dropped },
        "sandbox": sandbox_view(&s.sandbox),
        "mcp_live": s.mcp_session.is_some(),
        "mcp_session": s.mcp_session.as_ref().map(|(protocol, server)| json!({ "protocol": protocol, "server": server })),
        "gateway": {
            "sessions": s.gateway.sessions,
            "sessions_total": s.gateway.sessions_total,
            "calls": s.gateway.calls,
            "failed_calls": s.gateway.failed_calls,
            "last_call_ms": s.gateway.last_call_ms,
        },
    })
}

/// The JSON form of a server's sandbox: each layer with its state and why.
pub(crate) fn sandbox_view(s: &actors::SandboxStatus) -> Value {
    use actors::sandbox::LayerState;
    let layers: Vec<Value> = s
        .layers
        .iter()
        .map(|r| {
            let (state, detail) = match &r.state {
                LayerState::Active(d) => ("active", d),
                LayerState::Unavailable(d) => ("unavailable", d),
                LayerState::Off(d) => ("off", d),
            };
            json!({ "layer": r.layer.name(), "state": state, "detail": detail })
        })
        .collect();
    json!({ "degraded": s.degraded, "refused": s.refused, "layers": layers })
}

/// The JSON form of the host's isolation capabilities.
pub(crate) fn caps_view(caps: &actors::sandbox::HostCaps) -> Value {
    let cg = &caps.cgroup;
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    json!({
        "root": caps.root,
        "cgroup": {
            "v2": path(&cg.v2),
            "v2_controllers": cg.v2_controllers,
            "v1": { "memory": path(&cg.v1_memory), "cpu": path(&cg.v1_cpu), "pids": path(&cg.v1_pids), "freezer": path(&cg.v1_freezer) },
            "limits": cg.limits(),
            "tree_kill": cg.tree_kill(),
        },
        "namespaces": { "net": caps.namespaces.net, "mount": caps.namespaces.mount, "ipc": caps.namespaces.ipc },
        "landlock_abi": caps.landlock_abi,
        "seccomp": caps.seccomp,
        "summary": caps.summary(),
    })
}

/// The JSON form of a finished deploy.
pub(crate) fn deployed_view(deployed: &super::Deployed) -> Value {
    json!({
        "id": deployed.id,
        "scan": deployed.scan,
        "warnings": deployed.warnings,
        "installed_lines": deployed.installed.len(),
        "started": deployed.started.as_ref().map(|r| match r { Ok(state) => json!({ "state": state }), Err(e) => json!({ "error": e }) }),
    })
}

fn actor_error(err: actors::ActorsError) -> ApiError {
    match err {
        actors::ActorsError::NotFound(id) => {
            ApiError::new(404, "not_found", format!("no server `{id}`; list them with GET /api/v1/servers"))
        }
        other => ApiError::new(409, "refused", other.to_string()),
    }
}

pub(crate) fn deploy_error(err: DeployError) -> ApiError {
    let message = err.to_string();
    match err {
        DeployError::Refused(_) => ApiError::new(422, "refused", message),
        DeployError::Archive(e) if e.rule_kind() == crate::package::Rule::TooLarge => {
            ApiError::new(413, "too_large", message)
        }
        DeployError::Archive(e) => ApiError::new(422, e.rule(), message),
        DeployError::Scan(_) => ApiError::new(422, "scan_blocked", message),
        DeployError::Install(_) => ApiError::new(422, "install_failed", message),
        DeployError::Internal(_) => ApiError::new(500, "internal", message),
    }
}

impl dashboard::Backend for App {
    fn health(&self) -> BoxFuture<'_, Result<HealthView, String>> {
        Box::pin(async move {
            let all = self.supervisor.list().await.map_err(|err| err.to_string())?;
            Ok(HealthView {
                status: "ok",
                servers: all.len(),
                running: all.iter().filter(|s| s.state == actors::ServerState::Running).count(),
                failed: all.iter().filter(|s| s.state == actors::ServerState::Failed).count(),
            })
        })
    }

    fn deploy(&self, request: DeployRequest) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            let name = request.name.clone();
            let progress = move |line: &str| tracing::info!(server = %name, "deploy: {line}");
            let deployed = self
                .deploy(&request.name, request.archive, request.overrides, request.start, &progress)
                .await
                .map_err(deploy_error)?;
            Ok(deployed_view(&deployed))
        })
    }

    fn servers(&self) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            let all = self.supervisor.list().await.map_err(actor_error)?;
            Ok(Value::Array(all.iter().map(status_view).collect()))
        })
    }

    fn server(&self, id: String) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            let status = self.supervisor.status(&id).await.map_err(actor_error)?;
            let mut view = status_view(&status);
            if let Ok(Some(record)) = self.store.server(&id).await {
                view["desired"] = json!(record.desired);
                view["scan"] = record.scan.unwrap_or(Value::Null);
                view["created_ms"] = json!(record.created_ms);
            }
            Ok(view)
        })
    }

    fn control(&self, id: String, action: Action) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            let status = self.control(&id, action).await.map_err(actor_error)?;
            Ok(status_view(&status))
        })
    }

    fn delete(&self, id: String, force: bool) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            self.delete(&id, force).await.map_err(actor_error)?;
            Ok(json!({ "id": id, "deleted": true }))
        })
    }

    fn host(&self) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            Ok(json!({
                "sandbox": caps_view(&self.caps),
                "require_sandbox": self.config.security.require_sandbox(self.caps.root),
                "sandbox_by_default": self.config.security.sandbox_by_default,
                "runtimes": {
                    "python": self.runtimes.python.as_ref().map(|p| p.display().to_string()),
                    "node": self.runtimes.node.as_ref().map(|p| p.display().to_string()),
                    "bash": self.runtimes.bash.as_ref().map(|p| p.display().to_string()),
                },
            }))
        })
    }

    fn logs(&self, id: String, lines: usize) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            let logs = self.supervisor.logs(&id, lines).await.map_err(actor_error)?;
            let lines: Vec<Value> = logs
                .iter()
                .map(|l| json!({ "at_ms": ms(l.at), "generation": l.generation, "stream": format!("{:?}", l.stream).to_lowercase(), "text": l.text }))
                .collect();
            Ok(json!({ "id": id, "lines": lines }))
        })
    }
}
