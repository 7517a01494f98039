//! The CPU backend: an architecture plus the KV storage it runs against.

use crate::arch::Architecture;
use crate::backend::{validate_batch, BackendInfo, ModelBackend, StepBatch, StepOutput};
use crate::kv_cache::KvStorage;
use crate::ModelError;

/// How much KV cache to allocate.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCacheOptions {
    /// Tokens per block.
    pub block_size: usize,
    /// Memory for K and V across all layers; sets the number of blocks.
    pub kv_cache_bytes: usize,
    /// Cap on sequence length below the model's own context (None = the model's).
    pub max_seq_len: Option<usize>,
}

impl Default for KvCacheOptions {
    fn default() -> Self {
        Self {
            block_size: 16,
            kv_cache_bytes: 2 << 30,
            max_seq_len: None,
        }
    }
}

pub struct CpuBackend {
    arch: Box<dyn Architecture>,
    kv: KvStorage,
    info: BackendInfo,
}

impl CpuBackend {
    pub fn new(
        arch: Box<dyn Architecture>,
        model_name: String,
        eos_token_ids: Vec<u32>,
        opts: &KvCacheOptions,
    ) -> Result<Self, ModelError> {
        let layout = arch.kv_layout();
        let per_token = KvStorage::bytes_per_token(layout.layers, layout.kv_heads, layout.head_dim);
        if opts.block_size == 0 {
            return Err(ModelError::InvalidParam {
                param: "block_size",
                message: "must be at least 1".into(),
            });
        }
        let num_blocks = opts.kv_cache_bytes / (per_token * opts.block_size);
        if num_blocks == 0 {
            return Err(ModelError::InvalidParam {
                param: "kv_cache_bytes",
                message: format!(
                    "{} bytes hold no block of {} tokens ({per_token} bytes per token)",
                    opts.kv_cache_bytes, opts.block_size
                ),
            });
        }
        let max_seq_len = opts
            .max_seq_len
            .map_or(arch.max_seq_len(), |m| m.min(arch.max_seq_len()));
        let info = BackendInfo {
            model_name,
            block_size: opts.block_size,
            num_blocks,
            max_seq_len,
            vocab_size: arch.vocab_size(),
            eos_token_ids,
        };
        let kv = KvStorage::new(
            layout.layers,
            num_blocks,
            opts.block_size,
            layout.kv_heads,
            layout.head_dim,
        );
        Ok(Self { arch, kv, info })
    }
}

impl ModelBackend for CpuBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        validate_batch(&self.info, batch)?;
        if batch.seqs.is_empty() {
            return Ok(StepOutput::default());
        }
        self.arch.forward(batch, &mut self.kv)
    }
}
