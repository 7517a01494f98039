//! `gridserve bench sweep`: `bench serve` once per value of one parameter (request rate, max
//! concurrency, or the power cap posted to gridserve's grid API), then the Pareto front of
//! output tokens per joule against a p99 latency, as a table, a JSON file and a plot.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::args::BenchServeArgs;
use super::envelopes::GridClient;
use super::plots::{self, ParetoPoint};
use super::result::RunResult;
use super::run::{self, RunContext};
use super::stats::Metric;
use crate::GatewayError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepParam {
    RequestRate,
    MaxConcurrency,
    /// A power cap in watts, posted as an envelope to gridserve before each run.
    Cap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LatencyMetric {
    Ttft,
    Tpot,
    Itl,
    E2el,
}

impl LatencyMetric {
    fn metric(self) -> Metric {
        match self {
            LatencyMetric::Ttft => Metric::Ttft,
            LatencyMetric::Tpot => Metric::Tpot,
            LatencyMetric::Itl => Metric::Itl,
            LatencyMetric::E2el => Metric::E2el,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// The parameter to sweep.
    #[arg(long, value_enum)]
    pub param: SweepParam,
    /// Its values, e.g. `1,2,4,8` (for `cap`, watts).
    #[arg(long, value_delimiter = ',', required = true)]
    pub values: Vec<f64>,
    /// The latency on the front's x axis (its p99).
    #[arg(long, value_enum, default_value = "e2el")]
    pub latency_metric: LatencyMetric,
    /// `cap` sweeps: seconds to wait after posting the cap before the load starts.
    #[arg(long, default_value_t = 3.0)]
    pub settle_seconds: f64,
    /// Everything `bench serve` takes, applied to every run.
    #[command(flatten)]
    pub serve: BenchServeArgs,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub value: f64,
    pub completed: usize,
    pub failed: usize,
    pub output_throughput: f64,
    pub p99_latency_ms: f64,
    pub output_tokens_per_joule: Option<f64>,
    /// Over the power feed's device energy counter (see `EnergyReport::device_joules`).
    pub device_output_tokens_per_joule: Option<f64>,
    pub avg_power_watts: Option<f64>,
    pub energy_source: String,
    pub on_front: bool,
}

/// Marks the rows no other row beats on both axes (more tokens/J and less latency, one strictly).
pub fn mark_front(rows: &mut [SweepRow]) {
    let points: Vec<Option<(f64, f64)>> = rows
        .iter()
        .map(|r| r.output_tokens_per_joule.map(|tpj| (tpj, r.p99_latency_ms)))
        .collect();
    for (i, row) in rows.iter_mut().enumerate() {
        row.on_front = points[i].is_some_and(|(tpj, lat)| {
            !points
                .iter()
                .flatten()
                .any(|&(t, l)| t >= tpj && l <= lat && (t > tpj || l < lat))
        });
    }
}

fn row(value: f64, r: &RunResult, metric: Metric) -> SweepRow {
    SweepRow {
        value,
        completed: r.summary.completed,
        failed: r.summary.failed,
        output_throughput: r.summary.output_throughput,
        p99_latency_ms: r.summary.percentile_ms(metric, 99.0).unwrap_or(0.0),
        output_tokens_per_joule: r.energy.output_tokens_per_joule,
        device_output_tokens_per_joule: r.energy.device_output_tokens_per_joule,
        avg_power_watts: r.energy.avg_power_watts,
        energy_source: r.energy.source.clone(),
        on_front: false,
    }
}

/// The serve options for one value.
fn args_for(sweep: &SweepArgs, value: f64) -> Result<BenchServeArgs, GatewayError> {
    let mut a = sweep.serve.clone();
    let bad = |message: String| GatewayError::InvalidRequest {
        param: "values",
        message,
    };
    match sweep.param {
        SweepParam::RequestRate if value > 0.0 => a.request_rate = value,
        SweepParam::MaxConcurrency if value >= 1.0 && value.fract() == 0.0 => {
            a.max_concurrency = Some(value as usize)
        }
        SweepParam::Cap if value.is_finite() && value > 0.0 => {}
        _ => {
            return Err(bad(format!(
                "{value} is not a valid {:?} value",
                sweep.param
            )))
        }
    }
    a.label = Some(format!(
        "{}-{}{}",
        sweep.serve.label.as_deref().unwrap_or("sweep"),
        param_word(sweep.param),
        value
    ));
    Ok(a)
}

fn param_word(p: SweepParam) -> &'static str {
    match p {
        SweepParam::RequestRate => "rate",
        SweepParam::MaxConcurrency => "concurrency",
        SweepParam::Cap => "cap",
    }
}

/// Runs the sweep, prints the table and writes `sweep-<param>.json` and the Pareto plot into
/// `--result-dir` (each run's own result too with `--save-result`).
pub async fn run_cli(sweep: &SweepArgs, ctx: &RunContext) -> Result<Vec<SweepRow>, GatewayError> {
    let all: Vec<BenchServeArgs> = sweep
        .values
        .iter()
        .map(|&v| args_for(sweep, v))
        .collect::<Result<_, _>>()?;
    let metric = sweep.latency_metric.metric();
    let mut rows = Vec::new();
    for (&value, args) in sweep.values.iter().zip(&all) {
        eprintln!("sweep: {} = {value}", param_word(sweep.param));
        let cap = if sweep.param == SweepParam::Cap {
            Some(post_cap(args, value, sweep.settle_seconds).await?)
        } else {
            None
        };
        let result = run::run(args, ctx).await;
        if let Some((grid, id)) = cap {
            if let Err(e) = grid.cancel(&id).await {
                tracing::warn!("sweep: cancelling the cap envelope {id}: {e}");
            }
        }
        let result = result?;
        print!("{}", super::result::render(&result));
        if args.save_result {
            super::save(args, &result)?;
        }
        rows.push(row(value, &result, metric));
    }
    mark_front(&mut rows);
    print!("{}", render(sweep, &rows));
    for f in write(sweep, &rows)? {
        println!("wrote {}", f.display());
    }
    Ok(rows)
}

/// Posts an open-ended envelope at `watts` and waits for the controller to settle.
async fn post_cap(
    args: &BenchServeArgs,
    watts: f64,
    settle_seconds: f64,
) -> Result<(GridClient, String), GatewayError> {
    let grid = GridClient {
        client: reqwest::Client::new(),
        base: super::super::http::base_url(&args.base_url),
        operator_token: args.operator_token.clone(),
    };
    grid.check_available().await?;
    let id = format!("sweep-{}", uuid::Uuid::new_v4().simple());
    let step = super::envelopes::Step {
        at_s: 0.0,
        cap_watts: Some(watts),
        ramp_seconds: Some(0.0),
    };
    grid.post(&id, &step).await.map_err(GatewayError::Bench)?;
    tokio::time::sleep(Duration::from_secs_f64(settle_seconds.max(0.0))).await;
    Ok((grid, id))
}

pub fn render(sweep: &SweepArgs, rows: &[SweepRow]) -> String {
    let mut out = String::new();
    let latency = format!("P99 {} ms", sweep.latency_metric.metric().label());
    let _ = writeln!(out, "{:=^78}", " Sweep ");
    let _ = writeln!(
        out,
        "{:>12} {:>5} {:>6} {:>10} {:>12} {:>9} {:>12} {:>8}  front",
        param_word(sweep.param),
        "ok",
        "failed",
        "out tok/s",
        latency,
        "tok/J",
        "device tok/J",
        "mean W"
    );
    let opt = |v: Option<f64>, d: usize| v.map_or("n/a".to_string(), |v| format!("{v:.d$}"));
    for r in rows {
        let _ = writeln!(
            out,
            "{:>12} {:>5} {:>6} {:>10.2} {:>12.1} {:>9} {:>12} {:>8}  {}",
            r.value,
            r.completed,
            r.failed,
            r.output_throughput,
            r.p99_latency_ms,
            opt(r.output_tokens_per_joule, 3),
            opt(r.device_output_tokens_per_joule, 3),
            opt(r.avg_power_watts, 1),
            if r.on_front { "*" } else { "" }
        );
    }
    out
}

fn write(sweep: &SweepArgs, rows: &[SweepRow]) -> Result<Vec<PathBuf>, GatewayError> {
    let dir = &sweep.serve.result_dir;
    let io =
        |e: std::io::Error| GatewayError::Bench(format!("writing into {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let stem = dir.join(format!("sweep-{}", param_word(sweep.param)));
    let json = serde_json::json!({
        "param": sweep.param,
        "latency_metric": sweep.latency_metric.metric().key(),
        "rows": rows,
    });
    let json_path = stem.with_extension("json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(io)?;
    let mut files = vec![json_path];
    let points: Vec<ParetoPoint> = rows
        .iter()
        .filter_map(|r| {
            Some(ParetoPoint {
                label: format!("{}={}", param_word(sweep.param), r.value),
                tokens_per_joule: r.output_tokens_per_joule?,
                p99_latency_ms: r.p99_latency_ms,
                on_front: r.on_front,
            })
        })
        .collect();
    if points.is_empty() {
        eprintln!("sweep: no run had an energy figure; no Pareto plot");
        return Ok(files);
    }
    let title = format!(
        "tokens per joule vs p99 {} ({} sweep)",
        sweep.latency_metric.metric().label(),
        param_word(sweep.param)
    );
    let latency = format!("p99 {} (ms)", sweep.latency_metric.metric().label());
    files.extend(
        plots::pareto(&stem, &title, &latency, &points)
            .map_err(|e| GatewayError::Bench(format!("plotting: {e}")))?,
    );
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(value: f64, tpj: Option<f64>, p99: f64) -> SweepRow {
        SweepRow {
            value,
            completed: 1,
            failed: 0,
            output_throughput: 1.0,
            p99_latency_ms: p99,
            output_tokens_per_joule: tpj,
            device_output_tokens_per_joule: None,
            avg_power_watts: None,
            energy_source: "usage".into(),
            on_front: false,
        }
    }

    #[test]
    fn the_front_keeps_the_rows_nothing_beats_on_both_axes() {
        let mut rows = vec![
            r(1.0, Some(2.0), 100.0),  // front: lowest latency
            r(2.0, Some(3.0), 150.0),  // front
            r(4.0, Some(2.5), 200.0),  // beaten by rate 2 (more tok/J, less latency)
            r(8.0, Some(4.0), 400.0),  // front: most tok/J
            r(16.0, None, 50.0),       // no energy: never on the front
            r(32.0, Some(3.0), 150.0), // ties rate 2 exactly: both stay
        ];
        mark_front(&mut rows);
        let front: Vec<f64> = rows
            .iter()
            .filter(|r| r.on_front)
            .map(|r| r.value)
            .collect();
        assert_eq!(front, vec![1.0, 2.0, 8.0, 32.0]);
    }
}
