//! One simulated GPU in virtual time: runs steps at its current clock, lets the firmware
//! move that clock against the power limit, applies actuator commands after their delay and
//! keeps NVML-like telemetry. Sans-IO: it never sleeps or reads a clock; callers advance it.

use std::sync::Arc;
use std::time::Duration;

use super::firmware::Governor;
use super::profile::GpuProfile;
use super::shape::ModelShape;
use super::step::{floor_power_watts, step_cost, StepComposition, StepCost};
use super::telemetry::PowerHistory;
use crate::power::{ActuatorLimits, ClockRange};
use crate::GatewayError;

/// An actuator command waiting for its delay to pass.
#[derive(Clone, Copy, Debug)]
enum Command {
    Lock(Option<ClockRange>),
    PowerLimit(f64),
}

#[derive(Clone, Debug)]
pub struct TwinGpu {
    profile: Arc<GpuProfile>,
    shape: Arc<ModelShape>,
    tensor_parallel: u32,
    governor: Governor,
    now_seconds: f64,
    clock_mhz: u32,
    lock: Option<ClockRange>,
    power_limit_watts: f64,
    /// (due time in virtual seconds, command), in the order they were issued.
    pending: Vec<(f64, Command)>,
    history: PowerHistory,
    next_tick_seconds: f64,
}

impl TwinGpu {
    /// A GPU at default clock and power limit, at virtual time zero, that is one of
    /// `tensor_parallel` ranks sharing `shape`.
    pub fn new(profile: Arc<GpuProfile>, shape: Arc<ModelShape>, tensor_parallel: u32) -> Self {
        let governor = Governor {
            hardware_min_mhz: profile.sm_clock_min_mhz,
            hardware_max_mhz: profile.sm_clock_max_mhz,
            step_mhz: profile.firmware.clock_step_mhz,
            headroom_fraction: profile.firmware.headroom_fraction,
        };
        let keep_seconds = profile
            .telemetry
            .power_window
            .as_secs_f64()
            .max(profile.firmware.window.as_secs_f64())
            + 1.0;
        let history = PowerHistory::new(
            keep_seconds,
            profile.telemetry.energy_counter_period.as_secs_f64(),
        );
        Self {
            clock_mhz: profile.sm_clock_default_mhz,
            power_limit_watts: profile.power_limit_default_watts,
            next_tick_seconds: profile.firmware.period.as_secs_f64(),
            governor,
            history,
            profile,
            shape,
            tensor_parallel: tensor_parallel.max(1),
            now_seconds: 0.0,
            lock: None,
            pending: Vec::new(),
        }
    }

    pub fn profile(&self) -> &GpuProfile {
        &self.profile
    }

    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Virtual time since construction.
    pub fn now(&self) -> Duration {
        Duration::from_secs_f64(self.now_seconds)
    }

    pub fn clock_mhz(&self) -> u32 {
        self.clock_mhz
    }

    /// The limit in force now (a newer command may still be pending).
    pub fn power_limit_watts(&self) -> f64 {
        self.power_limit_watts
    }

    pub fn locked_clocks(&self) -> Option<ClockRange> {
        self.lock
    }

    /// What `step` would cost at the current clock, without running it.
    pub fn cost(&self, step: &StepComposition) -> StepCost {
        step_cost(
            &self.profile,
            &self.shape,
            self.tensor_parallel,
            step,
            f64::from(self.clock_mhz),
        )
    }

    /// Runs `step` at the current clock and returns its cost.
    pub fn advance(&mut self, step: &StepComposition) -> StepCost {
        let cost = self.cost(step);
        self.run(cost.duration_seconds, cost.power_watts);
        cost
    }

    /// Runs a step whose cost was computed with `cost`, then waits (clocked up, e.g. for a
    /// slower tensor-parallel peer) until `total_seconds`. Returns this GPU's energy.
    pub fn advance_padded(&mut self, cost: &StepCost, total_seconds: f64) -> f64 {
        self.run(cost.duration_seconds, cost.power_watts);
        let wait_seconds = (total_seconds - cost.duration_seconds).max(0.0);
        let wait_watts = floor_power_watts(&self.profile, f64::from(self.clock_mhz));
        self.run(wait_seconds, wait_watts);
        cost.energy_joules + wait_watts * wait_seconds
    }

    /// Nothing to run for `duration`: the GPU draws its idle power. Clocks park when idle, so
    /// a clock lock does not change idle power here (real locked GPUs idle a few watts higher).
    pub fn idle(&mut self, duration: Duration) {
        let watts = self.profile.idle_watts;
        self.run(duration.as_secs_f64(), watts);
    }

    /// Moves virtual time forward by `seconds` at `watts`, letting due commands and firmware
    /// periods inside that span act (their clock changes apply from the next step on).
    fn run(&mut self, seconds: f64, watts: f64) {
        if seconds <= 0.0 {
            return;
        }
        let start = self.now_seconds;
        let end = start + seconds;
        self.history.push(start, end, watts);
        let period = self.profile.firmware.period.as_secs_f64();
        let window = self.profile.firmware.window.as_secs_f64();
        while self.next_tick_seconds <= end {
            let tick = self.next_tick_seconds;
            self.apply_due(tick);
            let recent_watts = self.history.average_watts(tick, window);
            self.clock_mhz = self.governor.tick(
                self.clock_mhz,
                self.lock,
                self.power_limit_watts,
                recent_watts,
            );
            self.next_tick_seconds += period;
        }
        self.apply_due(end);
        self.now_seconds = end;
    }

    fn apply_due(&mut self, at_seconds: f64) {
        while let Some(i) = self.pending.iter().position(|(due, _)| *due <= at_seconds) {
            match self.pending.remove(i).1 {
                Command::Lock(range) => {
                    self.lock = range;
                    self.clock_mhz = self.governor.clamp(self.clock_mhz, range);
                }
                Command::PowerLimit(watts) => self.power_limit_watts = watts,
            }
        }
    }

    /// The ranges this GPU accepts.
    pub fn limits(&self) -> ActuatorLimits {
        ActuatorLimits {
            power_limit_min_watts: self.profile.power_limit_min_watts,
            power_limit_max_watts: self.profile.power_limit_max_watts,
            sm_clock_min_mhz: self.profile.sm_clock_min_mhz,
            sm_clock_max_mhz: self.profile.sm_clock_max_mhz,
        }
    }

    /// Locks (or with `None` unlocks) the SM clock range after the actuator delay.
    pub fn command_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError> {
        self.check_sm_clock(range)?;
        self.queue(Command::Lock(range));
        Ok(())
    }

    /// Whether `command_sm_clock(range)` would be accepted.
    pub fn check_sm_clock(&self, range: Option<ClockRange>) -> Result<(), GatewayError> {
        if let Some(r) = range {
            let p = &self.profile;
            if r.min_mhz > r.max_mhz
                || r.min_mhz < p.sm_clock_min_mhz
                || r.max_mhz > p.sm_clock_max_mhz
            {
                return Err(GatewayError::Power(format!(
                    "twin {}: clock range {}–{} MHz outside {}–{} MHz",
                    p.name, r.min_mhz, r.max_mhz, p.sm_clock_min_mhz, p.sm_clock_max_mhz
                )));
            }
        }
        Ok(())
    }

    /// Sets the power limit after the actuator delay.
    pub fn command_power_limit(&mut self, watts: f64) -> Result<(), GatewayError> {
        self.check_power_limit(watts)?;
        self.queue(Command::PowerLimit(watts));
        Ok(())
    }

    /// Whether `command_power_limit(watts)` would be accepted.
    pub fn check_power_limit(&self, watts: f64) -> Result<(), GatewayError> {
        let p = &self.profile;
        if !(p.power_limit_min_watts..=p.power_limit_max_watts).contains(&watts) {
            return Err(GatewayError::Power(format!(
                "twin {}: power limit {watts} W outside {}–{} W",
                p.name, p.power_limit_min_watts, p.power_limit_max_watts
            )));
        }
        Ok(())
    }

    fn queue(&mut self, command: Command) {
        let due = self.now_seconds + self.profile.firmware.actuator_delay.as_secs_f64();
        self.pending.push((due, command));
        // A zero delay acts before the next step, like a synchronous driver call.
        self.apply_due(self.now_seconds);
    }

    /// NVML `power_usage`: the trailing average over the telemetry window (≈ 1 s on Hopper).
    pub fn power_usage_watts(&self) -> f64 {
        self.history.average_watts(
            self.now_seconds,
            self.profile.telemetry.power_window.as_secs_f64(),
        )
    }

    /// NVML's instant-power field: the trailing average over a few tens of ms.
    pub fn instant_power_watts(&self) -> f64 {
        self.history.average_watts(
            self.now_seconds,
            self.profile.telemetry.instant_power_window.as_secs_f64(),
        )
    }

    /// Mean power over any trailing window (for tests and the firmware's view).
    pub fn average_watts(&self, window: Duration) -> f64 {
        self.history
            .average_watts(self.now_seconds, window.as_secs_f64())
    }

    /// NVML `total_energy_consumption`: updates once per counter period.
    pub fn energy_counter_joules(&self) -> f64 {
        self.history.counter_joules()
    }

    /// The exact ∫P dt since start (what the engine apportions per step).
    pub fn total_energy_joules(&self) -> f64 {
        self.history.total_joules()
    }
}
