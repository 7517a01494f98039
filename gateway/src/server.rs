//! `gridserve serve`: bind first, open the grid store, load the model in the background
//! (`/ready` is 503 until it is loaded), serve the API, and on shutdown drain in-flight
//! requests within a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gridserve_models::chat::ChatTemplate;
use gridserve_models::tokenizer::TextTokenizer;
use gridserve_models::{device, ModelBackend};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiConfig, AppState, ReadyModel};
use crate::config::Config;
use crate::engine::{
    spawn_metered_engine, EnginePolicy, EnginePool, EngineThread, StepBudget, StepMeter,
};
use crate::grid::auth::Credentials;
use crate::grid::openadr::OpenAdrConfig;
use crate::grid::{GridConfig, GridFeeds, GridState};
use crate::power::controller::ControllerConfig;
use crate::power::{EngineDevice, PowerMonitor};
use crate::serve_power::{EnginePower, PowerParts};
use crate::GatewayError;

/// What serving needs from a loaded model; produced in the background after binding.
pub struct ModelParts {
    /// One engine per device (data parallel: one per listed GPU); each request goes to the
    /// least busy.
    pub engines: Vec<EngineParts>,
    pub tokenizer: TextTokenizer,
    pub chat: ChatTemplate,
}

/// One engine: a copy of the model on one device, with that device's power parts.
pub struct EngineParts {
    /// Where it runs, e.g. `cuda:1` (logs and `/v1/grid/status`).
    pub device: String,
    pub backend: Box<dyn ModelBackend>,
    /// Measures each step's energy for per-request accounting (None: no energy figures).
    pub meter: Option<Box<dyn StepMeter>>,
    /// The power sensor and actuator for the monitor and the controller (None: no power
    /// figures beyond the meter's, no control). All engines have them, or none.
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

impl EngineParts {
    /// One engine per device, each metered and steered through its own power backend
    /// (devices, backends and power backends in the same order).
    pub fn metered(
        devices: Vec<EngineDevice>,
        backends: impl IntoIterator<Item = Box<dyn ModelBackend>>,
        power: Vec<crate::power::PowerBackend>,
    ) -> Vec<Self> {
        devices
            .into_iter()
            .zip(backends)
            .zip(power)
            .map(|((d, backend), p)| {
                let (meter, power) = PowerParts::split(p);
                EngineParts {
                    device: d.label,
                    backend,
                    meter: Some(meter),
                    power: Some(power),
                }
            })
            .collect()
    }
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

/// Loads the configured model for serving, a copy per listed device, each with its own
/// power sensor (runs on a blocking thread).
pub fn load_model(config: &Config) -> Result<ModelParts, GatewayError> {
    let served = crate::model::load_replicated(&config.model, &config.engine)?;
    tracing::info!(model = %config.model.path.display(), engines = served.devices.len(), load_s = served.load_time.as_secs_f64(), "model loaded");
    let devices: Vec<EngineDevice> = served
        .devices
        .iter()
        .map(|d| EngineDevice {
            label: device::label(d),
            cuda_ordinal: device::cuda_ordinal(d),
            pci_bus_id: device::pci_bus_id(d),
        })
        .collect();
    let power = crate::power::detect_engines(&config.power, &devices)?;
    let backends = std::iter::once(served.loaded.backend).chain(served.replicas);
    let engines = EngineParts::metered(devices, backends, power);
    Ok(ModelParts {
        engines,
        tokenizer: served.loaded.tokenizer,
        chat: served.chat,
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
    let engine_thread: Arc<Mutex<Vec<EngineThread>>> = Arc::default();
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
    let threads = engine_thread
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    for t in &threads {
        t.abort_all();
    }
    // Every handle is gone now, so the threads end promptly; don't hang exit if they don't.
    let join =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(EngineThread::join));
    if tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .is_err()
    {
        tracing::error!("the engine threads did not stop within 10 s");
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
async fn cut_after(deadline: Duration, engine_thread: Arc<Mutex<Vec<EngineThread>>>) {
    tokio::time::sleep(deadline).await;
    if let Ok(threads) = engine_thread.lock() {
        tracing::warn!("drain deadline passed: cutting in-flight requests");
        threads.iter().for_each(EngineThread::abort_all);
    }
}

fn start_engine(
    load: impl FnOnce() -> Result<ModelParts, GatewayError>,
    opts: &ServeOptions,
    state: &AppState,
    feeds: GridFeeds,
    slot: &Mutex<Vec<EngineThread>>,
    monitor_slot: &Mutex<Option<PowerMonitor>>,
) -> Result<(), GatewayError> {
    let parts = load()?;
    let open = EnginePolicy {
        deferral_deadline: opts.controller.deferral_deadline,
        ..EnginePolicy::open(opts.step_budget)
    };
    let with_power = parts.engines.iter().filter(|e| e.power.is_some()).count();
    if with_power != 0 && with_power != parts.engines.len() {
        return Err(GatewayError::Config(
            "some engines have power sensors and some do not: the node cannot be steered".into(),
        ));
    }
    let mut handles = Vec::with_capacity(parts.engines.len());
    let mut power = Vec::with_capacity(with_power);
    for (index, e) in parts.engines.into_iter().enumerate() {
        // The control loop owns the sender; without one the open policy stays put (a watch
        // receiver keeps the last value after its sender is gone).
        let (policy, policy_rx) = watch::channel(open);
        if let Some(parts) = e.power {
            let device = e.device.clone();
            power.push(EnginePower {
                device,
                parts,
                policy,
            });
        }
        let (handle, thread) = spawn_metered_engine(
            index,
            e.backend,
            e.meter,
            policy_rx,
            opts.max_waiting_requests,
        )
        .map_err(|e| GatewayError::Config(format!("starting an engine thread: {e}")))?;
        handles.push(handle);
        if let Ok(mut t) = slot.lock() {
            t.push(thread);
        }
    }
    if !power.is_empty() {
        let (c, grid) = (&opts.controller, state.grid());
        let monitor = crate::serve_power::start(power, c, opts.step_budget, grid, feeds)?;
        if let Ok(mut m) = monitor_slot.lock() {
            *m = Some(monitor);
        }
    }
    let engine = EnginePool::new(handles)
        .ok_or_else(|| GatewayError::Config("the model loaded on no device".into()))?;
    let model_name = engine.info().model_name.clone();
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
