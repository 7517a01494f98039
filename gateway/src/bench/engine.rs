//! `gridserve bench engine`: prefill throughput for one prompt, and aggregate decode
//! throughput at several batch sizes, through the same scheduler and step loop as serving.

use std::time::{Duration, Instant};

use clap::Args;
use gridserve_models::profile::{self, Stage};
use gridserve_models::sampling::SamplingParams;
use gridserve_models::ModelBackend;
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
    /// Also report where each measured step's time goes (matmul by format, output head,
    /// attention, element-wise ops, sampling, scheduling), in ms per step.
    #[arg(long)]
    pub profile: bool,
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
    /// ms per step by stage (with `--profile`).
    pub profile_ms_per_step: Option<Vec<(String, f64)>>,
}

#[derive(Debug, Serialize)]
pub struct EngineBenchReport {
    pub model: String,
    pub threads: usize,
    pub load_s: f64,
    pub prompt_tokens: usize,
    pub prefill_tokens_per_s: f64,
    /// ms per prefill step by stage (with `--profile`).
    pub prefill_profile_ms: Option<Vec<(String, f64)>>,
    pub decode: Vec<DecodeResult>,
}

/// Runs the benchmark, prints the report and writes it to `--json` if given.
pub fn run(config: &Config, args: &EngineBenchArgs) -> Result<(), GatewayError> {
    let report = measure(config, args)?;
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| GatewayError::Config(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Loads the model, measures, and returns the report without printing (the model is freed on
/// return, so a caller can run another load on the same cores afterwards).
pub fn measure(config: &Config, args: &EngineBenchArgs) -> Result<EngineBenchReport, GatewayError> {
    if args.prompt_tokens == 0 || args.decode_tokens < 2 || args.repeats == 0 {
        return Err(GatewayError::InvalidRequest {
            param: "bench",
            message: "need --prompt-tokens >= 1, --decode-tokens >= 2, --repeats >= 1".into(),
        });
    }
    let mut served = crate::model::load(&config.model, &config.engine)?;
    let base = bench_prompt(&served.encode_prompt(BENCH_TEXT)?, args.prompt_tokens);
    let backend = served.loaded.backend.as_mut();
    profile::set_enabled(args.profile);
    let mut prefill = Vec::new();
    let mut prefill_profile = StepProfile::default();
    for _ in 0..args.repeats {
        prefill.push(measure_prefill(backend, &base, &mut prefill_profile)?);
    }
    prefill.sort_by(f64::total_cmp);
    let mut decode = Vec::new();
    for &batch in &args.batch_sizes {
        decode.push(measure_decode(backend, &base, batch, args.decode_tokens)?);
    }
    profile::set_enabled(false);
    Ok(EngineBenchReport {
        model: backend.info().model_name.clone(),
        threads: config.engine.threads,
        load_s: served.load_time.as_secs_f64(),
        prompt_tokens: args.prompt_tokens,
        prefill_tokens_per_s: prefill[prefill.len() / 2],
        prefill_profile_ms: args.profile.then(|| prefill_profile.ms_per_step()),
        decode,
    })
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
fn measure_prefill(
    backend: &mut dyn ModelBackend,
    prompt: &[u32],
    step_profile: &mut StepProfile,
) -> Result<f64, GatewayError> {
    let mut sched = Scheduler::new(backend.info());
    sched.add(0, request(prompt.to_vec(), 1), Instant::now())?;
    let budget = StepBudget {
        max_tokens: prompt.len(),
        max_seqs: 1,
    };
    let mut elapsed = Duration::ZERO;
    step_profile.start();
    run_until_idle(backend, &mut sched, budget, |s, _| {
        elapsed += s.duration;
        step_profile.step(s.duration, true);
        Vec::new()
    })?;
    Ok(prompt.len() as f64 / elapsed.as_secs_f64())
}

/// Aggregate decode throughput with `batch` sequences decoding together. Prompts differ per
/// sequence (rotated) so no two rows are identical; only all-decode steps are timed.
fn measure_decode(
    backend: &mut dyn ModelBackend,
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
    let mut step_profile = StepProfile::default();
    step_profile.start();
    run_until_idle(backend, &mut sched, budget, |s, _| {
        let all_decode = s.decode_seqs == batch && s.seqs == batch;
        if all_decode {
            elapsed += s.duration;
            steps += 1;
            decoded += s.decode_seqs;
        }
        step_profile.step(s.duration, all_decode);
        Vec::new()
    })?;
    let profiled = profile::is_enabled().then(|| step_profile.ms_per_step());
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(DecodeResult {
        batch,
        tokens_per_s: decoded as f64 / secs,
        ms_per_step: secs * 1e3 / steps.max(1) as f64,
        steps,
        profile_ms_per_step: profiled,
    })
}

/// Sums the profile counters' growth over the steps that are measured, skipping the others
/// (e.g. the prefill steps before a decode measurement).
#[derive(Default)]
struct StepProfile {
    last: Vec<(Stage, f64)>,
    secs: Vec<f64>,
    step_secs: f64,
    steps: usize,
}

impl StepProfile {
    fn start(&mut self) {
        self.last = profile::snapshot();
        if self.secs.is_empty() {
            self.secs = vec![0.0; self.last.len()];
        }
    }

    fn step(&mut self, duration: Duration, measured: bool) {
        let now = profile::snapshot();
        if measured {
            for ((acc, (_, a)), (_, b)) in self.secs.iter_mut().zip(&now).zip(&self.last) {
                *acc += a - b;
            }
            self.step_secs += duration.as_secs_f64();
            self.steps += 1;
        }
        self.last = now;
    }

    /// ms per step by stage, then what no stage accounts for (copies, allocation, KV writes
    /// outside the timed ops).
    fn ms_per_step(&self) -> Vec<(String, f64)> {
        let per_step = 1e3 / self.steps.max(1) as f64;
        let mut rows: Vec<(String, f64)> = Stage::ALL
            .iter()
            .zip(&self.secs)
            .map(|(s, secs)| (s.name().to_string(), secs * per_step))
            .collect();
        let timed: f64 = self.secs.iter().sum();
        rows.push(("other".into(), (self.step_secs - timed).max(0.0) * per_step));
        rows.push(("step total".into(), self.step_secs * per_step));
        rows
    }
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
    if let Some(prefill) = &r.prefill_profile_ms {
        print_profile(prefill, r);
    }
}

/// One row per stage, one column per measurement, in ms per step.
fn print_profile(prefill: &[(String, f64)], r: &EngineBenchReport) {
    let decode: Vec<&Vec<(String, f64)>> = r
        .decode
        .iter()
        .filter_map(|d| d.profile_ms_per_step.as_ref())
        .collect();
    print!(
        "\nms per step {:>14}",
        format!("prefill {}", r.prompt_tokens)
    );
    for d in &r.decode {
        print!(" {:>10}", format!("decode b{}", d.batch));
    }
    println!();
    for (i, (stage, ms)) in prefill.iter().enumerate() {
        print!("{stage:<14} {ms:>12.2}");
        for d in &decode {
            print!(" {:>10.2}", d[i].1);
        }
        println!();
    }
}
