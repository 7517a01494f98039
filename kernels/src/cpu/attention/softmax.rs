//! The softmax between the two kernels: each head's scores become unnormalised weights
//! `e^(s - max)` in place, and `1 / Σ` is kept so the weighted sum is scaled once at the end.
//!
//! One portable body for every instruction set (`multiversion!`): 16 lanes in a fixed order,
//! no FMA, so the weights are the same bits on every path.

use crate::cpu::fast_math::exp_approx;
use crate::cpu::simd::multiversion;

const LANES: usize = 16;

multiversion! {
    /// `scores` is `[inv.len(), n]`; on return row `g` holds `e^(s - max_g)` and `inv[g]` is
    /// `1 / Σ e^(s - max_g)`. `n` must be positive.
    pub(super) fn exp_rows(scores: &mut [f32], n: usize, inv: &mut [f32]) => exp_rows_body;
}

#[inline(always)]
fn exp_rows_body(scores: &mut [f32], n: usize, inv: &mut [f32]) {
    for (row, inv) in scores.chunks_exact_mut(n).zip(inv.iter_mut()) {
        let max = row_max(row);
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (l, x) in lanes.iter_mut().zip(chunk.iter_mut()) {
                *x = exp_approx(*x - max);
                *l += *x;
            }
        }
        let mut sum = 0f32;
        for l in lanes {
            sum += l;
        }
        for x in chunks.into_remainder() {
            *x = exp_approx(*x - max);
            sum += *x;
        }
        *inv = 1.0 / sum;
    }
}

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for x in lanes.into_iter().chain(tail.iter().copied()) {
        max = if x > max { x } else { max };
    }
    max
}
