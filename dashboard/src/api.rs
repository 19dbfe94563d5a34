//! `/api/v1`: the JSON API that mirrors the MCP tools (upload as a raw ZIP body, or as the file of a
//! `multipart/form-data` form).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
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
        .route("/api/v1/host", get(host))
}

async fn host(State(backend): State<Shared>) -> Response {
    reply(backend.host().await, StatusCode::OK)
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
    request: Request,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::new(400, "bad_query", "the query string is malformed; use ?name=NAME&start=true")
            .into_response();
    };
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let upload = if multipart {
        match Multipart::from_request(request, &backend).await {
            Ok(form) => read_form(form).await,
            Err(err) => {
                Err(ApiError::new(400, "bad_multipart", format!("the multipart form could not be read: {err}")))
            }
        }
    } else {
        match Bytes::from_request(request, &backend).await {
            Ok(body) => Ok(Form { archive: body.to_vec(), ..Form::default() }),
            Err(err) => Err(ApiError::new(err.status().as_u16(), "bad_body", err.body_text())),
        }
    };
    let form = match upload {
        Ok(form) => form,
        Err(err) => return err.into_response(),
    };
    let Some(name) = form.name.or(query.name).filter(|n| !n.is_empty()) else {
        return ApiError::new(
            400,
            "missing_name",
            "name the server: POST /api/v1/servers?name=NAME with the ZIP as the body",
        )
        .into_response();
    };
    if form.archive.is_empty() {
        return ApiError::new(400, "empty_body", "the request body is empty; send the package ZIP as the body")
            .into_response();
    }
    let overrides = form.overrides.unwrap_or_else(|| serde_json::json!({}));
    let request = DeployRequest { name, archive: form.archive, overrides, start: form.start.unwrap_or(query.start) };
    reply(backend.deploy(request).await, StatusCode::CREATED)
}

/// What an upload form carries: the archive (the field `package`, or any file field), and
/// optionally `name`, `start` and `overrides` (a JSON object of server_config.json fields).
#[derive(Default)]
struct Form {
    archive: Vec<u8>,
    name: Option<String>,
    start: Option<bool>,
    overrides: Option<serde_json::Value>,
}

async fn read_form(mut form: Multipart) -> Result<Form, ApiError> {
    let bad = |err: axum::extract::multipart::MultipartError| {
        ApiError::new(
            err.status().as_u16(),
            "bad_multipart",
            format!("the multipart form could not be read: {}", err.body_text()),
        )
    };
    let mut out = Form::default();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let is_file = field.file_name().is_some();
        let bytes = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            "name" => out.name = Some(String::from_utf8_lossy(&bytes).trim().to_owned()),
            "start" => out.start = Some(matches!(String::from_utf8_lossy(&bytes).trim(), "true" | "1" | "on")),
            "overrides" => {
                let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::new(400, "bad_overrides", format!("the overrides field must be a JSON object: {e}"))
                })?;
                if !value.is_object() {
                    return Err(ApiError::new(400, "bad_overrides", "the overrides field must be a JSON object"));
                }
                out.overrides = Some(value);
            }
            _ if name == "package" || (is_file && out.archive.is_empty()) => out.archive = bytes.to_vec(),
            _ => {}
        }
    }
    Ok(out)
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
