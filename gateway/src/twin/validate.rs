//! `gridserve twin validate`: runs the twin through the ML.ENERGY v3 steady-state rows
//! (twin.md) and reports measured vs twin power, throughput and median ITL per row.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cluster::TwinCluster;
use super::profile::GpuProfile;
use super::shape::ModelShape;
use super::workload::SteadyWorkload;
use crate::GatewayError;

/// One published row: vLLM 0.11.1, lm-arena-chat, default clocks and power limit.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Reference {
    pub model: &'static str,
    pub tensor_parallel: u32,
    pub max_num_seqs: u32,
    /// The batch vLLM actually ran (= max_num_seqs except where the run reports an average).
    pub running_seqs: u32,
    pub power_watts_per_gpu: f64,
    pub output_tokens_per_second: f64,
    pub median_itl_seconds: f64,
}

const fn row(
    model: &'static str,
    tp: u32,
    seqs: u32,
    running: u32,
    watts: f64,
    tps: f64,
    itl_ms: f64,
) -> Reference {
    Reference {
        model,
        tensor_parallel: tp,
        max_num_seqs: seqs,
        running_seqs: running,
        power_watts_per_gpu: watts,
        output_tokens_per_second: tps,
        median_itl_seconds: itl_ms / 1000.0,
    }
}

/// ML.ENERGY Benchmark v3 rows from twin.md (H100 SXM).
pub const ML_ENERGY_H100: [Reference; 11] = [
    row("llama-3.1-8b", 1, 8, 8, 486.0, 1070.0, 7.3),
    row("llama-3.1-8b", 1, 16, 16, 513.0, 1954.0, 7.9),
    row("llama-3.1-8b", 1, 32, 32, 560.0, 3391.0, 8.9),
    row("llama-3.1-8b", 1, 64, 64, 610.0, 5147.0, 11.5),
    row("llama-3.1-8b", 1, 128, 128, 669.0, 7037.0, 16.5),
    row("llama-3.1-8b", 1, 256, 256, 691.0, 9010.0, 26.1),
    row("llama-3.1-8b", 1, 512, 512, 688.0, 9806.0, 47.4),
    row("llama-3.1-70b", 4, 8, 8, 441.0, 470.0, 16.6),
    row("llama-3.1-70b", 4, 64, 64, 500.0, 2511.0, 22.4),
    row("llama-3.1-70b", 4, 256, 256, 589.0, 4915.0, 39.8),
    row("llama-3.1-70b", 4, 1024, 898, 637.0, 6827.0, 105.6),
];

/// Relative tolerances a row must meet.
pub const POWER_TOLERANCE: f64 = 0.05;
pub const THROUGHPUT_TOLERANCE: f64 = 0.10;
pub const ITL_TOLERANCE: f64 = 0.10;

/// The prompt-length distribution of a workload (lognormal).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PromptMix {
    pub mean_prompt_tokens: f64,
    pub prompt_log_sigma: f64,
}

/// lm-arena-chat as the twin sees it. Mean output 400 tokens is published; the prompt
/// distribution is not, so its mean and spread were fitted together with the GPU constants
/// (`calibrate.rs`, see `config/gpus/h100-sxm.toml`): a lognormal with mean 321 tokens and
/// σ = 1.65 (median ≈ 82 tokens — mostly short chat turns, a long tail of pasted documents).
pub const LM_ARENA_CHAT: PromptMix = PromptMix {
    mean_prompt_tokens: 321.0,
    prompt_log_sigma: 1.648,
};

/// The steady workload of one row. vLLM V1's default `max_num_batched_tokens` of 8192 bounds
/// a step.
pub fn lm_arena_chat(running_seqs: u32, mix: &PromptMix) -> SteadyWorkload {
    SteadyWorkload {
        running_seqs,
        mean_prompt_tokens: mix.mean_prompt_tokens,
        prompt_log_sigma: mix.prompt_log_sigma,
        mean_output_tokens: 400.0,
        max_step_tokens: 8192,
    }
}

/// Steps run before measuring (fills the prefill pipeline, lets the firmware settle) and
/// measured. Enough virtual time (> 20 s per row) that a 1 s power average would be steady.
const WARMUP_STEPS: usize = 500;
const MEASURED_STEPS: usize = 3000;

/// One row's comparison.
#[derive(Clone, Debug, Serialize)]
pub struct RowResult {
    pub reference: Reference,
    pub twin_power_watts_per_gpu: f64,
    pub twin_output_tokens_per_second: f64,
    pub twin_median_itl_seconds: f64,
    /// SM clock at the end of the run (lower than default where the power cap bound).
    pub twin_final_clock_mhz: u32,
    pub power_error: f64,
    pub throughput_error: f64,
    pub itl_error: f64,
    pub pass: bool,
}

/// Runs one ML.ENERGY row (lm-arena-chat) in steady state on a fresh twin at default settings.
pub fn run_row(
    profile: &GpuProfile,
    shape: &ModelShape,
    reference: Reference,
    mix: &PromptMix,
) -> RowResult {
    run_row_with(
        profile,
        shape,
        reference,
        lm_arena_chat(reference.running_seqs, mix),
    )
}

/// Runs one row under `workload` in steady state on a fresh twin at default settings.
pub fn run_row_with(
    profile: &GpuProfile,
    shape: &ModelShape,
    reference: Reference,
    workload: SteadyWorkload,
) -> RowResult {
    let mut twin = TwinCluster::new(
        profile.clone(),
        shape.clone(),
        Some(reference.tensor_parallel),
    );
    let mut steps = workload.steps();
    for step in steps.by_ref().take(WARMUP_STEPS) {
        twin.advance(&step);
    }
    let energy_before_joules = twin.total_energy_joules();
    let mut durations_seconds: Vec<f64> = steps
        .take(MEASURED_STEPS)
        .map(|s| twin.advance(&s).duration_seconds)
        .collect();
    let elapsed_seconds: f64 = durations_seconds.iter().sum();
    let gpus = f64::from(twin.tensor_parallel());
    let power = (twin.total_energy_joules() - energy_before_joules) / elapsed_seconds / gpus;
    // Each step gives every running sequence one output token (a new request's first token
    // comes from its prefill step, which also decodes the others).
    let throughput = f64::from(reference.running_seqs) * MEASURED_STEPS as f64 / elapsed_seconds;
    durations_seconds.sort_by(f64::total_cmp);
    let median_itl = durations_seconds[durations_seconds.len() / 2];
    let rel = |twin: f64, measured: f64| (twin - measured) / measured;
    let power_error = rel(power, reference.power_watts_per_gpu);
    let throughput_error = rel(throughput, reference.output_tokens_per_second);
    let itl_error = rel(median_itl, reference.median_itl_seconds);
    RowResult {
        reference,
        twin_power_watts_per_gpu: power,
        twin_output_tokens_per_second: throughput,
        twin_median_itl_seconds: median_itl,
        twin_final_clock_mhz: twin.gpus()[0].clock_mhz(),
        power_error,
        throughput_error,
        itl_error,
        pass: power_error.abs() <= POWER_TOLERANCE
            && throughput_error.abs() <= THROUGHPUT_TOLERANCE
            && itl_error.abs() <= ITL_TOLERANCE,
    }
}

/// Runs every row on `gpu` (a name under `config_dir/gpus/`), shapes from `config_dir/models/`.
pub fn run_all(config_dir: &Path, gpu: &str) -> Result<Vec<RowResult>, GatewayError> {
    let profile = GpuProfile::load_named(&config_dir.join("gpus"), gpu)?;
    let shapes = load_shapes(config_dir)?;
    Ok(run_rows(&profile, &shapes, &LM_ARENA_CHAT))
}

/// The model shapes the reference rows name, from `config_dir/models/`.
pub fn load_shapes(config_dir: &Path) -> Result<Vec<ModelShape>, GatewayError> {
    let mut shapes: Vec<ModelShape> = Vec::new();
    for reference in ML_ENERGY_H100 {
        if !shapes.iter().any(|s| s.name == reference.model) {
            shapes.push(ModelShape::load_named(
                &config_dir.join("models"),
                reference.model,
            )?);
        }
    }
    Ok(shapes)
}

/// Runs every reference row with already-loaded shapes (`load_shapes`).
pub fn run_rows(profile: &GpuProfile, shapes: &[ModelShape], mix: &PromptMix) -> Vec<RowResult> {
    ML_ENERGY_H100
        .iter()
        .map(|&reference| {
            let shape = shapes
                .iter()
                .find(|s| s.name == reference.model)
                .expect("load_shapes loads every row's model");
            run_row(profile, shape, reference, mix)
        })
        .collect()
}

/// The per-row table, as printed by the CLI and by the validation test on failure.
pub fn format_table(gpu: &str, results: &[RowResult]) -> String {
    format_table_vs(gpu, "ML.ENERGY v3", results)
}

/// The per-row table against measurements from `source`.
pub fn format_table_vs(gpu: &str, source: &str, results: &[RowResult]) -> String {
    let mut out = format!(
        "twin validation on {gpu} vs {source} (tolerances: power ±{:.0} %, throughput and median ITL ±{:.0} %)\n",
        POWER_TOLERANCE * 100.0,
        THROUGHPUT_TOLERANCE * 100.0
    );
    out.push_str("model          TP  seqs  run |  W/GPU meas   twin    err | tok/s meas    twin    err | ITL ms meas  twin    err |  MHz | result\n");
    for r in results {
        let m = &r.reference;
        out.push_str(&format!(
            "{:<14} {:>2} {:>5} {:>4} | {:>10.0} {:>6.1} {:>+5.1}% | {:>10.0} {:>7.0} {:>+5.1}% | {:>11.1} {:>5.1} {:>+5.1}% | {:>4} | {}\n",
            m.model,
            m.tensor_parallel,
            m.max_num_seqs,
            m.running_seqs,
            m.power_watts_per_gpu,
            r.twin_power_watts_per_gpu,
            r.power_error * 100.0,
            m.output_tokens_per_second,
            r.twin_output_tokens_per_second,
            r.throughput_error * 100.0,
            m.median_itl_seconds * 1000.0,
            r.twin_median_itl_seconds * 1000.0,
            r.itl_error * 100.0,
            r.twin_final_clock_mhz,
            if r.pass { "PASS" } else { "FAIL" },
        ));
    }
    let passed = results.iter().filter(|r| r.pass).count();
    out.push_str(&format!(
        "{passed}/{} rows within tolerance\n",
        results.len()
    ));
    out
}

/// Arguments of `gridserve twin validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// GPU profile name under `config/gpus/` (next to the loaded config file).
    #[arg(long, default_value = "h100-sxm")]
    pub gpu: String,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Prints the table (and writes JSON if asked); returns whether every row passed.
pub fn run_cli(config_file: &Path, args: &ValidateArgs) -> Result<bool, GatewayError> {
    let config_dir = config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let results = run_all(config_dir, &args.gpu)?;
    print!("{}", format_table(&args.gpu, &results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results)
            .map_err(|e| GatewayError::Config(format!("encoding results: {e}")))?;
        std::fs::write(path, json)
            .map_err(|e| GatewayError::Config(format!("writing {}: {e}", path.display())))?;
    }
    Ok(results.iter().all(|r| r.pass))
}
