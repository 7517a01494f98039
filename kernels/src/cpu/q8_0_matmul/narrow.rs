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
pub(super) const NARROW_MAX_M: usize = 8;

/// `NARROW_ROWS` weight rows from `w` (GGUF bytes, starting at the group's first row) against
/// every activation row (`acts.m <= NARROW_MAX_M`); writes `out[i][col .. col + 8]`.
///
/// Activation rows go two at a time through 512-bit vectors (row `2p` in the low half,
/// `2p + 1` in the high half, the weight block broadcast to both), which halves the
/// `vpdpbusd`s and the shuffles of the reduction; an odd last row uses the 256-bit form.
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
    if m == 1 {
        // SAFETY: same features as this function.
        return unsafe { group_one(w, acts, out, col) };
    }
    let pairs = m / 2;
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let mut acc_pairs = [_mm512_setzero_ps(); NARROW_MAX_M / 2];
    let mut acc_last = _mm256_setzero_ps();
    for b in 0..nb {
        let mut bits = [0u16; NARROW_ROWS];
        let mut wq = [_mm512_setzero_si512(); NARROW_ROWS];
        for (r, (bits, wq)) in bits.iter_mut().zip(wq.iter_mut()).enumerate() {
            let block = &w[r * row_bytes + b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
            *bits = u16::from_le_bytes([block[0], block[1]]);
            // SAFETY: `block[2..]` is exactly 32 bytes; unaligned load, then both halves.
            let q = unsafe { _mm256_loadu_si256(block[2..].as_ptr().cast()) };
            // `w + 128` as unsigned bytes: `vpdpbusd`'s first operand is unsigned.
            *wq = _mm512_xor_si512(_mm512_broadcast_i64x4(q), flip);
        }
        // SAFETY: `bits` is 8 u16s, one 128-bit load.
        let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr().cast())) };
        for (p, acc) in acc_pairs.iter_mut().enumerate().take(pairs) {
            let (i, j) = (2 * p, 2 * p + 1);
            let x = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(act_block(acts, i, b)),
                act_block(acts, j, b),
            );
            let mut partial = [_mm512_setzero_si512(); NARROW_ROWS];
            for (part, &wq) in partial.iter_mut().zip(&wq) {
                *part = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, x);
            }
            let halves = |f: fn(&QuantizedActs, usize, usize) -> u32| {
                _mm512_mask_blend_epi32(
                    0xff00,
                    _mm512_set1_epi32(f(acts, i, b) as i32),
                    _mm512_set1_epi32(f(acts, j, b) as i32),
                )
            };
            // Σ (w + 128) x − 128 Σ x = Σ w x, exactly (the packing precomputed −128 Σ x).
            let isum = _mm512_add_epi32(reduce8x2(&partial), halves(neg_bits));
            let dx = _mm512_castsi512_ps(halves(dx_bits));
            let dw2 = _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_castps_si256(dw)));
            let d = _mm512_mul_ps(dx, dw2);
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum)));
        }
        if m % 2 == 1 {
            let wq = wq.map(|v| _mm512_castsi512_si256(v));
            acc_last = single_row_block(&wq, dw, acts, m - 1, b, acc_last);
        }
    }
    for (p, acc) in acc_pairs.iter().enumerate().take(pairs) {
        let mut both = [0.0f32; 2 * NARROW_ROWS];
        // SAFETY: `both` is exactly 16 f32s; unaligned store.
        unsafe { _mm512_storeu_ps(both.as_mut_ptr(), *acc) };
        out[2 * p][col..col + NARROW_ROWS].copy_from_slice(&both[..NARROW_ROWS]);
        out[2 * p + 1][col..col + NARROW_ROWS].copy_from_slice(&both[NARROW_ROWS..]);
    }
    if m % 2 == 1 {
        let dst = &mut out[m - 1][col..col + NARROW_ROWS];
        // SAFETY: `dst` is exactly 8 f32s; unaligned store.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), acc_last) };
    }
}

/// `group` for a single activation row: 256-bit vectors only (broadcasting each weight block
/// to 512 bits would be wasted work here, and batch-1 decode is the memory-bound case).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn group_one(w: &[u8], acts: &QuantizedActs, out: &mut [&mut [f32]], col: usize) {
    let row_bytes = acts.nb * Q8_0_BLOCK_BYTES;
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let mut acc = _mm256_setzero_ps();
    for b in 0..acts.nb {
        let mut bits = [0u16; NARROW_ROWS];
        let mut wq = [_mm256_setzero_si256(); NARROW_ROWS];
        for (r, (bits, wq)) in bits.iter_mut().zip(wq.iter_mut()).enumerate() {
            let block = &w[r * row_bytes + b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
            *bits = u16::from_le_bytes([block[0], block[1]]);
            // SAFETY: `block[2..]` is exactly 32 bytes; unaligned load.
            let q = unsafe { _mm256_loadu_si256(block[2..].as_ptr().cast()) };
            *wq = _mm256_xor_si256(q, flip);
        }
        // SAFETY: `bits` is 8 u16s, one 128-bit load.
        let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr().cast())) };
        acc = single_row_block(&wq, dw, acts, 0, b, acc);
    }
    let dst = &mut out[0][col..col + NARROW_ROWS];
    // SAFETY: `dst` is exactly 8 f32s; unaligned store.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), acc) };
}

/// One block of 8 weight rows (`w + 128`, scales `dw`) against activation row `i`, added
/// to that row's accumulator by the shared recipe.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn single_row_block(
    wq: &[__m256i; NARROW_ROWS],
    dw: __m256,
    acts: &QuantizedActs,
    i: usize,
    b: usize,
    acc: __m256,
) -> __m256 {
    let x = act_block(acts, i, b);
    let mut partial = [_mm256_setzero_si256(); NARROW_ROWS];
    for (part, &wq) in partial.iter_mut().zip(wq) {
        *part = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, x);
    }
    // Σ (w + 128) x − 128 Σ x = Σ w x, exactly (the packing precomputed −128 Σ x).
    let neg = _mm256_set1_epi32(neg_bits(acts, i, b) as i32);
    let isum = _mm256_add_epi32(reduce8(&partial), neg);
    let d = _mm256_mul_ps(_mm256_set1_ps(acts.packed_d[b * LANES + i]), dw);
    _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)))
}

/// Activation row `i`'s quantized block `b` (32 bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn act_block(acts: &QuantizedActs, i: usize, b: usize) -> __m256i {
    let xq = &acts.rows_q[(i * acts.nb + b) * Q8_0_BLOCK..][..Q8_0_BLOCK];
    // SAFETY: `xq` is exactly 32 bytes; unaligned load.
    unsafe { _mm256_loadu_si256(xq.as_ptr().cast()) }
}

/// `−128 Σ x` of activation row `i`'s block `b`, as bits.
fn neg_bits(acts: &QuantizedActs, i: usize, b: usize) -> u32 {
    acts.packed_neg_sum[b * LANES + i] as u32
}

/// The scale of activation row `i`'s block `b`, as bits.
fn dx_bits(acts: &QuantizedActs, i: usize, b: usize) -> u32 {
    acts.packed_d[b * LANES + i].to_bits()
}

/// For two activation rows at once (halves of each vector): the result's low 256 bits hold,
/// in lane `r`, the sum of the low 8 lanes of `v[r]`, and its high 256 bits the same for the
/// high lanes. Exact integer adds; unpacks and 128-bit-lane shuffles (AVX-512 has no `hadd`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn reduce8x2(v: &[__m512i; NARROW_ROWS]) -> __m512i {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then [Σa, Σb, Σc, Σd].
    let pair = |a, b| _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    let quad =
        |ab, cd| _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    let s0123 = quad(pair(v[0], v[1]), pair(v[2], v[3]));
    let s4567 = quad(pair(v[4], v[5]), pair(v[6], v[7]));
    // 128-bit lanes 0, 1 are the low row's halves, 2, 3 the high row's.
    let first = _mm512_shuffle_i32x4::<0b10_00_10_00>(s0123, s4567);
    let second = _mm512_shuffle_i32x4::<0b11_01_11_01>(s0123, s4567);
    // [low rows 0-3, high rows 0-3, low rows 4-7, high rows 4-7] → [low 0-7, high 0-7].
    let sum = _mm512_add_epi32(first, second);
    _mm512_shuffle_i32x4::<0b11_01_10_00>(sum, sum)
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
