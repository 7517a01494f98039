//! One replica: a `TwinCluster` (1 or TP GPUs), the engine's `Scheduler`, the `SimBackend`
//! and a policy, on its own virtual clock. `step` runs one engine step exactly as `serve`
//! would (schedule → twin step → backend → update); `idle_until` burns idle power.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gridserve_models::{ModelBackend, SeqId};

use super::arrivals::Arrival;
use super::backend::{sim_request, SimBackend};
use super::envelope::Envelope;
use super::policy::{Policy, PolicyInput};
use super::scenario::{Hardware, BLOCK_SIZE};
use super::stats::{Recorder, Span};
use crate::engine::{EnginePolicy, Priority, Scheduler, SeqEvent};
use crate::power::controller::Decision;
use crate::power::{Actuation, PowerSensor};
use crate::twin::{StepComposition, TwinCluster};
use crate::GatewayError;

/// A request in flight on this replica.
struct Track {
    arrived_seconds: f64,
    last_token_seconds: Option<f64>,
    generated: usize,
    expected: usize,
    priority: Priority,
}

pub struct Replica {
    cluster: TwinCluster,
    scheduler: Scheduler,
    backend: SimBackend,
    policy: Box<dyn Policy>,
    /// What the last decision lets the engine do.
    engine_policy: EnginePolicy,
    actuation: Actuation,
    /// Virtual seconds since the simulation started.
    clock_seconds: f64,
    /// `Instant` that virtual time 0 maps to (the scheduler's `now`).
    base: Instant,
    tick_seconds: f64,
    next_tick_seconds: f64,
    /// The fleet cap is split evenly: this replica's share is cap / `replicas`.
    replicas: usize,
    tracks: HashMap<SeqId, Track>,
}

impl Replica {
    pub fn new(
        hw: &Hardware,
        policy: Box<dyn Policy>,
        engine_policy: EnginePolicy,
        tick_seconds: f64,
        replicas: usize,
    ) -> Self {
        let backend = SimBackend::new(&hw.shape.name, hw.kv_blocks, BLOCK_SIZE, hw.max_seq_len);
        Self {
            cluster: TwinCluster::new(
                hw.profile.clone(),
                hw.shape.clone(),
                Some(hw.tensor_parallel),
            ),
            scheduler: Scheduler::new(backend.info()),
            backend,
            policy,
            engine_policy,
            actuation: Actuation::default(),
            clock_seconds: 0.0,
            base: Instant::now(),
            tick_seconds,
            next_tick_seconds: 0.0,
            replicas,
            tracks: HashMap::new(),
        }
    }

    pub fn clock_seconds(&self) -> f64 {
        self.clock_seconds
    }

    pub fn has_work(&self) -> bool {
        self.scheduler.has_work()
    }

    /// Requests queued or running here (join-shortest-queue routes on this).
    pub fn outstanding(&self) -> usize {
        self.scheduler.num_running() + self.scheduler.num_waiting()
    }

    pub fn cluster(&self) -> &TwinCluster {
        &self.cluster
    }

    pub fn preemptions(&self) -> u64 {
        self.scheduler.preemptions()
    }

    /// Queues an arrival (whose time may be before this replica's clock: it waits for the
    /// step in progress, as it would on a real server).
    pub fn admit(&mut self, id: SeqId, a: &Arrival) -> Result<(), GatewayError> {
        let at = self.base + Duration::from_secs_f64(a.at_seconds);
        let req = sim_request(a.prompt_tokens, a.output_tokens, a.priority);
        self.scheduler.add(id, req, at)?;
        self.tracks.insert(
            id,
            Track {
                arrived_seconds: a.at_seconds,
                last_token_seconds: None,
                generated: 0,
                expected: a.output_tokens,
                priority: a.priority,
            },
        );
        Ok(())
    }

    /// Consults the policy if a tick is due and applies its decision.
    fn maybe_tick(&mut self, envelope: &Envelope, rec: &mut Recorder) -> Result<(), GatewayError> {
        if self.clock_seconds < self.next_tick_seconds {
            return Ok(());
        }
        let sample = self.cluster.sample()?;
        let now = Duration::from_secs_f64(self.clock_seconds);
        let input = PolicyInput {
            now,
            at: self.base + now,
            sample: &sample,
            cap_watts: envelope
                .cap_at(self.clock_seconds)
                .map(|w| w / self.replicas as f64),
            running: self.scheduler.num_running(),
            waiting: self.scheduler.num_waiting(),
        };
        let decision = self.policy.tick(&input);
        self.apply(&decision, rec);
        let ticks = (self.clock_seconds / self.tick_seconds).floor() + 1.0;
        self.next_tick_seconds = ticks * self.tick_seconds;
        if self.next_tick_seconds <= self.clock_seconds {
            self.next_tick_seconds += self.tick_seconds; // the division rounded down
        }
        Ok(())
    }

    /// Applies a decision as `serve` does: knobs through `Actuation` (only what changed), the
    /// budget, admission gates and preemption on the scheduler; deferred requests past their
    /// deadline are refused.
    fn apply(&mut self, d: &Decision, rec: &mut Recorder) {
        let refusals = self.actuation.apply(d, &mut self.cluster);
        self.policy.refused(refusals);
        self.engine_policy = d.engine_policy(self.engine_policy.deferral_deadline);
        self.scheduler.set_gate(self.engine_policy.gate);
        if self.engine_policy.preempt_flexible {
            self.scheduler.preempt_tier(Priority::Flexible);
        }
        let now = self.base + Duration::from_secs_f64(self.clock_seconds);
        let deadline = self.engine_policy.deferral_deadline;
        for id in self.scheduler.expire_deferred(now, deadline) {
            self.tracks.remove(&id);
            rec.refused += 1;
        }
    }

    fn span(&self, start_seconds: f64, energy_joules: f64, clock_mhz: u32) -> Span {
        Span {
            start_seconds,
            end_seconds: self.clock_seconds,
            energy_joules,
            gpus: self.cluster.tensor_parallel(),
            clock_mhz,
            running: self.scheduler.num_running(),
            waiting: self.scheduler.num_waiting(),
        }
    }

    /// Runs one engine step; records its energy, tokens and latencies.
    pub fn step(&mut self, envelope: &Envelope, rec: &mut Recorder) -> Result<(), GatewayError> {
        self.maybe_tick(envelope, rec)?;
        if !self.scheduler.has_runnable_work() {
            // Only deferred work: wait for the next tick, which may open the gate.
            let next_tick = self.next_tick_seconds;
            return self.idle_until(next_tick, next_tick - self.clock_seconds, envelope, rec);
        }
        let now = self.base + Duration::from_secs_f64(self.clock_seconds);
        let plan = self.scheduler.schedule(self.engine_policy.budget, now);
        if plan.batch.seqs.is_empty() {
            return Err(GatewayError::Bench(
                "simulate: the scheduler produced an empty step with work pending".into(),
            ));
        }
        let composition = StepComposition::from_batch(&plan.batch);
        let clock_mhz = self.cluster.gpus()[0].clock_mhz();
        let start = self.clock_seconds;
        let running = self.scheduler.num_running();
        let waiting = self.scheduler.num_waiting();
        let mut cost = self.cluster.advance(&composition);
        self.clock_seconds += cost.duration_seconds;
        let duty = self.engine_policy.duty_cycle;
        if duty > 0.0 && duty < 1.0 {
            // The engine pauses between steps, as `serve` does; the pause is idle power.
            let before = self.cluster.total_energy_joules();
            let pause = cost.duration_seconds * (1.0 - duty) / duty;
            self.cluster.idle(Duration::from_secs_f64(pause));
            self.clock_seconds += pause;
            cost.energy_joules += self.cluster.total_energy_joules() - before;
        }
        let out = self.backend.step(&plan.batch)?;
        let events = self.scheduler.update(&plan, &out);
        let mut span = self.span(start, cost.energy_joules, clock_mhz);
        (span.running, span.waiting) = (running, waiting);
        rec.span(&span);
        self.record(events, rec)
    }

    fn record(&mut self, events: Vec<SeqEvent>, rec: &mut Recorder) -> Result<(), GatewayError> {
        let end = self.clock_seconds;
        let mut tokens = 0;
        for event in events {
            match event {
                SeqEvent::Token { seq, .. } => {
                    let Some(t) = self.tracks.get_mut(&seq) else {
                        continue;
                    };
                    match t.last_token_seconds {
                        None => rec.ttft(end - t.arrived_seconds, t.priority),
                        Some(last) => rec.itl(end - last, t.priority),
                    }
                    t.last_token_seconds = Some(end);
                    t.generated += 1;
                    tokens += 1;
                }
                SeqEvent::Finished { seq, reason } => {
                    let Some(t) = self.tracks.remove(&seq) else {
                        continue;
                    };
                    if t.generated != t.expected {
                        return Err(GatewayError::Bench(format!(
                            "simulate: request {seq} finished ({}) after {} of {} tokens",
                            reason.as_str(),
                            t.generated,
                            t.expected
                        )));
                    }
                    rec.e2e(end - t.arrived_seconds, t.priority);
                    rec.completed += 1;
                }
            }
        }
        rec.tokens(end, tokens);
        Ok(())
    }

    /// Idles (no work) until `t_seconds`, in chunks of at most `chunk_seconds` and never past
    /// a policy tick, so firmware, telemetry and the policy see time pass in small steps.
    pub fn idle_until(
        &mut self,
        t_seconds: f64,
        chunk_seconds: f64,
        envelope: &Envelope,
        rec: &mut Recorder,
    ) -> Result<(), GatewayError> {
        while self.clock_seconds < t_seconds {
            self.maybe_tick(envelope, rec)?;
            let to_tick = self.next_tick_seconds - self.clock_seconds;
            let dt = (t_seconds - self.clock_seconds)
                .min(chunk_seconds)
                .min(to_tick);
            let before = self.cluster.total_energy_joules();
            let clock_mhz = self.cluster.gpus()[0].clock_mhz();
            let start = self.clock_seconds;
            self.cluster.idle(Duration::from_secs_f64(dt));
            self.clock_seconds += dt;
            let span = self.span(
                start,
                self.cluster.total_energy_joules() - before,
                clock_mhz,
            );
            rec.span(&span);
        }
        Ok(())
    }
}
