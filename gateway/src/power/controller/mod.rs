//! The power-envelope controller, sans-IO: `tick(now, sample, cap)` returns a `Decision`
//! (step budget, SM clock lock, power limit, admission per tier). It never sleeps, reads a
//! clock or touches hardware, so `serve`, `simulate` and the tests drive the same code.
//!
//! How it steers: one *effort* number in 0..=1 is mapped onto the knobs by the `Ladder`
//! (clock first, then batch, flexible work deferred and preempted on the way). Effort follows
//! the target (cap minus a safety margin) by PI feedback on the sensor's instant power averaged
//! over a short window, in velocity form (no integrator to wind up; effort is simply
//! clamped), with a deadband against chatter. When the target drops or power exceeds the cap,
//! a feed-forward jump goes straight to the effort the online power model (`PowerModel`,
//! recursive least squares) predicts for it, then waits for the measurements to catch up.
//! Where there is a power-limit actuator, the limit is set to the target itself: GPU firmware
//! enforces it within ~100 ms, so it does the fast tracking and the effort loop takes over
//! where the limit cannot reach. The power limit is the backstop that holds even if
//! gridserve dies: it is set to the cap (per device) whenever a cap binds.

mod config;
mod decision;
mod ladder;
mod model;
mod window;

#[cfg(test)]
pub(crate) mod tests;

use std::time::{Duration, Instant};

pub use config::{ControllerConfig, Hardware, RawControllerConfig};
pub use decision::{Admission, Decision, Mode, TierAdmission};
pub use ladder::{ClockKnob, Ladder};
pub use model::PowerModel;
pub use window::PowerWindow;

use super::{PowerSample, Refusals};

/// The controller's constants (from `[controller]` in the config, or a scenario).
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerSettings {
    /// How often `tick` is called.
    pub period: Duration,
    /// Target = cap × (1 − margin): room for measurement noise and the actuators' delay.
    pub margin_fraction: f64,
    /// Errors smaller than this fraction of the target leave effort alone.
    pub deadband_fraction: f64,
    /// No new energy reading for this long puts the controller in safe mode.
    pub sensor_timeout: Duration,
    /// Window over which power is measured for feedback.
    pub control_window: Duration,
    /// Effort per unit of relative error change (proportional, velocity form).
    pub gain_proportional: f64,
    /// Effort per second per unit of relative error (integral).
    pub gain_integral_per_second: f64,
    pub ladder: Ladder,
    /// Per-device power-limit range, when the hardware has a power-limit actuator.
    pub power_limit_range_watts: Option<(f64, f64)>,
    /// Most the devices can draw together: a cap at or above it does not bind.
    pub hardware_max_watts: f64,
    /// Prior for the power model: draw at effort 0 and at effort 1 (all devices).
    pub prior_floor_watts: f64,
    pub prior_full_watts: f64,
}

pub struct Controller {
    settings: ControllerSettings,
    effort: f64,
    model: PowerModel,
    window: PowerWindow,
    devices: usize,
    last_error: f64,
    last_target: Option<f64>,
    last_tick: Option<Instant>,
    /// After a feed-forward jump, measurements still show the old operating point for about
    /// one window plus the actuator delay: no further jumps and no integral action until then.
    settle_until: Option<Instant>,
}

/// How fast effort climbs back when nothing binds (per second).
const UNCAPPED_RECOVERY_PER_SECOND: f64 = 1.0;
/// Share of the last second's excess over the cap that the target undershoots by.
const OVERSHOOT_COMPENSATION: f64 = 0.5;

impl Controller {
    pub fn new(settings: ControllerSettings) -> Self {
        let model = PowerModel::new(settings.prior_floor_watts, settings.prior_full_watts, 0.97);
        Self {
            settings,
            effort: 1.0,
            model,
            window: PowerWindow::default(),
            devices: 1,
            last_error: 0.0,
            last_target: None,
            last_tick: None,
            settle_until: None,
        }
    }

    pub fn settings(&self) -> &ControllerSettings {
        &self.settings
    }

    /// Stops using knobs the hardware refused for good (no permission, not supported) and
    /// steers with the rest.
    pub fn drop_refused(&mut self, refused: Refusals) {
        if refused.clock {
            self.settings.ladder.clock = None;
        }
        if refused.power_limit {
            self.settings.power_limit_range_watts = None;
        }
    }

    /// One control step. `sample` is the newest reading (None if none arrived since the
    /// last tick); `cap_watts` is the envelope's cap now, all devices together (None: no cap).
    pub fn tick(
        &mut self,
        now: Instant,
        sample: Option<&PowerSample>,
        cap: Option<f64>,
    ) -> Decision {
        if let Some(s) = sample {
            self.window.push(s.at, s.total_watts());
            self.devices = s.devices.len().max(1);
        }
        let dt = self
            .last_tick
            .map_or(self.settings.period, |t| now.saturating_duration_since(t))
            .as_secs_f64();
        self.last_tick = Some(now);
        let binding_cap = cap.filter(|c| *c <= self.settings.hardware_max_watts);
        let fresh = self
            .window
            .newest()
            .is_some_and(|t| now.saturating_duration_since(t) <= self.settings.sensor_timeout);
        if !fresh {
            return self.safe(binding_cap);
        }
        let measured = self.window.mean_watts(self.settings.control_window);
        let Some(cap_watts) = binding_cap else {
            self.last_target = None;
            self.last_error = 0.0;
            self.effort = (self.effort + UNCAPPED_RECOVERY_PER_SECOND * dt).min(1.0);
            return self.decide(Mode::Uncapped, None, measured, None, false);
        };
        let target = self.target_watts(cap_watts);
        let Some(watts) = measured else {
            return self.decide(Mode::Tracking, Some(target), None, Some(cap_watts), false);
        };
        let settling = self.settle_until.is_some_and(|t| now < t);
        if !settling {
            self.model.observe(self.effort, watts);
            if self.feed_forward(target, watts) {
                self.settle_until = Some(now + self.settings.control_window * 2);
            } else {
                self.feed_back(target, cap_watts, watts, dt);
            }
        }
        let saturated = self.effort < 0.01 && watts > target;
        let mode = if saturated {
            Mode::Saturated
        } else {
            Mode::Tracking
        };
        self.decide(mode, Some(target), Some(watts), Some(cap_watts), saturated)
    }

    /// The power to steer for: the cap minus the margin, and minus half of whatever the last
    /// second's average is over the cap — compliance is judged on 1 s averages, so after a
    /// step down the power must briefly undershoot for the average to get under in time.
    fn target_watts(&self, cap_watts: f64) -> f64 {
        let base = cap_watts * (1.0 - self.settings.margin_fraction);
        let excess = self
            .window
            .mean_watts(Duration::from_secs(1))
            .map_or(0.0, |avg| (avg - cap_watts).max(0.0));
        (base - OVERSHOOT_COMPENSATION * excess).max(0.0)
    }

    /// Jumps straight to the effort predicted to draw `target` when the target moved past
    /// the deadband (down, or up: a regulation signal must be followed both ways). Returns
    /// whether it jumped.
    fn feed_forward(&mut self, target: f64, watts: f64) -> bool {
        let band = self.settings.deadband_fraction;
        let moved = self.last_target.map_or(0.0, |last| (target - last) / last);
        self.last_target = Some(target);
        let down = moved < -band && watts > target;
        let up = moved > band && watts < target;
        if !(down || up) {
            return false;
        }
        let predicted = self.model.effort_for(target).unwrap_or_else(|| {
            // Until the model has seen a spread of efforts, scale the power above the floor.
            let floor = self.settings.prior_floor_watts;
            self.effort * ((target - floor) / (watts - floor).max(1.0)).max(0.0)
        });
        self.last_error = 0.0;
        self.effort = if down {
            self.effort.min(predicted)
        } else {
            self.effort.max(predicted)
        }
        .clamp(0.0, 1.0);
        true
    }

    /// PI in velocity form on the relative error, with a deadband; twice as hard while power
    /// is over the cap itself.
    fn feed_back(&mut self, target: f64, cap_watts: f64, watts: f64, dt: f64) {
        let s = &self.settings;
        let raw = (target - watts) / target;
        let error = if raw.abs() < s.deadband_fraction {
            0.0
        } else if watts > cap_watts {
            2.0 * raw
        } else {
            raw
        };
        let delta = s.gain_proportional * (error - self.last_error)
            + s.gain_integral_per_second * error * dt;
        self.last_error = error;
        self.effort = (self.effort + delta).clamp(0.0, 1.0);
    }

    fn safe(&mut self, cap_watts: Option<f64>) -> Decision {
        self.effort = 0.0;
        self.settle_until = None;
        self.last_error = 0.0;
        self.last_target = None;
        let mut d = self.decide(Mode::Safe, None, None, cap_watts, false);
        d.admission.flexible = Admission::Defer;
        d
    }

    fn decide(
        &self,
        mode: Mode,
        target_watts: Option<f64>,
        measured_watts: Option<f64>,
        cap_watts: Option<f64>,
        saturated: bool,
    ) -> Decision {
        let ladder = &self.settings.ladder;
        let (admission, preempt_flexible) = ladder.admission_at(self.effort, saturated);
        // The firmware holds the power limit within ~100 ms, faster than any clock loop, so
        // the limit tracks the target itself (the cap in safe mode); the clock and budget
        // steer what the limit cannot reach (below its minimum) or where it is refused.
        let power_limit_watts = target_watts
            .or(cap_watts)
            .zip(self.settings.power_limit_range_watts)
            .map(|(watts, (min, max))| (watts / self.devices as f64).clamp(min, max));
        Decision {
            mode,
            target_watts,
            measured_watts,
            effort: self.effort,
            budget: ladder.budget_at(self.effort),
            sm_clock: ladder.clock_at(self.effort),
            duty_cycle: ladder.duty_cycle_at(self.effort),
            power_limit_watts,
            admission,
            preempt_flexible,
        }
    }
}
