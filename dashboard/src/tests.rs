//! Router tests over a fake backend, without sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::{Backend, HealthView, router};

struct Fake(Result<HealthView, String>);

impl Backend for Fake {
    fn health(&self) -> Pin<Box<dyn Future<Output = Result<HealthView, String>> + Send + '_>> {
        let res = self.0.clone();
        Box::pin(async move { res })
    }
}

async fn get(backend: Fake, path: &str) -> (StatusCode, serde_json::Value) {
    let resp = router(Arc::new(backend)).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn healthz_reports_counts() {
    let view = HealthView { status: "ok", servers: 3, running: 2, failed: 1 };
    let (status, body) = get(Fake(Ok(view)), "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "status": "ok", "servers": 3, "running": 2, "failed": 1 }));
}

#[tokio::test]
async fn healthz_says_unavailable_when_the_backend_is_down() {
    let (status, body) = get(Fake(Err("the supervisor has stopped".into())), "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["error"], "the supervisor has stopped");
}
