//! Schedule math over a set of envelopes: the cap in force at an instant (priority, ties,
//! ramps) and when it next changes. Pure functions of unix seconds, so tests need no clock.

use serde::Serialize;

use super::envelope::{Envelope, Interval, MAX_RAMP_SECONDS};

/// How far back an envelope that has already ended can still matter: a ramp that began up to
/// this long ago starts from the cap that was in force before it.
pub const LOOKBACK_SECONDS: f64 = MAX_RAMP_SECONDS;

/// The cap in force at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapNow {
    /// `None`: no envelope is active and no default cap is configured (unbounded).
    pub cap_watts: Option<f64>,
    /// Where the cap is heading: differs from `cap_watts` only while ramping.
    pub target_watts: Option<f64>,
    /// The winning envelope; `None` when the default applies.
    pub envelope_id: Option<String>,
    pub ramping: bool,
    pub ramp_ends_at: Option<f64>,
}

/// The next instant at which the winning envelope or its target cap changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NextChange {
    pub at: f64,
    pub cap_watts: Option<f64>,
    pub envelope_id: Option<String>,
}

/// Envelopes plus the cap that applies when none is active (subscription or hardware maximum).
#[derive(Clone, Copy, Debug)]
pub struct Schedule<'a> {
    pub envelopes: &'a [Envelope],
    pub default_cap: Option<f64>,
}

impl<'a> Schedule<'a> {
    /// The winner at `t`: lowest priority number; ties go to the newest, then the larger id so
    /// the answer never depends on the order envelopes were loaded in.
    fn winner(
        &self,
        active: impl Fn(&'a Envelope) -> Option<&'a Interval>,
    ) -> Option<(&'a Envelope, &'a Interval)> {
        self.envelopes
            .iter()
            .filter_map(|e| active(e).map(|i| (e, i)))
            .min_by(|(a, _), (b, _)| {
                a.priority
                    .cmp(&b.priority)
                    .then(b.created_at.total_cmp(&a.created_at))
                    .then(b.id.cmp(&a.id))
            })
    }

    fn winner_at(&self, t: f64) -> Option<(&'a Envelope, &'a Interval)> {
        self.winner(|e| e.interval_at(t))
    }

    /// The cap in force just before `t` (intervals that started strictly earlier and had not
    /// ended before `t`), without ramps: a ramp starts from the previous target.
    fn steady_cap_before(&self, t: f64) -> Option<f64> {
        let before = |e: &'a Envelope| {
            e.cancelled_at.is_none().then_some(())?;
            e.intervals
                .iter()
                .find(|i| i.start < t && i.end.is_none_or(|end| end >= t))
        };
        self.winner(before)
            .map_or(self.default_cap, |(_, i)| Some(i.cap_watts))
    }

    pub fn cap_at(&self, t: f64) -> CapNow {
        let Some((env, interval)) = self.winner_at(t) else {
            return CapNow {
                cap_watts: self.default_cap,
                target_watts: self.default_cap,
                envelope_id: None,
                ramping: false,
                ramp_ends_at: None,
            };
        };
        let target = interval.cap_watts;
        let ramp_end = interval.start + env.ramp_seconds;
        // From unbounded there is nothing to ramp from: the cap steps.
        let from = self.steady_cap_before(interval.start);
        let (cap, ramping) = match from {
            Some(from) if t < ramp_end && from != target => {
                let f = (t - interval.start) / env.ramp_seconds;
                (from + (target - from) * f, true)
            }
            _ => (target, false),
        };
        CapNow {
            cap_watts: Some(cap),
            target_watts: Some(target),
            envelope_id: Some(env.id.clone()),
            ramping,
            ramp_ends_at: ramping.then_some(ramp_end),
        }
    }

    /// The first interval boundary after `t` where the winner or its target cap differs from
    /// the one at `t`; `None` if the schedule stays as it is.
    pub fn next_change_after(&self, t: f64) -> Option<NextChange> {
        let now = self.cap_at(t);
        let mut bounds: Vec<f64> = self
            .envelopes
            .iter()
            .filter(|e| e.cancelled_at.is_none())
            .flat_map(|e| e.intervals.iter().flat_map(|i| [Some(i.start), i.end]))
            .flatten()
            .filter(|&b| b > t)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        bounds.into_iter().find_map(|at| {
            let then = self.cap_at(at);
            let changed =
                then.target_watts != now.target_watts || then.envelope_id != now.envelope_id;
            changed.then_some(NextChange {
                at,
                cap_watts: then.target_watts,
                envelope_id: then.envelope_id,
            })
        })
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
