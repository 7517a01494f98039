//! The engine: requests, the sans-IO scheduler that packs them into steps, and the loop that
//! drives a backend with it.

mod energy;
mod handle;
mod policy;
mod pool;
mod request;
mod run;
mod scheduler;
mod thread;

pub use energy::{apportion, EnergyBook, SensorMeter, StepMeter};
pub use handle::{EngineEvent, EngineHandle, EngineStatus, RequestStream, SubmitError, TokenEvent};
pub use policy::EnginePolicy;
pub use pool::EnginePool;
pub use request::{FinishReason, GenerationRequest, Priority};
pub use run::{run_until_idle, StepStats};
pub use scheduler::{AdmissionGate, Scheduler, SeqEvent, StepBudget, StepPlan};
pub use thread::{spawn_engine, spawn_metered_engine, EngineThread};
