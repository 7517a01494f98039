//! Scheduler behaviour, driven step by step against the fake backend (next token = last + 1).

use std::time::{Duration, Instant};

use gridserve_models::sampling::SamplingParams;
use gridserve_models::testing::FakeBackend;
use gridserve_models::ModelBackend;

use super::{AdmissionGate, FinishReason, Scheduler, SeqEvent, StepBudget};
use crate::engine::{GenerationRequest, Priority};

fn req(prompt: Vec<u32>, max_tokens: usize, priority: Priority) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop_token_ids: vec![],
        ignore_eos: false,
        priority,
    }
}

const BIG: StepBudget = StepBudget {
    max_tokens: 1024,
    max_seqs: 64,
};

/// Runs one step; returns the events.
fn step(s: &mut Scheduler, b: &mut FakeBackend, budget: StepBudget) -> Vec<SeqEvent> {
    let plan = s.schedule(budget, Instant::now());
    let out = b.step(&plan.batch).unwrap();
    s.update(&plan, &out)
}

fn tokens_of(events: &[SeqEvent], id: u64) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            SeqEvent::Token { seq, sampled } if *seq == id => Some(sampled.token),
            _ => None,
        })
        .collect()
}

#[test]
fn generates_until_max_tokens_then_frees_blocks() {
    let mut b = FakeBackend::new(100, 16, 4, 64);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![5, 6, 7], 3, Priority::Standard), Instant::now())
        .unwrap();
    let mut all = Vec::new();
    while s.has_work() {
        all.extend(step(&mut s, &mut b, BIG));
    }
    assert_eq!(tokens_of(&all, 1), vec![8, 9, 10]);
    assert!(matches!(
        all.last(),
        Some(SeqEvent::Finished {
            seq: 1,
            reason: FinishReason::Length
        })
    ));
    assert_eq!(s.kv_usage(), 0.0);
}

#[test]
fn eos_stops_unless_ignored() {
    let mut b = FakeBackend::new(10, 16, 4, 64);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![8], 5, Priority::Standard), Instant::now())
        .unwrap(); // 9, then 0 = eos
    s.add(
        2,
        GenerationRequest {
            ignore_eos: true,
            ..req(vec![8], 3, Priority::Standard)
        },
        Instant::now(),
    )
    .unwrap();
    let mut all = Vec::new();
    while s.has_work() {
        all.extend(step(&mut s, &mut b, BIG));
    }
    assert_eq!(tokens_of(&all, 1), vec![9, 0]);
    assert_eq!(tokens_of(&all, 2), vec![9, 0, 1]);
    assert!(all.iter().any(|e| matches!(
        e,
        SeqEvent::Finished {
            seq: 1,
            reason: FinishReason::Stop
        }
    )));
}

#[test]
fn long_prompts_are_chunked_under_the_token_budget_without_stalling_decode() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![1, 2], 10, Priority::Standard), Instant::now())
        .unwrap();
    step(&mut s, &mut b, BIG); // seq 1 prefilled, now decoding
    s.add(
        2,
        req((0..20).map(|i| i % 50 + 1).collect(), 2, Priority::Standard),
        Instant::now(),
    )
    .unwrap();
    let budget = StepBudget {
        max_tokens: 8,
        max_seqs: 8,
    };
    for _ in 0..3 {
        step(&mut s, &mut b, budget);
    }
    // Each step: seq 1 decodes one token, seq 2 gets the other 7 of its 20-token prompt.
    assert_eq!(
        &b.steps[1..],
        &[
            vec![(1, 1), (2, 7)],
            vec![(1, 1), (2, 7)],
            vec![(1, 1), (2, 6)]
        ]
    );
}

#[test]
fn a_waiting_interactive_request_goes_ahead_of_running_lower_tier_work() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![1, 2], 10, Priority::Standard), Instant::now())
        .unwrap();
    s.add(
        2,
        req((0..20).map(|i| i % 50 + 1).collect(), 2, Priority::Flexible),
        Instant::now(),
    )
    .unwrap();
    let budget = StepBudget {
        max_tokens: 8,
        max_seqs: 2,
    };
    step(&mut s, &mut b, budget); // seq 1 prefilled (2), seq 2 starts its prompt (6 of 20)
    s.add(
        3,
        req(vec![7, 8, 9], 2, Priority::Interactive),
        Instant::now(),
    )
    .unwrap();
    step(&mut s, &mut b, budget);
    step(&mut s, &mut b, budget);
    // The interactive prompt is prefilled in the first step after it arrives, ahead of the
    // flexible prefill, and both seats go to it and the standard decode; the flexible
    // sequence resumes where it was once nothing above it waits (it kept its KV cache).
    assert_eq!(
        &b.steps,
        &[
            vec![(1, 2), (2, 6)],
            vec![(3, 3), (1, 1)],
            vec![(3, 1), (1, 1)],
        ]
    );
    step(&mut s, &mut b, budget);
    assert_eq!(b.steps[3], vec![(1, 1), (2, 7)]);
}

#[test]
fn budget_limits_sequences_per_step() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    for id in 0..5 {
        s.add(id, req(vec![3], 4, Priority::Standard), Instant::now())
            .unwrap();
    }
    step(
        &mut s,
        &mut b,
        StepBudget {
            max_tokens: 100,
            max_seqs: 2,
        },
    );
    assert_eq!(b.steps[0].len(), 2);
    assert_eq!((s.num_running(), s.num_waiting()), (2, 3));
}

#[test]
fn out_of_blocks_preempts_lowest_priority_newest_and_recomputes_it() {
    // 4 blocks of 4 tokens. Two sequences of 6-token prompts take 2 blocks each; growing
    // past 8 tokens needs a third block for one of them.
    let mut b = FakeBackend::new(100, 4, 4, 64);
    let mut s = Scheduler::new(b.info());
    s.add(
        1,
        req(vec![1, 2, 3, 4, 5, 6], 6, Priority::Interactive),
        Instant::now(),
    )
    .unwrap();
    s.add(
        2,
        req(vec![11, 12, 13, 14, 15, 16], 6, Priority::Flexible),
        Instant::now(),
    )
    .unwrap();
    let mut all = Vec::new();
    while s.has_work() {
        all.extend(step(&mut s, &mut b, BIG));
    }
    assert!(s.preemptions() >= 1);
    // Both still produce the full, correct continuation: preemption loses nothing.
    assert_eq!(tokens_of(&all, 1), vec![7, 8, 9, 10, 11, 12]);
    assert_eq!(tokens_of(&all, 2), vec![17, 18, 19, 20, 21, 22]);
    // The interactive sequence was never the one preempted: it ran in every step until done.
    let first_done = b
        .steps
        .iter()
        .position(|st| !st.iter().any(|(id, _)| *id == 1))
        .unwrap();
    assert!(b.steps[..first_done]
        .iter()
        .all(|st| st.iter().any(|(id, _)| *id == 1)));
}

#[test]
fn abort_frees_blocks_and_drops_the_sequence() {
    let mut b = FakeBackend::new(100, 8, 4, 64);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![1; 10], 20, Priority::Standard), Instant::now())
        .unwrap();
    step(&mut s, &mut b, BIG);
    assert!(s.kv_usage() > 0.0);
    assert!(s.abort(1));
    assert!(!s.abort(1));
    assert_eq!(s.kv_usage(), 0.0);
    assert!(!s.has_work());
}

#[test]
fn impossible_requests_are_rejected_up_front() {
    let b = FakeBackend::new(100, 4, 4, 64);
    let mut s = Scheduler::new(b.info());
    assert!(s
        .add(1, req(vec![], 5, Priority::Standard), Instant::now())
        .is_err());
    assert!(
        s.add(2, req(vec![1; 16], 5, Priority::Standard), Instant::now())
            .is_err(),
        "fills the whole cache"
    );
    assert!(s
        .add(3, req(vec![1; 3], 0, Priority::Standard), Instant::now())
        .is_err());
    assert!(s
        .add(4, req(vec![1; 3], 5, Priority::Standard), Instant::now())
        .is_ok());
    let (too_long, fits) = (
        req(vec![1; 10], 8, Priority::Standard),
        req(vec![1; 10], 7, Priority::Standard),
    );
    assert!(
        s.add(5, too_long, Instant::now()).is_err(),
        "17 KV slots > 16: would preempt itself forever"
    );
    assert!(s.add(6, fits, Instant::now()).is_ok());
}

#[test]
fn waiting_requests_are_admitted_by_priority() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![1], 2, Priority::Flexible), Instant::now())
        .unwrap();
    s.add(2, req(vec![1], 2, Priority::Standard), Instant::now())
        .unwrap();
    s.add(3, req(vec![1], 2, Priority::Interactive), Instant::now())
        .unwrap();
    step(
        &mut s,
        &mut b,
        StepBudget {
            max_tokens: 100,
            max_seqs: 1,
        },
    );
    assert_eq!(b.steps[0], vec![(3, 1)]);
}

#[test]
fn closed_tiers_wait_without_blocking_open_ones_and_resume_when_opened() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    let t0 = Instant::now();
    s.add(1, req(vec![1], 2, Priority::Flexible), t0).unwrap();
    s.add(2, req(vec![1], 2, Priority::Standard), t0).unwrap();
    s.set_gate(AdmissionGate {
        standard: true,
        flexible: false,
    });
    let mut all = Vec::new();
    while s.has_runnable_work() {
        all.extend(step(&mut s, &mut b, BIG));
    }
    assert_eq!(tokens_of(&all, 2).len(), 2, "standard ran");
    assert!(tokens_of(&all, 1).is_empty(), "flexible was deferred");
    assert!(s.has_work() && !s.has_runnable_work());
    s.set_gate(AdmissionGate::OPEN);
    while s.has_work() {
        all.extend(step(&mut s, &mut b, BIG));
    }
    assert_eq!(tokens_of(&all, 1).len(), 2, "flexible ran once admitted");
}

#[test]
fn preempting_a_tier_frees_its_kv_and_it_recomputes_to_the_same_tokens() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    s.add(1, req(vec![5, 6], 6, Priority::Flexible), Instant::now())
        .unwrap();
    s.add(2, req(vec![9], 6, Priority::Interactive), Instant::now())
        .unwrap();
    let mut all = step(&mut s, &mut b, BIG);
    all.extend(step(&mut s, &mut b, BIG));
    assert_eq!(s.preempt_tier(Priority::Flexible), vec![1]);
    assert_eq!(s.num_running(), 1);
    assert_eq!(s.preempt_tier(Priority::Flexible), Vec::<u64>::new());
    while s.has_work() {
        all.extend(step(&mut s, &mut b, BIG));
    }
    assert_eq!(tokens_of(&all, 1), vec![7, 8, 9, 10, 11, 12]);
    assert_eq!(tokens_of(&all, 2), vec![10, 11, 12, 13, 14, 15]);
    assert_eq!(s.preemptions(), 1);
}

#[test]
fn deferred_work_expires_after_its_deadline_only_while_deferred() {
    let mut b = FakeBackend::new(100, 64, 4, 256);
    let mut s = Scheduler::new(b.info());
    let t0 = Instant::now();
    s.add(1, req(vec![1], 2, Priority::Flexible), t0).unwrap();
    s.add(
        2,
        req(vec![1], 2, Priority::Flexible),
        t0 + Duration::from_secs(5),
    )
    .unwrap();
    let deadline = Duration::from_secs(10);
    // Open: nothing expires however old.
    assert!(s
        .expire_deferred(t0 + Duration::from_secs(60), deadline)
        .is_empty());
    s.set_gate(AdmissionGate {
        standard: true,
        flexible: false,
    });
    assert!(s
        .expire_deferred(t0 + Duration::from_secs(9), deadline)
        .is_empty());
    assert_eq!(
        s.expire_deferred(t0 + Duration::from_secs(12), deadline),
        vec![1]
    );
    assert_eq!(s.num_waiting(), 1);
    let _ = step(&mut s, &mut b, BIG);
    assert_eq!(s.num_running(), 0, "the other one is still deferred");
}

/// The fake, sampling on its "device": each device row's token is the reference kernel's
/// pick from the fake's logits, and those rows' logits never come back.
struct DeviceSampling(FakeBackend);

impl ModelBackend for DeviceSampling {
    fn info(&self) -> &gridserve_models::BackendInfo {
        self.0.info()
    }

    fn step(
        &mut self,
        batch: &gridserve_models::StepBatch,
    ) -> Result<gridserve_models::StepOutput, gridserve_models::ModelError> {
        self.0.step(batch)
    }

    fn samples_on_device(&self) -> bool {
        true
    }

    fn step_sampling(
        &mut self,
        batch: &gridserve_models::StepBatch,
        sampling: &[(u64, gridserve_models::SampleRow)],
    ) -> Result<gridserve_models::StepOutput, gridserve_models::ModelError> {
        let out = self.0.step(batch)?;
        let (mut host, mut device) = (Vec::new(), Vec::new());
        for (seq, row) in out.rows() {
            match sampling.iter().find(|(s, _)| *s == seq) {
                Some((_, params)) => {
                    let s = gridserve_kernels::cpu::sample_reference(row, params).unwrap();
                    device.push(gridserve_models::DeviceSampled {
                        seq,
                        token: s.token,
                        logprob: s.logprob,
                    });
                }
                None => host.push((seq, row.to_vec())),
            }
        }
        let vocab = self.0.info().vocab_size;
        Ok(gridserve_models::StepOutput::from_rows(vocab, host)?.with_sampled(device))
    }
}

#[test]
fn a_device_sampling_backend_samples_what_it_may_and_the_host_the_rest() {
    let mut b = DeviceSampling(FakeBackend::new(100, 16, 4, 64));
    let mut s = Scheduler::new(b.info());
    let now = Instant::now();
    s.add(1, req(vec![5, 6, 7], 3, Priority::Standard), now)
        .unwrap();
    // Top alternatives need the whole row: this one is sampled on the host.
    let mut with_top = req(vec![20, 21], 3, Priority::Standard);
    with_top.sampling.logprobs = Some(2);
    s.add(2, with_top, now).unwrap();
    let mut events = Vec::new();
    while s.has_work() {
        let plan = s.schedule(BIG, Instant::now());
        let out = s.run_step(&mut b, &plan).unwrap();
        assert!(
            out.sampled().iter().all(|d| d.seq == 1),
            "only seq 1 on the device"
        );
        assert!(
            out.rows().all(|(seq, _)| seq == 2),
            "only seq 2's logits come back"
        );
        events.extend(s.update(&plan, &out));
    }
    // Both follow the fake (next = last + 1), whichever side sampled.
    assert_eq!(tokens_of(&events, 1), vec![8, 9, 10]);
    assert_eq!(tokens_of(&events, 2), vec![22, 23, 24]);
    for e in &events {
        if let SeqEvent::Token { seq, sampled } = e {
            assert_eq!(sampled.top.len(), if *seq == 2 { 2 } else { 0 }, "{e:?}");
            assert!(sampled.logprob <= 0.0 && sampled.logprob > -1.0, "{e:?}");
        }
    }
}
