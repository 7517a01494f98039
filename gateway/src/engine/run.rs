//! The synchronous step loop: schedule → step → update, until nothing is left. The CLI and
//! benchmarks call it directly; the server's engine thread runs the same three calls.

use std::time::{Duration, Instant};

use gridserve_models::profile::{self, Stage};
use gridserve_models::{ModelBackend, ModelError, SeqId};

use super::scheduler::{Scheduler, SeqEvent, StepBudget};

/// What one step did, for timing and metrics.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub seqs: usize,
    pub tokens: usize,
    /// Sequences that were decoding (one token, sampled) rather than prefilling.
    pub decode_seqs: usize,
    pub duration: Duration,
}

/// Runs steps until the scheduler is empty. After each step `on_step` sees the step's stats
/// and events and returns sequences to end now (e.g. a stop string matched in their text).
pub fn run_until_idle(
    backend: &mut dyn ModelBackend,
    sched: &mut Scheduler,
    budget: StepBudget,
    mut on_step: impl FnMut(&StepStats, Vec<SeqEvent>) -> Vec<SeqId>,
) -> Result<(), ModelError> {
    while sched.has_work() {
        let start = Instant::now();
        let plan = profile::time(Stage::Scheduler, || sched.schedule(budget, start));
        if plan.batch.seqs.is_empty() {
            // Nothing fits (the KV cache cannot hold even one chunk): the scheduler's `add`
            // rejects requests that can never fit, so this is a bug, not a load condition.
            return Err(ModelError::Batch(
                "scheduler produced an empty step with work pending".into(),
            ));
        }
        let out = sched.run_step(backend, &plan)?;
        let events = profile::time(Stage::Sampling, || sched.update(&plan, &out));
        let stats = StepStats {
            seqs: plan.batch.seqs.len(),
            tokens: plan.batch.num_tokens(),
            decode_seqs: plan
                .batch
                .seqs
                .iter()
                .filter(|s| s.tokens.len() == 1 && s.sample)
                .count(),
            duration: start.elapsed(),
        };
        for id in on_step(&stats, events) {
            sched.abort(id);
        }
    }
    Ok(())
}
