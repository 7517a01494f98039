//! The seam between the engine's scheduler and a model: one `step` runs a batch of sequences,
//! each with its own new tokens at its own positions against its own KV blocks.

pub use gridserve_kernels::cpu::SampleRow;

use crate::ModelError;

/// Identifies a sequence for the lifetime of a request; chosen by the caller.
pub type SeqId = u64;

/// What the scheduler needs to know about a backend to plan steps for it.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    /// Model name as served (e.g. `gemma-3-270m`).
    pub model_name: String,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks available in total.
    pub num_blocks: usize,
    /// Longest sequence (prompt + output) the model supports.
    pub max_seq_len: usize,
    pub vocab_size: usize,
    /// Token ids that end generation (end of sequence, end of turn).
    pub eos_token_ids: Vec<u32>,
}

/// One sequence's share of a step.
#[derive(Clone, Debug)]
pub struct SeqStep {
    pub seq: SeqId,
    /// The tokens to run now: a prompt chunk, or the one token sampled last step.
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; every earlier position is already in the KV blocks.
    pub start_pos: usize,
    /// KV blocks covering at least `start_pos + tokens.len()` positions.
    pub block_table: Vec<u32>,
    /// Whether to return logits for the last token (false for a prompt chunk that is not the
    /// prompt's last: nothing is sampled there, so the output head is skipped).
    pub sample: bool,
}

#[derive(Clone, Debug, Default)]
pub struct StepBatch {
    pub seqs: Vec<SeqStep>,
}

impl StepBatch {
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// Logits of the last token of every sequence that asked for them, in batch order, as one
/// row-major `[rows, vocab]` buffer: the output head writes it once, and a batch of 16 does
/// not copy 16 MB of 262k-token rows into separate vectors every step.
///
/// Rows the backend sampled itself (on the device: see [`ModelBackend::step_sampling`]) come
/// back as token and logprob only, in `sampled`.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    seqs: Vec<SeqId>,
    logits: Vec<f32>,
    vocab: usize,
    sampled: Vec<DeviceSampled>,
}

/// A token the backend sampled, with its logprob under the raw distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceSampled {
    pub seq: SeqId,
    pub token: u32,
    pub logprob: f32,
}

impl StepOutput {
    /// `logits` holds one `vocab`-wide row per entry of `seqs`, in that order.
    pub fn new(seqs: Vec<SeqId>, logits: Vec<f32>, vocab: usize) -> Result<Self, ModelError> {
        if logits.len() != seqs.len() * vocab {
            return Err(ModelError::Batch(format!(
                "{} logits for {} rows of {vocab}",
                logits.len(),
                seqs.len()
            )));
        }
        Ok(Self {
            seqs,
            logits,
            vocab,
            sampled: Vec::new(),
        })
    }

    /// Adds the rows the backend sampled itself.
    pub fn with_sampled(mut self, sampled: Vec<DeviceSampled>) -> Self {
        self.sampled = sampled;
        self
    }

    /// Rows sampled by the backend, in batch order.
    pub fn sampled(&self) -> &[DeviceSampled] {
        &self.sampled
    }

    /// Builds the buffer from separate rows (test and simulated backends).
    pub fn from_rows(
        vocab: usize,
        rows: impl IntoIterator<Item = (SeqId, Vec<f32>)>,
    ) -> Result<Self, ModelError> {
        let (mut seqs, mut logits) = (Vec::new(), Vec::new());
        for (seq, row) in rows {
            seqs.push(seq);
            logits.extend(row);
        }
        Self::new(seqs, logits, vocab)
    }

    /// Rows returned (logits and sampled).
    pub fn len(&self) -> usize {
        self.seqs.len() + self.sampled.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(sequence, logits row)` in batch order.
    pub fn rows(&self) -> impl Iterator<Item = (SeqId, &[f32])> {
        // `max(1)`: a zero-width vocab has no rows to split, and chunks_exact rejects 0.
        self.seqs
            .iter()
            .copied()
            .zip(self.logits.chunks_exact(self.vocab.max(1)))
    }
}

/// A model that can run steps. Blocks are owned by the caller (see [`crate::BlockAllocator`]),
/// so a backend keeps no per-sequence state and needs no release call.
pub trait ModelBackend: Send {
    fn info(&self) -> &BackendInfo;
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError>;

    /// Whether [`ModelBackend::step_sampling`] samples where the logits are (a GPU), so only
    /// a token id and a logprob per row reach the host.
    fn samples_on_device(&self) -> bool {
        false
    }

    /// As `step`, but the rows of the sequences in `sampling` are sampled by the backend with
    /// those parameters and come back in `StepOutput::sampled`; the other rows' logits come
    /// back as usual. Backends that cannot sample return logits for every row.
    fn step_sampling(
        &mut self,
        batch: &StepBatch,
        sampling: &[(SeqId, SampleRow)],
    ) -> Result<StepOutput, ModelError> {
        let _ = sampling;
        self.step(batch)
    }
}

/// A boxed backend (what loading returns) is a backend.
impl<B: ModelBackend + ?Sized> ModelBackend for Box<B> {
    fn info(&self) -> &BackendInfo {
        (**self).info()
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        (**self).step(batch)
    }

    fn samples_on_device(&self) -> bool {
        (**self).samples_on_device()
    }

    fn step_sampling(
        &mut self,
        batch: &StepBatch,
        sampling: &[(SeqId, SampleRow)],
    ) -> Result<StepOutput, ModelError> {
        (**self).step_sampling(batch, sampling)
    }
}

/// Checks a batch against a backend's limits before any work, so a bad plan is an error
/// rather than an out-of-bounds write into another sequence's KV blocks.
pub fn validate_batch(info: &BackendInfo, batch: &StepBatch) -> Result<(), ModelError> {
    for s in &batch.seqs {
        if s.tokens.is_empty() {
            return Err(ModelError::Batch(format!(
                "sequence {} has no tokens",
                s.seq
            )));
        }
        let end = s.start_pos + s.tokens.len();
        if end > info.max_seq_len {
            return Err(ModelError::Batch(format!(
                "sequence {} reaches position {end}, beyond the model's {}",
                s.seq, info.max_seq_len
            )));
        }
        if s.block_table.len() * info.block_size < end {
            return Err(ModelError::Batch(format!(
                "sequence {} needs {} KV slots, its blocks hold {}",
                s.seq,
                end,
                s.block_table.len() * info.block_size
            )));
        }
        if let Some(b) = s
            .block_table
            .iter()
            .find(|&&b| b as usize >= info.num_blocks)
        {
            return Err(ModelError::Batch(format!(
                "sequence {} uses unknown block {b}",
                s.seq
            )));
        }
        if let Some(t) = s.tokens.iter().find(|&&t| t as usize >= info.vocab_size) {
            return Err(ModelError::Batch(format!(
                "sequence {} has token {t} outside the vocabulary",
                s.seq
            )));
        }
    }
    Ok(())
}
