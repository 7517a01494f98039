//! gridserve as an OpenADR 3.1 VEN: follows a VTN's events as envelopes in the same store as
//! the REST API (origin = the event id), reports measured demand and usage back, and falls
//! back to a safe limit when the VTN stays unreachable.

pub mod config;
mod duration;
pub mod energy;
pub mod link;
pub mod mapping;
mod notifier;
pub mod reconcile;
pub mod report;
pub mod status;
mod ven;

pub use config::{OpenAdrConfig, RawOpenAdr};
pub use status::VenStatus;
pub use ven::{spawn, VenHandle};
