//! gridserve's model layer: loading (GGUF, safetensors), tokenizers, chat template, batched forward over
//! paged KV, and sampling. No HTTP and no power here.

pub mod arch;
pub mod backend;
pub mod chat;
pub mod cpu_backend;
pub mod device_backend;
mod error;
pub mod fused;
pub mod kv_cache;
pub mod linear;
mod load;
pub mod loader;
pub mod pool;
pub mod profile;
pub mod safetensors;
pub mod sampling;
pub mod stop;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokenizer;
pub mod tokenizer_bpe;

pub use backend::{
    BackendInfo, DeviceSampled, ModelBackend, SampleRow, SeqId, SeqStep, StepBatch, StepOutput,
};
/// The device type models load onto (`candle_core::Device`).
pub use candle_core::Device;
pub use cpu_backend::{CpuBackend, KvCacheOptions};
pub use device_backend::{DeviceArch, DeviceBackend};
pub use error::ModelError;
/// Device choice and probing (`--device`), from the kernels crate.
pub use gridserve_kernels::device;
pub use kv_cache::BlockAllocator;
pub use load::{load_gguf, load_model, load_model_on, load_safetensors, LoadedModel};
