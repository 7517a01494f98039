//! `POST /v1/chat/completions`: the chat API, streaming or not.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::choice::{choice_events, collect, submit_all, ChoiceResult};
use super::error::ApiError;
use super::extract::ApiJson;
use super::logprobs::{chat_json, TokenInfo};
use super::params::{plan, Endpoint};
use super::prompt::{chat_prompt, completion_budget, PromptJob};
use super::request::OpenAiRequest;
use super::response::{total_energy, with_energy_header, ResponseMeta, Usage};
use super::serving::{check_model, context_limit, serving_model};
use super::sse::{stream_response, ChunkFormat, StreamSetup};
use super::state::AppState;
use crate::power::EnergySource;

pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let model = serving_model(&state)?;
    check_model(req.model.as_deref(), &model.model_name)?;
    let plan = plan(
        &req,
        Endpoint::Chat,
        state.config(),
        model.engine.info().vocab_size,
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
    let prompt_tokens = ids.len();
    let streams = submit_all(&model.engine, &[PromptJob { ids, max_tokens }], &plan)?;
    let choices = streams.len();
    let events = choice_events(streams, &model.tokenizer, &plan);
    let meta = ResponseMeta::new("chatcmpl", &model.model_name);
    if plan.stream {
        let setup = StreamSetup {
            choices,
            prompt_tokens,
            include_usage: plan.include_usage,
            logprobs: plan.wants_logprobs(),
            energy_source: model.engine.energy_source(),
        };
        return Ok(stream_response(ChatChunks, meta, events, setup));
    }
    let results = collect(events, choices).await?;
    let energy = model.engine.energy_source();
    let body = body(
        &meta,
        &results,
        prompt_tokens,
        plan.wants_logprobs(),
        energy,
    );
    Ok(with_energy_header(Json(body).into_response(), &results))
}

fn body(
    meta: &ResponseMeta,
    results: &[ChoiceResult],
    prompt_tokens: usize,
    logprobs: bool,
    energy_source: Option<EnergySource>,
) -> Value {
    let choices = results
        .iter()
        .enumerate()
        .map(|(index, r)| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": logprobs.then(|| chat_json(&r.logprobs)),
                "finish_reason": r.finish_reason,
            })
        })
        .collect();
    let completion_tokens = results.iter().map(|r| r.completion_tokens).sum();
    meta.object(
        "chat.completion",
        choices,
        Some(json!(Usage::new(prompt_tokens, completion_tokens)
            .with_energy(
                total_energy(results.iter().map(|r| r.energy_joules)),
                energy_source
            ))),
    )
}

struct ChatChunks;

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
