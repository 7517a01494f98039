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

/// What `/v1/grid/status` shows as `operating_point`: the node's decision, and with several
/// engines (one per GPU) each engine's own, with its share of the cap.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatingPoint {
    #[serde(flatten)]
    pub node: Decision,
    /// Empty with one engine (the node's decision is that engine's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<EnginePoint>,
}

/// One engine's decision and the share of the node's cap it steers for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnginePoint {
    /// The engine's device, e.g. `cuda:1`.
    pub device: String,
    /// Its share of the cap (None: no cap).
    pub cap_share_watts: Option<f64>,
    #[serde(flatten)]
    pub decision: Decision,
}

impl From<Decision> for OperatingPoint {
    fn from(node: Decision) -> Self {
        Self {
            node,
            engines: Vec::new(),
        }
    }
}

impl OperatingPoint {
    /// The node's view of its engines' decisions: power figures add up, the budget is the
    /// node's per-step capacity, effort and duty cycle are means, and mode, clock lock and
    /// admission are the most restrictive any engine has.
    pub fn of_engines(engines: Vec<EnginePoint>) -> Option<Self> {
        let decisions: Vec<&Decision> = engines.iter().map(|e| &e.decision).collect();
        let first = (*decisions.first()?).clone();
        if decisions.len() == 1 {
            return Some(first.into());
        }
        let n = decisions.len() as f64;
        let sum_of = |f: fn(&Decision) -> Option<f64>| decisions.iter().map(|d| f(d)).sum();
        let node = Decision {
            mode: decisions
                .iter()
                .map(|d| d.mode)
                .max_by_key(|m| m.severity())
                .unwrap_or(first.mode),
            target_watts: sum_of(|d| d.target_watts),
            measured_watts: sum_of(|d| d.measured_watts),
            effort: decisions.iter().map(|d| d.effort).sum::<f64>() / n,
            budget: StepBudget {
                max_seqs: decisions.iter().map(|d| d.budget.max_seqs).sum(),
                max_tokens: decisions.iter().map(|d| d.budget.max_tokens).sum(),
            },
            sm_clock: decisions
                .iter()
                .filter_map(|d| d.sm_clock)
                .min_by_key(|c| c.max_mhz),
            power_limit_watts: decisions
                .iter()
                .filter_map(|d| d.power_limit_watts)
                .reduce(f64::min),
            duty_cycle: decisions.iter().map(|d| d.duty_cycle).sum::<f64>() / n,
            admission: TierAdmission {
                interactive: strictest(decisions.iter().map(|d| d.admission.interactive)),
                standard: strictest(decisions.iter().map(|d| d.admission.standard)),
                flexible: strictest(decisions.iter().map(|d| d.admission.flexible)),
            },
            preempt_flexible: decisions.iter().any(|d| d.preempt_flexible),
        };
        Some(Self { node, engines })
    }
}

fn strictest(tiers: impl Iterator<Item = Admission>) -> Admission {
    let rank = |a: &Admission| match a {
        Admission::Admit => 0,
        Admission::Defer => 1,
        Admission::Reject => 2,
    };
    tiers.max_by_key(rank).unwrap_or(Admission::Admit)
}

impl Mode {
    /// Safe over saturated over tracking over uncapped.
    fn severity(self) -> u8 {
        match self {
            Mode::Uncapped => 0,
            Mode::Tracking => 1,
            Mode::Saturated => 2,
            Mode::Safe => 3,
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
