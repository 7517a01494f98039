//! Choices: submitting one engine request per choice, and turning each request's token events
//! into text — incremental detokenization, stop strings, logprobs — as `ChoiceEvent`s.

use std::sync::Arc;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use gridserve_models::stop::{StopMatcher, StopOutcome};
use gridserve_models::tokenizer::{DecodeStream, TextTokenizer};

use super::error::ApiError;
use super::generator::{generate, Emitter};
use super::logprobs::TokenInfo;
use super::params::Plan;
use super::prompt::PromptJob;
use crate::engine::{EngineEvent, EnginePool, GenerationRequest, RequestStream};

/// What happened to one choice since its last event.
#[derive(Clone, Debug)]
pub enum ChoiceEvent {
    /// New text (possibly empty when a stop string might be starting) and, when requested,
    /// the tokens it came from.
    Delta {
        text: String,
        logprobs: Vec<TokenInfo>,
    },
    /// The last event of a choice that ended normally; `completion_tokens` counts every
    /// generated token, including an end-of-sequence token and those behind a stop string.
    Finished {
        reason: &'static str,
        completion_tokens: usize,
        /// The request's energy share (the last token's running total), when metered.
        energy_joules: Option<f64>,
    },
    /// The last event of a choice the engine could not complete (or refused for now).
    Failed(ApiError),
}

/// Every choice's events, interleaved, tagged with the choice index.
pub type ChoiceEvents = BoxStream<'static, (usize, ChoiceEvent)>;

/// Submits `plan.n` requests per prompt; choice `j` of prompt `i` has index `i * n + j` as on
/// OpenAI. With a seed, choice `j` uses `seed + j`, so a prompt's choices differ from each other
/// but each prompt gets the same answers alone or in a batch. If any submission fails, the ones
/// already made are dropped, which cancels them.
pub fn submit_all(
    engine: &EnginePool,
    jobs: &[PromptJob],
    plan: &Plan,
) -> Result<Vec<(usize, RequestStream)>, ApiError> {
    let mut streams = Vec::with_capacity(jobs.len() * plan.n);
    for (i, job) in jobs.iter().enumerate() {
        for j in 0..plan.n {
            let mut sampling = plan.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(j as u64));
            let request = GenerationRequest {
                prompt: job.ids.clone(),
                sampling,
                max_tokens: job.max_tokens,
                stop_token_ids: plan.stop_token_ids.clone(),
                ignore_eos: plan.ignore_eos,
                priority: plan.priority,
            };
            streams.push((i * plan.n + j, engine.submit(request)?));
        }
    }
    Ok(streams)
}

/// Merges the choices' event streams. Dropping the result drops every `RequestStream`, which
/// aborts whatever is still generating.
pub fn choice_events(
    streams: Vec<(usize, RequestStream)>,
    tok: &Arc<TextTokenizer>,
    plan: &Plan,
) -> ChoiceEvents {
    let all = streams.into_iter().map(|(index, requests)| {
        let (tok, stops, logprobs) = (tok.clone(), plan.stops.clone(), plan.wants_logprobs());
        let events = generate(move |out| run_choice(out, tok, requests, stops, logprobs));
        events.map(move |e| (index, e)).boxed()
    });
    stream::select_all(all).boxed()
}

/// Follows one engine request to its end. Returning drops `requests`: after a stop string
/// that is what tells the engine to stop generating.
async fn run_choice(
    mut out: Emitter<ChoiceEvent>,
    tok: Arc<TextTokenizer>,
    mut requests: RequestStream,
    stops: Vec<String>,
    want_logprobs: bool,
) {
    let mut decoder = DecodeStream::new(&tok, true);
    let mut stop = StopMatcher::new(stops);
    let (mut generated, mut text_len) = (0usize, 0usize);
    let mut energy_joules = None;
    while let Some(event) = requests.next().await {
        let token = match event {
            EngineEvent::Token(token) => token,
            EngineEvent::Finished { reason } => {
                let rest = stop.flush();
                if !rest.is_empty()
                    && !out
                        .emit(ChoiceEvent::Delta {
                            text: rest,
                            logprobs: Vec::new(),
                        })
                        .await
                {
                    return;
                }
                out.emit(ChoiceEvent::Finished {
                    reason: reason.as_str(),
                    completion_tokens: generated,
                    energy_joules,
                })
                .await;
                return;
            }
            EngineEvent::Failed {
                message,
                retry_after,
            } => {
                out.emit(ChoiceEvent::Failed(failure(message, retry_after)))
                    .await;
                return;
            }
        };
        generated += 1;
        energy_joules = token.energy_joules.or(energy_joules);
        let piece = match decoder.push(token.token) {
            Ok(piece) => piece.unwrap_or_default(),
            Err(e) => {
                out.emit(ChoiceEvent::Failed(ApiError::internal(e.to_string())))
                    .await;
                return;
            }
        };
        let logprobs = if want_logprobs {
            vec![TokenInfo::new(&tok, &token, text_len)]
        } else {
            Vec::new()
        };
        text_len += piece.len();
        let (text, stopped) = match stop.push(&piece) {
            StopOutcome::Continue(text) => (text, false),
            StopOutcome::Stopped(text) => (text, true),
        };
        if (!text.is_empty() || !logprobs.is_empty())
            && !out.emit(ChoiceEvent::Delta { text, logprobs }).await
        {
            return;
        }
        if stopped {
            out.emit(ChoiceEvent::Finished {
                reason: "stop",
                completion_tokens: generated,
                energy_joules,
            })
            .await;
            return;
        }
    }
    // The engine dropped the request without a last event: it has gone away.
    out.emit(ChoiceEvent::Failed(ApiError::internal(
        "the engine stopped before the request finished",
    )))
    .await;
}

/// The client's error for an engine failure: 503 with `Retry-After` for a request refused
/// for now (deferred past its deadline), else 500.
fn failure(message: String, retry_after: Option<std::time::Duration>) -> ApiError {
    match retry_after {
        Some(wait) => ApiError::deferred(message, wait),
        None => ApiError::internal(message),
    }
}

/// A whole choice, for non-streaming responses.
#[derive(Clone, Debug, Default)]
pub struct ChoiceResult {
    pub text: String,
    pub logprobs: Vec<TokenInfo>,
    pub finish_reason: &'static str,
    pub completion_tokens: usize,
    pub energy_joules: Option<f64>,
}

/// Runs every choice to its end; the first failure fails the request (500, or 503 for a
/// deferral past its deadline) and cancels the rest.
pub async fn collect(
    mut events: ChoiceEvents,
    choices: usize,
) -> Result<Vec<ChoiceResult>, ApiError> {
    let mut results = vec![ChoiceResult::default(); choices];
    while let Some((index, event)) = events.next().await {
        let Some(result) = results.get_mut(index) else {
            continue;
        };
        match event {
            ChoiceEvent::Delta { text, logprobs } => {
                result.text.push_str(&text);
                result.logprobs.extend(logprobs);
            }
            ChoiceEvent::Finished {
                reason,
                completion_tokens,
                energy_joules,
            } => {
                result.finish_reason = reason;
                result.completion_tokens = completion_tokens;
                result.energy_joules = energy_joules;
            }
            ChoiceEvent::Failed(error) => return Err(error),
        }
    }
    Ok(results)
}
