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

/// The final norm and output head over the last token of each sampling sequence: the end of
/// every architecture's step.
pub(crate) struct Head<'a> {
    pub final_norm: &'a [f32],
    pub rms_eps: f32,
    pub lm_head: &'a crate::linear::QLinear,
    pub vocab_size: usize,
}

impl Head<'_> {
    /// `x` is the step's `[tokens, hidden]` residual stream after the last layer.
    pub fn logits(
        &self,
        x: &[f32],
        batch: &StepBatch,
        slots: &[TokenSlot],
        sample_rows: &[usize],
    ) -> Result<StepOutput, ModelError> {
        if sample_rows.is_empty() {
            return Ok(StepOutput::default());
        }
        let hidden = self.final_norm.len();
        let last: Vec<f32> = sample_rows
            .iter()
            .flat_map(|&r| x[r * hidden..(r + 1) * hidden].iter().copied())
            .collect();
        let mut normed = vec![0f32; last.len()];
        crate::profile::time(crate::profile::Stage::Elementwise, || {
            gridserve_kernels::cpu::rms_norm_rows(&last, self.final_norm, self.rms_eps, &mut normed)
        })?;
        let logits = self.lm_head.forward(&normed, sample_rows.len())?;
        let seqs = sample_rows
            .iter()
            .map(|&r| batch.seqs[slots[r].seq_index].seq)
            .collect();
        StepOutput::new(seqs, logits, self.vocab_size)
    }
}
