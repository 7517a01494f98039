//! The HTTP API: OpenAI-compatible routes, the grid routes, health and readiness, metrics. `router` assembles
//! them; each submodule owns one concern.

mod chat;
mod choice;
mod completions;
mod error;
mod extract;
mod generator;
mod grid;
mod health;
mod layers;
mod logprobs;
mod params;
mod prompt;
mod request;
mod respond;
mod response;
mod serving;
mod sse;
mod state;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use crate::grid::auth::require_api_key;

pub use error::ApiError;
pub use state::{ApiConfig, AppState, ReadyModel};

/// Every route, with request ids, tracing, metrics, the body limit and JSON error fallbacks.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.config().max_body_bytes;
    // Model routes need an API key once any is configured; grid reads stay open and grid
    // writes check the operator token in their handlers.
    let model_routes = Router::new()
        .route("/v1/models", get(health::list_models))
        .route("/v1/models/{model}", get(health::get_model))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    let routes = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/v1/grid/envelopes", get(grid::list).post(grid::create))
        .route(
            "/v1/grid/envelopes/{id}",
            get(grid::get).delete(grid::cancel),
        )
        .route("/v1/grid/status", get(grid::status))
        .route("/v1/grid/audit", get(grid::audit))
        .merge(model_routes)
        .fallback(layers::not_found)
        .method_not_allowed_fallback(layers::method_not_allowed)
        .with_state(state);
    layers::apply(routes, max_body_bytes)
}
