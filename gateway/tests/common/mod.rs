//! A real gridserve HTTP server on 127.0.0.1:0 for tests, driven by the fake backend (next
//! token = last + 1, token 0 ends a sequence) and a tiny letter tokenizer, plus helpers to
//! read responses and SSE streams with bounded waits.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gridserve::api::{router, ApiConfig, AppState, ReadyModel};
use gridserve::engine::{spawn_engine, EngineHandle, EnginePolicy, EnginePool, StepBudget};
use gridserve::grid::auth::Credentials;
use gridserve::grid::{GridConfig, GridFeeds, GridState};
use gridserve_models::chat::ChatTemplate;
use gridserve_models::testing::FakeBackend;
use gridserve_models::tokenizer::{token_type, SpmVocab, TextTokenizer};
use gridserve_models::{BackendInfo, ModelBackend, ModelError, StepBatch, StepOutput};
use serde_json::Value;
use tokio::sync::watch;

pub const MODEL: &str = "fake";
/// The fake's context: prompts plus completions never exceed it.
pub const MAX_SEQ_LEN: usize = 64;

/// Ids: 0 `<pad>` (the fake's end of sequence), 1 `<eos>`, 2 `<bos>`, 3 `<unk>`,
/// 4 `<start_of_turn>`, 5 `<end_of_turn>`, 6 `▁`, 7 `\n`, then `a`..=`z` as 8..=33. So the
/// fake continues "a" with "bcd…z" and then ends, and a chat turn (which ends in "\n") with
/// "abc…z".
pub fn tokenizer() -> TextTokenizer {
    let mut v = SpmVocab {
        bos_id: 2,
        eos_id: 1,
        unk_id: 3,
        add_bos: true,
        ..Default::default()
    };
    let mut push = |piece: &str, ty: i32| {
        v.scores.push(-(v.tokens.len() as f32));
        v.tokens.push(piece.to_owned());
        v.token_types.push(ty);
    };
    for piece in [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
    ] {
        push(piece, token_type::CONTROL);
    }
    push("\u{2581}", token_type::NORMAL);
    push("\n", token_type::USER_DEFINED);
    for c in 'a'..='z' {
        push(&c.to_string(), token_type::NORMAL);
    }
    TextTokenizer::from_spm_vocab(&v).expect("test vocab builds")
}

pub fn vocab_size() -> usize {
    34
}

/// The fake backend, optionally slowed down per step or failing every step.
pub struct TestBackend {
    inner: FakeBackend,
    delay: Duration,
    fail: bool,
}

impl ModelBackend for TestBackend {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        if self.fail {
            return Err(ModelError::Batch("injected failure".into()));
        }
        std::thread::sleep(self.delay);
        let out = self.inner.step(batch);
        // The fake records every step; nobody reads them here, so keep memory flat.
        self.inner.steps.clear();
        out
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub ready: bool,
    pub step_delay: Duration,
    pub fail_steps: bool,
    pub max_waiting: usize,
    pub max_seqs: usize,
    pub config: ApiConfig,
    /// `None`: defaults over a fresh temporary data dir (see [`grid_config`]).
    pub grid: Option<GridConfig>,
    pub credentials: Credentials,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready: true,
            step_delay: Duration::ZERO,
            fail_steps: false,
            max_waiting: 64,
            max_seqs: 16,
            config: ApiConfig::default(),
            grid: None,
            credentials: Credentials::default(),
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub engine: Option<EngineHandle>,
    pub client: reqwest::Client,
    /// What the power controller would steer: budget, admission gates, preemption.
    pub policy: watch::Sender<EnginePolicy>,
    /// Publish power samples, operating points and compliance here.
    pub feeds: GridFeeds,
    _data: Option<tempfile::TempDir>,
}

/// The shipped `[controller]` section.
pub fn controller_config() -> gridserve::power::controller::ControllerConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
    gridserve::config::Config::load(Path::new(path))
        .expect("default config")
        .controller
}

/// `serve`'s options for tests: the shipped controller, 16 sequences and 16 waiting
/// requests per engine, no OpenADR.
pub fn serve_options(grid: GridConfig, drain: Duration) -> gridserve::server::ServeOptions {
    gridserve::server::ServeOptions {
        api: ApiConfig::default(),
        step_budget: StepBudget {
            max_tokens: 256,
            max_seqs: 16,
        },
        max_waiting_requests: 16,
        drain_timeout: drain,
        grid,
        credentials: Credentials::default(),
        controller: controller_config(),
        openadr: None,
    }
}

/// Grid settings for tests: no default cap, no hardware minimum, no ramp.
pub fn grid_config(data_dir: &Path) -> GridConfig {
    GridConfig {
        data_dir: data_dir.to_path_buf(),
        subscription_watts: None,
        hardware_max_watts: None,
        hardware_min_watts: None,
        ramp_default_seconds: 0.0,
    }
}

pub async fn start(opts: Options) -> TestServer {
    let (grid, data) = match opts.grid.clone() {
        Some(grid) => (grid, None),
        None => {
            let dir = tempfile::tempdir().expect("temp data dir");
            (grid_config(dir.path()), Some(dir))
        }
    };
    let (grid, feeds) = GridState::open(grid).expect("grid store opens");
    let state = AppState::new(
        opts.config.clone(),
        gridserve::metrics::install(),
        grid,
        opts.credentials.clone(),
    );
    let budget = StepBudget {
        max_tokens: 256,
        max_seqs: opts.max_seqs,
    };
    let (budget_tx, budget_rx) = watch::channel(EnginePolicy::open(budget));
    let mut engine = None;
    if opts.ready {
        // 64 blocks of 4 hold 256 tokens: several full-context sequences at once.
        let fake = FakeBackend::new(vocab_size(), 64, 4, MAX_SEQ_LEN);
        let backend = TestBackend {
            inner: fake,
            delay: opts.step_delay,
            fail: opts.fail_steps,
        };
        let (handle, _thread) =
            spawn_engine(Box::new(backend), budget_rx, opts.max_waiting).expect("engine starts");
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/chat/gemma.jinja"
        ))
        .expect("read gemma.jinja");
        state.set_ready(ReadyModel {
            engine: EnginePool::new(vec![handle.clone()]).expect("one engine"),
            tokenizer: std::sync::Arc::new(tokenizer()),
            chat: std::sync::Arc::new(
                ChatTemplate::from_source(template).expect("template compiles"),
            ),
            model_name: MODEL.into(),
            created: 1_700_000_000,
        });
        engine = Some(handle);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    TestServer {
        base,
        state,
        engine,
        client,
        policy: budget_tx,
        feeds,
        _data: data,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body`, greedy unless it sets `temperature`: at temperature 1 the fake still gives
    /// every other token ~0.005% each, enough to flake tests that check exact text.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        let mut body = body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.entry("temperature").or_insert(Value::from(0));
        }
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request completes")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request completes")
    }

    pub fn engine(&self) -> &EngineHandle {
        self.engine.as_ref().expect("server was started ready")
    }

    /// Waits (at most `limit`) until the engine holds no sequence and no KV block.
    pub async fn wait_engine_idle(&self, limit: Duration) -> bool {
        let status = self.engine().status();
        wait_until(limit, || {
            status.running.load(Ordering::SeqCst) == 0
                && status.waiting.load(Ordering::SeqCst) == 0
                && status.kv_usage_ppm.load(Ordering::SeqCst) == 0
        })
        .await
    }
}

pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

/// Status and JSON body.
pub async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, body)
}

/// Splits a complete SSE body into its `data:` payloads, checking the framing: every event
/// is exactly `data: …\n\n`, and the last one is `[DONE]`.
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "stream must end with a blank line: {body:?}"
    );
    let events: Vec<String> = body
        .trim_end_matches("\n\n")
        .split("\n\n")
        .map(|event| {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"));
            assert!(!payload.contains('\n'), "one line per event: {event:?}");
            payload.to_owned()
        })
        .collect();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "last event must be [DONE]"
    );
    events
}

/// The JSON chunks of a complete stream (everything before `[DONE]`).
pub fn sse_chunks(body: &str) -> Vec<Value> {
    let events = sse_events(body);
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str(e).unwrap_or_else(|err| panic!("chunk is not JSON ({err}): {e}"))
        })
        .collect()
}

/// The fake model as `server::run` loads it: slowed by `step_delay` per step.
pub fn model_parts(step_delay: Duration) -> gridserve::server::ModelParts {
    metered_model_parts(step_delay, None)
}

/// As [`model_parts`], with an energy meter.
pub fn metered_model_parts(
    step_delay: Duration,
    meter: Option<Box<dyn gridserve::engine::StepMeter>>,
) -> gridserve::server::ModelParts {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/chat/gemma.jinja"
    ))
    .expect("read gemma.jinja");
    gridserve::server::ModelParts {
        engines: vec![gridserve::server::EngineParts {
            device: "cpu".into(),
            backend: Box::new(TestBackend {
                inner: FakeBackend::new(vocab_size(), 64, 4, MAX_SEQ_LEN),
                delay: step_delay,
                fail: false,
            }),
            meter,
            power: None,
        }],
        tokenizer: tokenizer(),
        chat: ChatTemplate::from_source(template).expect("template compiles"),
    }
}
