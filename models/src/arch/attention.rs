//! Attention of a step's tokens against one layer's paged KV, tokens in parallel: shared by
//! every architecture (they differ in what surrounds it, not in attention itself).

use std::sync::Mutex;

use gridserve_kernels::cpu::{self as k, TaskRunner};

use super::TokenSlot;
use crate::backend::StepBatch;
use crate::pool::StepPool;
use crate::ModelError;

/// Head geometry of one layer's attention.
pub(crate) struct AttnShape {
    pub heads: usize,
    pub head_dim: usize,
    /// Sliding window of a local layer; `None` = global.
    pub window: Option<usize>,
}

/// `[tokens, heads * head_dim]` outputs for queries `q` of the same shape, each token at its
/// slot's position against its sequence's blocks (this step's K/V already stored).
pub(crate) fn attend(
    shape: &AttnShape,
    q: &[f32],
    batch: &StepBatch,
    slots: &[TokenSlot],
    paged: &k::PagedKv<'_>,
) -> Result<Vec<f32>, ModelError> {
    let q_dim = shape.heads * shape.head_dim;
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    // One lock per token: a safe way to hand each task its own output row through the
    // pool's shared `Fn` (each is taken once, uncontended).
    let rows: Vec<Mutex<&mut [f32]>> = out.chunks_mut(q_dim).map(Mutex::new).collect();
    let failure: Mutex<Option<gridserve_kernels::KernelError>> = Mutex::new(None);
    StepPool.run(slots.len(), &|t| {
        let slot = &slots[t];
        let query = k::PagedQuery {
            q: &q[t * q_dim..(t + 1) * q_dim],
            pos: slot.pos,
            block_table: &batch.seqs[slot.seq_index].block_table,
            window: shape.window,
        };
        let mut row = rows[t].lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = k::paged_attention(paged, &query, scale, &mut row) {
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    });
    drop(rows);
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.into());
    }
    Ok(out)
}
