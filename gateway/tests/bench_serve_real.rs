//! `gridserve bench serve` and `bench sweep` (the binary) against the real `gridserve serve` on
//! the default model and the H100 twin: a short run with tiers and an envelope scenario prints
//! the summary and writes the JSON result and plots; a two-point sweep writes its front.

mod real_server;

use std::process::{Command, Output};

use real_server::{model_installed, root, Server};
use serde_json::Value;

const OPERATOR: &str = "bench-operator-token";

fn gridserve(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gridserve"))
        .current_dir(root())
        .env("GRIDSERVE_OPERATOR_TOKEN", OPERATOR)
        .args(args)
        .output()
        .expect("run gridserve");
    assert!(
        out.status.success(),
        "gridserve {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start() -> Option<Server> {
    if !model_installed() {
        return None;
    }
    let mut server = Server::start(
        &["--power", "twin:h100"],
        &[("GRIDSERVE_OPERATOR_TOKEN", OPERATOR)],
    );
    server.wait_ready();
    Some(server)
}

const LOAD: [&str; 12] = [
    "--random-input-len",
    "16",
    "--random-output-len",
    "8",
    "--ignore-eos",
    "--request-rate",
    "4",
    "--disable-tqdm",
    "--save-result",
    "--metric-percentiles",
    "50,99",
    "--seed",
];

#[test]
fn bench_serve_against_gridserve_reports_energy_tiers_and_compliance() {
    let Some(server) = start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("steps.toml");
    std::fs::write(
        &scenario,
        "name = \"e2e\"\n[[step]]\nat_seconds = 0\ncap_watts = 150\n\
         [[step]]\nat_seconds = 1.5\ncap_watts = 90\n[[step]]\nat_seconds = 3\n",
    )
    .unwrap();
    let base = server.url("");
    let results = dir.path().join("results");
    let mut args = vec!["bench", "serve", "--base-url", &base, "--num-prompts", "10"];
    args.extend(LOAD);
    args.extend([
        "1",
        "--result-dir",
        results.to_str().unwrap(),
        "--result-filename",
        "e2e.json",
    ]);
    args.extend(["--priority-mix", "interactive=0.5,flexible=0.5"]);
    args.extend(["--envelope-scenario", scenario.to_str().unwrap()]);
    let out = gridserve(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for label in [
        "============ Serving Benchmark Result ============",
        "Successful requests:                     10",
        "Output token throughput (tok/s):",
        "P99 TTFT (ms):",
        "Energy source:                           usage (per-request usage.energy_joules, the server's source: twin)",
        "Output tokens per joule (tok/J):",
        "Envelope Compliance (e2e)",
        "interactive",
    ] {
        assert!(stdout.contains(label), "missing {label:?}:\n{stdout}");
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("e2e.json")).unwrap()).unwrap();
    assert_eq!(json["completed"], 10);
    assert_eq!(json["total_output_tokens"], 80);
    assert!(json["output_tokens_per_joule"].as_f64().unwrap() > 0.0);
    assert!(json["p99_power_watts"].as_f64().unwrap() > 0.0);
    assert_eq!(json["tiers"]["flexible"]["completed"], 5);
    let steps = json["envelope_compliance"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for step in steps {
        assert!(step["posted"]["error"].is_null(), "{step}");
        // The server's status shows each new cap within a second.
        assert!(step["ack_s"].as_f64().is_some_and(|s| s < 1.0), "{step}");
    }
    for plot in [
        "e2e-power.png",
        "e2e-power.svg",
        "e2e-ttft-cdf.png",
        "e2e-e2el-cdf.svg",
    ] {
        assert!(results.join(plot).exists(), "{plot} missing");
    }
    // The scenario's envelopes are all cancelled at the end: the default cap is back.
    let status: Value = serde_json::from_str(
        &real_server::http("GET", &server.url("/v1/grid/status"), None, None).1,
    )
    .unwrap();
    assert!(status["cap"]["envelope_id"].is_null(), "{status}");
}

#[test]
fn bench_sweep_against_gridserve_writes_the_front() {
    let Some(server) = start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = server.url("");
    let results = dir.path().join("sweep");
    let mut args = vec![
        "bench",
        "sweep",
        "--param",
        "max-concurrency",
        "--values",
        "1,4",
    ];
    args.extend(["--base-url", &base, "--num-prompts", "4"]);
    args.extend(LOAD);
    args.extend(["2", "--result-dir", results.to_str().unwrap()]);
    let out = gridserve(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Sweep") && stdout.contains("tok/J"),
        "{stdout}"
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("sweep-concurrency.json")).unwrap(),
    )
    .unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r["completed"] == 4 && r["output_tokens_per_joule"].as_f64().is_some()));
    assert!(rows.iter().any(|r| r["on_front"] == true));
    assert!(
        results.join("sweep-concurrency.png").exists()
            && results.join("sweep-concurrency.svg").exists()
    );
}
