//! Llama and Qwen2 on the CPU through the same engine seam as Gemma: tiny random-weight
//! models written as a Hugging Face safetensors checkpoint (BF16) and as a llama.cpp-style
//! GGUF, loaded by `load_model`, and checked against each other, against a dense forward
//! written with plain candle ops, and batched against one sequence at a time.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value as G};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use gridserve_models::arch::llama::LlamaConfig;
use gridserve_models::loader::GgufFile;
use gridserve_models::safetensors::hf_name;
use gridserve_models::safetensors::{llama_config, HfCheckpoint};
use gridserve_models::{
    load_model, BlockAllocator, KvCacheOptions, LoadedModel, ModelBackend, SeqStep, StepBatch,
};
use gridserve_models::{DeviceArch, DeviceBackend};
use serde_json::json;

const HIDDEN: usize = 64;
const FFN: usize = 96;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const VOCAB: usize = 264;
const EPS: f64 = 1e-5;
const ROPE_BASE: f64 = 10_000.0;

/// GPT-2's byte-to-character map, which byte-level BPE vocabularies are spelled in.
fn byte_chars() -> Vec<String> {
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

struct Vocab {
    tokens: Vec<String>,
    merges: Vec<String>,
    /// Ids of `<|begin_of_text|>` and `<|eot_id|>`.
    bos: u32,
    eot: u32,
}

fn vocab() -> Vocab {
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
fn weights(seed: u64, qkv_bias: bool, tied: bool) -> Vec<(String, Tensor)> {
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

const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

fn write_checkpoint(dir: &Path, model_type: &str, w: &[(String, Tensor)], tied: bool) {
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
    let tk = gridserve_models::tokenizer_bpe::byte_level_json(
        &v.tokens,
        &v.merges,
        &[v.bos, v.eot],
        pre,
    );
    std::fs::write(dir.join("tokenizer.json"), tk.to_string()).unwrap();
    let bf16: Vec<(String, Tensor)> = w
        .iter()
        .map(|(n, t)| (n.clone(), t.to_dtype(DType::BF16).unwrap()))
        .collect();
    let map: std::collections::HashMap<String, Tensor> = bf16.into_iter().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}

/// llama.cpp's q/k row order for `llama` files (see `unpermute_rows`).
fn permute(t: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = t.dims2().unwrap();
    t.reshape((heads, 2, rows / heads / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn gguf_name(hf: &str) -> String {
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

fn write_gguf(path: &Path, arch: &str, w: &[(String, Tensor)]) {
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

fn kv() -> KvCacheOptions {
    KvCacheOptions {
        block_size: 4,
        kv_cache_bytes: 1 << 20,
        max_seq_len: None,
    }
}

/// Last-token logits of each sequence after running `chunks` steps: each step gives every
/// sequence its next slice of tokens (so steps mix prefill and decode-sized pieces).
fn run(m: &mut LoadedModel, seqs: &[Vec<u32>], chunk: usize) -> Vec<Vec<f32>> {
    run_on(m.backend.as_mut(), seqs, chunk)
}

fn run_on(backend: &mut dyn ModelBackend, seqs: &[Vec<u32>], chunk: usize) -> Vec<Vec<f32>> {
    let info = backend.info().clone();
    let mut alloc = BlockAllocator::new(info.num_blocks, info.block_size);
    let mut tables: Vec<Vec<u32>> = vec![Vec::new(); seqs.len()];
    let mut done = vec![0usize; seqs.len()];
    let mut last = vec![Vec::new(); seqs.len()];
    while done.iter().zip(seqs).any(|(d, s)| d < &s.len()) {
        let mut batch = StepBatch::default();
        for (i, s) in seqs.iter().enumerate() {
            if done[i] == s.len() {
                continue;
            }
            let end = (done[i] + chunk).min(s.len());
            alloc.grow(&mut tables[i], end).unwrap();
            batch.seqs.push(SeqStep {
                seq: i as u64,
                tokens: s[done[i]..end].to_vec(),
                start_pos: done[i],
                block_table: tables[i].clone(),
                sample: end == s.len(),
            });
            done[i] = end;
        }
        for (seq, row) in backend.step(&batch).unwrap().rows() {
            last[seq as usize] = row.to_vec();
        }
    }
    last
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The textbook forward with candle ops on the HF-layout weights: dense causal attention
/// over the whole sequence, no cache.
fn dense_forward(w: &[(String, Tensor)], ids: &[u32], tied: bool) -> Vec<f32> {
    let get = |n: &str| w.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone());
    let g = |n: &str| get(n).unwrap_or_else(|| panic!("{n}"));
    let norm = |x: &Tensor, wt: &Tensor| {
        let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        x.broadcast_div(&(ms + EPS).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(wt)
            .unwrap()
    };
    let lin = |x: &Tensor, n: &str| {
        let y = x.matmul(&g(&format!("{n}.weight")).t().unwrap()).unwrap();
        match get(&format!("{n}.bias")) {
            Some(b) => y.broadcast_add(&b).unwrap(),
            None => y,
        }
    };
    let t = ids.len();
    let idx = Tensor::new(ids, &Device::Cpu).unwrap();
    let mut x = g("model.embed_tokens.weight")
        .index_select(&idx, 0)
        .unwrap();
    let half = HEAD_DIM / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| ROPE_BASE.powf(-(2.0 * i as f64) / HEAD_DIM as f64) as f32)
        .collect();
    let ang: Vec<f32> = (0..t)
        .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
        .collect();
    let ang = Tensor::from_vec(ang, (t, 1, half), &Device::Cpu).unwrap();
    let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
    let rope = |x: &Tensor, heads: usize| {
        let x = x.reshape((t, heads, HEAD_DIM)).unwrap();
        let (a, b) = (
            x.narrow(2, 0, half).unwrap(),
            x.narrow(2, half, half).unwrap(),
        );
        let lo = (a.broadcast_mul(&cos).unwrap() - b.broadcast_mul(&sin).unwrap()).unwrap();
        let hi = (b.broadcast_mul(&cos).unwrap() + a.broadcast_mul(&sin).unwrap()).unwrap();
        Tensor::cat(&[lo, hi], 2).unwrap()
    };
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    for i in 0..LAYERS {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let h = norm(&x, &g(&p("input_layernorm.weight")));
        let q = rope(&lin(&h, &p("self_attn.q_proj")), HEADS);
        let k = rope(&lin(&h, &p("self_attn.k_proj")), KV_HEADS);
        let v = lin(&h, &p("self_attn.v_proj"))
            .reshape((t, KV_HEADS, HEAD_DIM))
            .unwrap();
        let mut heads = Vec::new();
        for hd in 0..HEADS {
            let kvh = hd / (HEADS / KV_HEADS);
            let s = (q
                .i((.., hd))
                .unwrap()
                .matmul(&k.i((.., kvh)).unwrap().t().unwrap())
                .unwrap()
                / (HEAD_DIM as f64).sqrt())
            .unwrap();
            let s = (s + &mask).unwrap();
            let e = s
                .broadcast_sub(&s.max_keepdim(1).unwrap())
                .unwrap()
                .exp()
                .unwrap();
            let pr = e.broadcast_div(&e.sum_keepdim(1).unwrap()).unwrap();
            heads.push(pr.matmul(&v.i((.., kvh)).unwrap()).unwrap());
        }
        let att = Tensor::cat(&heads, 1).unwrap();
        x = (x + lin(&att, &p("self_attn.o_proj"))).unwrap();
        let h = norm(&x, &g(&p("post_attention_layernorm.weight")));
        let act =
            (lin(&h, &p("mlp.gate_proj")).silu().unwrap() * lin(&h, &p("mlp.up_proj"))).unwrap();
        x = (x + lin(&act, &p("mlp.down_proj"))).unwrap();
    }
    let last = norm(
        &x.i(t - 1).unwrap().unsqueeze(0).unwrap(),
        &g("model.norm.weight"),
    );
    let head = if tied {
        g("model.embed_tokens.weight")
    } else {
        g("lm_head.weight")
    };
    last.matmul(&head.t().unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn both_formats(
    model_type: &str,
    tied: bool,
) -> (
    tempfile::TempDir,
    LoadedModel,
    LoadedModel,
    Vec<(String, Tensor)>,
) {
    let w = weights(7, model_type == "qwen2", tied);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    write_checkpoint(&ckpt, model_type, &w, tied);
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&gguf, model_type, &w);
    let from_st = load_model(&ckpt, &kv(), &mut |_, _| {}).unwrap();
    let from_gguf = load_model(&gguf, &kv(), &mut |_, _| {}).unwrap();
    (dir, from_st, from_gguf, w)
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![3, 70, 71, 100, 257, 5],
        (10..19).collect(),
        vec![200, 201, 258],
    ]
}

#[test]
fn both_formats_match_the_dense_reference_for_llama_and_qwen2() {
    for (model_type, tied) in [("llama", false), ("qwen2", true)] {
        let (_dir, mut st, mut gg, w) = both_formats(model_type, tied);
        let seqs = prompts();
        let (a, b) = (run(&mut st, &seqs, 64), run(&mut gg, &seqs, 64));
        for (i, s) in seqs.iter().enumerate() {
            let want = dense_forward(&w, s, tied);
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                max_diff(&a[i], &want) < 1e-4 * scale.max(1.0),
                "{model_type} safetensors seq {i}"
            );
            assert!(
                max_diff(&b[i], &want) < 1e-4 * scale.max(1.0),
                "{model_type} gguf seq {i}"
            );
        }
    }
}

#[test]
fn a_batch_of_mixed_chunks_equals_each_sequence_alone() {
    let (_dir, mut st, _, _) = both_formats("qwen2", true);
    let seqs = prompts();
    let batched = run(&mut st, &seqs, 2);
    for (i, s) in seqs.iter().enumerate() {
        let alone = run(&mut st, std::slice::from_ref(s), 64);
        assert!(max_diff(&batched[i], &alone[0]) < 1e-4, "seq {i}");
    }
}

#[test]
fn tokenizers_templates_and_stops_agree_across_formats() {
    for model_type in ["llama", "qwen2"] {
        let (_dir, st, gg, _) = both_formats(model_type, false);
        let text = "the hat<|eot_id|> then";
        let enc = |m: &LoadedModel| m.tokenizer.encode(text, m.tokenizer.add_bos()).unwrap();
        let (a, b) = (enc(&st), enc(&gg));
        assert_eq!(a, b, "{model_type}");
        let v = vocab();
        assert!(
            a.contains(&v.eot),
            "the special token is matched whole: {a:?}"
        );
        assert!(a.contains(&(v.tokens.iter().position(|t| t == "Ġthe").unwrap() as u32)));
        assert_eq!(
            a[0] == v.bos,
            model_type == "llama",
            "BOS only where add_bos_token says"
        );
        assert_eq!(
            st.tokenizer.decode(&a, true).unwrap(),
            gg.tokenizer.decode(&b, true).unwrap()
        );
        assert_eq!(st.tokenizer.decode(&a, true).unwrap(), "the hat then");
        assert_eq!(st.chat_template.as_deref(), Some(TEMPLATE));
        assert_eq!(gg.chat_template.as_deref(), Some(TEMPLATE));
        assert!(st.backend.info().eos_token_ids.contains(&v.eot));
        assert!(gg.backend.info().eos_token_ids.contains(&v.eot));
    }
}

#[test]
fn broken_checkpoints_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_model(dir.path(), &kv(), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    let w = weights(1, false, false);
    write_checkpoint(dir.path(), "mistral3", &w, false);
    let err = load_model(dir.path(), &kv(), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unsupported model architecture `mistral3`"),
        "{err}"
    );
    // A checkpoint missing a layer's weight names the tensor.
    let partial: Vec<(String, Tensor)> = w
        .into_iter()
        .filter(|(n, _)| !n.contains("layers.1.mlp.up_proj"))
        .collect();
    write_checkpoint(dir.path(), "llama", &partial, false);
    let err = load_model(dir.path(), &kv(), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
}

#[test]
fn the_device_backend_runs_both_formats_like_the_dense_reference() {
    for (model_type, tied) in [("llama", false), ("qwen2", true)] {
        let (dir, _, _, w) = both_formats(model_type, tied);
        let mut file = GgufFile::open(&dir.path().join("tiny.gguf")).unwrap();
        let cfg = LlamaConfig::from_gguf(&file, model_type).unwrap();
        let mut from_gguf = DeviceBackend::load(
            DeviceArch::Llama(&cfg),
            &mut file,
            &Device::Cpu,
            "t".into(),
            vec![0],
            &kv(),
        )
        .unwrap();
        let mut ckpt = HfCheckpoint::open(&dir.path().join("ckpt")).unwrap();
        let cfg = llama_config(&ckpt.config).unwrap();
        let mut from_st = DeviceBackend::load(
            DeviceArch::Llama(&cfg),
            &mut ckpt.weights,
            &Device::Cpu,
            "t".into(),
            vec![0],
            &kv(),
        )
        .unwrap();
        let seqs = prompts();
        for backend in [&mut from_gguf, &mut from_st] {
            let got = run_on(backend, &seqs, 2);
            for (i, s) in seqs.iter().enumerate() {
                let want = dense_forward(&w, s, tied);
                let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
                assert!(
                    max_diff(&got[i], &want) < 1e-4 * scale,
                    "{model_type} seq {i}"
                );
            }
        }
    }
}
