//! Rotary position embedding, NeoX layout (the two halves of each head rotate together).

use crate::KernelError;

/// Inverse frequencies `base^(-2i/head_dim)` for `i in 0..head_dim/2`, in f64 so the angle
/// `pos * inv_freq` stays exact enough at 32k positions.
pub fn rope_inv_freq(head_dim: usize, base: f64) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| base.powf(-(2.0 * i as f64) / head_dim as f64))
        .collect()
}

/// Rotates every head of one token (`x` is `[heads, head_dim]`) to position `pos`.
///
/// Each token carries its own position, which is what lets one step hold sequences at
/// different positions; the angles are computed here rather than from a table because a table
/// for the full context costs more memory than the few `sin_cos` calls cost time.
pub fn rope_neox_in_place(x: &mut [f32], inv_freq: &[f64], pos: usize) -> Result<(), KernelError> {
    let half = inv_freq.len();
    let head_dim = 2 * half;
    if head_dim == 0 || !x.len().is_multiple_of(head_dim) {
        return Err(KernelError::Invalid {
            op: "rope",
            message: format!("{} values are not heads of {head_dim}", x.len()),
        });
    }
    let (sin, cos): (Vec<f32>, Vec<f32>) = inv_freq
        .iter()
        .map(|&f| {
            let (s, c) = (pos as f64 * f).sin_cos();
            (s as f32, c as f32)
        })
        .unzip();
    for head in x.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope_neox_in_place(&mut x, &rope_inv_freq(4, 10_000.0), 0).unwrap();
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn rotates_pairs_across_halves() {
        // head_dim 2: one pair (x0, x1) rotated by pos * 1.0 radians.
        let mut x = vec![1.0, 0.0];
        rope_neox_in_place(&mut x, &[1.0], 1).unwrap();
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn relative_positions_give_equal_dot_products() {
        // The defining property: <rope(q, m), rope(k, n)> depends only on m - n.
        let inv = rope_inv_freq(8, 10_000.0);
        let q: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..8).map(|i| (i as f32 * 0.91).cos()).collect();
        let dot_at = |m: usize, n: usize| {
            let (mut a, mut b) = (q.clone(), k.clone());
            rope_neox_in_place(&mut a, &inv, m).unwrap();
            rope_neox_in_place(&mut b, &inv, n).unwrap();
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot_at(10, 7) - dot_at(103, 100)).abs() < 1e-4);
        assert!((dot_at(10, 7) - dot_at(10, 3)).abs() > 1e-3);
    }
}
