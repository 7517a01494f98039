//! Operational routes: liveness (`/health`), readiness (`/ready`), the model list
//! (`/v1/models`) and Prometheus metrics (`/metrics`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::serving::serving_model;
use super::state::{AppState, ReadyModel};

/// Liveness: the process answers HTTP. Always 200, so an orchestrator does not restart a
/// server that is merely still loading its model.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: route traffic here only while a model is loaded and the server is not draining.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let model = serving_model(&state)?;
    Ok(Json(json!({"status": "ready", "model": model.model_name})))
}

fn model_card(model: &ReadyModel) -> Value {
    json!({"id": model.model_name, "object": "model", "created": model.created, "owned_by": "gridserve"})
}

/// The served model, once loaded (503 until then: there is nothing to list yet).
pub async fn list_models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let model = state.ready().ok_or_else(ApiError::not_ready)?;
    Ok(Json(json!({"object": "list", "data": [model_card(model)]})))
}

/// One model by id. A path that does not decode (invalid UTF-8) cannot name it either: 404.
pub async fn get_model(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let model = state.ready().ok_or_else(ApiError::not_ready)?;
    let name = name.map_or_else(|_| String::from("(undecodable)"), |Path(name)| name);
    if name != model.model_name {
        return Err(ApiError::model_not_found(&name));
    }
    Ok(Json(model_card(model)))
}

/// Prometheus text exposition format, version 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
