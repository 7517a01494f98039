//! `gridserve bench peer`: gridserve against llama.cpp on the same machine, GGUF and threads,
//! one measurement at a time, printed as one table of ratios with their targets.

mod figures;
mod parse;
mod process;
mod report;
mod servers;
mod tools;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

pub use figures::{Figure, Measured, TARGET_BATCHED_RATIO, TARGET_SINGLE_RATIO};
pub use parse::{parse_batched_bench, parse_llama_bench, BatchedRow, LlamaBenchFigures};
pub use report::{render_markdown, render_table, Machine, PeerReport};

use super::engine::{self, EngineBenchArgs};
use crate::config::Config;
use crate::GatewayError;
use process::find_llama_bin;
use servers::{HttpPlan, HTTP_MAX_TOKENS, HTTP_PROMPT_TOKENS};
use tools::{Tools, DECODE_TOKENS, PREFILL_TOKENS};

/// Threads come from the global `--threads` (default `engine.threads`, 0 = one per core) and
/// are given to both engines; the model is the configured one (or `--model`).
#[derive(Args, Debug, Clone)]
pub struct PeerBenchArgs {
    /// Directory holding llama-bench, llama-batched-bench and llama-server (default: the one
    /// scripts/install-llama-cpp.sh prints, building them the first time, ≈ 11 min).
    #[arg(long)]
    pub llama_bin: Option<PathBuf>,
    /// Repetitions: llama-bench's `-r` (it reports the mean) and gridserve's prefill runs (the
    /// median).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Batch sizes of the aggregate-decode figures.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
    pub batch_sizes: Vec<usize>,
    /// Concurrent clients of the HTTP figures.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub clients: Vec<usize>,
    /// HTTP requests each client sends, one after the other.
    #[arg(long, default_value_t = 2)]
    pub requests_per_client: usize,
    /// Skip prefill and batch-1 decode (llama-bench).
    #[arg(long)]
    pub skip_single: bool,
    /// Skip aggregate decode (llama-batched-bench).
    #[arg(long)]
    pub skip_batched: bool,
    /// Skip the HTTP figures (llama-server and gridserve serve).
    #[arg(long)]
    pub skip_http: bool,
    /// Where peer.json, peer.md, the tools' raw output and the servers' logs go.
    #[arg(long, default_value = "bench-results/peer")]
    pub out: PathBuf,
}

/// Runs every part that is not skipped, strictly one after the other (two loads on the same
/// cores would slow both), prints the report and writes it to `--out`.
pub fn run(
    config_path: &Path,
    config: &Config,
    args: &PeerBenchArgs,
) -> Result<PeerReport, GatewayError> {
    validate(args)?;
    let started = Instant::now();
    let mut machine = Machine::probe(config.engine.threads);
    let model = absolute(&config.model.path)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| GatewayError::Bench(format!("creating {}: {e}", args.out.display())))?;
    let llama_bin = find_llama_bin(args.llama_bin.as_deref())?;
    let (measured, peer_commands) = measure(config_path, config, args, &llama_bin, &model)?;
    machine.load_avg_end = report::load_avg();
    let report = PeerReport {
        command: invocation(),
        machine,
        model: model.display().to_string(),
        llama_bin: llama_bin.display().to_string(),
        peer_commands,
        figures: figures::figures(&measured, &args.batch_sizes),
        notes: notes(&measured),
        wall_s: started.elapsed().as_secs_f64(),
        measured,
    };
    report::write(&args.out, &report)?;
    println!("{}", render_markdown(&report));
    println!("wrote {}/peer.json and peer.md", args.out.display());
    Ok(report)
}

/// The measurements, in the table's order, and the llama.cpp command lines run.
fn measure(
    config_path: &Path,
    config: &Config,
    args: &PeerBenchArgs,
    llama_bin: &Path,
    model: &Path,
) -> Result<(Measured, Vec<String>), GatewayError> {
    let threads = config.engine.threads;
    let tools = Tools {
        bin: llama_bin,
        model,
        threads,
        out: &args.out,
    };
    let mut commands = Vec::new();
    let mut measured = Measured::default();
    if !args.skip_single {
        let bench_args = tools.llama_bench_args(args.reps);
        let json = tools.run("llama-bench", &bench_args, &mut commands)?;
        measured.llama_bench = Some(parse_llama_bench(&json)?);
    }
    if !(args.skip_single && args.skip_batched) {
        tracing::info!("peer: gridserve bench engine");
        measured.engine = Some(engine::measure(config, &engine_args(args))?);
    }
    if !args.skip_batched {
        let batched_args = tools.batched_bench_args(&args.batch_sizes);
        let jsonl = tools.run("llama-batched-bench", &batched_args, &mut commands)?;
        measured.batched = Some(parse_batched_bench(&jsonl)?);
    }
    if !args.skip_http {
        let pair = servers::run_pair(&HttpPlan {
            llama_bin: llama_bin.to_path_buf(),
            config: absolute(config_path)?,
            model: model.to_path_buf(),
            threads,
            clients: args.clients.clone(),
            requests_per_client: args.requests_per_client,
            out: args.out.clone(),
        })?;
        commands.push(pair.peer_command);
        measured.http_peer = Some(pair.peer);
        measured.http_gridserve = Some(pair.gridserve);
    }
    Ok((measured, commands))
}

fn validate(args: &PeerBenchArgs) -> Result<(), GatewayError> {
    let bad = |message: &str| {
        Err(GatewayError::InvalidRequest {
            param: "bench peer",
            message: message.into(),
        })
    };
    if args.reps == 0 || args.requests_per_client == 0 {
        return bad("need --reps >= 1 and --requests-per-client >= 1");
    }
    if !args.skip_batched && (args.batch_sizes.is_empty() || args.batch_sizes.contains(&0)) {
        return bad("need --batch-sizes of at least 1 each (or --skip-batched)");
    }
    if !args.skip_http && (args.clients.is_empty() || args.clients.contains(&0)) {
        return bad("need --clients of at least 1 each (or --skip-http)");
    }
    Ok(())
}

/// The engine bench covers batch 1 (unless skipped) and the batched figures' sizes in one load.
fn engine_args(args: &PeerBenchArgs) -> EngineBenchArgs {
    let mut batch_sizes = Vec::new();
    if !args.skip_single {
        batch_sizes.push(1);
    }
    if !args.skip_batched {
        batch_sizes.extend(args.batch_sizes.iter().filter(|&&b| b != 1));
    }
    EngineBenchArgs {
        batch_sizes,
        prompt_tokens: PREFILL_TOKENS,
        decode_tokens: DECODE_TOKENS,
        repeats: args.reps,
        profile: false,
        json: None,
    }
}

/// What a reader needs to compare the figures fairly.
fn notes(m: &Measured) -> Vec<String> {
    let mut notes = Vec::new();
    if m.llama_bench.is_some() {
        notes.push(format!(
            "Batch-1 decode: llama-bench tg{DECODE_TOKENS} starts from an empty context, \
             gridserve's follows a {PREFILL_TOKENS}-token prompt. Prefill: llama-bench gives \
             the mean of its repetitions, gridserve the median."
        ));
    }
    if let (Some(peer), Some(ours)) = (&m.http_peer, &m.http_gridserve) {
        let tokens = |n: Option<usize>| n.map_or_else(|| "?".into(), |n| n.to_string());
        notes.push(format!(
            "HTTP: both servers got the same prompts ({} sentence copies, calibrated on \
             llama-server for ~{HTTP_PROMPT_TOKENS} tokens; counted as {} tokens by llama.cpp, \
             {} by gridserve), {HTTP_MAX_TOKENS} tokens out, greedy, ignore_eos, streaming; \
             {} request(s) per client.",
            peer.prompt_reps,
            tokens(peer.prompt_tokens),
            tokens(ours.prompt_tokens),
            peer.requests_per_client
        ));
    }
    notes
}

/// The file's full path (children may run elsewhere; the report names the real file).
fn absolute(path: &Path) -> Result<PathBuf, GatewayError> {
    std::fs::canonicalize(path).map_err(|e| GatewayError::Bench(format!("{}: {e}", path.display())))
}

/// This process's command line, arguments with spaces quoted.
fn invocation() -> String {
    std::env::args()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PeerBenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            peer: PeerBenchArgs,
        }
        Cli::parse_from(["peer"]).peer
    }

    #[test]
    fn defaults_cover_the_issue_table() {
        let a = args();
        assert_eq!((a.reps, a.requests_per_client), (3, 2));
        assert_eq!(a.batch_sizes, [4, 8, 16]);
        assert_eq!(a.clients, [1, 4, 8, 16]);
        assert_eq!(a.out, Path::new("bench-results/peer"));
        assert!(validate(&a).is_ok());
        assert_eq!(engine_args(&a).batch_sizes, [1, 4, 8, 16]);
    }

    #[test]
    fn skips_shape_the_engine_run_and_the_checks() {
        let mut a = args();
        a.skip_single = true;
        a.batch_sizes = vec![1, 8];
        assert_eq!(engine_args(&a).batch_sizes, [8]);
        a.clients = vec![0];
        assert!(validate(&a).is_err());
        a.skip_http = true;
        assert!(validate(&a).is_ok());
        a.reps = 0;
        assert!(validate(&a).is_err());
    }
}
