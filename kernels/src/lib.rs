//! gridserve's compute kernels: the CPU reference implementation of every op the model runs
//! outside a matmul (norms, RoPE, activations, paged attention).
//!
//! Each op works on plain `f32` slices so it is easy to test against a hand computation, and
//! so a CUDA launcher with the same signature can stand in for it behind the `cuda` feature.

pub mod cpu;
mod error;

pub use error::KernelError;
