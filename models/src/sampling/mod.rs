//! Per-sequence token sampling: parameter validation, penalties, temperature, top-k / top-p /
//! min-p filtering, seeded randomness and OpenAI-style logprobs over one logits row.

mod row;
#[cfg(test)]
mod tests;
mod weights;

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ModelError;

use row::{argmax, block_maxima, clean, desc, fast_exp, top_k_pairs, RawStats};
use weights::{collect_weights, draw_from_cands, draw_from_row, nucleus, to_weights};

/// Below this temperature, dividing logits would overflow or be numerically meaningless, so
/// sampling degenerates to argmax (vLLM uses the same cut-off).
const GREEDY_TEMPERATURE: f32 = 1e-5;

/// OpenAI caps `top_logprobs` at 20; larger values would only cost time on 262k-token vocabs.
pub const MAX_LOGPROBS: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: Option<u64>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub repetition_penalty: f32,
    /// Number of top alternatives to return with each token; `Some(0)` returns only the
    /// sampled token's logprob. `None` still fills `Sampled::logprob` but never `top`.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logprobs: None,
        }
    }
}

fn invalid(param: &'static str, message: String) -> Result<(), ModelError> {
    Err(ModelError::InvalidParam { param, message })
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Ranges follow the OpenAI API so requests rejected there are rejected here too.
    /// Comparisons are written so that NaN always fails them.
    pub fn validate(&self) -> Result<(), ModelError> {
        let t = self.temperature;
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return invalid(
                "temperature",
                format!("must be a finite number in [0, 2], got {t}"),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return invalid("min_p", format!("must be in [0, 1], got {}", self.min_p));
        }
        if self.top_k == Some(0) {
            return invalid(
                "top_k",
                "must be at least 1 (omit it to disable top-k)".into(),
            );
        }
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return invalid(param, format!("must be in [-2, 2], got {v}"));
            }
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return invalid(
                "repetition_penalty",
                format!("must be finite and > 0, got {r}"),
            );
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_LOGPROBS) {
            return invalid(
                "logprobs",
                format!("must be at most {MAX_LOGPROBS}, got {n}"),
            );
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        // A NaN temperature (unvalidated params) also lands here rather than poisoning weights.
        self.temperature.is_nan() || self.temperature < GREEDY_TEMPERATURE
    }

    fn has_penalties(&self) -> bool {
        self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
            || self.repetition_penalty != 1.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Log-softmax of the raw logits (before penalties, temperature and filters), which is
    /// what OpenAI and vLLM report by default.
    pub logprob: f32,
    /// The `logprobs` most likely tokens under the same raw distribution, most likely first,
    /// ties broken by lower id. Tokens with zero probability are never listed.
    pub top: Vec<TokenLogprob>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Occurrences of each generated token; sparse because outputs are tiny next to the vocab.
    counts: HashMap<u32, u32>,
    // Reused buffers so steady-state sampling does not allocate megabytes per token.
    raw_maxima: Vec<f32>,
    row: Vec<f32>,
    row_maxima: Vec<f32>,
    block_sums: Vec<f64>,
    cands: Vec<(u32, f32)>,
    /// Σ exp(x - max) over the whole row when this step's draw computed it anyway.
    raw_exp_sum: Option<f64>,
}

/// Where the weights that survived filtering live.
enum Support {
    /// In `row`, with zeros for dropped tokens, `block_sums`, and this total.
    Row(f64),
    /// In `cands`.
    Cands,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The scratch buffers hold megabytes of floats; they are not state worth printing.
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("distinct_observed", &self.counts.len())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            // Seeding from the thread RNG avoids a getrandom syscall per request and cannot fail.
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self {
            params,
            rng,
            counts: HashMap::new(),
            raw_maxima: Vec::new(),
            row: Vec::new(),
            row_maxima: Vec::new(),
            block_sums: Vec::new(),
            cands: Vec::new(),
            raw_exp_sum: None,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// This step's parameters for a device sampler (token and logprob only), or None when it
    /// needs the logits on the host: penalties (they depend on what was generated) or top
    /// alternatives (`logprobs` above 0). Draws the step's uniform from the sequence's own
    /// generator, so a seeded request stays reproducible on a given device.
    pub fn device_row(&mut self) -> Option<crate::SampleRow> {
        let p = &self.params;
        if p.has_penalties() || p.logprobs.is_some_and(|n| n > 0) {
            return None;
        }
        let greedy = p.is_greedy();
        let row = crate::SampleRow {
            // The kernel takes argmax below its own cut-off, the same 1e-5.
            temperature: if greedy { 0.0 } else { p.temperature },
            top_k: p.top_k.unwrap_or(0),
            top_p: p.top_p,
            min_p: p.min_p,
            uniform: 0.0,
        };
        // Greedy rows draw nothing, as on the host.
        let uniform = if greedy {
            0.0
        } else {
            self.rng.random::<f32>()
        };
        Some(crate::SampleRow { uniform, ..row })
    }

    /// Records a generated token so later steps penalise it. Prompt tokens are deliberately
    /// not fed here: OpenAI's presence/frequency penalties only count generated tokens.
    pub fn observe(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
    }

    /// Picks the next token from one logits row. Never panics, whatever the row contains.
    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        block_maxima(logits, &mut self.raw_maxima);
        let raw_argmax = argmax(logits, &self.raw_maxima);
        self.raw_exp_sum = None;
        let token = self.choose(logits, raw_argmax);
        let raw = RawStats::new(logits, &self.raw_maxima, raw_argmax, self.raw_exp_sum);
        let top = match self.params.logprobs {
            Some(n) => {
                let mut best = Vec::new();
                top_k_pairs(logits, &self.raw_maxima, n.min(MAX_LOGPROBS), &mut best);
                best.sort_unstable_by(desc);
                best.into_iter()
                    .map(|(token, x)| TokenLogprob {
                        token,
                        logprob: raw.logprob(x),
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let logprob = logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&x| raw.logprob(x));
        Sampled {
            token,
            logprob,
            top,
        }
    }

    fn choose(&mut self, logits: &[f32], raw_argmax: Option<u32>) -> u32 {
        // Everything -inf/NaN: token 0 is as good as any, and must not panic.
        let fallback = raw_argmax.unwrap_or(0);
        let penalised = self.params.has_penalties() && !self.counts.is_empty();
        if self.params.is_greedy() && !penalised {
            return fallback;
        }
        self.load_row(logits, penalised);
        let Some(best) = argmax(&self.row, &self.row_maxima) else {
            // Penalties pushed every viable token to -inf: the raw argmax is least surprising.
            return fallback;
        };
        if self.params.is_greedy() {
            // Penalties still apply at temperature 0, as in vLLM and HF generate.
            return best;
        }
        let token = self.draw(self.row[best as usize]).unwrap_or(best);
        if penalised || self.params.temperature != 1.0 {
            // The weight total is only the raw softmax normaliser for the unmodified row.
            self.raw_exp_sum = None;
        }
        token
    }

    /// Loads the cleaned row, with penalties applied when `penalised`, and its block maxima.
    fn load_row(&mut self, logits: &[f32], penalised: bool) {
        self.row.clear();
        self.row.extend(logits.iter().map(|&x| clean(x)));
        if !penalised {
            self.row_maxima.clone_from(&self.raw_maxima);
            return;
        }
        let p = &self.params;
        for (&token, &count) in &self.counts {
            let Some(x) = self.row.get_mut(token as usize) else {
                continue;
            };
            if *x == f32::NEG_INFINITY {
                continue;
            }
            // HF repetition penalty: shrink positive logits, push negative ones further down.
            let y = if *x > 0.0 {
                *x / p.repetition_penalty
            } else {
                *x * p.repetition_penalty
            };
            // OpenAI: frequency scales with the count, presence is a flat one-off.
            *x = clean(y - count as f32 * p.frequency_penalty - p.presence_penalty);
        }
        block_maxima(&self.row, &mut self.row_maxima);
    }

    /// Draws a token from the loaded row, whose maximum is `max`.
    fn draw(&mut self, max: f32) -> Option<u32> {
        match self.filter(max) {
            Support::Row(total) => {
                let target = self.rng.random::<f64>() * total;
                draw_from_row(&self.row, &self.block_sums, target).map(|i| i as u32)
            }
            Support::Cands => {
                let total: f64 = self.cands.iter().map(|c| f64::from(c.1)).sum();
                let target = self.rng.random::<f64>() * total;
                draw_from_cands(&self.cands, target)
            }
        }
    }

    /// Applies top-k, temperature, top-p and min-p to the loaded row.
    fn filter(&mut self, max: f32) -> Support {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        if p.top_k.is_none() && p.top_p >= 1.0 {
            // min-p alone is a per-token threshold on p_i / p_max, i.e. on the weight itself,
            // so the row can be drawn from in place without collecting candidates.
            let (row, maxima, sums) = (&mut self.row, &self.row_maxima, &mut self.block_sums);
            let total = to_weights(row, maxima, max, inv_t, p.min_p, sums);
            self.raw_exp_sum = (p.min_p <= 0.0).then_some(total);
            return Support::Row(total);
        }
        self.filter_candidates(max, inv_t);
        Support::Cands
    }

    /// Fills `cands` with (token, weight) for the tokens surviving top-k, top-p and min-p, in
    /// that order; weights are relative to the max, which has weight exactly 1.
    fn filter_candidates(&mut self, max: f32, inv_t: f32) {
        let p = &self.params;
        let cands = &mut self.cands;
        let mass = if let Some(k) = p.top_k {
            // Ranked on logits, before temperature, so rounding in the weights cannot reorder.
            top_k_pairs(&self.row, &self.row_maxima, k, cands);
            for c in cands.iter_mut() {
                c.1 = fast_exp((c.1 - max) * inv_t);
            }
            cands.iter().map(|c| f64::from(c.1)).sum()
        } else {
            let (row, maxima, sums) = (&mut self.row, &self.row_maxima, &mut self.block_sums);
            let total = to_weights(row, maxima, max, inv_t, 0.0, sums);
            self.raw_exp_sum = Some(total);
            // Tokens below (1 - top_p) * mean weight cannot reach the nucleus: even all of them
            // together hold less than the 1 - top_p tail it drops. Halved for rounding slack.
            let floor = ((1.0 - f64::from(p.top_p)) * total / self.row.len() as f64 * 0.5) as f32;
            // A block's best weight comes from its best logit, so whole blocks can be skipped.
            let floor_logit = |m: f32| fast_exp((m - max) * inv_t) >= floor;
            collect_weights(&self.row, &self.row_maxima, floor, floor_logit, cands);
            total
        };
        if p.top_p < 1.0 {
            // top-p renormalises over what top-k kept, so its target uses that mass.
            nucleus(cands, f64::from(p.top_p) * mass);
        }
        if p.min_p > 0.0 {
            // The max token has weight exactly 1.0 and min_p <= 1, so it always survives.
            let min_p = p.min_p;
            cands.retain(|c| c.1 >= min_p);
        }
    }
}
