//! The thread pool a step's parallel kernels run on: candle's barrier pool, whose workers
//! spin briefly between calls.
//!
//! A decode step makes ~90 short parallel calls; waking sleeping workers for each (rayon's
//! model once its threads park) cost more than the work at batch 1 — measured 31.2 vs
//! 26.7 ms per step. Keeping every kernel of a step on one pool also avoids two pools'
//! spinning workers competing for the same cores.

use std::sync::atomic::{AtomicUsize, Ordering};

use gridserve_kernels::cpu::TaskRunner;

pub struct StepPool;

impl TaskRunner for StepPool {
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let next = AtomicUsize::new(0);
        candle_core::utils::barrier_pool().execute(|_worker| loop {
            let task = next.fetch_add(1, Ordering::Relaxed);
            if task >= n_tasks {
                break;
            }
            f(task);
        });
    }
}
