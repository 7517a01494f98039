//! Power for `serve`: starts the power monitor on the node's sensor (each engine's sensor side
//! by side) and, when `[controller] enabled`, the control loop that steers each engine and its
//! hardware against its share of the grid's envelope. What each engine's controller may assume
//! about its hardware (its ranges, how many devices, idle and maximum power) is gathered here,
//! once.

use tokio::sync::watch;

use crate::engine::{EnginePolicy, StepBudget};
use crate::grid::{GridFeeds, GridState};
use crate::power::controller::{Controller, ControllerConfig, Hardware};
use crate::power::{
    ControlLoop, ControlOutputs, EngineControl, NodeSensor, PowerActuator, PowerMonitor,
    PowerSensor,
};
use crate::GatewayError;

/// The power side of one engine: the sensor the monitor reads, the actuator (if any), and
/// what the backend knows of the devices' power range.
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

/// One engine as the power loop sees it.
pub struct EnginePower {
    /// The engine's device, e.g. `cuda:1`.
    pub device: String,
    pub parts: PowerParts,
    /// The engine's policy (budget, admission): the loop is its only sender.
    pub policy: watch::Sender<EnginePolicy>,
}

/// Starts monitoring (and control). The monitor stops — restoring the hardware — when the
/// returned value is dropped.
pub fn start(
    mut engines: Vec<EnginePower>,
    config: &ControllerConfig,
    max_budget: StepBudget,
    grid: &GridState,
    feeds: GridFeeds,
) -> Result<PowerMonitor, GatewayError> {
    let count = engines.len().max(1) as f64;
    let hardware: Vec<Hardware> = engines
        .iter_mut()
        .map(|e| hardware(&mut e.parts, grid, count))
        .collect();
    let mut sensors = Vec::with_capacity(engines.len());
    let mut controls = Vec::with_capacity(engines.len());
    for (engine, hw) in engines.into_iter().zip(hardware) {
        sensors.push((engine.device.clone(), engine.parts.sensor));
        tracing::info!(
            device = %engine.device,
            devices = hw.devices,
            max_watts = hw.max_watts,
            clock_control = hw.limits.is_some(),
            "power controller {}",
            if config.enabled { "on" } else { "off: measuring only" }
        );
        controls.push(EngineControl {
            device: engine.device,
            sensor_devices: hw.devices,
            controller: Controller::new(config.settings(&hw, max_budget)),
            actuator: engine.parts.actuator,
            policy: engine.policy,
        });
    }
    let hook = if config.enabled {
        // Caps below every device's minimum power limit are accepted but flagged.
        let min_watts: Option<f64> = controls
            .iter()
            .map(|c| {
                let s = c.controller.settings();
                s.power_limit_range_watts
                    .map(|(min, _)| min * c.sensor_devices as f64)
            })
            .sum();
        if let Some(watts) = min_watts {
            grid.learn_hardware_min_watts(watts);
        }
        let outputs = ControlOutputs {
            decisions: feeds.operating_point,
            compliance: feeds.compliance,
        };
        let control = ControlLoop::new(controls, grid.clone(), outputs, config.deferral_deadline);
        Some(Box::new(control) as Box<dyn crate::power::SampleHook>)
    } else {
        None
    };
    let sensor: Box<dyn PowerSensor> = match sensors.len() {
        1 => sensors.remove(0).1,
        _ => Box::new(NodeSensor::new(sensors)),
    };
    PowerMonitor::spawn(sensor, config.period, feeds.power, hook)
        .map_err(|e| GatewayError::Config(format!("starting the power monitor: {e}")))
}

/// What one engine's controller may assume: ranges from the actuator, the device count from a
/// first sample, the maximum from the power limits, else the backend, else the grid config's
/// node figure shared evenly among `engines`.
fn hardware(parts: &mut PowerParts, grid: &GridState, engines: f64) -> Hardware {
    let limits = parts.actuator.as_ref().and_then(|a| a.limits().ok());
    let devices = parts.sensor.sample().map_or(1, |s| s.devices.len().max(1));
    let max_watts = limits
        .as_ref()
        .map(|l| l.power_limit_max_watts * devices as f64)
        .or(parts.max_watts)
        .or(grid.config().hardware_max_watts.map(|w| w / engines))
        .unwrap_or(f64::INFINITY);
    Hardware {
        limits,
        devices,
        floor_watts: parts.floor_watts.unwrap_or(0.0),
        max_watts,
    }
}
