//! The device backend: a model on any candle device (`Device::Cuda(n)` on a GPU, or the CPU)
//! behind the same `ModelBackend` seam as `CpuBackend`, with its paged KV cache as device
//! tensors. Per step it uploads the token ids, positions, slots, block tables and RoPE
//! tables, runs `DeviceModel::forward`, samples on the device the rows the engine lets it
//! (token and logprob back: 8 bytes a row), and copies back only the other sampled rows' logits.

mod model;
mod weights;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use gridserve_kernels::ops::SampleParams;

use crate::arch::gemma3::Gemma3Config;
use crate::arch::llama::LlamaConfig;
use crate::arch::{token_slots, KvLayout};
use crate::backend::{
    validate_batch, BackendInfo, DeviceSampled, ModelBackend, SampleRow, SeqId, StepBatch,
    StepOutput,
};
use crate::cpu_backend::KvCacheOptions;
use crate::kv_cache::KvStorage;
use crate::loader::WeightSource;
use crate::ModelError;
use model::{DeviceModel, StepTensors};

pub struct DeviceBackend {
    model: DeviceModel,
    /// `(K, V)` per layer, `[num_blocks, block_size, kv_heads, head_dim]` f32.
    caches: Vec<(Tensor, Tensor)>,
    device: Device,
    info: BackendInfo,
}

/// Which architecture to build on the device.
pub enum DeviceArch<'a> {
    Llama(&'a LlamaConfig),
    Gemma3(&'a Gemma3Config),
}

impl DeviceBackend {
    /// Loads weights from `src` onto `device` and allocates the KV cache there.
    pub fn load(
        arch: DeviceArch<'_>,
        src: &mut dyn WeightSource,
        device: &Device,
        model_name: String,
        eos_token_ids: Vec<u32>,
        opts: &KvCacheOptions,
    ) -> Result<Self, ModelError> {
        let (model, layers) = match arch {
            DeviceArch::Llama(c) => (DeviceModel::llama(c, src, device)?, c.layers),
            DeviceArch::Gemma3(c) => (DeviceModel::gemma3(c, src, device)?, c.layers),
        };
        let s = &model.spec;
        let layout = KvLayout {
            layers,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
        };
        let per_token = KvStorage::bytes_per_token(layout.layers, layout.kv_heads, layout.head_dim);
        let num_blocks = opts.kv_cache_bytes / (per_token * opts.block_size.max(1));
        if opts.block_size == 0 || num_blocks == 0 {
            return Err(ModelError::InvalidParam {
                param: "kv_cache_bytes",
                message: format!(
                    "{} bytes hold no block of {} tokens",
                    opts.kv_cache_bytes, opts.block_size
                ),
            });
        }
        let shape = (num_blocks, opts.block_size, s.kv_heads, s.head_dim);
        let caches = (0..layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, DType::F32, device)?,
                    Tensor::zeros(shape, DType::F32, device)?,
                ))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let info = BackendInfo {
            model_name,
            block_size: opts.block_size,
            num_blocks,
            max_seq_len: opts
                .max_seq_len
                .map_or(s.max_seq_len, |m| m.min(s.max_seq_len)),
            vocab_size: model.vocab_size,
            eos_token_ids,
        };
        Ok(Self {
            model,
            caches,
            device: device.clone(),
            info,
        })
    }

    /// The step's shared inputs on the device.
    fn step_tensors(&self, batch: &StepBatch) -> Result<(StepTensors, Vec<u64>), ModelError> {
        let (slots, sample_rows) = token_slots(batch);
        let bs = self.info.block_size;
        let dev = &self.device;
        let ids: Vec<u32> = batch
            .seqs
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
        let cache_slots: Vec<u32> = slots
            .iter()
            .map(|s| {
                let table = &batch.seqs[s.seq_index].block_table;
                table[s.pos / bs] * bs as u32 + (s.pos % bs) as u32
            })
            .collect();
        let max_blocks = batch
            .seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let tables: Vec<u32> = batch
            .seqs
            .iter()
            .flat_map(|s| (0..max_blocks).map(|i| s.block_table.get(i).copied().unwrap_or(0)))
            .collect();
        let half = self.model.spec.head_dim / 2;
        let rope = self
            .model
            .spec
            .rope_tables
            .iter()
            .map(|inv| {
                let t = gridserve_kernels::cpu::RopeTable::new(inv, &positions);
                let up = |v: &[f32]| Tensor::from_slice(v, (positions.len(), half), dev);
                Ok((up(t.cos())?, up(t.sin())?))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let u32s = |v: Vec<u32>| Tensor::from_vec(v.clone(), v.len(), dev);
        let seqs = sample_rows
            .iter()
            .map(|&r| batch.seqs[slots[r].seq_index].seq)
            .collect();
        let tensors = StepTensors {
            ids: u32s(ids)?,
            token_seq: u32s(slots.iter().map(|s| s.seq_index as u32).collect())?,
            token_pos: u32s(positions.iter().map(|&p| p as u32).collect())?,
            slots: u32s(cache_slots)?,
            block_tables: Tensor::from_vec(tables, (batch.seqs.len(), max_blocks), dev)?,
            rope,
            sample_rows: u32s(sample_rows.iter().map(|&r| r as u32).collect())?,
        };
        Ok((tensors, seqs))
    }
}

impl ModelBackend for DeviceBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        self.step_sampling(batch, &[])
    }

    fn samples_on_device(&self) -> bool {
        true
    }

    /// The rows in `sampling` are sampled by the `sample` op where the logits are; only the
    /// other rows' logits are copied to the host.
    fn step_sampling(
        &mut self,
        batch: &StepBatch,
        sampling: &[(SeqId, SampleRow)],
    ) -> Result<StepOutput, ModelError> {
        validate_batch(&self.info, batch)?;
        if batch.seqs.is_empty() {
            return Ok(StepOutput::default());
        }
        let (tensors, seqs) = self.step_tensors(batch)?;
        // Prompt chunks only: the layers run for their KV, the head is skipped.
        let Some(logits) = self.model.forward(&tensors, &self.caches)? else {
            return Ok(StepOutput::default());
        };
        let logits = logits.to_dtype(DType::F32)?;
        let params: HashMap<SeqId, SampleRow> = sampling.iter().copied().collect();
        let (on_device, on_host): (Vec<usize>, Vec<usize>) =
            (0..seqs.len()).partition(|&i| params.contains_key(&seqs[i]));
        let rows = |idx: &[usize]| -> Result<Tensor, ModelError> {
            let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            let idx = Tensor::from_vec(idx.clone(), idx.len(), &self.device)?;
            Ok(logits.index_select(&idx, 0)?)
        };
        let mut sampled = Vec::with_capacity(on_device.len());
        if !on_device.is_empty() {
            let row_params: Vec<SampleRow> = on_device.iter().map(|&i| params[&seqs[i]]).collect();
            let params = SampleParams::tensor(&row_params, &self.device)?;
            let out = gridserve_kernels::ops::sample(&rows(&on_device)?, &params)?;
            for (&i, s) in on_device.iter().zip(SampleParams::results(&out)?) {
                sampled.push(DeviceSampled {
                    seq: seqs[i],
                    token: s.token,
                    logprob: s.logprob,
                });
            }
        }
        let host_logits = match on_host.len() {
            0 => Vec::new(),
            n if n == seqs.len() => logits.flatten_all()?.to_vec1::<f32>()?,
            _ => rows(&on_host)?.flatten_all()?.to_vec1::<f32>()?,
        };
        let host_seqs = on_host.iter().map(|&i| seqs[i]).collect();
        Ok(StepOutput::new(host_seqs, host_logits, self.info.vocab_size)?.with_sampled(sampled))
    }
}
