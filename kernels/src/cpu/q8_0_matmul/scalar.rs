//! Portable paths: the straightforward reference implementation and the scalar fallback task.
//! Both follow the per-output recipe the SIMD paths match bit for bit.

use half::f16;

use super::quant::{quantize_block, QuantizedActs};
use super::{check_shapes, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use crate::KernelError;

/// Exact integer dot of one weight block's quants (as stored, two's complement) with one
/// quantized activation block.
fn block_dot(w: &[u8], x: &[i8]) -> i32 {
    w.iter()
        .zip(x)
        .map(|(&w, &x)| (w as i8 as i32) * (x as i32))
        .sum()
}

fn scale(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

/// Reference `y[m, n] = x[m, k] · W[n, k]ᵀ` over GGUF Q8_0 weights, in plain loops.
///
/// Each activation row is quantized per 32-block (`quantize_row_q8_0`'s rule, f32 scale);
/// then, per output and block in order, `acc += (dw * dx) * isum as f32`.
pub fn q8_0_matmul_reference(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, KernelError> {
    let nb = check_shapes(x, m, k, w, n)?;
    let row_bytes = nb * Q8_0_BLOCK_BYTES;
    let mut y = vec![0.0f32; m * n];
    let mut xq = vec![0i8; k];
    let mut xd = vec![0.0f32; nb];
    for i in 0..m {
        for b in 0..nb {
            let at = i * k + b * Q8_0_BLOCK;
            let q = &mut xq[b * Q8_0_BLOCK..(b + 1) * Q8_0_BLOCK];
            xd[b] = quantize_block(&x[at..at + Q8_0_BLOCK], q);
        }
        for j in 0..n {
            let mut acc = 0.0f32;
            for b in 0..nb {
                let block = &w[j * row_bytes + b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
                let isum = block_dot(&block[2..], &xq[b * Q8_0_BLOCK..(b + 1) * Q8_0_BLOCK]);
                acc += (scale(block) * xd[b]) * isum as f32;
            }
            y[i * n + j] = acc;
        }
    }
    Ok(y)
}

/// Scalar fallback for one task: `rows` weight rows against every activation row.
pub(super) fn run_task(w: &[u8], rows: usize, acts: &QuantizedActs, out: &mut [&mut [f32]]) {
    let nb = acts.nb;
    let row_bytes = nb * Q8_0_BLOCK_BYTES;
    let mut dw = vec![0.0f32; nb];
    for j in 0..rows {
        let row = &w[j * row_bytes..(j + 1) * row_bytes];
        for (d, block) in dw.iter_mut().zip(row.chunks_exact(Q8_0_BLOCK_BYTES)) {
            *d = scale(block);
        }
        for (i, out_row) in out.iter_mut().enumerate() {
            let xq = &acts.rows_q[i * nb * Q8_0_BLOCK..(i + 1) * nb * Q8_0_BLOCK];
            let xd = &acts.rows_d[i * nb..(i + 1) * nb];
            let mut acc = 0.0f32;
            for (b, block) in row.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
                let isum = block_dot(&block[2..], &xq[b * Q8_0_BLOCK..(b + 1) * Q8_0_BLOCK]);
                acc += (dw[b] * xd[b]) * isum as f32;
            }
            out_row[j] = acc;
        }
    }
}
