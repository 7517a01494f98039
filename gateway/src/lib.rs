//! gridserve: a power-aware LLM inference server. This library holds everything the
//! `gridserve` binary runs, so tests drive the same code.

pub mod bench;
pub mod config;
pub mod engine;
mod error;
pub mod model;

pub use error::GatewayError;
