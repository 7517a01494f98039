//! The simulation's model backend: no model at all. A two-token vocabulary where token 1
//! always wins, so greedy requests with `ignore_eos` run exactly to their `max_tokens`.

use gridserve_models::{BackendInfo, ModelBackend, ModelError, StepBatch, StepOutput};

use crate::engine::{GenerationRequest, Priority};
use gridserve_models::sampling::SamplingParams;

/// Logits every sampled sequence gets: token 1 beats token 0 (the end-of-sequence token).
const LOGITS: [f32; 2] = [0.0, 1.0];

pub struct SimBackend {
    info: BackendInfo,
}

impl SimBackend {
    pub fn new(model_name: &str, num_blocks: usize, block_size: usize, max_seq_len: usize) -> Self {
        Self {
            info: BackendInfo {
                model_name: model_name.to_string(),
                block_size,
                num_blocks,
                max_seq_len,
                vocab_size: LOGITS.len(),
                eos_token_ids: vec![0],
            },
        }
    }
}

impl ModelBackend for SimBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        let rows = batch
            .seqs
            .iter()
            .filter(|s| s.sample)
            .map(|s| (s.seq, LOGITS.to_vec()));
        StepOutput::from_rows(LOGITS.len(), rows)
    }
}

/// The request a simulated arrival becomes: `prompt_tokens` ones, greedy, exactly
/// `output_tokens` generated.
pub fn sim_request(
    prompt_tokens: usize,
    output_tokens: usize,
    priority: Priority,
) -> GenerationRequest {
    GenerationRequest {
        prompt: vec![1; prompt_tokens],
        sampling: SamplingParams::greedy(),
        max_tokens: output_tokens,
        stop_token_ids: Vec::new(),
        ignore_eos: true,
        priority,
    }
}
