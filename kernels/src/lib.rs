//! gridserve's compute kernels: the CPU implementation of every op the model runs outside a
//! matmul (norms, RoPE, activations, paged attention), each a vectorised fast path next to the
//! scalar `*_reference` it is tested against.
//!
//! Each op works on plain `f32` slices so it is easy to test against a hand computation, and
//! so a CUDA launcher with the same signature can stand in for it behind the `cuda` feature.

pub mod cpu;
mod error;

pub use error::KernelError;
