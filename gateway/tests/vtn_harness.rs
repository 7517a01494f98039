//! The OpenADR test harness itself: a real openleadr-vtn over a real PostgreSQL starts, the BL
//! creates a program and an event, the VEN client sees the event and reports on it, the BL reads
//! the report, and the event survives the VTN being killed and started again.
//! Needs scripts/install-openadr-vtn.sh to have run.

mod vtn;

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vtn::{encode, Vtn};

fn interval_values(event: &Value) -> Vec<f64> {
    event["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| i["payloads"][0]["values"][0].as_f64().expect("a number"))
        .collect()
}

#[test]
fn vtn_harness_round_trip() {
    let t0 = Instant::now();
    let mut vtn = Vtn::start();
    println!(
        "Vtn::start() took {:?} (VTN at {}, token URL {})",
        t0.elapsed(),
        vtn.base_url(),
        vtn.token_url()
    );

    // BL: a program and an event with two capacity-limit intervals and a DEMAND report request.
    let program_id = vtn.create_program("gridserve-harness");
    let start = (chrono::Utc::now() + chrono::Duration::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = vtn.create_event(json!({
        "programID": program_id,
        "eventName": "cap",
        "priority": 1,
        "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
        "intervalPeriod": {"start": start, "duration": "PT30S"},
        "reportDescriptors": [{"payloadType": "DEMAND", "units": "KW"}],
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [0.5]}]},
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [0.3]}]}
        ]
    }));
    let event_id = event["id"].as_str().expect("event id").to_owned();
    assert_eq!(event["programID"], program_id);

    // The VEN client (not registered as a VEN object) sees the untargeted event.
    let seen = vtn.ven(
        "GET",
        &format!("/events?programID={}", encode(&program_id)),
        None,
    );
    let seen = seen.as_array().expect("an array of events");
    assert_eq!(
        seen.len(),
        1,
        "the VEN sees exactly the one event: {seen:?}"
    );
    assert_eq!(seen[0]["id"], event_id.as_str());
    assert_eq!(seen[0]["eventName"], "cap");
    assert_eq!(interval_values(&seen[0]), [0.5, 0.3]);

    // The VEN reports; the BL reads it back.
    let report = vtn.ven(
        "POST",
        "/reports",
        Some(&json!({
            "objectType": "REPORT",
            "eventID": event_id,
            "clientName": "gridserve-test",
            "resources": [{
                "resourceName": "gridserve-node",
                "intervals": [{"id": 0, "payloads": [{"type": "DEMAND", "values": [0.4]}]}]
            }]
        })),
    );
    assert_eq!(report["clientID"], vtn.ven_client_id());
    let reports = vtn.reports(&event_id);
    assert_eq!(reports.len(), 1, "one report: {reports:?}");
    assert_eq!(reports[0]["id"], report["id"]);
    assert_eq!(
        reports[0]["resources"][0]["intervals"][0]["payloads"][0]["values"][0],
        0.4
    );
    assert!(vtn.vens().is_empty(), "no VEN object was registered");

    // The VTN goes away: its port refuses connections; PostgreSQL keeps the data.
    let token_before = vtn.ven_token();
    vtn.stop_vtn();
    let refused = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, vtn.port()).into(),
        Duration::from_secs(2),
    );
    assert!(refused.is_err(), "the VTN's port still accepts connections");

    let t1 = Instant::now();
    vtn.start_vtn();
    println!("start_vtn() took {:?}", t1.elapsed());
    let r = vtn.request(
        "GET",
        &format!("/events?programID={}", encode(&program_id)),
        Some(&token_before),
        None,
    );
    assert_eq!(
        r.status, 200,
        "a token from before the restart stays valid: {}",
        r.body
    );
    let after = r.json();
    assert_eq!(after[0]["id"], event_id.as_str());
    assert_eq!(interval_values(&after[0]), [0.5, 0.3]);

    // BL edits: an update is visible to the VEN, a delete removes the event.
    let mut changed = event.clone();
    changed["intervals"][1]["payloads"][0]["values"] = json!([0.2]);
    let updated = vtn.update_event(&event_id, changed);
    assert_eq!(interval_values(&updated), [0.5, 0.2]);
    let seen = vtn.ven("GET", &format!("/events/{}", encode(&event_id)), None);
    assert_eq!(interval_values(&seen), [0.5, 0.2]);
    let mut second = event.clone();
    second["eventName"] = json!("second");
    let second_id = vtn.create_event(second)["id"].as_str().unwrap().to_owned();
    assert_eq!(vtn.events(Some(&program_id)).len(), 2);
    vtn.delete_event(&second_id);
    let left = vtn.events(Some(&program_id));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], event_id.as_str());
    // The VTN itself refuses to delete an event with reports (a foreign key); delete_event
    // deletes the reports first.
    let raw = vtn.request(
        "DELETE",
        &format!("/events/{}", encode(&event_id)),
        Some(&vtn.bl_token()),
        None,
    );
    assert_eq!(raw.status, 409, "{}", raw.body);
    vtn.delete_event(&event_id);
    assert!(vtn.events(Some(&program_id)).is_empty());
    assert!(vtn.reports(&event_id).is_empty());
    let seen = vtn.ven(
        "GET",
        &format!("/events?programID={}", encode(&program_id)),
        None,
    );
    assert_eq!(seen, json!([]), "the VEN no longer sees the deleted event");

    // A second VEN client, made through the user API, logs in.
    vtn.add_ven_client("ven-two", "ven-two-secret");
    assert!(vtn.token("ven-two", "ven-two-secret").is_ok());
    assert_eq!(vtn.token("ven-two", "wrong").unwrap_err().status, 401);

    println!("whole round trip took {:?}", t0.elapsed());
}
