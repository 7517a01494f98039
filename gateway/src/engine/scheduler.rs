//! The sans-IO scheduler: which sequences run in the next step, with how many tokens each,
//! under a `StepBudget` it is handed every step. It owns the KV block allocator; running out
//! of blocks preempts the lowest-priority, most recently admitted sequence, which is later
//! recomputed from its prompt and the tokens it had generated.
//!
//! vLLM's rule: a sequence only tracks how many of its tokens are in the KV cache
//! (`computed`) out of all it has (prompt + output). A prompt chunk and a decode token are the
//! same thing: the uncomputed tail.

use std::collections::HashMap;
use std::time::Instant;

use gridserve_models::sampling::{Sampled, Sampler};
use gridserve_models::{
    BackendInfo, BlockAllocator, DeviceSampled, ModelBackend, SampleRow, SeqId, SeqStep, StepBatch,
    StepOutput,
};

use super::request::{FinishReason, GenerationRequest, Priority};
use crate::GatewayError;

/// The most work one step may hold. The power controller moves this; the scheduler reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepBudget {
    pub max_tokens: usize,
    pub max_seqs: usize,
}

/// Which tiers may leave the queue. Interactive work is always admitted; the power controller
/// closes flexible, then standard, under pressure. Closed tiers wait in the queue (deferred).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionGate {
    pub standard: bool,
    pub flexible: bool,
}

impl AdmissionGate {
    pub const OPEN: Self = Self {
        standard: true,
        flexible: true,
    };

    pub fn admits(self, priority: Priority) -> bool {
        match priority {
            Priority::Interactive => true,
            Priority::Standard => self.standard,
            Priority::Flexible => self.flexible,
        }
    }
}

/// What the next step runs.
#[derive(Debug, Default)]
pub struct StepPlan {
    pub batch: StepBatch,
    /// Sequences preempted to make room for this step (their KV was freed).
    pub preempted: Vec<SeqId>,
}

#[derive(Debug)]
pub enum SeqEvent {
    Token { seq: SeqId, sampled: Sampled },
    Finished { seq: SeqId, reason: FinishReason },
}

struct Sequence {
    id: SeqId,
    req: GenerationRequest,
    sampler: Sampler,
    /// Prompt followed by generated tokens.
    tokens: Vec<u32>,
    computed: usize,
    blocks: Vec<u32>,
    arrived: Instant,
    /// Admission order, for "most recently admitted is preempted first".
    admitted: u64,
}

impl Sequence {
    fn generated(&self) -> usize {
        self.tokens.len() - self.req.prompt.len()
    }
}

pub struct Scheduler {
    alloc: BlockAllocator,
    max_seq_len: usize,
    eos_token_ids: Vec<u32>,
    waiting: Vec<Sequence>,
    running: Vec<Sequence>,
    admissions: u64,
    preemptions: u64,
    gate: AdmissionGate,
}

impl Scheduler {
    pub fn new(info: &BackendInfo) -> Self {
        Self {
            alloc: BlockAllocator::new(info.num_blocks, info.block_size),
            max_seq_len: info.max_seq_len,
            eos_token_ids: info.eos_token_ids.clone(),
            waiting: Vec::new(),
            running: Vec::new(),
            admissions: 0,
            preemptions: 0,
            gate: AdmissionGate::OPEN,
        }
    }

    /// Queues a request. Rejects what could never run: an empty prompt, or one that leaves no
    /// room for a single new token within the context or the whole KV cache.
    pub fn add(
        &mut self,
        id: SeqId,
        req: GenerationRequest,
        now: Instant,
    ) -> Result<(), GatewayError> {
        let limit = self
            .max_seq_len
            .min(self.alloc.num_total() * self.alloc.block_size());
        if req.prompt.is_empty() {
            return Err(GatewayError::InvalidRequest {
                param: "prompt",
                message: "the prompt is empty".into(),
            });
        }
        if req.prompt.len() >= limit {
            return Err(GatewayError::InvalidRequest {
                param: "prompt",
                message: format!(
                    "the prompt has {} tokens; this model's context is {limit}",
                    req.prompt.len()
                ),
            });
        }
        if req.max_tokens == 0 {
            return Err(GatewayError::InvalidRequest {
                param: "max_tokens",
                message: "must be at least 1".into(),
            });
        }
        // A sequence alone must always fit, or it would preempt itself forever. The last
        // sampled token never needs a KV slot, hence the - 1.
        let kv_slots = self.alloc.num_total() * self.alloc.block_size();
        if req.prompt.len() + req.max_tokens - 1 > kv_slots {
            return Err(GatewayError::InvalidRequest {
                param: "max_tokens",
                message: format!(
                    "{} prompt + {} completion tokens exceed the KV cache of {kv_slots} tokens",
                    req.prompt.len(),
                    req.max_tokens
                ),
            });
        }
        let sampler = Sampler::new(req.sampling.clone());
        let seq = Sequence {
            id,
            tokens: req.prompt.clone(),
            req,
            sampler,
            computed: 0,
            blocks: Vec::new(),
            arrived: now,
            admitted: 0,
        };
        self.waiting.push(seq);
        Ok(())
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// Whether a step could run now: something is running, or waiting in an open tier.
    pub fn has_runnable_work(&self) -> bool {
        !self.running.is_empty()
            || self
                .waiting
                .iter()
                .any(|s| self.gate.admits(s.req.priority))
    }

    /// Waiting sequences of `priority` that its closed gate holds back.
    pub fn num_deferred(&self, priority: Priority) -> usize {
        if self.gate.admits(priority) {
            return 0;
        }
        self.waiting
            .iter()
            .filter(|s| s.req.priority == priority)
            .count()
    }

    /// Opens or closes tiers for admission from now on.
    pub fn set_gate(&mut self, gate: AdmissionGate) {
        self.gate = gate;
    }

    /// Preempts every running sequence of `priority` (KV freed, recomputed when admitted
    /// again) and returns their ids.
    pub fn preempt_tier(&mut self, priority: Priority) -> Vec<SeqId> {
        let mut ids = Vec::new();
        while let Some(i) = self.running.iter().position(|s| s.req.priority == priority) {
            ids.push(self.running[i].id);
            self.preempt(i);
        }
        ids
    }

    /// Removes waiting sequences of closed tiers that arrived more than `deadline` before
    /// `now`, returning their ids (the caller tells their clients).
    pub fn expire_deferred(&mut self, now: Instant, deadline: std::time::Duration) -> Vec<SeqId> {
        let gate = self.gate;
        let expired: Vec<SeqId> = self
            .waiting
            .iter()
            .filter(|s| !gate.admits(s.req.priority))
            .filter(|s| now.saturating_duration_since(s.arrived) > deadline)
            .map(|s| s.id)
            .collect();
        for &id in &expired {
            self.abort(id);
        }
        expired
    }

    /// Fraction of KV blocks in use, 0..=1.
    pub fn kv_usage(&self) -> f64 {
        1.0 - self.alloc.num_free() as f64 / self.alloc.num_total() as f64
    }

    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    /// Drops a sequence wherever it is and frees its blocks. Returns whether it existed.
    pub fn abort(&mut self, id: SeqId) -> bool {
        for queue in [&mut self.running, &mut self.waiting] {
            if let Some(i) = queue.iter().position(|s| s.id == id) {
                let mut seq = queue.remove(i);
                self.alloc.free(&mut seq.blocks);
                return true;
            }
        }
        false
    }

    /// Plans the next step within `budget`: running sequences in (priority, admission) order,
    /// then waiting ones. One exception keeps a higher tier from queueing behind a lower
    /// tier's long prompt or full batch: while work of a higher tier waits, running
    /// lower-tier sequences let the newcomers in first and take what budget is left after
    /// them (they keep their KV cache; at worst they skip a step).
    pub fn schedule(&mut self, budget: StepBudget, _now: Instant) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut tokens_left = budget.max_tokens;
        self.running.sort_by_key(|s| (s.req.priority, s.admitted));
        let gate = self.gate;
        let first_waiting = self
            .waiting
            .iter()
            .filter(|s| gate.admits(s.req.priority))
            .map(|s| s.req.priority)
            .min();
        let mut yielded: Vec<(SeqId, Priority)> = Vec::new();
        let mut i = 0;
        while i < self.running.len() && tokens_left > 0 && plan.batch.seqs.len() < budget.max_seqs {
            let seq = &self.running[i];
            let remaining = seq.tokens.len() - seq.computed;
            if first_waiting.is_some_and(|p| p < seq.req.priority) {
                yielded.push((seq.id, seq.req.priority));
                i += 1;
                continue;
            }
            let take = remaining.min(tokens_left);
            if !self.reserve_running(i, take, &mut plan) {
                break; // `i` itself was preempted: nothing after it can run either
            }
            plan.batch.seqs.push(step_for(&self.running[i], take));
            tokens_left -= take;
            i += 1;
        }
        if plan.preempted.is_empty() {
            // Higher tiers first, then the yielded prefills, then the rest of the queue.
            let yielding_tier = yielded.iter().map(|(_, p)| *p).min();
            if yielding_tier.is_some() {
                tokens_left =
                    self.admit_waiting(&mut plan, tokens_left, budget.max_seqs, yielding_tier);
                tokens_left =
                    self.resume_yielded(&yielded, &mut plan, tokens_left, budget.max_seqs);
            }
            self.admit_waiting(&mut plan, tokens_left, budget.max_seqs, None);
        }
        plan
    }

    /// Gives sequences that yielded to a higher tier what budget is left, without preempting
    /// anything for them.
    fn resume_yielded(
        &mut self,
        yielded: &[(SeqId, Priority)],
        plan: &mut StepPlan,
        mut tokens_left: usize,
        max_seqs: usize,
    ) -> usize {
        for (id, _) in yielded {
            if tokens_left == 0 || plan.batch.seqs.len() >= max_seqs {
                break;
            }
            let Some(seq) = self.running.iter_mut().find(|s| s.id == *id) else {
                continue;
            };
            let Some(take) = grow_for_chunk(&mut self.alloc, seq, tokens_left) else {
                break;
            };
            plan.batch.seqs.push(step_for(seq, take));
            tokens_left -= take;
        }
        tokens_left
    }

    /// Grows running sequence `i`'s blocks for `take` more tokens, preempting from the back of
    /// the running list (lowest priority, newest) until it fits. False if `i` was preempted.
    fn reserve_running(&mut self, i: usize, take: usize, plan: &mut StepPlan) -> bool {
        loop {
            let seq = &mut self.running[i];
            if self
                .alloc
                .grow(&mut seq.blocks, seq.computed + take)
                .is_some()
            {
                return true;
            }
            let victim = self.running.len() - 1;
            let id = self.running[victim].id;
            self.preempt(victim);
            plan.preempted.push(id);
            if victim == i {
                return false;
            }
        }
    }

    fn preempt(&mut self, index: usize) {
        let mut seq = self.running.remove(index);
        self.alloc.free(&mut seq.blocks);
        seq.computed = 0;
        self.preemptions += 1;
        self.waiting.push(seq);
    }

    /// Admits waiting sequences in (priority, arrival) order while budget and blocks last —
    /// only tiers above `above` when it is set — and returns the budget left. The first that
    /// does not fit stops admission, so a big request is not starved by small ones.
    fn admit_waiting(
        &mut self,
        plan: &mut StepPlan,
        mut tokens_left: usize,
        max_seqs: usize,
        above: Option<Priority>,
    ) -> usize {
        self.waiting.sort_by_key(|s| (s.req.priority, s.arrived));
        let gate = self.gate;
        let wanted = |p: Priority| gate.admits(p) && above.is_none_or(|a| p < a);
        while tokens_left > 0 && plan.batch.seqs.len() < max_seqs {
            // Sequences of closed tiers stay queued; they do not block the open ones.
            let Some(next) = self.waiting.iter().position(|s| wanted(s.req.priority)) else {
                break;
            };
            let Some(take) = grow_for_chunk(&mut self.alloc, &mut self.waiting[next], tokens_left)
            else {
                break;
            };
            let mut seq = self.waiting.remove(next);
            self.admissions += 1;
            seq.admitted = self.admissions;
            plan.batch.seqs.push(step_for(&seq, take));
            tokens_left -= take;
            self.running.push(seq);
        }
        tokens_left
    }

    /// The rows of `plan` the backend may sample on its device, with this step's parameters
    /// (see `Sampler::device_row`); the others need their logits on the host.
    pub fn device_sampling(&mut self, plan: &StepPlan) -> Vec<(SeqId, SampleRow)> {
        let running = &mut self.running;
        plan.batch
            .seqs
            .iter()
            .filter(|s| s.sample)
            .filter_map(|s| {
                let seq = running.iter_mut().find(|r| r.id == s.seq)?;
                seq.sampler.device_row().map(|row| (s.seq, row))
            })
            .collect()
    }

    /// Runs a planned step, letting a backend that samples on its device do so for the rows
    /// that allow it.
    pub fn run_step(
        &mut self,
        backend: &mut dyn ModelBackend,
        plan: &StepPlan,
    ) -> Result<StepOutput, gridserve_models::ModelError> {
        let sampling = match backend.samples_on_device() {
            true => self.device_sampling(plan),
            false => Vec::new(),
        };
        backend.step_sampling(&plan.batch, &sampling)
    }

    /// Applies a step's results: advances what was computed, samples where logits came back,
    /// and finishes sequences that hit a stop condition (freeing their blocks).
    pub fn update(&mut self, plan: &StepPlan, out: &StepOutput) -> Vec<SeqEvent> {
        let logits: HashMap<SeqId, &[f32]> = out.rows().collect();
        let on_device: HashMap<SeqId, &DeviceSampled> =
            out.sampled().iter().map(|d| (d.seq, d)).collect();
        let mut events = Vec::new();
        let mut finished = Vec::new();
        for step in &plan.batch.seqs {
            let Some(seq) = self.running.iter_mut().find(|s| s.id == step.seq) else {
                continue; // aborted while the step ran
            };
            seq.computed = step.start_pos + step.tokens.len();
            let sampled = match (on_device.get(&seq.id), logits.get(&seq.id)) {
                (Some(d), _) => Sampled {
                    token: d.token,
                    logprob: d.logprob,
                    top: Vec::new(),
                },
                (None, Some(row)) => seq.sampler.sample(row),
                (None, None) => continue,
            };
            seq.sampler.observe(sampled.token);
            seq.tokens.push(sampled.token);
            let token = sampled.token;
            events.push(SeqEvent::Token {
                seq: seq.id,
                sampled,
            });
            if let Some(reason) = stop_reason(seq, token, &self.eos_token_ids, self.max_seq_len) {
                finished.push(seq.id);
                events.push(SeqEvent::Finished {
                    seq: seq.id,
                    reason,
                });
            }
        }
        for id in finished {
            self.abort(id);
        }
        events
    }
}

/// Grows `seq`'s blocks for its next chunk (what is left of it, at most `tokens_left`) and
/// returns the chunk's size; None when the KV cache has no room (nothing is preempted).
fn grow_for_chunk(
    alloc: &mut BlockAllocator,
    seq: &mut Sequence,
    tokens_left: usize,
) -> Option<usize> {
    let take = (seq.tokens.len() - seq.computed).min(tokens_left);
    alloc.grow(&mut seq.blocks, seq.computed + take)?;
    Some(take)
}

fn step_for(seq: &Sequence, take: usize) -> SeqStep {
    let start = seq.computed;
    SeqStep {
        seq: seq.id,
        tokens: seq.tokens[start..start + take].to_vec(),
        start_pos: start,
        block_table: seq.blocks.clone(),
        sample: start + take == seq.tokens.len(),
    }
}

fn stop_reason(
    seq: &Sequence,
    token: u32,
    eos: &[u32],
    max_seq_len: usize,
) -> Option<FinishReason> {
    let is_eos = !seq.req.ignore_eos && eos.contains(&token);
    if is_eos || seq.req.stop_token_ids.contains(&token) {
        Some(FinishReason::Stop)
    } else if seq.generated() >= seq.req.max_tokens || seq.tokens.len() >= max_seq_len {
        Some(FinishReason::Length)
    } else {
        None
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
