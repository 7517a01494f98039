//! Power for `serve`: starts the power monitor on the detected sensor and, when
//! `[controller] enabled`, the control loop that steers the engine and the hardware against
//! the grid's envelope. What the controller may assume about the hardware (its ranges, how
//! many devices, idle and maximum power) is gathered here, once.

use tokio::sync::watch;

use crate::engine::{EnginePolicy, StepBudget};
use crate::grid::{GridFeeds, GridState};
use crate::power::controller::{Controller, ControllerConfig, Hardware};
use crate::power::{ControlLoop, ControlOutputs, PowerActuator, PowerMonitor, PowerSensor};
use crate::GatewayError;

/// The power side of a loaded model: the sensor the monitor reads, the actuator (if any),
/// and what the backend knows of the devices' power range.
pub struct PowerParts {
    pub sensor: Box<dyn PowerSensor>,
    pub actuator: Option<Box<dyn PowerActuator>>,
    pub floor_watts: Option<f64>,
    pub max_watts: Option<f64>,
}

impl PowerParts {
    /// Splits a detected backend into the engine's step meter and the rest.
    pub fn split(b: crate::power::PowerBackend) -> (Box<dyn crate::engine::StepMeter>, Self) {
        let parts = Self {
            sensor: b.sensor,
            actuator: b.actuator,
            floor_watts: b.floor_watts,
            max_watts: b.max_watts,
        };
        (b.meter, parts)
    }
}

/// Starts monitoring (and control). The monitor stops — restoring the hardware — when the
/// returned value is dropped.
pub fn start(
    mut parts: PowerParts,
    config: &ControllerConfig,
    max_budget: StepBudget,
    grid: &GridState,
    feeds: GridFeeds,
    engine: watch::Sender<EnginePolicy>,
) -> Result<PowerMonitor, GatewayError> {
    let hook = if config.enabled {
        let hardware = hardware(&mut parts, grid);
        if let Some(l) = &hardware.limits {
            // Caps below every device's minimum power limit are accepted but flagged.
            grid.learn_hardware_min_watts(l.power_limit_min_watts * hardware.devices as f64);
        }
        tracing::info!(
            devices = hardware.devices,
            max_watts = hardware.max_watts,
            clock_control = hardware.limits.is_some(),
            "power controller on"
        );
        let controller = Controller::new(config.settings(&hardware, max_budget));
        let outputs = ControlOutputs {
            engine,
            decisions: feeds.operating_point,
            compliance: feeds.compliance,
        };
        let control = ControlLoop::new(
            controller,
            parts.actuator,
            grid.clone(),
            outputs,
            config.deferral_deadline,
        );
        Some(Box::new(control) as Box<dyn crate::power::SampleHook>)
    } else {
        tracing::info!("power controller off ([controller] enabled = false): measuring only");
        None
    };
    PowerMonitor::spawn(parts.sensor, config.period, feeds.power, hook)
        .map_err(|e| GatewayError::Config(format!("starting the power monitor: {e}")))
}

/// What the controller may assume: ranges from the actuator, the device count from a first
/// sample, the maximum from the power limits, else the backend, else the grid config.
fn hardware(parts: &mut PowerParts, grid: &GridState) -> Hardware {
    let limits = parts.actuator.as_ref().and_then(|a| a.limits().ok());
    let devices = parts.sensor.sample().map_or(1, |s| s.devices.len().max(1));
    let max_watts = limits
        .as_ref()
        .map(|l| l.power_limit_max_watts * devices as f64)
        .or(parts.max_watts)
        .or(grid.config().hardware_max_watts)
        .unwrap_or(f64::INFINITY);
    Hardware {
        limits,
        devices,
        floor_watts: parts.floor_watts.unwrap_or(0.0),
        max_watts,
    }
}
