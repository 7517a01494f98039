//! Scans over one logits row: NaN/inf cleaning, a vectorisable `exp`, per-block maxima,
//! argmax, the raw log-sum-exp behind reported logprobs, and block-pruned top-k selection.

/// NaN would poison every comparison and sum downstream, and +inf would make `x - max` NaN;
/// clamping keeps "this token dominates" without breaking the arithmetic.
#[inline(always)]
pub(super) fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x.min(f32::MAX)
    }
}

/// Descending by value, then ascending id, so every selection and tie-break is deterministic.
#[inline]
pub(super) fn desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Independent accumulators let LLVM vectorise reductions it must otherwise keep serial
/// (float addition and max are not reassociated without them).
pub(super) const LANES: usize = 32;

/// `exp` for the non-positive arguments used here (Cephes `expf` polynomial, ~1 ulp).
/// libm's `expf` is an opaque call that blocks vectorisation and cost ~2 ms per 262k-token
/// row; this branch-free form vectorises. Results below the smallest normal flush to 0.
#[inline(always)]
pub(super) fn fast_exp(x: f32) -> f32 {
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

#[inline(always)]
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
pub(super) const BLOCK: usize = 256;

/// Per-block maxima of the cleaned row. They let argmax, top-n and top-k visit only the few
/// blocks that can matter instead of the whole vocab.
pub(super) fn block_maxima(xs: &[f32], out: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature the wide copy is compiled for.
        return unsafe { block_maxima_avx512(xs, out) };
    }
    block_maxima_portable(xs, out)
}

/// The scans below are written once and compiled twice: for the baseline target and, via
/// these wrappers, with AVX-512 (16 lanes instead of SSE2's 4). The same operations run in
/// the same order on each lane, so both copies give identical results; only speed differs
/// (a 262k-token row's max and Σ exp went from ~0.6 ms to a fraction of that).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_maxima_avx512(xs: &[f32], out: &mut Vec<f32>) {
    block_maxima_portable(xs, out)
}

#[inline(always)]
fn block_maxima_portable(xs: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.extend(xs.chunks(BLOCK).map(max_clean));
}

/// Lowest index holding the maximum of the cleaned row, or `None` if it is all -inf.
pub(super) fn argmax(xs: &[f32], maxima: &[f32]) -> Option<u32> {
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
pub(super) fn negligible_gap(len: usize) -> f32 {
    (len.max(1) as f32).ln() + 25.0 * std::f32::consts::LN_2
}

/// Σ exp(x - max) over the cleaned row: f32 lanes within a block, f64 across blocks.
fn sum_exp(xs: &[f32], maxima: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature the wide copy is compiled for.
        return unsafe { sum_exp_avx512(xs, maxima, max) };
    }
    sum_exp_portable(xs, maxima, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_exp_avx512(xs: &[f32], maxima: &[f32], max: f32) -> f64 {
    sum_exp_portable(xs, maxima, max)
}

#[inline(always)]
fn sum_exp_portable(xs: &[f32], maxima: &[f32], max: f32) -> f64 {
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
pub(super) struct RawStats {
    max: f32,
    log_sum_exp: f32,
}

impl RawStats {
    /// `known_sum` is Σ exp(x - max) when a temperature-1 draw already computed it.
    pub(super) fn new(
        logits: &[f32],
        maxima: &[f32],
        argmax: Option<u32>,
        known_sum: Option<f64>,
    ) -> Self {
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

    pub(super) fn logprob(&self, x: f32) -> f32 {
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
pub(super) fn top_k_pairs(xs: &[f32], maxima: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
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

#[cfg(test)]
mod simd_tests {
    use super::*;

    /// The wide copies must agree bit for bit with the portable ones, NaN and ±inf included.
    #[test]
    fn wide_scans_equal_portable_scans() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut xs: Vec<f32> = (0..262_144 + 77)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 40_000) as f32 / 1000.0 - 30.0
            })
            .collect();
        xs[5] = f32::NAN;
        xs[700] = f32::INFINITY;
        xs[9000] = f32::NEG_INFINITY;
        let (mut wide, mut portable) = (Vec::new(), Vec::new());
        block_maxima(&xs, &mut wide);
        block_maxima_portable(&xs, &mut portable);
        assert_eq!(wide, portable);
        let max = clean(xs[argmax(&xs, &portable).unwrap() as usize]) - 3.0;
        let a = sum_exp(&xs, &portable, max);
        let b = sum_exp_portable(&xs, &portable, max);
        assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
    }
}
