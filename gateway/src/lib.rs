//! gridserve: a power-aware LLM inference server. This library holds everything the
//! `gridserve` binary runs, so tests drive the same code.

pub mod api;
pub mod bench;
pub mod config;
pub mod engine;
mod error;
pub mod grid;
pub mod metrics;
pub mod model;
pub mod power;
pub mod serve_power;
pub mod server;
pub mod sim;
pub mod twin;

pub use error::GatewayError;
