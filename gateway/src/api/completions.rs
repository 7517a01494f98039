//! `POST /v1/completions`: the legacy text completions API, streaming or not.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::choice::ChoiceResult;
use super::error::ApiError;
use super::extract::ApiJson;
use super::logprobs::{completion_json, TokenInfo};
use super::params::{plan, Endpoint};
use super::prompt::{completion_budget, completion_prompts, PromptJob};
use super::request::OpenAiRequest;
use super::respond::{respond, WholeFormat};
use super::serving::{check_model, context_limit, serving_model};
use super::sse::ChunkFormat;
use super::state::AppState;
use crate::grid::auth::KeyTier;

const OBJECT: &str = "text_completion";

pub async fn completions(
    State(state): State<AppState>,
    key_tier: Option<Extension<KeyTier>>,
    ApiJson(req): ApiJson<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let model = serving_model(&state)?;
    check_model(req.model.as_deref(), &model.model_name)?;
    let plan = plan(
        &req,
        Endpoint::Completions,
        state.config(),
        model.engine.info().vocab_size,
        key_tier.map(|Extension(KeyTier(tier))| tier),
    )?;
    let limit = context_limit(model);
    let default = state.config().default_completion_max_tokens;
    let jobs = completion_prompts(model, req.prompt.as_ref())?
        .into_iter()
        .map(|ids| {
            let max_tokens =
                completion_budget(limit, ids.len(), plan.max_tokens, Some(default), "prompt")?;
            Ok(PromptJob { ids, max_tokens })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    respond(CompletionChunks, model, &jobs, &plan).await
}

struct CompletionChunks;

impl WholeFormat for CompletionChunks {
    const ID_PREFIX: &'static str = "cmpl";
    const WHOLE_OBJECT: &'static str = OBJECT;

    fn choice(&self, index: usize, r: &ChoiceResult, logprobs: bool) -> Value {
        json!({
            "index": index,
            "text": r.text,
            "logprobs": logprobs.then(|| completion_json(&r.logprobs)),
            "finish_reason": r.finish_reason,
        })
    }
}

impl ChunkFormat for CompletionChunks {
    const OBJECT: &'static str = OBJECT;

    fn opening(&self, _index: usize) -> Option<Value> {
        None
    }

    fn delta(&self, index: usize, text: String, logprobs: Option<&[TokenInfo]>) -> Value {
        json!({"index": index, "text": text, "logprobs": logprobs.map(completion_json), "finish_reason": null})
    }

    fn finish(&self, index: usize, reason: &str) -> Value {
        json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason})
    }
}
