//! Llama (2, 3.x) and Qwen2 / Qwen2.5: pre-norm blocks, SwiGLU MLP, NeoX RoPE (with Llama 3's
//! frequency scaling when the model has it), q/k/v biases (Qwen2), and an output head that is
//! its own tensor or tied to the embedding. Weights are read by GGUF names from any
//! `WeightSource` (a GGUF file, or safetensors renamed by `crate::safetensors`).

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Tensor};
use gridserve_kernels::cpu as k;

use super::attention::{attend, AttnShape};
use super::{token_slots, Architecture, Head, KvLayout, TokenSlot};
use crate::backend::{StepBatch, StepOutput};
use crate::fused::FusedLinear;
use crate::kv_cache::KvStorage;
use crate::linear::QLinear;
use crate::loader::WeightSource;
use crate::profile::{self, Stage};
use crate::ModelError;

/// Llama 3.1's RoPE frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub hidden: usize,
    pub ffn_hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_base: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_seq_len: usize,
    /// q/k/v projections carry biases (Qwen2).
    pub qkv_bias: bool,
    /// The q/k rows are in llama.cpp's interleaved-RoPE order (GGUF `llama` files), so they
    /// are put back in NeoX order at load.
    pub unpermute_qk: bool,
}

impl LlamaConfig {
    /// Reads `{arch}.*` metadata of a GGUF `llama` or `qwen2` file.
    pub fn from_gguf(g: &crate::loader::GgufFile, arch: &str) -> Result<Self, ModelError> {
        let key = |k: &str| format!("{arch}.{k}");
        let heads = g.meta_usize(&key("attention.head_count"))?;
        let hidden = g.meta_usize(&key("embedding_length"))?;
        Ok(Self {
            hidden,
            ffn_hidden: g.meta_usize(&key("feed_forward_length"))?,
            layers: g.meta_usize(&key("block_count"))?,
            heads,
            kv_heads: g
                .meta_usize(&key("attention.head_count_kv"))
                .unwrap_or(heads),
            head_dim: g
                .meta_usize(&key("attention.key_length"))
                .unwrap_or(hidden / heads.max(1)),
            rms_eps: g.meta_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: g.meta_f32(&key("rope.freq_base")).unwrap_or(10_000.0) as f64,
            // llama.cpp stores Llama 3's scaling as a `rope_freqs.weight` tensor instead.
            rope_scaling: None,
            max_seq_len: g.meta_usize(&key("context_length"))?,
            qkv_bias: arch == "qwen2",
            unpermute_qk: arch == "llama",
        })
    }

    /// RoPE inverse frequencies, Llama 3 scaling applied.
    pub fn inv_freq(&self) -> Vec<f64> {
        let base = k::rope_inv_freq(self.head_dim, self.rope_base);
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ModelError> {
        let ok = self.heads > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim.is_multiple_of(2)
            && self.head_dim > 0
            && self.layers > 0;
        if ok {
            Ok(())
        } else {
            Err(ModelError::Format(format!(
                "inconsistent Llama shape: {self:?}"
            )))
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    qkv: FusedLinear,
    /// q, k and v biases (Qwen2).
    qkv_bias: Option<[Vec<f32>; 3]>,
    o: QLinear,
    ffn_norm: Vec<f32>,
    gate_up: FusedLinear,
    down: QLinear,
}

pub struct Llama {
    cfg: LlamaConfig,
    embed: Arc<QTensor>,
    vocab_size: usize,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    lm_head: QLinear,
    inv_freq: Vec<f64>,
}

impl Llama {
    /// Loads weights by their GGUF names; `progress(done, total)` is called per layer.
    pub fn load(
        cfg: LlamaConfig,
        src: &mut dyn WeightSource,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        let embed = Arc::new(src.tensor("token_embd.weight")?);
        let (vocab_size, embed_dim) = embed.shape().dims2()?;
        if embed_dim != cfg.hidden {
            return Err(ModelError::Format(format!(
                "embedding width {embed_dim} does not match hidden size {}",
                cfg.hidden
            )));
        }
        let mut inv_freq = cfg.inv_freq();
        // llama.cpp's Llama 3 files carry the scaling as per-frequency divisors.
        if let Ok(factors) = src.f32_vec("rope_freqs.weight") {
            if factors.len() != inv_freq.len() {
                return Err(ModelError::Format(
                    "rope_freqs.weight has the wrong length".into(),
                ));
            }
            inv_freq
                .iter_mut()
                .zip(factors)
                .for_each(|(f, d)| *f /= d as f64);
        }
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            layers.push(load_layer(src, i, &cfg)?);
            progress(i + 1, cfg.layers);
        }
        let lm_head = match src.tensor("output.weight") {
            Ok(t) => QLinear::from_qtensor(t)?,
            Err(_) => QLinear::from_arc(embed.clone())?,
        }
        .profiled_as(Stage::OutputHead);
        let model = Self {
            final_norm: src.f32_vec("output_norm.weight")?,
            lm_head,
            embed,
            vocab_size,
            layers,
            inv_freq,
            cfg,
        };
        model.check_shapes()?;
        Ok(model)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn check_shapes(&self) -> Result<(), ModelError> {
        let c = &self.cfg;
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        for (i, l) in self.layers.iter().enumerate() {
            let (qkv, gu) = (l.qkv.dims(), l.gate_up.dims());
            let dims = [
                (qkv[0], (c.hidden, q_dim)),
                (qkv[1], (c.hidden, kv_dim)),
                (qkv[2], (c.hidden, kv_dim)),
                ((l.o.in_dim(), l.o.out_dim()), (q_dim, c.hidden)),
                (gu[0], (c.hidden, c.ffn_hidden)),
                (gu[1], (c.hidden, c.ffn_hidden)),
                (
                    (l.down.in_dim(), l.down.out_dim()),
                    (c.ffn_hidden, c.hidden),
                ),
            ];
            let bias_ok = l
                .qkv_bias
                .as_ref()
                .is_none_or(|[q, k, v]| q.len() == q_dim && k.len() == kv_dim && v.len() == kv_dim);
            let norms_ok = l.attn_norm.len() == c.hidden && l.ffn_norm.len() == c.hidden;
            if dims.iter().any(|(got, want)| got != want) || !bias_ok || !norms_ok {
                return Err(ModelError::Format(format!(
                    "layer {i}: tensor shapes do not match the config"
                )));
            }
        }
        if self.lm_head.in_dim() != c.hidden || self.final_norm.len() != c.hidden {
            return Err(ModelError::Format(
                "output head does not match the config".into(),
            ));
        }
        Ok(())
    }
}

fn load_layer(
    src: &mut dyn WeightSource,
    i: usize,
    cfg: &LlamaConfig,
) -> Result<Layer, ModelError> {
    let name = |t: &str, kind: &str| format!("blk.{i}.{t}.{kind}");
    let mut weight = |t: &str, heads: Option<usize>| -> Result<QLinear, ModelError> {
        let w = src.tensor(&name(t, "weight"))?;
        let w = match heads {
            Some(h) if cfg.unpermute_qk => unpermute_rows(w, h)?,
            _ => w,
        };
        QLinear::from_qtensor(w)
    };
    let qkv = FusedLinear::new(vec![
        weight("attn_q", Some(cfg.heads))?,
        weight("attn_k", Some(cfg.kv_heads))?,
        weight("attn_v", None)?,
    ])?;
    let o = weight("attn_output", None)?.pack()?;
    let gate_up = FusedLinear::new(vec![weight("ffn_gate", None)?, weight("ffn_up", None)?])?;
    let down = weight("ffn_down", None)?.pack()?;
    let qkv_bias = if cfg.qkv_bias {
        Some([
            src.f32_vec(&name("attn_q", "bias"))?,
            src.f32_vec(&name("attn_k", "bias"))?,
            src.f32_vec(&name("attn_v", "bias"))?,
        ])
    } else {
        None
    };
    Ok(Layer {
        attn_norm: src.f32_vec(&name("attn_norm", "weight"))?,
        ffn_norm: src.f32_vec(&name("ffn_norm", "weight"))?,
        qkv,
        qkv_bias,
        o,
        gate_up,
        down,
    })
}

/// Undoes llama.cpp's q/k row permutation (`convert_hf_to_gguf.py` interleaves each head's
/// two rotary halves so that its "normal" RoPE can pair adjacent values): row `2i + c` of a
/// head goes back to `c · head_dim/2 + i`. Rows are whole quantization blocks in every GGML
/// type, so this moves bytes and never requantizes.
pub fn unpermute_rows(t: QTensor, heads: usize) -> Result<QTensor, ModelError> {
    let (rows, cols) = t.shape().dims2()?;
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(ModelError::Format(format!(
            "cannot split {rows} rows into {heads} heads"
        )));
    }
    let data = t.data()?;
    let row_bytes = data.len() / rows;
    let (head_dim, half) = (rows / heads, rows / heads / 2);
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for c in 0..2 {
            for i in 0..half {
                let (dst, src) = (h * head_dim + c * half + i, h * head_dim + 2 * i + c);
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, t.dtype())?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

impl Architecture for Llama {
    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            layers: self.cfg.layers,
            kv_heads: self.cfg.kv_heads,
            head_dim: self.cfg.head_dim,
        }
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn max_seq_len(&self) -> usize {
        self.cfg.max_seq_len
    }

    fn forward(&self, batch: &StepBatch, kv: &mut KvStorage) -> Result<StepOutput, ModelError> {
        let (slots, sample_rows) = token_slots(batch);
        let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
        let rope = k::RopeTable::new(&self.inv_freq, &positions);
        let ids: Vec<u32> = batch
            .seqs
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let mut x = profile::time(Stage::Embedding, || -> Result<Vec<f32>, ModelError> {
            let ids = Tensor::from_vec(ids, batch.num_tokens(), &Device::Cpu)?;
            Ok(self
                .embed
                .embedding(&ids)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        })?;
        for (i, layer) in self.layers.iter().enumerate() {
            self.layer_forward(layer, i, &mut x, batch, &slots, &rope, kv)?;
        }
        let head = Head {
            final_norm: &self.final_norm,
            rms_eps: self.cfg.rms_eps,
            lm_head: &self.lm_head,
            vocab_size: self.vocab_size,
        };
        head.logits(&x, batch, &slots, &sample_rows)
    }
}

impl Llama {
    /// One pre-norm block for every token of the step.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        l: &Layer,
        layer_index: usize,
        x: &mut [f32],
        batch: &StepBatch,
        slots: &[TokenSlot],
        rope: &k::RopeTable,
        kv: &mut KvStorage,
    ) -> Result<(), ModelError> {
        let (c, n) = (&self.cfg, slots.len());
        let mut h = vec![0f32; x.len()];
        k::rms_norm_rows(x, &l.attn_norm, c.rms_eps, &mut h)?;
        let [mut q, mut kk, mut v]: [Vec<f32>; 3] =
            l.qkv.forward(&h, n)?.try_into().map_err(|_| {
                ModelError::Batch("q/k/v projection returned the wrong parts".into())
            })?;
        if let Some([bq, bk, bv]) = &l.qkv_bias {
            for (out, bias) in [(&mut q, bq), (&mut kk, bk), (&mut v, bv)] {
                out.chunks_exact_mut(bias.len())
                    .for_each(|row| row.iter_mut().zip(bias).for_each(|(a, b)| *a += b));
            }
        }
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        for (t, slot) in slots.iter().enumerate() {
            k::rope_neox_row(&mut q[t * q_dim..(t + 1) * q_dim], rope, t)?;
            k::rope_neox_row(&mut kk[t * kv_dim..(t + 1) * kv_dim], rope, t)?;
            let table = &batch.seqs[slot.seq_index].block_table;
            let span = t * kv_dim..(t + 1) * kv_dim;
            kv.store(layer_index, table, slot.pos, &kk[span.clone()], &v[span]);
        }
        let shape = AttnShape {
            heads: c.heads,
            head_dim: c.head_dim,
            window: None,
        };
        let att = profile::time(Stage::Attention, || {
            attend(&shape, &q, batch, slots, &kv.layer(layer_index))
        })?;
        let o = l.o.forward(&att, n)?;
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        k::rms_norm_rows(x, &l.ffn_norm, c.rms_eps, &mut h)?;
        let [mut gate, up]: [Vec<f32>; 2] =
            l.gate_up.forward(&h, n)?.try_into().map_err(|_| {
                ModelError::Batch("gate/up projection returned the wrong parts".into())
            })?;
        k::silu_mul(&mut gate, &up)?;
        let down = l.down.forward(&gate, n)?;
        x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        Ok(())
    }
}
