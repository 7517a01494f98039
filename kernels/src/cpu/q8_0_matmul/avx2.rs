//! AVX2 path (no VNNI): the same lane-per-activation-row layout as the AVX-512 path, as two
//! 8-lane halves, with `vpmaddubsw` + `vpmaddwd` and the sign trick.
//!
//! `vpmaddubsw` wants unsigned × signed bytes and saturates pairs at i16, so the weight
//! byte's magnitude is the unsigned side and its sign is moved onto the activation
//! (`|w| · sign(w)·x`): pairs stay within 2 · 128 · 127 < 32768, and the sums are exact.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::quant::{GroupPrep, QuantizedActs, CHUNKS, CHUNK_BYTES, LANES};
use super::{GROUP_ROWS, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};

/// Lanes per 256-bit half.
const HALF: usize = LANES / 2;

pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One task, as in the AVX-512 path. The caller has checked `available()`.
#[cfg(target_arch = "x86_64")]
pub(super) fn run_task(w: &[u8], rows: usize, acts: &QuantizedActs, out: &mut [&mut [f32]]) {
    assert!(available(), "AVX2 path chosen on a CPU without it");
    // SAFETY: the CPU supports the features `task` is compiled for (checked just above).
    unsafe { task(w, rows, acts, out) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn run_task(_: &[u8], _: usize, _: &QuantizedActs, _: &mut [&mut [f32]]) {
    unreachable!("AVX2 path is only selected on x86_64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn task(w: &[u8], rows: usize, acts: &QuantizedActs, out: &mut [&mut [f32]]) {
    let nb = acts.nb;
    let row_bytes = nb * Q8_0_BLOCK_BYTES;
    let mut prep = GroupPrep::new(GROUP_ROWS, nb);
    let mut j = 0;
    while j < rows {
        let g = GROUP_ROWS.min(rows - j);
        let w_group = &w[j * row_bytes..(j + g) * row_bytes];
        prep.gather(w_group, g, nb, 0);
        convert_scales(&prep.bits, &mut prep.scales);
        for t in 0..acts.tiles {
            let lanes = LANES.min(acts.m - t * LANES);
            let out_rows = &mut out[t * LANES..t * LANES + lanes];
            // Each weight row is computed on its own lanes with the same code, so the
            // grouping only affects reuse, never rounding.
            for r in 0..g {
                let quants = &prep.quants[r * nb * Q8_0_BLOCK..(r + 1) * nb * Q8_0_BLOCK];
                let res = tile(quants, &prep.scales[r * nb..(r + 1) * nb], acts, t);
                for (lane, out_row) in out_rows.iter_mut().enumerate() {
                    out_row[j + r] = res[lane];
                }
            }
        }
        j += g;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn convert_scales(bits: &[u16], out: &mut [f32]) {
    for (b, o) in bits.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        // SAFETY: both chunks hold exactly 8 elements (16 and 32 bytes); unaligned ops.
        unsafe {
            let h = _mm_loadu_si128(b.as_ptr().cast());
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
}

/// One prepared weight row (`nb` blocks of 32 quants, `scales` its f32 scales) against
/// activation tile `t`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tile(quants: &[u8], scales: &[f32], acts: &QuantizedActs, t: usize) -> [f32; LANES] {
    let nb = acts.nb;
    let xq = &acts.packed_q[t * nb * CHUNKS * CHUNK_BYTES..(t + 1) * nb * CHUNKS * CHUNK_BYTES];
    let xd = &acts.packed_d[t * nb * LANES..(t + 1) * nb * LANES];
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let wb = &quants[b * Q8_0_BLOCK..(b + 1) * Q8_0_BLOCK];
        let dw = _mm256_set1_ps(scales[b]);
        for (h, acc) in acc.iter_mut().enumerate() {
            let mut s = _mm256_setzero_si256();
            for c in 0..CHUNKS {
                let wc =
                    i32::from_le_bytes([wb[4 * c], wb[4 * c + 1], wb[4 * c + 2], wb[4 * c + 3]]);
                let wv = _mm256_set1_epi32(wc);
                // SAFETY: chunk `c < CHUNKS` of block `b < nb`, half `h < 2`: 32 bytes
                // inside `xq`.
                let xv = unsafe {
                    let at = (b * CHUNKS + c) * CHUNK_BYTES + h * 32;
                    _mm256_loadu_si256(xq.as_ptr().add(at).cast())
                };
                let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(prod, ones));
            }
            // SAFETY: `HALF` f32s of block `b`, half `h`, inside `xd`.
            let dx = unsafe { _mm256_loadu_ps(xd.as_ptr().add(b * LANES + h * HALF)) };
            let d = _mm256_mul_ps(dx, dw);
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(s)));
        }
    }
    let mut res = [0.0f32; LANES];
    // SAFETY: `res` is 16 f32s: two 256-bit stores.
    unsafe {
        _mm256_storeu_ps(res.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(res.as_mut_ptr().add(HALF), acc[1]);
    }
    res
}
