//! Model shapes: `config/models/NAME.toml` (layers, hidden size, parameters, weight and KV
//! bytes, default tensor parallelism), parsed raw and validated into `ModelShape`.

use std::path::Path;

use serde::Deserialize;

use super::checks::{bad, load_file, positive};
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShape {
    name: String,
    layers: u32,
    hidden_size: u32,
    params: f64,
    weight_bytes: f64,
    kv_bytes_per_token: f64,
    tensor_parallel: u32,
}

/// The sizes of a transformer that the step model needs (nothing about its values).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub name: String,
    pub layers: u32,
    pub hidden_size: u32,
    /// Parameters that every token multiplies (≈ 2 FLOPs each per token).
    pub params: f64,
    /// Bytes of weights read once per step (all GPUs together).
    pub weight_bytes: f64,
    /// K and V bytes per token of context, all layers and KV heads (all GPUs together).
    pub kv_bytes_per_token: f64,
    /// How many GPUs the model is split over by default.
    pub tensor_parallel: u32,
}

impl ModelShape {
    /// Loads `dir/NAME.toml` (the CLI passes `config/models`).
    pub fn load_named(dir: &Path, name: &str) -> Result<Self, GatewayError> {
        Self::load(&dir.join(format!("{name}.toml")))
    }

    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        load_file(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, GatewayError> {
        let raw: RawShape =
            toml::from_str(text).map_err(|e| GatewayError::Config(format!("model shape: {e}")))?;
        if raw.layers == 0 || raw.hidden_size == 0 || raw.tensor_parallel == 0 {
            return Err(bad("layers/hidden_size/tensor_parallel", "must be > 0"));
        }
        positive("params", raw.params)?;
        positive("weight_bytes", raw.weight_bytes)?;
        positive("kv_bytes_per_token", raw.kv_bytes_per_token)?;
        Ok(Self {
            name: raw.name,
            layers: raw.layers,
            hidden_size: raw.hidden_size,
            params: raw.params,
            weight_bytes: raw.weight_bytes,
            kv_bytes_per_token: raw.kv_bytes_per_token,
            tensor_parallel: raw.tensor_parallel,
        })
    }
}
