//! gridserve's compute kernels: the CPU implementation of every op the model runs outside a
//! matmul (norms, RoPE, activations, paged attention), each a vectorised fast path next to the
//! scalar `*_reference` it is tested against.
//!
//! Each CPU op works on plain `f32` slices so it is easy to test against a hand computation.
//! `ops` wraps every fused op as a candle op whose CPU half is that kernel and whose CUDA half
//! (behind the `cuda` feature) launches our PTX from `kernels/cuda/*.cu`; `device` picks and
//! probes devices without ever panicking on a machine with no GPU.

pub mod cpu;
pub mod device;
mod error;
#[cfg(feature = "cuda")]
mod gpu;
pub mod ops;

pub use error::KernelError;

/// The architecture our PTX was compiled for (`CUDA_COMPUTE_CAP` at build time).
#[cfg(feature = "cuda")]
pub const PTX_COMPUTE_CAP: u32 = gpu::ptx::COMPUTE_CAP;
