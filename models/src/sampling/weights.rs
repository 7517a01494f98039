//! Weight-space steps of a draw: turning a row into exp-weights with per-block sums, the
//! histogram-based top-p nucleus, candidate collection, and the cumulative-weight draw.

use super::row::{desc, fast_exp, negligible_gap, BLOCK, LANES};

/// Weights are in [0, 1], where the f32 bit pattern is monotone in the value, so the top bits
/// give order-preserving buckets (1/16 of an octave each): a radix-select first pass.
const HIST_BUCKETS: usize = 2048;

#[inline(always)]
fn weight_bucket(w: f32) -> usize {
    ((w.to_bits() >> 19) as usize).min(HIST_BUCKETS - 1)
}

/// Keeps the smallest highest-weight set of `cands` whose mass reaches `target`, at least one
/// token. Buckets locate the boundary, so only the boundary bucket is ever sorted.
pub(super) fn nucleus(cands: &mut Vec<(u32, f32)>, target: f64) {
    let mut mass = vec![0f64; HIST_BUCKETS];
    for c in cands.iter() {
        mass[weight_bucket(c.1)] += f64::from(c.1);
    }
    let mut cum = 0f64;
    let mut edge = None;
    for b in (0..HIST_BUCKETS).rev() {
        if mass[b] > 0.0 && cum + mass[b] >= target {
            edge = Some(b);
            break;
        }
        cum += mass[b];
    }
    // No edge means rounding left the target just out of reach: every token is needed.
    let Some(edge) = edge else { return };
    let mut boundary: Vec<(u32, f32)> = cands
        .iter()
        .filter(|c| weight_bucket(c.1) == edge)
        .copied()
        .collect();
    boundary.sort_unstable_by(desc);
    let mut last = boundary[0];
    for &c in &boundary {
        // Checked before adding, so the top token always survives.
        if cum >= target {
            break;
        }
        cum += f64::from(c.1);
        last = c;
    }
    cands.retain(|c| desc(c, &last) != std::cmp::Ordering::Greater);
}

/// Turns logits into weights exp((x - max) * scale) in place, zeroing those below `floor`.
/// Returns the total and records per-block sums so a draw need not re-scan the whole row.
pub(super) fn to_weights(
    row: &mut [f32],
    maxima: &[f32],
    max: f32,
    scale: f32,
    floor: f32,
    sums: &mut Vec<f64>,
) -> f64 {
    let gap = negligible_gap(row.len());
    sums.clear();
    for (block, &block_max) in row.chunks_mut(BLOCK).zip(maxima) {
        if (block_max - max) * scale < -gap {
            block.fill(0.0);
            sums.push(0.0);
            continue;
        }
        // f32 lanes over at most 256 values lose nothing that matters; blocks sum in f64.
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                let w = fast_exp((*x - max) * scale);
                *x = if w >= floor { w } else { 0.0 };
                *a += *x;
            }
        }
        let mut sum: f64 = acc.iter().map(|&a| f64::from(a)).sum();
        for x in chunks.into_remainder() {
            let w = fast_exp((*x - max) * scale);
            *x = if w >= floor { w } else { 0.0 };
            sum += f64::from(*x);
        }
        sums.push(sum);
    }
    sums.iter().sum()
}

/// Index whose cumulative weight first exceeds `target`, zero weights never chosen.
pub(super) fn draw_from_row(weights: &[f32], blocks: &[f64], target: f64) -> Option<usize> {
    let mut cum = 0f64;
    for (b, &block_sum) in blocks.iter().enumerate() {
        if block_sum > 0.0 && target < cum + block_sum {
            let start = b * BLOCK;
            let block = &weights[start..(start + BLOCK).min(weights.len())];
            for (j, &w) in block.iter().enumerate() {
                cum += f64::from(w);
                if target < cum {
                    return Some(start + j);
                }
            }
            // Block sums and this walk round differently; the sliver goes to the block's tail.
            return block.iter().rposition(|&w| w > 0.0).map(|j| start + j);
        }
        cum += block_sum;
    }
    None
}

pub(super) fn draw_from_cands(cands: &[(u32, f32)], target: f64) -> Option<u32> {
    let mut cum = 0f64;
    for c in cands {
        cum += f64::from(c.1);
        if target < cum {
            return Some(c.0);
        }
    }
    cands.iter().rev().find(|c| c.1 > 0.0).map(|c| c.0)
}

/// Collects (token, weight) for positive weights >= `floor`, visiting only blocks whose
/// maximum logit passes `block_passes`.
pub(super) fn collect_weights(
    weights: &[f32],
    maxima: &[f32],
    floor: f32,
    block_passes: impl Fn(f32) -> bool,
    out: &mut Vec<(u32, f32)>,
) {
    out.clear();
    for (b, _) in maxima.iter().enumerate().filter(|(_, &m)| block_passes(m)) {
        let start = b * BLOCK;
        let block = &weights[start..(start + BLOCK).min(weights.len())];
        // Write every token and advance only past admitted ones: on flat rows about half the
        // tokens pass, and a branch per token mispredicts constantly.
        let mut n = out.len();
        out.resize(n + block.len(), (0, 0.0));
        for (j, &w) in block.iter().enumerate() {
            out[n] = ((start + j) as u32, w);
            n += usize::from(w > 0.0 && w >= floor);
        }
        out.truncate(n);
    }
}
