//! The GPU twin must reproduce every ML.ENERGY v3 row in twin.md (power within 5 %,
//! throughput and median ITL within 10 %); on failure the whole table is printed.

use std::path::PathBuf;

use gridserve::twin::validate::{format_table, run_all, ML_ENERGY_H100};

#[test]
fn twin_matches_ml_energy_rows_within_tolerance() {
    let config_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    let results = run_all(&config_dir, "h100-sxm").expect("profiles load");
    assert_eq!(results.len(), ML_ENERGY_H100.len());
    let table = format_table("h100-sxm", &results);
    println!("{table}");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| format!("{} batch {}", r.reference.model, r.reference.max_num_seqs))
        .collect();
    assert!(
        failed.is_empty(),
        "twin outside tolerance on {failed:?}:\n{table}"
    );
}
