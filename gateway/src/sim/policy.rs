//! Power policies: sans-IO objects a replica consults every `tick_seconds` of virtual time
//! with its latest power sample and its share of the envelope, answering with a `Decision`
//! (step budget, SM clock lock, power limit) that the replica applies to its scheduler and
//! `TwinCluster`. `FixedPolicy` sets its knobs once at t = 0; an adaptive controller is
//! another implementation of the same trait.

use std::time::Duration;

use super::scenario::PolicyConfig;
use crate::engine::StepBudget;
use crate::power::{ClockRange, PowerSample};

/// What a policy sees at a tick.
#[derive(Clone, Debug)]
pub struct PolicyInput<'a> {
    /// Virtual time since the simulation started.
    pub now: Duration,
    /// The replica's `PowerSensor` reading (NVML-like: 1 s average power, lagging counter).
    pub sample: &'a PowerSample,
    /// This replica's share of the fleet cap (fleet cap / replicas), if a cap is in force.
    pub cap_watts: Option<f64>,
    pub running: usize,
    pub waiting: usize,
}

/// Changes to make now; `None` fields leave the knob as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub budget: Option<StepBudget>,
    /// `Some(None)` unlocks the clocks, `Some(Some(range))` locks them.
    pub sm_clock: Option<Option<ClockRange>>,
    /// Per-GPU power limit, watts.
    pub power_limit_watts: Option<f64>,
}

pub trait Policy: Send {
    fn tick(&mut self, input: &PolicyInput<'_>) -> Decision;
}

/// Fixed batch cap, fixed clock lock, fixed power limit: decided at the first tick, never
/// changed.
#[derive(Clone, Debug)]
pub struct FixedPolicy {
    config: PolicyConfig,
    applied: bool,
}

impl FixedPolicy {
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            applied: false,
        }
    }
}

impl Policy for FixedPolicy {
    fn tick(&mut self, _input: &PolicyInput<'_>) -> Decision {
        if std::mem::replace(&mut self.applied, true) {
            return Decision::default();
        }
        Decision {
            budget: Some(self.config.budget),
            sm_clock: self.config.sm_clock_mhz.map(|mhz| {
                Some(ClockRange {
                    min_mhz: mhz,
                    max_mhz: mhz,
                })
            }),
            power_limit_watts: self.config.power_limit_watts,
        }
    }
}
