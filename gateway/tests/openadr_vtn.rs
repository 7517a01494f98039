//! gridserve as an OpenADR 3.1 VEN against a real VTN (`openleadr-vtn` on PostgreSQL 18,
//! started by `tests/vtn`): the utility's business logic creates, modifies and deletes an
//! event with a two-interval IMPORT_CAPACITY_LIMIT schedule; `gridserve serve --power
//! twin:h100` picks each change up within a poll, enforces each cap, reports DEMAND/USAGE the
//! VTN stores, and rides out the VTN going away (known caps, then the safe limit) and coming
//! back. Needs `scripts/install-openadr-vtn.sh` (run by `scripts/test.sh`) and the default
//! model.

mod real_server;
mod vtn;

use std::time::{Duration, Instant};

use real_server::{http, model_installed, root, tail, Server};
use serde_json::{json, Value};
use vtn::Vtn;

const OPERATOR: &str = "openadr-e2e-operator";
const PROGRAM: &str = "gridserve-e2e";
/// Polls are slow here on purpose: event changes must arrive by push (the VTN's websocket
/// notifier), well within one poll.
const POLL_SECONDS: f64 = 5.0;
const SAFE_LIMIT_WATTS: f64 = 250.0;

/// The default config with the VEN pointed at `vtn`, fast polls and a short comms-loss grace so
/// the test runs in about a minute. Written next to default.toml (as a temporary dotfile), so
/// its relative paths (model, chat template, GPU profiles) resolve the same.
fn config_for(vtn: &Vtn) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(root().join("config/default.toml")).unwrap();
    let (head, _) = text
        .split_once("\n[openadr]")
        .expect("default.toml has [openadr]");
    let openadr = format!(
        r#"
[openadr]
enabled = true
vtn_url = "{vtn_url}"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret_env = "E2E_OPENADR_SECRET"
programs = ["{PROGRAM}"]
ven_name = "gridserve-e2e-ven"
poll_interval_seconds = {POLL_SECONDS}
request_timeout_seconds = 2
max_backoff_seconds = 2
comms_loss_grace_seconds = 3
safe_limit_watts = {SAFE_LIMIT_WATTS}
simple_level_fractions = [1.0, 0.75, 0.5, 0.25]
reports = true
open_interval_report_seconds = 5
"#,
        vtn_url = vtn.base_url(),
        token_url = vtn.token_url(),
        client_id = vtn.ven_client_id(),
    );
    let file = tempfile::Builder::new()
        .prefix(".openadr-e2e-")
        .suffix(".toml")
        .tempfile_in(root().join("config"))
        .unwrap();
    std::fs::write(file.path(), head.to_owned() + &openadr).unwrap();
    file
}

fn rfc3339(unix: f64) -> String {
    chrono::DateTime::from_timestamp_millis((unix * 1000.0) as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An event whose intervals (kW caps) follow each other from `start`, each `seconds` long.
fn event(program_id: &str, name: &str, start: f64, seconds: u32, caps_kw: &[f64]) -> Value {
    let intervals: Vec<Value> = caps_kw
        .iter()
        .enumerate()
        .map(|(i, kw)| json!({"id": i, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}))
        .collect();
    json!({
        "objectType": "EVENT",
        "programID": program_id,
        "eventName": name,
        "priority": 1,
        "payloadDescriptors": [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
        "reportDescriptors": [{"payloadType": "DEMAND", "units": "KW"}, {"payloadType": "USAGE", "units": "KWH"}],
        "intervalPeriod": {"start": rfc3339(start), "duration": format!("PT{seconds}S")},
        "intervals": intervals,
    })
}

struct Gridserve {
    server: Server,
}

impl Gridserve {
    fn status(&self) -> Value {
        let (code, text) = http("GET", &self.server.url("/v1/grid/status"), None, None);
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn metrics(&self) -> String {
        http("GET", &self.server.url("/metrics"), None, None).1
    }

    /// Polls `/metrics` until `name` reads `value` (gauges follow the control loop's 10 Hz
    /// ticks); returns the whole text.
    fn wait_for_metric(&self, name: &str, value: f64) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let m = self.metrics();
            if metric(&m, name) == Some(value) {
                return m;
            }
            assert!(Instant::now() < deadline, "{name} is not {value}:\n{m}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn envelopes(&self) -> Vec<Value> {
        let (_, text) = http(
            "GET",
            &self.server.url("/v1/grid/envelopes?all=true"),
            None,
            Some(OPERATOR),
        );
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["data"].as_array().cloned().unwrap_or_default()
    }

    /// Polls the status until `check` holds; panics with the last status and logs otherwise.
    fn wait_for(
        &self,
        vtn: &Vtn,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status();
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; status:\n{status:#}\ngridserve:\n{}\nVTN:\n{}",
                tail(&self.server.stderr, 6000),
                vtn.vtn_log()
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn cap(status: &Value) -> Option<f64> {
    status["cap"]["watts"].as_f64()
}

fn driving(status: &Value) -> Option<&str> {
    status["openadr"]["driving_event_id"].as_str()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn follows_a_real_vtn_reports_back_and_survives_it_going_away() {
    if !model_installed() {
        return;
    }
    let started = Instant::now();
    let mut scene = Scene::start();
    eprintln!(
        "[e2e] VTN + gridserve up after {:?}; default cap {:?}",
        started.elapsed(),
        scene.default_cap
    );
    let id = follows_and_enforces_a_two_interval_event(&scene);
    reports_both_intervals(&scene, &id);
    follows_a_modification_then_a_deletion(&scene, &id);
    rides_out_the_vtn_going_away(&mut scene);
    let vens = scene.vtn.vens();
    assert!(
        vens.iter().any(|v| v["venName"] == "gridserve-e2e-ven"),
        "the VEN registered itself: {vens:?}"
    );
    eprintln!("[e2e] done in {:?}", started.elapsed());
}

/// The VTN with the test's program, and gridserve following it.
struct Scene {
    vtn: Vtn,
    gs: Gridserve,
    program_id: String,
    /// The cap with no event in force.
    default_cap: Option<f64>,
    _config: tempfile::NamedTempFile,
}

impl Scene {
    fn start() -> Scene {
        let vtn = Vtn::start();
        let program_id = vtn.create_program(PROGRAM);
        let config = config_for(&vtn);
        let config_arg = config.path().to_str().unwrap().to_owned();
        let envs = [
            ("GRIDSERVE_OPERATOR_TOKEN", OPERATOR),
            ("E2E_OPENADR_SECRET", vtn.ven_client_secret()),
            ("RUST_LOG", "info"),
        ];
        let args = [
            "--config",
            &config_arg,
            "--power",
            "twin:h100",
            "--threads",
            "1",
        ];
        let mut server = Server::start(&args, &envs);
        server.wait_ready();
        let gs = Gridserve { server };
        let up = gs.wait_for(&vtn, "link up, push on", Duration::from_secs(10), |s| {
            s["openadr"]["link"] == "up" && s["openadr"]["push_connected"] == true
        });
        Scene {
            default_cap: cap(&up),
            vtn,
            gs,
            program_id,
            _config: config,
        }
    }
}

/// A two-interval schedule starting in 3 s: picked up within a poll, each cap in force in its
/// interval with the controller aiming under it. Returns the event id.
fn follows_and_enforces_a_two_interval_event(scene: &Scene) -> String {
    let (vtn, gs, program_id) = (&scene.vtn, &scene.gs, &scene.program_id);
    let t0 = now() + 3.0;
    let created = vtn.create_event(event(program_id, "two-step", t0, 6, &[0.5, 0.3]));
    let id = created["id"].as_str().expect("event id").to_owned();
    let seen_at = Instant::now();
    let is_followed = |s: &Value| {
        s["openadr"]["events"].as_array().is_some_and(|evs| {
            evs.iter()
                .any(|e| e["event_id"] == id.as_str() && e["state"] == "followed")
        })
    };
    gs.wait_for(vtn, "event followed", Duration::from_secs(3), is_followed);
    let pickup = seen_at.elapsed();
    eprintln!(
        "[e2e] event picked up {pickup:?} after the VTN stored it (pushed; poll {POLL_SECONDS} s)"
    );
    assert!(
        pickup.as_secs_f64() < 1.5,
        "picked up after {pickup:?}: not pushed"
    );
    let ours: Vec<Value> = gs
        .envelopes()
        .into_iter()
        .filter(|e| e["origin"] == format!("openadr:{id}").as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["intervals"][0]["cap_watts"], 500.0);
    assert_eq!(ours[0]["intervals"][1]["cap_watts"], 300.0);

    let s = gs.wait_for(vtn, "first cap", Duration::from_secs(6), |s| {
        cap(s) == Some(500.0)
    });
    assert_eq!(driving(&s), Some(id.as_str()));
    let s = gs.wait_for(vtn, "second cap", Duration::from_secs(8), |s| {
        cap(s) == Some(300.0)
    });
    assert_eq!(driving(&s), Some(id.as_str()));
    // The controller (10 Hz) follows within a few ticks: it aims under the new cap.
    gs.wait_for(
        vtn,
        "controller under the cap",
        Duration::from_secs(2),
        |s| {
            s["operating_point"]["target_watts"]
                .as_f64()
                .is_some_and(|t| t <= 300.0)
        },
    );
    let m = gs.wait_for_metric("gridserve_grid_cap_watts", 300.0);
    assert_eq!(metric(&m, "gridserve_openadr_link_up"), Some(1.0));

    id
}

/// Reports for both intervals, stored by the VTN, once the schedule is over.
fn reports_both_intervals(scene: &Scene, id: &str) {
    let (vtn, gs) = (&scene.vtn, &scene.gs);
    let deadline = Instant::now() + Duration::from_secs(15);
    let report = loop {
        let reports = vtn.reports(id);
        let full = reports.iter().find(|r| {
            r["resources"][0]["intervals"]
                .as_array()
                .is_some_and(|i| i.len() == 2)
        });
        if let Some(r) = full {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no full report: {reports:?}\n{}",
            tail(&gs.server.stderr, 4000)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(report["clientName"], "gridserve-e2e-ven");
    assert!(
        report["reportName"].as_str().unwrap().contains("twin"),
        "{report}"
    );
    for interval in report["resources"][0]["intervals"].as_array().unwrap() {
        let payloads = interval["payloads"].as_array().unwrap();
        let demand = payloads.iter().find(|p| p["type"] == "DEMAND").unwrap()["values"][0]
            .as_f64()
            .unwrap();
        let usage = payloads.iter().find(|p| p["type"] == "USAGE").unwrap()["values"][0]
            .as_f64()
            .unwrap();
        // The twin H100 idles at tens of watts and the caps were 0.5 / 0.3 kW.
        assert!(demand > 0.01 && demand < 0.5, "demand {demand} kW");
        assert!(
            (usage - demand * 6.0 / 3600.0).abs() < 1e-6,
            "usage {usage} kWh vs demand {demand} kW over 6 s"
        );
    }
    assert!(metric(&gs.metrics(), "gridserve_openadr_reports_total").unwrap_or(0.0) >= 1.0);
}

/// The business logic modifies the event (its envelope is replaced, not added to), then
/// deletes it (the cap goes back to the default).
fn follows_a_modification_then_a_deletion(scene: &Scene, id: &str) {
    let (vtn, gs, program_id) = (&scene.vtn, &scene.gs, &scene.program_id);
    let mut changed = event(program_id, "two-step", now() + 1.0, 30, &[0.4]);
    changed["priority"] = json!(1);
    vtn.update_event(id, changed);
    let s = gs.wait_for(vtn, "modified cap", Duration::from_secs(5), |s| {
        cap(s) == Some(400.0)
    });
    assert_eq!(driving(&s), Some(id));
    let live: Vec<Value> = gs
        .envelopes()
        .into_iter()
        .filter(|e| e["origin"] == format!("openadr:{id}").as_str())
        .filter(|e| e["state"] == "active" || e["state"] == "scheduled")
        .collect();
    assert_eq!(live.len(), 1, "exactly the event's new schedule: {live:?}");

    vtn.delete_event(id);
    let s = gs.wait_for(vtn, "event removed", Duration::from_secs(5), |s| {
        driving(s).is_none()
    });
    assert_eq!(cap(&s), scene.default_cap);
}

/// The VTN goes away mid-event: the known cap holds until its interval ends, then the safe
/// limit; when the VTN is back, what changed meanwhile is reconciled, the safe limit goes and
/// the reports catch up.
fn rides_out_the_vtn_going_away(scene: &mut Scene) {
    let default_cap = scene.default_cap;
    let Scene {
        vtn,
        gs,
        program_id,
        ..
    } = scene;
    let t3 = now() + 1.0;
    let last = vtn.create_event(event(program_id, "outage", t3, 8, &[0.45]));
    let last_id = last["id"].as_str().unwrap().to_owned();
    // A later event, known before the outage and deleted during it: after reconnecting, the
    // VEN must drop it (reconcile), not keep enforcing a stale limit.
    let later = vtn.create_event(event(program_id, "stale", t3 + 60.0, 60, &[0.6]));
    let later_id = later["id"].as_str().unwrap().to_owned();
    gs.wait_for(vtn, "outage event cap", Duration::from_secs(5), |s| {
        cap(s) == Some(450.0)
    });
    gs.wait_for(vtn, "later event known", Duration::from_secs(3), |s| {
        s["openadr"]["events"]
            .as_array()
            .is_some_and(|e| e.len() == 2)
    });
    vtn.stop_vtn();
    let gone = Instant::now();
    let s = gs.wait_for(vtn, "link down", Duration::from_secs(8), |s| {
        s["openadr"]["link"] == "down"
    });
    if now() < t3 + 7.5 {
        assert_eq!(
            cap(&s),
            Some(450.0),
            "a known cap keeps applying while the VTN is away"
        );
    }
    // The cap moves when the store does; the VEN's status follows at the end of its round.
    let s = gs.wait_for(vtn, "safe limit", Duration::from_secs(12), |s| {
        cap(s) == Some(SAFE_LIMIT_WATTS) && s["openadr"]["safe_limit_engaged"] == true
    });
    eprintln!(
        "[e2e] safe limit {:?} after the VTN went away (grace 3 s, the known interval ended at {:.1} s)",
        gone.elapsed(),
        t3 + 8.0 - (now() - gone.elapsed().as_secs_f64())
    );
    assert_eq!(s["cap"]["origin"], "openadr-comms-loss");
    assert_eq!(s["openadr"]["safe_limit_engaged"], true);
    assert!(s["openadr"]["last_error"].is_string());
    assert_eq!(
        metric(&gs.metrics(), "gridserve_openadr_safe_limit_engaged"),
        Some(1.0)
    );
    assert_eq!(
        metric(&gs.metrics(), "gridserve_openadr_link_up"),
        Some(0.0)
    );
    // Nothing is spun on: a handful of polls over the outage, not hundreds.
    let failed = metric(
        &gs.metrics(),
        "gridserve_openadr_polls_total{result=\"error\"}",
    )
    .unwrap_or(0.0);
    assert!(failed <= 20.0, "{failed} failed polls");

    vtn.sql(&format!("DELETE FROM event WHERE id = '{later_id}'"));
    vtn.start_vtn();
    let back = Instant::now();
    let s = gs.wait_for(vtn, "recovered", Duration::from_secs(10), |s| {
        s["openadr"]["link"] == "up" && s["openadr"]["safe_limit_engaged"] == false
    });
    gs.wait_for(vtn, "push back", Duration::from_secs(10), |s| {
        s["openadr"]["push_connected"] == true
    });
    eprintln!(
        "[e2e] reconciled {:?} after the VTN answered again (backoff cap 2 s)",
        back.elapsed()
    );
    assert_eq!(cap(&s), default_cap);
    let stale: Vec<Value> = gs
        .envelopes()
        .into_iter()
        .filter(|e| e["origin"] == format!("openadr:{later_id}").as_str())
        .collect();
    assert!(
        !stale.is_empty() && stale.iter().all(|e| e["state"] == "cancelled"),
        "the event deleted during the outage is dropped on reconnect: {stale:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while vtn.reports(&last_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the outage interval's report never reached the VTN"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
