//! Paged attention and the KV-cache write as candle ops, for decode, prefill and mixed
//! (varlen) steps alike: each query token names its sequence (a row of the block tables) and
//! its position, so prefill needs no separate kernel.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, InplaceOp3, Layout, Result, Shape, Storage, Tensor,
};

use super::{cpu_f32, cpu_store, cpu_u32, kernel_err, same_dtype};
use crate::cpu as k;

/// One layer's paged KV and the step's token-to-sequence map.
///
/// `k_cache`/`v_cache`: `[num_blocks, block_size, kv_heads, head_dim]`; `block_tables`:
/// u32 `[seqs, max_blocks]` (rows padded with any valid block); `token_seq`/`token_pos`:
/// u32 `[tokens]`.
pub struct PagedAttention {
    pub k_cache: Tensor,
    pub v_cache: Tensor,
    pub block_tables: Tensor,
    pub token_seq: Tensor,
    pub token_pos: Tensor,
    pub scale: f32,
    /// Attend only to the last `window` positions; `None` = all (global layers).
    pub window: Option<usize>,
}

/// `q`: `[tokens, heads, head_dim]`, already normed and rotated. Returns the same shape.
pub fn paged_attention(q: &Tensor, op: &PagedAttention) -> Result<Tensor> {
    q.apply_op1_no_bwd(op)
}

/// Writes `rows` (`[tokens, kv_heads, head_dim]`) into `cache` at u32 `slots`
/// (`block * block_size + offset` per token). Call once for K and once for V.
pub fn kv_cache_write(cache: &Tensor, rows: &Tensor, slots: &Tensor) -> Result<()> {
    cache.inplace_op3(rows, slots, &KvCacheWrite)
}

/// Geometry of one call, checked against every tensor.
struct Geometry {
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    max_blocks: usize,
}

impl PagedAttention {
    fn geometry(&self, q: &Layout) -> Result<Geometry> {
        let (tokens, heads, head_dim) = q.shape().dims3()?;
        let (_, block_size, kv_heads, cache_dim) = self.k_cache.dims4()?;
        let (_, max_blocks) = self.block_tables.dims2()?;
        let ok = cache_dim == head_dim
            && self.v_cache.dims() == self.k_cache.dims()
            && kv_heads > 0
            && heads % kv_heads == 0
            && self.token_seq.dims1()? == tokens
            && self.token_pos.dims1()? == tokens;
        if !ok {
            bail!(
                "paged_attention: q {:?}, caches {:?}/{:?}, tokens {:?}/{:?}",
                q.shape(),
                self.k_cache.shape(),
                self.v_cache.shape(),
                self.token_seq.shape(),
                self.token_pos.shape()
            )
        }
        Ok(Geometry {
            tokens,
            heads,
            kv_heads,
            head_dim,
            block_size,
            max_blocks,
        })
    }
}

/// Runs `f` on the CPU storage of a tensor the op holds.
fn with_cpu<R>(t: &Tensor, f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(s, layout),
        _ => bail!("paged_attention: all inputs must be on the same device"),
    }
}

impl CustomOp1 for PagedAttention {
    fn name(&self) -> &'static str {
        "paged_attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(l)?;
        let name = self.name();
        let q = cpu_f32(s, l, name)?;
        let kc = with_cpu(&self.k_cache, |s, l| Ok(cpu_f32(s, l, name)?.into_owned()))?;
        let vc = with_cpu(&self.v_cache, |s, l| Ok(cpu_f32(s, l, name)?.into_owned()))?;
        let tables = with_cpu(&self.block_tables, |s, l| Ok(cpu_u32(s, l, name)?.to_vec()))?;
        let seqs = with_cpu(&self.token_seq, |s, l| Ok(cpu_u32(s, l, name)?.to_vec()))?;
        let pos = with_cpu(&self.token_pos, |s, l| Ok(cpu_u32(s, l, name)?.to_vec()))?;
        let paged = k::PagedKv {
            k: &kc,
            v: &vc,
            block_size: g.block_size,
            kv_heads: g.kv_heads,
            head_dim: g.head_dim,
        };
        let q_dim = g.heads * g.head_dim;
        let mut out = vec![0f32; q.len()];
        for t in 0..g.tokens {
            let seq = seqs[t] as usize;
            if (seq + 1) * g.max_blocks > tables.len() {
                bail!("paged_attention: token {t} names sequence {seq}, beyond the block tables")
            }
            let query = k::PagedQuery {
                q: &q[t * q_dim..(t + 1) * q_dim],
                pos: pos[t] as usize,
                block_table: &tables[seq * g.max_blocks..(seq + 1) * g.max_blocks],
                window: self.window,
            };
            let row = &mut out[t * q_dim..(t + 1) * q_dim];
            k::paged_attention(&paged, &query, self.scale, row).map_err(kernel_err)?;
        }
        Ok((cpu_store(out, s.dtype(), name)?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.geometry(l)?;
        let out = cuda::paged_attention(self, &g, s, l)?;
        Ok((out, l.shape().clone()))
    }
}

struct KvCacheWrite;

impl InplaceOp3 for KvCacheWrite {
    fn name(&self) -> &'static str {
        "kv_cache_write"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        cl: &Layout,
        rows: &CpuStorage,
        rl: &Layout,
        slots: &CpuStorage,
        sl: &Layout,
    ) -> Result<()> {
        same_dtype(self.name(), cache.dtype(), rows.dtype())?;
        let slots = cpu_u32(slots, sl, self.name())?;
        let (row_len, capacity) = kv_write_dims(cl, rl, slots.len())?;
        if let Some(bad) = slots.iter().find(|&&s| s as usize >= capacity) {
            bail!("kv_cache_write: slot {bad} beyond the cache's {capacity}")
        }
        let Some((start, _)) = cl.contiguous_offsets() else {
            bail!("kv_cache_write: the cache must be contiguous")
        };
        let src = cpu_f32(rows, rl, self.name())?;
        for (t, &slot) in slots.iter().enumerate() {
            let row = &src[t * row_len..(t + 1) * row_len];
            let at = start + slot as usize * row_len;
            match cache {
                CpuStorage::F32(c) => c[at..at + row_len].copy_from_slice(row),
                CpuStorage::F16(c) => c[at..at + row_len]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(d, &x)| *d = half::f16::from_f32(x)),
                CpuStorage::BF16(c) => c[at..at + row_len]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(d, &x)| *d = half::bf16::from_f32(x)),
                other => bail!("kv_cache_write: unsupported dtype {:?}", other.dtype()),
            }
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::CudaStorage,
        cl: &Layout,
        rows: &candle_core::CudaStorage,
        rl: &Layout,
        slots: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<()> {
        cuda::kv_cache_write(cache, cl, rows, rl, slots, sl)
    }
}

/// `(row_len, slots the cache holds)`; rows are `[tokens, kv_heads, head_dim]`.
fn kv_write_dims(cache: &Layout, rows: &Layout, tokens: usize) -> Result<(usize, usize)> {
    let (blocks, block_size, kv_heads, head_dim) = cache.shape().dims4()?;
    let (t, h, d) = rows.shape().dims3()?;
    if t != tokens || h != kv_heads || d != head_dim {
        bail!(
            "kv_cache_write: rows {:?} for a cache {:?} and {tokens} slots",
            rows.shape(),
            cache.shape()
        )
    }
    Ok((kv_heads * head_dim, blocks * block_size))
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{bail, CudaStorage, Layout, Result, Storage, Tensor};

    use super::{kv_write_dims, Geometry, PagedAttention};
    use crate::gpu::{kernel_name, output, per_row, ptx, view, with_float_type};

    /// Head dims the kernel's per-lane registers hold (`MAX_HEAD_DIM` in the .cu).
    const MAX_HEAD_DIM: usize = 256;

    fn with_cuda<R>(t: &Tensor, f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>) -> Result<R> {
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => f(s, layout),
            _ => bail!("paged_attention: all inputs must be on the same device"),
        }
    }

    pub(super) fn paged_attention(
        op: &PagedAttention,
        g: &Geometry,
        q: &CudaStorage,
        ql: &Layout,
    ) -> Result<CudaStorage> {
        if g.head_dim > MAX_HEAD_DIM {
            bail!(
                "paged_attention: head_dim {} above the kernel's {MAX_HEAD_DIM}",
                g.head_dim
            )
        }
        let dev = q.device.clone();
        let dtype = q.dtype();
        let name = "paged_attention";
        let f =
            dev.get_or_load_custom_func(&kernel_name(name, dtype)?, name, ptx::PAGED_ATTENTION)?;
        with_float_type!(dtype, name, |T| {
            with_cuda(&op.k_cache, |kc, kl| {
                with_cuda(&op.v_cache, |vc, vl| {
                    with_cuda(&op.block_tables, |bt, bl| {
                        with_cuda(&op.token_seq, |ts, tl| {
                            with_cuda(&op.token_pos, |tp, pl| {
                                let mut out = output::<T>(&dev, ql.shape().elem_count())?;
                                let mut launch = f.builder();
                                let ins = [
                                    view::<T>(q, ql, name)?,
                                    view::<T>(kc, kl, name)?,
                                    view::<T>(vc, vl, name)?,
                                ];
                                let idx = [
                                    view::<u32>(bt, bl, name)?,
                                    view::<u32>(ts, tl, name)?,
                                    view::<u32>(tp, pl, name)?,
                                ];
                                ins.iter().for_each(|v| {
                                    launch.arg(v);
                                });
                                idx.iter().for_each(|v| {
                                    launch.arg(v);
                                });
                                launch.arg(&mut out);
                                let ints = [
                                    g.heads as i32,
                                    g.kv_heads as i32,
                                    g.head_dim as i32,
                                    g.block_size as i32,
                                    g.max_blocks as i32,
                                    op.window.unwrap_or(0) as i32,
                                ];
                                launch.arg(&op.scale);
                                ints.iter().for_each(|v| {
                                    launch.arg(v);
                                });
                                let cfg = LaunchConfig {
                                    grid_dim: (g.tokens.max(1) as u32, g.heads as u32, 1),
                                    block_dim: (128, 1, 1),
                                    shared_mem_bytes: 0,
                                };
                                // SAFETY: argument types and order match the kernel.
                                unsafe { launch.launch(cfg) }.w()?;
                                Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
                            })
                        })
                    })
                })
            })
        })
    }

    pub(super) fn kv_cache_write(
        cache: &mut CudaStorage,
        cl: &Layout,
        rows: &CudaStorage,
        rl: &Layout,
        slots: &CudaStorage,
        sl: &Layout,
    ) -> Result<()> {
        let name = "kv_cache_write";
        super::same_dtype(name, cache.dtype(), rows.dtype())?;
        let tokens = sl.shape().elem_count();
        let (row_len, _) = kv_write_dims(cl, rl, tokens)?;
        if tokens == 0 {
            return Ok(());
        }
        let Some((start, end)) = cl.contiguous_offsets() else {
            bail!("{name}: the cache must be contiguous")
        };
        let dev = cache.device.clone();
        let dtype = cache.dtype();
        let f =
            dev.get_or_load_custom_func(&kernel_name(name, dtype)?, name, ptx::KV_CACHE_WRITE)?;
        with_float_type!(dtype, name, |T| {
            let src = view::<T>(rows, rl, name)?;
            let slots = view::<u32>(slots, sl, name)?;
            let mut dst = cache.as_cuda_slice_mut::<T>()?.slice_mut(start..end);
            let row_len = row_len as i32;
            let mut launch = f.builder();
            launch.arg(&src);
            launch.arg(&mut dst);
            launch.arg(&slots);
            launch.arg(&row_len);
            // SAFETY: argument types and order match `kv_cache_write_<dtype>`; slots were
            // produced by the engine's block allocator for this cache.
            unsafe { launch.launch(per_row(tokens, 128)) }.w()?;
            Ok(())
        })
    }
}
