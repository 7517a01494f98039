//! The models crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file: {0}")]
    Format(String),
    #[error("unsupported model architecture `{0}` (supported: gemma3, llama, qwen2)")]
    UnsupportedArch(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("invalid `{param}`: {message}")]
    InvalidParam {
        param: &'static str,
        message: String,
    },
    #[error("invalid step batch: {0}")]
    Batch(String),
    #[error(transparent)]
    Kernel(#[from] gridserve_kernels::KernelError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}
