//! `gridserve simulate` end to end: the built binary replays a shipped scenario for 60 s and
//! writes a summary (JSON) and a time series (CSV) a user can read.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn simulate_cli_writes_summary_and_timeseries() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("gridserve-simulate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_gridserve"))
        .arg("--config")
        .arg(repo.join("config/default.toml"))
        .arg("simulate")
        .arg("--scenario")
        .arg(repo.join("config/scenarios/azure-conv-h100.toml"))
        .args(["--duration-seconds", "60"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("gridserve runs");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(stdout.contains("tokens/J"), "{stdout}");

    let json = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["name"], "azure-conv-h100");
    assert_eq!(v["simulated_seconds"].as_f64().map(f64::round), Some(60.0));
    let arrived = v["requests_arrived"].as_u64().unwrap();
    assert!(
        (300..700).contains(&arrived),
        "{arrived} arrivals at 8/s for 60 s"
    );
    assert!(v["requests_completed"].as_u64().unwrap() > arrived * 8 / 10);
    assert!(v["output_tokens_per_joule"].as_f64().unwrap() > 0.5);
    let energy = v["energy_joules"].as_f64().unwrap();
    let power = v["average_power_watts"].as_f64().unwrap();
    assert!((energy / 60.0 - power).abs() < 0.01 * power);
    for key in ["ttft_seconds", "itl_seconds"] {
        let (p50, p99) = (
            v[key]["p50"].as_f64().unwrap(),
            v[key]["p99"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p99 >= p50, "{key}: {p50} {p99}");
    }

    let csv = std::fs::read_to_string(out.join("timeseries.csv")).expect("timeseries.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("t_seconds,cap_watts,power_watts,clock_mhz,running,waiting,output_tokens_per_second,tokens_per_joule")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|r| r.len() == 8 && r[1] == "700"));
    let watts: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(
        watts.iter().all(|w| (70.0..=710.0).contains(w)),
        "{watts:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// `gridserve simulate-proof` on a short regulation scenario and one GPU: the three runs, the
/// table with targets, proof.md and proof.json.
#[test]
fn simulate_proof_prints_the_table_and_writes_its_files() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("gridserve-proof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let regulation = std::fs::read_to_string(repo.join("config/scenarios/grid-d-regulation.toml"))
        .unwrap()
        .replace("start_seconds = 300", "start_seconds = 5");
    let scenario = out.join("short-regulation.toml");
    std::fs::write(&scenario, regulation).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_gridserve"))
        .arg("--config")
        .arg(repo.join("config/default.toml"))
        .arg("simulate-proof")
        .arg("--scenario")
        .arg(&scenario)
        .args([
            "--gpu",
            "h100-sxm",
            "--duration-seconds",
            "20",
            "--jobs",
            "2",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("gridserve runs");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        stdout.contains("| grid-d-regulation | h100-sxm | adaptive |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("p99 ≤ 1 s") && stdout.contains("≥ 0.95"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(out.join("proof.md")).expect("proof.md");
    assert!(md.contains("| grid-d-regulation | h100-sxm | cap_limit |"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("proof.json")).unwrap()).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    let adaptive = &v["rows"][1];
    assert_eq!(adaptive["policy"], "adaptive");
    let corr = adaptive["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metric"] == "correlation")
        .unwrap();
    assert!(
        corr["value"].as_f64().is_some() && corr["pass"].is_boolean(),
        "{corr}"
    );
    assert!(out
        .join("proof/grid-d-regulation-h100-sxm-uncapped/summary.json")
        .exists());
    let _ = std::fs::remove_dir_all(&out);
}
