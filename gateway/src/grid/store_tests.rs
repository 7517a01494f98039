//! The store against a real SQLite file in a temporary directory.

use super::*;

fn envelope(id: &str, start: f64, end: Option<f64>, cap: f64) -> Envelope {
    Envelope {
        id: id.into(),
        origin: Origin::Rest,
        priority: 1,
        ramp_seconds: 2.5,
        intervals: vec![Interval {
            start,
            end,
            cap_watts: cap,
        }],
        created_at: 100.0,
        cancelled_at: None,
    }
}

#[test]
fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let a = envelope("a", 10.0, Some(20.0), 300.0);
    let mut b = envelope("b", 15.0, None, 200.0);
    b.origin = Origin::OpenAdr("evt-1".into());
    {
        let store = Store::open(dir.path()).unwrap();
        store.insert(&a, "operator:abcd", 101.0).unwrap();
        store.insert(&b, "openadr", 102.0).unwrap();
        store.cancel("a", "operator:abcd", 103.0).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut cancelled = a.clone();
    cancelled.cancelled_at = Some(103.0);
    assert_eq!(store.list().unwrap(), vec![cancelled, b.clone()]);
    assert_eq!(store.get("b").unwrap(), Some(b));
    assert_eq!(store.get("nope").unwrap(), None);
    let log: Vec<(String, String, String)> = store
        .audit_log()
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.envelope_id, e.actor))
        .collect();
    let expect = [
        ("create", "a", "operator:abcd"),
        ("create", "b", "openadr"),
        ("cancel", "a", "operator:abcd"),
    ];
    let expect: Vec<_> = expect
        .iter()
        .map(|(x, y, z)| (x.to_string(), y.to_string(), z.to_string()))
        .collect();
    assert_eq!(log, expect);
}

#[test]
fn a_cancelled_envelope_stops_being_active() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .insert(&envelope("a", 10.0, None, 300.0), "t", 0.0)
        .unwrap();
    assert_eq!(store.active_at(5.0).unwrap().len(), 0, "not started yet");
    assert_eq!(store.active_at(11.0).unwrap().len(), 1);
    assert_eq!(store.live_since(11.0).unwrap().len(), 1);
    let e = store.cancel("a", "t", 12.0).unwrap();
    assert_eq!(e.cancelled_at, Some(12.0));
    assert!(store.active_at(13.0).unwrap().is_empty());
    assert!(store.live_since(13.0).unwrap().is_empty());
    // Cancelling again is harmless and not audited twice.
    assert_eq!(
        store.cancel("a", "t", 14.0).unwrap().cancelled_at,
        Some(12.0)
    );
    assert_eq!(store.audit_log().unwrap().len(), 2);
    assert!(matches!(
        store.cancel("zz", "t", 1.0),
        Err(GatewayError::EnvelopeNotFound(_))
    ));
}

#[test]
fn ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .insert(&envelope("a", 0.0, None, 1.0), "t", 0.0)
        .unwrap();
    store.cancel("a", "t", 1.0).unwrap();
    let again = store.insert(&envelope("a", 0.0, None, 2.0), "t", 2.0);
    assert!(matches!(again, Err(GatewayError::EnvelopeExists(_))));
}

#[test]
fn ended_envelopes_are_not_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .insert(&envelope("past", 0.0, Some(10.0), 1.0), "t", 0.0)
        .unwrap();
    assert_eq!(store.live_since(9.0).unwrap().len(), 1);
    assert!(store.live_since(10.0).unwrap().is_empty());
}

#[test]
fn an_unwritable_data_dir_fails_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file.join("sub"))
        .err()
        .expect("cannot open under a file")
        .to_string();
    assert!(err.contains("not-a-dir"), "{err}");
}
