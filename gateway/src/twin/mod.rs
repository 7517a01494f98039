//! The GPU digital twin: a calibrated model of a GPU's step time and power, its power-limit
//! firmware, actuator delay and NVML-like telemetry, in virtual time (see
//! `../shared/design/twin.md` and `config/gpus/*.toml`).
//!
//! - `profile`, `shape` (+ `checks`): the GPU and model-shape TOML files, validated.
//! - `step`: the pure step model (duration, energy, power).
//! - `telemetry`, `firmware`, `gpu`: one GPU's state in virtual time.
//! - `cluster`: a tensor-parallel group, and the `PowerSensor`/`PowerActuator` impls.
//! - `live`: the twin that meters a real engine's steps (`serve --power twin:GPU`).
//! - `workload`, `validate`: ML.ENERGY steady-state serving and `gridserve twin validate`.
//! - `calibrate`: the fit that produced the H100 constants (re-runnable, `#[ignore]`d test).

pub mod calibrate;
mod checks;
pub mod cluster;
pub mod firmware;
pub mod fit;
pub mod gpu;
pub mod live;
pub mod profile;
pub mod shape;
pub mod step;
pub mod telemetry;
pub mod validate;
pub mod workload;

#[cfg(test)]
mod tests;

pub use cluster::{SharedTwin, TwinCluster};
pub use gpu::TwinGpu;
pub use live::LiveTwin;
pub use profile::GpuProfile;
pub use shape::ModelShape;
pub use step::{step_cost, StepComposition, StepCost};
pub use validate::ValidateArgs;
pub use workload::SteadyWorkload;
