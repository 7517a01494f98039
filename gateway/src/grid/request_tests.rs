//! Request resolution: defaults, durations, chained starts, and the field each error names.

use super::*;

fn config() -> GridConfig {
    GridConfig {
        data_dir: "/nonexistent".into(),
        subscription_watts: Some(1000.0),
        hardware_max_watts: None,
        hardware_min_watts: Some(100.0),
        ramp_default_seconds: 5.0,
    }
}

fn param_of(r: Result<(Envelope, Vec<String>), GatewayError>) -> String {
    match r {
        Err(GatewayError::InvalidEnvelope { param, .. }) => param,
        other => panic!("expected an invalid envelope, got {other:?}"),
    }
}

#[test]
fn single_cap_starts_now_and_takes_defaults() {
    let req = EnvelopeRequest {
        cap_watts: Some(500.0),
        duration_seconds: Some(60.0),
        ..Default::default()
    };
    let (e, warnings) = req.resolve(1000.0, &config()).unwrap();
    assert_eq!(
        e.intervals,
        vec![Interval {
            start: 1000.0,
            end: Some(1060.0),
            cap_watts: 500.0
        }]
    );
    assert_eq!(
        (e.priority, e.ramp_seconds, e.origin.clone()),
        (0, 5.0, Origin::Rest)
    );
    assert!(!e.id.is_empty());
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn intervals_chain_their_starts() {
    let intervals = vec![
        IntervalRequest {
            start: Some(10.0),
            duration_seconds: Some(5.0),
            cap_watts: 400.0,
            ..Default::default()
        },
        IntervalRequest {
            cap_watts: 300.0,
            ..Default::default()
        },
    ];
    let req = EnvelopeRequest {
        intervals: Some(intervals),
        ..Default::default()
    };
    let (e, _) = req.resolve(0.0, &config()).unwrap();
    assert_eq!(
        e.intervals[1],
        Interval {
            start: 15.0,
            end: None,
            cap_watts: 300.0
        }
    );
}

#[test]
fn bad_requests_name_their_field() {
    let c = config();
    let cap = |w: f64| EnvelopeRequest {
        cap_watts: Some(w),
        ..Default::default()
    };
    assert_eq!(param_of(cap(-1.0).resolve(0.0, &c)), "cap_watts");
    assert_eq!(param_of(cap(f64::NAN).resolve(0.0, &c)), "cap_watts");
    assert_eq!(
        param_of(EnvelopeRequest::default().resolve(0.0, &c)),
        "cap_watts"
    );
    let backwards = EnvelopeRequest {
        start: Some(10.0),
        end: Some(5.0),
        ..cap(1.0)
    };
    assert_eq!(param_of(backwards.resolve(0.0, &c)), "end");
    let both = EnvelopeRequest {
        end: Some(50.0),
        duration_seconds: Some(5.0),
        ..cap(1.0)
    };
    assert_eq!(param_of(both.resolve(0.0, &c)), "duration_seconds");
    let over = EnvelopeRequest {
        start: Some(1.0),
        end: Some(5.0),
        ..cap(1.0)
    };
    assert_eq!(param_of(over.resolve(10.0, &c)), "end");
    let neg = IntervalRequest {
        cap_watts: -3.0,
        ..Default::default()
    };
    let list = EnvelopeRequest {
        intervals: Some(vec![neg]),
        ..Default::default()
    };
    assert_eq!(param_of(list.resolve(0.0, &c)), "intervals[0].cap_watts");
    let mixed = EnvelopeRequest {
        intervals: Some(vec![]),
        start: Some(1.0),
        ..Default::default()
    };
    assert_eq!(param_of(mixed.resolve(0.0, &c)), "start");
}

#[test]
fn caps_the_hardware_cannot_enforce_are_flagged() {
    let req = EnvelopeRequest {
        cap_watts: Some(50.0),
        ..Default::default()
    };
    let (_, warnings) = req.resolve(0.0, &config()).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("cap_watts: 50 W is below the 100 W"),
        "{warnings:?}"
    );
}
