//! Turns a model file (GGUF) or checkpoint directory (safetensors) into a ready backend (CPU
//! or device) and tokenizer, dispatching on its architecture.

use std::path::Path;

use candle_core::Device;

use crate::arch::gemma3::{Gemma3, Gemma3Config};
use crate::arch::llama::{Llama, LlamaConfig};
use crate::arch::Architecture;
use crate::backend::ModelBackend;
use crate::cpu_backend::{CpuBackend, KvCacheOptions};
use crate::device_backend::{DeviceArch, DeviceBackend};
use crate::loader::{GgufFile, WeightSource};
use crate::safetensors::{self as st, HfCheckpoint};
use crate::tokenizer::TextTokenizer;
use crate::tokenizer_bpe;
use crate::ModelError;

/// A loaded model: the backend that runs steps, the tokenizer for its vocabulary, and the
/// chat template the model carries (GGUF `tokenizer.chat_template`, or tokenizer_config.json).
pub struct LoadedModel {
    pub backend: Box<dyn ModelBackend>,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<String>,
}

/// Loads a model for the CPU: a GGUF file, or a Hugging Face directory with safetensors.
/// `progress(done, total)` reports layers loaded.
pub fn load_model(
    path: &Path,
    kv: &KvCacheOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel, ModelError> {
    load_model_on(path, &Device::Cpu, kv, progress)
}

/// Loads a model onto `device`: the CPU gets the slice-based `CpuBackend` (our SIMD kernels),
/// any other device the tensor-based `DeviceBackend` (candle + our CUDA kernels).
pub fn load_model_on(
    path: &Path,
    device: &Device,
    kv: &KvCacheOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel, ModelError> {
    if path.is_dir() {
        load_safetensors(path, device, kv, progress)
    } else {
        load_gguf(path, device, kv, progress)
    }
}

/// Loads a GGUF model (`gemma3`, `llama`, `qwen2`).
pub fn load_gguf(
    path: &Path,
    device: &Device,
    kv: &KvCacheOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel, ModelError> {
    let mut file = GgufFile::open(path)?;
    let arch = file.architecture()?;
    let tokenizer = match file.meta_str("tokenizer.ggml.model")? {
        "gpt2" => tokenizer_bpe::from_gguf(&file)?,
        _ => TextTokenizer::from_spm_vocab(&file.spm_vocab()?)?,
    };
    let chat_template = file.chat_template();
    let name = model_name(path);
    let backend: Box<dyn ModelBackend> = match (arch.as_str(), device.is_cpu()) {
        ("gemma3", cpu) => {
            let cfg = Gemma3Config::from_gguf(&file)?;
            if cpu {
                let model = Box::new(Gemma3::load(cfg, &mut file, progress)?);
                cpu_backend(model, &tokenizer, name, kv)?
            } else {
                let arch = DeviceArch::Gemma3(&cfg);
                device_backend(arch, &mut file, device, &tokenizer, name, kv)?
            }
        }
        ("llama" | "qwen2", cpu) => {
            let cfg = LlamaConfig::from_gguf(&file, &arch)?;
            if cpu {
                let model = Box::new(Llama::load(cfg, &mut file, progress)?);
                cpu_backend(model, &tokenizer, name, kv)?
            } else {
                let arch = DeviceArch::Llama(&cfg);
                device_backend(arch, &mut file, device, &tokenizer, name, kv)?
            }
        }
        (other, _) => return Err(ModelError::UnsupportedArch(other.to_string())),
    };
    finish(backend, tokenizer, chat_template)
}

/// Loads a Llama or Qwen2 checkpoint directory (config.json, safetensors, tokenizer.json).
pub fn load_safetensors(
    dir: &Path,
    device: &Device,
    kv: &KvCacheOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel, ModelError> {
    let mut ckpt = HfCheckpoint::open(dir)?;
    let model_type = ckpt.model_type().to_string();
    if !matches!(model_type.as_str(), "llama" | "qwen2") {
        return Err(ModelError::UnsupportedArch(model_type));
    }
    let tok_path = dir.join("tokenizer.json");
    let json = std::fs::read_to_string(&tok_path).map_err(|source| ModelError::Io {
        path: tok_path,
        source,
    })?;
    let tokenizer = tokenizer_bpe::from_hf(&json, &ckpt.tokenizer_config, &ckpt.config)?;
    let cfg = st::llama_config(&ckpt.config)?;
    let template = ckpt.chat_template();
    let name = model_name(dir);
    let backend = if device.is_cpu() {
        let model = Box::new(Llama::load(cfg, &mut ckpt.weights, progress)?);
        cpu_backend(model, &tokenizer, name, kv)?
    } else {
        let arch = DeviceArch::Llama(&cfg);
        device_backend(arch, &mut ckpt.weights, device, &tokenizer, name, kv)?
    };
    finish(backend, tokenizer, template)
}

fn cpu_backend(
    model: Box<dyn Architecture>,
    tokenizer: &TextTokenizer,
    name: String,
    kv: &KvCacheOptions,
) -> Result<Box<dyn ModelBackend>, ModelError> {
    let eos = tokenizer_bpe::stop_ids(tokenizer);
    Ok(Box::new(CpuBackend::new(model, name, eos, kv)?))
}

fn device_backend(
    arch: DeviceArch<'_>,
    src: &mut dyn WeightSource,
    device: &Device,
    tokenizer: &TextTokenizer,
    name: String,
    kv: &KvCacheOptions,
) -> Result<Box<dyn ModelBackend>, ModelError> {
    let eos = tokenizer_bpe::stop_ids(tokenizer);
    Ok(Box::new(DeviceBackend::load(
        arch, src, device, name, eos, kv,
    )?))
}

fn finish(
    backend: Box<dyn ModelBackend>,
    tokenizer: TextTokenizer,
    chat_template: Option<String>,
) -> Result<LoadedModel, ModelError> {
    let vocab = backend.info().vocab_size;
    if tokenizer.vocab_size() > vocab {
        return Err(ModelError::Format(format!(
            "the tokenizer has {} tokens, the model's embedding {vocab}",
            tokenizer.vocab_size()
        )));
    }
    Ok(LoadedModel {
        backend,
        tokenizer,
        chat_template,
    })
}

/// The served model name: the file's stem (or the directory's name), which is what clients
/// see in `/v1/models`.
fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}
