//! RMS normalisation over the last dimension of row-major `[rows, dim]` data.
//!
//! The sum of squares is taken in f64: rows of 640 values with magnitudes in the hundreds
//! (Gemma's residual stream) lose digits in f32. The fast kernels keep 8 f64 partial sums
//! (lane `j` takes elements `j, j + 8, …`) so the loop vectorises; the scalar references
//! sum in order. Either way a row's result depends on that row alone.

use crate::cpu::simd::multiversion;
use crate::error::check_len;
use crate::KernelError;

/// Partial sums of squares per row (one 512-bit vector of f64).
const LANES: usize = 8;

/// `out[r] = x[r] / rms(x[r]) * weight`, for each row of width `weight.len()`.
pub fn rms_norm_rows(
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_rows(x.len(), weight.len())?;
    check_len("rms_norm", "out", out.len(), x.len())?;
    norm_rows(x, weight, eps, out);
    Ok(())
}

/// In-place variant, used for the per-head q/k norms where a copy would be wasted.
pub fn rms_norm_rows_in_place(x: &mut [f32], weight: &[f32], eps: f32) -> Result<(), KernelError> {
    check_rows(x.len(), weight.len())?;
    norm_rows_in_place(x, weight, eps);
    Ok(())
}

/// `acc[r] += y[r] / rms(y[r]) * weight`: Gemma's post-norm residual add, without a buffer for
/// the normed rows (same rounding as normalising first, then adding).
pub fn rms_norm_add_rows(
    y: &[f32],
    weight: &[f32],
    eps: f32,
    acc: &mut [f32],
) -> Result<(), KernelError> {
    check_rows(y.len(), weight.len())?;
    check_len("rms_norm", "acc", acc.len(), y.len())?;
    norm_add_rows(y, weight, eps, acc);
    Ok(())
}

/// The scalar reference of `rms_norm_rows`: the sum of squares in order.
pub fn rms_norm_rows_reference(
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let dim = weight.len();
    check_rows(x.len(), dim)?;
    check_len("rms_norm", "out", out.len(), x.len())?;
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let sum_sq: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = (1.0 / (sum_sq / dim as f64 + eps as f64).sqrt()) as f32;
        for ((o, &v), &w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
    Ok(())
}

fn check_rows(len: usize, dim: usize) -> Result<(), KernelError> {
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(KernelError::Invalid {
            op: "rms_norm",
            message: format!("input of {len} values is not rows of {dim}"),
        });
    }
    Ok(())
}

multiversion! {
    fn norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) => norm_rows_body;
}

multiversion! {
    fn norm_rows_in_place(x: &mut [f32], weight: &[f32], eps: f32) => norm_in_place_body;
}

multiversion! {
    fn norm_add_rows(y: &[f32], weight: &[f32], eps: f32, acc: &mut [f32]) => norm_add_body;
}

#[inline(always)]
fn norm_rows_body(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let scale = inv_rms(row, eps);
        for ((o, &v), &w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}

#[inline(always)]
fn norm_in_place_body(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(weight.len()) {
        let scale = inv_rms(row, eps);
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
}

#[inline(always)]
fn norm_add_body(y: &[f32], weight: &[f32], eps: f32, acc: &mut [f32]) {
    let dim = weight.len();
    for (row, acc_row) in y.chunks_exact(dim).zip(acc.chunks_exact_mut(dim)) {
        let scale = inv_rms(row, eps);
        for ((a, &v), &w) in acc_row.iter_mut().zip(row).zip(weight) {
            *a += v * scale * w;
        }
    }
}

/// `1 / sqrt(mean(row²) + eps)`, the sum in `LANES` f64 partial sums added in lane order.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += (v as f64) * (v as f64);
        }
    }
    let mut sum_sq = 0f64;
    for s in lanes {
        sum_sq += s;
    }
    for &v in tail {
        sum_sq += (v as f64) * (v as f64);
    }
    let mean = sum_sq / row.len() as f64;
    (1.0 / (mean + eps as f64).sqrt()) as f32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn normalises_each_row_independently() {
        let x = [3.0, 4.0, 0.0, 0.0, 1.0, 1.0];
        let w = [1.0, 2.0];
        let mut out = [0.0; 6];
        rms_norm_rows(&x, &w, 1e-9, &mut out).unwrap();
        let rms0 = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms0).abs() < 1e-6);
        assert!((out[1] - 8.0 / rms0).abs() < 1e-6);
        assert_eq!(out[2], 0.0); // an all-zero row stays zero thanks to eps
        assert!((out[4] - 1.0).abs() < 1e-5 && (out[5] - 2.0).abs() < 1e-5);
    }

    #[test]
    fn rejects_ragged_input() {
        let mut out = [0.0; 3];
        assert!(rms_norm_rows(&[1.0, 2.0, 3.0], &[1.0, 1.0], 1e-6, &mut out).is_err());
        assert!(rms_norm_rows_in_place(&mut out, &[], 1e-6).is_err());
        assert!(rms_norm_add_rows(&[1.0, 2.0], &[1.0, 1.0], 1e-6, &mut out).is_err());
    }

    proptest! {
        /// Fast and in-place and fused-add forms agree with each other to the bit, and with
        /// the in-order reference to 2 ulp-ish (only the f64 summation order differs).
        #[test]
        fn fast_forms_match_reference(
            dim in 1usize..=70,
            rows in 1usize..=5,
            seed in any::<u32>(),
            big in prop::bool::ANY,
        ) {
            let mag = if big { 300.0 } else { 1.0 };
            let x: Vec<f32> = (0..dim * rows)
                .map(|i| ((i as f32 + seed as f32 * 0.001) * 0.618).sin() * mag)
                .collect();
            let w: Vec<f32> = (0..dim).map(|i| 1.0 + (i as f32 * 0.3).cos()).collect();
            let mut fast = vec![0.0; x.len()];
            rms_norm_rows(&x, &w, 1e-6, &mut fast).unwrap();
            let mut reference = vec![0.0; x.len()];
            rms_norm_rows_reference(&x, &w, 1e-6, &mut reference).unwrap();
            let mut in_place = x.clone();
            rms_norm_rows_in_place(&mut in_place, &w, 1e-6).unwrap();
            let mut added = vec![1.0; x.len()];
            rms_norm_add_rows(&x, &w, 1e-6, &mut added).unwrap();
            for i in 0..x.len() {
                prop_assert_eq!(fast[i].to_bits(), in_place[i].to_bits());
                prop_assert_eq!(added[i].to_bits(), (1.0 + fast[i]).to_bits());
                prop_assert!((fast[i] - reference[i]).abs() <= 4e-7 * reference[i].abs().max(1e-30));
            }
        }
    }
}
