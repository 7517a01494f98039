//! Gemma 3 (text): GELU-tanh GeGLU MLP, q/k RMS norms, pre- and post-norms around attention
//! and MLP, sliding-window attention on 5 of every 6 layers with their own RoPE base, and an
//! output head tied to the embedding.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::Tensor;
use gridserve_kernels::cpu as k;

use super::attention::{attend, AttnShape};
use super::{token_slots, Architecture, Head, KvLayout, TokenSlot};
use crate::backend::{StepBatch, StepOutput};
use crate::fused::FusedLinear;
use crate::kv_cache::KvStorage;
use crate::linear::QLinear;
use crate::loader::{GgufFile, WeightSource};
use crate::profile::{self, Stage};
use crate::ModelError;

/// Hyper-parameters. Fields the GGUF does not carry default to Gemma 3's published values.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3Config {
    pub hidden: usize,
    pub ffn_hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_base_global: f64,
    pub rope_base_local: f64,
    /// Linear RoPE scaling of global layers (the larger Gemma 3 models use 8).
    pub rope_scale_global: f64,
    pub sliding_window: usize,
    /// Every `sliding_window_pattern`-th layer is global; the others are local.
    pub sliding_window_pattern: usize,
    pub max_seq_len: usize,
}

impl Gemma3Config {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let key = |k: &str| format!("gemma3.{k}");
        let heads = g.meta_usize(&key("attention.head_count"))?;
        let hidden = g.meta_usize(&key("embedding_length"))?;
        let head_dim = match g.meta_usize(&key("attention.key_length")) {
            Ok(d) => d,
            Err(_) => hidden / heads,
        };
        let rope_scale_global = match g.meta_f32(&key("rope.scaling.factor")) {
            Ok(f) if f > 0.0 => f as f64,
            _ => 1.0,
        };
        Ok(Self {
            hidden,
            ffn_hidden: g.meta_usize(&key("feed_forward_length"))?,
            layers: g.meta_usize(&key("block_count"))?,
            heads,
            kv_heads: g.meta_usize(&key("attention.head_count_kv"))?,
            head_dim,
            rms_eps: g.meta_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base_global: g.meta_f32(&key("rope.freq_base")).unwrap_or(1_000_000.0) as f64,
            rope_base_local: 10_000.0,
            rope_scale_global,
            sliding_window: g
                .meta_usize(&key("attention.sliding_window"))
                .unwrap_or(512),
            sliding_window_pattern: 6,
            max_seq_len: g.meta_usize(&key("context_length"))?,
        })
    }

    pub fn is_global(&self, layer: usize) -> bool {
        (layer + 1).is_multiple_of(self.sliding_window_pattern)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let ok = self.heads > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim.is_multiple_of(2)
            && self.sliding_window > 0
            && self.sliding_window_pattern > 0;
        if ok {
            Ok(())
        } else {
            Err(ModelError::Format(format!(
                "inconsistent Gemma 3 shape: {self:?}"
            )))
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v projections.
    qkv: FusedLinear,
    o: QLinear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// gate and up projections.
    gate_up: FusedLinear,
    down: QLinear,
    post_ffn_norm: Vec<f32>,
    /// `None` on global layers (which also take the global RoPE table).
    window: Option<usize>,
}

pub struct Gemma3 {
    cfg: Gemma3Config,
    /// The embedding table, unless the output head (the same tensor) holds it packed: the
    /// lookup then reads rows from there and the GGUF copy (178 MB here) is dropped.
    embed: Option<Arc<QTensor>>,
    vocab_size: usize,
    embed_scale: f32,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    lm_head: QLinear,
    /// RoPE inverse frequencies of the local and the global layers.
    inv_freq_local: Vec<f64>,
    inv_freq_global: Vec<f64>,
}

/// What every layer of one step shares: the batch, where each token sits, and the cos/sin of
/// each token's position for the local and the global layers (computed once per step).
struct Step<'a> {
    batch: &'a StepBatch,
    slots: Vec<TokenSlot>,
    rope_local: k::RopeTable,
    rope_global: k::RopeTable,
}

impl Step<'_> {
    fn rope(&self, layer: &Layer) -> &k::RopeTable {
        match layer.window {
            Some(_) => &self.rope_local,
            None => &self.rope_global,
        }
    }
}

impl Gemma3 {
    /// Loads weights by their GGUF names; `progress(done, total)` is called per layer.
    pub fn load(
        cfg: Gemma3Config,
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
        let inv_freq_local = k::rope_inv_freq(cfg.head_dim, cfg.rope_base_local);
        let inv_freq_global: Vec<f64> = k::rope_inv_freq(cfg.head_dim, cfg.rope_base_global)
            .into_iter()
            .map(|f| f / cfg.rope_scale_global)
            .collect();
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let window = (!cfg.is_global(i)).then_some(cfg.sliding_window);
            layers.push(load_layer(src, i, window)?);
            progress(i + 1, cfg.layers);
        }
        let lm_head = QLinear::from_arc(embed.clone())?.profiled_as(Stage::OutputHead);
        let mut probe = vec![0f32; cfg.hidden];
        let embed = match lm_head.packed_row(0, &mut probe) {
            Some(Ok(())) => None,
            _ => Some(embed),
        };
        let layer = Self {
            embed_scale: (cfg.hidden as f32).sqrt(),
            final_norm: src.f32_vec("output_norm.weight")?,
            lm_head,
            cfg,
            embed,
            vocab_size,
            layers,
            inv_freq_local,
            inv_freq_global,
        };
        layer.check_shapes()?;
        Ok(layer)
    }

    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    /// Catches a file whose tensors disagree with its metadata at load, not mid-request.
    fn check_shapes(&self) -> Result<(), ModelError> {
        let c = &self.cfg;
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        for (i, l) in self.layers.iter().enumerate() {
            let (qkv, gu) = (l.qkv.dims(), l.gate_up.dims());
            let dims = [
                (qkv[0].0, qkv[0].1, c.hidden, q_dim),
                (qkv[1].0, qkv[1].1, c.hidden, kv_dim),
                (qkv[2].0, qkv[2].1, c.hidden, kv_dim),
                (l.o.in_dim(), l.o.out_dim(), q_dim, c.hidden),
                (gu[0].0, gu[0].1, c.hidden, c.ffn_hidden),
                (gu[1].0, gu[1].1, c.hidden, c.ffn_hidden),
                (l.down.in_dim(), l.down.out_dim(), c.ffn_hidden, c.hidden),
            ];
            let norms_ok = l.q_norm.len() == c.head_dim
                && l.k_norm.len() == c.head_dim
                && [
                    &l.attn_norm,
                    &l.post_attn_norm,
                    &l.ffn_norm,
                    &l.post_ffn_norm,
                ]
                .iter()
                .all(|n| n.len() == c.hidden);
            if dims.iter().any(|&(i0, o0, i1, o1)| i0 != i1 || o0 != o1) || !norms_ok {
                return Err(ModelError::Format(format!(
                    "layer {i}: tensor shapes do not match the config"
                )));
            }
        }
        Ok(())
    }

    fn embed_tokens(&self, batch: &StepBatch) -> Result<Vec<f32>, ModelError> {
        let ids: Vec<u32> = batch
            .seqs
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let hidden = self.cfg.hidden;
        let mut x = match &self.embed {
            Some(embed) => {
                let ids = Tensor::from_vec(ids, batch.num_tokens(), &candle_core::Device::Cpu)?;
                embed.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?
            }
            None => {
                let mut x = vec![0f32; ids.len() * hidden];
                for (&id, row) in ids.iter().zip(x.chunks_exact_mut(hidden)) {
                    self.lm_head
                        .packed_row(id as usize, row)
                        .unwrap_or_else(|| Err(ModelError::Batch("embedding not packed".into())))?;
                }
                x
            }
        };
        x.iter_mut().for_each(|v| *v *= self.embed_scale);
        Ok(x)
    }
}

fn load_layer(
    src: &mut dyn WeightSource,
    i: usize,
    window: Option<usize>,
) -> Result<Layer, ModelError> {
    let name = |t: &str| format!("blk.{i}.{t}.weight");
    let mut lin = |t: &str| QLinear::from_qtensor(src.tensor(&name(t))?);
    let qkv = FusedLinear::new(vec![lin("attn_q")?, lin("attn_k")?, lin("attn_v")?])?;
    let o = lin("attn_output")?.pack()?;
    let gate_up = FusedLinear::new(vec![lin("ffn_gate")?, lin("ffn_up")?])?;
    let down = lin("ffn_down")?.pack()?;
    let mut norm = |t: &str| src.f32_vec(&name(t));
    Ok(Layer {
        attn_norm: norm("attn_norm")?,
        q_norm: norm("attn_q_norm")?,
        k_norm: norm("attn_k_norm")?,
        post_attn_norm: norm("post_attention_norm")?,
        ffn_norm: norm("ffn_norm")?,
        post_ffn_norm: norm("post_ffw_norm")?,
        qkv,
        o,
        gate_up,
        down,
        window,
    })
}

impl Architecture for Gemma3 {
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
        let step = profile::time(Stage::Elementwise, || self.step(batch, slots));
        let mut x = profile::time(Stage::Embedding, || self.embed_tokens(batch))?;
        for (i, layer) in self.layers.iter().enumerate() {
            self.layer_forward(layer, i, &mut x, &step, kv)?;
        }
        let slots = step.slots;
        let head = Head {
            final_norm: &self.final_norm,
            rms_eps: self.cfg.rms_eps,
            lm_head: &self.lm_head,
            vocab_size: self.vocab_size,
        };
        head.logits(&x, batch, &slots, &sample_rows)
    }
}

impl Gemma3 {
    /// The step's shared state: token slots and both RoPE tables for the tokens' positions.
    fn step<'a>(&self, batch: &'a StepBatch, slots: Vec<TokenSlot>) -> Step<'a> {
        let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
        Step {
            batch,
            rope_local: k::RopeTable::new(&self.inv_freq_local, &positions),
            rope_global: k::RopeTable::new(&self.inv_freq_global, &positions),
            slots,
        }
    }

    /// One layer for every token of the step. The element-wise ops run on this thread: they
    /// follow a matmul, after which candle's workers keep spinning on the other cores, and a
    /// parallel split of them measured slower than none (attention, heavier, is split).
    fn layer_forward(
        &self,
        l: &Layer,
        layer_index: usize,
        x: &mut [f32],
        step: &Step<'_>,
        kv: &mut KvStorage,
    ) -> Result<(), ModelError> {
        let (c, n) = (&self.cfg, step.slots.len());
        let mut h = vec![0f32; x.len()];
        profile::time(Stage::Elementwise, || {
            k::rms_norm_rows(x, &l.attn_norm, c.rms_eps, &mut h)
        })?;
        let [mut q, mut kk, v]: [Vec<f32>; 3] =
            l.qkv.forward(&h, n)?.try_into().map_err(|_| {
                ModelError::Batch("q/k/v projection returned the wrong parts".into())
            })?;
        profile::time(Stage::Elementwise, || {
            self.rotate_and_store(l, layer_index, &mut q, &mut kk, &v, step, kv)
        })?;
        let att = profile::time(Stage::Attention, || {
            let shape = AttnShape {
                heads: c.heads,
                head_dim: c.head_dim,
                window: l.window,
            };
            attend(&shape, &q, step.batch, &step.slots, &kv.layer(layer_index))
        })?;
        let o = l.o.forward(&att, n)?;
        profile::time(Stage::Elementwise, || {
            k::rms_norm_add_rows(&o, &l.post_attn_norm, c.rms_eps, x)?;
            k::rms_norm_rows(x, &l.ffn_norm, c.rms_eps, &mut h)
        })?;
        let [mut gate, up]: [Vec<f32>; 2] =
            l.gate_up.forward(&h, n)?.try_into().map_err(|_| {
                ModelError::Batch("gate/up projection returned the wrong parts".into())
            })?;
        profile::time(Stage::Elementwise, || k::gelu_tanh_mul(&mut gate, &up))?;
        let down = l.down.forward(&gate, n)?;
        profile::time(Stage::Elementwise, || {
            k::rms_norm_add_rows(&down, &l.post_ffn_norm, c.rms_eps, x)
        })?;
        Ok(())
    }

    /// q/k norms, RoPE at each token's position (from the step's table), and this step's K
    /// and V into the cache.
    #[allow(clippy::too_many_arguments)]
    fn rotate_and_store(
        &self,
        l: &Layer,
        layer_index: usize,
        q: &mut [f32],
        kk: &mut [f32],
        v: &[f32],
        step: &Step<'_>,
        kv: &mut KvStorage,
    ) -> Result<(), ModelError> {
        let c = &self.cfg;
        let rope = step.rope(l);
        k::rms_norm_rows_in_place(q, &l.q_norm, c.rms_eps)?;
        k::rms_norm_rows_in_place(kk, &l.k_norm, c.rms_eps)?;
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        for (t, slot) in step.slots.iter().enumerate() {
            k::rope_neox_row(&mut q[t * q_dim..(t + 1) * q_dim], rope, t)?;
            k::rope_neox_row(&mut kk[t * kv_dim..(t + 1) * kv_dim], rope, t)?;
            let table = &step.batch.seqs[slot.seq_index].block_table;
            let span = t * kv_dim..(t + 1) * kv_dim;
            kv.store(layer_index, table, slot.pos, &kk[span.clone()], &v[span]);
        }
        Ok(())
    }
}
