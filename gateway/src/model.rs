//! Loading the configured model with a progress bar, and turning user text into prompt tokens.

use std::time::{Duration, Instant};

use gridserve_models::chat::{ChatMessage, ChatTemplate};
use gridserve_models::device::{self, DeviceSpec};
use gridserve_models::tokenizer::TextTokenizer;
use gridserve_models::{load_model_on, Device, LoadedModel, ModelBackend, ModelError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{EngineConfig, ModelConfig};
use crate::GatewayError;

/// A loaded model with what it takes to build prompts for it.
pub struct ServedModel {
    /// The model on the first listed device.
    pub loaded: LoadedModel,
    /// The same model on each further listed device (data parallel), in order.
    pub replicas: Vec<Box<dyn ModelBackend>>,
    /// Where each copy runs: `loaded`'s device, then the replicas'.
    pub devices: Vec<Device>,
    pub chat: ChatTemplate,
    pub load_time: Duration,
}

/// Loads the model on the first listed device only (`generate`, `bench engine`).
pub fn load(model: &ModelConfig, engine: &EngineConfig) -> Result<ServedModel, GatewayError> {
    let mut devices = open_devices(&engine.device)?;
    if devices.len() > 1 {
        tracing::info!(
            "engine.device = {}: this command runs on {} only",
            engine.device,
            device::label(&devices[0])
        );
        devices.truncate(1);
    }
    load_on(model, engine, devices)
}

/// Loads a copy of the model on every listed device: `serve` runs one engine per GPU.
pub fn load_replicated(
    model: &ModelConfig,
    engine: &EngineConfig,
) -> Result<ServedModel, GatewayError> {
    load_on(model, engine, open_devices(&engine.device)?)
}

/// Loads on each of `devices` (not empty); a progress bar appears on stderr if loading takes
/// over a second.
fn load_on(
    model: &ModelConfig,
    engine: &EngineConfig,
    devices: Vec<Device>,
) -> Result<ServedModel, GatewayError> {
    let start = Instant::now();
    let mut loaded = Vec::with_capacity(devices.len());
    for target in &devices {
        loaded.push(load_one(model, engine, target, start)?);
    }
    let mut copies = loaded.into_iter();
    let Some(loaded) = copies.next() else {
        return Err(GatewayError::Config("engine.device lists no device".into()));
    };
    let replicas = copies.map(|l| l.backend).collect();
    let chat = match (&model.chat_template, &loaded.chat_template) {
        (Some(path), _) => ChatTemplate::from_file(path)?,
        (None, Some(source)) => ChatTemplate::from_source(source.clone())?,
        (None, None) => {
            return Err(GatewayError::Config(format!(
                "model.chat_template = \"model\", but {} carries no chat template",
                model.path.display()
            )))
        }
    };
    Ok(ServedModel {
        loaded,
        replicas,
        devices,
        chat,
        load_time: start.elapsed(),
    })
}

fn load_one(
    model: &ModelConfig,
    engine: &EngineConfig,
    target: &Device,
    start: Instant,
) -> Result<LoadedModel, GatewayError> {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("loading model {bar:30} {pos}/{len} layers {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = |done: usize, total: usize| {
        if bar.is_hidden() && start.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let loaded = load_model_on(&model.path, target, &engine.kv, &mut progress)?;
    bar.finish_and_clear();
    Ok(loaded)
}

/// Opens the configured devices before any weight is read, so a missing GPU (or a CPU-only
/// build asked for one) is reported at once, naming the device.
fn open_devices(spec: &DeviceSpec) -> Result<Vec<Device>, GatewayError> {
    let devices = device::resolve(spec).map_err(ModelError::from)?;
    match (spec, devices.first().is_some_and(Device::is_cpu)) {
        (DeviceSpec::Auto, true) => {
            tracing::info!("device auto: no usable GPU, running on the CPU")
        }
        (_, false) => {
            let labels: Vec<String> = devices.iter().map(device::label).collect();
            tracing::info!(devices = ?labels, "running the model on the GPU, one engine each")
        }
        _ => {}
    }
    Ok(devices)
}

impl ServedModel {
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.loaded.tokenizer
    }

    /// Plain-text prompt: BOS first if the model wants it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, GatewayError> {
        let tok = self.tokenizer();
        Ok(tok.encode(text, tok.add_bos())?)
    }

    /// Chat prompt rendered by the template, which writes the BOS itself.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, GatewayError> {
        let tok = self.tokenizer();
        let bos = tok
            .id_to_piece(tok.bos_id())
            .unwrap_or_default()
            .to_string();
        let text = self.chat.render(messages, true, &bos)?;
        Ok(tok.encode(&text, false)?)
    }
}
