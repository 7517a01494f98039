//! What the store must change so its OpenADR envelopes match what the VTN says now: one
//! envelope per event and kind (caps, subscription), replaced when the event changes,
//! cancelled when the event is gone; and the comms-loss safe limit. Pure: store rows in,
//! a plan out.

use super::mapping::MappedEvent;
use crate::grid::envelope::{Envelope, Interval, Origin};

/// Below every event's priority (OpenADR priorities are u32): the safe limit only applies where
/// no event has a cap, but it beats the subscription so the lower of the two holds.
pub const COMMS_LOSS_PRIORITY: i64 = 1 << 40;
/// The subscription is the default limit: below every event and the safe limit.
pub const SUBSCRIPTION_PRIORITY: i64 = 1 << 41;
// Events (u32 priorities) > safe limit > subscription, checked when compiling.
const _: () =
    assert!(COMMS_LOSS_PRIORITY > u32::MAX as i64 && SUBSCRIPTION_PRIORITY > COMMS_LOSS_PRIORITY);

/// Cancels and inserts to apply in one store transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub cancel: Vec<String>,
    pub insert: Vec<Envelope>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.cancel.is_empty() && self.insert.is_empty()
    }
}

/// The id prefix shared by every envelope one event ever had for one kind.
fn slot(event_id: &str, kind: &str) -> String {
    format!("openadr-{event_id}-{kind}")
}

/// The envelopes an event asks for (ids stamped with `now` in milliseconds, so a replacement
/// never reuses an id); an event whose schedule fails validation gives `Err`.
pub fn envelopes_of(
    event: &MappedEvent,
    ramp_seconds: f64,
    now: f64,
) -> Result<Vec<Envelope>, String> {
    let stamp = (now * 1000.0).round() as i64;
    let mut out = vec![];
    for (kind, intervals, priority) in [
        ("cap", &event.caps, event.priority),
        ("sub", &event.subscription, SUBSCRIPTION_PRIORITY),
    ] {
        if intervals.is_empty() {
            continue;
        }
        let envelope = Envelope {
            id: format!("{}-{stamp}", slot(&event.event_id, kind)),
            origin: Origin::OpenAdr(event.event_id.clone()),
            priority,
            ramp_seconds,
            intervals: intervals.clone(),
            created_at: now,
            cancelled_at: None,
        };
        envelope.validate().map_err(|e| e.to_string())?;
        out.push(envelope);
    }
    Ok(out)
}

fn same_schedule(a: &Envelope, b: &Envelope) -> bool {
    a.priority == b.priority && a.ramp_seconds == b.ramp_seconds && a.intervals == b.intervals
}

/// `stored`: the live envelopes from OpenADR (any origin starting with `openadr`). Stored
/// envelopes that match what is wanted stay untouched (no churn on every poll); schedules
/// already over are not inserted. Envelopes of the `refused` events (still on the VTN, but
/// changed into something that cannot be followed) are kept: the last schedule that could be
/// followed is safer for the grid than none.
pub fn plan(wanted: &[Envelope], stored: &[Envelope], refused: &[String], now: f64) -> Plan {
    let slot_of = |e: &Envelope| e.id.rsplit_once('-').map(|(s, _)| s.to_owned());
    let mut result = Plan::default();
    for w in wanted {
        let current = stored
            .iter()
            .find(|s| matches!(s.origin, Origin::OpenAdr(_)) && slot_of(s) == slot_of(w));
        match current {
            Some(s) if same_schedule(s, w) => {}
            Some(s) => {
                result.cancel.push(s.id.clone());
                result.insert.push(w.clone());
            }
            None if w.end().is_some_and(|end| end <= now) => {}
            None => result.insert.push(w.clone()),
        }
    }
    for s in stored {
        let wanted_slot = wanted.iter().any(|w| slot_of(w) == slot_of(s));
        let kept = matches!(&s.origin, Origin::OpenAdr(event) if refused.contains(event));
        if matches!(s.origin, Origin::OpenAdr(_)) && !wanted_slot && !kept {
            result.cancel.push(s.id.clone());
        }
    }
    result
}

/// The comms-loss envelope: from `now` until the link is back, at `cap_watts`.
pub fn comms_loss_envelope(cap_watts: f64, now: f64) -> Envelope {
    Envelope {
        id: format!("openadr-comms-loss-{}", (now * 1000.0).round() as i64),
        origin: Origin::OpenAdrCommsLoss,
        priority: COMMS_LOSS_PRIORITY,
        ramp_seconds: 0.0,
        intervals: vec![Interval {
            start: now,
            end: None,
            cap_watts,
        }],
        created_at: now,
        cancelled_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, caps: &[(f64, Option<f64>, f64)]) -> MappedEvent {
        MappedEvent {
            event_id: id.into(),
            program_id: "p".into(),
            name: None,
            priority: 1,
            caps: caps
                .iter()
                .map(|&(start, end, cap_watts)| Interval {
                    start,
                    end,
                    cap_watts,
                })
                .collect(),
            subscription: vec![],
            windows: vec![],
            reports: vec![],
            ignored: vec![],
        }
    }

    #[test]
    fn unchanged_events_cause_no_writes_changed_ones_are_replaced_gone_ones_cancelled() {
        let a = envelopes_of(&event("a", &[(10.0, Some(20.0), 500.0)]), 0.0, 1.0).unwrap();
        let b = envelopes_of(&event("b", &[(10.0, None, 300.0)]), 0.0, 1.0).unwrap();
        let stored: Vec<Envelope> = a.iter().chain(&b).cloned().collect();
        // The same events polled later: nothing to do.
        let again_a = envelopes_of(&event("a", &[(10.0, Some(20.0), 500.0)]), 0.0, 5.0).unwrap();
        let again_b = envelopes_of(&event("b", &[(10.0, None, 300.0)]), 0.0, 5.0).unwrap();
        let same: Vec<Envelope> = again_a.iter().chain(&again_b).cloned().collect();
        assert!(plan(&same, &stored, &[], 5.0).is_empty());
        // Event a changes its cap, event b is deleted.
        let changed = envelopes_of(&event("a", &[(10.0, Some(20.0), 400.0)]), 0.0, 6.0).unwrap();
        let p = plan(&changed, &stored, &[], 6.0);
        assert_eq!(p.cancel, vec![a[0].id.clone(), b[0].id.clone()]);
        assert_eq!(p.insert.len(), 1);
        assert_eq!(p.insert[0].intervals[0].cap_watts, 400.0);
        assert_ne!(p.insert[0].id, a[0].id, "a replacement gets a new id");
        assert_eq!(p.insert[0].origin, Origin::OpenAdr("a".into()));
        // Event b changed into something that cannot be followed: its last schedule stays.
        let kept = plan(&changed, &stored, &["b".to_string()], 6.0);
        assert_eq!(kept.cancel, vec![a[0].id.clone()]);
    }

    #[test]
    fn past_schedules_are_not_inserted_and_the_safe_limit_is_left_alone() {
        let over = envelopes_of(&event("old", &[(1.0, Some(2.0), 100.0)]), 0.0, 50.0).unwrap();
        assert!(plan(&over, &[], &[], 50.0).is_empty());
        let safe = comms_loss_envelope(250.0, 40.0);
        assert!(plan(&[], &[safe], &[], 50.0).is_empty());
    }

    #[test]
    fn subscriptions_rank_below_the_safe_limit_and_events_and_bad_schedules_are_refused() {
        let mut e = event("s", &[]);
        e.subscription = vec![Interval {
            start: 0.0,
            end: None,
            cap_watts: 900.0,
        }];
        let envs = envelopes_of(&e, 0.0, 1.0).unwrap();
        assert_eq!(envs.len(), 1);
        assert!(envs[0].id.starts_with("openadr-s-sub-"));
        let overlapping = event("x", &[(0.0, Some(10.0), 1.0), (5.0, Some(20.0), 2.0)]);
        assert!(envelopes_of(&overlapping, 0.0, 1.0)
            .unwrap_err()
            .contains("overlap"));
    }
}
