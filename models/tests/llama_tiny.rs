//! Llama and Qwen2 on the CPU through the same engine seam as Gemma: tiny random-weight
//! models written as a Hugging Face safetensors checkpoint (BF16) and as a llama.cpp-style
//! GGUF, loaded by `load_model`, and checked against each other, against a dense forward
//! written with plain candle ops, and batched against one sequence at a time.

use candle_core::{Device, IndexOp, Tensor, D};
use gridserve_models::arch::llama::LlamaConfig;
use gridserve_models::loader::GgufFile;
use gridserve_models::safetensors::{llama_config, HfCheckpoint};
use gridserve_models::testing::llama::*;
use gridserve_models::{
    load_model, BlockAllocator, KvCacheOptions, LoadedModel, ModelBackend, SeqStep, StepBatch,
};
use gridserve_models::{DeviceArch, DeviceBackend};

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
