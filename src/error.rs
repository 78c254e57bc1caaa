//! One error type for every HTTP endpoint: `{"error":{"code","message",…}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answered to a client. Client errors carry a precise message; server errors
/// are logged with their cause and answered generically.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter, header or body field is invalid (`400`).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_topic`.
        code: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No such resource (`404`).
    #[error("{0}")]
    NotFound(String),
    /// Missing or wrong publish key (`401`).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A subscriber token is missing, invalid or expired (`401`): `token_required`,
    /// `token_invalid`, `token_expired`.
    #[error("{message}")]
    Token {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// The private topic asked for without a token (`token_required`).
        topic: Option<String>,
    },
    /// The token does not allow a topic asked for (`403`).
    #[error("{message}")]
    TopicForbidden {
        /// The topic refused.
        topic: String,
        /// What is wrong.
        message: String,
    },
    /// The request's `Host` is not one this server answers to (`421`): DNS rebinding, or
    /// a proxy that rewrites `Host` without `SWITCHYARD_ALLOWED_HOSTS`.
    #[error("{0}")]
    HostNotAllowed(String),
    /// The request `Origin` is not allowed (`403`).
    #[error("origin {0:?} is not allowed (SWITCHYARD_ALLOWED_ORIGINS)")]
    OriginNotAllowed(String),
    /// A body larger than the limit (`413`).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A body that is not declared `application/json` (`415`).
    #[error(
        "Content-Type is {0}; send the body as JSON with `Content-Type: application/json` \
         (with curl: -H 'content-type: application/json')"
    )]
    UnsupportedMediaType(String),
    /// A WebSocket upgrade arrived without its `Upgrade` header (`426`).
    #[error(
        "this request carries Sec-WebSocket-Key but no `Upgrade: websocket` header: a proxy \
         between you and the server stripped the WebSocket upgrade. Use Server-Sent Events \
         or long polling instead (see /v1/negotiate), or configure the proxy to forward \
         Upgrade and Connection headers"
    )]
    UpgradeStripped {
        /// Transports that are enabled and can be used instead.
        enabled: Vec<&'static str>,
    },
    /// Too many requests (`429`).
    #[error("{0}")]
    TooManyRequests(&'static str),
    /// Refused by a per-client limit (`429` with `Retry-After`).
    #[error("{message}")]
    RateLimited {
        /// Machine-readable code (`rate_limited`, `too_many_streams`, …).
        code: &'static str,
        /// Which limit, in words.
        message: String,
        /// Seconds until the client may try again.
        retry_after: u64,
    },
    /// A conflict with an earlier request (`409`): an idempotency key reused, or still in
    /// use (then with `Retry-After`).
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// Seconds until a retry may succeed, when it may.
        retry_after: Option<u64>,
    },
    /// A transport (or every transport) is switched off, or the connection cap is reached
    /// (`503`).
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Why, in words.
        message: String,
        /// Transports that are enabled.
        enabled: Vec<&'static str>,
    },
    /// A refusal with a status of its own (the demo's sign-in, for one).
    #[error("{message}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Anything else; the cause is logged, never sent (`500`).
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A `400` with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            ApiError::Token { code, .. } => (StatusCode::UNAUTHORIZED, code),
            ApiError::HostNotAllowed(_) => (StatusCode::MISDIRECTED_REQUEST, "host_not_allowed"),
            ApiError::TopicForbidden { .. } => (StatusCode::FORBIDDEN, "topic_forbidden"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::UpgradeStripped { .. } => (StatusCode::UPGRADE_REQUIRED, "upgrade_stripped"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::RateLimited { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Status { status, code, .. } => (*status, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let mut error = Map::new();
        error.insert("code".into(), json!(code));
        error.insert("message".into(), json!(self.to_string()));
        match &self {
            ApiError::Unavailable { enabled, .. } | ApiError::UpgradeStripped { enabled } => {
                error.insert("enabled".into(), json!(enabled));
            }
            ApiError::Token {
                topic: Some(topic), ..
            }
            | ApiError::TopicForbidden { topic, .. } => {
                error.insert("topic".into(), json!(topic));
            }
            _ => {}
        }
        let mut response = (status, Json(json!({ "error": Value::Object(error) }))).into_response();
        if status == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                axum::http::header::UPGRADE,
                axum::http::HeaderValue::from_static("websocket"),
            );
        }
        if let ApiError::RateLimited { retry_after, .. }
        | ApiError::Conflict {
            retry_after: Some(retry_after),
            ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after),
            );
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection cannot carry another
            // request: say so, or a client that pools it sends its next request into a
            // connection the server is closing (as nginx does for its 413).
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
