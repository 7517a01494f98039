//! `gridserve simulate`: the engine's own `Scheduler` driven against the GPU twin in virtual
//! time (no model runs; output lengths are sampled), for one replica or a fleet, under a
//! power envelope and a policy.
//!
//! - `scenario` (+ `arrivals`, `envelope`): the scenario file, validated.
//! - `backend`: the model stand-in (token 1 always, so requests run to their length).
//! - `policy`: the sans-IO policies (fixed, power limit = cap, gridserve's controller).
//! - `replica`: twin + scheduler + backend + policy on one virtual clock.
//! - `fleet`: replicas in global time order with join-shortest-queue routing.
//! - `stats`, `report`: histograms, time bins, the summary and the time series.
//! - `response`: step-down response and tracking of the envelope, from the 100 ms series.
//! - `proof`: `gridserve simulate-proof`, the grid scenarios × GPUs × policies table.

pub mod arrivals;
pub mod backend;
pub mod envelope;
pub mod fleet;
pub mod policy;
pub mod proof;
pub mod replica;
pub mod report;
pub mod response;
pub mod scenario;
pub mod stats;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use report::Summary;
pub use scenario::{Overrides, Scenario};

use crate::GatewayError;

/// Arguments of `gridserve simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario file (see `config/scenarios/`).
    #[arg(long)]
    pub scenario: PathBuf,
    /// Where to write summary.json and timeseries.csv (default
    /// `bench-results/simulate/<scenario name>/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the scenario's `duration_seconds` (for quick runs).
    #[arg(long)]
    pub duration_seconds: Option<f64>,
    /// Override the scenario's `replicas`.
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Override the scenario's `policy.kind`.
    #[arg(long, value_enum)]
    pub policy: Option<scenario::PolicyKind>,
    /// Override the scenario's `hardware.gpu` (a profile in `config/gpus/`, e.g. h200-sxm).
    #[arg(long)]
    pub gpu: Option<String>,
    /// Override the scenario's `policy.sm_clock_mhz`: the clock the `fixed` policy locks
    /// (sweep it to see what each static clock costs in energy and latency).
    #[arg(long)]
    pub sm_clock_mhz: Option<u32>,
}

/// The folder of the config file (GPU profiles and model shapes live under it).
pub(crate) fn config_dir(config_file: &Path) -> &Path {
    config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Runs a scenario: loads it (GPUs and models from the folder of `config_file`), simulates,
/// prints the summary table and writes the files. Returns the summary.
pub fn run_cli(config_file: &Path, args: &SimulateArgs) -> Result<Summary, GatewayError> {
    let config_dir = config_dir(config_file);
    let overrides = Overrides {
        duration_seconds: args.duration_seconds,
        replicas: args.replicas,
        policy: args.policy,
        gpu: args.gpu.clone(),
        sm_clock_mhz: args.sm_clock_mhz,
    };
    let scenario = Scenario::load(&args.scenario, config_dir, &overrides)?;
    let controller = crate::config::Config::load(config_file)?.controller;
    let run = fleet::run(&scenario, &controller)?;
    let summary = Summary::from_run(&scenario, &run);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-results/simulate").join(&scenario.name));
    report::write(&out, &summary, &report::timeseries_csv(&scenario, &run))?;
    print!("{}", summary.to_text());
    println!("wrote {}", out.display());
    Ok(summary)
}
