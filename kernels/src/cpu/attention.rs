//! Attention of one query token against its sequence's paged KV cache (causal, optional
//! sliding window, grouped-query heads): shape checks, per-thread scratch, and the choice of
//! SIMD kernels.
//!
//! Per KV head, up to `MAX_GROUP` query heads share each pass over the K and V rows: one K row
//! load feeds every head's dot product, one V row load every head's weighted sum. A token's
//! arithmetic depends only on its own query, position and KV rows (and on the kernel path,
//! fixed per CPU and head width), never on the other tokens of the step or on which thread
//! runs it: a sequence decodes to the same bits alone or in any batch.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;
mod reference;
mod rows;
mod softmax;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use crate::cpu::simd::{simd_level, SimdLevel};
use crate::error::check_len;
use crate::KernelError;

pub use reference::paged_attention_reference;
use rows::RowSet;

/// Query heads per pass over the rows (the kernels keep their accumulators in registers).
const MAX_GROUP: usize = 4;

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

/// The kernels one call runs; a SIMD variant holds proof that this CPU supports it.
#[derive(Clone, Copy)]
enum Kernels {
    #[cfg(target_arch = "x86_64")]
    Avx512(avx512::Token),
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Token),
    Portable,
}

thread_local! {
    /// Scores and per-head normalisers, grown to the longest context seen on this thread and
    /// then reused: the decode path allocates nothing.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Writes `[heads, head_dim]` attention output for `query` into `out`.
///
/// The query sees positions `pos + 1 - window ..= pos`: the KV of every token of the current
/// step has been written before any attention runs, so a prompt chunk sees its own earlier
/// tokens and nothing after itself. Results agree with `paged_attention_reference` to within
/// f32 rounding (FMA dot products, `exp_approx` in the softmax; see the tests for bounds).
pub fn paged_attention(
    kv: &PagedKv<'_>,
    query: &PagedQuery<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    paged_attention_on(simd_level(), kv, query, scale, out)
}

/// `paged_attention` with the kernels of `level` (or narrower, if the head width does not fit
/// its vectors); `Err` if this CPU cannot run them. Tests compare every level.
pub(crate) fn paged_attention_on(
    level: SimdLevel,
    kv: &PagedKv<'_>,
    query: &PagedQuery<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let first = check(kv, query, out)?;
    let kernels = choose(level, kv.head_dim)?;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => attend(kernels, kv, query, first, scale, out, &mut scratch),
        // Only reachable if a kernel re-entered on this thread; stay correct regardless.
        Err(_) => attend(kernels, kv, query, first, scale, out, &mut Vec::new()),
    });
    Ok(())
}

/// Validates shapes and the block table; returns the first position the query sees.
pub(crate) fn check(
    kv: &PagedKv<'_>,
    query: &PagedQuery<'_>,
    out: &[f32],
) -> Result<usize, KernelError> {
    let (hd, kvh) = (kv.head_dim, kv.kv_heads);
    let invalid = |message: String| KernelError::Invalid {
        op: "paged_attention",
        message,
    };
    check_len("paged_attention", "out", out.len(), query.q.len())?;
    if hd == 0 || kvh == 0 || query.q.is_empty() || !query.q.len().is_multiple_of(hd * kvh) {
        return Err(invalid(format!(
            "q of {} values does not fit {kvh} kv heads of {hd}",
            query.q.len()
        )));
    }
    if kv.block_size == 0 || query.window == Some(0) {
        return Err(invalid("block size and window must be positive".into()));
    }
    let needed_blocks = query.pos / kv.block_size + 1;
    if query.block_table.len() < needed_blocks {
        return Err(invalid(format!(
            "position {} needs {needed_blocks} blocks, table has {}",
            query.pos,
            query.block_table.len()
        )));
    }
    let first = match query.window {
        Some(w) => (query.pos + 1).saturating_sub(w),
        None => 0,
    };
    let block_len = kv
        .block_size
        .checked_mul(kvh * hd)
        .ok_or_else(|| invalid("block size overflows".into()))?;
    let stored = kv.k.len().min(kv.v.len()) / block_len;
    let used = &query.block_table[first / kv.block_size..needed_blocks];
    if let Some(&b) = used.iter().find(|&&b| b as usize >= stored) {
        return Err(invalid(format!("block {b} is outside the KV storage")));
    }
    Ok(first)
}

/// The widest kernels `level` allows for this head width (SIMD needs whole vectors per head).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn choose(level: SimdLevel, head_dim: usize) -> Result<Kernels, KernelError> {
    if !crate::cpu::simd::supports(level) {
        return Err(KernelError::Invalid {
            op: "paged_attention",
            message: format!("{level:?} is not supported by this CPU"),
        });
    }
    #[cfg(target_arch = "x86_64")]
    {
        if let (SimdLevel::Avx512, Some(t)) = (level, avx512::Token::new(head_dim)) {
            return Ok(Kernels::Avx512(t));
        }
        if let (SimdLevel::Avx512 | SimdLevel::Avx2, Some(t)) = (level, avx2::Token::new(head_dim))
        {
            return Ok(Kernels::Avx2(t));
        }
    }
    Ok(Kernels::Portable)
}

/// The checked call: every KV head, its query heads in passes of up to `MAX_GROUP`.
fn attend(
    kernels: Kernels,
    kv: &PagedKv<'_>,
    query: &PagedQuery<'_>,
    first: usize,
    scale: f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let hd = kv.head_dim;
    let group = query.q.len() / hd / kv.kv_heads;
    let n = query.pos + 1 - first;
    if scratch.len() < MAX_GROUP * (n + 1) {
        scratch.resize(MAX_GROUP * (n + 1), 0.0);
    }
    let (scores, inv) = scratch.split_at_mut(MAX_GROUP * n);
    for kv_head in 0..kv.kv_heads {
        let rows = RowSet::new(kv, query.block_table, kv_head, first, query.pos);
        let heads = kv_head * group..(kv_head + 1) * group;
        let mut h = heads.start;
        while h < heads.end {
            let g = MAX_GROUP.min(heads.end - h);
            let (q, o) = (
                &query.q[h * hd..(h + g) * hd],
                &mut out[h * hd..(h + g) * hd],
            );
            let (s, inv) = (&mut scores[..g * n], &mut inv[..g]);
            match kernels {
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx512(t) => t.scores(q, kv.k, &rows, scale, s),
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx2(t) => t.scores(q, kv.k, &rows, scale, s),
                Kernels::Portable => portable::scores(q, kv.k, &rows, scale, s),
            }
            softmax::exp_rows(s, n, inv);
            match kernels {
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx512(t) => t.weighted_sum(s, kv.v, &rows, inv, o),
                #[cfg(target_arch = "x86_64")]
                Kernels::Avx2(t) => t.weighted_sum(s, kv.v, &rows, inv, o),
                Kernels::Portable => portable::weighted_sum(s, kv.v, &rows, inv, o),
            }
            h += g;
        }
    }
}
