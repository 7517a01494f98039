//! Launching our PTX through candle's CUDA device (behind `cuda`): the embedded modules, the
//! `<op>_<dtype>` naming, and views of contiguous inputs.

/// The PTX of every `kernels/cuda/*.cu`, compiled by build.rs (one `&str` per file).
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig};
use candle_core::cuda_backend::{CudaDType, CudaDevice};
use candle_core::{bail, CudaStorage, DType, Layout, Result};

/// The kernel-name suffix of a storage dtype.
pub(crate) fn suffix(dtype: DType, op: &str) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => bail!("{op}: no CUDA kernel for dtype {other:?}"),
    })
}

/// `<op>_<dtype>` from a module (loaded once per device, then cached by candle).
pub(crate) fn kernel_name(op: &str, dtype: DType) -> Result<String> {
    Ok(format!("{op}_{}", suffix(dtype, op)?))
}

/// A contiguous input as a typed device view.
pub(crate) fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{op}: inputs must be contiguous")
    };
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

/// An uninitialised output of `len` elements (every kernel writes all of it).
pub(crate) fn output<T: CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
    dev: &CudaDevice,
    len: usize,
) -> Result<CudaSlice<T>> {
    // SAFETY: the launch that follows writes every element before anyone reads it.
    unsafe { dev.alloc::<T>(len.max(1)) }
}

/// One block per row (or token), `threads` threads each.
pub(crate) fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Threads per row for a row of `cols` elements: a multiple of 32 (the block reductions
/// need whole warps), at most 1024.
pub(crate) fn row_threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Runs `$body` with `$t` bound to the Rust type of a float dtype.
macro_rules! with_float_type {
    ($dtype:expr, $op:expr, |$t:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F16 => {
                type $t = half::f16;
                $body
            }
            candle_core::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            other => candle_core::bail!("{}: no CUDA kernel for dtype {other:?}", $op),
        }
    };
}
pub(crate) use with_float_type;
