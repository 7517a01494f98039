//! `POST /v1/grid/envelopes` bodies: either one cap (`cap_watts` with optional `start`, `end`
//! or `duration_seconds`) or a list of `intervals`, resolved against "now" into an
//! [`Envelope`], plus warnings for caps that are accepted but cannot be fully enforced.

use serde::Deserialize;
use serde_json::{json, Value};

use super::envelope::{Envelope, Interval, Origin};
use super::GridConfig;
use crate::GatewayError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeRequest {
    pub id: Option<String>,
    pub priority: Option<i64>,
    pub ramp_seconds: Option<f64>,
    pub cap_watts: Option<f64>,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub duration_seconds: Option<f64>,
    pub intervals: Option<Vec<IntervalRequest>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalRequest {
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub duration_seconds: Option<f64>,
    pub cap_watts: f64,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidEnvelope {
        param: param.into(),
        message: message.into(),
    }
}

impl EnvelopeRequest {
    /// The envelope this request describes, created at `now`, with its warnings.
    pub fn resolve(
        self,
        now: f64,
        config: &GridConfig,
    ) -> Result<(Envelope, Vec<String>), GatewayError> {
        let (intervals, prefix) = match (self.intervals, self.cap_watts) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "cap_watts",
                    "give either `cap_watts` or `intervals`, not both",
                ))
            }
            (None, None) => return Err(invalid("cap_watts", "required (or give `intervals`)")),
            (None, Some(cap_watts)) => {
                let one = IntervalRequest {
                    start: self.start,
                    end: self.end,
                    duration_seconds: self.duration_seconds,
                    cap_watts,
                };
                (vec![one], "")
            }
            (Some(list), None) => {
                if let Some(field) = [
                    ("start", self.start),
                    ("end", self.end),
                    ("duration_seconds", self.duration_seconds),
                ]
                .into_iter()
                .find_map(|(name, v)| v.map(|_| name))
                {
                    return Err(invalid(
                        field,
                        "with `intervals`, give times inside each interval",
                    ));
                }
                (list, "intervals")
            }
        };
        let intervals = resolve_intervals(intervals, now, prefix)?;
        let envelope = Envelope {
            id: self.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            origin: Origin::Rest,
            priority: self.priority.unwrap_or(0),
            ramp_seconds: self.ramp_seconds.unwrap_or(config.ramp_default_seconds),
            intervals,
            created_at: now,
            cancelled_at: None,
        };
        envelope.validate().map_err(|e| rename_param(e, prefix))?;
        if envelope.end().is_some_and(|end| end <= now) {
            return Err(invalid(
                if prefix.is_empty() {
                    "end"
                } else {
                    "intervals"
                },
                "the envelope has already ended",
            ));
        }
        let warnings = warnings(&envelope, config, prefix);
        Ok((envelope, warnings))
    }
}

/// Fills in omitted starts (now for the first interval, the previous end after that) and turns
/// durations into ends.
fn resolve_intervals(
    list: Vec<IntervalRequest>,
    now: f64,
    prefix: &str,
) -> Result<Vec<Interval>, GatewayError> {
    let name = |n: usize, field: &str| {
        if prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{prefix}[{n}].{field}")
        }
    };
    let mut out: Vec<Interval> = Vec::with_capacity(list.len());
    for (n, i) in list.into_iter().enumerate() {
        let start = match (i.start, out.last()) {
            (Some(s), _) => s,
            (None, None) => now,
            (None, Some(prev)) => prev.end.ok_or_else(|| {
                invalid(name(n, "start"), "required after an open-ended interval")
            })?,
        };
        let end = match (i.end, i.duration_seconds) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    name(n, "duration_seconds"),
                    "give either `end` or `duration_seconds`, not both",
                ))
            }
            (end, None) => end,
            (None, Some(d)) if d.is_finite() && d > 0.0 => Some(start + d),
            (None, Some(_)) => {
                return Err(invalid(
                    name(n, "duration_seconds"),
                    "must be a positive number of seconds",
                ))
            }
        };
        out.push(Interval {
            start,
            end,
            cap_watts: i.cap_watts,
        });
    }
    Ok(out)
}

/// Validation names fields as `intervals[0].x`; a single-cap request calls it plain `x`.
fn rename_param(e: GatewayError, prefix: &str) -> GatewayError {
    match e {
        GatewayError::InvalidEnvelope { param, message } if prefix.is_empty() => {
            let param = param
                .strip_prefix("intervals[0].")
                .map(str::to_owned)
                .unwrap_or(param);
            GatewayError::InvalidEnvelope { param, message }
        }
        other => other,
    }
}

fn warnings(e: &Envelope, config: &GridConfig, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, i) in e.intervals.iter().enumerate() {
        let field = if prefix.is_empty() {
            "cap_watts".to_owned()
        } else {
            format!("{prefix}[{n}].cap_watts")
        };
        if let Some(min) = config.hardware_min_watts.filter(|&min| i.cap_watts < min) {
            out.push(format!(
                "{field}: {} W is below the {min} W the hardware power limit can enforce; \
                 it will be held with clocks and admission only, which may not reach it",
                i.cap_watts
            ));
        }
        if let Some(default) = config.default_cap().filter(|&d| i.cap_watts > d) {
            out.push(format!(
                "{field}: {} W is above the default cap of {default} W, so it lowers nothing",
                i.cap_watts
            ));
        }
    }
    out
}

/// An envelope as the API shows it, with its state at `now`.
pub fn envelope_json(e: &Envelope, now: f64) -> Value {
    let state = if e.cancelled_at.is_some() {
        "cancelled"
    } else if e.end().is_some_and(|end| end <= now) {
        "ended"
    } else if e.start() <= now {
        "active"
    } else {
        "scheduled"
    };
    json!({
        "object": "grid.envelope",
        "id": e.id,
        "origin": e.origin,
        "priority": e.priority,
        "ramp_seconds": e.ramp_seconds,
        "start": e.start(),
        "end": e.end(),
        "intervals": e.intervals,
        "created_at": e.created_at,
        "cancelled_at": e.cancelled_at,
        "state": state,
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
