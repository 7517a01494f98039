//! Whether a generation request can be served at all: the model is loaded, the server is not
//! draining, and the request names the served model.

use super::error::ApiError;
use super::state::{AppState, ReadyModel};

/// The model to run a new generation request on, or 503.
pub fn serving_model(state: &AppState) -> Result<&ReadyModel, ApiError> {
    if state.is_draining() {
        return Err(ApiError::draining());
    }
    state.ready().ok_or_else(ApiError::not_ready)
}

/// `model` may be omitted (vLLM serves its one model then); naming another model is a 404,
/// as on OpenAI, rather than silently answering with a different model.
pub fn check_model(requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        Some(name) if name != served => Err(ApiError::model_not_found(name)),
        _ => Ok(()),
    }
}

/// Most tokens (prompt + completion) one sequence may hold: the model's context, or the whole
/// KV cache if that is smaller — the scheduler could never finish a longer sequence.
pub fn context_limit(model: &ReadyModel) -> usize {
    let info = model.engine.info();
    info.max_seq_len
        .min(info.num_blocks.saturating_mul(info.block_size))
}
