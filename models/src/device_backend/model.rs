//! One transformer on a candle device, written with tensor ops and gridserve's fused ops
//! (`gridserve_kernels::ops`): Llama/Qwen2 and Gemma 3 differ only in the options of `Spec`.
//! On the CPU this runs the ops' CPU halves (and is checked against the slice-based CPU
//! models); on a GPU the same code launches our PTX and candle's CUDA matmuls.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use gridserve_kernels::ops;

use super::weights::{DeviceLinear, Reader};
use crate::arch::gemma3::Gemma3Config;
use crate::arch::llama::{unpermute_rows, LlamaConfig};
use crate::loader::WeightSource;
use crate::ModelError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Act {
    GeluTanh,
    Silu,
}

/// What distinguishes the architectures.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub max_seq_len: usize,
    /// Gemma multiplies the embedding by √hidden.
    pub embed_scale: Option<f32>,
    pub act: Act,
    /// RoPE inverse frequencies; each layer names one table.
    pub rope_tables: Vec<Vec<f64>>,
}

/// One layer; Gemma's extra norms are `Some`.
pub(super) struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: DeviceLinear,
    pub k: DeviceLinear,
    pub v: DeviceLinear,
    pub o: DeviceLinear,
    pub qk_norms: Option<(Tensor, Tensor)>,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate: DeviceLinear,
    pub up: DeviceLinear,
    pub down: DeviceLinear,
    pub post_ffn_norm: Option<Tensor>,
    pub window: Option<usize>,
    pub rope: usize,
}

pub(super) struct DeviceModel {
    pub spec: Spec,
    pub embed: QTensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor,
    pub lm_head: DeviceLinear,
    pub vocab_size: usize,
}

/// Per-step inputs every layer shares, already on the device.
pub(super) struct StepTensors {
    pub ids: Tensor,
    pub token_seq: Tensor,
    pub token_pos: Tensor,
    pub slots: Tensor,
    pub block_tables: Tensor,
    /// `(cos, sin)` per RoPE table, `[tokens, head_dim / 2]`.
    pub rope: Vec<(Tensor, Tensor)>,
    pub sample_rows: Tensor,
}

impl DeviceModel {
    pub fn llama(
        cfg: &LlamaConfig,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mut inv_freq = cfg.inv_freq();
        if let Ok(factors) = src.f32_vec("rope_freqs.weight") {
            inv_freq
                .iter_mut()
                .zip(factors)
                .for_each(|(f, d)| *f /= d as f64);
        }
        let spec = Spec {
            hidden: cfg.hidden,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            rms_eps: cfg.rms_eps,
            max_seq_len: cfg.max_seq_len,
            embed_scale: None,
            act: Act::Silu,
            rope_tables: vec![inv_freq],
        };
        let unpermute = cfg.unpermute_qk;
        let layers = (0..cfg.layers)
            .map(|i| {
                let mut r = Reader {
                    src: &mut *src,
                    device,
                };
                let fix = |heads: usize| {
                    move |t: QTensor| {
                        if unpermute {
                            unpermute_rows(t, heads)
                        } else {
                            Ok(t)
                        }
                    }
                };
                let p = |n: &str| format!("blk.{i}.{n}");
                Ok(LayerWeights {
                    attn_norm: r.vector(&p("attn_norm.weight"))?,
                    q: r.linear_with(&p("attn_q"), cfg.qkv_bias, fix(cfg.heads))?,
                    k: r.linear_with(&p("attn_k"), cfg.qkv_bias, fix(cfg.kv_heads))?,
                    v: r.linear(&p("attn_v"), cfg.qkv_bias)?,
                    o: r.linear(&p("attn_output"), false)?,
                    qk_norms: None,
                    post_attn_norm: None,
                    ffn_norm: r.vector(&p("ffn_norm.weight"))?,
                    gate: r.linear(&p("ffn_gate"), false)?,
                    up: r.linear(&p("ffn_up"), false)?,
                    down: r.linear(&p("ffn_down"), false)?,
                    post_ffn_norm: None,
                    window: None,
                    rope: 0,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Self::finish(spec, layers, src, device)
    }

    pub fn gemma3(
        cfg: &Gemma3Config,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let global: Vec<f64> =
            gridserve_kernels::cpu::rope_inv_freq(cfg.head_dim, cfg.rope_base_global)
                .into_iter()
                .map(|f| f / cfg.rope_scale_global)
                .collect();
        let spec = Spec {
            hidden: cfg.hidden,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            rms_eps: cfg.rms_eps,
            max_seq_len: cfg.max_seq_len,
            embed_scale: Some((cfg.hidden as f32).sqrt()),
            act: Act::GeluTanh,
            rope_tables: vec![
                gridserve_kernels::cpu::rope_inv_freq(cfg.head_dim, cfg.rope_base_local),
                global,
            ],
        };
        let layers = (0..cfg.layers)
            .map(|i| {
                let mut r = Reader {
                    src: &mut *src,
                    device,
                };
                let p = |n: &str| format!("blk.{i}.{n}");
                let global = cfg.is_global(i);
                Ok(LayerWeights {
                    attn_norm: r.vector(&p("attn_norm.weight"))?,
                    q: r.linear(&p("attn_q"), false)?,
                    k: r.linear(&p("attn_k"), false)?,
                    v: r.linear(&p("attn_v"), false)?,
                    o: r.linear(&p("attn_output"), false)?,
                    qk_norms: Some((
                        r.vector(&p("attn_q_norm.weight"))?,
                        r.vector(&p("attn_k_norm.weight"))?,
                    )),
                    post_attn_norm: Some(r.vector(&p("post_attention_norm.weight"))?),
                    ffn_norm: r.vector(&p("ffn_norm.weight"))?,
                    gate: r.linear(&p("ffn_gate"), false)?,
                    up: r.linear(&p("ffn_up"), false)?,
                    down: r.linear(&p("ffn_down"), false)?,
                    post_ffn_norm: Some(r.vector(&p("post_ffw_norm.weight"))?),
                    window: (!global).then_some(cfg.sliding_window),
                    rope: usize::from(global),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Self::finish(spec, layers, src, device)
    }

    fn finish(
        spec: Spec,
        layers: Vec<LayerWeights>,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let embed = src.tensor("token_embd.weight")?;
        let (vocab_size, width) = embed.shape().dims2()?;
        if width != spec.hidden {
            return Err(ModelError::Format(format!(
                "embedding width {width}, hidden size {}",
                spec.hidden
            )));
        }
        let final_norm = Reader {
            src: &mut *src,
            device,
        }
        .vector("output_norm.weight")?;
        let lm_head = match src.tensor("output.weight") {
            Ok(head) => DeviceLinear::new(head, None, device)?,
            // Tied: the head is the embedding table (a second device copy; the lookup below
            // reads the first).
            Err(_) => DeviceLinear::new(copy(&embed)?, None, device)?,
        };
        Ok(Self {
            embed: super::weights::to_device(embed, device)?,
            spec,
            layers,
            final_norm,
            lm_head,
            vocab_size,
        })
    }

    /// Logits `[sample rows, vocab]` (f32, on the device) for one step; `None` when no
    /// sequence samples (the layers still run, for the KV cache).
    pub fn forward(
        &self,
        s: &StepTensors,
        caches: &[(Tensor, Tensor)],
    ) -> Result<Option<Tensor>, ModelError> {
        let mut x = self.embed.embedding(&s.ids)?;
        if let Some(scale) = self.spec.embed_scale {
            x = (x * scale as f64)?;
        }
        for (layer, (kc, vc)) in self.layers.iter().zip(caches) {
            x = self.layer(layer, x, s, kc, vc)?;
        }
        if s.sample_rows.dim(0)? == 0 {
            return Ok(None);
        }
        let last = x.index_select(&s.sample_rows, 0)?;
        let normed = ops::rms_norm(&last, &self.final_norm, self.spec.rms_eps)?;
        Ok(Some(self.lm_head.forward(&normed)?))
    }

    fn layer(
        &self,
        l: &LayerWeights,
        x: Tensor,
        s: &StepTensors,
        kc: &Tensor,
        vc: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let sp = &self.spec;
        let tokens = x.dim(0)?;
        let eps = sp.rms_eps;
        let h = ops::rms_norm(&x, &l.attn_norm, eps)?;
        let mut q = l.q.forward(&h)?.reshape((tokens, sp.heads, sp.head_dim))?;
        let mut k =
            l.k.forward(&h)?
                .reshape((tokens, sp.kv_heads, sp.head_dim))?;
        let v =
            l.v.forward(&h)?
                .reshape((tokens, sp.kv_heads, sp.head_dim))?
                .contiguous()?;
        if let Some((qn, kn)) = &l.qk_norms {
            q = ops::rms_norm(&q.contiguous()?, qn, eps)?;
            k = ops::rms_norm(&k.contiguous()?, kn, eps)?;
        }
        let (cos, sin) = &s.rope[l.rope];
        let q = ops::rope_neox(&q.contiguous()?, cos, sin)?;
        let k = ops::rope_neox(&k.contiguous()?, cos, sin)?;
        ops::kv_cache_write(kc, &k, &s.slots)?;
        ops::kv_cache_write(vc, &v, &s.slots)?;
        let attn = ops::PagedAttention {
            k_cache: kc.clone(),
            v_cache: vc.clone(),
            block_tables: s.block_tables.clone(),
            token_seq: s.token_seq.clone(),
            token_pos: s.token_pos.clone(),
            scale: 1.0 / (sp.head_dim as f32).sqrt(),
            window: l.window,
        };
        let att = ops::paged_attention(&q, &attn)?.reshape((tokens, sp.heads * sp.head_dim))?;
        let o = l.o.forward(&att)?;
        let (x, h) = match &l.post_attn_norm {
            Some(post) => {
                let x = ops::rms_norm_add(&o, post, &x, eps)?;
                let h = ops::rms_norm(&x, &l.ffn_norm, eps)?;
                (x, h)
            }
            None => ops::fused_add_rms_norm(&o, &x, &l.ffn_norm, eps)?,
        };
        let (gate, up) = (l.gate.forward(&h)?, l.up.forward(&h)?);
        let a = match sp.act {
            Act::GeluTanh => ops::gelu_tanh_mul(&gate, &up)?,
            Act::Silu => ops::silu_mul(&gate, &up)?,
        };
        let d = l.down.forward(&a)?;
        Ok(match &l.post_ffn_norm {
            Some(post) => ops::rms_norm_add(&d, post, &x, eps)?,
            None => (x + d)?,
        })
    }
}

/// A second CPU copy of a quantized tensor (the tied head and the embedding lookup each own one).
fn copy(t: &QTensor) -> Result<QTensor, ModelError> {
    let storage = candle_core::quantized::QStorage::from_data(t.data()?, &Device::Cpu, t.dtype())?;
    Ok(QTensor::new(storage, t.shape().clone())?)
}
