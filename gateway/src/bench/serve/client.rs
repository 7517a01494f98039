//! One streamed request of `bench serve`: sends it, reads the server-sent events as they
//! arrive and records what vLLM records (TTFT, each inter-token gap, latency, token counts) plus
//! gridserve's per-request energy. A failure is an outcome with its reason, never an error.

use std::time::Instant;

use futures::StreamExt;
use serde_json::{json, Value};

use super::super::http::error_chain;
use super::super::sse::{parse_chunk, truncate, SseParser};
use super::args::Endpoint;
use super::dataset::SampleRequest;
use super::stats::RequestOutcome;
use crate::engine::Priority;

/// What every request shares.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    /// `base + endpoint path`.
    pub url: String,
    pub endpoint: Endpoint,
    pub model: String,
    pub ignore_eos: bool,
    pub temperature: f64,
}

/// The JSON body for `req` in `tier`.
pub fn body(target: &Target, req: &SampleRequest, tier: Option<Priority>) -> Value {
    let mut body = json!({
        "model": target.model,
        "max_tokens": req.output_len,
        "temperature": target.temperature,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    match target.endpoint {
        Endpoint::Completions => body["prompt"] = json!(req.prompt),
        Endpoint::ChatCompletions => {
            body["messages"] = json!([{"role": "user", "content": req.prompt}])
        }
    }
    // Only when asked: servers that do not know the extension may refuse unknown fields.
    if target.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if let Some(tier) = tier {
        body["priority"] = json!(tier.as_str());
    }
    body
}

/// Sends `req` at `start_s` (seconds since the run began, for the record) and streams it.
pub async fn send(
    target: &Target,
    req: &SampleRequest,
    tier: Option<Priority>,
    start_s: f64,
) -> RequestOutcome {
    let mut outcome = RequestOutcome {
        tier: tier.map(Priority::as_str),
        start_s,
        prompt_tokens: req.prompt_len.unwrap_or(0),
        ..Default::default()
    };
    let start = Instant::now();
    if let Err(error) = stream(target, req, tier, start, &mut outcome).await {
        outcome.success = false;
        outcome.error = Some(error);
    }
    outcome.latency_s = start.elapsed().as_secs_f64();
    outcome
}

async fn stream(
    target: &Target,
    req: &SampleRequest,
    tier: Option<Priority>,
    start: Instant,
    out: &mut RequestOutcome,
) -> Result<(), String> {
    let resp = target
        .client
        .post(&target.url)
        .json(&body(target, req, tier))
        .send()
        .await
        .map_err(|e| format!("request: {}", error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        out.status = Some(status.as_u16());
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", error_message(&text)));
    }
    out.status = Some(status.as_u16());
    let mut bytes_stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let (mut chunks, mut done) = (0usize, false);
    let mut completion = None;
    'read: while let Some(bytes) = bytes_stream.next().await {
        let bytes = bytes.map_err(|e| format!("reading the stream: {}", error_chain(&e)))?;
        let now = Instant::now();
        let mut events = parser.push(&bytes);
        if events.is_empty() {
            continue;
        }
        for data in events.drain(..) {
            let Some(chunk) = parse_chunk(&data)? else {
                done = true;
                break 'read;
            };
            if chunk.content {
                chunks += 1;
                first.get_or_insert(now);
                if let Some(prev) = last {
                    out.itl_s.push((now - prev).as_secs_f64());
                }
                last = Some(now);
            }
            if let Some(n) = chunk.completion_tokens {
                completion = Some(n);
                out.prompt_tokens = chunk.prompt_tokens.unwrap_or(out.prompt_tokens);
                out.energy_joules = chunk.energy_joules;
                out.energy_source = chunk.energy_source;
            }
        }
    }
    if !done && parser.finish().as_deref().map(str::trim) == Some("[DONE]") {
        done = true;
    }
    if !done {
        return Err("the stream ended without data: [DONE]".into());
    }
    let first = first.ok_or("the stream carried no text")?;
    out.ttft_s = (first - start).as_secs_f64();
    out.output_tokens = completion.unwrap_or(chunks);
    out.success = true;
    Ok(())
}

/// The OpenAI error's message when the body is one, else the body (shortened).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["error"]["message"].as_str()) {
        Some(message) => truncate(message, 300).to_string(),
        None => truncate(body.trim(), 300).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Endpoint, ignore_eos: bool) -> Target {
        Target {
            client: reqwest::Client::new(),
            url: String::new(),
            endpoint,
            model: "m".into(),
            ignore_eos,
            temperature: 0.0,
        }
    }

    #[test]
    fn bodies_follow_the_endpoint_and_carry_extensions_only_when_asked() {
        let req = SampleRequest {
            prompt: "hi".into(),
            prompt_len: Some(1),
            output_len: 7,
            arrival_s: None,
            tier: None,
        };
        let b = body(&target(Endpoint::Completions, false), &req, None);
        assert_eq!(b["prompt"], "hi");
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(b.get("ignore_eos").is_none() && b.get("priority").is_none());
        let b = body(
            &target(Endpoint::ChatCompletions, true),
            &req,
            Some(Priority::Flexible),
        );
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(
            (b["ignore_eos"].clone(), b["priority"].clone()),
            (json!(true), json!("flexible"))
        );
    }

    #[test]
    fn error_bodies_give_the_openai_message() {
        let body = r#"{"error":{"message":"the waiting queue is full","type":"rate_limit_error"}}"#;
        assert_eq!(error_message(body), "the waiting queue is full");
        assert_eq!(error_message("  plain text \n"), "plain text");
    }
}
