//! Benchmarks that run inside the `gridserve` binary on the real model.

pub mod engine;
pub mod http;
pub mod peer;
pub mod serve;
mod sse;
