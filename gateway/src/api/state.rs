//! What every handler shares: the model once it is ready, whether the server is draining, the
//! metrics handle, the grid state and the accepted credentials.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use gridserve_models::chat::ChatTemplate;
use gridserve_models::tokenizer::TextTokenizer;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::EnginePool;
use crate::grid::auth::Credentials;
use crate::grid::GridState;

/// HTTP-level limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    /// Largest accepted request body (HTTP 413 above).
    pub max_body_bytes: usize,
    /// `max_tokens` when a completions request gives none (OpenAI's default is 16).
    pub default_completion_max_tokens: usize,
    /// Most choices per request (`n`).
    pub max_n: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            default_completion_max_tokens: 16,
            max_n: 8,
        }
    }
}

/// The served model, available once loading has finished.
pub struct ReadyModel {
    pub engine: EnginePool,
    pub tokenizer: Arc<TextTokenizer>,
    pub chat: Arc<ChatTemplate>,
    /// The id clients pass as `model`.
    pub model_name: String,
    /// Unix seconds when the model became ready (`created` in `/v1/models`).
    pub created: u64,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    ready: OnceLock<ReadyModel>,
    draining: AtomicBool,
    metrics: PrometheusHandle,
    config: ApiConfig,
    grid: GridState,
    credentials: Credentials,
}

impl AppState {
    pub fn new(
        config: ApiConfig,
        metrics: PrometheusHandle,
        grid: GridState,
        credentials: Credentials,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ready: OnceLock::new(),
                draining: AtomicBool::new(false),
                metrics,
                config,
                grid,
                credentials,
            }),
        }
    }

    /// Marks the model ready; later calls are ignored.
    pub fn set_ready(&self, model: ReadyModel) {
        let _ = self.inner.ready.set(model);
    }

    /// The model, unless it is still loading.
    pub fn ready(&self) -> Option<&ReadyModel> {
        self.inner.ready.get()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// From now on new generation requests get 503; in-flight ones continue.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub fn grid(&self) -> &GridState {
        &self.inner.grid
    }

    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }
}
