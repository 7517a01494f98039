//! The engine thread: it alone owns the model and its KV cache. Each turn it takes in new
//! requests, drops cancelled ones, runs one step under the current budget, and sends every
//! request its tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gridserve_models::{ModelBackend, SeqId};
use metrics::{counter, gauge, histogram};
use tokio::sync::{mpsc, watch};

use super::energy::{EnergyBook, StepMeter};
use super::handle::{EngineCommand, EngineEvent, EngineHandle, EngineStatus, TokenEvent};
use super::policy::EnginePolicy;
use super::request::FinishReason;
use super::request::Priority;
use super::scheduler::{Scheduler, SeqEvent, StepPlan};
use crate::metrics as m;

/// How often the thread looks again while only deferred work is queued.
const DEFERRED_POLL: Duration = Duration::from_millis(20);

/// Longest pause after one step, so a tiny duty cycle cannot stall the thread for long.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Pauses so that computing takes `duty_cycle` of the time: step × (1 − d) / d.
fn pause_for_duty_cycle(step: Duration, duty_cycle: f64) {
    if duty_cycle < 1.0 && duty_cycle > 0.0 {
        let pause = step.mul_f64((1.0 - duty_cycle) / duty_cycle).min(MAX_PAUSE);
        std::thread::sleep(pause);
    }
}

/// Timing and routing of one live request.
struct Live {
    events: mpsc::UnboundedSender<EngineEvent>,
    arrival: Instant,
    prompt_tokens: usize,
    priority: Priority,
    generated: u64,
    scheduled: bool,
    last_token: Option<Instant>,
}

/// Controls a running engine thread.
pub struct EngineThread {
    join: Option<JoinHandle<()>>,
    abort_all: Arc<AtomicBool>,
}

impl EngineThread {
    /// Ends every in-flight request now (finish reason `abort`); used when a drain times out.
    pub fn abort_all(&self) {
        self.abort_all.store(true, Ordering::SeqCst);
    }

    /// Waits for the thread to end. It ends once every `EngineHandle` is dropped and the
    /// requests it holds are done.
    pub fn join(mut self) {
        if let Some(j) = self.join.take() {
            if j.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

/// Starts the engine thread for `backend`. The policy is read before every step, so whoever
/// holds the `watch::Sender` (the power controller) steers the batch size and admission.
pub fn spawn_engine(
    backend: Box<dyn ModelBackend>,
    budget: watch::Receiver<EnginePolicy>,
    max_waiting: usize,
) -> std::io::Result<(EngineHandle, EngineThread)> {
    spawn_metered_engine(0, backend, None, budget, max_waiting)
}

/// As [`spawn_engine`], measuring every step's energy with `meter` and reporting each
/// request's share on its tokens. `index` tells engines apart (data parallel: one per GPU)
/// in the per-engine gauges' `engine` label and the thread's name.
pub fn spawn_metered_engine(
    index: usize,
    backend: Box<dyn ModelBackend>,
    meter: Option<Box<dyn StepMeter>>,
    budget: watch::Receiver<EnginePolicy>,
    max_waiting: usize,
) -> std::io::Result<(EngineHandle, EngineThread)> {
    let (tx, rx) = mpsc::channel(max_waiting.max(1));
    let status = Arc::new(EngineStatus::default());
    let abort_all = Arc::new(AtomicBool::new(false));
    let energy = meter.map(EnergyBook::new);
    let source = energy.as_ref().map(|e| e.source());
    let handle = EngineHandle::new(
        tx,
        status.clone(),
        backend.info().clone(),
        max_waiting,
        source,
    );
    let model_name = backend.info().model_name.clone();
    // Counters that may stay at zero for a long time are exported from the start, so
    // dashboards and alerts see a series rather than nothing.
    counter!(m::NUM_PREEMPTIONS, "model_name" => model_name.clone()).increment(0);
    counter!(m::ADMISSION_REJECTIONS, "reason" => "queue_full").increment(0);
    let sched = Scheduler::new(backend.info());
    let mut engine = Engine {
        backend,
        sched,
        rx,
        policy: budget,
        status,
        live: HashMap::new(),
        abort_all: abort_all.clone(),
        model_name,
        engine_label: index.to_string(),
        energy,
    };
    let join = std::thread::Builder::new()
        .name(format!("engine-{index}"))
        .spawn(move || engine.run())?;
    Ok((
        handle,
        EngineThread {
            join: Some(join),
            abort_all,
        },
    ))
}

struct Engine {
    backend: Box<dyn ModelBackend>,
    sched: Scheduler,
    rx: mpsc::Receiver<EngineCommand>,
    policy: watch::Receiver<EnginePolicy>,
    status: Arc<EngineStatus>,
    live: HashMap<SeqId, Live>,
    abort_all: Arc<AtomicBool>,
    model_name: String,
    /// The `engine` label of the per-engine gauges.
    engine_label: String,
    energy: Option<EnergyBook>,
}

impl Engine {
    fn run(&mut self) {
        while self.take_commands() {
            // Published before the step too, so admission sees the requests just taken in.
            self.publish_status();
            if self.abort_all.swap(false, Ordering::SeqCst) {
                let ids: Vec<SeqId> = self.live.keys().copied().collect();
                ids.into_iter().for_each(|id| {
                    self.end(
                        id,
                        EngineEvent::Finished {
                            reason: FinishReason::Abort,
                        },
                    )
                });
            }
            self.drop_cancelled();
            let policy = *self.policy.borrow();
            self.apply(&policy);
            if self.sched.has_runnable_work() {
                let started = Instant::now();
                self.step(policy);
                pause_for_duty_cycle(started.elapsed(), policy.duty_cycle);
            }
            self.publish_status();
        }
        tracing::info!("engine thread stopped");
    }

    /// Takes in submitted requests; blocks while there is nothing to do. False once every
    /// handle is gone and nothing is left to run.
    fn take_commands(&mut self) -> bool {
        if !self.sched.has_work() {
            match self.rx.blocking_recv() {
                Some(cmd) => self.accept(cmd),
                None => return false,
            }
        } else if !self.sched.has_runnable_work() {
            // Only deferred work: wait for the policy to open, a new request or a deadline.
            std::thread::sleep(DEFERRED_POLL);
        }
        while let Ok(cmd) = self.rx.try_recv() {
            self.accept(cmd);
        }
        true
    }

    fn accept(&mut self, cmd: EngineCommand) {
        let EngineCommand::Submit {
            id,
            request,
            arrival,
            events,
        } = cmd;
        self.status.queued.fetch_sub(1, Ordering::Relaxed);
        let prompt_tokens = request.prompt.len();
        let priority = request.priority;
        match self.sched.add(id, request, arrival) {
            Ok(()) => {
                self.live.insert(
                    id,
                    Live {
                        events,
                        arrival,
                        prompt_tokens,
                        priority,
                        generated: 0,
                        scheduled: false,
                        last_token: None,
                    },
                );
            }
            Err(e) => {
                let _ = events.send(EngineEvent::Failed {
                    message: e.to_string(),
                    retry_after: None,
                });
            }
        }
    }

    /// Requests whose stream was dropped (client gone, stop string) leave before the step.
    fn drop_cancelled(&mut self) {
        let gone: Vec<SeqId> = self
            .live
            .iter()
            .filter(|(_, l)| l.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.end(
                id,
                EngineEvent::Finished {
                    reason: FinishReason::Abort,
                },
            );
        }
    }

    /// Applies the controller's policy: admission gates, flexible preemption, and refusing
    /// deferred requests past their deadline.
    fn apply(&mut self, policy: &EnginePolicy) {
        self.sched.set_gate(policy.gate);
        if policy.preempt_flexible {
            let preempted = self.sched.preempt_tier(Priority::Flexible);
            if !preempted.is_empty() {
                counter!(m::NUM_PREEMPTIONS, "model_name" => self.model_name.clone())
                    .increment(preempted.len() as u64);
            }
        }
        let deadline = policy.deferral_deadline;
        for id in self.sched.expire_deferred(Instant::now(), deadline) {
            let message = format!(
                "deferred for over {} s because the power envelope is tight; retry later",
                deadline.as_secs()
            );
            counter!(m::ADMISSION_REJECTIONS, "reason" => "deferral_deadline").increment(1);
            let retry_after = Some(policy.retry_after);
            self.end(
                id,
                EngineEvent::Failed {
                    message,
                    retry_after,
                },
            );
        }
    }

    fn step(&mut self, policy: EnginePolicy) {
        let start = Instant::now();
        let plan = self.sched.schedule(policy.budget, start);
        if plan.batch.seqs.is_empty() {
            // `Scheduler::add` only admits requests that fit the whole KV cache, so some
            // sequence can always run; an empty plan here is a scheduler bug. Fail the queue
            // rather than spin.
            tracing::error!("scheduler planned an empty step with work pending");
            let ids: Vec<SeqId> = self.live.keys().copied().collect();
            for id in ids {
                self.end(
                    id,
                    EngineEvent::Failed {
                        message: "internal scheduling error".into(),
                        retry_after: None,
                    },
                );
            }
            return;
        }
        if !plan.preempted.is_empty() {
            counter!(m::NUM_PREEMPTIONS, "model_name" => self.model_name.clone())
                .increment(plan.preempted.len() as u64);
        }
        self.note_scheduled(&plan, start);
        // A panic inside a backend (a bug, or a library's assertion) must not take the
        // engine thread and every other request down with it: it fails this step only.
        if let Some(e) = self.energy.as_mut() {
            e.begin(&plan.batch);
        }
        let (backend, sched) = (&mut self.backend, &mut self.sched);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sched.run_step(backend.as_mut(), &plan)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(gridserve_models::ModelError::Batch(format!(
                "backend panicked: {what}"
            )))
        });
        match result {
            Ok(out) => {
                if let Some(e) = self.energy.as_mut() {
                    e.end(&plan.batch, out.len(), Instant::now());
                }
                let events = self.sched.update(&plan, &out);
                self.dispatch(events);
            }
            Err(e) => {
                // The batch was checked before it ran, so this is a bug in a backend: fail the
                // requests of this step, keep the engine (and everyone else) alive.
                tracing::error!("engine step failed: {e}");
                for s in &plan.batch.seqs {
                    self.sched.abort(s.seq);
                    self.end(
                        s.seq,
                        EngineEvent::Failed {
                            message: format!("engine error: {e}"),
                            retry_after: None,
                        },
                    );
                }
            }
        }
        histogram!(m::STEP_DURATION).record(start.elapsed().as_secs_f64());
        histogram!(m::STEP_BATCH_SIZE).record(plan.batch.seqs.len() as f64);
        histogram!(m::STEP_TOKENS).record(plan.batch.num_tokens() as f64);
    }

    fn note_scheduled(&mut self, plan: &StepPlan, now: Instant) {
        for s in &plan.batch.seqs {
            if let Some(live) = self.live.get_mut(&s.seq) {
                if !live.scheduled {
                    live.scheduled = true;
                    histogram!(m::REQUEST_QUEUE_TIME, "model_name" => self.model_name.clone())
                        .record(now.duration_since(live.arrival).as_secs_f64());
                }
            }
        }
    }

    fn dispatch(&mut self, events: Vec<SeqEvent>) {
        let now = Instant::now();
        for event in events {
            match event {
                SeqEvent::Token { seq, sampled } => {
                    let Some(live) = self.live.get_mut(&seq) else {
                        continue;
                    };
                    live.generated += 1;
                    let since = live.last_token.replace(now);
                    let (name, from) = match since {
                        Some(prev) => (m::INTER_TOKEN_LATENCY, prev),
                        None => (m::TIME_TO_FIRST_TOKEN, live.arrival),
                    };
                    histogram!(name, "model_name" => self.model_name.clone())
                        .record(now.duration_since(from).as_secs_f64());
                    counter!(m::GENERATION_TOKENS, "model_name" => self.model_name.clone())
                        .increment(1);
                    let token = TokenEvent {
                        token: sampled.token,
                        logprob: sampled.logprob,
                        top: sampled.top,
                        energy_joules: self.energy.as_ref().map(|e| e.of(seq)),
                    };
                    let _ = live.events.send(EngineEvent::Token(token));
                }
                SeqEvent::Finished { seq, reason } => {
                    self.end(seq, EngineEvent::Finished { reason })
                }
            }
        }
    }

    /// Sends a request its last event and forgets it.
    fn end(&mut self, id: SeqId, last: EngineEvent) {
        self.sched.abort(id);
        if let Some(e) = self.energy.as_mut() {
            e.close(id);
        }
        let Some(live) = self.live.remove(&id) else {
            return;
        };
        let reason = match &last {
            EngineEvent::Finished { reason } => reason.as_str(),
            _ => "error",
        };
        let tier = live.priority.as_str();
        match &last {
            EngineEvent::Finished { reason } if *reason != FinishReason::Abort => {
                counter!(m::TIER_GOODPUT_TOKENS, "tier" => tier).increment(live.generated);
                counter!(m::TIER_COMPLETED, "tier" => tier).increment(1);
            }
            EngineEvent::Failed {
                retry_after: Some(_),
                ..
            } => counter!(m::TIER_REJECTIONS, "tier" => tier, "reason" => "deferral_deadline")
                .increment(1),
            _ => {}
        }
        let labels = [("model_name", self.model_name.clone())];
        counter!(m::REQUEST_SUCCESS, "model_name" => self.model_name.clone(), "finished_reason" => reason).increment(1);
        counter!(m::PROMPT_TOKENS, &labels).increment(live.prompt_tokens as u64);
        histogram!(m::E2E_REQUEST_LATENCY, &labels).record(live.arrival.elapsed().as_secs_f64());
        let _ = live.events.send(last);
    }

    fn publish_status(&self) {
        let (running, waiting, kv) = (
            self.sched.num_running(),
            self.sched.num_waiting(),
            self.sched.kv_usage(),
        );
        self.status.running.store(running, Ordering::Relaxed);
        self.status.waiting.store(waiting, Ordering::Relaxed);
        self.status
            .kv_usage_ppm
            .store((kv * 1e6) as u64, Ordering::Relaxed);
        for tier in [
            Priority::Interactive,
            Priority::Standard,
            Priority::Flexible,
        ] {
            let deferred = self.sched.num_deferred(tier) as f64;
            gauge!(m::TIER_DEFERRED, "tier" => tier.as_str(), "engine" => self.engine_label.clone())
                .set(deferred);
        }
        let labels = [
            ("model_name", self.model_name.clone()),
            ("engine", self.engine_label.clone()),
        ];
        gauge!(m::NUM_REQUESTS_RUNNING, &labels).set(running as f64);
        gauge!(m::NUM_REQUESTS_WAITING, &labels).set(waiting as f64);
        gauge!(m::KV_CACHE_USAGE, &labels).set(kv);
    }
}

#[cfg(test)]
mod tests {
    use gridserve_models::sampling::SamplingParams;
    use gridserve_models::testing::FakeBackend;
    use gridserve_models::{BackendInfo, ModelError, StepBatch, StepOutput};

    use super::*;
    use crate::engine::{GenerationRequest, Priority};

    /// Panics on any step whose first token is 13; otherwise behaves like the fake.
    struct PanickyBackend(FakeBackend);

    impl ModelBackend for PanickyBackend {
        fn info(&self) -> &BackendInfo {
            self.0.info()
        }
        fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
            assert!(batch.seqs[0].tokens[0] != 13, "unlucky token");
            self.0.step(batch)
        }
    }

    fn request(first: u32) -> GenerationRequest {
        GenerationRequest {
            prompt: vec![first],
            sampling: SamplingParams::greedy(),
            max_tokens: 3,
            stop_token_ids: vec![],
            ignore_eos: true,
            priority: Priority::Standard,
        }
    }

    async fn last_event(handle: &EngineHandle, first: u32) -> EngineEvent {
        let mut stream = handle.submit(request(first)).unwrap();
        let mut last = None;
        while let Some(e) = stream.recv().await {
            last = Some(e);
        }
        last.unwrap()
    }

    #[tokio::test]
    async fn a_panicking_backend_fails_one_request_and_the_engine_lives_on() {
        let (_tx, rx) = watch::channel(EnginePolicy::open(crate::engine::StepBudget {
            max_tokens: 64,
            max_seqs: 8,
        }));
        let backend = PanickyBackend(FakeBackend::new(50, 16, 4, 32));
        let (handle, _thread) = spawn_engine(Box::new(backend), rx, 8).unwrap();
        match last_event(&handle, 13).await {
            EngineEvent::Failed { message, .. } => {
                assert!(message.contains("unlucky token"), "{message}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        match last_event(&handle, 20).await {
            EngineEvent::Finished { reason } => assert_eq!(reason, FinishReason::Length),
            other => panic!("expected a normal finish, got {other:?}"),
        }
    }
}
