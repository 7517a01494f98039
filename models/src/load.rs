//! Turns a model file (GGUF) or checkpoint directory (safetensors) into a ready backend and
//! tokenizer, dispatching on its architecture.

use std::path::Path;

use crate::arch::gemma3::{Gemma3, Gemma3Config};
use crate::arch::llama::Llama;
use crate::arch::Architecture;
use crate::cpu_backend::{CpuBackend, KvCacheOptions};
use crate::loader::GgufFile;
use crate::safetensors::{self as st, HfCheckpoint};
use crate::tokenizer::TextTokenizer;
use crate::tokenizer_bpe;
use crate::ModelError;

/// A loaded model: the backend that runs steps, the tokenizer for its vocabulary, and the
/// chat template the model carries (GGUF `tokenizer.chat_template`, or tokenizer_config.json).
pub struct LoadedModel {
    pub backend: CpuBackend,
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
    if path.is_dir() {
        load_safetensors(path, kv, progress)
    } else {
        load_gguf(path, kv, progress)
    }
}

/// Loads a GGUF model (`gemma3`, `llama`, `qwen2`) for the CPU.
pub fn load_gguf(
    path: &Path,
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
    let model: Box<dyn Architecture> = match arch.as_str() {
        "gemma3" => {
            let cfg = Gemma3Config::from_gguf(&file)?;
            Box::new(Gemma3::load(cfg, &mut file, progress)?)
        }
        "llama" | "qwen2" => {
            let cfg = crate::arch::llama::LlamaConfig::from_gguf(&file, &arch)?;
            Box::new(Llama::load(cfg, &mut file, progress)?)
        }
        other => return Err(ModelError::UnsupportedArch(other.to_string())),
    };
    finish(model, tokenizer, chat_template, model_name(path), kv)
}

/// Loads a Llama or Qwen2 checkpoint directory (config.json, safetensors, tokenizer.json).
pub fn load_safetensors(
    dir: &Path,
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
    let model = Box::new(Llama::load(cfg, &mut ckpt.weights, progress)?);
    let template = ckpt.chat_template();
    finish(model, tokenizer, template, model_name(dir), kv)
}

fn finish(
    model: Box<dyn Architecture>,
    tokenizer: TextTokenizer,
    chat_template: Option<String>,
    name: String,
    kv: &KvCacheOptions,
) -> Result<LoadedModel, ModelError> {
    if tokenizer.vocab_size() > model.vocab_size() {
        return Err(ModelError::Format(format!(
            "the tokenizer has {} tokens, the model's embedding {}",
            tokenizer.vocab_size(),
            model.vocab_size()
        )));
    }
    let eos = tokenizer_bpe::stop_ids(&tokenizer);
    let backend = CpuBackend::new(model, name, eos, kv)?;
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
