//! Q8_0 weights repacked once at load so that one 512-bit vector holds the same 4-byte group
//! of 16 weight rows: `vpdpbusd` against one activation row's broadcast 4 bytes then leaves
//! each lane with its own weight row's exact block sum, with no horizontal reduction at all.
//!
//! The GGUF layout forces a choice between wasting lanes (one activation row per lane, at
//! small batch) and reducing partial sums across lanes for every block (k-vectorised); with
//! weight rows in the lanes, a decode step of 1–16 rows runs near memory speed. Quants are
//! stored as `w + 128` (the unsigned operand) and scales as f32, and the float recipe per
//! output and block is the shared one (`acc += (dx * dw) * isum as f32`, in block order), so
//! results are bit-identical to `q8_0_matmul` and its reference.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::Mutex;

use half::f16;

use super::quant::QuantizedActs;
use super::{check_shapes, split_columns, TaskRunner, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
use crate::KernelError;

/// Weight rows per group: one 32-bit lane each.
const ROWS: usize = 16;
/// 4-byte groups per block.
const CHUNKS: usize = Q8_0_BLOCK / 4;
/// Activation rows sharing one load of a group's block (registers: 8 weight vectors, and per
/// activation row one accumulator and two sums).
const TILE: usize = 4;

/// A Q8_0 matrix `[n, k]` in the repacked layout.
pub struct PackedQ8_0 {
    n: usize,
    k: usize,
    nb: usize,
    /// `[group, block, chunk, lane, 4]`: weight row `16 group + lane`'s bytes XOR 0x80.
    /// Padding rows are 0x80 (a zero weight) with scale 0.
    quants: Vec<u8>,
    /// `[group, block, lane]` scales.
    scales: Vec<f32>,
}

impl PackedQ8_0 {
    /// Whether this CPU runs the packed kernel (AVX-512 F/BW/VL + VNNI).
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Repacks `n` rows of `k / 32` GGUF Q8_0 blocks.
    pub fn new(w: &[u8], n: usize, k: usize) -> Result<Self, KernelError> {
        let nb = check_shapes(&[], 0, k, w, n)?;
        let groups = n.div_ceil(ROWS);
        let mut quants = vec![0x80u8; groups * nb * CHUNKS * ROWS * 4];
        let mut scales = vec![0.0f32; groups * nb * ROWS];
        for (row, blocks) in w.chunks_exact(nb * Q8_0_BLOCK_BYTES).enumerate() {
            let (g, lane) = (row / ROWS, row % ROWS);
            for (b, block) in blocks.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
                let gb = g * nb + b;
                scales[gb * ROWS + lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (c, four) in block[2..].chunks_exact(4).enumerate() {
                    let at = ((gb * CHUNKS + c) * ROWS + lane) * 4;
                    for (dst, &src) in quants[at..at + 4].iter_mut().zip(four) {
                        *dst = src ^ 0x80;
                    }
                }
            }
        }
        Ok(Self {
            n,
            k,
            nb,
            quants,
            scales,
        })
    }

    /// Weight row `row` as f32 (`d · q`, exactly as dequantizing the GGUF block gives).
    pub fn row_into(&self, row: usize, out: &mut [f32]) -> Result<(), KernelError> {
        crate::error::check_len("packed q8_0 row", "out", out.len(), self.k)?;
        if row >= self.n {
            return Err(KernelError::Invalid {
                op: "packed q8_0 row",
                message: format!("row {row} of {}", self.n),
            });
        }
        let (g, lane) = (row / ROWS, row % ROWS);
        for (b, block) in out.chunks_exact_mut(Q8_0_BLOCK).enumerate() {
            let gb = g * self.nb + b;
            let d = self.scales[gb * ROWS + lane];
            for (c, four) in block.chunks_exact_mut(4).enumerate() {
                let at = ((gb * CHUNKS + c) * ROWS + lane) * 4;
                for (v, &q) in four.iter_mut().zip(&self.quants[at..at + 4]) {
                    *v = d * f32::from((q ^ 0x80) as i8);
                }
            }
        }
        Ok(())
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// `y = x · Wᵀ` for row-major `x` `[m, k]`; returns `[m, n]`. Errors if this CPU cannot
    /// run the kernel (see `available`).
    pub fn matmul(
        &self,
        runner: &dyn TaskRunner,
        x: &[f32],
        m: usize,
    ) -> Result<Vec<f32>, KernelError> {
        crate::error::check_len("packed q8_0 matmul", "x", x.len(), m * self.k)?;
        if !Self::available() {
            return Err(KernelError::Invalid {
                op: "packed q8_0 matmul",
                message: "this CPU lacks AVX-512 VNNI".into(),
            });
        }
        let mut y = vec![0.0f32; m * self.n];
        if m == 0 || self.n == 0 {
            return Ok(y);
        }
        let acts = QuantizedActs::new(x, m, self.nb, false);
        let neg: Vec<i32> = acts
            .rows_q
            .chunks_exact(Q8_0_BLOCK)
            .map(|q| -128 * q.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect();
        let groups_per_task = task_groups(self.n.div_ceil(ROWS));
        let per_task = groups_per_task * ROWS;
        let tasks: Vec<Mutex<Vec<&mut [f32]>>> = split_columns(&mut y, self.n, per_task)
            .into_iter()
            .map(Mutex::new)
            .collect();
        runner.run(tasks.len(), &|t| {
            let mut out = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
            let first = t * groups_per_task;
            let groups = groups_per_task.min(self.n.div_ceil(ROWS) - first);
            // SAFETY: `available()` was checked above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                self.task(first, groups, &acts, &neg, &mut out[..])
            };
        });
        Ok(y)
    }

    /// Groups `first .. first + groups` against every activation row; `out[i]` is row `i`'s
    /// slice of this task's columns.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn task(
        &self,
        first: usize,
        groups: usize,
        acts: &QuantizedActs,
        neg: &[i32],
        out: &mut [&mut [f32]],
    ) {
        for g in first..first + groups {
            let col = (g - first) * ROWS;
            let valid = ROWS.min(self.n - g * ROWS);
            for tile_start in (0..acts.m).step_by(TILE) {
                let tile = TILE.min(acts.m - tile_start);
                let acc = self.tile(g, tile_start, tile, acts, neg);
                for (i, acc) in acc.iter().enumerate().take(tile) {
                    let mut vals = [0.0f32; ROWS];
                    // SAFETY: `vals` is 16 f32s, one unaligned 512-bit store.
                    unsafe { _mm512_storeu_ps(vals.as_mut_ptr(), *acc) };
                    out[tile_start + i][col..col + valid].copy_from_slice(&vals[..valid]);
                }
            }
        }
    }

    /// One group's 16 weight rows against activation rows `start .. start + tile`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn tile(
        &self,
        g: usize,
        start: usize,
        tile: usize,
        acts: &QuantizedActs,
        neg: &[i32],
    ) -> [__m512; TILE] {
        let nb = self.nb;
        let mut acc = [_mm512_setzero_ps(); TILE];
        for b in 0..nb {
            let gb = g * nb + b;
            let wq = &self.quants[gb * CHUNKS * ROWS * 4..(gb + 1) * CHUNKS * ROWS * 4];
            let mut w = [_mm512_setzero_si512(); CHUNKS];
            for (c, w) in w.iter_mut().enumerate() {
                // SAFETY: chunk `c` is 64 bytes inside `wq`; unaligned load.
                *w = unsafe { _mm512_loadu_si512(wq.as_ptr().add(c * ROWS * 4).cast()) };
            }
            // SAFETY: 16 scales of block `gb`; unaligned load.
            let dw = unsafe { _mm512_loadu_ps(self.scales.as_ptr().add(gb * ROWS)) };
            for (t, acc) in acc.iter_mut().enumerate().take(tile) {
                let i = start + t;
                let xq = &acts.rows_q[(i * nb + b) * Q8_0_BLOCK..][..Q8_0_BLOCK];
                // Two chains so consecutive `vpdpbusd`s do not wait on each other; integer
                // adds are exact, so the split does not change the sum.
                let (mut s0, mut s1) = (_mm512_set1_epi32(neg[i * nb + b]), _mm512_setzero_si512());
                for c in (0..CHUNKS).step_by(2) {
                    // SAFETY: bytes `4c .. 4c + 8` of the 32-byte block `xq`.
                    let (x0, x1) = unsafe {
                        let p = xq.as_ptr().add(4 * c).cast::<i32>();
                        (p.read_unaligned(), p.add(1).read_unaligned())
                    };
                    s0 = _mm512_dpbusd_epi32(s0, w[c], _mm512_set1_epi32(x0));
                    s1 = _mm512_dpbusd_epi32(s1, w[c + 1], _mm512_set1_epi32(x1));
                }
                let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                let d = _mm512_mul_ps(_mm512_set1_ps(acts.rows_d[i * nb + b]), dw);
                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(d, isum));
            }
        }
        acc
    }
}

/// Groups per task: about four tasks per thread, at least one group. Only the split of work
/// depends on this, never a value.
fn task_groups(groups: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    groups.div_ceil(threads * 4).clamp(1, 16)
}
