//! The grid routes: create, list, read and cancel envelopes (writes need an operator token),
//! and the status document. Store calls fsync, so they run on blocking threads.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::ApiJson;
use super::state::AppState;
use crate::grid::auth::Operator;
use crate::grid::request::{envelope_json, EnvelopeRequest};
use crate::grid::{now_unix, GridState};
use crate::GatewayError;

/// Runs a store operation off the async threads.
async fn blocking<T: Send + 'static>(
    grid: &GridState,
    f: impl FnOnce(&GridState) -> Result<T, GatewayError> + Send + 'static,
) -> Result<T, ApiError> {
    let grid = grid.clone();
    tokio::task::spawn_blocking(move || f(&grid))
        .await
        .map_err(|e| ApiError::internal(format!("grid store task failed: {e}")))?
        .map_err(ApiError::from)
}

/// `POST /v1/grid/envelopes`: 201 once the envelope is on disk, with any warnings.
pub async fn create(
    State(state): State<AppState>,
    Operator(actor): Operator,
    ApiJson(body): ApiJson<EnvelopeRequest>,
) -> Result<Response, ApiError> {
    let now = now_unix();
    let (envelope, warnings) = body.resolve(now, &state.grid().effective_config())?;
    let stored = envelope.clone();
    blocking(state.grid(), move |grid| {
        grid.store().insert(&stored, &actor, now)?;
        grid.refresh(now)
    })
    .await?;
    tracing::info!(id = %envelope.id, start = envelope.start(), end = ?envelope.end(), "grid envelope created");
    let mut doc = envelope_json(&envelope, now);
    doc["warnings"] = json!(warnings);
    let location = format!("/v1/grid/envelopes/{}", envelope.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(doc),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Include ended and cancelled envelopes.
    #[serde(default)]
    all: bool,
}

/// `GET /v1/grid/envelopes[?all=true]`: current and upcoming envelopes, oldest first.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_body(e.body_text(), None))?;
    let now = now_unix();
    let envelopes = blocking(state.grid(), move |grid| {
        if query.all {
            grid.store().list()
        } else {
            grid.store().live_since(now)
        }
    })
    .await?;
    let data: Vec<Value> = envelopes.iter().map(|e| envelope_json(e, now)).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

fn envelope_id(id: Result<Path<String>, PathRejection>) -> String {
    // Only an undecodable path fails here; it cannot name an envelope either.
    id.map_or_else(|_| String::from("(undecodable)"), |Path(id)| id)
}

/// `GET /v1/grid/envelopes/{id}`, cancelled ones included.
pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = envelope_id(id);
    let found = blocking(state.grid(), {
        let id = id.clone();
        move |grid| grid.store().get(&id)
    })
    .await?;
    let envelope = found.ok_or(GatewayError::EnvelopeNotFound(id))?;
    Ok(Json(envelope_json(&envelope, now_unix())))
}

/// `DELETE /v1/grid/envelopes/{id}`: cancels (the record and its audit trail stay).
pub async fn cancel(
    State(state): State<AppState>,
    Operator(actor): Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = envelope_id(id);
    let now = now_unix();
    let envelope = blocking(state.grid(), move |grid| {
        let e = grid.store().cancel(&id, &actor, now)?;
        grid.refresh(now)?;
        Ok(e)
    })
    .await?;
    tracing::info!(id = %envelope.id, "grid envelope cancelled");
    Ok(Json(envelope_json(&envelope, now)))
}

/// `GET /v1/grid/audit`: every envelope change, oldest first, with who made it (operators
/// only: it names them).
pub async fn audit(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> Result<Json<Value>, ApiError> {
    let entries = blocking(state.grid(), |grid| grid.store().audit_log()).await?;
    let data: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            // `detail` holds the created envelope's intervals as JSON (empty on a cancel).
            let detail = serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null);
            json!({
                "at": e.at,
                "action": e.action,
                "envelope_id": e.envelope_id,
                "actor": e.actor,
                "intervals": detail,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/grid/status`.
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    Json(state.grid().status(now_unix()))
}
