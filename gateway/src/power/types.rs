//! The sensor and actuator traits and the readings they exchange. Units are in the names.

use std::time::Instant;

use crate::GatewayError;

/// Where an energy figure comes from; reported with every figure (API, metrics, logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergySource {
    /// NVIDIA driver counters (measured).
    Nvml,
    /// Linux powercap / RAPL counters (measured).
    Rapl,
    /// A model of the CPU (idle + per-busy-core watts × measured utilisation).
    Estimate,
    /// The GPU digital twin (simulated).
    Twin,
}

impl EnergySource {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergySource::Nvml => "nvml",
            EnergySource::Rapl => "rapl",
            EnergySource::Estimate => "estimate",
            EnergySource::Twin => "twin",
        }
    }

    /// Whether the figure is a measurement (as opposed to a model's output).
    pub fn is_measured(self) -> bool {
        matches!(self, EnergySource::Nvml | EnergySource::Rapl)
    }
}

/// One device's reading.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSample {
    /// e.g. `gpu0`, `package-0`, `cpu`.
    pub device: String,
    /// Power as the source reports it (NVML: ~1 s average on Hopper).
    pub power_watts: f64,
    /// Monotonic energy counter since the sensor started, in joules (wraps and resets of the
    /// underlying counter are already handled).
    pub energy_joules: f64,
    pub sm_clock_mhz: Option<u32>,
    pub power_limit_watts: Option<f64>,
}

/// All devices at one instant, plus totals.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerSample {
    pub at: Instant,
    pub source: EnergySource,
    pub devices: Vec<DeviceSample>,
}

impl PowerSample {
    pub fn total_watts(&self) -> f64 {
        self.devices.iter().map(|d| d.power_watts).sum()
    }

    pub fn total_energy_joules(&self) -> f64 {
        self.devices.iter().map(|d| d.energy_joules).sum()
    }
}

/// Reads power. Sans-IO friendly: the controller only sees `PowerSample`s, so tests feed it
/// recorded or scripted ones.
pub trait PowerSensor: Send {
    fn source(&self) -> EnergySource;
    fn sample(&mut self) -> Result<PowerSample, GatewayError>;
}

/// An SM clock range to lock to, in MHz.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockRange {
    pub min_mhz: u32,
    pub max_mhz: u32,
}

/// What an actuator allows.
#[derive(Clone, Debug, PartialEq)]
pub struct ActuatorLimits {
    pub power_limit_min_watts: f64,
    pub power_limit_max_watts: f64,
    pub sm_clock_min_mhz: u32,
    pub sm_clock_max_mhz: u32,
}

/// Turns the hardware knobs. `None` unlocks the clocks; limits outside `limits()` are errors.
pub trait PowerActuator: Send {
    fn limits(&self) -> Result<ActuatorLimits, GatewayError>;
    fn set_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError>;
    fn set_power_limit(&mut self, watts: f64) -> Result<(), GatewayError>;
}
