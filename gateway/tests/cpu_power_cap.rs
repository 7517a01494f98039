//! The real CPU path end to end: `gridserve serve` on the default model with the CPU power
//! estimate, kept busy by clients; an operator posts a cap below what it draws, and within
//! 2 s the 1 s average power in `/v1/grid/status` is under it, the controller says how
//! (duty cycle, budget), and the metrics show it. Cancelling the cap restores full speed.

mod real_server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use real_server::{http, model_installed, tail, Server};
use serde_json::{json, Value};

const TOKEN: &str = "cpu-cap-operator";
/// `[power] cpu_idle_watts` in the shipped config.
const IDLE_WATTS: f64 = 20.0;

fn status(server: &Server) -> Value {
    let (code, text) = http("GET", &server.url("/v1/grid/status"), None, None);
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).expect("status JSON")
}

/// Clients that keep the engine busy until `stop` is set.
fn load(server: &Server, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (url, stop) = (server.url("/v1/completions"), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"model": "gemma-3-270m-q4_k_m", "prompt": "Once upon a time",
                                      "max_tokens": 24, "ignore_eos": true, "temperature": 0});
                    let (code, text) = http("POST", &url, Some(body), None);
                    assert!(code == 200 || code == 429, "{code}: {text}");
                }
            })
        })
        .collect()
}

/// Polls status until `done` holds or `limit` passes; returns the last status and the time.
fn wait_for(server: &Server, limit: Duration, done: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let st = status(server);
        if done(&st) || start.elapsed() > limit {
            return (st, start.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_posted_cap_brings_estimated_cpu_power_under_it_within_two_seconds() {
    if !model_installed() {
        return;
    }
    let envs = [("GRIDSERVE_OPERATOR_TOKEN", TOKEN)];
    let mut server = Server::start(&["--power", "estimate"], &envs);
    server.wait_ready();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&server, &stop);
    let avg = |st: &Value| st["power"]["average_1s_watts"].as_f64().unwrap_or(f64::NAN);
    // Busy: the estimate is idle 20 W + 12 W per core busy running gridserve. Let it settle,
    // then cap 40 % of the part above idle away.
    let (busy, _) = wait_for(&server, Duration::from_secs(20), |st| avg(st) > 30.0);
    assert!(avg(&busy) > 30.0, "never got busy: {busy}");
    thread::sleep(Duration::from_secs(2));
    let busy_watts = avg(&status(&server));
    let cap = (IDLE_WATTS + 0.6 * (busy_watts - IDLE_WATTS)).round();
    let post = json!({"id": "cpu-cap", "cap_watts": cap});
    let url = server.url("/v1/grid/envelopes");
    let (code, text) = http("POST", &url, Some(post), Some(TOKEN));
    assert_eq!(code, 201, "{text}");
    let (st, took) = wait_for(&server, Duration::from_secs(10), |st| avg(st) <= cap);
    assert!(
        avg(&st) <= cap && took <= Duration::from_secs(2),
        "from {busy_watts:.1} W to the {cap} W cap took {took:?}: {st}\nserver:\n{}",
        tail(&server.stderr, 4000)
    );
    println!(
        "estimated power {busy_watts:.1} W → cap {cap} W: 1 s average {:.1} W after {took:?}",
        avg(&st)
    );
    let point = &st["operating_point"];
    assert_eq!(point["mode"], "tracking", "{st}");
    assert!(point["duty_cycle"].as_f64().unwrap() < 1.0, "{st}");
    assert_eq!(st["cap"]["envelope_id"], "cpu-cap");
    let (_, metrics) = http("GET", &server.url("/metrics"), None, None);
    assert!(metrics.contains(r#"gridserve_power_watts{device="cpu",source="estimate"}"#));

    let (code, text) = http("DELETE", &format!("{url}/cpu-cap"), None, Some(TOKEN));
    assert_eq!(code, 200, "{text}");
    let (st, _) = wait_for(&server, Duration::from_secs(10), |st| {
        st["operating_point"]["mode"] == "uncapped" && st["operating_point"]["duty_cycle"] == 1.0
    });
    assert_eq!(
        st["operating_point"]["duty_cycle"], 1.0,
        "full speed again: {st}"
    );
    assert_eq!(st["cap"]["watts"], Value::Null);
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().expect("client"));
    assert!(server.terminate().success());
}
