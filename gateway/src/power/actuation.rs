//! Applying the controller's decisions to an actuator: only what changed, each failure said
//! once, and a knob the hardware refuses (no permission, not supported) is dropped from the
//! controller's ladder so it steers with the knobs it still has. `restore` puts the hardware
//! back (clocks unlocked, power limit at its maximum) on a clean exit.

use super::controller::Decision;
use super::notes::Notes;
use super::{ClockRange, PowerActuator};
use crate::GatewayError;

#[derive(Debug, Default)]
pub struct Actuation {
    /// What was last applied (None: nothing yet, so the first decision is always applied).
    clock: Option<Option<ClockRange>>,
    power_limit: Option<Option<f64>>,
    /// Knobs the hardware refused for good; never tried again.
    clock_refused: bool,
    power_limit_refused: bool,
    notes: Notes,
    /// Failed actuator calls, for status and tests.
    pub failures: u64,
}

/// Knobs refused for good by the last `apply`: the controller should steer without them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    pub clock: bool,
    pub power_limit: bool,
}

impl Actuation {
    /// Applies what changed since the last call; returns the knobs newly refused for good.
    pub fn apply(&mut self, decision: &Decision, actuator: &mut dyn PowerActuator) -> Refusals {
        let mut refusals = Refusals::default();
        if self.clock != Some(decision.sm_clock) && !self.clock_refused {
            match actuator.set_sm_clock(decision.sm_clock) {
                Ok(()) => self.clock = Some(decision.sm_clock),
                Err(e) => {
                    refusals.clock = self.refused("clock", &e);
                    self.clock_refused = refusals.clock;
                }
            }
        }
        // Whole watts: the target moves a little every tick; the firmware needs no finer step.
        let wanted = decision.power_limit_watts.map(f64::round);
        if self.power_limit != Some(wanted) && !self.power_limit_refused {
            let watts = match wanted {
                Some(w) => Ok(w),
                None => actuator.limits().map(|l| l.power_limit_max_watts),
            };
            match watts.and_then(|w| actuator.set_power_limit(w)) {
                Ok(()) => self.power_limit = Some(wanted),
                Err(e) => {
                    refusals.power_limit = self.refused("power limit", &e);
                    self.power_limit_refused = refusals.power_limit;
                }
            }
        }
        refusals
    }

    /// Unlocks the clocks and sets the power limit back to its maximum.
    pub fn restore(&mut self, actuator: &mut dyn PowerActuator) {
        if matches!(self.clock, Some(Some(_))) {
            if let Err(e) = actuator.set_sm_clock(None) {
                tracing::warn!("could not unlock the SM clocks on exit: {e}");
            }
        }
        if matches!(self.power_limit, Some(Some(_))) {
            let restored = actuator
                .limits()
                .and_then(|l| actuator.set_power_limit(l.power_limit_max_watts));
            if let Err(e) = restored {
                tracing::warn!("could not restore the power limit on exit: {e}");
            }
        }
        self.clock = None;
        self.power_limit = None;
    }

    /// Says why a knob failed (once per distinct error); returns whether it is for good.
    fn refused(&mut self, knob: &str, e: &GatewayError) -> bool {
        self.failures += 1;
        let permanent = is_permanent(e);
        let what = if permanent {
            "steering without it"
        } else {
            "will retry"
        };
        self.notes.warn_once(
            &format!("{knob}: {e}"),
            &format!("cannot set the {knob}: {e}; {what}"),
        );
        permanent
    }
}

/// A knob that will not work however often it is tried.
fn is_permanent(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::PowerDenied(_) | GatewayError::PowerUnavailable(_)
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::power::controller::Controller;
    use crate::power::{ActuatorLimits, DeviceSample, EnergySource, PowerSample};

    /// Records calls; refuses clocks (no root) when asked to.
    #[derive(Default)]
    struct Recorder {
        clock_calls: Vec<Option<ClockRange>>,
        limit_calls: Vec<f64>,
        deny_clocks: bool,
    }

    impl PowerActuator for Recorder {
        fn limits(&self) -> Result<ActuatorLimits, GatewayError> {
            Ok(ActuatorLimits {
                power_limit_min_watts: 200.0,
                power_limit_max_watts: 700.0,
                sm_clock_min_mhz: 345,
                sm_clock_max_mhz: 1980,
            })
        }
        fn set_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError> {
            self.clock_calls.push(range);
            if self.deny_clocks {
                return Err(GatewayError::PowerDenied("locking clocks".into()));
            }
            Ok(())
        }
        fn set_power_limit(&mut self, watts: f64) -> Result<(), GatewayError> {
            self.limit_calls.push(watts);
            Ok(())
        }
    }

    fn controller() -> Controller {
        Controller::new(crate::power::controller::tests::settings())
    }

    fn sample(at: Instant, watts: f64) -> PowerSample {
        PowerSample {
            at,
            source: EnergySource::Twin,
            devices: vec![DeviceSample {
                device: "gpu0".into(),
                power_watts: watts,
                energy_joules: 0.0,
                sm_clock_mhz: None,
                power_limit_watts: None,
            }],
        }
    }

    #[test]
    fn only_changes_reach_the_hardware_and_restore_undoes_them() {
        let (mut c, mut hw, mut act) = (controller(), Recorder::default(), Actuation::default());
        let t0 = Instant::now();
        let d = c.tick(t0, Some(&sample(t0, 600.0)), Some(500.0));
        act.apply(&d, &mut hw);
        act.apply(&d, &mut hw);
        let limit = d.power_limit_watts.unwrap();
        assert!(
            limit < 500.0,
            "the limit is the target, under the cap: {limit}"
        );
        assert_eq!(
            hw.limit_calls,
            vec![limit.round()],
            "applied once, in whole watts"
        );
        assert_eq!(hw.clock_calls.len(), 1);
        act.restore(&mut hw);
        assert_eq!(hw.clock_calls.last(), Some(&None), "clocks unlocked");
        assert_eq!(hw.limit_calls.last(), Some(&700.0), "limit back at maximum");
    }

    #[test]
    fn a_refused_clock_is_said_once_and_the_controller_steers_without_it() {
        let mut hw = Recorder {
            deny_clocks: true,
            ..Recorder::default()
        };
        let (mut c, mut act) = (controller(), Actuation::default());
        let t0 = Instant::now();
        for i in 0..5u64 {
            let at = t0 + Duration::from_millis(100 * i);
            let d = c.tick(at, Some(&sample(at, 690.0)), Some(220.0));
            let refusals = act.apply(&d, &mut hw);
            c.drop_refused(refusals);
        }
        assert_eq!(
            hw.clock_calls.len(),
            1,
            "not retried after a permission error"
        );
        assert_eq!(act.failures, 1);
        assert!(c.settings().ladder.clock.is_none());
        let at = t0 + Duration::from_secs(1);
        let d = c.tick(at, Some(&sample(at, 390.0)), Some(200.0));
        assert_eq!(d.sm_clock, None);
        assert!(
            d.budget.max_seqs < 64,
            "the batch knob does the work: {d:?}"
        );
        assert_eq!(
            hw.limit_calls.first(),
            Some(&200.0),
            "the power limit still works (clamped to its minimum)"
        );
    }
}
