//! Rotary position embedding, NeoX layout (the two halves of each head rotate together): the
//! per-step table of each token's cos/sin, and the rotation that applies it.

use crate::cpu::simd::multiversion;
use crate::KernelError;

/// Inverse frequencies `base^(-2i/head_dim)` for `i in 0..head_dim/2`, in f64 so the angle
/// `pos * inv_freq` stays exact enough at 32k positions.
pub fn rope_inv_freq(head_dim: usize, base: f64) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| base.powf(-(2.0 * i as f64) / head_dim as f64))
        .collect()
}

/// cos and sin of `pos * inv_freq[i]` for each token of a step, `[tokens, head_dim / 2]`.
///
/// Built once per step and frequency table, then shared by every layer and head: the angles
/// are taken in f64 and rounded to f32 exactly as `rope_neox_reference` does, so the rotation
/// is bit-identical to it, and a token's row depends on its own position alone.
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table for tokens at `positions` (in step order).
    pub fn new(inv_freq: &[f64], positions: &[usize]) -> Self {
        let half = inv_freq.len();
        let mut cos = vec![0f32; positions.len() * half];
        let mut sin = vec![0f32; positions.len() * half];
        if half > 0 {
            let rows = cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half));
            for ((c, s), &pos) in rows.zip(positions) {
                for ((c, s), &f) in c.iter_mut().zip(s.iter_mut()).zip(inv_freq) {
                    let (sa, ca) = (pos as f64 * f).sin_cos();
                    (*c, *s) = (ca as f32, sa as f32);
                }
            }
        }
        Self { half, cos, sin }
    }

    /// Tokens in the table.
    pub fn tokens(&self) -> usize {
        self.cos.len().checked_div(self.half).unwrap_or(0)
    }

    /// Head width the table rotates.
    pub fn head_dim(&self) -> usize {
        2 * self.half
    }

    /// `[tokens, head_dim / 2]` cosines, row-major (what the CUDA kernel takes).
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// `[tokens, head_dim / 2]` sines, row-major.
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }
}

/// Rotates every head of token `token`'s row `x` (`[heads, head_dim]`) with its table row.
pub fn rope_neox_row(x: &mut [f32], table: &RopeTable, token: usize) -> Result<(), KernelError> {
    let half = table.half;
    check_heads(x.len(), 2 * half)?;
    if token >= table.tokens() {
        return Err(KernelError::Invalid {
            op: "rope",
            message: format!("token {token} of a table of {}", table.tokens()),
        });
    }
    let row = token * half..(token + 1) * half;
    rotate_heads(x, &table.cos[row.clone()], &table.sin[row]);
    Ok(())
}

/// The scalar reference: rotates every head of one token (`x` is `[heads, head_dim]`) to
/// position `pos`, computing the angles on the spot.
/// Rotates every head of every token of `x` (`[tokens, heads, head_dim]`) with per-token
/// `cos`/`sin` rows of `head_dim / 2` (a step's table, as the CUDA kernel takes it).
pub fn rope_neox_rows(x: &mut [f32], cos: &[f32], sin: &[f32]) -> Result<(), KernelError> {
    let half = cos.len();
    if half == 0 || sin.len() != half {
        return Err(KernelError::Invalid {
            op: "rope",
            message: format!("cos has {} values, sin {}", cos.len(), sin.len()),
        });
    }
    check_heads(x.len(), 2 * half)?;
    rotate_heads(x, cos, sin);
    Ok(())
}

pub fn rope_neox_reference(x: &mut [f32], inv_freq: &[f64], pos: usize) -> Result<(), KernelError> {
    let half = inv_freq.len();
    check_heads(x.len(), 2 * half)?;
    let (sin, cos): (Vec<f32>, Vec<f32>) = inv_freq
        .iter()
        .map(|&f| {
            let (s, c) = (pos as f64 * f).sin_cos();
            (s as f32, c as f32)
        })
        .unzip();
    for head in x.chunks_exact_mut(2 * half) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }
    Ok(())
}

fn check_heads(len: usize, head_dim: usize) -> Result<(), KernelError> {
    if head_dim == 0 || !len.is_multiple_of(head_dim) {
        return Err(KernelError::Invalid {
            op: "rope",
            message: format!("{len} values are not heads of {head_dim}"),
        });
    }
    Ok(())
}

multiversion! {
    fn rotate_heads(x: &mut [f32], cos: &[f32], sin: &[f32]) => rotate_heads_body;
}

#[inline(always)]
fn rotate_heads_body(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(2 * cos.len()) {
        let (lo, hi) = head.split_at_mut(cos.len());
        for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
            let (x0, x1) = (*a, *b);
            *a = x0 * c - x1 * s;
            *b = x1 * c + x0 * s;
        }
    }
}

#[cfg(test)]
#[path = "rope_tests.rs"]
mod tests;
