//! A scripted OpenAI-compatible server for `bench serve` tests: fixed TTFT and inter-token
//! gaps, every Nth request refused with 429, per-request energy in the usage chunk (or none),
//! a gridserve-style Prometheus energy counter, a DCGM-style exporter, and (optionally) a grid
//! API whose power drops under a new cap only after a delay.
#![allow(dead_code)] // each test uses part of it

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Script {
    pub ttft: Duration,
    pub itl: Duration,
    /// Refuse every Nth request (counting from 1) with 429.
    pub reject_every: Option<usize>,
    /// Joules per generated token in `usage.energy_joules` (None: no energy in usage).
    pub usage_joules_per_token: Option<f64>,
    /// Joules per token the Prometheus counters add (gridserve's counter; DCGM's is twice it).
    pub counter_joules_per_token: f64,
    /// Serve `/v1/grid/*`.
    pub grid: bool,
    /// Power stays at `busy_watts` this long after a lower cap is posted.
    pub cap_response: Duration,
    pub busy_watts: f64,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            ttft: Duration::from_millis(60),
            itl: Duration::from_millis(15),
            reject_every: None,
            usage_joules_per_token: Some(0.5),
            counter_joules_per_token: 0.5,
            grid: false,
            cap_response: Duration::from_millis(500),
            busy_watts: 300.0,
        }
    }
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: usize,
    pub bodies: Vec<Value>,
    pub energy_joules: f64,
    /// Live envelopes: (id, cap, posted at).
    pub envelopes: Vec<(String, f64, Instant)>,
    pub posted: Vec<String>,
    pub cancelled: Vec<String>,
    pub unauthorized: usize,
}

#[derive(Clone)]
struct Fake {
    script: Script,
    seen: Arc<Mutex<Seen>>,
}

pub struct FakeServer {
    pub base: String,
    pub seen: Arc<Mutex<Seen>>,
    _task: tokio::task::JoinHandle<()>,
}

pub const OPERATOR_TOKEN: &str = "op-token";

impl FakeServer {
    pub async fn start(script: Script) -> FakeServer {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let fake = Fake {
            script: script.clone(),
            seen: seen.clone(),
        };
        let mut app = Router::new()
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": [{"id": "fake-model"}]})) }),
            )
            .route("/v1/completions", post(complete))
            .route("/v1/chat/completions", post(complete))
            .route("/metrics", get(metrics))
            .route("/dcgm/metrics", get(dcgm));
        if script.grid {
            app = app
                .route("/v1/grid/status", get(status))
                .route("/v1/grid/envelopes", post(post_envelope))
                .route("/v1/grid/envelopes/{id}", delete(delete_envelope));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = app.with_state(fake);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeServer {
            base,
            seen,
            _task: task,
        }
    }
}

async fn complete(State(f): State<Fake>, Json(body): Json<Value>) -> Response {
    let n = {
        let mut seen = f.seen.lock().unwrap();
        seen.requests += 1;
        seen.bodies.push(body.clone());
        seen.requests
    };
    if f.script.reject_every.is_some_and(|k| n % k == 0) {
        let err = json!({"error": {"message": "the waiting queue is full", "type": "rate_limit_error", "param": null, "code": null}});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(err),
        )
            .into_response();
    }
    let tokens = body["max_tokens"].as_u64().unwrap_or(16) as usize;
    let chat = body.get("messages").is_some();
    Sse::new(token_stream(f, tokens, chat)).into_response()
}

fn token_stream(
    f: Fake,
    tokens: usize,
    chat: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let script = f.script.clone();
    let chunk = move |i: usize| {
        let text = format!(" t{i}");
        if chat {
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})
        } else {
            json!({"object": "text_completion", "choices": [{"index": 0, "text": text}]})
        }
    };
    let tokens_stream = stream::iter(0..tokens).then(move |i| {
        let delay = if i == 0 { script.ttft } else { script.itl };
        let data = chunk(i);
        async move {
            tokio::time::sleep(delay).await;
            Ok(Event::default().data(data.to_string()))
        }
    });
    let tail = stream::once(async move {
        let joules = tokens as f64 * f.script.counter_joules_per_token;
        f.seen.lock().unwrap().energy_joules += joules;
        let mut usage =
            json!({"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5});
        if let Some(j) = f.script.usage_joules_per_token {
            usage["energy_joules"] = json!(tokens as f64 * j);
            usage["energy_source"] = json!("twin");
        }
        Ok(Event::default().data(json!({"choices": [], "usage": usage}).to_string()))
    })
    .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    tokens_stream.chain(tail)
}

async fn metrics(State(f): State<Fake>) -> String {
    let j = f.seen.lock().unwrap().energy_joules;
    format!(
        "# TYPE gridserve_energy_joules_total counter\ngridserve_energy_joules_total{{source=\"twin\"}} {j}\n\
         gridserve_power_watts{{device=\"gpu0\",source=\"twin\"}} 200\n"
    )
}

async fn dcgm(State(f): State<Fake>) -> String {
    let mj = f.seen.lock().unwrap().energy_joules * 2.0 * 1000.0;
    format!(
        "DCGM_FI_DEV_POWER_USAGE{{gpu=\"0\",UUID=\"GPU-x\"}} 250.0\n\
         DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu=\"0\",UUID=\"GPU-x\"}} {mj}\n"
    )
}

async fn status(State(f): State<Fake>) -> Json<Value> {
    let seen = f.seen.lock().unwrap();
    let cap = seen.envelopes.last().map(|(_, c, at)| (*c, *at));
    let power = match cap {
        Some((c, at)) if c < f.script.busy_watts && at.elapsed() >= f.script.cap_response => {
            c - 10.0
        }
        _ => f.script.busy_watts,
    };
    Json(json!({
        "object": "grid.status",
        "cap": {"watts": cap.map(|c| c.0), "target_watts": cap.map(|c| c.0)},
        "power": {"average_1s_watts": power, "instant_watts": power, "devices": [{"energy_joules": seen.energy_joules}]},
    }))
}

fn authorized(f: &Fake, headers: &HeaderMap) -> bool {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {OPERATOR_TOKEN}"));
    if !ok {
        f.seen.lock().unwrap().unauthorized += 1;
    }
    ok
}

async fn post_envelope(
    State(f): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&f, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "no token"}})),
        )
            .into_response();
    }
    let id = body["id"].as_str().unwrap_or("x").to_string();
    let cap = body["cap_watts"].as_f64().unwrap_or(f64::INFINITY);
    let mut seen = f.seen.lock().unwrap();
    seen.envelopes.push((id.clone(), cap, Instant::now()));
    seen.posted.push(id.clone());
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn delete_envelope(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&f, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut seen = f.seen.lock().unwrap();
    seen.envelopes.retain(|(e, _, _)| *e != id);
    seen.cancelled.push(id.clone());
    Json(json!({"id": id, "state": "cancelled"})).into_response()
}
