//! Checks a request's generation parameters and turns them into a `Plan`: sampling settings,
//! stops, `n`, streaming. Every violation is a 400 naming the parameter.

use gridserve_models::sampling::SamplingParams;
use serde_json::Value;

use super::error::ApiError;
use super::request::OpenAiRequest;
use super::state::ApiConfig;
use crate::engine::Priority;

/// The legacy completions API caps `logprobs` at 5; chat's `top_logprobs` at 20.
const MAX_COMPLETION_LOGPROBS: u64 = 5;
const MAX_TOP_LOGPROBS: u64 = 20;
/// More stop strings only cost matching time per token; OpenAI allows 4, vLLM has no limit.
const MAX_STOPS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// What to generate, independent of the prompt.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sampling: SamplingParams,
    /// Tokens the client asked for; `None` means the endpoint's default.
    pub max_tokens: Option<usize>,
    pub stops: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    /// Choices per prompt.
    pub n: usize,
    pub ignore_eos: bool,
    pub priority: Priority,
    pub stream: bool,
    pub include_usage: bool,
}

impl Plan {
    pub fn wants_logprobs(&self) -> bool {
        self.sampling.logprobs.is_some()
    }
}

/// `key_tier` is the caller's API-key default tier, used when the request names none.
pub fn plan(
    req: &OpenAiRequest,
    endpoint: Endpoint,
    config: &ApiConfig,
    vocab_size: usize,
    key_tier: Option<Priority>,
) -> Result<Plan, ApiError> {
    reject_unsupported(req)?;
    let sampling = SamplingParams {
        temperature: req.temperature.unwrap_or(1.0),
        top_k: top_k(req.top_k)?,
        top_p: req.top_p.unwrap_or(1.0),
        min_p: req.min_p.unwrap_or(0.0),
        // Negative seeds are valid in OpenAI's API; any fixed mapping to u64 keeps them reproducible.
        seed: req.seed.map(|s| s as u64),
        presence_penalty: req.presence_penalty.unwrap_or(0.0),
        frequency_penalty: req.frequency_penalty.unwrap_or(0.0),
        repetition_penalty: req.repetition_penalty.unwrap_or(1.0),
        logprobs: logprobs(req, endpoint)?,
    };
    sampling.validate()?;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_param(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    let stop_token_ids = req.stop_token_ids.clone().unwrap_or_default();
    if let Some(id) = stop_token_ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ApiError::invalid_param(
            "stop_token_ids",
            format!("token id {id} is outside the vocabulary"),
        ));
    }
    Ok(Plan {
        sampling,
        max_tokens: max_tokens(req)?,
        stops: stops(req.stop.as_ref())?,
        stop_token_ids,
        n: choices(req.n, config.max_n)?,
        ignore_eos: req.ignore_eos.unwrap_or(false),
        priority: req
            .priority
            .map(Priority::from)
            .or(key_tier)
            .unwrap_or_default(),
        stream,
        include_usage: req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// Known OpenAI features gridserve lacks get a 400 instead of a silently different answer.
fn reject_unsupported(req: &OpenAiRequest) -> Result<(), ApiError> {
    let non_empty = |v: &Option<Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    // "none" and "auto" ask for no tool call when no tools are given, which is what happens.
    let forces_tool = |v: &Option<Value>| {
        non_empty(v) && !matches!(v.as_ref().and_then(Value::as_str), Some("none" | "auto"))
    };
    let tool_detail = ": tool and function calling are not implemented";
    for (param, given) in [
        ("tools", non_empty(&req.tools)),
        ("functions", non_empty(&req.functions)),
    ] {
        if given {
            return Err(ApiError::unsupported(param, tool_detail));
        }
    }
    for (param, value) in [
        ("tool_choice", &req.tool_choice),
        ("function_call", &req.function_call),
    ] {
        if forces_tool(value) {
            return Err(ApiError::unsupported(param, tool_detail));
        }
    }
    if let Some(format) = req.response_format.as_ref().filter(|v| !v.is_null()) {
        if format.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                ": only {\"type\": \"text\"} is available",
            ));
        }
    }
    if req.echo == Some(true) {
        return Err(ApiError::unsupported("echo", ""));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::unsupported(
            "best_of",
            ": only best_of = 1 is available",
        ));
    }
    if non_empty(&req.logit_bias) {
        return Err(ApiError::unsupported("logit_bias", ""));
    }
    if non_empty(&req.suffix) {
        return Err(ApiError::unsupported("suffix", ""));
    }
    Ok(())
}

/// vLLM's convention: -1 or 0 disable top-k; below -1 is a mistake.
fn top_k(k: Option<i64>) -> Result<Option<usize>, ApiError> {
    match k {
        None | Some(-1 | 0) => Ok(None),
        Some(k) if k > 0 => Ok(Some(usize::try_from(k).unwrap_or(usize::MAX))),
        Some(k) => Err(ApiError::invalid_param(
            "top_k",
            format!("must be -1 (disabled) or at least 1, got {k}"),
        )),
    }
}

fn logprobs(req: &OpenAiRequest, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let value = req.logprobs.as_ref().filter(|v| !v.is_null());
    match endpoint {
        Endpoint::Completions => match value {
            None => Ok(None),
            Some(v) => match v.as_u64().filter(|&k| k <= MAX_COMPLETION_LOGPROBS) {
                Some(k) => Ok(Some(k as usize)),
                None => Err(ApiError::invalid_param(
                    "logprobs",
                    format!("must be an integer from 0 to {MAX_COMPLETION_LOGPROBS}, got {v}"),
                )),
            },
        },
        Endpoint::Chat => {
            let on = match value {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(ApiError::invalid_param(
                        "logprobs",
                        format!("must be a boolean, got {v}"),
                    ))
                }
            };
            match req.top_logprobs {
                Some(k) if k > MAX_TOP_LOGPROBS => Err(ApiError::invalid_param(
                    "top_logprobs",
                    format!("must be from 0 to {MAX_TOP_LOGPROBS}, got {k}"),
                )),
                Some(k) if k > 0 && !on => Err(ApiError::invalid_param(
                    "top_logprobs",
                    "`logprobs` must be true when `top_logprobs` is used",
                )),
                k => Ok(on.then(|| k.unwrap_or(0) as usize)),
            }
        }
    }
}

/// `max_completion_tokens` (OpenAI's newer name) wins over `max_tokens`.
fn max_tokens(req: &OpenAiRequest) -> Result<Option<usize>, ApiError> {
    let (param, value) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(v), _) => ("max_completion_tokens", v),
        (None, Some(v)) => ("max_tokens", v),
        (None, None) => return Ok(None),
    };
    if value == 0 {
        return Err(ApiError::invalid_param(param, "must be at least 1"));
    }
    Ok(Some(usize::try_from(value).unwrap_or(usize::MAX)))
}

fn stops(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let items = match stop {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "stop",
                format!("must be a string or a list of strings, got {other}"),
            ))
        }
    };
    if items.len() > MAX_STOPS {
        return Err(ApiError::invalid_param(
            "stop",
            format!("at most {MAX_STOPS} stop strings are allowed"),
        ));
    }
    items
        .iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                ApiError::invalid_param("stop", format!("must contain only strings, got {v}"))
            })
        })
        .collect()
}

fn choices(n: Option<u64>, max_n: usize) -> Result<usize, ApiError> {
    match n {
        None => Ok(1),
        Some(n) if n >= 1 && n <= max_n as u64 => Ok(n as usize),
        Some(n) => Err(ApiError::invalid_param(
            "n",
            format!("must be from 1 to {max_n}, got {n}"),
        )),
    }
}
