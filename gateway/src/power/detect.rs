//! Picks the power sensor at start-up: NVML when a driver answers, else RAPL when its counters
//! are readable, else the CPU estimate (`[power] sensor = "auto"`), or the one the config
//! forces. Says which it chose and why, once.

use crate::config::{PowerConfig, SensorChoice};
use crate::GatewayError;

use super::cpu::{CpuPowerModel, EstimateSensor};
use super::nvml::NvmlSensor;
use super::nvml_actuator::NvmlActuator;
use super::rapl::RaplSensor;
use super::{PowerActuator, PowerSensor};

/// The chosen sensor, the actuator that goes with it (NVML only; the CPU has none here), and
/// why this one was chosen.
pub struct PowerBackend {
    pub sensor: Box<dyn PowerSensor>,
    pub actuator: Option<Box<dyn PowerActuator>>,
    pub why: String,
}

/// Opens the sensor `config` asks for and logs the choice.
pub fn detect(config: &PowerConfig) -> Result<PowerBackend, GatewayError> {
    let model = CpuPowerModel {
        idle_watts: config.cpu_idle_watts,
        watts_per_busy_core: config.cpu_watts_per_busy_core,
    };
    let backend = choose(
        config.sensor,
        open_nvml,
        || Ok(only(RaplSensor::open(&config.powercap_root)?)),
        || Ok(only(EstimateSensor::open(model)?)),
    )?;
    tracing::info!(source = %backend.sensor.source().as_str(), "power sensor: {}", backend.why);
    Ok(backend)
}

fn open_nvml() -> Result<PowerBackend, GatewayError> {
    let sensor = NvmlSensor::open()?;
    let actuator = NvmlActuator::open()?;
    Ok(PowerBackend {
        sensor: Box::new(sensor),
        actuator: Some(Box::new(actuator)),
        why: String::new(),
    })
}

fn only(sensor: impl PowerSensor + 'static) -> PowerBackend {
    PowerBackend {
        sensor: Box::new(sensor),
        actuator: None,
        why: String::new(),
    }
}

/// The choice itself, over openers, so the order is testable without hardware. With `Auto`
/// each failure becomes part of the reason for the next; a forced sensor that fails is an
/// error (the operator asked for it).
fn choose(
    choice: SensorChoice,
    nvml: impl FnOnce() -> Result<PowerBackend, GatewayError>,
    rapl: impl FnOnce() -> Result<PowerBackend, GatewayError>,
    estimate: impl FnOnce() -> Result<PowerBackend, GatewayError>,
) -> Result<PowerBackend, GatewayError> {
    let with_why = |mut b: PowerBackend, why: String| {
        b.why = why;
        b
    };
    match choice {
        SensorChoice::Nvml => Ok(with_why(nvml()?, "NVML, as configured".into())),
        SensorChoice::Rapl => Ok(with_why(rapl()?, "RAPL, as configured".into())),
        SensorChoice::Estimate => Ok(with_why(estimate()?, "CPU estimate, as configured".into())),
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
            SensorChoice::Auto,
            || ok(EnergySource::Nvml),
            || {
                rapl_called.set(true);
                ok(EnergySource::Rapl)
            },
            || ok(EnergySource::Estimate),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Nvml);
        assert!(!rapl_called.get(), "RAPL is not opened when NVML works");

        let b = choose(
            SensorChoice::Auto,
            || missing("NVML"),
            || ok(EnergySource::Rapl),
            || ok(EnergySource::Estimate),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Rapl);
        assert!(b.why.contains("NVML is not available"), "{}", b.why);

        let b = choose(
            SensorChoice::Auto,
            || missing("NVML"),
            || missing("RAPL"),
            || ok(EnergySource::Estimate),
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
            SensorChoice::Rapl,
            || ok(EnergySource::Nvml),
            || missing("RAPL"),
            || ok(EnergySource::Estimate),
        );
        assert!(matches!(err, Err(GatewayError::PowerUnavailable(_))));
        let b = choose(
            SensorChoice::Estimate,
            || ok(EnergySource::Nvml),
            || ok(EnergySource::Rapl),
            || ok(EnergySource::Estimate),
        )
        .unwrap();
        assert_eq!(b.sensor.source(), EnergySource::Estimate);
    }

    /// What this machine reads: two samples 200 ms apart (`-- --nocapture` to see them).
    #[test]
    fn this_machine_sensor_reads_two_samples() {
        let config = PowerConfig {
            sensor: SensorChoice::Auto,
            cpu_idle_watts: 20.0,
            cpu_watts_per_busy_core: 12.0,
            powercap_root: PathBuf::from("/sys/class/powercap"),
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
