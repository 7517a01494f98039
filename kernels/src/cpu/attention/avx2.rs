//! AVX2 + FMA attention kernels (head width a multiple of 8): each K row is loaded once for the
//! dot products of up to four query heads; the weighted sum keeps a 16-wide strip of every
//! head's output in registers across all V rows, so each V value is loaded once.

use std::arch::x86_64::*;

use super::rows::RowSet;
use crate::cpu::simd::{supports, SimdLevel};

/// f32 per vector.
const W: usize = 8;

/// Proof that this CPU runs AVX2 and FMA and that the head width is a whole number of vectors.
#[derive(Clone, Copy)]
pub(super) struct Token(());

impl Token {
    pub fn new(head_dim: usize) -> Option<Self> {
        (supports(SimdLevel::Avx2) && head_dim.is_multiple_of(W)).then_some(Token(()))
    }

    /// `scores[g * n + i] = scale · ⟨q_g, K row i⟩` for the `q.len() / head_dim` (≤ 4) heads.
    pub fn scores(self, q: &[f32], k: &[f32], rows: &RowSet<'_>, scale: f32, scores: &mut [f32]) {
        // SAFETY: the token exists only on a CPU with AVX2 and FMA.
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
        // SAFETY: the token exists only on a CPU with AVX2 and FMA.
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

#[target_feature(enable = "avx2,fma")]
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
#[target_feature(enable = "avx2,fma")]
fn dot_row<const G: usize>(q: &[f32], k: &[f32]) -> [f32; G] {
    let hd = k.len();
    let q = &q[..G * hd];
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    let mut a0 = [_mm256_setzero_ps(); G];
    let mut a1 = [_mm256_setzero_ps(); G];
    let mut c = 0;
    while c + 2 * W <= hd {
        // SAFETY: c + 16 <= hd = k.len(), and g * hd + c + 16 <= G * hd = q.len().
        unsafe {
            let (k0, k1) = (_mm256_loadu_ps(kp.add(c)), _mm256_loadu_ps(kp.add(c + W)));
            for (g, (a0, a1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                let q0 = _mm256_loadu_ps(qp.add(g * hd + c));
                let q1 = _mm256_loadu_ps(qp.add(g * hd + c + W));
                *a0 = _mm256_fmadd_ps(q0, k0, *a0);
                *a1 = _mm256_fmadd_ps(q1, k1, *a1);
            }
        }
        c += 2 * W;
    }
    if c + W <= hd {
        // SAFETY: c + 8 <= hd, as above.
        unsafe {
            let k0 = _mm256_loadu_ps(kp.add(c));
            for (g, a0) in a0.iter_mut().enumerate() {
                *a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(g * hd + c)), k0, *a0);
            }
        }
    }
    let mut dots = [0f32; G];
    for ((d, &a0), &a1) in dots.iter_mut().zip(&a0).zip(&a1) {
        *d = hsum(_mm256_add_ps(a0, a1));
    }
    dots
}

#[target_feature(enable = "avx2,fma")]
fn weighted_sum_g<const G: usize>(
    w: &[f32],
    v: &[f32],
    rows: &RowSet<'_>,
    inv: &[f32],
    out: &mut [f32],
) {
    let hd = rows.head_dim();
    let mut col = 0;
    while col + 2 * W <= hd {
        strip::<G, 2>(w, v, rows, inv, out, col);
        col += 2 * W;
    }
    while col + W <= hd {
        strip::<G, 1>(w, v, rows, inv, out, col);
        col += W;
    }
}

/// Columns `col..col + S * 8` of every head's output, accumulated over all rows in registers.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn strip<const G: usize, const S: usize>(
    w: &[f32],
    v: &[f32],
    rows: &RowSet<'_>,
    inv: &[f32],
    out: &mut [f32],
    col: usize,
) {
    let (hd, stride, n) = (rows.head_dim(), rows.stride(), rows.len());
    let mut acc = [[_mm256_setzero_ps(); S]; G];
    for seg in rows.segments(v) {
        for r in 0..seg.rows {
            let x = &seg.data[r * stride + col..r * stride + col + S * W];
            let mut xs = [_mm256_setzero_ps(); S];
            for (j, xj) in xs.iter_mut().enumerate() {
                // SAFETY: j * 8 + 8 <= S * 8 = x.len().
                *xj = unsafe { _mm256_loadu_ps(x.as_ptr().add(j * W)) };
            }
            for (g, acc) in acc.iter_mut().enumerate() {
                let wg = _mm256_set1_ps(w[g * n + seg.index + r]);
                for (a, &xj) in acc.iter_mut().zip(&xs) {
                    *a = _mm256_fmadd_ps(wg, xj, *a);
                }
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        let o = &mut out[g * hd + col..g * hd + col + S * W];
        let s = _mm256_set1_ps(inv[g]);
        for (j, &a) in acc.iter().enumerate() {
            // SAFETY: j * 8 + 8 <= S * 8 = o.len().
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(j * W), _mm256_mul_ps(a, s)) };
        }
    }
}

/// Sum of the 8 lanes in a fixed order (high half onto low, then pairs).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
