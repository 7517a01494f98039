//! Where a step's time goes: wall time per kind of work (matmul by weight format, output head,
//! attention, element-wise ops, sampling, scheduling), for `gridserve bench engine --profile`.
//!
//! Off by default, and then a timer costs one relaxed atomic load. The counters are global:
//! one engine thread runs steps, and the ops it times run one after another (each op may use
//! several cores inside, which is why this is wall time, not CPU time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A kind of work a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Token embedding lookup.
    Embedding,
    /// Projections by the weight's format in the file. On the CPU all run through the Q8_0
    /// kernel (Q5_0 converted losslessly, Q4_K/Q6_K requantized at load); q/k/v and gate/up
    /// run stacked as one matmul and count here.
    MatmulQ8_0,
    MatmulQ4K,
    MatmulQ6K,
    /// Projections in any other format.
    MatmulOther,
    /// The vocabulary projection (the largest matrix of a small model).
    OutputHead,
    Attention,
    /// RMS norms, RoPE, activations, residual adds, KV writes.
    Elementwise,
    /// Turning logits into tokens (penalties, top-k/p, the draw) and step bookkeeping.
    Sampling,
    /// Choosing the next step's batch.
    Scheduler,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Embedding,
        Stage::MatmulQ8_0,
        Stage::MatmulQ4K,
        Stage::MatmulQ6K,
        Stage::MatmulOther,
        Stage::OutputHead,
        Stage::Attention,
        Stage::Elementwise,
        Stage::Sampling,
        Stage::Scheduler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Embedding => "embedding",
            Stage::MatmulQ8_0 => "matmul q8_0/q5_0",
            Stage::MatmulQ4K => "matmul q4_k",
            Stage::MatmulQ6K => "matmul q6_k",
            Stage::MatmulOther => "matmul other",
            Stage::OutputHead => "output head",
            Stage::Attention => "attention",
            Stage::Elementwise => "norm/rope/act",
            Stage::Sampling => "sampling",
            Stage::Scheduler => "scheduler",
        }
    }

    fn index(self) -> usize {
        Stage::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];

/// Turns timing on or off (counters keep their values).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Zeroes every counter.
pub fn reset() {
    NANOS.iter().for_each(|n| n.store(0, Ordering::Relaxed));
}

/// Seconds spent per stage since the last reset, in `Stage::ALL` order.
pub fn snapshot() -> Vec<(Stage, f64)> {
    Stage::ALL
        .iter()
        .map(|&s| (s, NANOS[s.index()].load(Ordering::Relaxed) as f64 * 1e-9))
        .collect()
}

/// Runs `f`, charging its wall time to `stage` when profiling is on.
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let nanos = start.elapsed().as_nanos() as u64;
    NANOS[stage.index()].fetch_add(nanos, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test touches the global counters, so tests cannot race on them.
    #[test]
    fn timing_counts_only_while_enabled() {
        reset();
        time(Stage::Attention, || {
            std::thread::sleep(std::time::Duration::from_millis(2))
        });
        assert_eq!(snapshot()[Stage::Attention.index()].1, 0.0);
        set_enabled(true);
        let v = time(Stage::Attention, || {
            std::thread::sleep(std::time::Duration::from_millis(2));
            7
        });
        set_enabled(false);
        assert_eq!(v, 7);
        let (stage, secs) = snapshot()[Stage::Attention.index()];
        assert_eq!(stage, Stage::Attention);
        assert!(secs >= 0.002, "{secs}");
        reset();
        assert_eq!(snapshot()[Stage::Attention.index()].1, 0.0);
    }
}
