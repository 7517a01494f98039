//! End to end: the real `gridserve serve` binary on the default model, driven by the official
//! `openai` Python client (`tests/openai_e2e.py`), then shut down with SIGTERM; and the same
//! binary with `--power twin:h100`, whose energy figures come from the GPU twin.

mod real_server;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use real_server::{collect, http, model_installed, root, tail, wait_timeout, KillOnDrop, Server};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

fn venv_python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// The model and the venv with `openai`; panics with the fix unless
/// `GRIDSERVE_SKIP_REAL_MODEL=1`.
fn prerequisites_installed() -> bool {
    if !model_installed() {
        return false;
    }
    let python = venv_python();
    assert!(
        python.exists() || std::env::var("GRIDSERVE_SKIP_REAL_MODEL").as_deref() == Ok("1"),
        "{} is missing: run scripts/setup.sh (or set GRIDSERVE_SKIP_REAL_MODEL=1)",
        python.display()
    );
    python.exists()
}

#[test]
fn official_openai_client_passes_against_the_real_server() {
    if !prerequisites_installed() {
        return;
    }
    let root = root();
    let started = Instant::now();
    let mut server = Server::start(&[], &[]);
    server.wait_ready();
    println!(
        "server ready on port {} after {:.1} s",
        server.port,
        started.elapsed().as_secs_f64()
    );

    let mut script = Command::new(venv_python())
        .current_dir(&root)
        .arg("tests/openai_e2e.py")
        .arg("--base-url")
        .arg(server.url("/v1"))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tests/openai_e2e.py");
    let out = collect(script.stdout.take().expect("stdout piped"));
    let err = collect(script.stderr.take().expect("stderr piped"));
    let mut script = KillOnDrop(Some(script));
    // On timeout the guard kills the script when the panic below unwinds.
    let status = wait_timeout(script.child(), SCRIPT_TIMEOUT);
    // Give the reader threads a moment to drain the closed pipes.
    thread::sleep(Duration::from_millis(100));
    let (out, err) = (tail(&out, 1 << 20), tail(&err, 1 << 20));
    println!("--- tests/openai_e2e.py stdout ---\n{out}");
    if !err.trim().is_empty() {
        println!("--- tests/openai_e2e.py stderr ---\n{err}");
    }
    let status = status
        .unwrap_or_else(|| panic!("tests/openai_e2e.py did not finish within {SCRIPT_TIMEOUT:?}"));
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        status.success() && summary.ends_with(" passed, 0 failed"),
        "tests/openai_e2e.py failed ({status}): {summary}\nserver stderr (tail):\n{}",
        tail(&server.stderr, 8000)
    );

    let status = server.terminate();
    assert!(
        status.success(),
        "gridserve serve exited with {status} after SIGTERM; stderr:\n{}",
        tail(&server.stderr, 8000)
    );
}

#[test]
fn serve_with_the_h100_twin_reports_twin_energy_power_and_clocks() {
    if !prerequisites_installed() {
        return;
    }
    let mut server = Server::start(&["--power", "twin:h100"], &[]);
    server.wait_ready();
    let body = serde_json::json!({
        "model": "gemma-3-270m-q4_k_m", "prompt": "The capital of France",
        "max_tokens": 16, "temperature": 0, "ignore_eos": true,
    });
    let (status, text) = http("POST", &server.url("/v1/completions"), Some(body), None);
    assert_eq!(status, 200, "{text}");
    let reply: serde_json::Value = serde_json::from_str(&text).expect("JSON reply");
    let usage = &reply["usage"];
    assert_eq!(usage["energy_source"], "twin", "{usage}");
    // 16 steps of a 270M model on an H100: ≈ 1.7 ms at ≈ 200 W each, plus the idle before.
    let joules = usage["energy_joules"].as_f64().expect("energy_joules");
    assert!((0.5..50.0).contains(&joules), "{joules} J");
    let (status, metrics) = http("GET", &server.url("/metrics"), None, None);
    assert_eq!(status, 200);
    for series in [
        r#"gridserve_power_watts{device="gpu0",source="twin"}"#,
        r#"gridserve_sm_clock_hertz{device="gpu0",source="twin"} 1980000000"#,
        r#"gridserve_power_limit_watts{device="gpu0",source="twin"} 700"#,
        r#"gridserve_energy_joules_total{source="twin"}"#,
    ] {
        assert!(metrics.contains(series), "missing {series} in:\n{metrics}");
    }
    assert!(
        tail(&server.stderr, 1 << 16)
            .contains("GPU digital twin: 1× H100 SXM running gemma-3-270m"),
        "the choice is logged:\n{}",
        tail(&server.stderr, 8000)
    );
    assert!(server.terminate().success());
}
