//! Power: what gridserve measures (sensors) and what it can turn (actuators), behind small
//! synchronous traits so the same controller runs on NVML, the CPU and the GPU twin.

mod actuation;
mod compliance;
mod control_loop;
pub mod controller;
mod counter;
mod cpu;
mod detect;
mod monitor;
mod notes;
mod nvml;
mod nvml_actuator;
mod nvml_api;
mod per_engine;
mod proc_stat;
mod rapl;
mod shared;
mod split;
mod types;

pub use actuation::{Actuation, Refusals};
pub use compliance::ComplianceCounter;
pub use control_loop::{ControlLoop, ControlOutputs, EngineControl};
pub use cpu::{CpuPowerModel, CpuScope, EstimateSensor};
pub use detect::{detect, PowerBackend};
pub use monitor::{publish_gauges, PowerMonitor, SampleHook};
pub use nvml::NvmlSensor;
pub use nvml_actuator::NvmlActuator;
pub use nvml_api::{map_error as map_nvml_error, throttle_reason_names, NvmlDevice};
pub use per_engine::{detect_engines, EngineDevice, NodeSensor};
pub use proc_stat::{busy_cores, parse_proc_stat, CpuTimes, ProcStat};
pub use rapl::{find_zones, parse_counter_uj, zone_label, RaplSensor, RaplZone};
pub use shared::SharedSensor;
pub use split::{split_cap, CapSplit, EngineDemand};
pub use types::{
    ActuatorLimits, ClockRange, DeviceSample, EnergySource, PowerActuator, PowerSample, PowerSensor,
};
