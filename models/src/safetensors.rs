//! Hugging Face checkpoints: a directory with `config.json`, `*.safetensors` shards,
//! `tokenizer.json` and `tokenizer_config.json`. Tensors are served under their GGUF names, so
//! one loader per architecture reads both formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::arch::llama::{Llama3RopeScaling, LlamaConfig};
use crate::loader::WeightSource;
use crate::ModelError;

/// An opened checkpoint directory: its JSON files parsed, its tensors loaded (as stored).
pub struct HfCheckpoint {
    pub dir: PathBuf,
    pub config: Value,
    pub tokenizer_config: Value,
    pub weights: SafetensorsWeights,
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format(format!("{}: {e}", path.display())))
}

impl HfCheckpoint {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let config = read_json(&dir.join("config.json"))?;
        let tokenizer_config = match dir.join("tokenizer_config.json") {
            p if p.exists() => read_json(&p)?,
            _ => Value::Null,
        };
        let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| ModelError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(ModelError::Format(format!(
                "{}: no *.safetensors files",
                dir.display()
            )));
        }
        let mut tensors = HashMap::new();
        for shard in &shards {
            let loaded = candle_core::safetensors::load(shard, &Device::Cpu)
                .map_err(|e| ModelError::Format(format!("{}: {e}", shard.display())))?;
            tensors.extend(loaded);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer_config,
            weights: SafetensorsWeights { tensors },
        })
    }

    /// `model_type` of config.json (`llama`, `qwen2`, ...).
    pub fn model_type(&self) -> &str {
        self.config["model_type"].as_str().unwrap_or("")
    }

    /// The chat template of tokenizer_config.json, if it has one.
    pub fn chat_template(&self) -> Option<String> {
        self.tokenizer_config["chat_template"]
            .as_str()
            .map(str::to_string)
    }
}

/// Safetensors tensors by their Hugging Face names.
pub struct SafetensorsWeights {
    pub tensors: HashMap<String, Tensor>,
}

impl WeightSource for SafetensorsWeights {
    /// The tensor GGUF calls `name`, as f32 (BF16 and F16 widen exactly, so the model computes
    /// with the checkpoint's own values).
    fn tensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        let hf = hf_name(name).ok_or_else(|| ModelError::Format(format!("no tensor `{name}`")))?;
        let t = self
            .tensors
            .remove(&hf)
            .ok_or_else(|| ModelError::Format(format!("missing tensor `{hf}`")))?;
        let t = t.to_dtype(DType::F32)?;
        Ok(QTensor::quantize(&t, GgmlDType::F32)?)
    }
}

/// The Hugging Face name of a GGUF tensor name (Llama / Qwen2 layout).
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

fn field(v: &Value, key: &str) -> Result<usize, ModelError> {
    v[key]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| ModelError::Format(format!("config.json: missing integer `{key}`")))
}

/// A Llama / Qwen2 config from config.json.
pub fn llama_config(v: &Value) -> Result<LlamaConfig, ModelError> {
    let (hidden, heads) = (field(v, "hidden_size")?, field(v, "num_attention_heads")?);
    let model_type = v["model_type"].as_str().unwrap_or("");
    if v["use_sliding_window"].as_bool() == Some(true) {
        return Err(ModelError::Format(
            "config.json: use_sliding_window is not supported for this architecture".into(),
        ));
    }
    let rope_scaling = match &v["rope_scaling"] {
        Value::Null => None,
        s if s["rope_type"].as_str() == Some("llama3") => {
            let f = |k: &str| {
                s[k].as_f64()
                    .ok_or_else(|| ModelError::Format(format!("config.json: rope_scaling.{k}")))
            };
            Some(Llama3RopeScaling {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_max_position_embeddings: f("original_max_position_embeddings")?,
            })
        }
        other => {
            return Err(ModelError::Format(format!(
                "config.json: rope_scaling {other} is not supported"
            )))
        }
    };
    Ok(LlamaConfig {
        hidden,
        ffn_hidden: field(v, "intermediate_size")?,
        layers: field(v, "num_hidden_layers")?,
        heads,
        kv_heads: field(v, "num_key_value_heads").unwrap_or(heads),
        head_dim: field(v, "head_dim").unwrap_or(hidden / heads.max(1)),
        rms_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
        rope_base: v["rope_theta"].as_f64().unwrap_or(10_000.0),
        rope_scaling,
        max_seq_len: field(v, "max_position_embeddings")?,
        qkv_bias: model_type == "qwen2" || v["attention_bias"].as_bool() == Some(true),
        unpermute_qk: false,
    })
}
