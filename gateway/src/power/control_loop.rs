//! `serve`'s power loop, run by the power monitor after each sample: it asks the controller
//! for a decision against the envelope's cap now, applies the hardware knobs through
//! `Actuation` and the rest through the engine's policy `watch`, publishes the decision and
//! the compliance counts for `/v1/grid/status`, and puts the hardware back on exit.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::compliance::ComplianceCounter;
use super::controller::{Controller, Decision, Mode};
use super::monitor::SampleHook;
use super::{Actuation, PowerActuator, PowerSample};
use crate::engine::EnginePolicy;
use crate::grid::{now_unix, Compliance, GridState};

/// How far ahead the loop looks for a lower cap.
const LOOKAHEAD_SECONDS: f64 = 1.0;

/// Where the loop's outputs go.
pub struct ControlOutputs {
    pub engine: watch::Sender<EnginePolicy>,
    pub decisions: watch::Sender<Option<Decision>>,
    pub compliance: watch::Sender<Option<Compliance>>,
}

pub struct ControlLoop {
    controller: Controller,
    actuator: Option<Box<dyn PowerActuator>>,
    actuation: Actuation,
    grid: GridState,
    outputs: ControlOutputs,
    compliance: ComplianceCounter,
    deferral_deadline: Duration,
    last_mode: Option<Mode>,
}

impl ControlLoop {
    pub fn new(
        controller: Controller,
        actuator: Option<Box<dyn PowerActuator>>,
        grid: GridState,
        outputs: ControlOutputs,
        deferral_deadline: Duration,
    ) -> Self {
        Self {
            controller,
            actuator,
            actuation: Actuation::default(),
            grid,
            outputs,
            compliance: ComplianceCounter::default(),
            deferral_deadline,
            last_mode: None,
        }
    }

    fn log_mode(&mut self, d: &Decision) {
        if self.last_mode == Some(d.mode) {
            return;
        }
        match d.mode {
            Mode::Safe => tracing::warn!(
                "power controller in safe mode: no fresh power reading; minimum budget, power \
                 limit at the cap"
            ),
            mode => tracing::info!(?mode, target_watts = ?d.target_watts, "power controller"),
        }
        self.last_mode = Some(d.mode);
    }
}

impl SampleHook for ControlLoop {
    fn on_sample(&mut self, now: Instant, sample: Option<&PowerSample>) {
        let unix = now_unix();
        let (cap_now, next) = self.grid.cap_at(unix);
        // Compliance is judged on 1 s averages: steer for the strictest cap of the coming
        // second, so a falling ramp or a step due within it is met on time.
        let cap_soon = self.grid.cap_at(unix + LOOKAHEAD_SECONDS).0.cap_watts;
        let cap = match (cap_now.cap_watts, cap_soon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(watts) = cap_now.cap_watts {
            metrics::gauge!(crate::metrics::GRID_CAP_WATTS).set(watts);
        }
        let decision = self.controller.tick(now, sample, cap);
        self.log_mode(&decision);
        if let Some(actuator) = self.actuator.as_deref_mut() {
            let refusals = self.actuation.apply(&decision, actuator);
            self.controller.drop_refused(refusals);
        }
        let mut policy = decision.engine_policy(self.deferral_deadline);
        // Refused work is told to come back when the envelope next changes (within reason).
        if let Some(at) = next.map(|n| n.at) {
            policy.retry_after = Duration::from_secs_f64((at - unix).clamp(1.0, 3600.0));
        }
        self.outputs.engine.send_if_modified(|current| {
            let changed = *current != policy;
            *current = policy;
            changed
        });
        if let Some(s) = sample {
            let in_force = cap_now.cap_watts;
            if let Some(counts) = self.compliance.push(s.at, s.total_watts(), in_force) {
                self.outputs.compliance.send_replace(Some(counts));
            }
        }
        self.outputs.decisions.send_replace(Some(decision));
    }

    fn on_stop(&mut self) {
        if let Some(actuator) = self.actuator.as_deref_mut() {
            self.actuation.restore(actuator);
        }
    }
}
