//! Power for each engine (data parallel: one engine per GPU): every GPU engine gets a sensor,
//! meter and actuator of its own GPU only, so its requests' energy is its own and the
//! controller can split the node's cap across the engines. A CPU engine gets the node's
//! sensor, as `detect` chooses it.

use crate::config::{PowerConfig, SensorChoice};
use crate::GatewayError;

use super::detect::{detect, only, open_twin, PowerBackend};
use super::nvml::NvmlSensor;
use super::nvml_actuator::NvmlActuator;
use super::{PowerSample, PowerSensor};

/// Where one engine runs, as its power sensor needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineDevice {
    /// e.g. `cuda:1`, `cpu`.
    pub label: String,
    /// The CUDA ordinal (None: the CPU).
    pub cuda_ordinal: Option<usize>,
    /// The GPU's PCI address as NVML spells it, when CUDA gave one.
    pub pci_bus_id: Option<String>,
}

/// One power backend per engine, in order.
pub fn detect_engines(
    config: &PowerConfig,
    engines: &[EngineDevice],
) -> Result<Vec<PowerBackend>, GatewayError> {
    let gpus: Vec<(&EngineDevice, usize)> = engines
        .iter()
        .filter_map(|e| e.cuda_ordinal.map(|n| (e, n)))
        .collect();
    if gpus.is_empty() || gpus.len() != engines.len() {
        if engines.len() != 1 {
            return Err(GatewayError::Config(format!(
                "{} engines, not all on GPUs: data parallel serving runs one engine per GPU",
                engines.len()
            )));
        }
        return Ok(vec![detect(config)?]);
    }
    let per_gpu = |config: &PowerConfig| -> Result<Vec<PowerBackend>, GatewayError> {
        gpus.iter()
            .map(|(e, ordinal)| match &config.sensor {
                SensorChoice::Twin { gpu, model } => {
                    let mut b = open_twin(&config.twin_config_dir, gpu, model.as_deref())?;
                    b.why = format!("{} for {}", b.why, e.label);
                    Ok(b)
                }
                _ => open_nvml_gpu(e, *ordinal),
            })
            .collect()
    };
    let whole_node = |sensor: &str| {
        GatewayError::Config(format!(
            "engine.device lists {} GPUs, one engine each: each needs its own GPU's power \
             sensor, but {sensor}; use power.sensor = \"nvml\" (or \"auto\" on a machine with \
             an NVIDIA driver) or a twin",
            gpus.len()
        ))
    };
    let backends = match (&config.sensor, gpus.len()) {
        (SensorChoice::Twin { .. } | SensorChoice::Nvml, _) => per_gpu(config)?,
        (SensorChoice::Auto, n) => match per_gpu(config) {
            Ok(b) => b,
            Err(e) if n == 1 => {
                tracing::info!("no NVML for {}: {e}", gpus[0].0.label);
                vec![detect(config)?]
            }
            Err(e) => return Err(whole_node(&format!("NVML failed ({e})"))),
        },
        (_, 1) => vec![detect(config)?],
        (choice, _) => return Err(whole_node(&format!("{choice:?} measures the whole node"))),
    };
    for b in &backends {
        tracing::info!(source = %b.sensor.source().as_str(), "power sensor: {}", b.why);
    }
    Ok(backends)
}

/// NVML for one engine's GPU: the sensor (shared with the engine's meter) and the actuator.
fn open_nvml_gpu(engine: &EngineDevice, ordinal: usize) -> Result<PowerBackend, GatewayError> {
    let bus = engine.pci_bus_id.as_deref();
    let mut backend = only(NvmlSensor::open_gpu(bus, ordinal)?);
    backend.actuator = Some(Box::new(NvmlActuator::open_gpu(bus, ordinal)?));
    backend.why = format!(
        "NVML for {} (PCI {})",
        engine.label,
        bus.unwrap_or("unknown")
    );
    Ok(backend)
}

/// The node's power as one sensor: each engine's sensor read in turn, devices side by side in
/// engine order (what the control loop splits back per engine). Names that repeat across
/// engines (two twins both call theirs `gpu0`) get the engine's label in front.
pub struct NodeSensor {
    engines: Vec<(String, Box<dyn PowerSensor>)>,
}

impl NodeSensor {
    pub fn new(engines: Vec<(String, Box<dyn PowerSensor>)>) -> Self {
        Self { engines }
    }
}

impl PowerSensor for NodeSensor {
    fn source(&self) -> super::EnergySource {
        self.engines
            .first()
            .map_or(super::EnergySource::Estimate, |(_, s)| s.source())
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        let mut samples = Vec::with_capacity(self.engines.len());
        for (label, sensor) in &mut self.engines {
            samples.push((label.as_str(), sensor.sample()?));
        }
        let mut names: Vec<&str> = samples
            .iter()
            .flat_map(|(_, s)| s.devices.iter().map(|d| d.device.as_str()))
            .collect();
        names.sort_unstable();
        let repeats = names.windows(2).any(|w| w[0] == w[1]);
        let first = samples.first().map(|(_, s)| (s.at, s.source));
        let (at, source) = first.ok_or_else(|| GatewayError::Power("no engines".into()))?;
        let devices = samples
            .iter()
            .flat_map(|(label, s)| {
                s.devices.iter().cloned().map(move |mut d| {
                    if repeats {
                        d.device = format!("{label}/{}", d.device);
                    }
                    d
                })
            })
            .collect();
        let at = samples.iter().map(|(_, s)| s.at).max().unwrap_or(at);
        Ok(PowerSample {
            at,
            source,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::power::{CpuScope, EnergySource};

    fn config(sensor: &str) -> PowerConfig {
        PowerConfig {
            sensor: sensor.parse().unwrap(),
            cpu_estimate_scope: CpuScope::Process,
            cpu_idle_watts: 20.0,
            cpu_watts_per_busy_core: 12.0,
            powercap_root: PathBuf::from("/nonexistent"),
            twin_config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config"),
        }
    }

    fn gpu(n: usize) -> EngineDevice {
        EngineDevice {
            label: format!("cuda:{n}"),
            cuda_ordinal: Some(n),
            pci_bus_id: None,
        }
    }

    #[test]
    fn two_gpu_engines_get_a_twin_each_and_the_node_reads_both() {
        let backends = detect_engines(&config("twin:h100"), &[gpu(0), gpu(1)]).unwrap();
        assert_eq!(backends.len(), 2);
        assert!(
            backends[1].why.ends_with("for cuda:1"),
            "{}",
            backends[1].why
        );
        let sensors = backends
            .into_iter()
            .zip(["cuda:0", "cuda:1"])
            .map(|(b, l)| (l.to_string(), b.sensor))
            .collect();
        let sample = NodeSensor::new(sensors).sample().unwrap();
        assert_eq!(sample.source, EnergySource::Twin);
        let names: Vec<&str> = sample.devices.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["cuda:0/gpu0", "cuda:1/gpu0"]);
    }

    #[test]
    fn several_gpu_engines_refuse_a_whole_node_sensor() {
        for sensor in ["rapl", "estimate", "auto"] {
            let err = detect_engines(&config(sensor), &[gpu(0), gpu(1)])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("lists 2 GPUs"), "{sensor}: {err}");
        }
    }

    #[test]
    fn one_engine_without_nvml_falls_back_to_the_node_sensor() {
        let cpu = EngineDevice {
            label: "cpu".into(),
            cuda_ordinal: None,
            pci_bus_id: None,
        };
        for engine in [cpu, gpu(0)] {
            let b = detect_engines(&config("estimate"), &[engine]).unwrap();
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].sensor.source(), EnergySource::Estimate);
        }
    }
}
