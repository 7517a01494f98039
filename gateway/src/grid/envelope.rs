//! The envelope model: a prioritised schedule of power caps, where it came from, and the
//! validation that turns an operator's request into one. Times are unix seconds (f64).

use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// Longest accepted ramp. Bounds how far back the schedule must look for the cap a ramp
/// starts from (see `schedule::LOOKBACK_SECONDS`).
pub const MAX_RAMP_SECONDS: f64 = 86_400.0;
/// Most intervals in one envelope (an OpenADR event has a handful; this only stops abuse).
pub const MAX_INTERVALS: usize = 1_000;
const MAX_ID_LEN: usize = 128;

/// Who created an envelope: an operator over REST, an OpenADR event (by event id), or the
/// VEN's comms-loss safe limit (in force while the VTN is unreachable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Rest,
    OpenAdr(String),
    OpenAdrCommsLoss,
}

impl Origin {
    /// `rest`, `openadr:<event id>` or `openadr-comms-loss`, as stored and as shown in the API.
    pub fn as_string(&self) -> String {
        match self {
            Origin::Rest => "rest".into(),
            Origin::OpenAdr(event) => format!("openadr:{event}"),
            Origin::OpenAdrCommsLoss => "openadr-comms-loss".into(),
        }
    }

    pub fn parse(text: &str) -> Option<Origin> {
        match text.split_once(':') {
            None if text == "rest" => Some(Origin::Rest),
            None if text == "openadr-comms-loss" => Some(Origin::OpenAdrCommsLoss),
            Some(("openadr", event)) if !event.is_empty() => {
                Some(Origin::OpenAdr(event.to_owned()))
            }
            _ => None,
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

/// One cap over `[start, end)`; `end: None` lasts until the envelope is replaced or cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub start: f64,
    pub end: Option<f64>,
    pub cap_watts: f64,
}

impl Interval {
    pub fn contains(&self, t: f64) -> bool {
        self.start <= t && self.end.is_none_or(|end| t < end)
    }
}

/// A schedule of caps with one priority (lower number wins where envelopes overlap).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Envelope {
    pub id: String,
    pub origin: Origin,
    pub priority: i64,
    /// Seconds to move linearly from the previous cap to each interval's cap (0 = step).
    pub ramp_seconds: f64,
    /// Sorted, non-overlapping, only the last may be open-ended.
    pub intervals: Vec<Interval>,
    pub created_at: f64,
    /// Set when cancelled; a cancelled envelope is kept (for the record) but never applies.
    pub cancelled_at: Option<f64>,
}

impl Envelope {
    pub fn start(&self) -> f64 {
        self.intervals.first().map_or(self.created_at, |i| i.start)
    }

    /// `None`: open-ended.
    pub fn end(&self) -> Option<f64> {
        self.intervals.last().and_then(|i| i.end)
    }

    /// The interval in force at `t`, if the envelope is live then.
    pub fn interval_at(&self, t: f64) -> Option<&Interval> {
        if self.cancelled_at.is_some() {
            return None;
        }
        self.intervals.iter().find(|i| i.contains(t))
    }

    /// Checks everything the schedule math relies on; `param` names the offending field the
    /// way the API request spells it.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad =
            |param: String, message: String| Err(GatewayError::InvalidEnvelope { param, message });
        if !valid_id(&self.id) {
            let message = format!("must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -");
            return bad("id".into(), message);
        }
        if !(self.ramp_seconds.is_finite() && (0.0..=MAX_RAMP_SECONDS).contains(&self.ramp_seconds))
        {
            let message = format!("must be a number of seconds between 0 and {MAX_RAMP_SECONDS}");
            return bad("ramp_seconds".into(), message);
        }
        if self.intervals.is_empty() || self.intervals.len() > MAX_INTERVALS {
            return bad(
                "intervals".into(),
                format!("must hold 1 to {MAX_INTERVALS} intervals"),
            );
        }
        let last = self.intervals.len() - 1;
        for (n, i) in self.intervals.iter().enumerate() {
            let at = |field: &str| format!("intervals[{n}].{field}");
            if !(i.cap_watts.is_finite() && i.cap_watts >= 0.0) {
                return bad(
                    at("cap_watts"),
                    "must be a finite number of watts, at least 0".into(),
                );
            }
            if !i.start.is_finite() || i.end.is_some_and(|e| !e.is_finite()) {
                return bad(at("start"), "times must be finite unix seconds".into());
            }
            match i.end {
                Some(end) if end <= i.start => {
                    return bad(
                        at("end"),
                        format!("must be after start ({end} <= {})", i.start),
                    );
                }
                None if n != last => {
                    return bad(at("end"), "only the last interval may be open-ended".into());
                }
                _ => {}
            }
            if let Some(prev_end) = n.checked_sub(1).and_then(|p| self.intervals[p].end) {
                if i.start < prev_end {
                    return bad(
                        at("start"),
                        "intervals must be in order and must not overlap".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn env(id: &str, priority: i64, intervals: Vec<Interval>) -> Envelope {
        Envelope {
            id: id.into(),
            origin: Origin::Rest,
            priority,
            ramp_seconds: 0.0,
            intervals,
            created_at: 0.0,
            cancelled_at: None,
        }
    }

    fn iv(start: f64, end: Option<f64>, cap_watts: f64) -> Interval {
        Interval {
            start,
            end,
            cap_watts,
        }
    }

    #[test]
    fn origin_round_trips() {
        for o in [
            Origin::Rest,
            Origin::OpenAdr("evt-7".into()),
            Origin::OpenAdrCommsLoss,
        ] {
            assert_eq!(Origin::parse(&o.as_string()), Some(o));
        }
        assert_eq!(Origin::parse("openadr:"), None);
        assert_eq!(Origin::parse("mqtt:x"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let param = |e: Envelope| match e.validate() {
            Err(GatewayError::InvalidEnvelope { param, .. }) => param,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(env("a", 0, vec![iv(0.0, Some(10.0), 5.0)])
            .validate()
            .is_ok());
        assert_eq!(
            param(env("a", 0, vec![iv(0.0, None, -1.0)])),
            "intervals[0].cap_watts"
        );
        assert_eq!(
            param(env("a", 0, vec![iv(0.0, None, f64::NAN)])),
            "intervals[0].cap_watts"
        );
        assert_eq!(
            param(env("a", 0, vec![iv(5.0, Some(5.0), 1.0)])),
            "intervals[0].end"
        );
        let open_first = vec![iv(0.0, None, 1.0), iv(5.0, Some(6.0), 1.0)];
        assert_eq!(param(env("a", 0, open_first)), "intervals[0].end");
        let overlap = vec![iv(0.0, Some(10.0), 1.0), iv(5.0, None, 1.0)];
        assert_eq!(param(env("a", 0, overlap)), "intervals[1].start");
        assert_eq!(param(env("a b", 0, vec![iv(0.0, None, 1.0)])), "id");
        assert_eq!(param(env("a", 0, vec![])), "intervals");
        let mut ramp = env("a", 0, vec![iv(0.0, None, 1.0)]);
        ramp.ramp_seconds = f64::INFINITY;
        assert_eq!(param(ramp), "ramp_seconds");
    }
}
