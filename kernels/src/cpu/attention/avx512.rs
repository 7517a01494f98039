//! AVX-512 attention kernels (head width a multiple of 16): each K row is loaded once for the
//! dot products of up to four query heads; the weighted sum keeps a 64-wide strip of every
//! head's output in registers across all V rows, so each V value is loaded once.

use std::arch::x86_64::*;

use super::rows::RowSet;
use crate::cpu::simd::{supports, SimdLevel};

/// f32 per vector.
const W: usize = 16;

/// Proof that this CPU runs AVX-512 F and that the head width is a whole number of vectors.
#[derive(Clone, Copy)]
pub(super) struct Token(());

impl Token {
    pub fn new(head_dim: usize) -> Option<Self> {
        (supports(SimdLevel::Avx512) && head_dim.is_multiple_of(W)).then_some(Token(()))
    }

    /// `scores[g * n + i] = scale · ⟨q_g, K row i⟩` for the `q.len() / head_dim` (≤ 4) heads.
    pub fn scores(self, q: &[f32], k: &[f32], rows: &RowSet<'_>, scale: f32, scores: &mut [f32]) {
        // SAFETY: the token exists only on a CPU with AVX-512 F.
        unsafe {
            match q.len() / rows.head_dim() {
                1 => scores_g::<1>(q, k, rows, scale, scores),
                2 => scores_g::<2>(q, k, rows, scale, scores),
                3 => scores_g::<3>(q, k, rows, scale, scores),
                _ => scores_g::<4>(q, k, rows, scale, scores),
            }
        }
    }

    /// `out_g = inv[g] · Σ_i w[g * n + i] · V row i` for each (≤ 4) head `g` of `out`.
    pub fn weighted_sum(
        self,
        w: &[f32],
        v: &[f32],
        rows: &RowSet<'_>,
        inv: &[f32],
        out: &mut [f32],
    ) {
        // SAFETY: the token exists only on a CPU with AVX-512 F.
        unsafe {
            match inv.len() {
                1 => weighted_sum_g::<1>(w, v, rows, inv, out),
                2 => weighted_sum_g::<2>(w, v, rows, inv, out),
                3 => weighted_sum_g::<3>(w, v, rows, inv, out),
                _ => weighted_sum_g::<4>(w, v, rows, inv, out),
            }
        }
    }
}

#[target_feature(enable = "avx512f")]
fn scores_g<const G: usize>(
    q: &[f32],
    k: &[f32],
    rows: &RowSet<'_>,
    scale: f32,
    scores: &mut [f32],
) {
    let (hd, stride, n) = (rows.head_dim(), rows.stride(), rows.len());
    let q = &q[..G * hd];
    for seg in rows.segments(k) {
        for r in 0..seg.rows {
            let dots = dot_row::<G>(q, &seg.data[r * stride..r * stride + hd]);
            for (g, d) in dots.into_iter().enumerate() {
                scores[g * n + seg.index + r] = d * scale;
            }
        }
    }
}

/// `⟨q_g, k⟩` for each of the `G` heads of `q` (`[G, k.len()]`), two accumulators per head.
#[inline]
#[target_feature(enable = "avx512f")]
fn dot_row<const G: usize>(q: &[f32], k: &[f32]) -> [f32; G] {
    let hd = k.len();
    let q = &q[..G * hd];
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    let mut a0 = [_mm512_setzero_ps(); G];
    let mut a1 = [_mm512_setzero_ps(); G];
    let mut c = 0;
    while c + 2 * W <= hd {
        // SAFETY: c + 32 <= hd = k.len(), and g * hd + c + 32 <= G * hd = q.len().
        unsafe {
            let (k0, k1) = (_mm512_loadu_ps(kp.add(c)), _mm512_loadu_ps(kp.add(c + W)));
            for (g, (a0, a1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                let q0 = _mm512_loadu_ps(qp.add(g * hd + c));
                let q1 = _mm512_loadu_ps(qp.add(g * hd + c + W));
                *a0 = _mm512_fmadd_ps(q0, k0, *a0);
                *a1 = _mm512_fmadd_ps(q1, k1, *a1);
            }
        }
        c += 2 * W;
    }
    if c + W <= hd {
        // SAFETY: c + 16 <= hd, as above.
        unsafe {
            let k0 = _mm512_loadu_ps(kp.add(c));
            for (g, a0) in a0.iter_mut().enumerate() {
                *a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(g * hd + c)), k0, *a0);
            }
        }
    }
    let mut dots = [0f32; G];
    for ((d, &a0), &a1) in dots.iter_mut().zip(&a0).zip(&a1) {
        *d = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
    dots
}

#[target_feature(enable = "avx512f")]
fn weighted_sum_g<const G: usize>(
    w: &[f32],
    v: &[f32],
    rows: &RowSet<'_>,
    inv: &[f32],
    out: &mut [f32],
) {
    let hd = rows.head_dim();
    let mut col = 0;
    while col + 4 * W <= hd {
        strip::<G, 4>(w, v, rows, inv, out, col);
        col += 4 * W;
    }
    while col + W <= hd {
        strip::<G, 1>(w, v, rows, inv, out, col);
        col += W;
    }
}

/// Columns `col..col + S * 16` of every head's output, accumulated over all rows in registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn strip<const G: usize, const S: usize>(
    w: &[f32],
    v: &[f32],
    rows: &RowSet<'_>,
    inv: &[f32],
    out: &mut [f32],
    col: usize,
) {
    let (hd, stride, n) = (rows.head_dim(), rows.stride(), rows.len());
    let mut acc = [[_mm512_setzero_ps(); S]; G];
    for seg in rows.segments(v) {
        for r in 0..seg.rows {
            let x = &seg.data[r * stride + col..r * stride + col + S * W];
            let mut xs = [_mm512_setzero_ps(); S];
            for (j, xj) in xs.iter_mut().enumerate() {
                // SAFETY: j * 16 + 16 <= S * 16 = x.len().
                *xj = unsafe { _mm512_loadu_ps(x.as_ptr().add(j * W)) };
            }
            for (g, acc) in acc.iter_mut().enumerate() {
                let wg = _mm512_set1_ps(w[g * n + seg.index + r]);
                for (a, &xj) in acc.iter_mut().zip(&xs) {
                    *a = _mm512_fmadd_ps(wg, xj, *a);
                }
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        let o = &mut out[g * hd + col..g * hd + col + S * W];
        let s = _mm512_set1_ps(inv[g]);
        for (j, &a) in acc.iter().enumerate() {
            // SAFETY: j * 16 + 16 <= S * 16 = o.len().
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(j * W), _mm512_mul_ps(a, s)) };
        }
    }
}
