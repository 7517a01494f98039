//! The `gridserve` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridserve::bench::engine::EngineBenchArgs;
use gridserve::bench::http::HttpBenchArgs;
use gridserve::bench::peer::PeerBenchArgs;
use gridserve::config::Config;

mod generate;

#[derive(Parser)]
#[command(
    name = "gridserve",
    version,
    about = "A power-aware LLM inference server"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "GRIDSERVE_CONFIG",
        default_value = "config/default.toml"
    )]
    config: PathBuf,
    /// Model file, overriding `model.path` in the config.
    #[arg(long, global = true, env = "GRIDSERVE_MODEL")]
    model: Option<PathBuf>,
    /// Chat template, overriding `model.chat_template`: a Jinja file, or `model` for the one
    /// the model carries.
    #[arg(long, global = true, env = "GRIDSERVE_CHAT_TEMPLATE")]
    chat_template: Option<PathBuf>,
    /// Where the model runs, overriding `engine.device`: cpu, cuda:N[,M..] or auto.
    #[arg(long, global = true, env = "GRIDSERVE_DEVICE")]
    device: Option<gridserve_models::device::DeviceSpec>,
    /// Model threads, overriding `engine.threads` (0 = one per core).
    #[arg(long, global = true, env = "GRIDSERVE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible HTTP API on the configured model.
    Serve(ServeArgs),
    /// Generate a completion for one prompt and print it.
    Generate(generate::GenerateArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The GPU digital twin.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// Replay a scenario against the GPU twin in virtual time (scheduler, no model).
    Simulate(gridserve::sim::SimulateArgs),
    /// The grid-response proof: the grid-*.toml scenarios on H100 and H200 twins, uncapped,
    /// with power limit = cap and with gridserve's controller; prints the table with targets.
    SimulateProof(gridserve::sim::proof::ProofArgs),
}

#[derive(Subcommand)]
enum TwinCommand {
    /// Compare the twin with the ML.ENERGY measurements; exits non-zero if a row fails.
    Validate(gridserve::twin::ValidateArgs),
    /// Fit a new GPU profile to rows measured on a real GPU (scripts/gpu-acceptance.sh).
    Fit(gridserve::twin::fit::FitArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (overrides `server.host`).
    #[arg(long, env = "GRIDSERVE_HOST")]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one (overrides `server.port`).
    #[arg(long, env = "GRIDSERVE_PORT")]
    port: Option<u16>,
    /// Power sensor (overrides `power.sensor`): auto, nvml, rapl, estimate, or the GPU
    /// digital twin `twin:GPU[:MODEL]`, e.g. `twin:h100` or `twin:h200:llama-3.1-8b`.
    #[arg(long, env = "GRIDSERVE_POWER")]
    power: Option<gridserve::config::SensorChoice>,
    /// Directory of the grid store (overrides `grid.data_dir`).
    #[arg(long, env = "GRIDSERVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Prefill and batched-decode throughput of the engine on the configured model.
    Engine(EngineBenchArgs),
    /// Streaming-client load against a running server: tok/s, TTFT and inter-token latency.
    Http(HttpBenchArgs),
    /// Open-loop load against any OpenAI-compatible server, with `vllm bench serve`'s options
    /// and figures plus energy (tokens per joule), priority tiers and envelope scenarios.
    Serve(Box<gridserve::bench::serve::BenchServeArgs>),
    /// `bench serve` once per value of a parameter (request rate, max concurrency, or a power
    /// cap posted to gridserve), then the Pareto front of tokens per joule vs p99 latency.
    Sweep(Box<gridserve::bench::serve::SweepArgs>),
    /// gridserve vs llama.cpp on this machine, one after the other: prefill, batch-1 and
    /// batched decode, HTTP serving; prints one table of ratios with their targets.
    Peer(PeerBenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config =
        Config::load(&cli.config).with_context(|| format!("loading {}", cli.config.display()))?;
    if let Some(model) = cli.model {
        config.model.path = model;
    }
    if let Some(template) = cli.chat_template {
        config.model.chat_template =
            (template != std::path::Path::new("model")).then_some(template);
    }
    if let Some(device) = cli.device {
        config.engine.device = device;
    }
    if let Some(threads) = cli.threads {
        config.engine.threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
    }
    // The step's kernels run on candle's barrier pool (models/src/pool.rs), which sizes
    // itself from this variable when first used; set it here, before any thread exists, so
    // `engine.threads` / `--threads` bound the model's threads on both pools.
    std::env::set_var("CANDLE_NUM_THREADS", config.engine.threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.engine.threads)
        .build_global()
        .context("starting the model thread pool")?;
    match cli.command {
        Command::Serve(args) => serve(config, args),
        Command::Generate(args) => generate::run(&config, &args),
        Command::Bench(BenchCommand::Http(args)) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(gridserve::bench::http::run(&args))?;
            Ok(())
        }
        Command::Bench(BenchCommand::Serve(args)) => {
            let ctx = bench_context(&config);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(gridserve::bench::serve::run_cli(&args, &ctx))?;
            Ok(())
        }
        Command::Bench(BenchCommand::Sweep(args)) => {
            let ctx = bench_context(&config);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(gridserve::bench::serve::sweep::run_cli(&args, &ctx))?;
            Ok(())
        }
        Command::Bench(BenchCommand::Engine(args)) => {
            gridserve::bench::engine::run(&config, &args).map_err(Into::into)
        }
        Command::Bench(BenchCommand::Peer(args)) => {
            gridserve::bench::peer::run(&cli.config, &config, &args)?;
            Ok(())
        }
        Command::Twin(TwinCommand::Validate(args)) => {
            let passed = gridserve::twin::validate::run_cli(&cli.config, &args)?;
            anyhow::ensure!(passed, "twin validation: rows outside tolerance");
            Ok(())
        }
        Command::Twin(TwinCommand::Fit(args)) => {
            gridserve::twin::fit::run_cli(&cli.config, &args)?;
            Ok(())
        }
        Command::Simulate(args) => {
            gridserve::sim::run_cli(&cli.config, &args)?;
            Ok(())
        }
        Command::SimulateProof(args) => {
            let passed = gridserve::sim::proof::run_cli(&cli.config, &args)?;
            anyhow::ensure!(
                passed || !args.strict,
                "simulate-proof: adaptive figures miss their targets"
            );
            Ok(())
        }
    }
}

fn serve(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    config.server.host = args.host.unwrap_or(config.server.host);
    config.server.port = args.port.unwrap_or(config.server.port);
    config.power.sensor = args.power.unwrap_or(config.power.sensor);
    config.grid.data_dir = args.data_dir.unwrap_or(config.grid.data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = gridserve::server::bind(&config).await?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // Tests and scripts read this line to find the port.
        println!("listening on http://{addr}");
        tracing::info!(%addr, "listening");
        let opts = gridserve::server::ServeOptions::from_config(&config);
        let load = move || gridserve::server::load_model(&config);
        gridserve::server::run(listener, opts, load, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// What `bench serve` and `bench sweep` take from the config: the configured model as the
/// default tokenizer, and the power settings for a local sensor (the whole system's CPU, not
/// this process's: the server under test is another process).
fn bench_context(config: &Config) -> gridserve::bench::serve::RunContext {
    let mut local_power = config.power.clone();
    local_power.cpu_estimate_scope = gridserve::power::CpuScope::System;
    if matches!(
        local_power.sensor,
        gridserve::config::SensorChoice::Twin { .. }
    ) {
        local_power.sensor = gridserve::config::SensorChoice::Auto;
    }
    gridserve::bench::serve::RunContext {
        default_tokenizer: config.model.path.clone(),
        local_power,
    }
}
