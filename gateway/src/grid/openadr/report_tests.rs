//! Report readings: which intervals are due, what they measure, and what is sent.

use super::*;

fn event(windows: Vec<Window>, reports: Vec<ReportKind>) -> MappedEvent {
    MappedEvent {
        event_id: "evt-1".into(),
        program_id: "p".into(),
        name: None,
        priority: 0,
        caps: vec![],
        subscription: vec![],
        windows,
        reports,
        ignored: vec![],
    }
}

fn window(interval_id: i32, start: f64, end: Option<f64>) -> Window {
    Window {
        interval_id,
        start,
        end,
    }
}

/// 200 W from t = 0 to 1000, sampled every second.
fn history() -> EnergyHistory {
    let mut h = EnergyHistory::new(HISTORY_SECONDS);
    for t in 0..=1000 {
        h.push(f64::from(t), 200.0 * f64::from(t), EnergySource::Twin);
    }
    h
}

#[test]
fn each_interval_is_read_once_it_is_over_and_sent_until_stored() {
    let events = vec![event(
        vec![window(0, 100.0, Some(400.0)), window(1, 400.0, Some(700.0))],
        vec![ReportKind::Demand, ReportKind::Usage],
    )];
    let mut book = ReportBook::default();
    let h = history();
    book.measure(&events, &h, 450.0, 900.0);
    let out = book.outgoing(&events, "ven-a", Some(EnergySource::Twin));
    assert_eq!(out.len(), 1, "interval 0 is over, interval 1 is not");
    let doc = serde_json::to_value(&out[0].request).unwrap();
    let interval = &doc["resources"][0]["intervals"][0];
    assert_eq!(interval["id"], 0);
    assert_eq!(interval["payloads"][0]["type"], "DEMAND");
    assert!((interval["payloads"][0]["values"][0].as_f64().unwrap() - 0.2).abs() < 1e-9);
    // 0.2 kW for 300 s = 1/60 kWh.
    let usage = interval["payloads"][1]["values"][0].as_f64().unwrap();
    assert!((usage - 0.2 * 300.0 / 3600.0).abs() < 1e-12, "{usage}");
    assert_eq!(doc["clientName"], "ven-a");
    assert_eq!(doc["eventID"], "evt-1");
    assert_eq!(doc["payloadDescriptors"][0]["readingType"], "ESTIMATED");
    assert_eq!(doc["payloadDescriptors"][1]["units"], "KWH");
    assert!(doc["reportName"].as_str().unwrap().contains("twin"));
    // Not stored yet (VTN down): still outgoing on the next round, not duplicated.
    book.measure(&events, &h, 460.0, 900.0);
    assert_eq!(book.outgoing(&events, "ven-a", None).len(), 1);
    book.stored("evt-1", "rep-1".into());
    assert_eq!(book.pending(), 0);
    book.measure(&events, &h, 702.0, 900.0);
    let out = book.outgoing(&events, "ven-a", None);
    assert_eq!(
        out[0].report_id.as_deref(),
        Some("rep-1"),
        "later readings update it"
    );
    let doc = serde_json::to_value(&out[0].request).unwrap();
    assert_eq!(
        doc["resources"][0]["intervals"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn unmeasured_intervals_and_events_without_report_requests_send_nothing() {
    let h = history();
    let mut book = ReportBook::default();
    let silent = vec![event(vec![window(0, 100.0, Some(200.0))], vec![])];
    book.measure(&silent, &h, 500.0, 900.0);
    assert!(book.outgoing(&silent, "v", None).is_empty());
    // Before the history began: skipped, never sent as a made-up number.
    let early = vec![event(
        vec![window(0, -5000.0, Some(-4000.0))],
        vec![ReportKind::Demand],
    )];
    book.measure(&early, &h, 500.0, 900.0);
    assert!(book.outgoing(&early, "v", None).is_empty());
}

#[test]
fn open_ended_intervals_are_reported_in_windows() {
    let h = history();
    let mut book = ReportBook::default();
    let events = vec![event(vec![window(3, 0.0, None)], vec![ReportKind::Demand])];
    book.measure(&events, &h, 950.0, 300.0);
    let out = book.outgoing(&events, "v", Some(EnergySource::Nvml));
    let doc = serde_json::to_value(&out[0].request).unwrap();
    let ids: Vec<i64> = doc["resources"][0]["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);
    assert_eq!(
        doc["resources"][0]["intervals"][1]["intervalPeriod"]["duration"],
        "P0Y0M0DT0H0M300S"
    );
    // A measured source: DIRECT_READ, which the 3.1 schema makes the default (so it is omitted).
    let reading_type = &doc["payloadDescriptors"][0]["readingType"];
    assert!(
        reading_type.is_null() || reading_type == "DIRECT_READ",
        "{reading_type}"
    );
}
