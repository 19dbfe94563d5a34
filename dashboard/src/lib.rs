//! The HTTP side of hivehost: an axum router over a [`Backend`] trait, so it knows nothing of actors or storage.
//!
//! `/healthz` answers without authentication (it reveals only counts). Every other route demands
//! the API token as `Authorization: Bearer <token>`, compared in constant time. The API under
//! `/api/v1` mirrors the MCP tools; its views are JSON values built by the backend, so this crate
//! holds no server types of its own.

mod api;
mod auth;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub use api::{Action, ApiError, DeployRequest};
pub use auth::Token;

/// A boxed future, as the backend's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the HTTP side may ask of the platform; implemented by the root crate's `app`.
pub trait Backend: Send + Sync + 'static {
    /// Liveness and a count of servers by state.
    fn health(&self) -> BoxFuture<'_, Result<HealthView, String>>;
    /// Deploys an uploaded package.
    fn deploy(&self, request: DeployRequest) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
    /// Every server with its status.
    fn servers(&self) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
    /// One server's status.
    fn server(&self, id: String) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
    /// Starts, stops or restarts a server.
    fn control(&self, id: String, action: Action) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
    /// Deletes a server: stops it (`force` kills at once), removes its code, state and logs.
    fn delete(&self, id: String, force: bool) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
    /// The last `lines` lines of a server's output.
    fn logs(&self, id: String, lines: usize) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
    /// The host as hivehost found it: its isolation capabilities and runtimes.
    fn host(&self) -> BoxFuture<'_, Result<serde_json::Value, ApiError>>;
}

/// The body of `/healthz`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HealthView {
    pub status: &'static str,
    pub servers: usize,
    pub running: usize,
    pub failed: usize,
}

/// Settings of the router.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The token every route but `/healthz` demands.
    pub token: Token,
    /// The largest request body accepted (an upload), in bytes.
    pub max_body_bytes: usize,
}

/// The router of every HTTP route.
pub fn router(backend: Arc<dyn Backend>, config: HttpConfig) -> Router {
    let protected = api::routes(config.max_body_bytes)
        .layer(axum::middleware::from_fn_with_state(config.token.clone(), auth::require_token));
    Router::new().route("/healthz", get(healthz)).merge(protected).with_state(backend)
}

/// `router` behind the same token check as the API: for services mounted beside it (`/mcp`).
pub fn protect(router: Router, token: Token) -> Router {
    router.layer(axum::middleware::from_fn_with_state(token, auth::require_token))
}

async fn healthz(State(backend): State<Arc<dyn Backend>>) -> Response {
    match backend.health().await {
        Ok(view) => Json(view).into_response(),
        Err(err) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "unavailable", "error": err })))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests;
