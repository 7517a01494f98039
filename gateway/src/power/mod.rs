//! Power: what gridserve measures (sensors) and what it can turn (actuators), behind small
//! synchronous traits so the same controller runs on NVML, the CPU and the GPU twin.

mod types;

pub use types::{ActuatorLimits, ClockRange, DeviceSample, EnergySource, PowerActuator, PowerSample, PowerSensor};
