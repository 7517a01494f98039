//! Per-sequence token sampling: parameter validation, penalties, temperature, top-k / top-p /
//! min-p filtering, seeded randomness and OpenAI-style logprobs over one logits row.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ModelError;

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

/// NaN would poison every comparison and sum downstream, and +inf would make `x - max` NaN;
/// clamping keeps "this token dominates" without breaking the arithmetic.
#[inline(always)]
fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x.min(f32::MAX)
    }
}

/// Descending by value, then ascending id, so every selection and tie-break is deterministic.
#[inline]
fn desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Independent accumulators let LLVM vectorise reductions it must otherwise keep serial
/// (float addition and max are not reassociated without them).
const LANES: usize = 8;

/// `exp` for the non-positive arguments used here (Cephes `expf` polynomial, ~1 ulp).
/// libm's `expf` is an opaque call that blocks vectorisation and cost ~2 ms per 262k-token
/// row; this branch-free form vectorises. Results below the smallest normal flush to 0.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LO: f32 = -87.336_54;
    const HI: f32 = 88.0;
    // 1.5 * 2^23: adding it rounds to an integer that can be read back from the low bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let shifted = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // Cody-Waite split of ln 2 keeps the reduced argument exact to f32 precision.
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let poly = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = poly * (r * r) + r + 1.0;
    let exponent = (shifted.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23;
    let v = y * f32::from_bits(exponent as u32);
    if x < LO {
        0.0
    } else {
        v
    }
}

fn max_clean(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in m.iter_mut().zip(c) {
            *m = m.max(clean(x));
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&m)
        .fold(f32::NEG_INFINITY, |a, &x| a.max(clean(x)))
}

/// Granularity of the per-block summaries (maxima, weight sums). Small enough that scanning
/// one block is cheap, large enough that a 262k vocab has only ~1k of them.
const BLOCK: usize = 256;

/// Per-block maxima of the cleaned row. They let argmax, top-n and top-k visit only the few
/// blocks that can matter instead of the whole vocab.
fn block_maxima(xs: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.extend(xs.chunks(BLOCK).map(max_clean));
}

/// Lowest index holding the maximum of the cleaned row, or `None` if it is all -inf.
fn argmax(xs: &[f32], maxima: &[f32]) -> Option<u32> {
    let max = maxima.iter().fold(f32::NEG_INFINITY, |a, &m| a.max(m));
    let b = maxima
        .iter()
        .position(|&m| m == max && m > f32::NEG_INFINITY)?;
    let j = xs[b * BLOCK..].iter().position(|&x| clean(x) == max)?;
    Some((b * BLOCK + j) as u32)
}

/// How far (in scaled-logit units) below the max a block's best value may lie before the
/// whole block is treated as weight 0: even `len` such tokens together add under 2^-25 of
/// the max token's weight, below f32 resolution, so skipping them changes no f32 result.
fn negligible_gap(len: usize) -> f32 {
    (len.max(1) as f32).ln() + 25.0 * std::f32::consts::LN_2
}

/// Σ exp(x - max) over the cleaned row: f32 lanes within a block, f64 across blocks.
fn sum_exp(xs: &[f32], maxima: &[f32], max: f32) -> f64 {
    let gap = negligible_gap(xs.len());
    let mut total = 0f64;
    for (block, &block_max) in xs.chunks(BLOCK).zip(maxima) {
        if block_max - max < -gap {
            continue;
        }
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += fast_exp(clean(x) - max);
            }
        }
        let tail = chunks.remainder().iter().map(|&x| fast_exp(clean(x) - max));
        total += f64::from(acc.iter().sum::<f32>() + tail.sum::<f32>());
    }
    total
}

/// Log-sum-exp of the cleaned raw row, the normaliser for reported logprobs.
struct RawStats {
    max: f32,
    log_sum_exp: f32,
}

impl RawStats {
    /// `known_sum` is Σ exp(x - max) when a temperature-1 draw already computed it.
    fn new(logits: &[f32], maxima: &[f32], argmax: Option<u32>, known_sum: Option<f64>) -> Self {
        let Some(argmax) = argmax else {
            return Self {
                max: f32::NEG_INFINITY,
                log_sum_exp: f32::NEG_INFINITY,
            };
        };
        let max = clean(logits[argmax as usize]);
        let sum = known_sum.unwrap_or_else(|| sum_exp(logits, maxima, max));
        Self {
            max,
            log_sum_exp: max + sum.ln() as f32,
        }
    }

    fn logprob(&self, x: f32) -> f32 {
        let x = clean(x);
        if x == f32::NEG_INFINITY || self.max == f32::NEG_INFINITY {
            return f32::NEG_INFINITY;
        }
        x - self.log_sum_exp
    }
}

/// Fills `out` with the `k` best finite (token, cleaned value) pairs of `xs`, unordered.
/// The k-th largest block maximum is a lower bound for the k-th largest value (each block
/// maximum is a distinct element), so only blocks reaching it are scanned: ~k candidates for
/// typical rows instead of the whole vocab.
fn top_k_pairs(xs: &[f32], maxima: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    let mut live: Vec<f32> = maxima
        .iter()
        .copied()
        .filter(|&m| m > f32::NEG_INFINITY)
        .collect();
    if k == 0 || live.is_empty() {
        return;
    }
    let nth = (k - 1).min(live.len() - 1);
    let (_, &mut bound, _) = live.select_nth_unstable_by(nth, |a, b| b.total_cmp(a));
    collect_at_least(xs, maxima, bound, out);
    if out.len() < k && nth < k - 1 {
        // Fewer finite blocks than k, so the bound was only a guess: take every finite token.
        collect_at_least(xs, maxima, f32::MIN, out);
    }
    if k < out.len() {
        out.select_nth_unstable_by(k - 1, desc);
        out.truncate(k);
    }
}

fn collect_at_least(xs: &[f32], maxima: &[f32], bound: f32, out: &mut Vec<(u32, f32)>) {
    out.clear();
    for (b, _) in maxima.iter().enumerate().filter(|(_, &m)| m >= bound) {
        let start = b * BLOCK;
        let block = xs[start..]
            .iter()
            .take(BLOCK)
            .map(|&x| clean(x))
            .enumerate();
        out.extend(
            block
                .filter(|&(_, x)| x >= bound)
                .map(|(j, x)| ((start + j) as u32, x)),
        );
    }
}

/// Weights are in [0, 1], where the f32 bit pattern is monotone in the value, so the top bits
/// give order-preserving buckets (1/16 of an octave each): a radix-select first pass.
const HIST_BUCKETS: usize = 2048;

#[inline(always)]
fn weight_bucket(w: f32) -> usize {
    ((w.to_bits() >> 19) as usize).min(HIST_BUCKETS - 1)
}

/// Keeps the smallest highest-weight set of `cands` whose mass reaches `target`, at least one
/// token. Buckets locate the boundary, so only the boundary bucket is ever sorted.
fn nucleus(cands: &mut Vec<(u32, f32)>, target: f64) {
    let mut mass = vec![0f64; HIST_BUCKETS];
    for c in cands.iter() {
        mass[weight_bucket(c.1)] += f64::from(c.1);
    }
    let mut cum = 0f64;
    let mut edge = None;
    for b in (0..HIST_BUCKETS).rev() {
        if mass[b] > 0.0 && cum + mass[b] >= target {
            edge = Some(b);
            break;
        }
        cum += mass[b];
    }
    // No edge means rounding left the target just out of reach: every token is needed.
    let Some(edge) = edge else { return };
    let mut boundary: Vec<(u32, f32)> = cands
        .iter()
        .filter(|c| weight_bucket(c.1) == edge)
        .copied()
        .collect();
    boundary.sort_unstable_by(desc);
    let mut last = boundary[0];
    for &c in &boundary {
        // Checked before adding, so the top token always survives.
        if cum >= target {
            break;
        }
        cum += f64::from(c.1);
        last = c;
    }
    cands.retain(|c| desc(c, &last) != std::cmp::Ordering::Greater);
}

/// Turns logits into weights exp((x - max) * scale) in place, zeroing those below `floor`.
/// Returns the total and records per-block sums so a draw need not re-scan the whole row.
fn to_weights(
    row: &mut [f32],
    maxima: &[f32],
    max: f32,
    scale: f32,
    floor: f32,
    sums: &mut Vec<f64>,
) -> f64 {
    let gap = negligible_gap(row.len());
    sums.clear();
    for (block, &block_max) in row.chunks_mut(BLOCK).zip(maxima) {
        if (block_max - max) * scale < -gap {
            block.fill(0.0);
            sums.push(0.0);
            continue;
        }
        // f32 lanes over at most 256 values lose nothing that matters; blocks sum in f64.
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                let w = fast_exp((*x - max) * scale);
                *x = if w >= floor { w } else { 0.0 };
                *a += *x;
            }
        }
        let mut sum: f64 = acc.iter().map(|&a| f64::from(a)).sum();
        for x in chunks.into_remainder() {
            let w = fast_exp((*x - max) * scale);
            *x = if w >= floor { w } else { 0.0 };
            sum += f64::from(*x);
        }
        sums.push(sum);
    }
    sums.iter().sum()
}

/// Index whose cumulative weight first exceeds `target`, zero weights never chosen.
fn draw_from_row(weights: &[f32], blocks: &[f64], target: f64) -> Option<usize> {
    let mut cum = 0f64;
    for (b, &block_sum) in blocks.iter().enumerate() {
        if block_sum > 0.0 && target < cum + block_sum {
            let start = b * BLOCK;
            let block = &weights[start..(start + BLOCK).min(weights.len())];
            for (j, &w) in block.iter().enumerate() {
                cum += f64::from(w);
                if target < cum {
                    return Some(start + j);
                }
            }
            // Block sums and this walk round differently; the sliver goes to the block's tail.
            return block.iter().rposition(|&w| w > 0.0).map(|j| start + j);
        }
        cum += block_sum;
    }
    None
}

fn draw_from_cands(cands: &[(u32, f32)], target: f64) -> Option<u32> {
    let mut cum = 0f64;
    for c in cands {
        cum += f64::from(c.1);
        if target < cum {
            return Some(c.0);
        }
    }
    cands.iter().rev().find(|c| c.1 > 0.0).map(|c| c.0)
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

/// Collects (token, weight) for positive weights >= `floor`, visiting only blocks whose
/// maximum logit passes `block_passes`.
fn collect_weights(
    weights: &[f32],
    maxima: &[f32],
    floor: f32,
    block_passes: impl Fn(f32) -> bool,
    out: &mut Vec<(u32, f32)>,
) {
    out.clear();
    for (b, _) in maxima.iter().enumerate().filter(|(_, &m)| block_passes(m)) {
        let start = b * BLOCK;
        let block = &weights[start..(start + BLOCK).min(weights.len())];
        // Write every token and advance only past admitted ones: on flat rows about half the
        // tokens pass, and a branch per token mispredicts constantly.
        let mut n = out.len();
        out.resize(n + block.len(), (0, 0.0));
        for (j, &w) in block.iter().enumerate() {
            out[n] = ((start + j) as u32, w);
            n += usize::from(w > 0.0 && w >= floor);
        }
        out.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            seed: Some(7),
            ..SamplingParams::default()
        };
        f(&mut p);
        p
    }

    fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = logits
            .iter()
            .map(|&x| (f64::from(x - m) / f64::from(t)).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut hits = vec![0usize; logits.len()];
        for _ in 0..draws {
            hits[sampler.sample(logits).token as usize] += 1;
        }
        hits.iter().map(|&h| h as f64 / draws as f64).collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < tol,
                "token {i}: got {g:.4}, want {w:.4} (all: {got:?})"
            );
        }
    }

    /// Logits whose softmax is exactly 0.1, 0.2, 0.3, 0.4.
    fn four() -> [f32; 4] {
        [0.1f32, 0.2, 0.3, 0.4].map(f32::ln)
    }

    #[test]
    fn greedy_picks_argmax_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).token, 1);
        assert_eq!(s.sample(&[1.0, 5.0, 5.0, 5.0]).token, 1);
        assert_eq!(s.sample(&[-3.0, -2.0, -1.0]).token, 2);
        // Ties in different blocks of a larger vocab.
        let mut wide = vec![0.0f32; 1000];
        wide[900] = 2.0;
        wide[300] = 2.0;
        assert_eq!(s.sample(&wide).token, 300);
    }

    #[test]
    fn tiny_temperature_is_greedy() {
        let mut s = Sampler::new(params(|p| p.temperature = 1e-6));
        for _ in 0..100 {
            assert_eq!(s.sample(&[1.0, 1.01, 0.99]).token, 1);
        }
    }

    #[test]
    fn same_seed_reproduces_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(|p| p.seed = Some(seed)));
            (0..200)
                .map(|_| s.sample(&logits).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // Unseeded samplers draw from fresh entropy, so two of them should disagree too.
        let mut a = Sampler::new(SamplingParams::default());
        let mut b = Sampler::new(SamplingParams::default());
        let ta: Vec<u32> = (0..200).map(|_| a.sample(&logits).token).collect();
        let tb: Vec<u32> = (0..200).map(|_| b.sample(&logits).token).collect();
        assert_ne!(ta, tb);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.5, 0.4, 0.6, 0.1, 0.6];
        let mut s = Sampler::new(params(|p| p.top_k = Some(1)));
        for _ in 0..200 {
            assert_eq!(s.sample(&logits).token, 2);
        }
    }

    #[test]
    fn top_k_restricts_and_renormalises() {
        let mut s = Sampler::new(params(|p| p.top_k = Some(2)));
        let f = frequencies(&mut s, &four(), 20_000);
        assert_close(&f, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 0.02);
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let logits = [0.5, 0.4, 0.6, 0.1, 0.59];
        let mut s = Sampler::new(params(|p| p.top_p = 1e-6));
        for _ in 0..200 {
            assert_eq!(s.sample(&logits).token, 2);
        }
    }

    #[test]
    fn top_p_keeps_smallest_sufficient_prefix() {
        // Probabilities .4 .3 .2 .1: the 0.65 nucleus is {3, 2}, renormalised to 4/7 and 3/7.
        let mut s = Sampler::new(params(|p| p.top_p = 0.65));
        let f = frequencies(&mut s, &four(), 20_000);
        assert_close(&f, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 0.02);
    }

    #[test]
    fn nucleus_breaks_ties_by_lower_id() {
        // Uniform weights put every token in one boundary bucket: exactly half must survive.
        let mut c: Vec<(u32, f32)> = (0..1000).rev().map(|i| (i, 1.0)).collect();
        nucleus(&mut c, 500.0);
        c.sort_by(desc);
        assert_eq!(c.len(), 500);
        assert!(
            c.iter().enumerate().all(|(i, e)| e.0 == i as u32),
            "ties must keep lower ids"
        );
    }

    #[test]
    fn min_p_filters_relative_to_max() {
        // p/p_max = .25 .5 .75 1, so min_p = 0.6 keeps only tokens 2 and 3.
        let mut s = Sampler::new(params(|p| p.min_p = 0.6));
        let f = frequencies(&mut s, &four(), 20_000);
        assert_close(&f, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 0.02);
        let mut s = Sampler::new(params(|p| p.min_p = 1.0));
        assert!((0..200).all(|_| s.sample(&four()).token == 3));
    }

    #[test]
    fn temperature_one_matches_softmax() {
        let mut s = Sampler::new(params(|_| {}));
        let f = frequencies(&mut s, &four(), 20_000);
        assert_close(&f, &[0.1, 0.2, 0.3, 0.4], 0.015);
    }

    #[test]
    fn temperature_scales_distribution() {
        for t in [0.5f32, 2.0] {
            let mut s = Sampler::new(params(|p| p.temperature = t));
            let f = frequencies(&mut s, &four(), 20_000);
            assert_close(&f, &softmax(&four(), t), 0.015);
        }
        let mut cold = Sampler::new(params(|p| p.temperature = 0.3));
        let mut hot = Sampler::new(params(|_| {}));
        assert!(
            frequencies(&mut cold, &four(), 5_000)[3]
                > frequencies(&mut hot, &four(), 5_000)[3] + 0.2
        );
    }

    #[test]
    fn logprobs_are_raw_log_softmax_sorted_descending() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5, f32::NAN];
        let want: Vec<f64> = softmax(&logits[..5], 1.0).iter().map(|p| p.ln()).collect();
        // Neither temperature, filters nor penalties may change what is reported; the
        // temperature-1 paths reuse the draw's normaliser, so they are covered separately.
        let cases = [
            params(|p| {
                p.temperature = 0.7;
                p.top_k = Some(2);
            }),
            params(|_| {}),
            params(|p| p.top_p = 0.8),
            params(|p| p.min_p = 0.2),
            params(|p| p.frequency_penalty = 1.0),
            SamplingParams::greedy(),
        ];
        for case in cases {
            let mut s = Sampler::new(SamplingParams {
                logprobs: Some(3),
                ..case
            });
            for _ in 0..50 {
                let out = s.sample(&logits);
                s.observe(out.token);
                assert!((f64::from(out.logprob) - want[out.token as usize]).abs() < 1e-5);
                let ids: Vec<u32> = out.top.iter().map(|t| t.token).collect();
                assert_eq!(ids, [1, 3, 0]);
                for t in &out.top {
                    assert!((f64::from(t.logprob) - want[t.token as usize]).abs() < 1e-5);
                }
                assert!(out.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
            }
        }
        let mut s = Sampler::new(params(|p| p.logprobs = Some(0)));
        assert!(s.sample(&logits).top.is_empty());
        let mut s = Sampler::new(params(|p| p.logprobs = None));
        assert!(s.sample(&logits).top.is_empty());
        // Asking for more alternatives than there are possible tokens lists only possible ones.
        let mut s = Sampler::new(params(|p| p.logprobs = Some(20)));
        assert_eq!(s.sample(&logits).top.len(), 5);
    }

    #[test]
    fn frequency_and_presence_penalties_lower_repeats() {
        let logits = [0.0f32, 0.0];
        let mut s = Sampler::new(params(|p| p.frequency_penalty = 0.5));
        s.observe(0);
        s.observe(0);
        let f = frequencies(&mut s, &logits, 20_000);
        assert_close(&f, &softmax(&[-1.0, 0.0], 1.0), 0.015);

        let mut s = Sampler::new(params(|p| p.presence_penalty = 1.0));
        s.observe(1);
        s.observe(1);
        s.observe(1);
        let f = frequencies(&mut s, &logits, 20_000);
        assert_close(&f, &softmax(&[0.0, -1.0], 1.0), 0.015);
    }

    #[test]
    fn repetition_penalty_follows_hf_and_applies_when_greedy() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = 0.0;
            p.repetition_penalty = 2.0;
        }));
        // 4.0 / 2 = 2.0 < 3.0, so the repeated token loses its lead.
        assert_eq!(s.sample(&[4.0, 3.0]).token, 0);
        s.observe(0);
        assert_eq!(s.sample(&[4.0, 3.0]).token, 1);
        // Negative logits are multiplied, so a repeat falls further behind.
        s.observe(1);
        assert_eq!(s.sample(&[-1.0, -1.2, -1.9]).token, 2);
        // Penalties on out-of-vocab ids are ignored rather than panicking.
        s.observe(99);
        assert_eq!(s.sample(&[-1.0, -1.2, -1.9]).token, 2);
    }

    #[test]
    fn non_finite_rows_never_panic() {
        let nan = f32::NAN;
        let ninf = f32::NEG_INFINITY;
        for p in [
            SamplingParams::greedy(),
            params(|p| p.top_p = 0.9),
            params(|p| p.top_k = Some(3)),
        ] {
            let mut s = Sampler::new(SamplingParams {
                logprobs: Some(5),
                ..p
            });
            assert_eq!(s.sample(&[nan, nan, nan]).token, 0);
            assert_eq!(s.sample(&[ninf, ninf]).token, 0);
            assert_eq!(s.sample(&[]).token, 0);
            assert_eq!(s.sample(&[nan, 1.0, nan]).token, 1);
            assert_eq!(s.sample(&[nan, ninf, 0.0, ninf]).token, 2);
            let out = s.sample(&[f32::INFINITY, 0.0, nan]);
            assert_eq!(out.token, 0);
            assert!(out.logprob.abs() < 1e-6);
        }
        // Penalties that push the only viable token to -inf fall back to the raw argmax.
        let mut s = Sampler::new(params(|p| p.repetition_penalty = f32::MAX));
        s.observe(1);
        assert_eq!(s.sample(&[nan, -1e30, nan]).token, 1);
    }

    #[test]
    fn validate_names_the_bad_parameter() {
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams::greedy().validate().is_ok());
        let cases: Vec<(&str, SamplingParams)> = vec![
            ("temperature", params(|p| p.temperature = -0.1)),
            ("temperature", params(|p| p.temperature = 2.5)),
            ("temperature", params(|p| p.temperature = f32::NAN)),
            ("top_p", params(|p| p.top_p = 0.0)),
            ("top_p", params(|p| p.top_p = 1.01)),
            ("top_p", params(|p| p.top_p = f32::NAN)),
            ("min_p", params(|p| p.min_p = -0.01)),
            ("min_p", params(|p| p.min_p = 1.5)),
            ("top_k", params(|p| p.top_k = Some(0))),
            ("presence_penalty", params(|p| p.presence_penalty = 2.1)),
            ("frequency_penalty", params(|p| p.frequency_penalty = -2.1)),
            (
                "frequency_penalty",
                params(|p| p.frequency_penalty = f32::NAN),
            ),
            ("repetition_penalty", params(|p| p.repetition_penalty = 0.0)),
            (
                "repetition_penalty",
                params(|p| p.repetition_penalty = f32::INFINITY),
            ),
            ("logprobs", params(|p| p.logprobs = Some(21))),
        ];
        for (want, p) in cases {
            match p.validate() {
                Err(ModelError::InvalidParam { param, message }) => {
                    assert_eq!(param, want, "{message}");
                    assert!(!message.is_empty());
                }
                other => panic!("{want}: expected InvalidParam, got {other:?}"),
            }
        }
        assert!(params(|p| {
            p.temperature = 2.0;
            p.top_k = Some(1);
            p.min_p = 1.0;
            p.logprobs = Some(20);
            p.presence_penalty = -2.0;
        })
        .validate()
        .is_ok());
    }

    #[test]
    fn fast_exp_is_accurate_and_flushes_underflow() {
        let mut worst = 0f64;
        for i in 0..=873_000 {
            let x = -(i as f32) * 1e-4;
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(fast_exp(x)) - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(-88.0), 0.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn full_size_vocab_behaves() {
        let vocab = 262_144;
        let mut logits: Vec<f32> = (0..vocab)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 25.0)
            .collect();
        logits[200_000] = 9.0;
        logits[3] = 8.5;
        logits[131_071] = f32::NAN;
        let mut greedy = Sampler::new(SamplingParams {
            logprobs: Some(2),
            ..SamplingParams::greedy()
        });
        let out = greedy.sample(&logits);
        assert_eq!(out.token, 200_000);
        assert_eq!(
            out.top.iter().map(|t| t.token).collect::<Vec<_>>(),
            [200_000, 3]
        );
        let want = f64::from(out.logprob).exp();
        let sum: f64 = logits
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| f64::from(x - 9.0).exp())
            .sum();
        assert!(
            (want - 1.0 / sum).abs() < 1e-6 * want,
            "{want} vs {}",
            1.0 / sum
        );
        for p in [
            params(|p| p.top_k = Some(2)),
            params(|p| p.top_p = 0.3),
            params(|p| p.min_p = 0.5),
            params(|p| p.temperature = 0.3),
        ] {
            let mut s = Sampler::new(p.clone());
            for _ in 0..20 {
                let t = s.sample(&logits).token;
                assert!(t == 200_000 || t == 3, "{p:?} drew {t}");
            }
        }
    }

    fn logit() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -30.0f32..30.0,
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::NAN),
        ]
    }

    proptest! {
        #[test]
        fn sampled_token_is_finite_and_within_top_k(
            logits in prop::collection::vec(logit(), 1..300),
            top_k in prop::option::of(1usize..40),
            top_p in 0.01f32..=1.0,
            min_p in 0.0f32..=1.0,
            temperature in 0.0f32..=2.0,
            seed in any::<u64>(),
            repeats in prop::collection::vec(0u32..300, 0..10),
        ) {
            let p = SamplingParams {
                temperature, top_k, top_p, min_p, seed: Some(seed),
                frequency_penalty: 0.5, logprobs: Some(3), ..SamplingParams::default()
            };
            prop_assert!(p.validate().is_ok());
            let mut s = Sampler::new(p);
            for t in repeats {
                s.observe(t);
            }
            let out = s.sample(&logits);
            let chosen = logits[out.token as usize];
            if logits.iter().any(|x| x.is_finite()) {
                prop_assert!(chosen.is_finite(), "picked {} with logit {}", out.token, chosen);
                prop_assert!(out.logprob.is_finite() && out.logprob <= 1e-6);
            }
            if let Some(k) = top_k {
                // Penalties can reorder tokens, so compare against the penalised ranking.
                let row = s.penalised_row(&logits);
                let mine = row[out.token as usize];
                let mut ranked = row;
                ranked.sort_by(|a, b| b.total_cmp(a));
                if let Some(&kth) = ranked.get(k - 1) {
                    prop_assert!(mine >= kth, "token {} ({mine}) < k-th logit {kth}", out.token);
                }
            }
        }

        #[test]
        fn nucleus_matches_full_sort(
            weights in prop::collection::vec(
                prop_oneof![0.0f32..1.0, (-30.0f32..0.0).prop_map(f32::exp)],
                1..600,
            ),
            top_p in 0.01f32..=1.0,
        ) {
            let mut c: Vec<(u32, f32)> =
                weights.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
            let mut reference = c.clone();
            reference.sort_by(desc);
            let target = f64::from(top_p) * weights.iter().map(|&w| f64::from(w)).sum::<f64>();
            prop_assume!(target > 0.0);
            let mut cum = 0f64;
            let mut keep = reference.len();
            for (i, e) in reference.iter().enumerate() {
                if i > 0 && cum >= target {
                    keep = i;
                    break;
                }
                cum += f64::from(e.1);
            }
            nucleus(&mut c, target);
            c.sort_by(desc);
            prop_assert!(!c.is_empty());
            prop_assert_eq!(&c[..], &reference[..c.len()]);
            prop_assert_eq!(c.len(), keep);
        }
    }

    /// Full-sort reference of the filter chain on an unpenalised row: (token, weight) in
    /// descending order, plus how many leading entries top-p may keep at each end of a 1e-5
    /// tolerance on its target (the two implementations sum in different orders).
    fn reference_support(logits: &[f32], p: &SamplingParams) -> (Vec<(u32, f32)>, usize, usize) {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .map(|(i, &x)| (i as u32, x))
            .collect();
        all.sort_by(desc);
        all.truncate(p.top_k.unwrap_or(usize::MAX));
        let max = all[0].1;
        for c in &mut all {
            c.1 = fast_exp((c.1 - max) * (1.0 / p.temperature));
        }
        all.sort_by(desc);
        let total: f64 = all.iter().map(|c| f64::from(c.1)).sum();
        let prefix = |target: f64| {
            let mut cum = 0f64;
            for (i, c) in all.iter().enumerate() {
                if i > 0 && cum >= target {
                    return i;
                }
                cum += f64::from(c.1);
            }
            all.len()
        };
        let (lo, hi) = if p.top_p < 1.0 {
            let target = f64::from(p.top_p) * total;
            (prefix(target * (1.0 - 1e-5)), prefix(target * (1.0 + 1e-5)))
        } else {
            (all.len(), all.len())
        };
        (all, lo, hi)
    }

    fn filter_params() -> impl Strategy<Value = SamplingParams> {
        (
            prop::option::of(1usize..400),
            prop_oneof![Just(1.0f32), 0.05f32..1.0],
            prop_oneof![Just(0.0f32), 0.0f32..0.5],
            0.05f32..2.0,
        )
            .prop_map(|(top_k, top_p, min_p, temperature)| SamplingParams {
                top_k,
                top_p,
                min_p,
                temperature,
                seed: Some(1),
                logprobs: Some(MAX_LOGPROBS),
                ..SamplingParams::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The block-skipping, histogram and prefilter shortcuts must keep exactly the tokens
        /// a full sort keeps (ignoring tokens too unlikely to matter in f32).
        #[test]
        fn filters_match_full_sort_reference(
            noise in prop::collection::vec(-8.0f32..8.0, 1..2500),
            offsets in prop::collection::vec(prop_oneof![Just(0.0f32), -120.0f32..0.0], 10),
            p in filter_params(),
        ) {
            let logits: Vec<f32> =
                noise.iter().enumerate().map(|(i, &x)| x + offsets[i / BLOCK]).collect();
            let (reference, lo, hi) = reference_support(&logits, &p);
            let mut s = Sampler::new(p.clone());
            let mut ours = s.support(&logits);
            ours.sort_by(desc);
            let significant = |w: f32| w >= 1e-6;
            let allowed: Vec<(u32, f32)> =
                reference[..hi].iter().copied().filter(|c| c.1 > 0.0 && c.1 >= p.min_p).collect();
            for c in &ours {
                prop_assert!(allowed.iter().any(|r| r.0 == c.0), "{:?} kept but not allowed", c);
            }
            let required = reference[..lo].iter().filter(|c| significant(c.1) && c.1 >= p.min_p);
            for r in required {
                prop_assert!(ours.iter().any(|c| c.0 == r.0), "token {:?} dropped", r);
            }

            // Reported alternatives: the raw top-n in order, with log-softmax values.
            let out = s.sample(&logits);
            let mut raw: Vec<(u32, f32)> =
                logits.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
            raw.sort_by(desc);
            let top = raw[0].1;
            let lse = f64::from(top)
                + raw.iter().map(|c| f64::from(c.1 - top).exp()).sum::<f64>().ln();
            prop_assert_eq!(out.top.len(), raw.len().min(MAX_LOGPROBS));
            for (t, r) in out.top.iter().zip(&raw) {
                prop_assert_eq!(t.token, r.0);
                prop_assert!((f64::from(t.logprob) - (f64::from(r.1) - lse)).abs() < 1e-4);
            }
        }
    }

    impl Sampler {
        /// Tokens left with positive weight after filtering, as (token, weight).
        fn support(&mut self, logits: &[f32]) -> Vec<(u32, f32)> {
            block_maxima(logits, &mut self.raw_maxima);
            self.load_row(logits, false);
            let best = argmax(&self.row, &self.row_maxima).expect("a finite logit");
            match self.filter(self.row[best as usize]) {
                Support::Row(_) => self
                    .row
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| (i as u32, w))
                    .collect(),
                Support::Cands => self.cands.clone(),
            }
            .into_iter()
            .filter(|c| c.1 > 0.0)
            .collect()
        }

        /// Penalised logits of all finite tokens, for checking top-k against what it ranked.
        fn penalised_row(&mut self, logits: &[f32]) -> Vec<f32> {
            block_maxima(logits, &mut self.raw_maxima);
            self.load_row(logits, true);
            self.row.clone()
        }
    }
}
