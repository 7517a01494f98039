//! Power policies: sans-IO objects a replica consults every tick of virtual time with its
//! latest power sample and its share of the envelope. Each answers with the controller's
//! `Decision` (budget, clock lock, power limit, admission), which the replica applies to its
//! scheduler and, through `Actuation`, to its `TwinCluster` — the same path `serve` takes.
//!
//! - `FixedPolicy`: fixed batch cap, clock lock and power limit, whatever the envelope says.
//! - `CapLimitPolicy`: what operators do today — `nvidia-smi -pl` set to the cap (per GPU),
//!   following each envelope change, nothing else.
//! - `AdaptivePolicy`: gridserve's controller.

use std::time::{Duration, Instant};

use super::scenario::PolicyConfig;
use crate::engine::StepBudget;
use crate::power::controller::{Controller, Decision, Mode, TierAdmission};
use crate::power::{ClockRange, PowerSample, Refusals};

/// What a policy sees at a tick.
#[derive(Clone, Debug)]
pub struct PolicyInput<'a> {
    /// Virtual time since the simulation started.
    pub now: Duration,
    /// `now` as the `Instant` the replica's scheduler and sensor use.
    pub at: Instant,
    /// The replica's `PowerSensor` reading (NVML-like: instant power, lagging counter).
    pub sample: &'a PowerSample,
    /// This replica's share of the fleet cap (fleet cap / replicas), if a cap is in force.
    pub cap_watts: Option<f64>,
    pub running: usize,
    pub waiting: usize,
}

pub trait Policy: Send {
    fn tick(&mut self, input: &PolicyInput<'_>) -> Decision;
    /// Knobs the hardware refused for good.
    fn refused(&mut self, _refusals: Refusals) {}
}

/// A decision that only sets knobs: full admission, no preemption.
fn fixed(budget: StepBudget, sm_clock: Option<ClockRange>, power_limit: Option<f64>) -> Decision {
    Decision {
        mode: Mode::Uncapped,
        target_watts: None,
        measured_watts: None,
        effort: 1.0,
        budget,
        sm_clock,
        power_limit_watts: power_limit,
        duty_cycle: 1.0,
        admission: TierAdmission::OPEN,
        preempt_flexible: false,
    }
}

/// Fixed batch cap, fixed clock lock, fixed power limit.
#[derive(Clone, Debug)]
pub struct FixedPolicy {
    config: PolicyConfig,
}

impl FixedPolicy {
    pub fn new(config: PolicyConfig) -> Self {
        Self { config }
    }
}

impl Policy for FixedPolicy {
    fn tick(&mut self, _input: &PolicyInput<'_>) -> Decision {
        let clock = self.config.sm_clock_mhz.map(|mhz| ClockRange {
            min_mhz: mhz,
            max_mhz: mhz,
        });
        fixed(self.config.budget, clock, self.config.power_limit_watts)
    }
}

/// The static-power-limit baseline: each GPU's limit is its share of the cap (clamped to what
/// the GPU accepts), the default when there is no cap.
#[derive(Clone, Debug)]
pub struct CapLimitPolicy {
    pub budget: StepBudget,
    pub gpus: usize,
    pub power_limit_range_watts: (f64, f64),
}

impl Policy for CapLimitPolicy {
    fn tick(&mut self, input: &PolicyInput<'_>) -> Decision {
        let (min, max) = self.power_limit_range_watts;
        let limit = input
            .cap_watts
            .map(|cap| (cap / self.gpus.max(1) as f64).clamp(min, max));
        fixed(self.budget, None, limit)
    }
}

/// gridserve's power controller.
pub struct AdaptivePolicy {
    pub controller: Controller,
}

impl Policy for AdaptivePolicy {
    fn tick(&mut self, input: &PolicyInput<'_>) -> Decision {
        self.controller
            .tick(input.at, Some(input.sample), input.cap_watts)
    }

    fn refused(&mut self, refusals: Refusals) {
        self.controller.drop_refused(refusals);
    }
}
