//! The step model: one engine step's duration, energy and average power on one GPU, from the
//! step's composition, the SM clock and the tensor-parallel degree. Pure functions, no state.
//!
//! Form (per GPU, `TP` GPUs share the model; constants in `GpuProfile::model`):
//! ```text
//! bytes  = (W + Σctx·kv/η_kv + n_p·kv) / TP              weights once, KV read, new KV written
//! flops  = (2·N·(b + n_p) + 4·layers·d·(Σctx + n_p·c_p)) / TP   matmuls + attention
//! t_mem  = bytes / (η_bw · BW · min(1, f/f_knee))        decode: memory-bound
//! t_comp = flops / (η_c · F · f/f_max)                    prefill: compute-bound, ≈ 1/f
//! t_gpu  = (t_mem^q + t_comp^q)^(1/q)                     smooth max: overlap is imperfect
//! t_comm = 2·layers·(α + tokens·d·2 B·2(TP−1)/TP / link)  two ring all-reduces per layer (TP>1)
//! t      = t_overhead + b·t_seq + t_comm + t_gpu
//! P      = P_idle + P_act·(f/f_max)·s² + e_byte·bytes/t + e_flop·s²·flops/t
//! s(f)   = V(f)/V_max, V flat at V_min below f_v, linear up to V_max at f_max
//! ```
//! `s²` scales every switching term (dynamic power ∝ C·V²·f); HBM energy per byte does not
//! depend on the SM voltage, which is why clock locking saves so much in memory-bound decode.

use gridserve_models::StepBatch;

use super::profile::GpuProfile;
use super::shape::ModelShape;

/// What one engine step runs, summed over all sequences in the step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepComposition {
    /// Sequences producing one decode token each.
    pub decode_seqs: u32,
    /// Σ context tokens of those sequences (what attention reads from the KV cache).
    pub decode_context_tokens: f64,
    /// Prompt tokens processed this step (possibly a chunk of a longer prompt).
    pub prefill_tokens: f64,
    /// Mean number of earlier tokens each prefill token attends to.
    pub prefill_mean_context_tokens: f64,
}

impl StepComposition {
    /// A step from each decoding sequence's context length, plus prefill tokens.
    pub fn from_contexts(
        contexts_tokens: &[u32],
        prefill_tokens: u32,
        prefill_mean_context_tokens: f64,
    ) -> Self {
        Self {
            decode_seqs: contexts_tokens.len() as u32,
            decode_context_tokens: contexts_tokens.iter().map(|&c| f64::from(c)).sum(),
            prefill_tokens: f64::from(prefill_tokens),
            prefill_mean_context_tokens,
        }
    }

    /// A step from a decode count and their mean context, plus prefill tokens.
    pub fn uniform(
        decode_seqs: u32,
        mean_context_tokens: f64,
        prefill_tokens: f64,
        prefill_mean_context_tokens: f64,
    ) -> Self {
        Self {
            decode_seqs,
            decode_context_tokens: f64::from(decode_seqs) * mean_context_tokens,
            prefill_tokens,
            prefill_mean_context_tokens,
        }
    }

    /// What an engine step runs: a sequence bringing one token at a position > 0 decodes
    /// against `start_pos + 1` tokens of context; any other is a prompt chunk whose tokens
    /// attend, on average, to `start_pos + len / 2` earlier tokens.
    pub fn from_batch(batch: &StepBatch) -> Self {
        let mut step = Self::default();
        let mut prefill_context_sum = 0.0;
        for seq in &batch.seqs {
            let (start, len) = (seq.start_pos as f64, seq.tokens.len() as f64);
            if seq.tokens.len() == 1 && seq.start_pos > 0 {
                step.decode_seqs += 1;
                step.decode_context_tokens += start + 1.0;
            } else {
                step.prefill_tokens += len;
                prefill_context_sum += len * (start + len / 2.0);
            }
        }
        if step.prefill_tokens > 0.0 {
            step.prefill_mean_context_tokens = prefill_context_sum / step.prefill_tokens;
        }
        step
    }

    pub fn is_empty(&self) -> bool {
        self.decode_seqs == 0 && self.prefill_tokens <= 0.0
    }
}

/// What a step costs one GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCost {
    pub duration_seconds: f64,
    pub energy_joules: f64,
    pub power_watts: f64,
    pub memory_seconds: f64,
    pub compute_seconds: f64,
}

/// SM voltage relative to its maximum at `clock_mhz` (the `s(f)` above).
pub fn voltage_fraction(profile: &GpuProfile, clock_mhz: f64) -> f64 {
    let m = &profile.model;
    let max_mhz = f64::from(profile.sm_clock_max_mhz);
    if clock_mhz <= m.voltage_knee_mhz || max_mhz <= m.voltage_knee_mhz {
        return m.voltage_min_fraction;
    }
    let span = (clock_mhz.min(max_mhz) - m.voltage_knee_mhz) / (max_mhz - m.voltage_knee_mhz);
    m.voltage_min_fraction + (1.0 - m.voltage_min_fraction) * span
}

/// Power of a GPU that is clocked up but moving no data: what a TP rank burns while it waits.
pub fn floor_power_watts(profile: &GpuProfile, clock_mhz: f64) -> f64 {
    let f = clock_mhz / f64::from(profile.sm_clock_max_mhz);
    let s = voltage_fraction(profile, clock_mhz);
    profile.idle_watts + profile.model.active_watts * f * s * s
}

/// Duration, energy and power of one step on one of `tp` GPUs at `clock_mhz`.
pub fn step_cost(
    profile: &GpuProfile,
    shape: &ModelShape,
    tp: u32,
    step: &StepComposition,
    clock_mhz: f64,
) -> StepCost {
    let m = &profile.model;
    let tp_f = f64::from(tp.max(1));
    let b = f64::from(step.decode_seqs);
    let n_p = step.prefill_tokens.max(0.0);
    let layers = f64::from(shape.layers);
    let hidden = f64::from(shape.hidden_size);
    let kv = shape.kv_bytes_per_token;

    let bytes =
        (shape.weight_bytes + step.decode_context_tokens * kv / m.kv_read_efficiency + n_p * kv)
            / tp_f;
    let attention_flops = 4.0
        * layers
        * hidden
        * (step.decode_context_tokens + n_p * step.prefill_mean_context_tokens);
    let flops = (2.0 * shape.params * (b + n_p) + attention_flops) / tp_f;

    let f = clock_mhz / f64::from(profile.sm_clock_max_mhz);
    let bandwidth = m.memory_efficiency
        * profile.hbm_bandwidth_bytes_per_second
        * (clock_mhz / m.memory_clock_knee_mhz).min(1.0);
    let memory_seconds = bytes / bandwidth;
    let compute_seconds = flops / (m.compute_efficiency * profile.dense_bf16_flops_per_second * f);
    let q = m.smoothmax_exponent;
    let gpu_seconds = (memory_seconds.powf(q) + compute_seconds.powf(q)).powf(1.0 / q);
    let comm_seconds = if tp > 1 {
        // Ring all-reduce of the BF16 activations after attention and after the MLP.
        let payload_bytes = (b + n_p) * hidden * 2.0 * 2.0 * (tp_f - 1.0) / tp_f;
        2.0 * layers
            * (m.allreduce_latency_seconds + payload_bytes / m.interconnect_bytes_per_second)
    } else {
        0.0
    };
    let duration_seconds =
        m.step_overhead_seconds + b * m.per_sequence_seconds + comm_seconds + gpu_seconds;

    let s = voltage_fraction(profile, clock_mhz);
    let power_watts = floor_power_watts(profile, clock_mhz)
        + m.energy_per_byte_joules * bytes / duration_seconds
        + m.energy_per_flop_joules * s * s * flops / duration_seconds;
    StepCost {
        duration_seconds,
        energy_joules: power_watts * duration_seconds,
        power_watts,
        memory_seconds,
        compute_seconds,
    }
}

#[cfg(test)]
mod tests {
    use gridserve_models::{SeqStep, StepBatch};

    use super::StepComposition;

    fn seq(id: u64, tokens: usize, start_pos: usize) -> SeqStep {
        SeqStep {
            seq: id,
            tokens: vec![1; tokens],
            start_pos,
            block_table: Vec::new(),
            sample: true,
        }
    }

    #[test]
    fn from_batch_splits_decodes_from_prefill_chunks() {
        let batch = StepBatch {
            // Two decodes (contexts 11 and 101), a first chunk of 100 tokens (mean context
            // 50), a later chunk of 50 at 200 (mean 225) and a one-token prompt at 0 (prefill).
            seqs: vec![
                seq(1, 1, 10),
                seq(2, 1, 100),
                seq(3, 100, 0),
                seq(4, 50, 200),
                seq(5, 1, 0),
            ],
        };
        let c = StepComposition::from_batch(&batch);
        assert_eq!(c.decode_seqs, 2);
        assert_eq!(c.decode_context_tokens, 112.0);
        assert_eq!(c.prefill_tokens, 151.0);
        let expected = (100.0 * 50.0 + 50.0 * 225.0 + 0.5) / 151.0;
        assert!((c.prefill_mean_context_tokens - expected).abs() < 1e-9);
        assert!(StepComposition::from_batch(&StepBatch::default()).is_empty());
    }
}
