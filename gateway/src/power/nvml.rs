//! The NVML sensor and actuator: per-GPU power, monotonic energy, clocks and power limits from
//! the NVIDIA driver, and the clock-lock / power-limit knobs. The logic here (units, counter
//! resets, what to do when a call is unsupported or denied) works on any `NvmlDevice`, so it is
//! tested with a fake.

use std::time::Instant;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;

use super::counter::{CounterStep, EnergyMeter};
use super::notes::Notes;
use super::nvml_api::{
    map_error, nvml_device_for, nvml_devices, throttle_reason_names, NvmlDevice,
};
use super::PowerSensor;
use super::{DeviceSample, EnergySource, PowerSample};
use crate::GatewayError;

const JOULES_PER_MILLIJOULE: f64 = 1e-3;
const WATTS_PER_MILLIWATT: f64 = 1e-3;

/// One GPU and what we learnt about it (which calls it supports).
struct Gpu<D> {
    name: String,
    dev: D,
    energy: EnergyMeter,
    /// Cleared once the instant-power field proves unsupported; then `power_usage` is used.
    instant_power_ok: bool,
    /// Cleared once the energy counter proves unsupported; then power is integrated.
    energy_counter_ok: bool,
}

/// Reads every GPU the driver shows. Source: `nvml`.
pub struct NvmlSensor<D: NvmlDevice = Device<'static>> {
    gpus: Vec<Gpu<D>>,
    notes: Notes,
}

impl NvmlSensor {
    /// All GPUs of this machine; `PowerUnavailable` without a driver or GPU.
    pub fn open() -> Result<Self, GatewayError> {
        Ok(Self::new(nvml_devices()?))
    }

    /// One engine's GPU (see `nvml_device_for`).
    pub fn open_gpu(pci_bus_id: Option<&str>, ordinal: usize) -> Result<Self, GatewayError> {
        Ok(Self::named(vec![nvml_device_for(pci_bus_id, ordinal)?]))
    }
}

impl<D: NvmlDevice> NvmlSensor<D> {
    pub fn new(devices: Vec<D>) -> Self {
        let named = devices
            .into_iter()
            .enumerate()
            .map(|(i, dev)| (format!("gpu{i}"), dev))
            .collect();
        Self::named(named)
    }

    /// GPUs with their names as samples report them.
    pub fn named(devices: Vec<(String, D)>) -> Self {
        let gpus = devices
            .into_iter()
            .map(|(name, dev)| Gpu {
                name,
                dev,
                energy: EnergyMeter::new(JOULES_PER_MILLIJOULE, None),
                instant_power_ok: true,
                energy_counter_ok: true,
            })
            .collect();
        Self {
            gpus,
            notes: Notes::default(),
        }
    }

    /// Reads all GPUs, stamping the sample with `at` (tests pass their own clock).
    pub fn sample_at(&mut self, at: Instant) -> Result<PowerSample, GatewayError> {
        let devices = self
            .gpus
            .iter_mut()
            .map(|gpu| read_gpu(gpu, at, &mut self.notes))
            .collect::<Result<_, _>>()?;
        Ok(PowerSample {
            at,
            source: EnergySource::Nvml,
            devices,
        })
    }

    /// Why each GPU is clocked down now (names as in `throttle_reason_names`). GPUs that cannot
    /// report it are left out.
    pub fn throttle_reasons(&self) -> Vec<(String, Vec<String>)> {
        self.gpus
            .iter()
            .filter_map(|g| {
                Some((
                    g.name.clone(),
                    throttle_reason_names(g.dev.throttle_reasons_bits().ok()?),
                ))
            })
            .collect()
    }
}

impl<D: NvmlDevice> PowerSensor for NvmlSensor<D> {
    fn source(&self) -> EnergySource {
        EnergySource::Nvml
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        self.sample_at(Instant::now())
    }
}

/// Power in watts: the instant field where the GPU has it (the ~1 s average of `power_usage`
/// on Hopper lags the steps the controller is steering), else `power_usage`.
fn read_power_watts<D: NvmlDevice>(
    gpu: &mut Gpu<D>,
    notes: &mut Notes,
) -> Result<f64, GatewayError> {
    if gpu.instant_power_ok {
        match gpu.dev.instant_power_mw() {
            Ok(mw) => return Ok(f64::from(mw) * WATTS_PER_MILLIWATT),
            Err(e) => {
                gpu.instant_power_ok = false;
                let msg = format!(
                    "NVML {}: no instant power field ({e}); using nvmlDeviceGetPowerUsage",
                    gpu.name
                );
                notes.info_once(&format!("{}-instant", gpu.name), &msg);
            }
        }
    }
    let mw = gpu
        .dev
        .power_usage_mw()
        .map_err(|e| map_error(&format!("NVML {} power", gpu.name), e))?;
    Ok(f64::from(mw) * WATTS_PER_MILLIWATT)
}

/// Advances the GPU's monotonic energy: from the driver's counter, or by integrating power
/// when the GPU has no counter (pre-Volta).
fn advance_energy<D: NvmlDevice>(
    gpu: &mut Gpu<D>,
    at: Instant,
    watts: f64,
    notes: &mut Notes,
) -> Result<(), GatewayError> {
    if gpu.energy_counter_ok {
        match gpu.dev.total_energy_mj() {
            Ok(mj) => {
                if gpu.energy.update(mj, at, watts) == CounterStep::Reset {
                    let msg = format!("NVML {}: energy counter went backwards (driver reset?); filling the gap with power × time", gpu.name);
                    notes.warn_once(&format!("{}-reset", gpu.name), &msg);
                }
                return Ok(());
            }
            Err(NvmlError::NotSupported) => {
                gpu.energy_counter_ok = false;
                let msg = format!(
                    "NVML {}: no energy counter; integrating power over time",
                    gpu.name
                );
                notes.info_once(&format!("{}-counter", gpu.name), &msg);
            }
            Err(e) => return Err(map_error(&format!("NVML {} energy", gpu.name), e)),
        }
    }
    gpu.energy.integrate(at, watts);
    Ok(())
}

fn read_gpu<D: NvmlDevice>(
    gpu: &mut Gpu<D>,
    at: Instant,
    notes: &mut Notes,
) -> Result<DeviceSample, GatewayError> {
    let power_watts = read_power_watts(gpu, notes)?;
    advance_energy(gpu, at, power_watts, notes)?;
    // Clock and limit are informative; a GPU that cannot report them still has a power reading.
    let sm_clock_mhz = gpu.dev.sm_clock_mhz().ok();
    let power_limit_watts = gpu
        .dev
        .power_limit_mw()
        .ok()
        .map(|mw| f64::from(mw) * WATTS_PER_MILLIWATT);
    if sm_clock_mhz.is_none() || power_limit_watts.is_none() {
        let msg = format!(
            "NVML {}: SM clock or power limit not readable; reported as absent",
            gpu.name
        );
        notes.info_once(&format!("{}-optional", gpu.name), &msg);
    }
    Ok(DeviceSample {
        device: gpu.name.clone(),
        power_watts,
        energy_joules: gpu.energy.total_joules(),
        sm_clock_mhz,
        power_limit_watts,
    })
}

#[cfg(test)]
#[path = "nvml_tests.rs"]
mod tests;
