//! `POST /v1/completions`: the legacy text completions API, streaming or not.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::choice::{choice_events, collect, submit_all, ChoiceResult};
use super::error::ApiError;
use super::extract::ApiJson;
use super::logprobs::{completion_json, TokenInfo};
use super::params::{plan, Endpoint};
use super::prompt::{completion_budget, completion_prompts, PromptJob};
use super::request::OpenAiRequest;
use super::response::{total_energy, with_energy_header, ResponseMeta, Usage};
use super::serving::{check_model, context_limit, serving_model};
use super::sse::{stream_response, ChunkFormat, StreamSetup};
use super::state::AppState;
use crate::power::EnergySource;

const OBJECT: &str = "text_completion";

pub async fn completions(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OpenAiRequest>,
) -> Result<Response, ApiError> {
    let model = serving_model(&state)?;
    check_model(req.model.as_deref(), &model.model_name)?;
    let plan = plan(
        &req,
        Endpoint::Completions,
        state.config(),
        model.engine.info().vocab_size,
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
    let prompt_tokens = jobs.iter().map(|j| j.ids.len()).sum();
    let streams = submit_all(&model.engine, &jobs, &plan)?;
    let choices = streams.len();
    let events = choice_events(streams, &model.tokenizer, &plan);
    let meta = ResponseMeta::new("cmpl", &model.model_name);
    if plan.stream {
        let setup = StreamSetup {
            choices,
            prompt_tokens,
            include_usage: plan.include_usage,
            logprobs: plan.wants_logprobs(),
            energy_source: model.engine.energy_source(),
        };
        return Ok(stream_response(CompletionChunks, meta, events, setup));
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
                "text": r.text,
                "logprobs": logprobs.then(|| completion_json(&r.logprobs)),
                "finish_reason": r.finish_reason,
            })
        })
        .collect();
    let completion_tokens = results.iter().map(|r| r.completion_tokens).sum();
    meta.object(
        OBJECT,
        choices,
        Some(json!(Usage::new(prompt_tokens, completion_tokens)
            .with_energy(
                total_energy(results.iter().map(|r| r.energy_joules)),
                energy_source
            ))),
    )
}

struct CompletionChunks;

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
