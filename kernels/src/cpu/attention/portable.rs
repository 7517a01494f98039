//! Portable attention kernels (any head width, any CPU): 16-lane dot products the compiler
//! vectorises, and a row-by-row weighted sum.

use super::rows::RowSet;

const LANES: usize = 16;

/// `scores[g * n + i] = scale · ⟨q_g, K row i⟩` for the `q.len() / head_dim` heads of `q`.
pub(super) fn scores(q: &[f32], k: &[f32], rows: &RowSet<'_>, scale: f32, scores: &mut [f32]) {
    let (hd, stride, n) = (rows.head_dim(), rows.stride(), rows.len());
    for seg in rows.segments(k) {
        for r in 0..seg.rows {
            let k_row = &seg.data[r * stride..r * stride + hd];
            for (g, q) in q.chunks_exact(hd).enumerate() {
                scores[g * n + seg.index + r] = dot(q, k_row) * scale;
            }
        }
    }
}

/// `out_g = inv[g] · Σ_i w[g * n + i] · V row i` for each head `g` of `out`.
pub(super) fn weighted_sum(w: &[f32], v: &[f32], rows: &RowSet<'_>, inv: &[f32], out: &mut [f32]) {
    let (hd, stride, n) = (rows.head_dim(), rows.stride(), rows.len());
    out.fill(0.0);
    for seg in rows.segments(v) {
        for r in 0..seg.rows {
            let v_row = &seg.data[r * stride..r * stride + hd];
            for (g, o) in out.chunks_exact_mut(hd).enumerate() {
                let wg = w[g * n + seg.index + r];
                for (o, &x) in o.iter_mut().zip(v_row) {
                    *o += wg * x;
                }
            }
        }
    }
    for (o, &s) in out.chunks_exact_mut(hd).zip(inv) {
        o.iter_mut().for_each(|x| *x *= s);
    }
}

/// Dot product with 16 independent partial sums (added in lane order, then the tail).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    let mut sum = 0f32;
    for l in lanes {
        sum += l;
    }
    for (&x, &y) in ta.iter().zip(tb) {
        sum += x * y;
    }
    sum
}
