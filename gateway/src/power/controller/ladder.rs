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

/// Share of full power above idle still drawn with the smallest budget (weights are read every
/// step however few sequences ride on it).
const BUDGET_POWER_FLOOR: f64 = 0.25;
/// A typical data-centre GPU voltage curve: flat at this fraction of the top voltage up to
/// `VOLTAGE_KNEE_FRACTION` of the top clock, then rising linearly to 1 (the H100/H200/A100
/// twin profiles: 0.70 and 0.55).
const VOLTAGE_MIN_FRACTION: f64 = 0.7;
const VOLTAGE_KNEE_FRACTION: f64 = 0.55;

/// Switching power at `mhz` relative to `max_mhz`: f·V(f)².
fn switching_power(mhz: u32, max_mhz: u32) -> f64 {
    let f = f64::from(mhz) / f64::from(max_mhz.max(1));
    let rise = ((f - VOLTAGE_KNEE_FRACTION) / (1.0 - VOLTAGE_KNEE_FRACTION)).clamp(0.0, 1.0);
    let v = VOLTAGE_MIN_FRACTION + (1.0 - VOLTAGE_MIN_FRACTION) * rise;
    f * v * v
}

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
        if self.clock.is_some() || self.duty_cycle_floor >= 1.0 {
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
    /// The token budget also follows the clock, as (f / f_max)³: a step's prefill chunk is
    /// compute-bound, so at clock f it takes f_max / f times longer, and the decoding
    /// sequences riding in that step wait for it. Scaling the chunk by f / f_max alone keeps
    /// steps as long as uncapped; the cube keeps them shorter and spreads prefill bursts
    /// thinner, so 1 s power swings less around the target. (Chosen on the twin: with the
    /// square, interactive ITL p99 under regulation was 117 ms against 98 ms uncapped; with
    /// the cube, 85 ms, and windows above the cap fell from 0.9 % to 0.4 %.)
    pub fn budget_at(&self, effort: f64) -> StepBudget {
        let x = (effort / self.clock_floor_effort()).clamp(0.0, 1.0);
        let lerp = |lo: usize, hi: usize| {
            let (lo, hi) = (lo.max(1) as f64, hi.max(1) as f64);
            (lo * (hi / lo).powf(x)).round() as usize
        };
        let clock_share = match (self.clock, self.clock_at(effort)) {
            (Some(knob), Some(lock)) => {
                (f64::from(lock.max_mhz) / f64::from(knob.max_mhz.max(1))).powi(3)
            }
            _ => 1.0,
        };
        let max_tokens = lerp(self.min_budget.max_tokens, self.max_budget.max_tokens);
        StepBudget {
            max_seqs: lerp(self.min_budget.max_seqs, self.max_budget.max_seqs),
            max_tokens: ((max_tokens as f64 * clock_share).round() as usize)
                .max(self.min_budget.max_tokens),
        }
    }

    /// Power above idle at `effort` relative to full effort (1 at effort 1), as the knobs
    /// scale it: the clock's switching power f·V(f)² on a typical data-centre DVFS curve, the
    /// duty cycle, and roughly in proportion to the work a shrunk budget lets through. The
    /// controller inverts it to jump straight to the effort a new target needs.
    pub fn relative_power(&self, effort: f64) -> f64 {
        let clock = match (self.clock, self.clock_at(effort)) {
            (Some(knob), Some(lock)) => switching_power(lock.max_mhz, knob.max_mhz),
            _ => 1.0,
        };
        let x = (effort / self.clock_floor_effort()).clamp(0.0, 1.0);
        let budget = BUDGET_POWER_FLOOR + (1.0 - BUDGET_POWER_FLOOR) * x;
        clock * self.duty_cycle_at(effort) * budget
    }

    /// The lowest effort whose `relative_power` reaches `relative` (bisection: it is
    /// monotone in effort).
    pub fn effort_for_relative_power(&self, relative: f64) -> f64 {
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        if self.relative_power(lo) >= relative {
            return 0.0;
        }
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            if self.relative_power(mid) >= relative {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
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
        // Sequences stay whole while the clock falls; the prefill chunk follows the clock so
        // a step takes no longer than at full clock.
        assert_eq!(l.budget_at(1.0), l.max_budget);
        assert_eq!(l.budget_at(0.7).max_seqs, 256);
        let chunk = |mhz: f64| (8192.0 * (mhz / 1980.0).powi(3)).round() as usize;
        assert_eq!(l.budget_at(0.7).max_tokens, chunk(1490.0));
        assert_eq!(l.budget_at(0.4).max_tokens, chunk(1000.0));
        assert_eq!(l.budget_at(0.2).max_seqs, 32);
        assert_eq!(l.budget_at(0.0), l.min_budget);
    }

    #[test]
    fn relative_power_falls_with_effort_and_inverts() {
        for l in [ladder(true), ladder(false)] {
            let mut last = f64::INFINITY;
            for i in (0..=100).rev() {
                let e = f64::from(i) / 100.0;
                let r = l.relative_power(e);
                assert!(r <= last + 1e-12 && r > 0.0, "{e}: {r} after {last}");
                last = r;
                let back = l.effort_for_relative_power(r);
                assert!(
                    (l.relative_power(back) - r).abs() < 1e-6,
                    "{e} → {r} → {back}"
                );
            }
            assert_eq!(l.relative_power(1.0), 1.0);
            assert_eq!(l.effort_for_relative_power(2.0), 1.0);
        }
        // Voltage falls with the clock above the knee: the top half of the clock range holds
        // most of the switching power (1490 of 1980 MHz ≈ 0.75 f, but ≈ 0.47 f·V²).
        let r = ladder(true).relative_power(0.7);
        assert!((0.4..0.55).contains(&r), "{r}");
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
