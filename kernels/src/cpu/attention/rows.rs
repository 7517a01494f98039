//! The K (or V) rows one query reads for one KV head, walked block by block: each block's run
//! of consecutive positions is one contiguous stretch of storage with a fixed row stride.

use super::PagedKv;

/// Positions `first..=last` of one sequence, one KV head. Built only after `check` has
/// verified that every block in range lies inside the storage.
pub(super) struct RowSet<'a> {
    table: &'a [u32],
    block_size: usize,
    stride: usize,
    head_offset: usize,
    head_dim: usize,
    first: usize,
    last: usize,
}

/// Consecutive rows within one block: row `r` is `data[r * stride..][..head_dim]`, and is the
/// set's row number `index + r`.
pub(super) struct Segment<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub index: usize,
}

impl<'a> RowSet<'a> {
    pub fn new(
        kv: &PagedKv<'_>,
        table: &'a [u32],
        kv_head: usize,
        first: usize,
        last: usize,
    ) -> Self {
        Self {
            table,
            block_size: kv.block_size,
            stride: kv.kv_heads * kv.head_dim,
            head_offset: kv_head * kv.head_dim,
            head_dim: kv.head_dim,
            first,
            last,
        }
    }

    /// Rows in the set.
    pub fn len(&self) -> usize {
        self.last + 1 - self.first
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Distance between consecutive rows of a segment.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The set's rows in `data` (the layer's K or V storage), block by block, in order.
    pub fn segments<'d>(&'d self, data: &'d [f32]) -> impl Iterator<Item = Segment<'d>> + 'd {
        let mut pos = self.first;
        std::iter::from_fn(move || {
            if pos > self.last {
                return None;
            }
            let slot = pos % self.block_size;
            let rows = (self.block_size - slot).min(self.last + 1 - pos);
            let block = self.table[pos / self.block_size] as usize;
            let start = (block * self.block_size + slot) * self.stride + self.head_offset;
            let end = start + (rows - 1) * self.stride + self.head_dim;
            let segment = Segment {
                data: &data[start..end],
                rows,
                index: pos - self.first,
            };
            pos += rows;
            Some(segment)
        })
    }
}
