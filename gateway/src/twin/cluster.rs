//! A tensor-parallel group of twin GPUs that steps together, and the `PowerSensor` /
//! `PowerActuator` implementations the controller sees (one device sample per GPU).
//!
//! Timestamps: the twin lives in virtual time, but `PowerSample.at` is an `Instant`. The
//! cluster captures `Instant::now()` once at construction and reports `base + now`, so sample
//! times are ordered and spaced exactly like virtual time; they are not the wall clock (a fast
//! simulation runs ahead of it), so never compare them with `Instant::now()`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::gpu::TwinGpu;
use super::profile::GpuProfile;
use super::shape::ModelShape;
use super::step::{StepComposition, StepCost};
use crate::power::{
    ActuatorLimits, ClockRange, DeviceSample, EnergySource, PowerActuator, PowerSample, PowerSensor,
};
use crate::GatewayError;

#[derive(Clone, Debug)]
pub struct TwinCluster {
    gpus: Vec<TwinGpu>,
    base: Instant,
}

impl TwinCluster {
    /// `tensor_parallel` GPUs (the shape's default if `None`), each holding 1/TP of the model.
    pub fn new(profile: GpuProfile, shape: ModelShape, tensor_parallel: Option<u32>) -> Self {
        let tp = tensor_parallel.unwrap_or(shape.tensor_parallel).max(1);
        let (profile, shape) = (Arc::new(profile), Arc::new(shape));
        let gpus = (0..tp)
            .map(|_| TwinGpu::new(profile.clone(), shape.clone(), tp))
            .collect();
        Self {
            gpus,
            base: Instant::now(),
        }
    }

    pub fn gpus(&self) -> &[TwinGpu] {
        &self.gpus
    }

    pub fn tensor_parallel(&self) -> u32 {
        self.gpus.len() as u32
    }

    /// Virtual time since construction (all GPUs move together).
    pub fn now(&self) -> Duration {
        self.gpus[0].now()
    }

    /// Runs one step on every rank; the step lasts as long as the slowest rank, the others
    /// wait clocked up. Returns the step's duration, the energy of all GPUs together and
    /// their total average power.
    pub fn advance(&mut self, step: &StepComposition) -> StepCost {
        let costs: Vec<StepCost> = self.gpus.iter().map(|g| g.cost(step)).collect();
        let slowest = costs
            .iter()
            .copied()
            .max_by(|a, b| a.duration_seconds.total_cmp(&b.duration_seconds))
            .expect("a cluster has at least one GPU");
        let duration_seconds = slowest.duration_seconds;
        let energy_joules: f64 = self
            .gpus
            .iter_mut()
            .zip(&costs)
            .map(|(g, c)| g.advance_padded(c, duration_seconds))
            .sum();
        StepCost {
            duration_seconds,
            energy_joules,
            power_watts: energy_joules / duration_seconds,
            memory_seconds: slowest.memory_seconds,
            compute_seconds: slowest.compute_seconds,
        }
    }

    pub fn idle(&mut self, duration: Duration) {
        self.gpus.iter_mut().for_each(|g| g.idle(duration));
    }

    /// Exact energy of all GPUs since start.
    pub fn total_energy_joules(&self) -> f64 {
        self.gpus.iter().map(TwinGpu::total_energy_joules).sum()
    }

    /// Shares the cluster between the engine (which advances it) and the power controller.
    pub fn shared(self) -> SharedTwin {
        SharedTwin(Arc::new(Mutex::new(self)))
    }

    fn sample_now(&self) -> PowerSample {
        let devices = self
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| DeviceSample {
                device: format!("gpu{i}"),
                power_watts: g.instant_power_watts(),
                energy_joules: g.energy_counter_joules(),
                sm_clock_mhz: Some(g.clock_mhz()),
                power_limit_watts: Some(g.power_limit_watts()),
            })
            .collect();
        PowerSample {
            at: self.base + self.now(),
            source: EnergySource::Twin,
            devices,
        }
    }
}

impl PowerSensor for TwinCluster {
    fn source(&self) -> EnergySource {
        EnergySource::Twin
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        Ok(self.sample_now())
    }
}

impl PowerActuator for TwinCluster {
    fn limits(&self) -> Result<ActuatorLimits, GatewayError> {
        Ok(self.gpus[0].limits())
    }

    /// Applies to every rank (a TP group is always clocked alike). Validated before any rank
    /// changes, so an error leaves the cluster untouched.
    fn set_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError> {
        self.gpus[0].check_sm_clock(range)?;
        self.gpus
            .iter_mut()
            .try_for_each(|g| g.command_sm_clock(range))
    }

    fn set_power_limit(&mut self, watts: f64) -> Result<(), GatewayError> {
        self.gpus[0].check_power_limit(watts)?;
        self.gpus
            .iter_mut()
            .try_for_each(|g| g.command_power_limit(watts))
    }
}

/// A `TwinCluster` behind a mutex, so an engine and a controller can hold it at once.
#[derive(Clone, Debug)]
pub struct SharedTwin(pub Arc<Mutex<TwinCluster>>);

impl SharedTwin {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, TwinCluster>, GatewayError> {
        self.0
            .lock()
            .map_err(|_| GatewayError::Power("twin: state lock poisoned".into()))
    }
}

impl PowerSensor for SharedTwin {
    fn source(&self) -> EnergySource {
        EnergySource::Twin
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        Ok(self.lock()?.sample_now())
    }
}

impl PowerActuator for SharedTwin {
    fn limits(&self) -> Result<ActuatorLimits, GatewayError> {
        self.lock()?.limits()
    }

    fn set_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError> {
        self.lock()?.set_sm_clock(range)
    }

    fn set_power_limit(&mut self, watts: f64) -> Result<(), GatewayError> {
        self.lock()?.set_power_limit(watts)
    }
}
