//! Crash safety: the real `gridserve serve` binary is killed with SIGKILL right after it
//! acknowledged envelopes (201); a new process on the same data dir must still have every one
//! and enforce the active one. Needs the default model (the server loads it in the background;
//! the grid API answers before it is ready).

mod real_server;

use real_server::{http, model_installed, Server};
use serde_json::{json, Value};

const TOKEN: &str = "kill9-operator";

fn start(dir: &std::path::Path) -> Server {
    let envs = [("GRIDSERVE_OPERATOR_TOKEN", TOKEN), ("RUST_LOG", "warn")];
    Server::start_in(dir, &["--threads", "1"], &envs)
}

fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = http(method, &server.url(path), body, Some(TOKEN));
    (status, serde_json::from_str(&text).expect("JSON body"))
}

#[test]
fn kill_9_after_201_loses_no_envelope() {
    if !model_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let ids: Vec<String> = (0..5).map(|i| format!("crash-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let body = json!({"id": id, "priority": i, "cap_watts": 100 + i, "duration_seconds": 3600});
        let (status, e) = call(&server, "POST", "/v1/grid/envelopes", Some(body));
        assert_eq!(status, 201, "{e}");
    }
    // SIGKILL at once: no shutdown path runs, only what was fsynced counts.
    server.kill9();

    let server = start(dir.path());
    for id in &ids {
        let (status, e) = call(&server, "GET", &format!("/v1/grid/envelopes/{id}"), None);
        assert_eq!(
            (status, e["state"].as_str()),
            (200, Some("active")),
            "{id}: {e}"
        );
    }
    let (_, st) = call(&server, "GET", "/v1/grid/status", None);
    assert_eq!(
        (
            st["cap"]["watts"].as_f64(),
            st["cap"]["envelope_id"].as_str()
        ),
        (Some(100.0), Some("crash-0")),
        "{st}"
    );
}
