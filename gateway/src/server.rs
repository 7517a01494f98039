//! `gridserve serve`: bind first, open the grid store, load the model in the background
//! (`/ready` is 503 until it is loaded), serve the API, and on shutdown drain in-flight
//! requests within a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gridserve_models::chat::ChatTemplate;
use gridserve_models::tokenizer::TextTokenizer;
use gridserve_models::ModelBackend;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiConfig, AppState, ReadyModel};
use crate::config::Config;
use crate::engine::{spawn_metered_engine, EnginePolicy, EngineThread, StepBudget, StepMeter};
use crate::grid::auth::Credentials;
use crate::grid::openadr::OpenAdrConfig;
use crate::grid::{GridConfig, GridFeeds, GridState};
use crate::power::controller::ControllerConfig;
use crate::power::PowerMonitor;
use crate::serve_power::PowerParts;
use crate::GatewayError;

/// What serving needs from a loaded model; produced in the background after binding.
pub struct ModelParts {
    pub backend: Box<dyn ModelBackend>,
    pub tokenizer: TextTokenizer,
    pub chat: ChatTemplate,
    /// Measures each step's energy for per-request accounting (None: no energy figures).
    pub meter: Option<Box<dyn StepMeter>>,
    /// The power sensor and actuator for the monitor and the controller (None: no power
    /// figures beyond the meter's, no control).
    pub power: Option<PowerParts>,
}

/// The serving knobs, separate from the model so tests can serve a fake backend.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub api: ApiConfig,
    pub step_budget: StepBudget,
    pub max_waiting_requests: usize,
    pub drain_timeout: Duration,
    pub grid: GridConfig,
    /// Accepted operator tokens and API keys.
    pub credentials: Credentials,
    pub controller: ControllerConfig,
    /// The OpenADR VEN (`None`: off).
    pub openadr: Option<OpenAdrConfig>,
}

impl ServeOptions {
    pub fn from_config(config: &Config) -> Self {
        Self {
            api: config.server.api.clone(),
            step_budget: config.engine.step_budget,
            max_waiting_requests: config.server.max_waiting_requests,
            drain_timeout: config.server.drain_timeout,
            grid: config.grid.clone(),
            credentials: config.credentials.clone().with_env(),
            controller: config.controller.clone(),
            openadr: config.openadr.enabled.then(|| config.openadr.clone()),
        }
    }
}

/// Binds the configured address. Separate from `run` so callers learn the port (port 0).
pub async fn bind(config: &Config) -> Result<TcpListener, GatewayError> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    TcpListener::bind(&addr)
        .await
        .map_err(|e| GatewayError::Config(format!("cannot listen on {addr}: {e}")))
}

/// Loads the configured model for serving (runs on a blocking thread).
pub fn load_model(config: &Config) -> Result<ModelParts, GatewayError> {
    let served = crate::model::load(&config.model, &config.engine)?;
    tracing::info!(model = %config.model.path.display(), load_s = served.load_time.as_secs_f64(), "model loaded");
    let (meter, power) = PowerParts::split(crate::power::detect(&config.power)?);
    Ok(ModelParts {
        backend: served.loaded.backend,
        tokenizer: served.loaded.tokenizer,
        chat: served.chat,
        meter: Some(meter),
        power: Some(power),
    })
}

/// Serves until `shutdown` resolves, then drains: new requests get 503, in-flight ones may
/// finish for `drain_timeout`, then they are cut (finish_reason "abort"). A failed model load
/// ends the server with that error.
pub async fn run(
    listener: TcpListener,
    opts: ServeOptions,
    load: impl FnOnce() -> Result<ModelParts, GatewayError> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    // The store is loaded before anything is served, so the envelope in force after a restart
    // applies from the first request on, and an unusable data dir stops the server here.
    let grid_config = opts.grid.clone();
    let (grid, feeds) = tokio::task::spawn_blocking(move || GridState::open(grid_config))
        .await
        .map_err(|e| GatewayError::Store(format!("opening the grid store: {e}")))??;
    let metrics = crate::metrics::install();
    // The VEN follows the VTN from the start (before the model is loaded): the grid's
    // commitments do not wait for the model. A VEN that cannot start stops the server.
    let _ven = match &opts.openadr {
        Some(c) => Some(crate::grid::openadr::spawn(c.clone(), grid.clone())?),
        None => None,
    };
    let state = AppState::new(opts.api.clone(), metrics, grid, opts.credentials.clone());
    let engine_thread: Arc<Mutex<Option<EngineThread>>> = Arc::default();
    let monitor: Arc<Mutex<Option<PowerMonitor>>> = Arc::default();
    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<GatewayError>();
    {
        let (state, engine_thread, opts) = (state.clone(), engine_thread.clone(), opts.clone());
        let monitor = monitor.clone();
        tokio::task::spawn_blocking(move || {
            let started = start_engine(load, &opts, &state, feeds, &engine_thread, &monitor);
            if let Err(e) = started {
                tracing::error!("cannot serve: {e}");
                let _ = load_failed_tx.send(e);
            }
        });
    }
    let load_error: Arc<Mutex<Option<GatewayError>>> = Arc::default();
    let stop = {
        let (state, engine_thread, load_error) =
            (state.clone(), engine_thread.clone(), load_error.clone());
        let drain = opts.drain_timeout;
        async move {
            tokio::select! {
                _ = shutdown => {}
                Ok(e) = load_failed_rx => {
                    if let Ok(mut slot) = load_error.lock() {
                        *slot = Some(e);
                    }
                }
            }
            tracing::info!("shutting down: draining in-flight requests");
            state.start_draining();
            tokio::spawn(cut_after(drain, engine_thread));
        }
    };
    let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    drop(state);
    let thread = engine_thread.lock().ok().and_then(|mut t| t.take());
    if let Some(t) = thread {
        t.abort_all();
        // Every handle is gone now, so the thread ends promptly; don't hang exit if it doesn't.
        let join = tokio::task::spawn_blocking(move || t.join());
        if tokio::time::timeout(Duration::from_secs(10), join)
            .await
            .is_err()
        {
            tracing::error!("the engine thread did not stop within 10 s");
        }
    }
    drop(monitor.lock().ok().and_then(|mut m| m.take()));
    if let Some(e) = load_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    served.map_err(|e| GatewayError::Config(format!("server error: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// After the drain deadline, cuts every in-flight request so its connection can close.
async fn cut_after(deadline: Duration, engine_thread: Arc<Mutex<Option<EngineThread>>>) {
    tokio::time::sleep(deadline).await;
    if let Some(t) = engine_thread.lock().ok().as_ref().and_then(|t| t.as_ref()) {
        tracing::warn!("drain deadline passed: cutting in-flight requests");
        t.abort_all();
    }
}

fn start_engine(
    load: impl FnOnce() -> Result<ModelParts, GatewayError>,
    opts: &ServeOptions,
    state: &AppState,
    feeds: GridFeeds,
    slot: &Mutex<Option<EngineThread>>,
    monitor_slot: &Mutex<Option<PowerMonitor>>,
) -> Result<(), GatewayError> {
    let parts = load()?;
    let open = EnginePolicy {
        deferral_deadline: opts.controller.deferral_deadline,
        ..EnginePolicy::open(opts.step_budget)
    };
    // The control loop owns the sender; without one the open policy stays put (a watch
    // receiver keeps the last value after its sender is gone).
    let (policy_tx, budget_rx) = watch::channel(open);
    if let Some(power) = parts.power {
        let c = &opts.controller;
        let monitor =
            crate::serve_power::start(power, c, opts.step_budget, state.grid(), feeds, policy_tx)?;
        if let Ok(mut m) = monitor_slot.lock() {
            *m = Some(monitor);
        }
    }
    let model_name = parts.backend.info().model_name.clone();
    let (engine, thread) = spawn_metered_engine(
        parts.backend,
        parts.meter,
        budget_rx,
        opts.max_waiting_requests,
    )
    .map_err(|e| GatewayError::Config(format!("starting the engine thread: {e}")))?;
    if let Ok(mut t) = slot.lock() {
        *t = Some(thread);
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    state.set_ready(ReadyModel {
        engine,
        tokenizer: Arc::new(parts.tokenizer),
        chat: Arc::new(parts.chat),
        model_name,
        created,
    });
    Ok(())
}
