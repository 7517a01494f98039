//! What the power controller lets the engine do, read by the engine thread before every step
//! (through a `watch`, so only the latest value matters).

use std::time::Duration;

use super::scheduler::{AdmissionGate, StepBudget};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnginePolicy {
    pub budget: StepBudget,
    /// Tiers that may leave the queue; closed tiers wait (deferred).
    pub gate: AdmissionGate,
    /// Preempt running flexible sequences before the next step.
    pub preempt_flexible: bool,
    /// Share of time spent computing: below 1 the engine pauses after each step for
    /// step time × (1 − d) / d (the power knob of hardware without clock control).
    pub duty_cycle: f64,
    /// How long a deferred request may wait before it is refused (503 with Retry-After).
    pub deferral_deadline: Duration,
    /// The `Retry-After` such a refusal carries (the controller sets it from the envelope:
    /// when the cap is next due to change).
    pub retry_after: Duration,
}

impl EnginePolicy {
    /// Everything admitted, nothing preempted: the policy with no power controller.
    pub fn open(budget: StepBudget) -> Self {
        Self {
            budget,
            gate: AdmissionGate::OPEN,
            preempt_flexible: false,
            duty_cycle: 1.0,
            deferral_deadline: Duration::from_secs(600),
            retry_after: Duration::from_secs(60),
        }
    }
}
