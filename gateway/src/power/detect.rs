//! Picks the power sensor at start-up: NVML when a driver answers, else RAPL when its counters
//! are readable, else the CPU estimate (`[power] sensor = "auto"`), or the one the config
//! forces, or the GPU twin (`twin:GPU[:MODEL]`). Says which it chose and why, once.

use crate::config::{PowerConfig, SensorChoice};
use crate::engine::{SensorMeter, StepMeter};
use crate::twin::LiveTwin;
use crate::GatewayError;

use super::cpu::{CpuPowerModel, EstimateSensor};
use super::nvml::NvmlSensor;
use super::nvml_actuator::NvmlActuator;
use super::rapl::RaplSensor;
use super::{PowerActuator, PowerSensor, SharedSensor};

/// The chosen sensor, the actuator that goes with it (NVML and the twin; the CPU has none
/// here), the engine's step meter over the same sensor, and why this one was chosen.
pub struct PowerBackend {
    /// For the power monitor and the controller.
    pub sensor: Box<dyn PowerSensor>,
    pub actuator: Option<Box<dyn PowerActuator>>,
    /// For the engine: each step's energy, from the same device as `sensor`.
    pub meter: Box<dyn StepMeter>,
    /// Idle power and the most the devices can draw together, when this backend knows them
    /// (the controller's prior and the point above which a cap does not bind).
    pub floor_watts: Option<f64>,
    pub max_watts: Option<f64>,
    pub why: String,
}

/// Opens the sensor `config` asks for and logs the choice.
pub fn detect(config: &PowerConfig) -> Result<PowerBackend, GatewayError> {
    let model = CpuPowerModel {
        idle_watts: config.cpu_idle_watts,
        watts_per_busy_core: config.cpu_watts_per_busy_core,
    };
    let backend = choose(
        &config.sensor,
        open_nvml,
        || Ok(only(RaplSensor::open(&config.powercap_root)?)),
        || {
            let mut b = only(EstimateSensor::open(model, config.cpu_estimate_scope)?);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (b.floor_watts, b.max_watts) =
                (Some(model.watts(0.0)), Some(model.watts(cores as f64)));
            Ok(b)
        },
        |gpu, shape| open_twin(&config.twin_config_dir, gpu, shape),
    )?;
    tracing::info!(source = %backend.sensor.source().as_str(), "power sensor: {}", backend.why);
    Ok(backend)
}

fn open_nvml() -> Result<PowerBackend, GatewayError> {
    let mut backend = only(NvmlSensor::open()?);
    backend.actuator = Some(Box::new(NvmlActuator::open()?));
    Ok(backend)
}

pub(super) fn open_twin(
    dir: &std::path::Path,
    gpu: &str,
    shape: Option<&str>,
) -> Result<PowerBackend, GatewayError> {
    let twin = LiveTwin::open(dir, gpu, shape)?;
    let (floor_watts, max_watts) = twin.power_range_watts();
    Ok(PowerBackend {
        floor_watts: Some(floor_watts),
        max_watts: Some(max_watts),
        why: format!("GPU digital twin: {}, as configured", twin.describe()),
        sensor: Box::new(twin.clone()),
        actuator: Some(Box::new(twin.clone())),
        meter: Box::new(twin),
    })
}

/// A sensor without an actuator, shared between the monitor and the engine's meter.
pub(super) fn only(sensor: impl PowerSensor + 'static) -> PowerBackend {
    let shared = SharedSensor::new(Box::new(sensor));
    PowerBackend {
        meter: Box::new(SensorMeter::new(Box::new(shared.clone()))),
        sensor: Box::new(shared),
        actuator: None,
        floor_watts: None,
        max_watts: None,
        why: String::new(),
    }
}

/// The choice itself, over openers, so the order is testable without hardware. With `Auto`
/// each failure becomes part of the reason for the next; a forced sensor that fails is an
/// error (the operator asked for it).
fn choose(
    choice: &SensorChoice,
    nvml: impl FnOnce() -> Result<PowerBackend, GatewayError>,
    rapl: impl FnOnce() -> Result<PowerBackend, GatewayError>,
    estimate: impl FnOnce() -> Result<PowerBackend, GatewayError>,
    twin: impl FnOnce(&str, Option<&str>) -> Result<PowerBackend, GatewayError>,
) -> Result<PowerBackend, GatewayError> {
    let with_why = |mut b: PowerBackend, why: String| {
        b.why = why;
        b
    };
    match choice {
        SensorChoice::Nvml => Ok(with_why(nvml()?, "NVML, as configured".into())),
        SensorChoice::Rapl => Ok(with_why(rapl()?, "RAPL, as configured".into())),
        SensorChoice::Estimate => Ok(with_why(estimate()?, "CPU estimate, as configured".into())),
        SensorChoice::Twin { gpu, model } => twin(gpu, model.as_deref()),
        SensorChoice::Auto => {
            let nvml_err = match nvml() {
                Ok(b) => return Ok(with_why(b, "NVML: an NVIDIA driver answered".into())),
                Err(e) => e,
            };
            let rapl_err = match rapl() {
                Ok(b) => return Ok(with_why(b, format!("RAPL, because {}", reason(&nvml_err)))),
                Err(e) => e,
            };
            let (nvml_why, rapl_why) = (reason(&nvml_err), reason(&rapl_err));
            let why = format!(
                "CPU estimate (idle + per-busy-core watts), because {nvml_why}, and {rapl_why}"
            );
            Ok(with_why(estimate()?, why))
        }
    }
}

/// An opener's failure worded as part of a sentence (without the error's `power:` prefix).
fn reason(e: &GatewayError) -> String {
    match e {
        GatewayError::PowerUnavailable(what) => format!("{what} is not available"),
        GatewayError::PowerDenied(what) => format!("{what} may not be read (permission denied)"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::super::{EnergySource, PowerSample};
    use super::*;

    struct Fixed(EnergySource);

    impl PowerSensor for Fixed {
        fn source(&self) -> EnergySource {
            self.0
        }
        fn sample(&mut self) -> Result<PowerSample, GatewayError> {
            Ok(PowerSample {
                at: Instant::now(),
                source: self.0,
                devices: vec![],
            })
        }
    }

    fn ok(source: EnergySource) -> Result<PowerBackend, GatewayError> {
        Ok(only(Fixed(source)))
    }

    fn missing(what: &str) -> Result<PowerBackend, GatewayError> {
        Err(GatewayError::PowerUnavailable(what.into()))
    }

    #[test]
    fn auto_prefers_nvml_then_rapl_then_the_estimate() {
        let rapl_called = Cell::new(false);
        let b = choose(
            &SensorChoice::Auto,
            || ok(EnergySource::Nvml),
            || {
                rapl_called.set(true);
                ok(EnergySource::Rapl)
            },
            || ok(EnergySource::Estimate),
            |_, _| ok(EnergySource::Twin),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Nvml);
        assert!(!rapl_called.get(), "RAPL is not opened when NVML works");

        let b = choose(
            &SensorChoice::Auto,
            || missing("NVML"),
            || ok(EnergySource::Rapl),
            || ok(EnergySource::Estimate),
            |_, _| ok(EnergySource::Twin),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Rapl);
        assert!(b.why.contains("NVML is not available"), "{}", b.why);

        let b = choose(
            &SensorChoice::Auto,
            || missing("NVML"),
            || missing("RAPL"),
            || ok(EnergySource::Estimate),
            |_, _| ok(EnergySource::Twin),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Estimate);
        assert!(
            b.why.contains("NVML is not") && b.why.contains("RAPL is not"),
            "{}",
            b.why
        );
    }

    #[test]
    fn a_forced_sensor_that_is_missing_is_an_error_not_a_fallback() {
        let err = choose(
            &SensorChoice::Rapl,
            || ok(EnergySource::Nvml),
            || missing("RAPL"),
            || ok(EnergySource::Estimate),
            |_, _| ok(EnergySource::Twin),
        );
        assert!(matches!(err, Err(GatewayError::PowerUnavailable(_))));
        let b = choose(
            &SensorChoice::Estimate,
            || ok(EnergySource::Nvml),
            || ok(EnergySource::Rapl),
            || ok(EnergySource::Estimate),
            |_, _| ok(EnergySource::Twin),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Estimate);
    }

    #[test]
    fn twin_choice_opens_a_twin_with_an_actuator_and_a_twin_meter() {
        let mut config = PowerConfig {
            sensor: "twin:h100".parse().unwrap(),
            cpu_estimate_scope: crate::power::CpuScope::Process,
            cpu_idle_watts: 20.0,
            cpu_watts_per_busy_core: 12.0,
            powercap_root: PathBuf::from("/nonexistent"),
            twin_config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config"),
        };
        let mut b = detect(&config).unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Twin);
        assert_eq!(b.meter.source(), EnergySource::Twin);
        assert!(b.why.contains("H100 SXM"), "{}", b.why);
        let limits = b.actuator.as_ref().unwrap().limits().unwrap();
        assert_eq!(limits.sm_clock_max_mhz, 1980);
        assert_eq!(b.sensor.sample().unwrap().devices.len(), 1);
        config.sensor = "twin:tpu".parse().unwrap();
        let err = detect(&config).err().unwrap().to_string();
        assert!(err.contains("twin GPU `tpu`: no profile"), "{err}");
    }

    /// What this machine reads: two samples 200 ms apart (`-- --nocapture` to see them).
    #[test]
    fn this_machine_sensor_reads_two_samples() {
        let config = PowerConfig {
            sensor: SensorChoice::Auto,
            cpu_estimate_scope: crate::power::CpuScope::System,
            cpu_idle_watts: 20.0,
            cpu_watts_per_busy_core: 12.0,
            powercap_root: PathBuf::from("/sys/class/powercap"),
            twin_config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config"),
        };
        let mut b = detect(&config).unwrap();
        let s1 = b.sensor.sample().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let s2 = b.sensor.sample().unwrap();
        println!("power sensor here: {} ({})", s2.source.as_str(), b.why);
        for s in [&s1, &s2] {
            println!(
                "  {:.1} W, {:.3} J: {:?}",
                s.total_watts(),
                s.total_energy_joules(),
                s.devices
            );
        }
        assert!(s2.total_energy_joules() >= s1.total_energy_joules());
        assert!(s2.total_watts() >= 0.0);
    }
}
