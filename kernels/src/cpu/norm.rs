//! RMS normalisation over the last dimension of row-major `[rows, dim]` data.

use crate::error::check_len;
use crate::KernelError;

/// `out[r] = x[r] / rms(x[r]) * weight`, for each row of width `weight.len()`.
///
/// The sum is taken in f64: rows of 640 values with magnitudes in the hundreds (Gemma's
/// residual stream) lose digits in f32, and this is not on a path where it costs anything.
pub fn rms_norm_rows(
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let dim = weight.len();
    check_len("rms_norm", "out", out.len(), x.len())?;
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(KernelError::Invalid {
            op: "rms_norm",
            message: format!("input of {} values is not rows of {dim}", x.len()),
        });
    }
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let scale = inv_rms(row, eps);
        for ((o, &v), &w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
    Ok(())
}

/// In-place variant, used for the per-head q/k norms where a copy would be wasted.
pub fn rms_norm_rows_in_place(x: &mut [f32], weight: &[f32], eps: f32) -> Result<(), KernelError> {
    let dim = weight.len();
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(KernelError::Invalid {
            op: "rms_norm",
            message: format!("input of {} values is not rows of {dim}", x.len()),
        });
    }
    for row in x.chunks_exact_mut(dim) {
        let scale = inv_rms(row, eps);
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
    Ok(())
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let sum_sq: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = sum_sq / row.len() as f64;
    (1.0 / (mean + eps as f64).sqrt()) as f32
}

#[cfg(test)]
mod tests {
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
    }
}
