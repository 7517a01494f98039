//! The `gridserve` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridserve::bench::engine::EngineBenchArgs;
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
    /// Model threads, overriding `engine.threads` (0 = one per core).
    #[arg(long, global = true, env = "GRIDSERVE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a completion for one prompt and print it.
    Generate(generate::GenerateArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Prefill and batched-decode throughput of the engine on the configured model.
    Engine(EngineBenchArgs),
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
    if let Some(threads) = cli.threads {
        config.engine.threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.engine.threads)
        .build_global()
        .context("starting the model thread pool")?;
    match cli.command {
        Command::Generate(args) => generate::run(&config, &args),
        Command::Bench(BenchCommand::Engine(args)) => {
            gridserve::bench::engine::run(&config, &args).map_err(Into::into)
        }
    }
}
