//! AVX-512 VNNI path for a few activation rows (decode): vectorised along `k` instead of
//! across activation rows, so a single row uses every byte lane of `vpdpbusd`.
//!
//! The lane-per-row tiles waste 15 of 16 lanes at one row and make the output head
//! compute-bound; here each 32-byte weight block is one `vpdpbusd` per activation row, and
//! eight weight rows' partial sums are reduced together into one vector whose lane `r` is row
//! `r`'s exact integer block sum. From there the float recipe is the tiles' own, per output
//! and block in order (`acc += (dx * dw) * isum as f32`), so results are bit-identical to the
//! other paths and a row computes the same alone as in any batch.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::quant::{QuantizedActs, LANES};
use super::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};

/// Weight rows per narrow group: one 256-bit vector of results.
pub(super) const NARROW_ROWS: usize = 8;
/// Largest number of activation rows the narrow path takes; above it the lane tiles use
/// enough lanes to win.
pub(super) const NARROW_MAX_M: usize = 4;

/// `NARROW_ROWS` weight rows from `w` (GGUF bytes, starting at the group's first row) against
/// every activation row (`acts.m <= NARROW_MAX_M`); writes `out[i][col .. col + 8]`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
pub(super) unsafe fn group(w: &[u8], acts: &QuantizedActs, out: &mut [&mut [f32]], col: usize) {
    let nb = acts.nb;
    let row_bytes = nb * Q8_0_BLOCK_BYTES;
    let m = acts.m;
    assert!(m <= NARROW_MAX_M && w.len() >= NARROW_ROWS * row_bytes && out.len() == m);
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let mut acc = [_mm256_setzero_ps(); NARROW_MAX_M];
    for b in 0..nb {
        let mut bits = [0u16; NARROW_ROWS];
        let mut wq = [_mm256_setzero_si256(); NARROW_ROWS];
        for (r, (bits, wq)) in bits.iter_mut().zip(wq.iter_mut()).enumerate() {
            let block = &w[r * row_bytes + b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
            *bits = u16::from_le_bytes([block[0], block[1]]);
            // SAFETY: `block[2..]` is exactly 32 bytes; unaligned load.
            let q = unsafe { _mm256_loadu_si256(block[2..].as_ptr().cast()) };
            // `w + 128` as unsigned bytes: `vpdpbusd`'s first operand is unsigned.
            *wq = _mm256_xor_si256(q, flip);
        }
        // SAFETY: `bits` is 8 u16s, one 128-bit load.
        let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr().cast())) };
        for (i, acc) in acc.iter_mut().enumerate().take(m) {
            let xq = &acts.rows_q[(i * nb + b) * Q8_0_BLOCK..][..Q8_0_BLOCK];
            // SAFETY: `xq` is exactly 32 bytes; unaligned load.
            let x = unsafe { _mm256_loadu_si256(xq.as_ptr().cast()) };
            let mut partial = [_mm256_setzero_si256(); NARROW_ROWS];
            for (p, &wq) in partial.iter_mut().zip(&wq) {
                *p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, x);
            }
            // Σ (w + 128) x − 128 Σ x = Σ w x, exactly (the packing precomputed −128 Σ x).
            let neg = _mm256_set1_epi32(acts.packed_neg_sum[b * LANES + i]);
            let isum = _mm256_add_epi32(reduce8(&partial), neg);
            let d = _mm256_mul_ps(_mm256_set1_ps(acts.packed_d[b * LANES + i]), dw);
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)));
        }
    }
    for (i, acc) in acc.iter().enumerate().take(m) {
        let dst = &mut out[i][col..col + NARROW_ROWS];
        // SAFETY: `dst` is exactly 8 f32s; unaligned store.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), *acc) };
    }
}

/// Lane `r` of the result is the sum of the 8 lanes of `v[r]` (exact integer adds).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn reduce8(v: &[__m256i; NARROW_ROWS]) -> __m256i {
    // hadd pairs lanes within each 128-bit half: after two levels, half h of `u0` holds
    // rows 0..4's sums over their half h, and `u1` the same for rows 4..8.
    let t0 = _mm256_hadd_epi32(v[0], v[1]);
    let t1 = _mm256_hadd_epi32(v[2], v[3]);
    let t2 = _mm256_hadd_epi32(v[4], v[5]);
    let t3 = _mm256_hadd_epi32(v[6], v[7]);
    let u0 = _mm256_hadd_epi32(t0, t1);
    let u1 = _mm256_hadd_epi32(t2, t3);
    let low = _mm256_permute2x128_si256::<0x20>(u0, u1);
    let high = _mm256_permute2x128_si256::<0x31>(u0, u1);
    _mm256_add_epi32(low, high)
}
