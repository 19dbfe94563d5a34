//! `/api/v1`: the JSON API that mirrors the MCP tools (upload as a raw ZIP body).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::Backend;

/// An upload to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The server's name; its id is derived from it.
    pub name: String,
    /// The ZIP archive.
    pub archive: Vec<u8>,
    /// Fields of `server_config.json` to override (a JSON object, possibly empty).
    pub overrides: serde_json::Value,
    /// Whether to start it once deployed.
    pub start: bool,
}

/// A lifecycle command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// A failed request: an HTTP status, a stable code and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (status, Json(body)).into_response()
    }
}

type Shared = Arc<dyn Backend>;

pub(crate) fn routes(max_body_bytes: usize) -> Router<Shared> {
    Router::new()
        .route("/api/v1/servers", get(list).post(deploy).layer(DefaultBodyLimit::max(max_body_bytes)))
        .route("/api/v1/servers/{id}", get(status).delete(delete))
        .route("/api/v1/servers/{id}/start", post(start))
        .route("/api/v1/servers/{id}/stop", post(stop))
        .route("/api/v1/servers/{id}/restart", post(restart))
        .route("/api/v1/servers/{id}/logs", get(logs))
}

fn reply(result: Result<serde_json::Value, ApiError>, ok: StatusCode) -> Response {
    match result {
        Ok(value) => (ok, Json(value)).into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
struct DeployQuery {
    name: Option<String>,
    #[serde(default)]
    start: bool,
}

async fn deploy(
    State(backend): State<Shared>,
    query: Result<Query<DeployQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::new(400, "bad_query", "the query string is malformed; use ?name=NAME&start=true")
            .into_response();
    };
    let Some(name) = query.name.filter(|n| !n.is_empty()) else {
        return ApiError::new(
            400,
            "missing_name",
            "name the server: POST /api/v1/servers?name=NAME with the ZIP as the body",
        )
        .into_response();
    };
    if body.is_empty() {
        return ApiError::new(400, "empty_body", "the request body is empty; send the package ZIP as the body")
            .into_response();
    }
    let request = DeployRequest { name, archive: body.to_vec(), overrides: serde_json::json!({}), start: query.start };
    reply(backend.deploy(request).await, StatusCode::CREATED)
}

async fn list(State(backend): State<Shared>) -> Response {
    reply(backend.servers().await, StatusCode::OK)
}

async fn status(State(backend): State<Shared>, Path(id): Path<String>) -> Response {
    reply(backend.server(id).await, StatusCode::OK)
}

async fn start(State(backend): State<Shared>, Path(id): Path<String>) -> Response {
    reply(backend.control(id, Action::Start).await, StatusCode::OK)
}

async fn stop(State(backend): State<Shared>, Path(id): Path<String>) -> Response {
    reply(backend.control(id, Action::Stop).await, StatusCode::OK)
}

async fn restart(State(backend): State<Shared>, Path(id): Path<String>) -> Response {
    reply(backend.control(id, Action::Restart).await, StatusCode::OK)
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete(
    State(backend): State<Shared>,
    Path(id): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Response {
    let force = query.is_ok_and(|Query(q)| q.force);
    reply(backend.delete(id, force).await, StatusCode::OK)
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn logs(
    State(backend): State<Shared>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let lines = query.ok().and_then(|Query(q)| q.lines).unwrap_or(50).min(10_000);
    reply(backend.logs(id, lines).await, StatusCode::OK)
}
