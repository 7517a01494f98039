//! The power envelope: a fleet-wide cap in watts over time, as steps (`[{ at_seconds,
//! cap_watts }]`) or a CSV trace (`at_seconds,cap_watts`); each value holds until the next.

use std::path::Path;

use serde::Deserialize;

use super::scenario::{bad, resolve};
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvelope {
    steps: Option<Vec<RawStep>>,
    trace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_seconds: f64,
    cap_watts: f64,
}

/// Cap changes in time order; before the first step there is no cap.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Envelope {
    steps: Vec<(f64, f64)>,
}

impl Envelope {
    /// No cap at any time.
    pub fn none() -> Self {
        Self::default()
    }

    /// `(at_seconds, cap_watts)` pairs; must be in time order with positive caps.
    pub fn from_steps(steps: Vec<(f64, f64)>) -> Result<Self, GatewayError> {
        for (i, &(at, cap)) in steps.iter().enumerate() {
            if !(at.is_finite() && at >= 0.0) {
                return Err(bad(
                    "envelope.steps",
                    format!("step {i}: at_seconds must be >= 0 (got {at})"),
                ));
            }
            if !(cap.is_finite() && cap > 0.0) {
                return Err(bad(
                    "envelope.steps",
                    format!("step {i}: cap_watts must be > 0 (got {cap})"),
                ));
            }
            if i > 0 && steps[i - 1].0 > at {
                return Err(bad(
                    "envelope.steps",
                    format!("step {i}: at_seconds must not go back in time"),
                ));
            }
        }
        Ok(Self { steps })
    }

    pub(super) fn validate(raw: &RawEnvelope, base_dir: &Path) -> Result<Self, GatewayError> {
        match (&raw.steps, &raw.trace) {
            (Some(steps), None) => {
                Self::from_steps(steps.iter().map(|s| (s.at_seconds, s.cap_watts)).collect())
            }
            (None, Some(file)) => Self::read_trace(&resolve(base_dir, file)),
            _ => Err(bad(
                "envelope",
                "needs exactly one of steps or trace (omit [envelope] for no cap)",
            )),
        }
    }

    fn read_trace(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("envelope.trace", format!("reading {}: {e}", path.display())))?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = lines.next().map(|(_, l)| l.replace(' ', ""));
        if header.as_deref() != Some("at_seconds,cap_watts") {
            return Err(bad(
                "envelope.trace",
                format!("{}: header must be at_seconds,cap_watts", path.display()),
            ));
        }
        let mut steps = Vec::new();
        for (i, line) in lines {
            let parsed = line
                .split_once(',')
                .and_then(|(a, c)| Some((a.trim().parse().ok()?, c.trim().parse().ok()?)));
            let Some(step) = parsed else {
                return Err(bad(
                    "envelope.trace",
                    format!("{} line {}: expected two numbers", path.display(), i + 1),
                ));
            };
            steps.push(step);
        }
        Self::from_steps(steps)
    }

    /// The fleet-wide cap in force at `t_seconds`, if any.
    pub fn cap_at(&self, t_seconds: f64) -> Option<f64> {
        let i = self.steps.partition_point(|&(at, _)| at <= t_seconds);
        (i > 0).then(|| self.steps[i - 1].1)
    }

    pub fn is_capped(&self) -> bool {
        !self.steps.is_empty()
    }
}
