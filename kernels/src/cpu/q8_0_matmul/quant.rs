//! Activation quantization (once per row per call) and its lane-interleaved packing for the
//! SIMD kernels, plus the per-group weight-scale gathering they share.

use super::{Q8_0_BLOCK, Q8_0_BLOCK_BYTES};

/// Activation rows per SIMD tile: one row per 32-bit lane of a 512-bit vector.
pub(super) const LANES: usize = 16;
/// 4-byte groups per block: `vpdpbusd` / `vpmaddwd` reduce 4 adjacent bytes into a lane.
pub(super) const CHUNKS: usize = Q8_0_BLOCK / 4;
/// Bytes of one packed chunk: 4 bytes for each of the 16 lanes.
pub(super) const CHUNK_BYTES: usize = 4 * LANES;

/// Quantizes 32 values like ggml's `quantize_row_q8_0` (`d = amax / 127`, `q = round(x / d)`
/// through the reciprocal), but keeps `d` in f32 instead of rounding it to f16.
#[inline(always)]
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    // ggml's `MAX(a, b)` select, over 8 independent lanes so it compiles to vector max; the
    // maximum of finite values does not depend on the order.
    let mut lanes = [0.0f32; 8];
    for chunk in x.chunks_exact(8) {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            let a = v.abs();
            *m = if *m > a { *m } else { a };
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &a| if m > a { m } else { a });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_to_i8(v * id);
    }
    d
}

/// `v.round() as i8` (half away from zero, like C's `roundf`; saturating; NaN → 0) without
/// the `roundf` libm call, which baseline x86_64 has no instruction for and which dominated
/// the quantization time. Truncation is exact here, so is the fraction; branch-free so the
/// block loop vectorises.
#[inline(always)]
pub(crate) fn round_to_i8(v: f32) -> i8 {
    let v = v.clamp(-128.0, 127.0);
    let t = v as i32;
    let frac = v - t as f32;
    (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8
}

/// Quantizes whole rows block by block. The AVX-512 version does `quantize_block`'s
/// operations in the same order, 16 values per instruction; the baseline build (SSE2, no
/// vector float→int rounding) spent ~11 % of a 128-row matmul here.
fn quantize_rows(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has the features the wide copy is compiled for.
        return unsafe { quantize_rows_avx512(x, q, d) };
    }
    quantize_rows_portable(x, q, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn quantize_rows_avx512(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    use std::arch::x86_64::*;
    for ((xb, qb), d) in x
        .chunks_exact(Q8_0_BLOCK)
        .zip(q.chunks_exact_mut(Q8_0_BLOCK))
        .zip(d.iter_mut())
    {
        // SAFETY: `xb` is 32 f32s and `qb` 32 bytes; unaligned loads and stores.
        unsafe {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            // `quantize_block`'s 8 running maxima, in the same order: `max_ps(m, a)` is
            // `m > a ? m : a` lane by lane, NaN included.
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_setzero_ps();
            for v in v {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
            }
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), m);
            let amax = lanes.iter().fold(0.0f32, |m, &a| if m > a { m } else { a });
            *d = amax / 127.0;
            let id = if *d != 0.0 { 1.0 / *d } else { 0.0 };
            let x = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
            for (h, x) in x.into_iter().enumerate() {
                let q = round_to_i8_x16(_mm512_mul_ps(x, _mm512_set1_ps(id)));
                _mm_storeu_si128(qb.as_mut_ptr().add(16 * h).cast(), q);
            }
        }
    }
}

/// `round_to_i8` on 16 lanes: clamp, truncate, then step away from zero on a half.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn round_to_i8_x16(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // `clamp` (max then min) maps NaN to NaN; the truncating conversion then gives
    // i32::MIN, which `as i32` in the scalar code maps to 0 — fixed below with the NaN mask.
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let v = _mm512_min_ps(
        _mm512_max_ps(v, _mm512_set1_ps(-128.0)),
        _mm512_set1_ps(127.0),
    );
    let t = _mm512_cvttps_epi32(v);
    let frac = _mm512_sub_ps(v, _mm512_cvtepi32_ps(t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, _mm512_set1_ps(-0.5));
    let one = _mm512_set1_epi32(1);
    let t = _mm512_mask_add_epi32(t, up, t, one);
    let t = _mm512_mask_sub_epi32(t, down, t, one);
    let t = _mm512_mask_mov_epi32(t, nan, _mm512_setzero_si512());
    _mm512_cvtepi32_epi8(t)
}

#[inline(always)]
fn quantize_rows_portable(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), d) in x
        .chunks_exact(Q8_0_BLOCK)
        .zip(q.chunks_exact_mut(Q8_0_BLOCK))
        .zip(d.iter_mut())
    {
        *d = quantize_block(xb, qb);
    }
}

/// The activations of one call, quantized per row (for the scalar path) and, for the SIMD
/// paths, interleaved so that lane `l` of tile `t` is activation row `16 t + l`.
pub(super) struct QuantizedActs {
    pub m: usize,
    pub nb: usize,
    pub tiles: usize,
    /// Row-major `[m, nb * 32]`.
    pub rows_q: Vec<i8>,
    /// Row-major `[m, nb]`.
    pub rows_d: Vec<f32>,
    /// `[tiles, nb, CHUNKS, LANES, 4]`; padding lanes are zero, so they add nothing.
    pub packed_q: Vec<i8>,
    /// `[tiles, nb, LANES]` block scales.
    pub packed_d: Vec<f32>,
    /// `[tiles, nb, LANES]`: `-128 * Σ q` of each block. The AVX-512 path feeds `vpdpbusd`
    /// weights as `w + 128` (unsigned) and seeds each block's sum with this to cancel it.
    pub packed_neg_sum: Vec<i32>,
}

impl QuantizedActs {
    /// `packed`: also build the SIMD paths' interleaved layout.
    pub fn new(x: &[f32], m: usize, nb: usize, packed: bool) -> Self {
        let k = nb * Q8_0_BLOCK;
        let mut rows_q = vec![0i8; m * k];
        let mut rows_d = vec![0.0f32; m * nb];
        quantize_rows(x, &mut rows_q, &mut rows_d);
        let mut acts = Self {
            m,
            nb,
            tiles: m.div_ceil(LANES),
            rows_q,
            rows_d,
            packed_q: Vec::new(),
            packed_d: Vec::new(),
            packed_neg_sum: Vec::new(),
        };
        if packed {
            acts.pack();
        }
        acts
    }

    fn pack(&mut self) {
        let (nb, tiles) = (self.nb, self.tiles);
        self.packed_q = vec![0; tiles * nb * CHUNKS * CHUNK_BYTES];
        self.packed_d = vec![0.0; tiles * nb * LANES];
        self.packed_neg_sum = vec![0; tiles * nb * LANES];
        for row in 0..self.m {
            let (t, lane) = (row / LANES, row % LANES);
            let src_row = &self.rows_q[row * nb * Q8_0_BLOCK..(row + 1) * nb * Q8_0_BLOCK];
            for (b, src) in src_row.chunks_exact(Q8_0_BLOCK).enumerate() {
                let tb = t * nb + b;
                let dst = &mut self.packed_q[tb * CHUNKS * CHUNK_BYTES..][..CHUNKS * CHUNK_BYTES];
                for (four, dst) in src.chunks_exact(4).zip(dst.chunks_exact_mut(CHUNK_BYTES)) {
                    dst[lane * 4..lane * 4 + 4].copy_from_slice(four);
                }
                self.packed_d[tb * LANES + lane] = self.rows_d[row * nb + b];
                let sum: i32 = src.iter().map(|&q| q as i32).sum();
                self.packed_neg_sum[tb * LANES + lane] = -128 * sum;
            }
        }
    }
}

/// A group of weight rows prepared once per call for the SIMD kernels, `[rows, nb]` blocks:
/// quants XOR-ed with the path's flip byte (contiguous, 32 per block) and f32 scales.
pub(super) struct GroupPrep {
    pub quants: Vec<u8>,
    pub bits: Vec<u16>,
    pub scales: Vec<f32>,
}

impl GroupPrep {
    pub fn new(max_rows: usize, nb: usize) -> Self {
        // Scales padded to a whole number of 16-wide conversions.
        let padded = (max_rows * nb).div_ceil(16) * 16;
        Self {
            quants: vec![0; max_rows * nb * Q8_0_BLOCK],
            bits: vec![0; padded],
            scales: vec![0.0; padded],
        }
    }

    /// Gathers the f16 scale bits of `rows` weight rows (GGUF bytes, `nb` blocks each) and
    /// copies their quants XOR `flip` (whole 32-byte words, which compiles to vector ops).
    pub fn gather(&mut self, w: &[u8], rows: usize, nb: usize, flip: u8) {
        let blocks = w[..rows * nb * Q8_0_BLOCK_BYTES].chunks_exact(Q8_0_BLOCK_BYTES);
        let dst = self.quants.chunks_exact_mut(Q8_0_BLOCK);
        for ((block, bits), dst) in blocks.zip(self.bits.iter_mut()).zip(dst) {
            *bits = u16::from_le_bytes([block[0], block[1]]);
            let src: &[u8; Q8_0_BLOCK] = block[2..].try_into().expect("32-byte block");
            let dst: &mut [u8; Q8_0_BLOCK] = dst.try_into().expect("32-byte block");
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s ^ flip;
            }
        }
    }
}
