//! One file per model architecture; each turns a step batch into logits against paged KV.

mod attention;
pub mod gemma3;
pub mod llama;

use crate::backend::{StepBatch, StepOutput};
use crate::kv_cache::KvStorage;
use crate::ModelError;

/// Shape of the KV cache an architecture needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// What a model architecture provides to the CPU backend. Adding a model family means one
/// more implementation of this, in one more file.
pub trait Architecture: Send + Sync {
    fn kv_layout(&self) -> KvLayout;
    fn vocab_size(&self) -> usize;
    fn max_seq_len(&self) -> usize;
    /// Runs every token of `batch`, writing their K/V into `kv`, and returns the logits of the
    /// last token of each sequence that samples. The batch is already validated.
    fn forward(&self, batch: &StepBatch, kv: &mut KvStorage) -> Result<StepOutput, ModelError>;
}

/// Where each token of a step sits: which sequence of the batch, at which position.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenSlot {
    pub seq_index: usize,
    pub pos: usize,
}

/// Flattens a batch into per-token slots (in batch order) and the row of each sampling
/// sequence's last token.
pub(crate) fn token_slots(batch: &StepBatch) -> (Vec<TokenSlot>, Vec<usize>) {
    let mut slots = Vec::with_capacity(batch.num_tokens());
    let mut sample_rows = Vec::new();
    for (seq_index, s) in batch.seqs.iter().enumerate() {
        for i in 0..s.tokens.len() {
            slots.push(TokenSlot {
                seq_index,
                pos: s.start_pos + i,
            });
        }
        if s.sample {
            sample_rows.push(slots.len() - 1);
        }
    }
    (slots, sample_rows)
}
