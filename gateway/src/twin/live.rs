//! The twin behind `serve --power twin:GPU`: the real model runs on the CPU, and every step
//! it runs is also run on a simulated GPU, whose energy is the step's energy and whose
//! telemetry is what the sensor reports.
//!
//! Time: the twin is busy only for its own (GPU) step durations, and idle for the wall-clock
//! gaps between steps. While the CPU computes a step, twin time does not move, so under load
//! twin time runs slower than the wall clock by (CPU step / GPU step): power levels and energy
//! per token are GPU-like, while power dynamics under load are stretched in wall time. The
//! controller's fast dynamics are proven in `simulate`, where everything is virtual.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use gridserve_models::StepBatch;

use super::cluster::TwinCluster;
use super::profile::GpuProfile;
use super::shape::ModelShape;
use super::step::StepComposition;
use crate::engine::StepMeter;
use crate::power::{
    ActuatorLimits, ClockRange, EnergySource, PowerActuator, PowerSample, PowerSensor,
};
use crate::GatewayError;

struct State {
    cluster: TwinCluster,
    /// Wall-clock instant up to which twin time has been accounted.
    synced_at: Instant,
    /// A step is running on the CPU: its twin time is added when it ends, not as idle.
    busy: bool,
}

/// A twin cluster shared by the engine (as its `StepMeter`), the power monitor (as a
/// `PowerSensor`) and the controller (as a `PowerActuator`).
#[derive(Clone)]
pub struct LiveTwin(Arc<Mutex<State>>);

impl LiveTwin {
    pub fn new(cluster: TwinCluster) -> Self {
        Self(Arc::new(Mutex::new(State {
            cluster,
            synced_at: Instant::now(),
            busy: false,
        })))
    }

    /// Opens `twin:GPU[:MODEL]`: GPU names a profile in `dir/gpus` (exactly, or by a unique
    /// prefix: `h100` is `h100-sxm`), MODEL a shape in `dir/models` (default `gemma-3-270m`,
    /// the model `serve` runs by default).
    pub fn open(dir: &Path, gpu: &str, model: Option<&str>) -> Result<Self, GatewayError> {
        let gpus_dir = dir.join("gpus");
        let profile = GpuProfile::load_named(&gpus_dir, &resolve_name(&gpus_dir, gpu)?)?;
        let shape = ModelShape::load_named(&dir.join("models"), model.unwrap_or(DEFAULT_SHAPE))?;
        Ok(Self::new(TwinCluster::new(profile, shape, None)))
    }

    /// Idle power and the highest power limit, all GPUs together.
    pub fn power_range_watts(&self) -> (f64, f64) {
        match self.state() {
            Ok(s) => {
                let gpus = s.cluster.gpus();
                let p = gpus[0].profile();
                let n = gpus.len() as f64;
                (p.idle_watts * n, p.power_limit_max_watts * n)
            }
            Err(_) => (0.0, f64::INFINITY),
        }
    }

    /// e.g. `1× H100 SXM running gemma-3-270m`.
    pub fn describe(&self) -> String {
        match self.state() {
            Ok(s) => {
                let gpus = s.cluster.gpus();
                let shape = gpus[0].shape().name.clone();
                format!("{}× {} running {shape}", gpus.len(), gpus[0].profile().name)
            }
            Err(e) => e.to_string(),
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, GatewayError> {
        self.0
            .lock()
            .map_err(|_| GatewayError::Power("twin: state lock poisoned".into()))
    }

    /// Runs `batch` on the twin (right after whatever idle `begin` accounted).
    fn run_step(&self, batch: &StepBatch) -> Result<f64, GatewayError> {
        let mut state = self.state()?;
        let step = StepComposition::from_batch(batch);
        let cost = if step.is_empty() {
            0.0
        } else {
            state.cluster.advance(&step).energy_joules
        };
        state.busy = false;
        state.synced_at = Instant::now();
        Ok(cost)
    }
}

const DEFAULT_SHAPE: &str = "gemma-3-270m";

/// The profile file stem `name` means: itself if `dir/name.toml` exists, else the only stem
/// starting with `name`.
fn resolve_name(dir: &Path, name: &str) -> Result<String, GatewayError> {
    if dir.join(format!("{name}.toml")).is_file() {
        return Ok(name.to_owned());
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| GatewayError::Config(format!("reading {}: {e}", dir.display())))?;
    let stems: Vec<String> = entries
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .collect();
    let matches: Vec<&String> = stems.iter().filter(|s| s.starts_with(name)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(GatewayError::Config(format!(
            "twin GPU `{name}`: {} in {} (have: {})",
            if matches.is_empty() {
                "no profile"
            } else {
                "ambiguous"
            },
            dir.display(),
            stems.join(", ")
        ))),
    }
}

impl State {
    /// Lets the twin idle through the wall-clock time since it was last synced, unless a
    /// step is in flight.
    fn catch_up(&mut self, now: Instant) {
        if !self.busy {
            self.cluster
                .idle(now.saturating_duration_since(self.synced_at));
        }
        self.synced_at = now;
    }
}

impl StepMeter for LiveTwin {
    fn source(&self) -> EnergySource {
        EnergySource::Twin
    }

    fn begin(&mut self, _batch: &StepBatch) {
        if let Ok(mut state) = self.state() {
            state.catch_up(Instant::now());
            state.busy = true;
        }
    }

    fn end(&mut self, batch: &StepBatch) -> f64 {
        self.run_step(batch).unwrap_or(0.0)
    }
}

impl PowerSensor for LiveTwin {
    fn source(&self) -> EnergySource {
        EnergySource::Twin
    }

    /// The twin's NVML-like reading, stamped with the wall clock (the twin's own time is not
    /// the wall clock's, see the module note).
    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        let mut state = self.state()?;
        let now = Instant::now();
        state.catch_up(now);
        let mut sample = state.cluster.sample()?;
        sample.at = now;
        Ok(sample)
    }
}

impl PowerActuator for LiveTwin {
    fn limits(&self) -> Result<ActuatorLimits, GatewayError> {
        self.state()?.cluster.limits()
    }

    fn set_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError> {
        self.state()?.cluster.set_sm_clock(range)
    }

    fn set_power_limit(&mut self, watts: f64) -> Result<(), GatewayError> {
        self.state()?.cluster.set_power_limit(watts)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use gridserve_models::SeqStep;

    use super::*;

    fn config_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
    }

    fn twin() -> LiveTwin {
        LiveTwin::open(&config_dir(), "h100", Some("llama-3.1-8b")).unwrap()
    }

    #[test]
    fn twin_names_resolve_by_unique_prefix_and_say_what_exists() {
        let dir = config_dir();
        let t = LiveTwin::open(&dir, "h200", None).unwrap();
        assert_eq!(t.describe(), "1× H200 SXM running gemma-3-270m");
        let t = LiveTwin::open(&dir, "a100-sxm-80gb", Some("llama-3.1-70b")).unwrap();
        assert!(t.describe().starts_with("4× A100"), "{}", t.describe());
        let err = LiveTwin::open(&dir, "h", None).err().unwrap().to_string();
        assert!(
            err.contains("ambiguous") && err.contains("h100-sxm"),
            "{err}"
        );
        let err = LiveTwin::open(&dir, "v100", None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no profile"), "{err}");
        assert!(LiveTwin::open(&dir, "h100", Some("gpt-5")).is_err());
    }

    fn seq(id: u64, start_pos: usize, len: usize) -> SeqStep {
        SeqStep {
            seq: id,
            tokens: vec![1; len],
            start_pos,
            block_table: vec![0],
            sample: true,
        }
    }

    #[test]
    fn live_twin_meters_steps_with_gpu_energy_and_reports_twin_power() {
        let mut twin = twin();
        let decode = StepBatch {
            seqs: (0..64).map(|i| seq(i, 500, 1)).collect(),
        };
        let mut joules = 0.0;
        for _ in 0..200 {
            twin.begin(&decode);
            joules += twin.end(&decode);
        }
        // 200 steps of batch 64 on an H100 with Llama-8B: ~11 ms and ~600 W each.
        let per_step = joules / 200.0;
        assert!((3.0..12.0).contains(&per_step), "{per_step} J per step");
        let sample = twin.sample().unwrap();
        assert_eq!(sample.source, EnergySource::Twin);
        assert!(sample.total_watts() > 300.0, "{sample:?}");
        assert!(sample.total_energy_joules() > 0.5 * joules);
    }

    #[test]
    fn live_twin_idles_through_wall_clock_gaps_but_not_through_steps() {
        let mut twin = twin();
        let idle_watts = twin.state().unwrap().cluster.gpus()[0].profile().idle_watts;
        std::thread::sleep(Duration::from_millis(50));
        twin.sample().unwrap();
        let before = twin.state().unwrap().cluster.total_energy_joules();
        // ≈ 50 ms of idle (at least) was accounted, at idle power.
        assert!(before >= 0.9 * 0.05 * idle_watts, "{before}");
        let batch = StepBatch {
            seqs: vec![seq(0, 10, 1)],
        };
        twin.begin(&batch);
        std::thread::sleep(Duration::from_millis(100));
        let during = twin.state().unwrap().cluster.total_energy_joules();
        let step_joules = twin.end(&batch);
        let after = twin.state().unwrap().cluster.total_energy_joules();
        // The 100 ms the CPU spent on the step is not twin idle time: only the GPU step counts.
        assert!((after - during - step_joules).abs() < 1e-9);
        assert!(step_joules < 0.1 * idle_watts, "{step_joules}");
    }

    #[test]
    fn live_twin_actuator_reaches_the_cluster() {
        let mut twin = twin();
        assert_eq!(twin.limits().unwrap().power_limit_max_watts, 700.0);
        twin.set_power_limit(300.0).unwrap();
        assert!(twin.set_power_limit(50.0).is_err());
        std::thread::sleep(Duration::from_millis(80));
        let sample = twin.sample().unwrap();
        assert_eq!(sample.devices[0].power_limit_watts, Some(300.0));
    }
}
