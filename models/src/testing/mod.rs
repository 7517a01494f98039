//! Test support: a tiny Gemma 3 built in memory from seeded random weights, so model code runs
//! in every test without files (behind the `testing` feature).

pub mod llama;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::arch::gemma3::{Gemma3, Gemma3Config};
use crate::cpu_backend::{CpuBackend, KvCacheOptions};
use crate::loader::InMemoryWeights;
use crate::ModelError;

/// 2 layers of hidden 64 with Gemma 3's traits kept: GQA (4 query heads, 1 KV head), one local
/// layer with a 6-token window (so the window matters in short tests) and one global layer.
pub fn tiny_gemma3_config() -> Gemma3Config {
    Gemma3Config {
        hidden: 64,
        ffn_hidden: 128,
        layers: 2,
        heads: 4,
        kv_heads: 1,
        head_dim: 32,
        rms_eps: 1e-6,
        rope_base_global: 1_000_000.0,
        rope_base_local: 10_000.0,
        rope_scale_global: 1.0,
        sliding_window: 6,
        sliding_window_pattern: 2,
        max_seq_len: 256,
    }
}

pub const TINY_VOCAB: usize = 96;

/// The tiny model; the same seed gives the same model.
pub fn tiny_gemma3(seed: u64) -> Result<Gemma3, ModelError> {
    let mut w = tiny_gemma3_weights(seed)?;
    Gemma3::load(tiny_gemma3_config(), &mut w, &mut |_, _| {})
}

/// The tiny model's weights by GGUF name (to load into any backend).
pub fn tiny_gemma3_weights(seed: u64) -> Result<InMemoryWeights, ModelError> {
    let cfg = tiny_gemma3_config();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = InMemoryWeights::default();
    let (h, q, kv, f) = (
        cfg.hidden,
        cfg.heads * cfg.head_dim,
        cfg.kv_heads * cfg.head_dim,
        cfg.ffn_hidden,
    );
    w.tensors.insert(
        "token_embd.weight".into(),
        quantized(&mut rng, TINY_VOCAB, h, 1.0)?,
    );
    w.tensors
        .insert("output_norm.weight".into(), norm(&mut rng, h)?);
    for i in 0..cfg.layers {
        let mut put =
            |name: &str, t: QTensor| w.tensors.insert(format!("blk.{i}.{name}.weight"), t);
        put(
            "attn_q",
            quantized(&mut rng, q, h, 1.0 / (h as f32).sqrt())?,
        );
        put(
            "attn_k",
            quantized(&mut rng, kv, h, 1.0 / (h as f32).sqrt())?,
        );
        put(
            "attn_v",
            quantized(&mut rng, kv, h, 1.0 / (h as f32).sqrt())?,
        );
        put(
            "attn_output",
            quantized(&mut rng, h, q, 1.0 / (q as f32).sqrt())?,
        );
        put(
            "ffn_gate",
            quantized(&mut rng, f, h, 1.0 / (h as f32).sqrt())?,
        );
        put(
            "ffn_up",
            quantized(&mut rng, f, h, 1.0 / (h as f32).sqrt())?,
        );
        put(
            "ffn_down",
            quantized(&mut rng, h, f, 1.0 / (f as f32).sqrt())?,
        );
        for n in [
            "attn_norm",
            "post_attention_norm",
            "ffn_norm",
            "post_ffw_norm",
        ] {
            put(n, norm(&mut rng, h)?);
        }
        put("attn_q_norm", norm(&mut rng, cfg.head_dim)?);
        put("attn_k_norm", norm(&mut rng, cfg.head_dim)?);
    }
    Ok(w)
}

/// A KV cache of `num_blocks` blocks of 4 tokens for the tiny Gemma 3 (f32 K and V).
pub fn tiny_kv_options(num_blocks: usize) -> KvCacheOptions {
    let cfg = tiny_gemma3_config();
    let per_token = 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * 4;
    KvCacheOptions {
        block_size: 4,
        kv_cache_bytes: num_blocks * 4 * per_token,
        max_seq_len: None,
    }
}

/// The tiny model behind a CPU backend with a small KV cache of `num_blocks` blocks of 4.
pub fn tiny_backend(seed: u64, num_blocks: usize) -> Result<CpuBackend, ModelError> {
    let model = tiny_gemma3(seed)?;
    let opts = tiny_kv_options(num_blocks);
    CpuBackend::new(Box::new(model), "tiny-gemma3".into(), vec![1], &opts)
}

fn quantized(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    scale: f32,
) -> Result<QTensor, ModelError> {
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale * 1.7)
        .collect();
    let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu)?;
    Ok(QTensor::quantize(&t, GgmlDType::Q8_0)?)
}

fn norm(rng: &mut StdRng, n: usize) -> Result<QTensor, ModelError> {
    let data: Vec<f32> = (0..n).map(|_| 0.8 + 0.4 * rng.random::<f32>()).collect();
    let t = Tensor::from_vec(data, n, &Device::Cpu)?;
    Ok(QTensor::quantize(&t, GgmlDType::F32)?)
}

/// A backend with no model: the next token is always `(last token + 1) % vocab`, so tests of
/// the scheduler and the server know exactly what each sequence will produce. It still checks
/// batches like a real backend and records what every step held.
pub struct FakeBackend {
    info: crate::BackendInfo,
    /// Tokens per step, in order: what the scheduler actually asked for.
    pub steps: Vec<Vec<(crate::SeqId, usize)>>,
}

impl FakeBackend {
    pub fn new(
        vocab_size: usize,
        num_blocks: usize,
        block_size: usize,
        max_seq_len: usize,
    ) -> Self {
        Self {
            info: crate::BackendInfo {
                model_name: "fake".into(),
                block_size,
                num_blocks,
                max_seq_len,
                vocab_size,
                eos_token_ids: vec![0],
            },
            steps: Vec::new(),
        }
    }
}

impl crate::ModelBackend for FakeBackend {
    fn info(&self) -> &crate::BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &crate::StepBatch) -> Result<crate::StepOutput, ModelError> {
        crate::backend::validate_batch(&self.info, batch)?;
        self.steps
            .push(batch.seqs.iter().map(|s| (s.seq, s.tokens.len())).collect());
        let vocab = self.info.vocab_size;
        let rows = batch.seqs.iter().filter(|s| s.sample).map(|s| {
            let next = (*s.tokens.last().unwrap_or(&0) as usize + 1) % vocab;
            let mut row = vec![0f32; vocab];
            row[next] = 10.0;
            (s.seq, row)
        });
        crate::StepOutput::from_rows(vocab, rows)
    }
}
