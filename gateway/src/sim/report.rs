//! The results: `Summary` (printed as a table, written as `summary.json`) and the time
//! series (`timeseries.csv`), computed from a finished `FleetRun`.

use std::path::Path;

use serde::Serialize;

use super::envelope::SignalKind;
use super::fleet::FleetRun;
use super::response::{self, StepDownSummary, StepResponse, Tracking};
use super::scenario::Scenario;
use super::stats::{percentile_seconds, tier_name, Bins, Recorder, TIERS};
use crate::GatewayError;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// One priority tier's latencies.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TierSummary {
    pub tier: String,
    pub requests_completed: u64,
    pub ttft_seconds: Percentiles,
    pub itl_seconds: Percentiles,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub name: String,
    pub gpu: String,
    pub model: String,
    pub tensor_parallel: u32,
    pub replicas: usize,
    pub gpus: usize,
    pub kv_blocks_per_replica: usize,
    pub seed: u64,
    pub simulated_seconds: f64,
    pub requests_arrived: u64,
    pub requests_completed: u64,
    pub requests_refused: u64,
    pub requests_unfinished: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub output_tokens_per_second: f64,
    /// Exact ∫P dt of every GPU in the fleet.
    pub energy_joules: f64,
    pub average_power_watts: f64,
    pub output_tokens_per_joule: f64,
    pub ttft_seconds: Percentiles,
    pub itl_seconds: Percentiles,
    pub e2e_seconds: Percentiles,
    /// Interactive, standard, flexible (in that order).
    pub tiers: Vec<TierSummary>,
    /// Where the envelope came from (`none` without a cap).
    pub envelope_signal: SignalKind,
    /// Time from each decrease of the cap until the trailing 1 s average power was at or under
    /// it (evaluated every 100 ms); absent without decreases.
    pub step_down: Option<StepDownSummary>,
    /// Correlation of 1 s power with the cap and its delay; absent for a constant cap.
    pub tracking: Option<Tracking>,
    /// Time series periods whose mean fleet power exceeded the cap, in seconds.
    pub time_above_cap_seconds: f64,
    /// Share of capped 1 s windows whose mean fleet power exceeded the cap.
    pub above_cap_window_share: f64,
    pub peak_1s_power_watts: f64,
    /// Time-weighted mean SM clock over all GPUs and the whole run.
    pub mean_sm_clock_mhz: f64,
    pub preemptions: u64,
    pub wall_seconds: f64,
    /// Simulated seconds per wall-clock second.
    pub speedup: f64,
}

/// Seconds and share of capped windows whose mean power exceeded the cap in force at the
/// window's start.
fn above_cap(s: &Scenario, bins: &Bins) -> (f64, f64) {
    let p = bins.period_seconds;
    let (mut over, mut capped) = (0usize, 0usize);
    for (i, b) in bins.bins.iter().enumerate() {
        let start = i as f64 * p;
        let length = (s.duration_seconds - start).min(p);
        if length <= 0.0 {
            continue;
        }
        if let Some(cap) = s.envelope.cap_at(start) {
            capped += 1;
            if b.energy_joules / length > cap {
                over += 1;
            }
        }
    }
    let share = if capped > 0 {
        over as f64 / capped as f64
    } else {
        0.0
    };
    (over as f64 * p, share)
}

/// Mean fleet power of each 100 ms bin up to the end of the scenario.
pub fn fine_power(s: &Scenario, rec: &Recorder) -> Vec<f64> {
    let p = rec.fine.period_seconds;
    let n = ((s.duration_seconds / p) - 1e-9).ceil().max(0.0) as usize;
    (0..n)
        .map(|i| {
            let start = i as f64 * p;
            let length = (s.duration_seconds - start).min(p);
            rec.fine
                .bins
                .get(i)
                .map_or(0.0, |b| b.energy_joules / length)
        })
        .collect()
}

/// Every step-down response of the run.
pub fn step_responses(s: &Scenario, run: &FleetRun) -> Vec<StepResponse> {
    response::step_responses(
        &fine_power(s, &run.recorder),
        run.recorder.fine.period_seconds,
        &s.envelope.decreases(),
        s.duration_seconds,
    )
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: percentile_seconds(h, 0.50),
        p90: percentile_seconds(h, 0.90),
        p99: percentile_seconds(h, 0.99),
    }
}

impl Summary {
    pub fn from_run(s: &Scenario, run: &FleetRun) -> Self {
        let rec = &run.recorder;
        let energy_joules: f64 = run
            .replicas
            .iter()
            .map(|r| r.cluster().total_energy_joules())
            .sum();
        let simulated_seconds = run
            .replicas
            .iter()
            .map(|r| r.clock_seconds())
            .fold(s.duration_seconds, f64::max);
        let (clock_sum, gpu_seconds) = rec.series.bins.iter().fold((0.0, 0.0), |(c, g), b| {
            (c + b.clock_mhz_seconds, g + b.gpu_seconds)
        });
        let (time_above_cap_seconds, _) = above_cap(s, &rec.series);
        let (_, above_cap_window_share) = above_cap(s, &rec.seconds);
        let peak_1s_power_watts = rec
            .seconds
            .bins
            .iter()
            .enumerate()
            .take_while(|(i, _)| (*i as f64) < s.duration_seconds)
            .map(|(i, b)| b.energy_joules / (s.duration_seconds - i as f64).min(1.0))
            .fold(0.0, f64::max);
        let wall_seconds = run.wall_seconds;
        let fine = fine_power(s, rec);
        let period = rec.fine.period_seconds;
        let step_down = response::summarize(&response::step_responses(
            &fine,
            period,
            &s.envelope.decreases(),
            s.duration_seconds,
        ));
        let tracking = response::tracking(
            &fine,
            &response::cap_series(&s.envelope, fine.len(), period),
            period,
            response::MAX_DELAY_SECONDS,
        );
        let tiers = TIERS
            .iter()
            .zip(&rec.tiers)
            .map(|(p, t)| TierSummary {
                tier: tier_name(*p).to_string(),
                requests_completed: t.completed,
                ttft_seconds: percentiles(&t.ttft),
                itl_seconds: percentiles(&t.itl),
            })
            .collect();
        Self {
            name: s.name.clone(),
            gpu: s.hardware.gpu.clone(),
            model: s.hardware.shape.name.clone(),
            tensor_parallel: s.hardware.tensor_parallel,
            replicas: s.replicas,
            gpus: s.gpus(),
            kv_blocks_per_replica: s.hardware.kv_blocks,
            seed: s.seed,
            simulated_seconds,
            requests_arrived: rec.arrived,
            requests_completed: rec.completed,
            requests_refused: rec.refused,
            requests_unfinished: run.unfinished,
            prompt_tokens: rec.prompt_tokens,
            output_tokens: rec.output_tokens,
            output_tokens_per_second: rec.output_tokens as f64 / simulated_seconds,
            energy_joules,
            average_power_watts: energy_joules / simulated_seconds,
            output_tokens_per_joule: rec.output_tokens as f64 / energy_joules,
            ttft_seconds: percentiles(&rec.ttft),
            itl_seconds: percentiles(&rec.itl),
            e2e_seconds: percentiles(&rec.e2e),
            tiers,
            envelope_signal: s.envelope.kind(),
            step_down,
            tracking,
            time_above_cap_seconds,
            above_cap_window_share,
            peak_1s_power_watts,
            mean_sm_clock_mhz: if gpu_seconds > 0.0 {
                clock_sum / gpu_seconds
            } else {
                0.0
            },
            preemptions: run.replicas.iter().map(|r| r.preemptions()).sum(),
            wall_seconds,
            speedup: simulated_seconds / wall_seconds.max(1e-9),
        }
    }

    /// The readable table printed on stdout.
    pub fn to_text(&self) -> String {
        let ms = |p: &Percentiles| {
            format!(
                "p50 {:.1} / p90 {:.1} / p99 {:.1} ms",
                p.p50 * 1e3,
                p.p90 * 1e3,
                p.p99 * 1e3
            )
        };
        let mut rows = vec![
            ("scenario", format!("{} (seed {})", self.name, self.seed)),
            (
                "fleet",
                format!(
                    "{} × {} × {} ({} GPUs, {} KV blocks per replica)",
                    self.replicas, self.model, self.gpu, self.gpus, self.kv_blocks_per_replica
                ),
            ),
            (
                "simulated",
                format!(
                    "{:.1} s in {:.2} s wall ({:.0}× real time)",
                    self.simulated_seconds, self.wall_seconds, self.speedup
                ),
            ),
            (
                "requests",
                format!(
                    "{} arrived, {} completed, {} refused, {} unfinished",
                    self.requests_arrived,
                    self.requests_completed,
                    self.requests_refused,
                    self.requests_unfinished
                ),
            ),
            (
                "tokens",
                format!(
                    "{} prompt, {} output ({:.0} output tok/s)",
                    self.prompt_tokens, self.output_tokens, self.output_tokens_per_second
                ),
            ),
            (
                "energy",
                format!(
                    "{:.0} J, {:.1} W average, {:.0} W peak (1 s)",
                    self.energy_joules, self.average_power_watts, self.peak_1s_power_watts
                ),
            ),
            (
                "efficiency",
                format!("{:.3} output tokens/J", self.output_tokens_per_joule),
            ),
            ("TTFT", ms(&self.ttft_seconds)),
            ("ITL", ms(&self.itl_seconds)),
            (
                "E2E",
                format!(
                    "p50 {:.2} / p99 {:.2} s",
                    self.e2e_seconds.p50, self.e2e_seconds.p99
                ),
            ),
            (
                "above cap",
                format!(
                    "{:.0} s, {:.1} % of capped 1 s windows",
                    self.time_above_cap_seconds,
                    self.above_cap_window_share * 100.0
                ),
            ),
            (
                "SM clock",
                format!("{:.0} MHz mean", self.mean_sm_clock_mhz),
            ),
            ("preemptions", self.preemptions.to_string()),
        ];
        // Per-tier rows go after E2E (before the last three rows).
        let tier_rows: Vec<(&str, String)> = self
            .tiers
            .iter()
            .filter(|t| t.requests_completed > 0)
            .map(|t| {
                let row = format!(
                    "TTFT p99 {:.1} ms, ITL p99 {:.1} ms ({} completed)",
                    t.ttft_seconds.p99 * 1e3,
                    t.itl_seconds.p99 * 1e3,
                    t.requests_completed
                );
                (t.tier.as_str(), row)
            })
            .collect();
        let at = rows.len() - 3;
        rows.splice(at..at, tier_rows);
        if let Some(d) = &self.step_down {
            rows.push((
                "step down",
                format!(
                    "p50 {:.1} / p99 {:.1} / max {:.1} s until the trailing 1 s mean fits \
                     ({} decreases, {} binding, {} never fit)",
                    d.p50_seconds,
                    d.p99_seconds,
                    d.max_seconds,
                    d.decreases,
                    d.binding,
                    d.not_reached
                ),
            ));
        }
        if let Some(t) = &self.tracking {
            rows.push((
                "tracking",
                format!(
                    "power vs cap correlation {:.3} at {:.1} s delay ({:.3} at 0 s)",
                    t.correlation, t.delay_seconds, t.correlation_at_zero_delay
                ),
            ));
        }
        rows.iter().map(|(k, v)| format!("{k:<12} {v}\n")).collect()
    }
}

/// `timeseries.csv`: one row per period.
pub fn timeseries_csv(s: &Scenario, run: &FleetRun) -> String {
    let mut out = String::from(
        "t_seconds,cap_watts,power_watts,clock_mhz,running,waiting,output_tokens_per_second,tokens_per_joule\n",
    );
    let p = run.recorder.series.period_seconds;
    for (i, b) in run.recorder.series.bins.iter().enumerate() {
        let t = i as f64 * p;
        if t >= s.duration_seconds {
            break;
        }
        let length = (s.duration_seconds - t).min(p);
        let cap = s
            .envelope
            .cap_at(t)
            .map_or(String::new(), |c| format!("{c}"));
        let clock = if b.gpu_seconds > 0.0 {
            b.clock_mhz_seconds / b.gpu_seconds
        } else {
            0.0
        };
        let tpj = if b.energy_joules > 0.0 {
            b.output_tokens as f64 / b.energy_joules
        } else {
            0.0
        };
        out.push_str(&format!(
            "{t:.3},{cap},{:.1},{clock:.0},{:.2},{:.2},{:.1},{tpj:.4}\n",
            b.energy_joules / length,
            b.running_seconds / length,
            b.waiting_seconds / length,
            b.output_tokens as f64 / length,
        ));
    }
    out
}

/// Writes `summary.json` and `timeseries.csv` into `dir` (created if missing).
pub fn write(dir: &Path, summary: &Summary, csv: &str) -> Result<(), GatewayError> {
    let io = |e: std::io::Error| GatewayError::Config(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let json = serde_json::to_string_pretty(summary)
        .map_err(|e| GatewayError::Config(format!("encoding the summary: {e}")))?;
    std::fs::write(dir.join("summary.json"), json + "\n").map_err(io)?;
    std::fs::write(dir.join("timeseries.csv"), csv).map_err(io)?;
    Ok(())
}
