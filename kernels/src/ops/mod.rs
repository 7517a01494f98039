//! The fused ops as candle ops: `cpu_fwd` runs the CPU reference (in f32, whatever the
//! tensor's dtype), `cuda_fwd` (behind `cuda`) launches our PTX from `kernels/cuda/`. A model
//! written against these runs unchanged on `Device::Cpu` and on `Device::Cuda`, and the CPU
//! run is the reference the GPU run is checked against.

mod attention;
mod norm;
mod rope;
mod sample;
mod swiglu;

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result};

pub use attention::{kv_cache_write, paged_attention, PagedAttention};
pub use norm::{fused_add_rms_norm, rms_norm, rms_norm_add};
pub use rope::rope_neox;
pub use sample::{sample, SampleParams, SAMPLE_PARAMS};
pub use swiglu::{gelu_tanh_mul, silu_mul};

/// A contiguous input as f32 (borrowed when it already is).
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<Cow<'a, [f32]>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{op}: inputs must be contiguous")
    };
    Ok(match s {
        CpuStorage::F32(v) => Cow::Borrowed(&v[start..end]),
        CpuStorage::F16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
        CpuStorage::BF16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
        other => bail!("{op}: unsupported dtype {:?}", other.dtype()),
    })
}

/// A contiguous u32 input (block tables, positions, slots).
pub(crate) fn cpu_u32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((start, end))) => Ok(&v[start..end]),
        (CpuStorage::U32(_), None) => bail!("{op}: index inputs must be contiguous"),
        (other, _) => bail!("{op}: index inputs must be u32, got {:?}", other.dtype()),
    }
}

/// f32 results stored in `dtype`.
pub(crate) fn cpu_store(v: Vec<f32>, dtype: DType, op: &str) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(v.into_iter().map(half::f16::from_f32).collect()),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
        other => bail!("{op}: unsupported dtype {other:?}"),
    })
}

/// Maps a kernel error (a shape mismatch caught before any work) into candle's error type.
pub(crate) fn kernel_err(e: crate::KernelError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// Checks that two inputs have the same dtype (the kernels take one storage type).
pub(crate) fn same_dtype(op: &str, a: DType, b: DType) -> Result<()> {
    if a != b {
        bail!("{op}: dtype mismatch, {a:?} and {b:?}")
    }
    Ok(())
}

#[cfg(test)]
mod tests;
