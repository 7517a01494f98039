//! `serve`'s power loop, run by the power monitor after each sample: it takes the envelope's
//! cap now, splits it across the engines (one per GPU; one engine gets it all), asks each
//! engine's controller for a decision against its share, applies the hardware knobs through
//! `Actuation` and the rest through the engine's policy `watch`, publishes the decisions and
//! the node's compliance counts for `/v1/grid/status`, and puts the hardware back on exit.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::compliance::ComplianceCounter;
use super::controller::{Controller, Decision, EnginePoint, Mode, OperatingPoint};
use super::monitor::SampleHook;
use super::notes::Notes;
use super::split::{CapSplit, EngineDemand};
use super::{Actuation, PowerActuator, PowerSample};
use crate::engine::EnginePolicy;
use crate::grid::{now_unix, Compliance, GridState};

/// How far ahead the loop looks for a lower cap.
const LOOKAHEAD_SECONDS: f64 = 1.0;

/// One engine's side of the loop: its controller, its devices' actuator, its policy.
pub struct EngineControl {
    /// The engine's device, e.g. `cuda:1` (logs and status).
    pub device: String,
    pub controller: Controller,
    pub actuator: Option<Box<dyn PowerActuator>>,
    pub policy: watch::Sender<EnginePolicy>,
    /// How many of the node sample's devices, in order, are this engine's.
    pub sensor_devices: usize,
}

/// Where the node-wide outputs go.
pub struct ControlOutputs {
    pub decisions: watch::Sender<Option<OperatingPoint>>,
    pub compliance: watch::Sender<Option<Compliance>>,
}

struct EngineLoop {
    control: EngineControl,
    actuation: Actuation,
    last: Option<Decision>,
}

pub struct ControlLoop {
    engines: Vec<EngineLoop>,
    split: CapSplit,
    grid: GridState,
    outputs: ControlOutputs,
    compliance: ComplianceCounter,
    deferral_deadline: Duration,
    notes: Notes,
}

impl ControlLoop {
    pub fn new(
        engines: Vec<EngineControl>,
        grid: GridState,
        outputs: ControlOutputs,
        deferral_deadline: Duration,
    ) -> Self {
        let engines = engines
            .into_iter()
            .map(|control| EngineLoop {
                control,
                actuation: Actuation::default(),
                last: None,
            })
            .collect();
        Self {
            engines,
            split: CapSplit::default(),
            grid,
            outputs,
            compliance: ComplianceCounter::default(),
            deferral_deadline,
            notes: Notes::default(),
        }
    }

    /// The cap to steer for now: the strictest of now and the coming second (compliance is
    /// judged on 1 s averages, so a falling ramp or a step due within it is met on time).
    fn cap_watts(&self, unix: f64) -> (Option<f64>, Option<f64>, Option<f64>) {
        let (cap_now, next) = self.grid.cap_at(unix);
        let cap_soon = self.grid.cap_at(unix + LOOKAHEAD_SECONDS).0.cap_watts;
        let cap = match (cap_now.cap_watts, cap_soon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (cap, cap_now.cap_watts, next.map(|n| n.at))
    }

    /// Each engine's part of the node sample (None for all if the devices do not line up).
    fn per_engine(&mut self, sample: Option<&PowerSample>) -> Vec<Option<PowerSample>> {
        let n = self.engines.len();
        let Some(s) = sample else {
            return vec![None; n];
        };
        if n == 1 {
            return vec![Some(s.clone())];
        }
        let counts: Vec<usize> = self
            .engines
            .iter()
            .map(|e| e.control.sensor_devices)
            .collect();
        if counts.iter().sum::<usize>() != s.devices.len() {
            self.notes.warn_once(
                "device count",
                &format!(
                    "power sample has {} devices, the engines expect {counts:?}: no feedback",
                    s.devices.len()
                ),
            );
            return vec![None; n];
        }
        let mut devices = s.devices.iter().cloned();
        counts
            .iter()
            .map(|&c| {
                Some(PowerSample {
                    at: s.at,
                    source: s.source,
                    devices: devices.by_ref().take(c).collect(),
                })
            })
            .collect()
    }

    /// Each engine's share of the cap.
    fn shares(&mut self, cap: Option<f64>) -> Vec<Option<f64>> {
        let Some(cap) = cap else {
            return vec![None; self.engines.len()];
        };
        if self.engines.len() == 1 {
            return vec![Some(cap)];
        }
        let demands: Vec<EngineDemand> = self.engines.iter().map(EngineLoop::demand).collect();
        self.split
            .update(cap, &demands)
            .iter()
            .map(|&w| Some(w))
            .collect()
    }
}

impl EngineLoop {
    fn demand(&self) -> EngineDemand {
        EngineDemand::of(self.control.controller.settings(), self.last.as_ref())
    }

    /// One engine's tick: decide, actuate, hand the engine its policy.
    fn tick(
        &mut self,
        now: Instant,
        sample: Option<&PowerSample>,
        share: Option<f64>,
        retry_after: Option<Duration>,
        deferral_deadline: Duration,
    ) -> Decision {
        let control = &mut self.control;
        let decision = control.controller.tick(now, sample, share);
        if self.last.as_ref().map(|d| d.mode) != Some(decision.mode) {
            log_mode(&control.device, &decision);
        }
        if let Some(actuator) = control.actuator.as_deref_mut() {
            let refusals = self.actuation.apply(&decision, actuator);
            control.controller.drop_refused(refusals);
        }
        let mut policy = decision.engine_policy(deferral_deadline);
        if let Some(after) = retry_after {
            policy.retry_after = after;
        }
        control.policy.send_if_modified(|current| {
            let changed = *current != policy;
            *current = policy;
            changed
        });
        self.last = Some(decision.clone());
        decision
    }
}

fn log_mode(device: &str, d: &Decision) {
    match d.mode {
        Mode::Safe => tracing::warn!(
            device,
            "power controller in safe mode: no fresh power reading; minimum budget, power \
             limit at the cap"
        ),
        mode => tracing::info!(device, ?mode, target_watts = ?d.target_watts, "power controller"),
    }
}

impl SampleHook for ControlLoop {
    fn on_sample(&mut self, now: Instant, sample: Option<&PowerSample>) {
        let unix = now_unix();
        let (cap, in_force, next_at) = self.cap_watts(unix);
        if let Some(watts) = in_force {
            metrics::gauge!(crate::metrics::GRID_CAP_WATTS).set(watts);
        }
        // Refused work is told to come back when the envelope next changes (within reason).
        let retry_after = next_at.map(|at| Duration::from_secs_f64((at - unix).clamp(1.0, 3600.0)));
        let samples = self.per_engine(sample);
        let shares = self.shares(cap);
        let deadline = self.deferral_deadline;
        let points: Vec<EnginePoint> = self
            .engines
            .iter_mut()
            .zip(samples.iter().zip(&shares))
            .map(|(engine, (s, &share))| EnginePoint {
                device: engine.control.device.clone(),
                cap_share_watts: share,
                decision: engine.tick(now, s.as_ref(), share, retry_after, deadline),
            })
            .collect();
        if let Some(s) = sample {
            if let Some(counts) = self.compliance.push(s.at, s.total_watts(), in_force) {
                self.outputs.compliance.send_replace(Some(counts));
            }
        }
        self.outputs
            .decisions
            .send_replace(OperatingPoint::of_engines(points));
    }

    fn on_stop(&mut self) {
        for engine in &mut self.engines {
            if let Some(actuator) = engine.control.actuator.as_deref_mut() {
                engine.actuation.restore(actuator);
            }
        }
    }
}
