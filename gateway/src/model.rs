//! Loading the configured model with a progress bar, and turning user text into prompt tokens.

use std::time::{Duration, Instant};

use gridserve_models::chat::{ChatMessage, ChatTemplate};
use gridserve_models::device::{self, DeviceSpec};
use gridserve_models::tokenizer::TextTokenizer;
use gridserve_models::{load_model_on, Device, LoadedModel, ModelError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{EngineConfig, ModelConfig};
use crate::GatewayError;

/// A loaded model with what it takes to build prompts for it.
pub struct ServedModel {
    pub loaded: LoadedModel,
    pub chat: ChatTemplate,
    pub load_time: Duration,
}

/// Loads the model; a progress bar appears on stderr if loading takes over a second.
pub fn load(model: &ModelConfig, engine: &EngineConfig) -> Result<ServedModel, GatewayError> {
    let start = Instant::now();
    let target = open_device(&engine.device)?;
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
    let loaded = load_model_on(&model.path, &target, &engine.kv, &mut progress)?;
    bar.finish_and_clear();
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
        chat,
        load_time: start.elapsed(),
    })
}

/// Opens the configured device before any weight is read, so a missing GPU (or a CPU-only
/// build asked for one) is reported at once, naming the device.
fn open_device(spec: &DeviceSpec) -> Result<Device, GatewayError> {
    let mut devices = device::resolve(spec).map_err(ModelError::from)?;
    if devices.len() > 1 {
        // One engine per GPU (data parallel, the node's cap split by the controller) is the
        // design; the engine and controller run one device today.
        return Err(GatewayError::Config(format!(
            "engine.device = {spec}: {} GPUs listed, but this gridserve runs one engine; \
             list one GPU (e.g. cuda:0) per gridserve process",
            devices.len()
        )));
    }
    let device = devices.remove(0);
    match (spec, device.is_cpu()) {
        (DeviceSpec::Auto, true) => {
            tracing::info!("device auto: no usable GPU, running on the CPU")
        }
        (_, false) => tracing::info!(device = %spec, "running the model on the GPU"),
        _ => {}
    }
    Ok(device)
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
