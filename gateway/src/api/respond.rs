//! The part both generation endpoints share: submit the prompts' choices, then either stream
//! them as SSE chunks or wait for all of them and build one response body.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::choice::{choice_events, collect, submit_all, ChoiceResult};
use super::error::ApiError;
use super::params::Plan;
use super::prompt::PromptJob;
use super::response::{total_energy, with_energy_header, ResponseMeta, Usage};
use super::sse::{stream_response, ChunkFormat, StreamSetup};
use super::state::ReadyModel;

/// What differs between a whole completions response and a whole chat response.
pub trait WholeFormat: ChunkFormat {
    /// `id` prefix (`cmpl`, `chatcmpl`).
    const ID_PREFIX: &'static str;
    /// `object` of a non-streaming response.
    const WHOLE_OBJECT: &'static str;
    /// One finished choice of a non-streaming response.
    fn choice(&self, index: usize, result: &ChoiceResult, logprobs: bool) -> Value;
}

pub async fn respond<F: WholeFormat>(
    format: F,
    model: &ReadyModel,
    jobs: &[PromptJob],
    plan: &Plan,
) -> Result<Response, ApiError> {
    let prompt_tokens = jobs.iter().map(|j| j.ids.len()).sum();
    let streams = submit_all(&model.engine, jobs, plan)?;
    let choices = streams.len();
    let events = choice_events(streams, &model.tokenizer, plan);
    let meta = ResponseMeta::new(F::ID_PREFIX, &model.model_name);
    let energy_source = model.engine.energy_source();
    if plan.stream {
        let setup = StreamSetup {
            choices,
            prompt_tokens,
            include_usage: plan.include_usage,
            logprobs: plan.wants_logprobs(),
            energy_source,
        };
        return Ok(stream_response(format, meta, events, setup));
    }
    let results = collect(events, choices).await?;
    let body_choices = results
        .iter()
        .enumerate()
        .map(|(index, r)| format.choice(index, r, plan.wants_logprobs()))
        .collect();
    let completion_tokens = results.iter().map(|r| r.completion_tokens).sum();
    let usage = Usage::new(prompt_tokens, completion_tokens).with_energy(
        total_energy(results.iter().map(|r| r.energy_joules)),
        energy_source,
    );
    let body = meta.object(F::WHOLE_OBJECT, body_choices, Some(json!(usage)));
    Ok(with_energy_header(Json(body).into_response(), &results))
}
