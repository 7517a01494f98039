//! AVX-512 VNNI path: one 512-bit lane per activation row (16 rows per tile), `vpdpbusd`
//! with each weight's 4-byte group broadcast, so no horizontal reduction is ever needed.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes: a group's weights are copied once per call
//! as `w + 128` (XOR 0x80, unsigned) so each 4-byte group is a plain memory broadcast, and
//! each activation block's `-128 * Σ x`, computed at packing, seeds its sum to cancel that. The integer block sum is exact, so the result is
//! the same as the scalar recipe bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::quant::{GroupPrep, QuantizedActs, CHUNKS, CHUNK_BYTES, LANES};
use super::{GROUP_ROWS, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};

/// How far ahead (in weight rows) `task` prefetches: a few groups, a few KiB.
const PREFETCH_ROWS: usize = 4 * GROUP_ROWS;
/// Lanes of the 256-bit tile used when at most this many activation rows remain.
const HALF: usize = LANES / 2;

pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One task: `rows` weight rows (GGUF bytes) against every activation row; `out[i][j]`
/// receives output `(i, first row + j)`. The caller has checked `available()`.
#[cfg(target_arch = "x86_64")]
pub(super) fn run_task(w: &[u8], rows: usize, acts: &QuantizedActs, out: &mut [&mut [f32]]) {
    assert!(available(), "AVX-512 VNNI path chosen on a CPU without it");
    // SAFETY: the CPU supports the features `task` is compiled for (checked just above).
    unsafe { task(w, rows, acts, out) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn run_task(_: &[u8], _: usize, _: &QuantizedActs, _: &mut [&mut [f32]]) {
    unreachable!("AVX-512 path is only selected on x86_64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn task(w: &[u8], rows: usize, acts: &QuantizedActs, out: &mut [&mut [f32]]) {
    let nb = acts.nb;
    let row_bytes = nb * Q8_0_BLOCK_BYTES;
    let mut prep = GroupPrep::new(GROUP_ROWS, nb);
    let mut j = 0;
    while j < rows {
        let g = GROUP_ROWS.min(rows - j);
        let w_group = &w[j * row_bytes..(j + g) * row_bytes];
        prefetch_ahead(w, (j + PREFETCH_ROWS) * row_bytes, g * row_bytes);
        prep.gather(w_group, g, nb, 0x80);
        convert_scales(&prep.bits, &mut prep.scales);
        for t in 0..acts.tiles {
            let lanes = LANES.min(acts.m - t * LANES);
            let out_rows = &mut out[t * LANES..t * LANES + lanes];
            // Remainders (a partial group, a tile of at most 8 rows) run narrower code that
            // does the same per-lane operations, so every lane rounds exactly alike. The
            // 256-bit form matters for decode: it issues on two ports instead of one.
            match (g == GROUP_ROWS, lanes <= HALF) {
                (true, false) => scatter(&tile::<GROUP_ROWS>(&prep, 0, acts, t), out_rows, j),
                (true, true) => scatter(&tile_half::<GROUP_ROWS>(&prep, 0, acts, t), out_rows, j),
                (false, false) => {
                    for r in 0..g {
                        scatter(&tile::<1>(&prep, r, acts, t), out_rows, j + r);
                    }
                }
                (false, true) => {
                    for r in 0..g {
                        scatter(&tile_half::<1>(&prep, r, acts, t), out_rows, j + r);
                    }
                }
            }
        }
        j += g;
    }
}

/// Requests `len` bytes of `w` from `from` on into cache. Weight rows are read once per call
/// from DRAM; without this the copy in `GroupPrep::gather` stalls on every line and a
/// single-row call runs at half the memory bandwidth.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse")]
fn prefetch_ahead(w: &[u8], from: usize, len: usize) {
    let end = (from + len).min(w.len());
    for at in (from..end).step_by(64) {
        // SAFETY: `at < w.len()`, and a prefetch never faults or changes memory anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().add(at).cast()) };
    }
}

#[cfg(target_arch = "x86_64")]
fn scatter<const R: usize>(res: &[[f32; LANES]; R], out_rows: &mut [&mut [f32]], col: usize) {
    for (lane, out_row) in out_rows.iter_mut().enumerate() {
        for (r, vals) in res.iter().enumerate() {
            out_row[col + r] = vals[lane];
        }
    }
}

/// f16 → f32 for a group's scales, 16 at a time (exact, like any other conversion).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn convert_scales(bits: &[u16], out: &mut [f32]) {
    for (b, o) in bits.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        // SAFETY: both chunks hold exactly 16 elements (32 and 64 bytes); unaligned ops.
        unsafe {
            let h = _mm256_loadu_si256(b.as_ptr().cast());
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_cvtph_ps(h));
        }
    }
}

/// Rows `first .. first + R` of the prepared group against activation tile `t`: per lane and
/// block in order, `acc += (dx * dw) * isum as f32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile<const R: usize>(
    prep: &GroupPrep,
    first: usize,
    acts: &QuantizedActs,
    t: usize,
) -> [[f32; LANES]; R] {
    let nb = acts.nb;
    let quants = &prep.quants[first * nb * Q8_0_BLOCK..(first + R) * nb * Q8_0_BLOCK];
    let scales = &prep.scales[first * nb..(first + R) * nb];
    let xneg = &acts.packed_neg_sum[t * nb * LANES..(t + 1) * nb * LANES];
    let xq = &acts.packed_q[t * nb * CHUNKS * CHUNK_BYTES..(t + 1) * nb * CHUNKS * CHUNK_BYTES];
    let xd = &acts.packed_d[t * nb * LANES..(t + 1) * nb * LANES];
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let mut x = [_mm512_setzero_si512(); CHUNKS];
        let (dx, neg);
        // SAFETY: block `b < nb` of the tile: `CHUNKS * CHUNK_BYTES` bytes of `xq` and
        // `LANES` values of `xd` / `xneg` from these offsets are inside the slices.
        unsafe {
            let xp = xq.as_ptr().add(b * CHUNKS * CHUNK_BYTES);
            for (c, v) in x.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(xp.add(c * CHUNK_BYTES).cast());
            }
            dx = _mm512_loadu_ps(xd.as_ptr().add(b * LANES));
            neg = _mm512_loadu_si512(xneg.as_ptr().add(b * LANES).cast());
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let at = (r * nb + b) * Q8_0_BLOCK;
            let wq = quants[at..at + Q8_0_BLOCK].as_ptr();
            // Two chains so consecutive `vpdpbusd`s do not wait on each other; integer adds
            // are exact, so the split does not change the sum.
            let (mut s0, mut s1) = (neg, _mm512_setzero_si512());
            for c in (0..CHUNKS).step_by(2) {
                // SAFETY: bytes `4c .. 4c + 8` of the 32 quants bounds-checked above.
                let (w0, w1) = unsafe {
                    let p = wq.add(4 * c).cast::<i32>();
                    (p.read_unaligned(), p.add(1).read_unaligned())
                };
                // One 4-byte group of `w + 128` broadcast to every lane (the unsigned
                // operand) against each lane's activations (the signed one).
                s0 = _mm512_dpbusd_epi32(s0, _mm512_set1_epi32(w0), x[c]);
                s1 = _mm512_dpbusd_epi32(s1, _mm512_set1_epi32(w1), x[c + 1]);
            }
            let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            let d = _mm512_mul_ps(dx, _mm512_set1_ps(scales[r * nb + b]));
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(d, isum));
        }
    }
    let mut res = [[0.0f32; LANES]; R];
    for (out, acc) in res.iter_mut().zip(acc) {
        // SAFETY: `out` is 16 f32s, exactly one 512-bit store.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), acc) };
    }
    res
}

/// `tile` on 256-bit vectors for a tile of at most 8 activation rows (lanes 0..8 of the
/// packed layout); lanes 8.. of the result are left zero.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
fn tile_half<const R: usize>(
    prep: &GroupPrep,
    first: usize,
    acts: &QuantizedActs,
    t: usize,
) -> [[f32; LANES]; R] {
    let nb = acts.nb;
    let quants = &prep.quants[first * nb * Q8_0_BLOCK..(first + R) * nb * Q8_0_BLOCK];
    let scales = &prep.scales[first * nb..(first + R) * nb];
    let xq = &acts.packed_q[t * nb * CHUNKS * CHUNK_BYTES..(t + 1) * nb * CHUNKS * CHUNK_BYTES];
    let xd = &acts.packed_d[t * nb * LANES..(t + 1) * nb * LANES];
    let xneg = &acts.packed_neg_sum[t * nb * LANES..(t + 1) * nb * LANES];
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let mut x = [_mm256_setzero_si256(); CHUNKS];
        let (dx, neg);
        // SAFETY: as in `tile`; each load reads the first half of what `tile` reads.
        unsafe {
            let xp = xq.as_ptr().add(b * CHUNKS * CHUNK_BYTES);
            for (c, v) in x.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(xp.add(c * CHUNK_BYTES).cast());
            }
            dx = _mm256_loadu_ps(xd.as_ptr().add(b * LANES));
            neg = _mm256_loadu_si256(xneg.as_ptr().add(b * LANES).cast());
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let at = (r * nb + b) * Q8_0_BLOCK;
            let wq = quants[at..at + Q8_0_BLOCK].as_ptr();
            let (mut s0, mut s1) = (neg, _mm256_setzero_si256());
            for c in (0..CHUNKS).step_by(2) {
                // SAFETY: bytes `4c .. 4c + 8` of the 32 quants bounds-checked above.
                let (w0, w1) = unsafe {
                    let p = wq.add(4 * c).cast::<i32>();
                    (p.read_unaligned(), p.add(1).read_unaligned())
                };
                s0 = _mm256_dpbusd_epi32(s0, _mm256_set1_epi32(w0), x[c]);
                s1 = _mm256_dpbusd_epi32(s1, _mm256_set1_epi32(w1), x[c + 1]);
            }
            let isum = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
            let d = _mm256_mul_ps(dx, _mm256_set1_ps(scales[r * nb + b]));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, isum));
        }
    }
    let mut res = [[0.0f32; LANES]; R];
    for (out, acc) in res.iter_mut().zip(acc) {
        // SAFETY: the first 8 of `out`'s 16 f32s, one 256-bit store.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    }
    res
}
