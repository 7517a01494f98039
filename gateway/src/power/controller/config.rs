//! `[controller]` in the config: parsed raw (unknown keys rejected), validated into
//! `ControllerConfig`, and combined with what the hardware allows into `ControllerSettings`.

use std::time::Duration;

use serde::Deserialize;

use super::{ClockKnob, ControllerSettings, Ladder};
use crate::engine::StepBudget;
use crate::power::ActuatorLimits;
use crate::GatewayError;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControllerConfig {
    enabled: bool,
    period_seconds: f64,
    margin_fraction: f64,
    deadband_fraction: f64,
    sensor_timeout_seconds: f64,
    control_window_seconds: f64,
    gain_integral_per_second: f64,
    min_max_seqs: usize,
    min_max_tokens: usize,
    clock_floor_fraction: f64,
    duty_cycle_floor: f64,
    deferral_deadline_seconds: f64,
}

/// The controller's tuning, validated; hardware facts are added by [`Self::settings`].
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    pub enabled: bool,
    pub period: Duration,
    pub margin_fraction: f64,
    pub deadband_fraction: f64,
    pub sensor_timeout: Duration,
    pub control_window: Duration,
    pub gain_integral_per_second: f64,
    pub min_budget: StepBudget,
    /// Lowest SM clock the controller locks, as a fraction of the maximum.
    pub clock_floor_fraction: f64,
    /// Lowest duty cycle when there is no clock to turn.
    pub duty_cycle_floor: f64,
    pub deferral_deadline: Duration,
}

fn bad(key: &str, why: &str) -> GatewayError {
    GatewayError::Config(format!("controller.{key}: {why}"))
}

fn seconds(key: &str, value: f64) -> Result<Duration, GatewayError> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(bad(key, "must be a positive number of seconds"))
    }
}

fn fraction(key: &str, value: f64, max: f64) -> Result<f64, GatewayError> {
    if (0.0..max).contains(&value) {
        Ok(value)
    } else {
        Err(bad(key, &format!("must be in [0, {max})")))
    }
}

fn positive_fraction(key: &str, value: f64) -> Result<f64, GatewayError> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(bad(key, "must be in (0, 1]"))
    }
}

impl RawControllerConfig {
    pub fn validate(self) -> Result<ControllerConfig, GatewayError> {
        let gain = self.gain_integral_per_second;
        if !(gain.is_finite() && gain >= 0.0) {
            return Err(bad(
                "gain_integral_per_second",
                "must be a non-negative number",
            ));
        }
        if self.min_max_seqs == 0 || self.min_max_tokens == 0 {
            return Err(bad("min_max_seqs / min_max_tokens", "must be at least 1"));
        }
        Ok(ControllerConfig {
            enabled: self.enabled,
            period: seconds("period_seconds", self.period_seconds)?,
            margin_fraction: fraction("margin_fraction", self.margin_fraction, 0.5)?,
            deadband_fraction: fraction("deadband_fraction", self.deadband_fraction, 0.2)?,
            sensor_timeout: seconds("sensor_timeout_seconds", self.sensor_timeout_seconds)?,
            control_window: seconds("control_window_seconds", self.control_window_seconds)?,
            gain_integral_per_second: self.gain_integral_per_second,
            min_budget: StepBudget {
                max_seqs: self.min_max_seqs,
                max_tokens: self.min_max_tokens,
            },
            clock_floor_fraction: fraction("clock_floor_fraction", self.clock_floor_fraction, 1.0)?,
            duty_cycle_floor: positive_fraction("duty_cycle_floor", self.duty_cycle_floor)?,
            deferral_deadline: seconds(
                "deferral_deadline_seconds",
                self.deferral_deadline_seconds,
            )?,
        })
    }
}

/// What the hardware offers the controller.
#[derive(Clone, Debug, PartialEq)]
pub struct Hardware {
    /// Clock and power-limit ranges (None: no actuator, e.g. the CPU).
    pub limits: Option<ActuatorLimits>,
    /// Devices the limits apply to (each gets cap / devices as its power limit).
    pub devices: usize,
    /// Power with everything idle, and the most the devices can draw together.
    pub floor_watts: f64,
    pub max_watts: f64,
}

impl ControllerConfig {
    /// The controller's settings on `hardware`, with `max_budget` the engine's configured one.
    pub fn settings(&self, hardware: &Hardware, max_budget: StepBudget) -> ControllerSettings {
        let clock = hardware.limits.as_ref().map(|l| {
            let floor = (f64::from(l.sm_clock_max_mhz) * self.clock_floor_fraction).round() as u32;
            ClockKnob {
                floor_mhz: floor.clamp(l.sm_clock_min_mhz, l.sm_clock_max_mhz),
                max_mhz: l.sm_clock_max_mhz,
            }
        });
        let min_budget = StepBudget {
            max_seqs: self.min_budget.max_seqs.min(max_budget.max_seqs),
            max_tokens: self.min_budget.max_tokens.min(max_budget.max_tokens),
        };
        ControllerSettings {
            period: self.period,
            margin_fraction: self.margin_fraction,
            deadband_fraction: self.deadband_fraction,
            sensor_timeout: self.sensor_timeout,
            control_window: self.control_window,
            gain_integral_per_second: self.gain_integral_per_second,
            ladder: Ladder {
                clock,
                duty_cycle_floor: self.duty_cycle_floor,
                max_budget,
                min_budget,
            },
            power_limit_range_watts: hardware
                .limits
                .as_ref()
                .map(|l| (l.power_limit_min_watts, l.power_limit_max_watts)),
            hardware_max_watts: hardware.max_watts,
            idle_watts: hardware.floor_watts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawControllerConfig {
        let text = include_str!("../../../../config/default.toml");
        let table: toml::Table = toml::from_str(text).unwrap();
        table["controller"].clone().try_into().unwrap()
    }

    #[test]
    fn default_controller_section_validates_and_fits_the_hardware() {
        let c = raw().validate().unwrap();
        assert_eq!(c.period, Duration::from_millis(100));
        let h100 = Hardware {
            limits: Some(ActuatorLimits {
                power_limit_min_watts: 200.0,
                power_limit_max_watts: 700.0,
                sm_clock_min_mhz: 345,
                sm_clock_max_mhz: 1980,
            }),
            devices: 4,
            floor_watts: 280.0,
            max_watts: 2800.0,
        };
        let budget = StepBudget {
            max_seqs: 32,
            max_tokens: 512,
        };
        let s = c.settings(&h100, budget);
        assert_eq!(s.ladder.max_budget, budget);
        assert!(s.ladder.min_budget.max_seqs <= 32);
        let knob = s.ladder.clock.unwrap();
        assert!(knob.floor_mhz >= 345 && knob.floor_mhz < 1980, "{knob:?}");
        assert_eq!(s.power_limit_range_watts, Some((200.0, 700.0)));
        let cpu = Hardware {
            limits: None,
            ..h100
        };
        let s = c.settings(&cpu, budget);
        assert_eq!((s.ladder.clock, s.power_limit_range_watts), (None, None));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut r = raw();
        r.margin_fraction = 0.9;
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("controller.margin_fraction"), "{err}");
        let mut r = raw();
        r.period_seconds = 0.0;
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains("controller.period_seconds"), "{err}");
    }
}
