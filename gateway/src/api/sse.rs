//! Streaming responses: choice events become Server-Sent Events, `data: {chunk}\n\n` each, then
//! an optional usage chunk and `data: [DONE]`. The endpoint decides what a chunk's choice looks
//! like (`ChunkFormat`); the framing and the ending are shared here.

use std::convert::Infallible;

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use super::choice::{ChoiceEvent, ChoiceEvents};
use super::generator::{generate, Emitter};
use super::logprobs::TokenInfo;
use super::response::{total_energy, ResponseMeta, Usage};
use crate::power::EnergySource;

/// How one endpoint writes the choice objects of its chunks.
pub trait ChunkFormat: Send + 'static {
    /// The chunks' `object`.
    const OBJECT: &'static str;
    /// A choice's first chunk, sent before any token (chat announces the role).
    fn opening(&self, index: usize) -> Option<Value>;
    /// New text; `logprobs` is `None` when the client did not ask for them.
    fn delta(&self, index: usize, text: String, logprobs: Option<&[TokenInfo]>) -> Value;
    fn finish(&self, index: usize, reason: &str) -> Value;
}

/// What the stream needs to know beyond the events.
#[derive(Clone, Copy, Debug)]
pub struct StreamSetup {
    pub choices: usize,
    pub prompt_tokens: usize,
    pub include_usage: bool,
    pub logprobs: bool,
    pub energy_source: Option<EnergySource>,
}

pub fn stream_response<F: ChunkFormat>(
    format: F,
    meta: ResponseMeta,
    events: ChoiceEvents,
    setup: StreamSetup,
) -> Response {
    let body = generate(move |out| write_stream(out, format, meta, events, setup));
    let sse = Sse::new(body.map(Ok::<_, Infallible>));
    let mut response = sse.into_response();
    // Proxies such as nginx otherwise buffer the stream and the client sees tokens in bursts.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

/// Drives the stream. When the client goes away the body — and with it this future and every
/// choice's `RequestStream` — is dropped, which cancels the generation.
async fn write_stream<F: ChunkFormat>(
    mut out: Emitter<Event>,
    format: F,
    meta: ResponseMeta,
    mut events: ChoiceEvents,
    setup: StreamSetup,
) {
    // OpenAI puts `"usage": null` on every chunk when usage is coming at the end.
    let usage_field = setup.include_usage.then_some(Value::Null);
    let chunk = |choice: Value| meta.object(F::OBJECT, vec![choice], usage_field.clone());
    for index in 0..setup.choices {
        if let Some(choice) = format.opening(index) {
            if !out.emit(data(&chunk(choice))).await {
                return;
            }
        }
    }
    let mut completion_tokens = 0;
    let mut energy = Vec::new();
    while let Some((index, event)) = events.next().await {
        let choice = match event {
            ChoiceEvent::Delta { text, logprobs } => {
                format.delta(index, text, setup.logprobs.then_some(&logprobs[..]))
            }
            ChoiceEvent::Finished {
                reason,
                completion_tokens: n,
                energy_joules,
            } => {
                completion_tokens += n;
                energy.push(energy_joules);
                format.finish(index, reason)
            }
            ChoiceEvent::Failed(error) => {
                // Headers are long sent: the error can only travel as an event of its own.
                out.emit(data(&error.body())).await;
                out.emit(done()).await;
                return;
            }
        };
        if !out.emit(data(&chunk(choice))).await {
            return;
        }
    }
    if setup.include_usage {
        let usage = Usage::new(setup.prompt_tokens, completion_tokens)
            .with_energy(total_energy(energy), setup.energy_source);
        let usage = json!(usage);
        out.emit(data(&meta.object(F::OBJECT, Vec::new(), Some(usage))))
            .await;
    }
    out.emit(done()).await;
}

fn data(value: &Value) -> Event {
    // Compact JSON has no raw newlines or carriage returns, so it is a single `data:` line.
    Event::default().data(value.to_string())
}

fn done() -> Event {
    Event::default().data("[DONE]")
}
