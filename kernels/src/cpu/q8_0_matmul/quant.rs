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
pub(crate) fn round_to_i8(v: f32) -> i8 {
    let v = v.clamp(-128.0, 127.0);
    let t = v as i32;
    let frac = v - t as f32;
    (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8
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
        for ((xb, qb), d) in x
            .chunks_exact(Q8_0_BLOCK)
            .zip(rows_q.chunks_exact_mut(Q8_0_BLOCK))
            .zip(rows_d.iter_mut())
        {
            *d = quantize_block(xb, qb);
        }
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
