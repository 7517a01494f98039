//! Tiny random-weight Llama / Qwen2 models written to disk the way real ones ship: a Hugging
//! Face checkpoint (config.json, BF16 safetensors, tokenizer.json, tokenizer_config.json) and a
//! llama.cpp-style GGUF (q/k rows permuted, `gpt2` BPE vocabulary), for loader and server tests.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value as G};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::safetensors::hf_name;

pub const HIDDEN: usize = 64;
pub const FFN: usize = 96;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 16;
pub const VOCAB: usize = 264;
pub const EPS: f64 = 1e-5;
pub const ROPE_BASE: f64 = 10_000.0;

/// GPT-2's byte-to-character map, which byte-level BPE vocabularies are spelled in.
pub fn byte_chars() -> Vec<String> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut extra = 256;
    (0u32..256)
        .map(|b| {
            if printable.contains(&b) {
                char::from_u32(b).unwrap().to_string()
            } else {
                printable.push(b);
                extra += 1;
                char::from_u32(extra - 1).unwrap().to_string()
            }
        })
        .collect()
}

pub struct Vocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    /// Ids of `<|begin_of_text|>` and `<|eot_id|>`.
    pub bos: u32,
    pub eot: u32,
}

pub fn vocab() -> Vocab {
    let mut tokens = byte_chars();
    let merges: Vec<String> = ["h e", "Ġ t", "Ġt he"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(["he", "Ġt", "Ġthe"].map(String::from));
    tokens.extend(["<|begin_of_text|>", "<|eot_id|>"].map(String::from));
    let n = tokens.len() as u32;
    Vocab {
        tokens,
        merges,
        bos: n - 2,
        eot: n - 1,
    }
}

/// Seeded weights in Hugging Face layout and names, rounded to BF16 (what the checkpoint
/// stores), as f32.
pub fn weights(seed: u64, qkv_bias: bool, tied: bool) -> Vec<(String, Tensor)> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut t = |shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                offset + ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let s = 1.0 / (HIDDEN as f32).sqrt();
    let mut w = vec![
        (
            "model.embed_tokens.weight".to_string(),
            t(&[VOCAB, HIDDEN], 1.0, 0.0),
        ),
        ("model.norm.weight".to_string(), t(&[HIDDEN], 0.2, 1.0)),
    ];
    if !tied {
        w.push(("lm_head.weight".into(), t(&[VOCAB, HIDDEN], s, 0.0)));
    }
    for i in 0..LAYERS {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        w.push((p("input_layernorm.weight"), t(&[HIDDEN], 0.2, 1.0)));
        w.push((p("post_attention_layernorm.weight"), t(&[HIDDEN], 0.2, 1.0)));
        w.push((p("self_attn.q_proj.weight"), t(&[q, HIDDEN], s, 0.0)));
        w.push((p("self_attn.k_proj.weight"), t(&[kv, HIDDEN], s, 0.0)));
        w.push((p("self_attn.v_proj.weight"), t(&[kv, HIDDEN], s, 0.0)));
        if qkv_bias {
            w.push((p("self_attn.q_proj.bias"), t(&[q], 0.5, 0.0)));
            w.push((p("self_attn.k_proj.bias"), t(&[kv], 0.5, 0.0)));
            w.push((p("self_attn.v_proj.bias"), t(&[kv], 0.5, 0.0)));
        }
        w.push((
            p("self_attn.o_proj.weight"),
            t(&[HIDDEN, q], 1.0 / (q as f32).sqrt(), 0.0),
        ));
        w.push((p("mlp.gate_proj.weight"), t(&[FFN, HIDDEN], s, 0.0)));
        w.push((p("mlp.up_proj.weight"), t(&[FFN, HIDDEN], s, 0.0)));
        w.push((
            p("mlp.down_proj.weight"),
            t(&[HIDDEN, FFN], 1.0 / (FFN as f32).sqrt(), 0.0),
        ));
    }
    w
}

pub const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

pub fn write_checkpoint(dir: &Path, model_type: &str, w: &[(String, Tensor)], tied: bool) {
    let v = vocab();
    std::fs::write(
        dir.join("config.json"),
        json!({"model_type": model_type, "hidden_size": HIDDEN, "intermediate_size": FFN,
               "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
               "num_key_value_heads": KV_HEADS, "rms_norm_eps": EPS, "rope_theta": ROPE_BASE,
               "max_position_embeddings": 128, "tie_word_embeddings": tied,
               "eos_token_id": v.eot})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
               "add_bos_token": model_type == "llama", "chat_template": TEMPLATE})
        .to_string(),
    )
    .unwrap();
    let pre = if model_type == "llama" {
        "llama-bpe"
    } else {
        "qwen2"
    };
    let tk = crate::tokenizer_bpe::byte_level_json(&v.tokens, &v.merges, &[v.bos, v.eot], pre);
    std::fs::write(dir.join("tokenizer.json"), tk.to_string()).unwrap();
    let bf16: Vec<(String, Tensor)> = w
        .iter()
        .map(|(n, t)| (n.clone(), t.to_dtype(DType::BF16).unwrap()))
        .collect();
    let map: std::collections::HashMap<String, Tensor> = bf16.into_iter().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}

/// llama.cpp's q/k row order for `llama` files (see `unpermute_rows`).
pub fn permute(t: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = t.dims2().unwrap();
    t.reshape((heads, 2, rows / heads / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

pub fn gguf_name(hf: &str) -> String {
    // Invert `hf_name` over the names the tiny model has.
    let mut candidates = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".into(),
        "output.weight".into(),
    ];
    for i in 0..LAYERS {
        for part in [
            "attn_norm",
            "ffn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            for kind in ["weight", "bias"] {
                candidates.push(format!("blk.{i}.{part}.{kind}"));
            }
        }
    }
    candidates
        .into_iter()
        .find(|g| hf_name(g).as_deref() == Some(hf))
        .expect("known name")
}

pub fn write_gguf(path: &Path, arch: &str, w: &[(String, Tensor)]) {
    let v = vocab();
    let mut tensors = Vec::new();
    for (hf, t) in w {
        let name = gguf_name(hf);
        let t = match (arch, name.as_str()) {
            ("llama", n) if n.ends_with("attn_q.weight") => permute(t, HEADS),
            ("llama", n) if n.ends_with("attn_k.weight") => permute(t, KV_HEADS),
            _ => t.clone(),
        };
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let strs = |xs: &[String]| G::Array(xs.iter().map(|s| G::String(s.clone())).collect());
    let types: Vec<G> = (0..v.tokens.len())
        .map(|i| G::I32(if i as u32 >= v.bos { 3 } else { 1 }))
        .collect();
    let meta: Vec<(String, G)> = vec![
        ("general.architecture".into(), G::String(arch.into())),
        (k("embedding_length"), G::U32(HIDDEN as u32)),
        (k("feed_forward_length"), G::U32(FFN as u32)),
        (k("block_count"), G::U32(LAYERS as u32)),
        (k("attention.head_count"), G::U32(HEADS as u32)),
        (k("attention.head_count_kv"), G::U32(KV_HEADS as u32)),
        (k("attention.layer_norm_rms_epsilon"), G::F32(EPS as f32)),
        (k("rope.freq_base"), G::F32(ROPE_BASE as f32)),
        (k("context_length"), G::U32(128)),
        ("tokenizer.ggml.model".into(), G::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            G::String(
                if arch == "llama" {
                    "llama-bpe"
                } else {
                    "qwen2"
                }
                .into(),
            ),
        ),
        ("tokenizer.ggml.tokens".into(), strs(&v.tokens)),
        ("tokenizer.ggml.merges".into(), strs(&v.merges)),
        ("tokenizer.ggml.token_type".into(), G::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), G::U32(v.bos)),
        ("tokenizer.ggml.eos_token_id".into(), G::U32(v.eot)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            G::Bool(arch == "llama"),
        ),
        ("tokenizer.chat_template".into(), G::String(TEMPLATE.into())),
    ];
    let meta_refs: Vec<(&str, &G)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}
