//! Attention of one query token against its sequence's paged KV cache (causal, optional
//! sliding window, grouped-query heads).

use crate::error::check_len;
use crate::KernelError;

/// One layer's KV storage: `[num_blocks, block_size, kv_heads, head_dim]`, row-major, for K and
/// for V. A sequence's position `p` lives in block `block_table[p / block_size]`, slot
/// `p % block_size`.
pub struct PagedKv<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub block_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One query token: `q` is `[heads, head_dim]`, already normed and rotated to `pos`.
pub struct PagedQuery<'a> {
    pub q: &'a [f32],
    pub pos: usize,
    pub block_table: &'a [u32],
    /// Attend only to the last `window` positions (Gemma's local layers); `None` = global.
    pub window: Option<usize>,
}

/// Writes `[heads, head_dim]` attention output for `query` into `out`.
///
/// The query sees positions `pos + 1 - window ..= pos`: the KV of every token of the current
/// step has been written before any attention runs, so a prompt chunk sees its own earlier
/// tokens and nothing after itself.
pub fn paged_attention(
    kv: &PagedKv<'_>,
    query: &PagedQuery<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (hd, kvh) = (kv.head_dim, kv.kv_heads);
    check_len("paged_attention", "out", out.len(), query.q.len())?;
    if hd == 0 || kvh == 0 || !query.q.len().is_multiple_of(hd * kvh) {
        return Err(KernelError::Invalid {
            op: "paged_attention",
            message: format!(
                "q of {} values does not fit {kvh} kv heads of {hd}",
                query.q.len()
            ),
        });
    }
    let needed_blocks = query.pos / kv.block_size + 1;
    if query.block_table.len() < needed_blocks {
        return Err(KernelError::Invalid {
            op: "paged_attention",
            message: format!(
                "position {} needs {needed_blocks} blocks, table has {}",
                query.pos,
                query.block_table.len()
            ),
        });
    }
    let first = match query.window {
        Some(w) => (query.pos + 1).saturating_sub(w),
        None => 0,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense reference: plain causal attention over contiguous K/V `[len, head_dim]`.
    fn dense(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let mut s: Vec<f32> = k.iter().map(|k| dot(q, k) * scale).collect();
        softmax_in_place(&mut s);
        let mut o = vec![0.0; q.len()];
        for (w, v) in s.iter().zip(v) {
            for (a, x) in o.iter_mut().zip(v) {
                *a += w * x;
            }
        }
        o
    }

    fn vecs(n: usize, d: usize, seed: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| (0..d).map(|j| ((i * d + j) as f32 * seed).sin()).collect())
            .collect()
    }

    /// Scatters contiguous K/V into blocks given by `table` (block size 2, one kv head).
    fn paged(rows: &[Vec<f32>], table: &[u32], blocks: usize) -> Vec<f32> {
        let d = rows[0].len();
        let mut data = vec![f32::NAN; blocks * 2 * d];
        for (p, r) in rows.iter().enumerate() {
            let start = (table[p / 2] as usize * 2 + p % 2) * d;
            data[start..start + d].copy_from_slice(r);
        }
        data
    }

    #[test]
    fn paged_equals_dense_with_scattered_blocks_and_window() {
        let (d, len) = (4, 5);
        let (k, v) = (vecs(len, d, 0.7), vecs(len, d, 1.3));
        let table = [3u32, 0, 5];
        let (pk, pv) = (paged(&k, &table, 6), paged(&v, &table, 6));
        let kv = PagedKv {
            k: &pk,
            v: &pv,
            block_size: 2,
            kv_heads: 1,
            head_dim: d,
        };
        let q: Vec<f32> = (0..2 * d).map(|i| (i as f32).cos()).collect(); // two query heads
        for window in [None, Some(2)] {
            let mut out = vec![0.0; 2 * d];
            let query = PagedQuery {
                q: &q,
                pos: len - 1,
                block_table: &table,
                window,
            };
            paged_attention(&kv, &query, 0.5, &mut out).unwrap();
            let first = window.map_or(0, |w| len - w);
            for h in 0..2 {
                let want = dense(&q[h * d..(h + 1) * d], &k[first..], &v[first..], 0.5);
                for (a, b) in out[h * d..(h + 1) * d].iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-5,
                        "window {window:?} head {h}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_block_table_is_an_error() {
        let data = vec![0.0; 8];
        let kv = PagedKv {
            k: &data,
            v: &data,
            block_size: 2,
            kv_heads: 1,
            head_dim: 2,
        };
        let q = [1.0, 0.0];
        let query = PagedQuery {
            q: &q,
            pos: 2,
            block_table: &[0],
            window: None,
        };
        let mut out = [0.0; 2];
        assert!(paged_attention(&kv, &query, 1.0, &mut out).is_err());
    }
}
