//! `gridserve bench engine`: prefill throughput for one prompt, and aggregate decode
//! throughput at several batch sizes, through the same scheduler and step loop as serving.

use std::time::{Duration, Instant};

use clap::Args;
use gridserve_models::sampling::SamplingParams;
use gridserve_models::{CpuBackend, ModelBackend};
use serde::Serialize;

use crate::config::Config;
use crate::engine::{run_until_idle, GenerationRequest, Priority, Scheduler, StepBudget};
use crate::GatewayError;

#[derive(Args, Debug, Clone)]
pub struct EngineBenchArgs {
    /// Batch sizes for the decode measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub batch_sizes: Vec<usize>,
    /// Prompt length in tokens (prefill measurement, and each decode sequence's prompt).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated per sequence in the decode measurement.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Prefill repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct DecodeResult {
    pub batch: usize,
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    pub steps: usize,
}

#[derive(Debug, Serialize)]
pub struct EngineBenchReport {
    pub model: String,
    pub threads: usize,
    pub load_s: f64,
    pub prompt_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode: Vec<DecodeResult>,
}

pub fn run(config: &Config, args: &EngineBenchArgs) -> Result<(), GatewayError> {
    if args.prompt_tokens == 0 || args.decode_tokens < 2 || args.repeats == 0 {
        return Err(GatewayError::InvalidRequest {
            param: "bench",
            message: "need --prompt-tokens >= 1, --decode-tokens >= 2, --repeats >= 1".into(),
        });
    }
    let mut served = crate::model::load(&config.model, &config.engine)?;
    let base = bench_prompt(&served.encode_prompt(BENCH_TEXT)?, args.prompt_tokens);
    let backend = &mut served.loaded.backend;
    let mut prefill = Vec::new();
    for _ in 0..args.repeats {
        prefill.push(measure_prefill(backend, &base)?);
    }
    prefill.sort_by(f64::total_cmp);
    let mut decode = Vec::new();
    for &batch in &args.batch_sizes {
        decode.push(measure_decode(backend, &base, batch, args.decode_tokens)?);
    }
    let report = EngineBenchReport {
        model: backend.info().model_name.clone(),
        threads: config.engine.threads,
        load_s: served.load_time.as_secs_f64(),
        prompt_tokens: args.prompt_tokens,
        prefill_tokens_per_s: prefill[prefill.len() / 2],
        decode,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| GatewayError::Config(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

const BENCH_TEXT: &str = "The history of electricity grids begins with small local networks that \
served a few streets each, powered by steam engines and later by water turbines. Over the following \
decades these networks were joined into regional and national systems, which made it possible to \
share reserves, to balance supply against demand across large areas, and to build ever larger power \
stations far away from the cities that used their output.";

/// A prompt of exactly `len` tokens: the text's tokens repeated (BOS kept first).
fn bench_prompt(tokens: &[u32], len: usize) -> Vec<u32> {
    let (first, rest) = tokens.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    let mut out = vec![first];
    out.extend(rest.iter().copied().cycle().take(len.saturating_sub(1)));
    out
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop_token_ids: Vec::new(),
        ignore_eos: true,
        priority: Priority::Standard,
    }
}

/// Tokens per second for one whole-prompt prefill step (including its one sampled token).
fn measure_prefill(backend: &mut CpuBackend, prompt: &[u32]) -> Result<f64, GatewayError> {
    let mut sched = Scheduler::new(backend.info());
    sched.add(0, request(prompt.to_vec(), 1), Instant::now())?;
    let budget = StepBudget {
        max_tokens: prompt.len(),
        max_seqs: 1,
    };
    let mut elapsed = Duration::ZERO;
    run_until_idle(backend, &mut sched, budget, |s, _| {
        elapsed += s.duration;
        Vec::new()
    })?;
    Ok(prompt.len() as f64 / elapsed.as_secs_f64())
}

/// Aggregate decode throughput with `batch` sequences decoding together. Prompts differ per
/// sequence (rotated) so no two rows are identical; only all-decode steps are timed.
fn measure_decode(
    backend: &mut CpuBackend,
    base: &[u32],
    batch: usize,
    tokens: usize,
) -> Result<DecodeResult, GatewayError> {
    let mut sched = Scheduler::new(backend.info());
    for i in 0..batch {
        let mut prompt = base.to_vec();
        prompt[1..].rotate_left(i % (base.len() - 1).max(1));
        sched.add(i as u64, request(prompt, tokens), Instant::now())?;
    }
    let budget = StepBudget {
        max_tokens: batch * base.len(),
        max_seqs: batch,
    };
    let (mut elapsed, mut steps, mut decoded) = (Duration::ZERO, 0usize, 0usize);
    run_until_idle(backend, &mut sched, budget, |s, _| {
        if s.decode_seqs == batch && s.seqs == batch {
            elapsed += s.duration;
            steps += 1;
            decoded += s.decode_seqs;
        }
        Vec::new()
    })?;
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(DecodeResult {
        batch,
        tokens_per_s: decoded as f64 / secs,
        ms_per_step: secs * 1e3 / steps.max(1) as f64,
        steps,
    })
}

fn print_report(r: &EngineBenchReport) {
    println!(
        "model {} | threads {} | load {:.2} s",
        r.model, r.threads, r.load_s
    );
    println!(
        "prefill {} tokens: {:.1} tok/s",
        r.prompt_tokens, r.prefill_tokens_per_s
    );
    println!(
        "{:>6} {:>14} {:>12} {:>6}",
        "batch", "decode tok/s", "ms/step", "steps"
    );
    for d in &r.decode {
        println!(
            "{:>6} {:>14.1} {:>12.2} {:>6}",
            d.batch, d.tokens_per_s, d.ms_per_step, d.steps
        );
    }
}
