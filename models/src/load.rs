//! Turns a model file into a ready backend and tokenizer, dispatching on its architecture.

use std::path::Path;

use crate::arch::gemma3::{Gemma3, Gemma3Config};
use crate::cpu_backend::{CpuBackend, KvCacheOptions};
use crate::loader::GgufFile;
use crate::tokenizer::TextTokenizer;
use crate::ModelError;

/// A loaded model: the backend that runs steps and the tokenizer for its vocabulary.
pub struct LoadedModel {
    pub backend: CpuBackend,
    pub tokenizer: TextTokenizer,
}

/// Loads a GGUF model for the CPU. `progress(done, total)` reports layers loaded.
pub fn load_gguf(
    path: &Path,
    kv: &KvCacheOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel, ModelError> {
    let mut file = GgufFile::open(path)?;
    let tokenizer = TextTokenizer::from_spm_vocab(&file.spm_vocab()?)?;
    let name = model_name(path);
    let arch = file.architecture()?;
    let model = match arch.as_str() {
        "gemma3" => {
            let cfg = Gemma3Config::from_gguf(&file)?;
            Box::new(Gemma3::load(cfg, &mut file, progress)?)
        }
        other => return Err(ModelError::UnsupportedArch(other.to_string())),
    };
    let mut eos = vec![tokenizer.eos_id()];
    // Chat models end a turn with `<end_of_turn>`; a base model may emit it too.
    if let Some(id) = tokenizer.token_id("<end_of_turn>") {
        eos.push(id);
    }
    let backend = CpuBackend::new(model, name, eos, kv)?;
    Ok(LoadedModel { backend, tokenizer })
}

/// The served model name: the file's stem, which is what clients see in `/v1/models`.
fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}
