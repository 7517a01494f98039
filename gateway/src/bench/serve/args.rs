//! The options of `gridserve bench serve`, named and defaulted as in `vllm bench serve`, plus
//! gridserve's energy, envelope-scenario and priority-mix options.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Which OpenAI route the load goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Endpoint {
    #[value(name = "/v1/completions")]
    #[serde(rename = "/v1/completions")]
    Completions,
    #[value(name = "/v1/chat/completions")]
    #[serde(rename = "/v1/chat/completions")]
    ChatCompletions,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::ChatCompletions => "/v1/chat/completions",
        }
    }
}

/// Where the prompts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetName {
    /// Random token ids of `--random-input-len` (± the range ratio), decoded to text.
    Random,
    /// A ShareGPT JSON file (`--dataset-path`): first human turn → prompt, the reply's length →
    /// output length.
    Sharegpt,
    /// JSON lines `{"prompt": …, "output_tokens"?: …}` (`--dataset-path`).
    Custom,
    /// A CSV trace `arrival_seconds,prompt_tokens,output_tokens[,priority]`: arrivals and
    /// lengths from the file (`--request-rate` and `--burstiness` do not apply).
    Trace,
}

/// Where the energy figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergySourceArg {
    /// Per-request `usage.energy_joules` when every successful request carried one; else the
    /// Prometheus energy counter (`--energy-metrics-url`, else the server's `/metrics`); else a
    /// measured local sensor (NVML, RAPL); else none.
    Auto,
    /// The sum of the per-request `usage.energy_joules` (gridserve).
    Usage,
    /// Before/after delta of a Prometheus energy counter: `gridserve_energy_joules_total` or
    /// DCGM's `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ).
    Metrics,
    /// A sensor on this machine, sampled by the benchmark: NVML, else RAPL, else gridserve's CPU
    /// estimate over the whole system (for a server on this machine, e.g. llama.cpp's).
    Local,
    /// The power feed's energy counter over the run (gridserve's `/v1/grid/status` devices,
    /// the Prometheus feed, or the local sensor): a real device's whole energy, idle included;
    /// the twin's GPU step time plus the engine's idle gaps.
    Device,
    /// Report no energy.
    None,
}

#[derive(Args, Debug, Clone)]
pub struct BenchServeArgs {
    /// The server's base URL (a trailing /v1 is accepted).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub base_url: String,
    #[arg(long, value_enum, default_value = "/v1/completions")]
    pub endpoint: Endpoint,
    /// Model name sent in requests (default: the first one the server's /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Tokenizer for the random, sharegpt and trace datasets: a GGUF file (default: the
    /// configured model, `--model` / `model.path`).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Shown in the summary and the result file name (default "gridserve-bench").
    #[arg(long)]
    pub label: Option<String>,

    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    /// Requests per second; `inf` sends them all at once.
    #[arg(long, default_value = "inf")]
    pub request_rate: f64,
    /// 1.0 = Poisson arrivals; otherwise gamma-distributed gaps with this shape (< 1 burstier,
    /// > 1 more uniform).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Most requests in flight at once (default: unlimited).
    #[arg(long)]
    pub max_concurrency: Option<usize>,

    #[arg(long, value_enum, default_value = "random")]
    pub dataset_name: DatasetName,
    /// The file of the sharegpt, custom and trace datasets.
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub random_output_len: usize,
    /// Lengths are drawn uniformly from [len × (1 − r), len × (1 + r)].
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Output length for custom-dataset rows that give none, and for every sharegpt row when set.
    #[arg(long)]
    pub output_len: Option<usize>,
    /// Ask the server to keep generating past end-of-sequence (`ignore_eos`).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sampling temperature (default 0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Which latencies get percentiles: any of ttft, tpot, itl, e2el.
    #[arg(long, default_value = "ttft,tpot,itl,e2el")]
    pub percentile_metrics: String,
    /// Which percentiles, e.g. "50,90,99".
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// Service-level objectives for goodput, e.g. `--goodput ttft:500 tpot:50` (milliseconds;
    /// keys ttft, tpot, e2el). A request is good when it meets all of them.
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    /// Shares of the priority tiers, e.g. `interactive=0.2,standard=0.5,flexible=0.3`; each
    /// request carries its tier as `priority` and metrics are also reported per tier.
    #[arg(long)]
    pub priority_mix: Option<String>,

    /// Energy source (see `--help`).
    #[arg(long, value_enum, default_value = "auto")]
    pub energy_source: EnergySourceArg,
    /// A Prometheus endpoint with an energy counter, e.g. a DCGM exporter's
    /// `http://gpu-node:9400/metrics` (default: the server's own `/metrics`).
    #[arg(long)]
    pub energy_metrics_url: Option<String>,
    /// How often power (and the cap) are sampled during the run, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub sample_interval_ms: u64,
    /// A TOML file of timed envelope steps to post to gridserve's grid API during the run
    /// (see config/envelopes/); compliance is reported per step and tier.
    #[arg(long)]
    pub envelope_scenario: Option<PathBuf>,
    /// Operator token for the grid API (needed by `--envelope-scenario` when the server has
    /// operator tokens configured).
    #[arg(long, env = "GRIDSERVE_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// Sent as `Authorization: Bearer KEY` on the OpenAI routes.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Save the JSON result (and the plots) to `--result-dir`.
    #[arg(long)]
    pub save_result: bool,
    #[arg(long, default_value = "bench-results/serve")]
    pub result_dir: PathBuf,
    /// Default: `<label>-<rate>qps-concurrency<n>-<model>-<YYYYmmdd-HHMMSS>.json`.
    #[arg(long)]
    pub result_filename: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub disable_tqdm: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub request_timeout_s: u64,
}
