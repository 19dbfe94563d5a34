//! Router tests over a fake backend, without sockets: health, the token, and the API's request checks.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::{Action, ApiError, Backend, BoxFuture, DeployRequest, HealthView, HttpConfig, Token, router};

const TOKEN: &str = "s3cret-token-0123456789";

#[derive(Default)]
struct Fake {
    health: Option<Result<HealthView, String>>,
    deployed: Mutex<Vec<(String, usize, bool)>>,
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(async move { value })
}

impl Backend for Fake {
    fn health(&self) -> BoxFuture<'_, Result<HealthView, String>> {
        ready(self.health.clone().unwrap_or(Ok(HealthView::default())))
    }
    fn deploy(&self, request: DeployRequest) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        self.deployed.lock().unwrap().push((request.name.clone(), request.archive.len(), request.start));
        ready(Ok(serde_json::json!({ "id": request.name })))
    }
    fn servers(&self) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        ready(Ok(serde_json::json!([])))
    }
    fn server(&self, id: String) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        ready(Err(ApiError::new(404, "not_found", format!("no server `{id}`"))))
    }
    fn control(&self, id: String, action: Action) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        ready(Ok(serde_json::json!({ "id": id, "action": format!("{action:?}") })))
    }
    fn delete(&self, id: String, force: bool) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        ready(Ok(serde_json::json!({ "id": id, "force": force })))
    }
    fn logs(&self, id: String, lines: usize) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        ready(Ok(serde_json::json!({ "id": id, "lines": lines })))
    }
    fn host(&self) -> BoxFuture<'_, Result<serde_json::Value, ApiError>> {
        ready(Ok(serde_json::json!({ "root": false })))
    }
}

fn app(fake: Arc<Fake>) -> axum::Router {
    router(fake, HttpConfig { token: Token::new(TOKEN), max_body_bytes: 1024 })
}

async fn send(fake: Arc<Fake>, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = app(fake).oneshot(request).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn authed(method: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder().method(method).uri(path).header("authorization", format!("Bearer {TOKEN}")).body(body).unwrap()
}

#[tokio::test]
async fn healthz_reports_counts_without_a_token() {
    let view = HealthView { status: "ok", servers: 3, running: 2, failed: 1 };
    let fake = Arc::new(Fake { health: Some(Ok(view)), ..Fake::default() });
    let (status, body) = send(fake, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "status": "ok", "servers": 3, "running": 2, "failed": 1 }));
}

#[tokio::test]
async fn healthz_says_unavailable_when_the_backend_is_down() {
    let fake = Arc::new(Fake { health: Some(Err("the supervisor has stopped".into())), ..Fake::default() });
    let (status, body) = send(fake, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["error"], "the supervisor has stopped");
}

#[tokio::test]
async fn the_api_refuses_requests_without_the_right_token() {
    let fake = Arc::new(Fake::default());
    let (status, body) = send(fake.clone(), Request::get("/api/v1/servers").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let wrong = Request::get("/api/v1/servers").header("authorization", "Bearer nope").body(Body::empty()).unwrap();
    assert_eq!(send(fake.clone(), wrong).await.0, StatusCode::UNAUTHORIZED);
    let upload = Request::post("/api/v1/servers?name=x").body(Body::from("zip")).unwrap();
    assert_eq!(send(fake.clone(), upload).await.0, StatusCode::UNAUTHORIZED);
    assert!(fake.deployed.lock().unwrap().is_empty(), "nothing unauthenticated reaches the backend");
    assert_eq!(send(fake, authed("GET", "/api/v1/servers", Body::empty())).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_upload_needs_a_name_and_a_body_within_the_limit() {
    let fake = Arc::new(Fake::default());
    let (status, body) = send(fake.clone(), authed("POST", "/api/v1/servers", Body::from("zip"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_name")));
    let (status, _) = send(fake.clone(), authed("POST", "/api/v1/servers?name=a", Body::from(vec![0u8; 2048]))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) =
        send(fake.clone(), authed("POST", "/api/v1/servers?name=a&start=true", Body::from("zip"))).await;
    assert_eq!((status, body), (StatusCode::CREATED, serde_json::json!({ "id": "a" })));
    assert_eq!(*fake.deployed.lock().unwrap(), [("a".to_owned(), 3, true)]);
}

#[tokio::test]
async fn errors_carry_their_status_and_code() {
    let (status, body) = send(Arc::new(Fake::default()), authed("GET", "/api/v1/servers/ghost", Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn tokens_compare_whole_and_never_print() {
    let token = Token::new(TOKEN);
    assert!(token.matches(TOKEN));
    assert!(!token.matches(&TOKEN[..TOKEN.len() - 1]));
    assert!(!token.matches(&format!("{TOKEN}x")));
    assert!(!token.matches(""));
    assert_eq!(format!("{token:?}"), "Token(<redacted>)");
}

#[tokio::test]
async fn an_upload_may_come_as_a_multipart_form_with_overrides() {
    let fake = Arc::new(Fake::default());
    let boundary = "XBOUNDARYX";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nformed\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"start\"\r\n\r\ntrue\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"overrides\"\r\n\r\n{{\"description\":\"d\"}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"package\"; filename=\"p.zip\"\r\nContent-Type: application/zip\r\n\r\nZIPBYTES\r\n\
         --{boundary}--\r\n"
    );
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/servers")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap();
    let (status, body) = send(fake.clone(), request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(*fake.deployed.lock().unwrap(), [("formed".to_owned(), 8, true)]);
}
