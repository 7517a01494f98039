//! `ApiJson`: axum's `Json` extractor with its rejections turned into OpenAI-shaped errors
//! (415 wrong content type, 413 body too large, 400 everything else, naming the field).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::state::AppState;

/// A JSON request body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(map_rejection(&rejection, state.config().max_body_bytes)),
        }
    }
}

fn map_rejection(rejection: &JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::payload_too_large(limit)
        }
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            let param = field_path(&detail);
            ApiError::bad_body(detail, param)
        }
        // Syntax errors, and bodies that could not be read at all.
        _ => ApiError::bad_body(rejection.body_text(), None),
    }
}

/// The field a data error is about. axum reports data errors as "<fixed text>: <path>: <serde
/// message>" (the path from serde_path_to_error, e.g. `messages[0].role`), and the path is the
/// only structured hint about which parameter was wrong.
fn field_path(body_text: &str) -> Option<String> {
    let mut parts = body_text.splitn(3, ": ");
    let (_prefix, path, _message) = (parts.next()?, parts.next()?, parts.next()?);
    let is_path = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '?'));
    is_path.then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::field_path;

    #[test]
    fn field_path_is_taken_only_when_it_looks_like_one() {
        let text = "Failed to deserialize the JSON body into the target type: messages[0].role: invalid type";
        assert_eq!(field_path(text).as_deref(), Some("messages[0].role"));
        let text =
            "Failed to deserialize the JSON body into the target type: missing field `x` at line 1";
        assert_eq!(field_path(text), None);
        assert_eq!(field_path("no separators"), None);
    }
}
