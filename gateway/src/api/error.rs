//! The API's one error type and its OpenAI-shaped response:
//! `{"error":{"message","type","param","code"}}` with the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridserve_models::ModelError;
use serde_json::json;

use crate::engine::SubmitError;
use crate::GatewayError;

/// An error a client sees. Built only through the constructors below, so status, `type` and
/// `code` always agree.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `rate_limit_error` or `server_error`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for the `Retry-After` header (429 and 503 only).
    pub retry_after: Option<u64>,
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 naming the offending request field.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, INVALID, message);
        e.param = Some(param.into());
        e
    }

    /// 400 for a body that is not valid JSON or does not fit the request shape.
    pub fn bad_body(message: impl Into<String>, param: Option<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, INVALID, message);
        e.param = param;
        e
    }

    /// 400 for a known OpenAI parameter gridserve does not implement: silently ignoring it
    /// would return something the client did not ask for.
    pub fn unsupported(param: &str, detail: &str) -> Self {
        let message = format!("`{param}` is not supported by this server{detail}");
        Self::invalid_param(param, message).with_code("unsupported_parameter")
    }

    pub fn context_length(limit: usize, prompt: usize, completion: usize, what: &str) -> Self {
        let message = format!(
            "This model's maximum context length is {limit} tokens. However, you requested {} tokens \
             ({prompt} in the {what}, {completion} in the completion). Please reduce the length of the \
             {what} or completion.",
            prompt.saturating_add(completion)
        );
        let param = if what == "messages" {
            "messages"
        } else {
            "prompt"
        };
        Self::invalid_param(param, message).with_code("context_length_exceeded")
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            INVALID,
            format!("The model `{model}` does not exist."),
        )
        .with_code("model_not_found");
        e.param = Some("model".into());
        e
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID,
            format!("No route for {method} {path}"),
        )
        .with_code("not_found")
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID,
            format!("Method {method} is not allowed on {path}"),
        )
        .with_code("method_not_allowed")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID,
            format!("The request body exceeds {limit} bytes"),
        )
        .with_code("payload_too_large")
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID,
            "Expected a request with `Content-Type: application/json`",
        )
        .with_code("unsupported_media_type")
    }

    pub fn queue_full(message: String, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .with_code("rate_limit_exceeded");
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, SERVER, message).with_code(code)
    }

    /// 503 for a request the power envelope kept waiting past its deadline.
    pub fn deferred(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut e = Self::unavailable(message, "power_deferred");
        e.retry_after = Some(retry_after.as_secs().max(1));
        e
    }

    pub fn not_ready() -> Self {
        Self::unavailable(
            "The model is still loading; retry shortly",
            "model_not_ready",
        )
    }

    pub fn draining() -> Self {
        Self::unavailable(
            "The server is shutting down and accepts no new requests",
            "server_draining",
        )
    }

    /// 401: no credential, or one that matches nothing.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
            .with_code("invalid_api_key")
    }

    /// 403: a valid credential of the wrong kind (an API key on a grid write).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message)
            .with_code("insufficient_permissions")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID, message).with_code("not_found")
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, INVALID, message).with_code("conflict")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, SERVER, message).with_code("internal_error")
    }

    /// The `{"error": ...}` object, also sent as an SSE event when a stream fails midway.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull { retry_after, .. } => {
                metrics::counter!(crate::metrics::ADMISSION_REJECTIONS, "reason" => "queue_full")
                    .increment(1);
                // Round up: a sub-second hint must not become "retry immediately".
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                ApiError::queue_full(e.to_string(), secs)
            }
            SubmitError::Stopped => ApiError::unavailable(e.to_string(), "engine_stopped"),
        }
    }
}

/// Sampling-parameter errors are the client's; anything else from the model layer is ours.
impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidParam { param, message } => ApiError::invalid_param(param, message),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// The one place a `GatewayError` becomes an HTTP status: the client's mistakes are 4xx,
/// everything else (a failing store, a device error) is ours.
impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::InvalidRequest { param, message } => {
                ApiError::invalid_param(param, message)
            }
            GatewayError::InvalidEnvelope { param, message } => {
                ApiError::invalid_param(param, message)
            }
            GatewayError::EnvelopeExists(_) => ApiError::conflict(e.to_string()),
            GatewayError::EnvelopeNotFound(_) => ApiError::not_found(e.to_string()),
            other => {
                tracing::error!("{other}");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme the client should retry with.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gridserve\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn queue_full_rounds_retry_after_up() {
        let e = ApiError::from(SubmitError::QueueFull {
            waiting: 3,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(
            (e.status, e.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(2))
        );
        let e = ApiError::from(SubmitError::QueueFull {
            waiting: 3,
            retry_after: Duration::ZERO,
        });
        assert_eq!(e.retry_after, Some(1));
    }

    #[test]
    fn body_has_all_four_fields() {
        let body = ApiError::invalid_param("n", "too big").body();
        assert_eq!(
            body,
            json!({"error": {"message": "too big", "type": INVALID, "param": "n", "code": null}})
        );
    }
}
