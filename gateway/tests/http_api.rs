//! The HTTP API end to end: a real server on a local port, the fake backend behind it, and
//! assertions on exactly what an OpenAI client sees.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{json, sse_chunks, sse_events, start, wait_until, Options, MAX_SEQ_LEN, MODEL};
use futures::StreamExt;
use gridserve::api::ApiConfig;
use serde_json::{json, Value};

const COMPLETIONS: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";

fn error_of(body: &Value) -> (&str, &Value, &Value) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error needs a message: {body}"
    );
    (
        e["type"].as_str().unwrap_or_default(),
        &e["param"],
        &e["code"],
    )
}

#[tokio::test]
async fn before_ready_only_health_answers() {
    let server = start(Options {
        ready: false,
        ..Options::default()
    })
    .await;
    let (status, body) = json(server.get("/health").await).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    for path in ["/ready", "/v1/models"] {
        let (status, body) = json(server.get(path).await).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(error_of(&body).0, "server_error");
    }
    let (status, _) = json(
        server
            .post(COMPLETIONS, &json!({"model": MODEL, "prompt": "a"}))
            .await,
    )
    .await;
    assert_eq!(status, 503);
    let (status, _) = json(
        server
            .post(
                CHAT,
                &json!({"messages": [{"role": "user", "content": "hi"}]}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn ready_and_model_list() {
    let server = start(Options::default()).await;
    let (status, _) = json(server.get("/ready").await).await;
    assert_eq!(status, 200);
    let (status, body) = json(server.get("/v1/models").await).await;
    assert_eq!(status, 200);
    let card = json!({"id": MODEL, "object": "model", "created": 1_700_000_000u64, "owned_by": "gridserve"});
    assert_eq!(body, json!({"object": "list", "data": [card.clone()]}));
    assert_eq!(json(server.get("/v1/models/fake").await).await, (200, card));
    assert_eq!(json(server.get("/v1/models/other").await).await.0, 404);
    assert_eq!(json(server.get("/v1/models/%FF").await).await.0, 404);
}

#[tokio::test]
async fn draining_refuses_new_work() {
    let server = start(Options::default()).await;
    server.state.start_draining();
    assert_eq!(json(server.get("/ready").await).await.0, 503);
    let (status, body) = json(server.post(COMPLETIONS, &json!({"prompt": "a"})).await).await;
    assert_eq!(status, 503);
    assert_eq!(error_of(&body).2, "server_draining");
    assert_eq!(json(server.get("/health").await).await.0, 200);
}

#[tokio::test]
async fn completion_text_usage_and_shape() {
    let server = start(Options::default()).await;
    let req =
        json!({"model": MODEL, "prompt": "a", "max_tokens": 5, "temperature": 0, "user": "u1"});
    let (status, body) = json(server.post(COMPLETIONS, &req).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], MODEL);
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = json!({"index": 0, "text": "bcdef", "logprobs": null, "finish_reason": "length"});
    assert_eq!(body["choices"], json!([choice]));
    // "a" is BOS + one letter.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7})
    );
}

#[tokio::test]
async fn completion_defaults_end_of_sequence_and_ignore_eos() {
    let server = start(Options::default()).await;
    // No max_tokens: the configured default of 16.
    let (_, body) = json(server.post(COMPLETIONS, &json!({"prompt": "a"})).await).await;
    assert_eq!(body["choices"][0]["text"], "bcdefghijklmnopq");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    // "x" → "y", "z", then the end-of-sequence token, which is counted but not shown.
    let (_, body) = json(
        server
            .post(COMPLETIONS, &json!({"prompt": "x", "max_tokens": 10}))
            .await,
    )
    .await;
    assert_eq!(
        (
            body["choices"][0]["text"].as_str(),
            body["choices"][0]["finish_reason"].as_str()
        ),
        (Some("yz"), Some("stop"))
    );
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let req = json!({"prompt": "x", "max_tokens": 5, "ignore_eos": true});
    let (_, body) = json(server.post(COMPLETIONS, &req).await).await;
    assert_eq!(
        (
            body["choices"][0]["text"].as_str(),
            body["choices"][0]["finish_reason"].as_str()
        ),
        (Some("yz"), Some("length"))
    );
    assert_eq!(body["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn stop_strings_cut_the_text() {
    let server = start(Options::default()).await;
    let (_, body) = json(
        server
            .post(
                COMPLETIONS,
                &json!({"prompt": "a", "stop": "e", "max_tokens": 20}),
            )
            .await,
    )
    .await;
    assert_eq!(body["choices"][0]["text"], "bcd");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // The stop token was generated, so it is billed.
    assert_eq!(body["usage"]["completion_tokens"], 4);
    let req = json!({"prompt": "a", "stop": ["zz", "de"], "max_tokens": 20, "stream": true});
    let text = server.post(COMPLETIONS, &req).await.text().await.unwrap();
    let chunks = sse_chunks(&text);
    let streamed: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "bc");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(server.wait_engine_idle(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn n_and_prompt_lists_index_choices_like_openai() {
    let server = start(Options::default()).await;
    let req = json!({"prompt": ["a", "m"], "n": 2, "max_tokens": 3, "seed": 7});
    let (status, body) = json(server.post(COMPLETIONS, &req).await).await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<(u64, &str)> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["index"].as_u64().unwrap(), c["text"].as_str().unwrap()))
        .collect();
    assert_eq!(texts, vec![(0, "bcd"), (1, "bcd"), (2, "nop"), (3, "nop")]);
    // Each prompt counted once, every choice's tokens counted.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16})
    );
}

#[tokio::test]
async fn completion_stream_framing_interleaves_n_and_reports_usage() {
    let server = start(Options::default()).await;
    let req = json!({"prompt": "a", "n": 2, "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}});
    let response = server.post(COMPLETIONS, &req).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let chunks = sse_chunks(&response.text().await.unwrap());
    let (usage_chunk, chunks) = chunks.split_last().unwrap();
    let mut texts = [String::new(), String::new()];
    let mut finishes = [None, None];
    for chunk in chunks {
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(
            chunk["usage"],
            Value::Null,
            "every chunk carries usage: null"
        );
        assert!(chunk.as_object().unwrap().contains_key("usage"));
        let choice = &chunk["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        texts[i].push_str(choice["text"].as_str().unwrap());
        if let Some(reason) = choice["finish_reason"].as_str() {
            finishes[i] = Some(reason.to_owned());
        }
    }
    assert_eq!(texts, ["bcde", "bcde"]);
    assert_eq!(
        finishes,
        [Some("length".to_owned()), Some("length".to_owned())]
    );
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10})
    );
}

#[tokio::test]
async fn chat_completion_text_and_shape() {
    let server = start(Options::default()).await;
    let req = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "priority": "interactive"});
    let (status, body) = json(server.post(CHAT, &req).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    let message = json!({"role": "assistant", "content": "abcdefghijklmnopqrstuvwxyz"});
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": "stop"}])
    );
    // "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n" is 18 tokens; 26
    // letters plus the end-of-sequence token come back.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 18, "completion_tokens": 27, "total_tokens": 45})
    );
    // Text parts are the same conversation.
    let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]}]});
    let (_, again) = json(server.post(CHAT, &parts).await).await;
    assert_eq!(
        (&again["choices"], &again["usage"]),
        (&body["choices"], &body["usage"])
    );
}

#[tokio::test]
async fn chat_stream_role_deltas_finish_and_usage() {
    let server = start(Options::default()).await;
    let req = json!({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3, "stream": true,
                     "stream_options": {"include_usage": true}});
    let text = server.post(CHAT, &req).await.text().await.unwrap();
    let chunks = sse_chunks(&text);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let first = &chunks[0]["choices"][0];
    assert_eq!(first["delta"], json!({"role": "assistant", "content": ""}));
    let content: String = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "abc");
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"], Value::Null);
    let usage = chunks.last().unwrap();
    assert_eq!(
        (&usage["choices"], &usage["usage"]["completion_tokens"]),
        (&json!([]), &json!(3))
    );
    // Without include_usage there is no usage anywhere.
    let req =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": true});
    let chunks = sse_chunks(&server.post(CHAT, &req).await.text().await.unwrap());
    assert!(chunks
        .iter()
        .all(|c| !c.as_object().unwrap().contains_key("usage")
            && c["choices"].as_array().unwrap().len() == 1));
}

#[tokio::test]
async fn completion_logprobs_legacy_shape() {
    let server = start(Options::default()).await;
    let req = json!({"prompt": "a", "max_tokens": 2, "logprobs": 2});
    let (status, body) = json(server.post(COMPLETIONS, &req).await).await;
    assert_eq!(status, 200, "{body}");
    let lp = &body["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["b", "c"]));
    assert_eq!(lp["text_offset"], json!([0, 1]));
    let token_logprobs = lp["token_logprobs"].as_array().unwrap();
    assert!(
        token_logprobs
            .iter()
            .all(|v| (-0.01..=0.0).contains(&v.as_f64().unwrap())),
        "{lp}"
    );
    let top = lp["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert!(
        top[0].as_object().unwrap().len() == 2 && top[0]["b"].is_number(),
        "{lp}"
    );
}

#[tokio::test]
async fn chat_logprobs_shape() {
    let server = start(Options::default()).await;
    let req = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": true, "top_logprobs": 1});
    let (status, body) = json(server.post(CHAT, &req).await).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(
        (&content[0]["token"], &content[0]["bytes"]),
        (&json!("a"), &json!([97]))
    );
    assert!(content[0]["logprob"].as_f64().unwrap() <= 0.0);
    assert_eq!(content[1]["top_logprobs"].as_array().unwrap().len(), 1);
    assert_eq!(content[1]["top_logprobs"][0]["token"], "b");
    // Streaming chunks carry the same shape.
    let req = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "logprobs": true, "stream": true});
    let chunks = sse_chunks(&server.post(CHAT, &req).await.text().await.unwrap());
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["content"][0]["token"],
        "a"
    );
}

#[tokio::test]
async fn invalid_parameters_are_400_naming_the_param() {
    let server = start(Options::default()).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            COMPLETIONS,
            json!({"prompt": "a", "temperature": 3}),
            "temperature",
        ),
        (
            COMPLETIONS,
            json!({"prompt": "a", "temperature": "hot"}),
            "temperature",
        ),
        (COMPLETIONS, json!({"prompt": "a", "top_p": 0}), "top_p"),
        (COMPLETIONS, json!({"prompt": "a", "top_k": -5}), "top_k"),
        (COMPLETIONS, json!({"prompt": "a", "min_p": 2}), "min_p"),
        (
            COMPLETIONS,
            json!({"prompt": "a", "presence_penalty": 3}),
            "presence_penalty",
        ),
        (
            COMPLETIONS,
            json!({"prompt": "a", "repetition_penalty": 0}),
            "repetition_penalty",
        ),
        (COMPLETIONS, json!({"prompt": "a", "n": 0}), "n"),
        (COMPLETIONS, json!({"prompt": "a", "n": 99}), "n"),
        (
            COMPLETIONS,
            json!({"prompt": "a", "max_tokens": 0}),
            "max_tokens",
        ),
        (
            COMPLETIONS,
            json!({"prompt": "a", "max_tokens": -1}),
            "max_tokens",
        ),
        (
            COMPLETIONS,
            json!({"prompt": "a", "logprobs": 6}),
            "logprobs",
        ),
        (COMPLETIONS, json!({"prompt": "a", "stop": 5}), "stop"),
        (
            COMPLETIONS,
            json!({"prompt": "a", "priority": "urgent"}),
            "priority",
        ),
        (
            COMPLETIONS,
            json!({"prompt": "a", "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (COMPLETIONS, json!({"prompt": "a", "echo": true}), "echo"),
        (COMPLETIONS, json!({"prompt": "a", "best_of": 2}), "best_of"),
        (
            COMPLETIONS,
            json!({"prompt": "a", "logit_bias": {"8": 10}}),
            "logit_bias",
        ),
        (COMPLETIONS, json!({"prompt": "a", "suffix": "z"}), "suffix"),
        (COMPLETIONS, json!({"prompt": ""}), "prompt"),
        (COMPLETIONS, json!({"max_tokens": 2}), "prompt"),
        (COMPLETIONS, json!({"prompt": [8, 9]}), "prompt"),
        (COMPLETIONS, json!({"prompt": ["a", ""]}), "prompt[1]"),
        (CHAT, json!({"messages": []}), "messages"),
        (
            CHAT,
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
            "messages",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function"}]}),
            "tools",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 21, "logprobs": true}),
            "top_logprobs",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": "a"}], "logprobs": 3}),
            "logprobs",
        ),
    ];
    for (path, body, param) in cases {
        let (status, response) = json(server.post(path, &body).await).await;
        assert_eq!(status, 400, "{body} → {response}");
        let (kind, got_param, _) = error_of(&response);
        assert_eq!(
            (kind, got_param.as_str()),
            ("invalid_request_error", Some(param)),
            "{body} → {response}"
        );
    }
    // Accepted: null and trivial values of unsupported parameters, and unknown fields.
    let ok = json!({"prompt": "a", "max_tokens": 1, "tools": [], "logit_bias": {}, "best_of": 1, "echo": false,
                    "response_format": {"type": "text"}, "stop": null, "top_k": -1, "whatever": {"x": 1}});
    assert_eq!(json(server.post(COMPLETIONS, &ok).await).await.0, 200);
}

#[tokio::test]
async fn context_length_is_checked() {
    let server = start(Options::default()).await;
    let (status, body) = json(
        server
            .post(COMPLETIONS, &json!({"prompt": "a", "max_tokens": 100}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    let (_, param, code) = error_of(&body);
    assert_eq!(
        (param, code),
        (&json!("prompt"), &json!("context_length_exceeded"))
    );
    let message = body["error"]["message"].as_str().unwrap();
    let want = format!("maximum context length is {MAX_SEQ_LEN} tokens. However, you requested 102 tokens (2 in the prompt, 100 in the completion)");
    assert!(message.contains(&want), "{message}");
    // Exactly filling the context is fine.
    let (status, _) = json(
        server
            .post(COMPLETIONS, &json!({"prompt": "a", "max_tokens": 62}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let long = "ab".repeat(40);
    let (status, body) = json(
        server
            .post(
                CHAT,
                &json!({"messages": [{"role": "user", "content": long}]}),
            )
            .await,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("context_length_exceeded"))
    );
}

#[tokio::test]
async fn unknown_model_route_and_method() {
    let server = start(Options::default()).await;
    let (status, body) = json(
        server
            .post(COMPLETIONS, &json!({"model": "gpt-4", "prompt": "a"}))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    let (_, param, code) = error_of(&body);
    assert_eq!((param, code), (&json!("model"), &json!("model_not_found")));
    let (status, body) = json(server.get("/v2/nothing").await).await;
    assert_eq!(status, 404);
    error_of(&body);
    let (status, body) = json(server.get(COMPLETIONS).await).await;
    assert_eq!(status, 405);
    error_of(&body);
}

#[tokio::test]
async fn body_errors_415_413_400() {
    let config = ApiConfig {
        max_body_bytes: 16 << 10,
        ..ApiConfig::default()
    };
    let server = start(Options {
        config,
        ..Options::default()
    })
    .await;
    let raw = |body: String, content_type: Option<&str>| {
        let mut req = server.client.post(server.url(COMPLETIONS)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let (status, body) = json(raw(r#"{"prompt":"a"}"#.into(), None).await.unwrap()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (415, &json!("unsupported_media_type"))
    );
    let (status, body) = json(
        raw(r#"{"prompt":"a"}"#.into(), Some("text/plain"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let big = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(32 << 10));
    let (status, body) = json(raw(big, Some("application/json")).await.unwrap()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("payload_too_large"))
    );
    let (status, body) = json(
        raw("{\"prompt\": ".into(), Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_of(&body).0), (400, "invalid_request_error"));
    let (status, _) = json(
        raw("[1, 2]".into(), Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let server = start(Options::default()).await;
    let response = server
        .client
        .get(server.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = server
        .post(COMPLETIONS, &json!({"prompt": "a", "max_tokens": 1}))
        .await;
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
}

#[tokio::test]
async fn metrics_after_a_request() {
    let server = start(Options::default()).await;
    assert_eq!(
        json(
            server
                .post(COMPLETIONS, &json!({"prompt": "a", "max_tokens": 2}))
                .await
        )
        .await
        .0,
        200
    );
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = response.text().await.unwrap();
    for name in [
        "vllm:num_requests_running",
        "vllm:generation_tokens_total",
        "gridserve_http_requests_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains(r#"route="/v1/completions""#), "{text}");
}

#[tokio::test]
async fn engine_failure_is_500_or_an_sse_error_event() {
    let server = start(Options {
        fail_steps: true,
        ..Options::default()
    })
    .await;
    let (status, body) = json(server.post(COMPLETIONS, &json!({"prompt": "a"})).await).await;
    assert_eq!((status, error_of(&body).0), (500, "server_error"));
    let text = server
        .post(
            CHAT,
            &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["type"], "server_error", "{text}");
}

/// Long enough that only cancellation can end it within the test's waits: 60 steps of 30 ms.
fn long_request(stream: bool) -> Value {
    json!({"prompt": "a", "max_tokens": 60, "ignore_eos": true, "stream": stream})
}

#[tokio::test]
async fn streaming_client_disconnect_frees_the_engine() {
    let server = start(Options {
        step_delay: Duration::from_millis(30),
        ..Options::default()
    })
    .await;
    let response = server.post(COMPLETIONS, &long_request(true)).await;
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .expect("a first chunk in time");
    assert!(first.is_some());
    let status = server.engine().status();
    assert!(
        wait_until(Duration::from_secs(1), || status
            .running
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    drop(body);
    assert!(
        server.wait_engine_idle(Duration::from_millis(500)).await,
        "the sequence kept running after disconnect"
    );
}

#[tokio::test]
async fn non_streaming_client_disconnect_frees_the_engine() {
    let server = start(Options {
        step_delay: Duration::from_millis(30),
        ..Options::default()
    })
    .await;
    let request = server
        .client
        .post(server.url(COMPLETIONS))
        .json(&long_request(false))
        .timeout(Duration::from_millis(300));
    let err = request.send().await.expect_err("the client gives up first");
    assert!(err.is_timeout(), "{err}");
    assert!(
        server.wait_engine_idle(Duration::from_millis(500)).await,
        "the sequence kept running after disconnect"
    );
}

#[tokio::test]
async fn full_queue_is_429_with_retry_after() {
    let opts = Options {
        step_delay: Duration::from_millis(20),
        max_waiting: 1,
        max_seqs: 1,
        ..Options::default()
    };
    let server = start(opts).await;
    // One request runs (the budget allows one sequence), one waits: the queue is full.
    let running = server.post(COMPLETIONS, &long_request(true)).await;
    let mut running = running.bytes_stream();
    tokio::time::timeout(Duration::from_secs(2), running.next())
        .await
        .expect("first chunk");
    let waiting = server.post(COMPLETIONS, &long_request(true)).await;
    let status = server.engine().status();
    assert!(
        wait_until(Duration::from_secs(1), || status
            .waiting
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let response = server
        .post(COMPLETIONS, &json!({"prompt": "a", "max_tokens": 1}))
        .await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".into())
    );
    let (status_code, body) = json(response).await;
    assert_eq!(
        (status_code, error_of(&body).0, &body["error"]["code"]),
        (429, "rate_limit_error", &json!("rate_limit_exceeded"))
    );
    drop((running, waiting));
    assert!(server.wait_engine_idle(Duration::from_secs(1)).await);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("gridserve_admission_rejections_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
}
