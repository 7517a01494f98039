//! Schedule math: hand-picked cases for priority, ties, ramps and next change, then
//! properties over random envelope sets.

use proptest::prelude::*;

use super::*;
use crate::grid::envelope::Origin;

fn iv(start: f64, end: Option<f64>, cap_watts: f64) -> Interval {
    Interval {
        start,
        end,
        cap_watts,
    }
}

fn env(id: &str, priority: i64, created_at: f64, intervals: Vec<Interval>) -> Envelope {
    Envelope {
        id: id.into(),
        origin: Origin::Rest,
        priority,
        ramp_seconds: 0.0,
        intervals,
        created_at,
        cancelled_at: None,
    }
}

fn sched(envelopes: &[Envelope]) -> Schedule<'_> {
    Schedule {
        envelopes,
        default_cap: Some(1000.0),
    }
}

#[test]
fn default_applies_outside_every_interval() {
    let envs = [env("a", 0, 0.0, vec![iv(10.0, Some(20.0), 300.0)])];
    let s = sched(&envs);
    assert_eq!(s.cap_at(5.0).cap_watts, Some(1000.0));
    assert_eq!(s.cap_at(5.0).envelope_id, None);
    assert_eq!(s.cap_at(10.0).cap_watts, Some(300.0));
    assert_eq!(s.cap_at(20.0).cap_watts, Some(1000.0), "end is exclusive");
    let unbounded = Schedule {
        envelopes: &envs,
        default_cap: None,
    };
    assert_eq!(unbounded.cap_at(25.0).cap_watts, None);
}

#[test]
fn lower_priority_number_wins_and_ties_go_to_the_newest() {
    let envs = [
        env("low", 5, 3.0, vec![iv(0.0, None, 100.0)]),
        env("high", 1, 1.0, vec![iv(0.0, None, 700.0)]),
        env("high-newer", 1, 2.0, vec![iv(0.0, None, 600.0)]),
    ];
    let now = sched(&envs).cap_at(1.0);
    assert_eq!(
        (now.envelope_id.as_deref(), now.cap_watts),
        (Some("high-newer"), Some(600.0))
    );
}

#[test]
fn cancelled_envelopes_never_apply() {
    let mut e = env("a", 0, 0.0, vec![iv(0.0, None, 100.0)]);
    e.cancelled_at = Some(1.0);
    assert_eq!(sched(&[e]).cap_at(0.5).cap_watts, Some(1000.0));
}

#[test]
fn ramp_moves_linearly_from_the_previous_cap() {
    let mut down = env("down", 0, 0.0, vec![iv(100.0, None, 400.0)]);
    down.ramp_seconds = 60.0;
    let envs = [down];
    let s = sched(&envs);
    let at = |t| s.cap_at(t);
    assert_eq!(at(100.0).cap_watts, Some(1000.0));
    assert!(at(100.0).ramping);
    assert_eq!(at(130.0).cap_watts, Some(700.0));
    assert_eq!(at(130.0).ramp_ends_at, Some(160.0));
    assert_eq!(at(160.0).cap_watts, Some(400.0));
    assert!(!at(160.0).ramping);
    // From unbounded there is nothing to ramp from.
    let unbounded = Schedule {
        envelopes: &envs,
        default_cap: None,
    };
    assert_eq!(unbounded.cap_at(101.0).cap_watts, Some(400.0));
}

#[test]
fn ramp_starts_from_the_previous_interval_of_the_same_envelope() {
    let mut e = env(
        "e",
        0,
        0.0,
        vec![iv(0.0, Some(10.0), 200.0), iv(10.0, None, 600.0)],
    );
    e.ramp_seconds = 10.0;
    let envs = [e];
    assert_eq!(sched(&envs).cap_at(15.0).cap_watts, Some(400.0));
}

#[test]
fn next_change_skips_boundaries_that_change_nothing() {
    let envs = [
        env("base", 5, 0.0, vec![iv(0.0, Some(50.0), 500.0)]),
        // Starts and ends under "urgent": invisible.
        env("hidden", 9, 0.0, vec![iv(20.0, Some(30.0), 100.0)]),
        env("urgent", 0, 0.0, vec![iv(10.0, Some(40.0), 300.0)]),
    ];
    let s = sched(&envs);
    let next = |t| s.next_change_after(t).map(|c| (c.at, c.cap_watts));
    assert_eq!(next(0.0), Some((10.0, Some(300.0))));
    assert_eq!(next(10.0), Some((40.0, Some(500.0))));
    assert_eq!(next(40.0), Some((50.0, Some(1000.0))));
    assert_eq!(next(50.0), None);
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        0i64..4,
        0.0..100.0f64,
        0.0..100.0f64,
        prop::option::of(1.0..100.0f64),
        0.0..2000.0f64,
        prop::sample::select(vec![0.0, 5.0, 50.0]),
        any::<bool>(),
    )
        .prop_map(|(priority, created, start, len, cap, ramp, cancelled)| {
            let mut e = env(
                "e",
                priority,
                created,
                vec![iv(start, len.map(|l| start + l), cap)],
            );
            e.ramp_seconds = ramp;
            e.cancelled_at = cancelled.then_some(0.0);
            e
        })
}

/// Distinct ids, so a winner found by id is the one the schedule picked.
fn arb_envelopes(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Envelope>> {
    prop::collection::vec(arb_envelope(), n).prop_map(|mut v| {
        for (i, e) in v.iter_mut().enumerate() {
            e.id = format!("e{i}");
        }
        v
    })
}

proptest! {
    #[test]
    fn cap_is_finite_non_negative_and_matches_the_winner(
        envs in arb_envelopes(0..8),
        default in prop::option::of(0.0..2000.0f64),
        t in 0.0..250.0f64,
    ) {
        let s = Schedule { envelopes: &envs, default_cap: default };
        let now = s.cap_at(t);
        let active: Vec<&Envelope> = envs.iter().filter(|e| e.interval_at(t).is_some()).collect();
        match now.cap_watts {
            Some(c) => prop_assert!(c.is_finite() && c >= 0.0, "cap {c}"),
            None => prop_assert!(active.is_empty() && default.is_none()),
        }
        if active.is_empty() {
            prop_assert_eq!(now.cap_watts, default);
            prop_assert_eq!(now.envelope_id, None);
        } else {
            let best = active.iter().map(|e| e.priority).min().unwrap();
            let winner = envs.iter().find(|e| Some(&e.id) == now.envelope_id.as_ref()).unwrap();
            prop_assert_eq!(winner.priority, best);
            prop_assert!(winner.interval_at(t).is_some());
        }
    }

    #[test]
    fn a_ramping_cap_lies_between_its_start_and_its_target(
        envs in arb_envelopes(1..6),
        t in 0.0..250.0f64,
    ) {
        let s = sched(&envs);
        let now = s.cap_at(t);
        if let (true, Some(cap), Some(target)) = (now.ramping, now.cap_watts, now.target_watts) {
            let winner = envs.iter().find(|e| Some(&e.id) == now.envelope_id.as_ref()).unwrap();
            let from = s.steady_cap_before(winner.interval_at(t).unwrap().start).unwrap();
            let (lo, hi) = (from.min(target), from.max(target));
            prop_assert!(lo - 1e-9 <= cap && cap <= hi + 1e-9, "{cap} outside [{lo}, {hi}]");
        }
    }

    #[test]
    fn next_change_really_changes_the_target(
        envs in arb_envelopes(0..6),
        t in 0.0..250.0f64,
    ) {
        let s = sched(&envs);
        if let Some(next) = s.next_change_after(t) {
            prop_assert!(next.at > t);
            let then = s.cap_at(next.at);
            prop_assert_eq!(then.target_watts, next.cap_watts);
            let now = s.cap_at(t);
            prop_assert!(now.target_watts != then.target_watts || now.envelope_id != then.envelope_id);
        }
    }
}
