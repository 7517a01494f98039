//! Runs one `bench serve` load: checks the server with one request, then sends every request at
//! its arrival time (within `--max-concurrency`), while the power feed samples and the envelope
//! scenario (if any) posts its caps; then derives the metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Semaphore};

use super::super::http::{auth_headers, base_url, first_model};
use super::args::{BenchServeArgs, EnergySourceArg};
use super::client::{self, Target};
use super::dataset::{self, SampleRequest};
use super::energy::{self, EnergyInputs};
use super::envelopes::{self, EnvelopeScenario, GridClient};
use super::probe::{PowerFeed, Probe};
use super::prom;
use super::result::RunResult;
use super::schedule;
use super::stats::{self, Metric, RequestOutcome};
use crate::config::PowerConfig;
use crate::engine::Priority;
use crate::GatewayError;

/// What the command line adds to the options: the configured model (the default tokenizer) and
/// the power settings for a local sensor.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub default_tokenizer: PathBuf,
    pub local_power: PowerConfig,
}

/// The validated run plan.
struct Plan {
    requests: Vec<SampleRequest>,
    tiers: Vec<Option<Priority>>,
    arrivals_s: Vec<f64>,
    metrics: Vec<Metric>,
    percentiles: Vec<f64>,
    goodput: Vec<(Metric, f64)>,
    scenario: Option<EnvelopeScenario>,
    tokenizer: Option<String>,
}

fn plan(args: &BenchServeArgs, ctx: &RunContext) -> Result<Plan, GatewayError> {
    if args.num_prompts == 0 || args.max_concurrency == Some(0) || args.sample_interval_ms == 0 {
        return Err(GatewayError::InvalidRequest {
            param: "num-prompts",
            message: "need --num-prompts >= 1, --max-concurrency >= 1, --sample-interval-ms >= 1"
                .into(),
        });
    }
    if args.envelope_scenario.is_some() && args.energy_source == EnergySourceArg::Local {
        return Err(GatewayError::InvalidRequest {
            param: "energy-source",
            message: "--envelope-scenario scores the power gridserve caps, read from its grid \
                      status; it cannot be combined with --energy-source local"
                .into(),
        });
    }
    let metrics = stats::parse_metrics(&args.percentile_metrics)?;
    let percentiles = stats::parse_percentiles(&args.metric_percentiles)?;
    let goodput = stats::parse_goodput(&args.goodput)?;
    let scenario = args
        .envelope_scenario
        .as_deref()
        .map(EnvelopeScenario::load)
        .transpose()?;
    let tok_path = args
        .tokenizer
        .clone()
        .unwrap_or(ctx.default_tokenizer.clone());
    let tokenizer = if dataset::needs_tokenizer(args.dataset_name) {
        Some(dataset::load_tokenizer(&tok_path)?)
    } else {
        None
    };
    let requests = dataset::sample(args, tokenizer.as_ref())?;
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let tiers = match &args.priority_mix {
        Some(mix) => {
            let mix = schedule::parse_priority_mix(mix)?;
            schedule::assign_tiers(requests.len(), &mix, &mut rng)
                .into_iter()
                .map(Some)
                .collect()
        }
        None => requests.iter().map(|r| r.tier).collect(),
    };
    let arrivals_s = match requests
        .iter()
        .map(|r| r.arrival_s)
        .collect::<Option<Vec<f64>>>()
    {
        Some(at) => at,
        None => {
            schedule::arrival_offsets(requests.len(), args.request_rate, args.burstiness, &mut rng)?
        }
    };
    Ok(Plan {
        requests,
        tiers,
        arrivals_s,
        metrics,
        percentiles,
        goodput,
        scenario,
        tokenizer: tokenizer.map(|_| tok_path.display().to_string()),
    })
}

fn http_client(args: &BenchServeArgs) -> Result<reqwest::Client, GatewayError> {
    reqwest::Client::builder()
        .default_headers(auth_headers(args.api_key.as_deref())?)
        // A fresh connection per request: llama-server closes some reused keep-alive
        // connections mid-request, which would count as the server's failures.
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(args.request_timeout_s))
        .build()
        .map_err(|e| GatewayError::Bench(format!("http client: {e}")))
}

async fn scrape_counter(client: &reqwest::Client, url: &str) -> Option<prom::EnergyReading> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    prom::energy_reading(&resp.text().await.ok()?)
}

async fn is_gridserve(client: &reqwest::Client, base: &str) -> bool {
    let Ok(resp) = client.get(format!("{base}/v1/grid/status")).send().await else {
        return false;
    };
    let body: Option<serde_json::Value> = resp.json().await.ok();
    body.is_some_and(|v| v["object"] == "grid.status")
}

/// The power feed and what the report should call it.
async fn power_feed(
    args: &BenchServeArgs,
    ctx: &RunContext,
    client: &reqwest::Client,
    base: &str,
    metrics_url: &str,
) -> (PowerFeed, Option<(&'static str, bool)>, Option<String>) {
    let local = || {
        let backend = crate::power::detect(&ctx.local_power).ok()?;
        let source = backend.sensor.source();
        Some((backend.sensor, source.as_str(), source.is_measured()))
    };
    if args.energy_source == EnergySourceArg::Local {
        if let Some((sensor, name, measured)) = local() {
            return (
                PowerFeed::Local(sensor),
                Some((name, measured)),
                Some(format!("local:{name}")),
            );
        }
    }
    let url = format!("{base}/v1/grid/status");
    if is_gridserve(client, base).await {
        let feed = PowerFeed::GridStatus {
            client: client.clone(),
            url: url.clone(),
        };
        return (feed, None, Some(format!("{url} (1 s average)")));
    }
    if scrape_counter(client, metrics_url)
        .await
        .is_some_and(|r| r.power_watts.is_some())
    {
        let feed = PowerFeed::Prometheus {
            client: client.clone(),
            url: metrics_url.to_string(),
        };
        return (feed, None, Some(metrics_url.to_string()));
    }
    if args.energy_source == EnergySourceArg::Auto {
        if let Some((sensor, name, true)) = local() {
            return (
                PowerFeed::Local(sensor),
                Some((name, true)),
                Some(format!("local:{name}")),
            );
        }
    }
    (PowerFeed::None, None, None)
}

/// The server, reached and checked: where requests go and the grid API beside it.
struct Connected {
    client: reqwest::Client,
    base: String,
    target: Target,
    grid: GridClient,
}

/// Finds the model, checks the grid API when a scenario needs it, and sends one test request
/// (as vLLM does) so a wrong URL, model or key fails before the run, not as 1000 failures.
async fn connect(args: &BenchServeArgs, plan: &Plan) -> Result<Connected, GatewayError> {
    let client = http_client(args)?;
    let base = base_url(&args.base_url);
    let model = match &args.model {
        Some(m) => m.clone(),
        None => first_model(&client, &base).await?,
    };
    let target = Target {
        client: client.clone(),
        url: format!("{base}{}", args.endpoint.path()),
        endpoint: args.endpoint,
        model,
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
    };
    let grid = GridClient {
        client: client.clone(),
        base: base.clone(),
        operator_token: args.operator_token.clone(),
    };
    if plan.scenario.is_some() {
        grid.check_available().await?;
    }
    eprintln!("Starting initial single prompt test run...");
    let test = client::send(&target, &plan.requests[0], plan.tiers[0], 0.0).await;
    if !test.success {
        return Err(GatewayError::Bench(format!(
            "initial test run failed - check the benchmark options. Error: {}",
            test.error.unwrap_or_default()
        )));
    }
    eprintln!("Initial test run completed. Starting main benchmark run...");
    Ok(Connected {
        client,
        base,
        target,
        grid,
    })
}

/// What the timed part of the run produced.
struct Measured {
    outcomes: Vec<RequestOutcome>,
    duration_s: f64,
    posted: Vec<envelopes::Posted>,
    /// Also holds the power feed's samples (`energy.samples`).
    energy: EnergyInputs,
}

/// The timed run: the load, the power feed and the scenario's posts side by side; Ctrl-C stops
/// it (the scenario's last envelope is still cancelled).
async fn measure(
    args: &BenchServeArgs,
    ctx: &RunContext,
    plan: &Plan,
    c: &Connected,
) -> Result<Measured, GatewayError> {
    let metrics_url = args
        .energy_metrics_url
        .clone()
        .unwrap_or(format!("{}/metrics", c.base));
    let (feed, local_source, power_source) =
        power_feed(args, ctx, &c.client, &c.base, &metrics_url).await;
    let counter_before = scrape_counter(&c.client, &metrics_url).await;
    let t0 = Instant::now();
    let probe = Probe::spawn(feed, Duration::from_millis(args.sample_interval_ms), t0);
    let (done_tx, done_rx) = watch::channel(false);
    let driver = plan.scenario.clone().map(|scenario| {
        let grid = c.grid.clone();
        tokio::spawn(async move { envelopes::drive(&grid, &scenario, t0, done_rx).await })
    });
    let outcomes = tokio::select! {
        outcomes = send_all(args, plan, &c.target, t0) => Ok(outcomes),
        _ = tokio::signal::ctrl_c() => Err(GatewayError::Bench("interrupted".into())),
    };
    let duration_s = t0.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    let posted = match driver {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let samples = probe.stop().await;
    let outcomes = outcomes?;
    let energy = EnergyInputs {
        samples,
        local_source,
        counter_before,
        counter_after: scrape_counter(&c.client, &metrics_url).await,
        power_source,
    };
    Ok(Measured {
        outcomes,
        duration_s,
        posted,
        energy,
    })
}

/// Runs the benchmark and returns everything it measured.
pub async fn run(args: &BenchServeArgs, ctx: &RunContext) -> Result<RunResult, GatewayError> {
    let plan = plan(args, ctx)?;
    let connected = connect(args, &plan).await?;
    let m = measure(args, ctx, &plan, &connected).await?;
    let summary = stats::summarize(&m.outcomes, m.duration_s, &plan.percentiles, &plan.goodput);
    let energy = energy::report(
        args.energy_source,
        &m.outcomes,
        summary.total_output_tokens,
        m.duration_s,
        &m.energy,
    );
    let compliance = plan
        .scenario
        .as_ref()
        .map(|s| envelopes::compliance(s, &m.posted, &m.energy.samples, &m.outcomes, m.duration_s));
    Ok(RunResult {
        label: args.label.clone().unwrap_or("gridserve-bench".into()),
        base_url: connected.base,
        endpoint: args.endpoint.path(),
        model: connected.target.model,
        tokenizer: plan.tokenizer.clone(),
        dataset: format!("{:?}", args.dataset_name).to_lowercase(),
        num_prompts: plan.requests.len(),
        request_rate: args.request_rate,
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
        duration_s: m.duration_s,
        tiers: tier_summaries(&m.outcomes, m.duration_s, &plan),
        summary,
        metrics: plan.metrics,
        percentiles: plan.percentiles,
        energy,
        compliance,
        outcomes: m.outcomes,
        samples: m.energy.samples,
        date: utc_stamp(),
    })
}

fn tier_summaries(
    outcomes: &[RequestOutcome],
    duration_s: f64,
    plan: &Plan,
) -> Vec<(String, stats::Summary)> {
    [
        Priority::Interactive,
        Priority::Standard,
        Priority::Flexible,
    ]
    .into_iter()
    .filter_map(|tier| {
        let mine: Vec<RequestOutcome> = outcomes
            .iter()
            .filter(|o| o.tier == Some(tier.as_str()))
            .cloned()
            .collect();
        (!mine.is_empty()).then(|| {
            (
                tier.as_str().to_string(),
                stats::summarize(&mine, duration_s, &plan.percentiles, &plan.goodput),
            )
        })
    })
    .collect()
}

/// Sends each request at its arrival time; a request waits for a concurrency slot after it
/// arrives (as in vLLM), and its clock starts when it is sent.
async fn send_all(
    args: &BenchServeArgs,
    plan: &Plan,
    target: &Target,
    t0: Instant,
) -> Vec<RequestOutcome> {
    let slots = Arc::new(Semaphore::new(
        args.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let bar = progress_bar(plan.requests.len() as u64, args.disable_tqdm);
    let mut tasks = Vec::with_capacity(plan.requests.len());
    for (i, req) in plan.requests.iter().enumerate() {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(plan.arrivals_s[i])).into()).await;
        let (target, req, tier) = (target.clone(), req.clone(), plan.tiers[i]);
        let (slots, bar) = (slots.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let outcome = client::send(&target, &req, tier, t0.elapsed().as_secs_f64()).await;
            bar.inc(1);
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|e| RequestOutcome {
            error: Some(format!("the request's task failed: {e}")),
            ..Default::default()
        }));
    }
    bar.finish_and_clear();
    outcomes
}

fn progress_bar(len: u64, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Now as `YYYYmmdd-HHMMSS` (UTC).
fn utc_stamp() -> String {
    chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string()
}

/// The result file's name: `--result-filename`, else vLLM's pattern.
pub fn result_filename(args: &BenchServeArgs, r: &RunResult) -> String {
    if let Some(name) = &args.result_filename {
        return name.clone();
    }
    let rate = if r.request_rate.is_finite() {
        format!("{}", r.request_rate)
    } else {
        "inf".into()
    };
    let conc = r
        .max_concurrency
        .map_or("none".to_string(), |c| c.to_string());
    let model: String = r
        .model
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}-{rate}qps-concurrency{conc}-{model}-{}.json",
        r.label, r.date
    )
}

/// Where the result and plots go.
pub fn result_path(args: &BenchServeArgs, r: &RunResult) -> PathBuf {
    Path::new(&args.result_dir).join(result_filename(args, r))
}
