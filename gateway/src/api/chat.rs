//! `POST /v1/chat/completions`: the chat API, streaming or not.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::choice::ChoiceResult;
use super::error::ApiError;
use super::extract::ApiJson;
use super::logprobs::{chat_json, TokenInfo};
use super::params::{plan, Endpoint};
use super::prompt::{chat_prompt, completion_budget, PromptJob};
use super::request::OpenAiRequest;
use super::respond::{respond, WholeFormat};
use super::serving::{check_model, context_limit, serving_model};
use super::sse::ChunkFormat;
use super::state::AppState;
use crate::grid::auth::KeyTier;

pub async fn chat_completions(
    State(state): State<AppState>,
    key_tier: Option<Extension<KeyTier>>,
    ApiJson(req): ApiJson<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let model = serving_model(&state)?;
    check_model(req.model.as_deref(), &model.model_name)?;
    let plan = plan(
        &req,
        Endpoint::Chat,
        state.config(),
        model.engine.info().vocab_size,
        key_tier.map(|Extension(KeyTier(tier))| tier),
    )?;
    let ids = chat_prompt(model, req.messages.as_deref())?;
    // Without `max_tokens` a chat reply may use the whole rest of the context, as on OpenAI.
    let max_tokens = completion_budget(
        context_limit(model),
        ids.len(),
        plan.max_tokens,
        None,
        "messages",
    )?;
    respond(ChatChunks, model, &[PromptJob { ids, max_tokens }], &plan).await
}

struct ChatChunks;

impl WholeFormat for ChatChunks {
    const ID_PREFIX: &'static str = "chatcmpl";
    const WHOLE_OBJECT: &'static str = "chat.completion";

    fn choice(&self, index: usize, r: &ChoiceResult, logprobs: bool) -> Value {
        json!({
            "index": index,
            "message": {"role": "assistant", "content": r.text},
            "logprobs": logprobs.then(|| chat_json(&r.logprobs)),
            "finish_reason": r.finish_reason,
        })
    }
}

impl ChunkFormat for ChatChunks {
    const OBJECT: &'static str = "chat.completion.chunk";

    fn opening(&self, index: usize) -> Option<Value> {
        Some(
            json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
        )
    }

    fn delta(&self, index: usize, text: String, logprobs: Option<&[TokenInfo]>) -> Value {
        json!({"index": index, "delta": {"content": text}, "logprobs": logprobs.map(chat_json), "finish_reason": null})
    }

    fn finish(&self, index: usize, reason: &str) -> Value {
        json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})
    }
}
