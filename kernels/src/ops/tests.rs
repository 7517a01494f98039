//! Parity of every fused op on every device: on the CPU the op (our CPU kernel) against a slow
//! composition of plain candle ops; on a GPU the PTX kernel against the op's CPU half. Each
//! float op is checked in f32, f16 and bf16 with a tolerance per storage dtype.

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};

use super::*;
use crate::cpu::{SampleRow, Sampled};
use crate::test_device;

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed, scale), shape, &Device::Cpu).expect("shape matches")
}

/// Largest difference allowed, relative to the largest expected magnitude.
fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 2e-5,
        DType::F16 => 4e-3,
        _ => 3e-2,
    }
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn assert_close(got: &Tensor, want: &Tensor, dtype: DType, what: &str) -> Result<()> {
    let got = got
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?;
    let want = want
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?;
    let (g, w) = (got.to_vec1::<f32>()?, want.to_vec1::<f32>()?);
    assert_eq!(g.len(), w.len(), "{what}: lengths");
    let scale = w.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tolerance(dtype) * scale,
        "{what} ({dtype:?}): max |diff| {worst} > {} × {scale}",
        tolerance(dtype)
    );
    Ok(())
}

/// What the op must equal on `dev`: the slow composition on the CPU, the op's CPU half on a GPU.
fn expected(
    dev: &Device,
    slow: impl FnOnce() -> Result<Tensor>,
    cpu_op: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    if dev.is_cpu() {
        slow()
    } else {
        cpu_op()
    }
}

/// Inputs as the op sees them on `dev` in `dtype`, and as the reference sees them (the same
/// rounded values, on the CPU in f32).
fn on(dev: &Device, dtype: DType, t: &Tensor) -> Result<(Tensor, Tensor)> {
    let rounded = t.to_dtype(dtype)?;
    Ok((rounded.to_device(dev)?, rounded.to_dtype(DType::F32)?))
}

fn slow_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

fn check_rms_norms(dev: &Device) -> Result<()> {
    let eps = 1e-6;
    for dtype in DTYPES {
        let (x, xr) = on(dev, dtype, &tensor(&[5, 3, 96], 1, 4.0))?;
        let (r, rr) = on(dev, dtype, &tensor(&[5, 3, 96], 2, 30.0))?;
        let (w, wr) = on(dev, dtype, &(tensor(&[96], 3, 0.2) + 1.0)?)?;
        let want = expected(
            dev,
            || slow_rms_norm(&xr, &wr, eps),
            || rms_norm(&xr, &wr, eps as f32),
        )?;
        assert_close(&rms_norm(&x, &w, eps as f32)?, &want, dtype, "rms_norm")?;

        let (sum, normed) = fused_add_rms_norm(&x, &r, &w, eps as f32)?;
        let (want_sum, want_norm) = if dev.is_cpu() {
            let s = (&xr + &rr)?.to_dtype(dtype)?.to_dtype(DType::F32)?;
            (s.clone(), slow_rms_norm(&s, &wr, eps)?)
        } else {
            fused_add_rms_norm(&xr, &rr, &wr, eps as f32)?
        };
        assert_close(&sum, &want_sum, dtype, "fused_add_rms_norm sum")?;
        assert_close(&normed, &want_norm, dtype, "fused_add_rms_norm out")?;

        let want = expected(
            dev,
            || &rr + slow_rms_norm(&xr, &wr, eps)?,
            || rms_norm_add(&xr, &wr, &rr, eps as f32),
        )?;
        assert_close(
            &rms_norm_add(&x, &w, &r, eps as f32)?,
            &want,
            dtype,
            "rms_norm_add",
        )?;
    }
    Ok(())
}
test_device!(rms_norms, check_rms_norms);

fn check_rope(dev: &Device) -> Result<()> {
    let (tokens, heads, head_dim) = (6, 4, 80);
    let half = head_dim / 2;
    let positions: Vec<usize> = vec![0, 1, 7, 300, 4095, 31];
    let inv = crate::cpu::rope_inv_freq(head_dim, 10_000.0);
    let table = crate::cpu::RopeTable::new(&inv, &positions);
    let cos = Tensor::from_slice(table.cos(), (tokens, half), &Device::Cpu)?;
    let sin = Tensor::from_slice(table.sin(), (tokens, half), &Device::Cpu)?;
    for dtype in DTYPES {
        let (x, xr) = on(dev, dtype, &tensor(&[tokens, heads, head_dim], 4, 2.0))?;
        let slow = || {
            let (c, s) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
            let (a, b) = (xr.narrow(2, 0, half)?, xr.narrow(2, half, half)?);
            let lo = (a.broadcast_mul(&c)? - b.broadcast_mul(&s)?)?;
            let hi = (b.broadcast_mul(&c)? + a.broadcast_mul(&s)?)?;
            Tensor::cat(&[lo, hi], 2)
        };
        let want = expected(dev, slow, || rope_neox(&xr, &cos, &sin))?;
        let got = rope_neox(&x, &cos.to_device(dev)?, &sin.to_device(dev)?)?;
        assert_close(&got, &want, dtype, "rope_neox")?;
    }
    Ok(())
}
test_device!(rope, check_rope);

fn check_gated_activations(dev: &Device) -> Result<()> {
    for dtype in DTYPES {
        let (g, gr) = on(dev, dtype, &tensor(&[7, 300], 5, 6.0))?;
        let (u, ur) = on(dev, dtype, &tensor(&[7, 300], 6, 2.0))?;
        let want = expected(dev, || gr.gelu()? * &ur, || gelu_tanh_mul(&gr, &ur))?;
        assert_close(&gelu_tanh_mul(&g, &u)?, &want, dtype, "gelu_tanh_mul")?;
        let want = expected(dev, || gr.silu()? * &ur, || silu_mul(&gr, &ur))?;
        assert_close(&silu_mul(&g, &u)?, &want, dtype, "silu_mul")?;
    }
    Ok(())
}
test_device!(gated_activations, check_gated_activations);

/// A paged cache holding three sequences at different lengths, the step's query tokens
/// (decode tokens of two sequences and a 3-token prefill chunk of the third), and the op.
struct AttentionCase {
    q: Tensor,
    op: PagedAttention,
    /// Per token: (sequence, position).
    tokens: Vec<(usize, usize)>,
    tables: Vec<Vec<u32>>,
    block_size: usize,
}

const HEADS: usize = 4;
const KV_HEADS: usize = 2;

fn attention_case(
    dev: &Device,
    dtype: DType,
    head_dim: usize,
    window: Option<usize>,
) -> Result<AttentionCase> {
    let (num_blocks, block_size) = (16, 4);
    let tables: Vec<Vec<u32>> = vec![vec![3, 9, 1], vec![7], vec![12, 0, 5, 14]];
    let max_blocks = 4;
    let tokens = vec![(0, 10), (1, 2), (2, 12), (2, 13), (2, 14)];
    let cache = |seed| tensor(&[num_blocks, block_size, KV_HEADS, head_dim], seed, 1.5);
    let flat: Vec<u32> = tables
        .iter()
        .flat_map(|t| (0..max_blocks).map(|i| *t.get(i).unwrap_or(&0)))
        .collect();
    let u32s = |v: Vec<u32>| Tensor::from_vec(v.clone(), v.len(), dev);
    let op = PagedAttention {
        k_cache: cache(7).to_dtype(dtype)?.to_device(dev)?,
        v_cache: cache(8).to_dtype(dtype)?.to_device(dev)?,
        block_tables: Tensor::from_vec(flat, (tables.len(), max_blocks), dev)?,
        token_seq: u32s(tokens.iter().map(|t| t.0 as u32).collect())?,
        token_pos: u32s(tokens.iter().map(|t| t.1 as u32).collect())?,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window,
    };
    let q = tensor(&[tokens.len(), HEADS, head_dim], 9, 1.0)
        .to_dtype(dtype)?
        .to_device(dev)?;
    Ok(AttentionCase {
        q,
        op,
        tokens,
        tables,
        block_size,
    })
}

/// Attention by hand with candle ops: gather each token's visible K/V rows, softmax, sum.
fn slow_attention(c: &AttentionCase, window: Option<usize>) -> Result<Tensor> {
    let f32 = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
    let (kc, vc, q) = (f32(&c.op.k_cache)?, f32(&c.op.v_cache)?, f32(&c.q)?);
    let (_, _, _, head_dim) = kc.dims4()?;
    let kc = kc.reshape(((), KV_HEADS, head_dim))?;
    let vc = vc.reshape(((), KV_HEADS, head_dim))?;
    let mut rows = Vec::new();
    for (t, &(seq, pos)) in c.tokens.iter().enumerate() {
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let slots: Vec<u32> = (first..=pos)
            .map(|p| {
                c.tables[seq][p / c.block_size] * c.block_size as u32 + (p % c.block_size) as u32
            })
            .collect();
        let idx = Tensor::from_vec(slots.clone(), slots.len(), &Device::Cpu)?;
        let (k, v) = (kc.index_select(&idx, 0)?, vc.index_select(&idx, 0)?);
        let mut heads = Vec::new();
        for h in 0..HEADS {
            let kv = h / (HEADS / KV_HEADS);
            let qh = q.i((t, h))?.unsqueeze(0)?;
            let scores = (qh.matmul(&k.i((.., kv))?.t()?)? * c.op.scale as f64)?;
            let p = candle_core::Tensor::exp(&scores.broadcast_sub(&scores.max_keepdim(1)?)?)?;
            let p = p.broadcast_div(&p.sum_keepdim(1)?)?;
            heads.push(p.matmul(&v.i((.., kv))?)?.squeeze(0)?);
        }
        rows.push(Tensor::stack(&heads, 0)?);
    }
    Tensor::stack(&rows, 0)
}

fn check_paged_attention(dev: &Device) -> Result<()> {
    for head_dim in [64, 80, 256] {
        for window in [None, Some(3)] {
            for dtype in DTYPES {
                let c = attention_case(dev, dtype, head_dim, window)?;
                let got = paged_attention(&c.q, &c.op)?;
                let want = if dev.is_cpu() {
                    slow_attention(&c, window)?
                } else {
                    let cpu = attention_case(&Device::Cpu, dtype, head_dim, window)?;
                    paged_attention(&cpu.q, &cpu.op)?
                };
                assert_close(
                    &got,
                    &want,
                    dtype,
                    &format!("paged_attention d={head_dim} w={window:?}"),
                )?;
            }
        }
    }
    Ok(())
}
test_device!(paged_attention_parity, check_paged_attention);

fn check_kv_cache_write(dev: &Device) -> Result<()> {
    for dtype in DTYPES {
        let cache = Tensor::zeros((4, 2, KV_HEADS, 8), dtype, dev)?;
        let rows = tensor(&[3, KV_HEADS, 8], 10, 1.0).to_dtype(dtype)?;
        let slots = [5u32, 0, 7];
        kv_cache_write(&cache, &rows.to_device(dev)?, &Tensor::new(&slots, dev)?)?;
        let flat = cache.to_device(&Device::Cpu)?.reshape((8, KV_HEADS, 8))?;
        let idx = Tensor::new(&slots, &Device::Cpu)?;
        assert_close(&flat.index_select(&idx, 0)?, &rows, dtype, "written rows")?;
        let untouched = Tensor::new(&[1u32, 2, 3, 4, 6], &Device::Cpu)?;
        let rest = flat
            .index_select(&untouched, 0)?
            .to_dtype(DType::F32)?
            .abs()?
            .sum_all()?;
        assert_eq!(rest.to_scalar::<f32>()?, 0.0, "other slots untouched");
    }
    Ok(())
}
test_device!(kv_cache_write_parity, check_kv_cache_write);

fn sample_rows() -> Vec<SampleRow> {
    let row = |temperature, top_k, top_p, min_p, uniform| SampleRow {
        temperature,
        top_k,
        top_p,
        min_p,
        uniform,
    };
    vec![
        row(0.0, 0, 1.0, 0.0, 0.5),
        row(1.0, 0, 1.0, 0.0, 0.37),
        row(0.7, 40, 1.0, 0.0, 0.81),
        row(1.3, 0, 0.9, 0.0, 0.05),
        row(0.9, 0, 1.0, 0.05, 0.66),
        row(1.0, 20, 0.8, 0.02, 0.999),
    ]
}

/// Sampling by hand with candle ops: weights, a descending sort for top-k and top-p, the
/// min-p mask, and the draw as the first index whose running kept weight passes u × total.
fn slow_sample(logits: &Tensor, rows: &[SampleRow]) -> Result<Vec<Sampled>> {
    let mut out = Vec::new();
    for (i, p) in rows.iter().enumerate() {
        let l = logits.i(i)?;
        let m = l.max(0)?.to_scalar::<f32>()?;
        let log_z = (l
            .affine(1.0, -m as f64)?
            .exp()?
            .sum_all()?
            .to_scalar::<f32>()?)
        .ln();
        let argmax = l.argmax(0)?.to_scalar::<u32>()?;
        let token = if p.temperature < crate::cpu::GREEDY_TEMPERATURE {
            argmax
        } else {
            let w = l
                .affine(1.0 / p.temperature as f64, -(m / p.temperature) as f64)?
                .exp()?;
            let order = l.arg_sort_last_dim(false)?.to_vec1::<u32>()?;
            let lv = l.to_vec1::<f32>()?;
            let wv = w.to_vec1::<f32>()?;
            let mut floor = f32::NEG_INFINITY;
            if p.top_k > 0 && p.top_k < lv.len() {
                floor = lv[order[p.top_k - 1] as usize];
            }
            if p.top_p < 1.0 {
                let keep: Vec<f32> = lv
                    .iter()
                    .map(|&x| if x >= floor { 1.0 } else { 0.0 })
                    .collect();
                let mass = (Tensor::new(keep.as_slice(), &Device::Cpu)? * &w)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
                let sorted_w = w.index_select(&Tensor::new(order.as_slice(), &Device::Cpu)?, 0)?;
                let cum = sorted_w.cumsum(0)?.to_vec1::<f32>()?;
                let cut = cum
                    .iter()
                    .position(|&c| c >= p.top_p * mass)
                    .unwrap_or(cum.len() - 1);
                floor = floor.max(lv[order[cut] as usize]);
            }
            let kept: Vec<f32> = lv
                .iter()
                .zip(&wv)
                .map(|(&x, &wi)| if x >= floor && wi >= p.min_p { wi } else { 0.0 })
                .collect();
            let cum = Tensor::new(kept.as_slice(), &Device::Cpu)?
                .cumsum(0)?
                .to_vec1::<f32>()?;
            let target = p.uniform * cum[cum.len() - 1];
            cum.iter()
                .zip(&kept)
                .position(|(&c, &k)| k > 0.0 && c > target)
                .unwrap_or(argmax as usize) as u32
        };
        out.push(Sampled {
            token,
            logprob: l.i(token as usize)?.to_scalar::<f32>()? - m - log_z,
        });
    }
    Ok(out)
}

fn check_sample(dev: &Device) -> Result<()> {
    let rows = sample_rows();
    let logits = tensor(&[rows.len(), 3000], 11, 8.0);
    let got = SampleParams::results(&sample(
        &logits.to_device(dev)?,
        &SampleParams::tensor(&rows, dev)?,
    )?)?;
    let want = if dev.is_cpu() {
        slow_sample(&logits, &rows)?
    } else {
        SampleParams::results(&sample(
            &logits,
            &SampleParams::tensor(&rows, &Device::Cpu)?,
        )?)?
    };
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.token, w.token, "row {i} ({:?})", rows[i]);
        assert!(
            (g.logprob - w.logprob).abs() < 1e-3,
            "row {i}: logprob {} vs {}",
            g.logprob,
            w.logprob
        );
    }
    Ok(())
}
test_device!(sample_parity, check_sample);

#[test]
fn ops_reject_mismatched_inputs_with_errors() {
    let x = tensor(&[2, 8], 1, 1.0);
    assert!(rms_norm(&x, &tensor(&[7], 2, 1.0), 1e-6).is_err());
    assert!(silu_mul(&x, &tensor(&[2, 9], 3, 1.0)).is_err());
    let params = SampleParams::tensor(&sample_rows()[..1], &Device::Cpu).unwrap();
    assert!(
        sample(&x, &params).is_err(),
        "2 rows of logits, 1 row of params"
    );
    let bad_slot = Tensor::new(&[99u32], &Device::Cpu).unwrap();
    let cache = Tensor::zeros((2, 2, 1, 8), DType::F32, &Device::Cpu).unwrap();
    let row = tensor(&[1, 1, 8], 4, 1.0);
    assert!(kv_cache_write(&cache, &row, &bad_slot).is_err());
}
