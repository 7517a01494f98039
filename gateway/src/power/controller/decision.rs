//! What the controller decides each tick: the knobs' settings, admission per tier, and why.

use serde::Serialize;

use std::time::Duration;

use crate::engine::{AdmissionGate, EnginePolicy, StepBudget};
use crate::power::ClockRange;

/// Whether new work of one priority tier is taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Admitted and scheduled as usual.
    Admit,
    /// Accepted but held in the queue until power allows (flexible work waits, it is not
    /// rejected, until its deadline).
    Defer,
    /// Refused now (429 with `Retry-After`).
    Reject,
}

/// Admission for each tier, interactive first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TierAdmission {
    pub interactive: Admission,
    pub standard: Admission,
    pub flexible: Admission,
}

impl TierAdmission {
    pub const OPEN: Self = Self {
        interactive: Admission::Admit,
        standard: Admission::Admit,
        flexible: Admission::Admit,
    };
}

/// Why the controller is where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No cap below what the hardware can draw: full speed.
    Uncapped,
    /// Following a cap with the clock and batch knobs.
    Tracking,
    /// Every knob is at its floor and power is still above target.
    Saturated,
    /// No fresh power sample: minimum budget, power limit at the cap.
    Safe,
}

/// One tick's output. The caller applies only what changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub mode: Mode,
    /// The cap minus the safety margin, when capped (watts, all devices together).
    pub target_watts: Option<f64>,
    /// The sensor's power averaged over the controller's short window.
    pub measured_watts: Option<f64>,
    /// 0 (every knob at its floor) ..= 1 (full speed).
    pub effort: f64,
    #[serde(serialize_with = "budget_json")]
    pub budget: StepBudget,
    /// Locked SM clocks (None: unlocked, the default).
    #[serde(serialize_with = "clock_json", rename = "sm_clock_mhz")]
    pub sm_clock: Option<ClockRange>,
    /// Per-device power limit (None: the hardware default).
    pub power_limit_watts: Option<f64>,
    /// Share of time the engine computes (1: no pauses between steps).
    pub duty_cycle: f64,
    pub admission: TierAdmission,
    /// Preempt running flexible sequences now (their KV is freed; they are recomputed later).
    pub preempt_flexible: bool,
}

impl Decision {
    /// What the engine must do: its budget, which tiers may leave the queue, and whether to
    /// preempt flexible work. A tier that is rejected is closed too (new ones are refused at
    /// the door; queued ones wait for their deadline).
    pub fn engine_policy(&self, deferral_deadline: Duration) -> EnginePolicy {
        EnginePolicy {
            budget: self.budget,
            gate: AdmissionGate {
                standard: self.admission.standard == Admission::Admit,
                flexible: self.admission.flexible == Admission::Admit,
            },
            preempt_flexible: self.preempt_flexible,
            duty_cycle: self.duty_cycle,
            deferral_deadline,
            retry_after: Duration::from_secs(60),
        }
    }
}

fn budget_json<S: serde::Serializer>(b: &StepBudget, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("StepBudget", 2)?;
    st.serialize_field("max_seqs", &b.max_seqs)?;
    st.serialize_field("max_tokens", &b.max_tokens)?;
    st.end()
}

fn clock_json<S: serde::Serializer>(c: &Option<ClockRange>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => [c.min_mhz, c.max_mhz].serialize(s),
        None => s.serialize_none(),
    }
}
