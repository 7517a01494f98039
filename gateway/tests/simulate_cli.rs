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
