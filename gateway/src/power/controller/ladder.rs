//! The effort ladder: one number in 0..=1 mapped onto the knobs in the order that costs
//! tokens per joule least. From full effort down: first the SM clock falls to its floor
//! (decode is memory-bound, so a lower clock saves power and barely slows it) — or, with no
//! clock to turn (the CPU, or a GPU that refuses), the engine's duty cycle falls (it pauses
//! between steps, keeping its batches whole) — then the step budget shrinks, and on the way
//! flexible work is deferred and then preempted. Interactive work is touched last: the
//! scheduler runs tiers in priority order inside any budget.

use super::decision::{Admission, TierAdmission};
use crate::engine::StepBudget;
use crate::power::ClockRange;

/// The range the controller may move the SM clock in (None on hardware without clock control).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockKnob {
    /// Lowest clock the controller locks (e.g. where memory bandwidth starts to suffer).
    pub floor_mhz: u32,
    pub max_mhz: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ladder {
    pub clock: Option<ClockKnob>,
    /// Lowest share of time the engine computes when there is no clock knob (0..=1).
    pub duty_cycle_floor: f64,
    pub max_budget: StepBudget,
    pub min_budget: StepBudget,
}

/// Below this effort flexible work waits; below `PREEMPT_BELOW` running flexible work is
/// preempted too.
const DEFER_FLEXIBLE_BELOW: f64 = 0.35;
const PREEMPT_FLEXIBLE_BELOW: f64 = 0.15;
/// The share of the effort range the clock covers when there is a clock knob.
const CLOCK_SHARE: f64 = 0.6;

impl Ladder {
    /// Effort at which the clock reaches its floor (budget cuts start below it).
    fn clock_floor_effort(&self) -> f64 {
        if self.clock.is_some() || self.duty_cycle_floor < 1.0 {
            1.0 - CLOCK_SHARE
        } else {
            1.0
        }
    }

    /// The engine's duty cycle at `effort`: 1 (no pauses) whenever the clock does the work.
    pub fn duty_cycle_at(&self, effort: f64) -> f64 {
        if self.clock.is_some() {
            return 1.0;
        }
        let from = self.clock_floor_effort();
        let x = ((effort - from) / (1.0 - from)).clamp(0.0, 1.0);
        self.duty_cycle_floor + (1.0 - self.duty_cycle_floor) * x
    }

    /// The clock lock at `effort` (None at full effort: unlocked, the hardware's choice).
    pub fn clock_at(&self, effort: f64) -> Option<ClockRange> {
        let knob = self.clock?;
        if effort >= 1.0 {
            return None;
        }
        let from = self.clock_floor_effort();
        let x = ((effort - from) / (1.0 - from)).clamp(0.0, 1.0);
        let span = f64::from(knob.max_mhz.saturating_sub(knob.floor_mhz));
        let mhz = knob.floor_mhz + (x * span).round() as u32;
        Some(ClockRange {
            min_mhz: mhz,
            max_mhz: mhz,
        })
    }

    /// The step budget at `effort`: full above the clock's floor, then shrinking
    /// geometrically to the minimum (halving the batch matters as much at 256 as at 8).
    pub fn budget_at(&self, effort: f64) -> StepBudget {
        let x = (effort / self.clock_floor_effort()).clamp(0.0, 1.0);
        let lerp = |lo: usize, hi: usize| {
            let (lo, hi) = (lo.max(1) as f64, hi.max(1) as f64);
            (lo * (hi / lo).powf(x)).round() as usize
        };
        StepBudget {
            max_seqs: lerp(self.min_budget.max_seqs, self.max_budget.max_seqs),
            max_tokens: lerp(self.min_budget.max_tokens, self.max_budget.max_tokens),
        }
    }

    /// Admission at `effort`: flexible work waits below `DEFER_FLEXIBLE_BELOW` (and is
    /// preempted below `PREEMPT_FLEXIBLE_BELOW`, or whenever every knob is at its floor and
    /// power is still over); standard work is shrunk with the budget, never refused, and
    /// interactive work runs first inside any budget.
    pub fn admission_at(&self, effort: f64, saturated: bool) -> (TierAdmission, bool) {
        let flexible = if effort < DEFER_FLEXIBLE_BELOW {
            Admission::Defer
        } else {
            Admission::Admit
        };
        let admission = TierAdmission {
            interactive: Admission::Admit,
            standard: Admission::Admit,
            flexible,
        };
        (admission, saturated || effort < PREEMPT_FLEXIBLE_BELOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(clock: bool) -> Ladder {
        Ladder {
            clock: clock.then_some(ClockKnob {
                floor_mhz: 1000,
                max_mhz: 1980,
            }),
            duty_cycle_floor: 1.0,
            max_budget: StepBudget {
                max_seqs: 256,
                max_tokens: 8192,
            },
            min_budget: StepBudget {
                max_seqs: 4,
                max_tokens: 256,
            },
        }
    }

    #[test]
    fn clock_falls_first_then_the_budget() {
        let l = ladder(true);
        assert_eq!(l.clock_at(1.0), None);
        assert_eq!(l.clock_at(0.7).unwrap().max_mhz, 1490);
        assert_eq!(l.clock_at(0.4).unwrap().max_mhz, 1000);
        assert_eq!(l.clock_at(0.1).unwrap().max_mhz, 1000);
        assert_eq!(l.budget_at(0.7), l.max_budget);
        assert_eq!(l.budget_at(0.4), l.max_budget);
        assert_eq!(l.budget_at(0.2).max_seqs, 32);
        assert_eq!(l.budget_at(0.0), l.min_budget);
    }

    #[test]
    fn without_a_clock_knob_the_budget_spans_the_whole_range() {
        let l = ladder(false);
        assert_eq!(l.clock_at(0.3), None);
        assert_eq!(l.budget_at(1.0), l.max_budget);
        assert_eq!(l.budget_at(0.5).max_seqs, 32);
    }

    #[test]
    fn without_a_clock_the_duty_cycle_falls_first() {
        let l = Ladder {
            duty_cycle_floor: 0.2,
            ..ladder(false)
        };
        assert_eq!(l.duty_cycle_at(1.0), 1.0);
        assert!((l.duty_cycle_at(0.7) - 0.6).abs() < 1e-9);
        assert_eq!(l.duty_cycle_at(0.4), 0.2);
        assert_eq!(l.budget_at(0.4), l.max_budget);
        assert!(l.budget_at(0.2).max_seqs < l.max_budget.max_seqs);
        // With a clock, the duty cycle stays whole.
        let gpu = Ladder {
            duty_cycle_floor: 0.2,
            ..ladder(true)
        };
        assert_eq!(gpu.duty_cycle_at(0.4), 1.0);
    }

    #[test]
    fn flexible_work_is_deferred_then_preempted_interactive_never() {
        let l = ladder(true);
        let (a, preempt) = l.admission_at(0.9, false);
        assert_eq!((a, preempt), (TierAdmission::OPEN, false));
        let (a, preempt) = l.admission_at(0.3, false);
        assert_eq!(
            (a.flexible, a.standard, preempt),
            (Admission::Defer, Admission::Admit, false)
        );
        let (a, preempt) = l.admission_at(0.0, true);
        assert_eq!(
            (a.flexible, a.standard, a.interactive, preempt),
            (Admission::Defer, Admission::Admit, Admission::Admit, true)
        );
    }
}
