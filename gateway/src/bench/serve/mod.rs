//! `gridserve bench serve`: open-loop load against any OpenAI-compatible server with
//! `vllm bench serve`'s options and figures, plus energy (tokens per joule), priority tiers and
//! envelope scenarios with compliance; a console summary, a JSON result and plots.

pub mod args;
mod charts;
pub mod client;
pub mod dataset;
pub mod energy;
pub mod envelopes;
mod plots;
pub mod probe;
pub mod prom;
pub mod result;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod sweep;

use std::path::PathBuf;

pub use args::BenchServeArgs;
pub use result::RunResult;
pub use run::RunContext;
pub use sweep::SweepArgs;

use crate::GatewayError;

/// Runs the benchmark, prints the summary and, with `--save-result`, writes the JSON result and
/// the plots; returns the result and the files written.
pub async fn run_cli(
    args: &BenchServeArgs,
    ctx: &RunContext,
) -> Result<(RunResult, Vec<PathBuf>), GatewayError> {
    let result = run::run(args, ctx).await?;
    print!("{}", result::render(&result));
    let files = if args.save_result {
        save(args, &result)?
    } else {
        Vec::new()
    };
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok((result, files))
}

/// Writes the JSON result and its plots into `--result-dir`.
pub fn save(args: &BenchServeArgs, r: &RunResult) -> Result<Vec<PathBuf>, GatewayError> {
    let path = run::result_path(args, r);
    let io = |e: std::io::Error| GatewayError::Bench(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(&result::to_json(r))
        .map_err(|e| GatewayError::Bench(e.to_string()))?;
    std::fs::write(&path, text).map_err(io)?;
    let stem = path.with_extension("");
    let mut files = vec![path.clone()];
    files.extend(charts::write(&stem, r)?);
    Ok(files)
}
