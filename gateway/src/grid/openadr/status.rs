//! What `GET /v1/grid/status` shows of the VEN under `openadr`: the link, the last poll, each
//! event followed or refused (and why), and the reports sent.

use serde::Serialize;

use super::link::LinkState;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProgramStatus {
    pub name: String,
    /// `None`: the VTN has no program of that name (or does not show it to this VEN).
    pub id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventStatus {
    pub event_id: String,
    pub program_id: String,
    pub name: Option<String>,
    pub priority: i64,
    /// `followed` (its caps are in the envelope store) or `refused` (see `reason`).
    pub state: &'static str,
    pub reason: Option<String>,
    /// Payload types present but not acted on (PRICE, GHG, …).
    pub ignored_payloads: Vec<String>,
    pub reports: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VenStatus {
    pub vtn_url: String,
    pub ven_name: String,
    pub link: LinkState,
    pub last_poll_at: Option<f64>,
    pub last_success_at: Option<f64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_poll_at: Option<f64>,
    /// The comms-loss safe limit is in the store (the VTN has been unreachable too long).
    pub safe_limit_engaged: bool,
    pub programs: Vec<ProgramStatus>,
    pub events: Vec<EventStatus>,
    pub reports_posted: u64,
    pub reports_failed: u64,
    pub reports_pending: usize,
    /// The VTN's websocket notifier is open: event changes are pushed (polls continue).
    pub push_connected: bool,
}
