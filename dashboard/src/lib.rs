//! The HTTP side of hivehost: an axum router over a [`Backend`] trait, so it knows nothing of actors or storage.
//!
//! For now it serves `/healthz` (no authentication: it reveals only counts); the API, the event
//! streams and the dashboard pages arrive with their issue and go through the same trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// What the HTTP side may ask of the platform; implemented by the root crate's `app`.
pub trait Backend: Send + Sync + 'static {
    /// Liveness and a count of servers by state.
    fn health(&self) -> Pin<Box<dyn Future<Output = Result<HealthView, String>> + Send + '_>>;
}

/// The body of `/healthz`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HealthView {
    pub status: &'static str,
    pub servers: usize,
    pub running: usize,
    pub failed: usize,
}

/// The router of every HTTP route.
pub fn router(backend: Arc<dyn Backend>) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(backend)
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
