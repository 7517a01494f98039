//! Event → envelope mapping on fixtures in the OpenADR 3.1 JSON shapes (as a VTN serves them).

use openleadr_wire::Event;
use serde_json::{json, Value};

use super::*;

fn t(rfc3339: &str) -> f64 {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp() as f64
}

/// A stored event: the fields a VTN adds around `content`.
fn event(content: Value) -> Event {
    let mut doc = json!({
        "id": "evt-1",
        "createdDateTime": "2026-12-06T11:00:00Z",
        "modificationDateTime": "2026-12-06T11:30:00Z",
        "objectType": "EVENT",
        "programID": "prog-1",
        "priority": 3,
    });
    for (k, v) in content.as_object().unwrap() {
        doc[k] = v.clone();
    }
    serde_json::from_value(doc).expect("fixture follows the 3.1 event shape")
}

fn limit(values: Value) -> Value {
    json!({"type": "IMPORT_CAPACITY_LIMIT", "values": values})
}

fn map_with(e: &Event, subscription: Option<f64>, now: f64) -> Result<MappedEvent, String> {
    let sub = move |_t: f64| subscription;
    let ctx = MappingContext {
        now,
        ven_name: "ven-a",
        simple_level_fractions: [1.0, 0.75, 0.5, 0.25],
        subscription_at: &sub,
    };
    map_event(e, &ctx)
}

fn map(e: &Event) -> Result<MappedEvent, String> {
    map_with(e, None, t("2026-12-06T12:00:00Z"))
}

fn caps(m: &MappedEvent) -> Vec<(f64, Option<f64>, f64)> {
    m.caps
        .iter()
        .map(|i| (i.start, i.end, i.cap_watts))
        .collect()
}

#[test]
fn two_intervals_follow_each_other_in_the_descriptor_units() {
    let e = event(json!({
        "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT30M"},
        "reportDescriptors": [{"payloadType": "DEMAND", "units": "KW"}, {"payloadType": "USAGE"}],
        "intervals": [
            {"id": 0, "payloads": [limit(json!([0.5]))]},
            {"id": 1, "payloads": [limit(json!([0.3]))]},
        ],
    }));
    let m = map(&e).unwrap();
    let s = t("2026-12-06T13:00:00Z");
    assert_eq!(
        caps(&m),
        vec![
            (s, Some(s + 1800.0), 500.0),
            (s + 1800.0, Some(s + 3600.0), 300.0)
        ]
    );
    assert_eq!(m.priority, 3);
    assert_eq!(m.reports, vec![ReportKind::Demand, ReportKind::Usage]);
    assert_eq!(m.windows.len(), 2);
    assert_eq!(m.windows[1].interval_id, 1);
}

#[test]
fn units_w_and_mw_and_non_power_units() {
    let with_units = |units: &str| {
        event(json!({
            "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": units}],
            "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [limit(json!([2]))]}],
        }))
    };
    assert_eq!(map(&with_units("W")).unwrap().caps[0].cap_watts, 2.0);
    assert_eq!(map(&with_units("MW")).unwrap().caps[0].cap_watts, 2.0e6);
    let err = map(&with_units("KWH")).unwrap_err();
    assert!(err.contains("not a power unit"), "{err}");
    // No descriptor: kW, as the 3.1 definitions state.
    let bare = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [limit(json!([1.5]))]}],
    }));
    assert_eq!(map(&bare).unwrap().caps[0].cap_watts, 1500.0);
}

#[test]
fn do_it_now_starts_at_the_modification_and_lasts_until_replaced() {
    let e = event(json!({
        "priority": null,
        "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "P9999Y"},
        "intervals": [{"id": 0, "payloads": [limit(json!([0.25]))]}],
    }));
    let m = map(&e).unwrap();
    assert_eq!(caps(&m), vec![(t("2026-12-06T11:30:00Z"), None, 250.0)]);
    assert_eq!(m.priority, UNSPECIFIED_PRIORITY);
    // A VTN clock ahead of ours: the cap starts now, not in the future.
    let behind = map_with(&e, None, t("2026-12-06T11:00:00Z")).unwrap();
    assert_eq!(behind.caps[0].start, t("2026-12-06T11:00:00Z"));
}

#[test]
fn an_intervals_own_period_overrides_the_events() {
    let e = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
        "intervals": [
            {"id": 0, "payloads": [limit(json!([1]))]},
            {"id": 1, "intervalPeriod": {"start": "2026-12-06T15:00:00Z", "duration": "PT15M"},
             "payloads": [limit(json!([2]))]},
            {"id": 2, "payloads": [limit(json!([3]))]},
        ],
    }));
    let m = map(&e).unwrap();
    let s = t("2026-12-06T13:00:00Z");
    let s1 = t("2026-12-06T15:00:00Z");
    assert_eq!(
        caps(&m),
        vec![
            (s, Some(s + 3600.0), 1000.0),
            (s1, Some(s1 + 900.0), 2000.0),
            // Follows interval 1 and takes its length from the event.
            (s1 + 900.0, Some(s1 + 900.0 + 3600.0), 3000.0),
        ]
    );
}

#[test]
fn multi_value_payloads_split_into_equal_sub_intervals() {
    let e = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [limit(json!([4, 3, 2]))]}],
    }));
    let s = t("2026-12-06T13:00:00Z");
    assert_eq!(
        caps(&map(&e).unwrap()),
        vec![
            (s, Some(s + 1200.0), 4000.0),
            (s + 1200.0, Some(s + 2400.0), 3000.0),
            (s + 2400.0, Some(s + 3600.0), 2000.0),
        ]
    );
    let open = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z"},
        "intervals": [{"id": 0, "payloads": [limit(json!([4, 3]))]}],
    }));
    assert!(map(&open).unwrap_err().contains("open-ended"));
}

#[test]
fn simple_levels_are_fractions_of_the_subscription_and_the_lowest_cap_wins() {
    let e = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]},
            {"id": 1, "payloads": [{"type": "SIMPLE", "values": [0]}, limit(json!([0.6]))]},
            {"id": 2, "payloads": [{"type": "SIMPLE", "values": [3]}, limit(json!([0.6]))]},
        ],
    }));
    let m = map_with(&e, Some(1000.0), t("2026-12-06T12:00:00Z")).unwrap();
    let got: Vec<f64> = m.caps.iter().map(|c| c.cap_watts).collect();
    assert_eq!(got, vec![500.0, 600.0, 250.0]);
    assert!(map(&e).unwrap_err().contains("subscription"));
    let bad = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [4]}]}],
    }));
    assert!(map_with(&bad, Some(1000.0), 0.0)
        .unwrap_err()
        .contains("level 0 to 3"));
}

#[test]
fn a_subscription_is_its_own_schedule_and_other_payloads_are_noted() {
    let e = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT2H"},
        "intervals": [{"id": 0, "payloads": [
            {"type": "IMPORT_CAPACITY_SUBSCRIPTION", "values": [1.2]},
            {"type": "PRICE", "values": [0.31]},
        ]}],
    }));
    let m = map(&e).unwrap();
    assert!(m.caps.is_empty());
    assert_eq!(m.subscription.len(), 1);
    assert_eq!(m.subscription[0].cap_watts, 1200.0);
    assert_eq!(m.ignored, vec!["PRICE".to_string()]);
    // Gathered before any subscription is known, even next to SIMPLE levels that need one.
    let both = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT2H"},
        "intervals": [{"id": 0, "payloads": [
            {"type": "IMPORT_CAPACITY_SUBSCRIPTION", "values": [1.2]},
            {"type": "SIMPLE", "values": [1]},
        ]}],
    }));
    let gathered = subscription_of(&both, t("2026-12-06T12:00:00Z"), "ven-a");
    assert_eq!(
        gathered.iter().map(|i| i.cap_watts).collect::<Vec<_>>(),
        vec![1200.0]
    );
}

#[test]
fn randomize_start_is_stable_per_ven_and_bounded() {
    let e = event(json!({
        "intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H", "randomizeStart": "PT10M"},
        "intervals": [{"id": 0, "payloads": [limit(json!([1]))]}, {"id": 1, "payloads": [limit(json!([2]))]}],
    }));
    let a = map(&e).unwrap();
    let offset = a.caps[0].start - t("2026-12-06T13:00:00Z");
    assert!((0.0..600.0).contains(&offset), "{offset}");
    assert_eq!(map(&e).unwrap(), a, "the same offset on every poll");
    // The whole event moves: interval 1 still follows interval 0.
    assert_eq!(a.caps[1].start, a.caps[0].end.unwrap());
    let sub = |_t: f64| None;
    let other_ven = MappingContext {
        now: 0.0,
        ven_name: "ven-b",
        simple_level_fractions: [1.0; 4],
        subscription_at: &sub,
    };
    assert_ne!(
        map_event(&e, &other_ven).unwrap().caps[0].start,
        a.caps[0].start
    );
}

#[test]
fn events_that_cannot_be_followed_say_why() {
    let cases = [
        (json!({"intervals": []}), "no intervals"),
        (
            json!({"intervals": [{"id": 0, "payloads": [limit(json!([1]))]}]}),
            "no start",
        ),
        (
            json!({"intervalPeriod": {"start": "2026-12-06T13:00:00Z"},
                   "intervals": [{"id": 0, "payloads": [limit(json!([1]))]}, {"id": 1, "payloads": [limit(json!([1]))]}]}),
            "follows an open-ended",
        ),
        (
            json!({"intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT0S"},
                   "intervals": [{"id": 0, "payloads": [limit(json!([1]))]}]}),
            "no length",
        ),
        (
            json!({"intervalPeriod": {"start": "2026-12-06T13:00:00Z", "duration": "PT1H"},
                   "intervals": [{"id": 0, "payloads": [limit(json!([-1]))]}]}),
            "at least 0",
        ),
    ];
    for (content, expected) in cases {
        let err = map(&event(content)).unwrap_err();
        assert!(err.contains(expected), "{err} should mention {expected}");
    }
}
