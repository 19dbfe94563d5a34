//! The API token: compared in constant time, never shown by `Debug`.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The API token.
#[derive(Clone)]
pub struct Token(std::sync::Arc<str>);

impl Token {
    pub fn new(token: &str) -> Token {
        Token(token.into())
    }

    /// Whether `presented` is the token, in time that depends only on the lengths.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Refuses a request without `Authorization: Bearer <token>`.
pub(crate) async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => refuse("the API token is wrong; use the one in mcp_hosting.auth.token or its token_file"),
        None => refuse(
            "this route needs the API token: send `Authorization: Bearer <token>` (the token is in mcp_hosting.auth.token or its token_file)",
        ),
    }
}

fn refuse(message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": "unauthorized", "message": message } });
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response()
}
