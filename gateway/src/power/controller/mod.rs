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
//! recursive least squares) predicts for it, then waits for the measurements to catch up. The power limit is the backstop that holds even if
//! gridserve dies: it is set to the cap (per device) whenever a cap binds.

mod config;
mod decision;
mod ladder;
mod model;
mod window;

#[cfg(test)]
mod tests;

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
        let binding_cap = cap.filter(|c| *c < self.settings.hardware_max_watts);
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
        let target = cap_watts * (1.0 - self.settings.margin_fraction);
        let Some(watts) = measured else {
            return self.decide(Mode::Tracking, Some(target), None, Some(cap_watts), false);
        };
        let settling = self.settle_until.is_some_and(|t| now < t);
        if !settling {
            self.model.observe(self.effort, watts);
            if self.feed_forward(target, cap_watts, watts) {
                self.settle_until = Some(now + self.settings.control_window * 2);
            } else {
                self.feed_back(target, watts, dt);
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

    /// Jumps straight to the effort predicted to draw `target` when the target dropped or
    /// power is over the cap itself. Returns whether it jumped.
    fn feed_forward(&mut self, target: f64, cap_watts: f64, watts: f64) -> bool {
        let dropped = self
            .last_target
            .is_none_or(|last| target < last * (1.0 - self.settings.deadband_fraction));
        self.last_target = Some(target);
        if !(watts > cap_watts || (dropped && watts > target)) {
            return false;
        }
        let predicted = self.model.effort_for(target).unwrap_or_else(|| {
            // Until the model has seen a spread of efforts, scale the power above the floor.
            let floor = self.settings.prior_floor_watts;
            self.effort * ((target - floor) / (watts - floor).max(1.0)).clamp(0.0, 1.0)
        });
        self.last_error = 0.0;
        self.effort = self.effort.min(predicted);
        true
    }

    /// PI in velocity form on the relative error, with a deadband.
    fn feed_back(&mut self, target: f64, watts: f64, dt: f64) {
        let s = &self.settings;
        let raw = (target - watts) / target;
        let error = if raw.abs() < s.deadband_fraction {
            0.0
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
        let power_limit_watts = cap_watts
            .zip(self.settings.power_limit_range_watts)
            .map(|(cap, (min, max))| (cap / self.devices as f64).clamp(min, max));
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
