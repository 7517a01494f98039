//! The scalar reference of paged attention: the straightforward loops the fast kernels are
//! tested against.

use super::{check, PagedKv, PagedQuery};
use crate::KernelError;

/// The scalar reference of `paged_attention` (same inputs, same checks): one head at a time,
/// one position at a time, in-order sums.
pub fn paged_attention_reference(
    kv: &PagedKv<'_>,
    query: &PagedQuery<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let first = check(kv, query, out)?;
    let (hd, kvh) = (kv.head_dim, kv.kv_heads);
    let heads = query.q.len() / hd;
    let group = heads / kvh;
    let mut scores = vec![0f32; query.pos + 1 - first];
    for h in 0..heads {
        let q = &query.q[h * hd..(h + 1) * hd];
        let kv_head = h / group;
        for (i, p) in (first..=query.pos).enumerate() {
            let k = slot(kv.k, kv, query.block_table, p, kv_head)?;
            scores[i] = dot(q, k) * scale;
        }
        softmax_in_place(&mut scores);
        let o = &mut out[h * hd..(h + 1) * hd];
        o.fill(0.0);
        for (i, p) in (first..=query.pos).enumerate() {
            let v = slot(kv.v, kv, query.block_table, p, kv_head)?;
            let w = scores[i];
            for (acc, &x) in o.iter_mut().zip(v) {
                *acc += w * x;
            }
        }
    }
    Ok(())
}

fn slot<'a>(
    data: &'a [f32],
    kv: &PagedKv<'_>,
    table: &[u32],
    pos: usize,
    kv_head: usize,
) -> Result<&'a [f32], KernelError> {
    let block = table[pos / kv.block_size] as usize;
    let start =
        ((block * kv.block_size + pos % kv.block_size) * kv.kv_heads + kv_head) * kv.head_dim;
    data.get(start..start + kv.head_dim)
        .ok_or_else(|| KernelError::Invalid {
            op: "paged_attention",
            message: format!("block {block} is outside the KV storage"),
        })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn softmax_in_place(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in xs.iter_mut() {
        *x /= sum;
    }
}
