//! Batched Q8_0 matmul `y[m, n] = x[m, k] · W[n, k]ᵀ` over GGUF Q8_0 weight bytes: shape
//! checks, SIMD path selection, and the split of weight rows into rayon tasks. `PackedQ8_0`
//! (in `packed`) is the same product on weights repacked at load, which the model uses where
//! the CPU has AVX-512 VNNI.
//!
//! Every output `(i, j)` is computed the same way whatever `m` is: activation row `i` is
//! quantized on its own to Q8_0-style blocks (f32 scale), then for each block in order an exact
//! integer dot is taken and `acc += (dw * dx) * isum as f32` in f32 (no FMA). Integer sums are
//! exact, so the SIMD paths (which vectorise across activation rows, one lane per row) and the
//! scalar code round identically, and a row's result is bit-identical alone or in any batch.

mod avx2;
mod avx512;
mod packed;
mod quant;
mod scalar;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use crate::KernelError;

pub use packed::PackedQ8_0;
pub use scalar::q8_0_matmul_reference;

/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per GGUF Q8_0 block: an f16 scale then 32 `i8`.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// Weight rows processed together by the SIMD kernels (each loaded block feeds every lane).
const GROUP_ROWS: usize = 4;
/// Bounds on weight rows per rayon task: enough work to amortise scheduling, enough tasks
/// to balance the cores.
const MIN_TASK_ROWS: usize = 16;
const MAX_TASK_ROWS: usize = 256;

/// The instruction set the fast kernel uses on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q8_0Path {
    /// AVX-512 F/BW + VNNI (`vpdpbusd`), 16 activation rows per vector.
    Avx512Vnni,
    /// AVX2 `vpmaddubsw` with the sign trick, two 8-row halves.
    Avx2,
    /// Portable scalar code.
    Scalar,
}

/// The path `q8_0_matmul` takes here: detected once, the same for every call and every `m`.
pub fn q8_0_matmul_path() -> Q8_0Path {
    static PATH: OnceLock<Q8_0Path> = OnceLock::new();
    *PATH.get_or_init(detect_path)
}

fn detect_path() -> Q8_0Path {
    if avx512::available() {
        Q8_0Path::Avx512Vnni
    } else if avx2::available() {
        Q8_0Path::Avx2
    } else {
        Q8_0Path::Scalar
    }
}

/// Runs a kernel's independent tasks, possibly in parallel. Which thread runs which task
/// never changes a value, only speed.
pub trait TaskRunner: Sync {
    /// Calls `f(task)` once for every `task` in `0..n_tasks`.
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// The default runner: rayon's global pool.
pub struct RayonRunner;

impl TaskRunner for RayonRunner {
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n_tasks).into_par_iter().for_each(f);
    }
}

/// `y = x · Wᵀ`: `x` is row-major `[m, k]` f32, `w` is `n` rows of `k / 32` GGUF Q8_0 blocks.
/// Returns row-major `[m, n]`. Parallel on rayon's global pool.
pub fn q8_0_matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, KernelError> {
    q8_0_matmul_on(&RayonRunner, x, m, k, w, n)
}

/// `q8_0_matmul` with its tasks run by `runner` (e.g. the pool the caller's other matmuls
/// use, so two pools do not spin against each other on the same cores).
pub fn q8_0_matmul_on(
    runner: &dyn TaskRunner,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, KernelError> {
    q8_0_matmul_with(runner, q8_0_matmul_path(), x, m, k, w, n)
}

/// Checks the shapes shared by the fast and the reference kernels; returns blocks per row.
pub(crate) fn check_shapes(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<usize, KernelError> {
    const OP: &str = "q8_0_matmul";
    let invalid = |message: String| KernelError::Invalid { op: OP, message };
    if !k.is_multiple_of(Q8_0_BLOCK) {
        return Err(invalid(format!(
            "k = {k} is not a multiple of {Q8_0_BLOCK}"
        )));
    }
    let nb = k / Q8_0_BLOCK;
    let x_len = m
        .checked_mul(k)
        .ok_or_else(|| invalid(format!("{m} x {k} overflows")))?;
    let w_len = n
        .checked_mul(nb)
        .and_then(|v| v.checked_mul(Q8_0_BLOCK_BYTES))
        .ok_or_else(|| invalid(format!("{n} rows of {nb} blocks overflow")))?;
    m.checked_mul(n)
        .ok_or_else(|| invalid(format!("output {m} x {n} overflows")))?;
    crate::error::check_len(OP, "x", x.len(), x_len)?;
    crate::error::check_len(OP, "w (bytes)", w.len(), w_len)?;
    Ok(nb)
}

/// `q8_0_matmul` on a given path; `Err` if this CPU cannot run it (tests compare all paths).
pub(crate) fn q8_0_matmul_with(
    runner: &dyn TaskRunner,
    path: Q8_0Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, KernelError> {
    let nb = check_shapes(x, m, k, w, n)?;
    let supported = match path {
        Q8_0Path::Avx512Vnni => avx512::available(),
        Q8_0Path::Avx2 => avx2::available(),
        Q8_0Path::Scalar => true,
    };
    if !supported {
        return Err(KernelError::Invalid {
            op: "q8_0_matmul",
            message: format!("{path:?} is not supported by this CPU"),
        });
    }
    let mut y = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return Ok(y);
    }
    let acts = quant::QuantizedActs::new(x, m, nb, path != Q8_0Path::Scalar);
    let per_task = task_rows(n);
    // One uncontended lock per task: a safe way to hand each task its own output slices
    // through a shared `Fn`.
    let tasks: Vec<Mutex<Vec<&mut [f32]>>> = split_columns(&mut y, n, per_task)
        .into_iter()
        .map(Mutex::new)
        .collect();
    let row_bytes = nb * Q8_0_BLOCK_BYTES;
    runner.run(tasks.len(), &|t| {
        let mut out = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
        let first = t * per_task;
        let rows = per_task.min(n - first);
        let w_rows = &w[first * row_bytes..(first + rows) * row_bytes];
        match path {
            Q8_0Path::Avx512Vnni => avx512::run_task(w_rows, rows, &acts, &mut out[..]),
            Q8_0Path::Avx2 => avx2::run_task(w_rows, rows, &acts, &mut out[..]),
            Q8_0Path::Scalar => scalar::run_task(w_rows, rows, &acts, &mut out[..]),
        }
    });
    Ok(y)
}

/// Weight rows per task: about four tasks per thread, within the bounds, a whole number of
/// groups. Only the work split depends on this, never a value.
fn task_rows(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let rows = n.div_ceil(threads * 4).clamp(MIN_TASK_ROWS, MAX_TASK_ROWS);
    rows.div_ceil(GROUP_ROWS) * GROUP_ROWS
}

/// Splits row-major `[m, n]` output into per-task column ranges: task `t` gets, for every
/// activation row, the slice of columns `t * per_task ..`. Safe disjoint borrows for rayon.
fn split_columns(y: &mut [f32], n: usize, per_task: usize) -> Vec<Vec<&mut [f32]>> {
    let m = y.len() / n;
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(per_task))
        .map(|_| Vec::with_capacity(m))
        .collect();
    for row in y.chunks_exact_mut(n) {
        for (task, part) in tasks.iter_mut().zip(row.chunks_mut(per_task)) {
            task.push(part);
        }
    }
    tasks
}
