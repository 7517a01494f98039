//! `gridserve simulate-proof`: the grid-response proof table. Every scenario (by default the
//! four `config/scenarios/grid-*.toml`: a −30 % step, the Phoenix ramp, 200 random steps, a
//! regulation signal) runs on every GPU twin (H100 and H200 SXM) three times on the same
//! workload: uncapped at fixed default knobs (the latency reference, no envelope), with each
//! GPU's power limit set to its share of the cap (`cap_limit`, the static-power-limit
//! baseline), and under gridserve's controller (`adaptive`). Each capped run's figures are set
//! against the targets:
//!
//! - step-down response p99 ≤ 1 s (trailing 1 s mean at or under the new cap);
//! - share of capped 1 s windows above the cap ≤ 0.1 %;
//! - tokens per joule ≥ 1.3 × the `cap_limit` run's;
//! - interactive-tier TTFT p99 and ITL p99 ≤ 1.1 × the uncapped run's;
//! - for regulation signals, correlation of power with the signal ≥ 0.95 at a delay ≤ 2 s.
//!
//! Prints a markdown table and writes `proof.md`, `proof.json` and every run's summary and
//! time series (`proof/<scenario>-<gpu>-<policy>/`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::envelope::{Envelope, SignalKind};
use super::fleet;
use super::report::{self, Summary};
use super::scenario::{Overrides, PolicyKind, Scenario};
use crate::power::controller::ControllerConfig;
use crate::GatewayError;

/// The scenarios run when none are named, under `<config dir>/scenarios/`.
pub const DEFAULT_SCENARIOS: [&str; 4] = [
    "grid-a-step30.toml",
    "grid-b-phoenix.toml",
    "grid-c-random-steps.toml",
    "grid-d-regulation.toml",
];

/// Targets (from the issue).
pub const STEP_DOWN_P99_MAX_SECONDS: f64 = 1.0;
pub const ABOVE_CAP_SHARE_MAX: f64 = 0.001;
pub const TOKENS_PER_JOULE_MIN_RATIO: f64 = 1.3;
pub const LATENCY_MAX_RATIO: f64 = 1.1;
pub const CORRELATION_MIN: f64 = 0.95;
pub const DELAY_MAX_SECONDS: f64 = 2.0;

/// Arguments of `gridserve simulate-proof`.
#[derive(clap::Args, Debug)]
pub struct ProofArgs {
    /// A scenario file; repeat for several (default: the four `grid-*.toml` under the config
    /// folder's `scenarios/`).
    #[arg(long = "scenario")]
    pub scenarios: Vec<PathBuf>,
    /// A GPU profile to run every scenario on; repeat for several.
    #[arg(long = "gpu", default_values_t = ["h100-sxm".to_string(), "h200-sxm".to_string()])]
    pub gpus: Vec<String>,
    /// Where to write proof.md, proof.json and proof/<run>/.
    #[arg(long, default_value = "bench-results/simulate")]
    pub out: PathBuf,
    /// Override every scenario's `duration_seconds` (quick looks; the envelope's times are not
    /// scaled, so a step after the end never happens).
    #[arg(long)]
    pub duration_seconds: Option<f64>,
    /// Simulations run at once (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Exit non-zero when any adaptive figure misses its target.
    #[arg(long)]
    pub strict: bool,
}

/// The three runs of each scenario and GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofPolicy {
    /// Fixed default knobs, no envelope: the latency reference.
    Uncapped,
    /// Per-GPU power limit = its share of the cap.
    CapLimit,
    /// gridserve's controller.
    Adaptive,
}

impl ProofPolicy {
    pub const ALL: [ProofPolicy; 3] = [Self::Uncapped, Self::CapLimit, Self::Adaptive];

    pub fn name(self) -> &'static str {
        match self {
            Self::Uncapped => "uncapped",
            Self::CapLimit => "cap_limit",
            Self::Adaptive => "adaptive",
        }
    }

    /// The scenario as this policy runs it.
    pub fn apply(self, s: &Scenario) -> Scenario {
        let mut s = s.clone();
        match self {
            Self::Uncapped => {
                s.policy.kind = PolicyKind::Fixed;
                s.policy.sm_clock_mhz = None;
                s.policy.power_limit_watts = None;
                s.envelope = Envelope::none();
            }
            Self::CapLimit => s.policy.kind = PolicyKind::CapLimit,
            Self::Adaptive => s.policy.kind = PolicyKind::Adaptive,
        }
        s
    }
}

/// One simulation of the proof.
#[derive(Clone, Debug, Serialize)]
pub struct ProofRun {
    pub scenario: String,
    pub gpu: String,
    pub policy: ProofPolicy,
    pub summary: Summary,
}

/// One figure against its target; `pass` is absent when it does not apply (no step down in
/// the run, the baseline compared with itself, not a regulation signal).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    pub metric: &'static str,
    pub value: Option<f64>,
    pub target: String,
    pub pass: Option<bool>,
    /// The table cell.
    pub cell: String,
}

/// A capped run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ProofRow {
    pub scenario: String,
    pub gpu: String,
    pub policy: ProofPolicy,
    pub checks: Vec<Check>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Proof {
    pub command: String,
    pub rows: Vec<ProofRow>,
    /// Adaptive checks that pass / that apply.
    pub adaptive_passed: usize,
    pub adaptive_checked: usize,
    pub wall_seconds: f64,
    pub runs: Vec<ProofRun>,
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "",
    }
}

fn check(
    metric: &'static str,
    value: Option<f64>,
    target: String,
    pass: Option<bool>,
    text: String,
) -> Check {
    let v = verdict(pass);
    let cell = if v.is_empty() {
        text
    } else {
        format!("{text} {v}")
    };
    Check {
        metric,
        value,
        target,
        pass,
        cell,
    }
}

fn not_applicable(metric: &'static str, target: String) -> Check {
    check(metric, None, target, None, "—".to_string())
}

fn signed_percent(ratio: f64) -> String {
    format!("{:+.0} %", (ratio - 1.0) * 100.0)
}

/// The checks of a capped `run` against the uncapped reference and the `cap_limit` baseline of
/// the same scenario and GPU.
pub fn evaluate(
    run: &Summary,
    uncapped: &Summary,
    baseline: &Summary,
    is_baseline: bool,
) -> Vec<Check> {
    let mut out = Vec::new();
    let target = format!("p99 ≤ {STEP_DOWN_P99_MAX_SECONDS} s");
    out.push(match &run.step_down {
        None => not_applicable("step_down_p99_seconds", target),
        Some(d) => check(
            "step_down_p99_seconds",
            Some(d.p99_seconds),
            target,
            Some(d.p99_seconds <= STEP_DOWN_P99_MAX_SECONDS),
            format!(
                "{:.1} / {:.1} s ({}/{}{})",
                d.p50_seconds,
                d.p99_seconds,
                d.binding,
                d.decreases,
                if d.not_reached > 0 {
                    format!(", {} never fit", d.not_reached)
                } else {
                    String::new()
                }
            ),
        ),
    });
    let share = run.above_cap_window_share;
    out.push(check(
        "above_cap_window_share",
        Some(share),
        format!("≤ {} %", ABOVE_CAP_SHARE_MAX * 100.0),
        Some(share <= ABOVE_CAP_SHARE_MAX),
        format!("{:.2} %", share * 100.0),
    ));
    let ratio = run.output_tokens_per_joule / baseline.output_tokens_per_joule;
    out.push(check(
        "tokens_per_joule_vs_cap_limit",
        Some(ratio),
        format!("≥ {TOKENS_PER_JOULE_MIN_RATIO}×"),
        (!is_baseline).then_some(ratio >= TOKENS_PER_JOULE_MIN_RATIO),
        format!(
            "{ratio:.2}× ({:.2} tok/J){}",
            run.output_tokens_per_joule,
            if is_baseline { " baseline" } else { "" }
        ),
    ));
    let no_interactive =
        run.tiers[0].requests_completed == 0 || uncapped.tiers[0].requests_completed == 0;
    let latency = |metric, ours: f64, reference: f64| {
        let target = format!("≤ {LATENCY_MAX_RATIO}× uncapped");
        if no_interactive || reference <= 0.0 {
            return not_applicable(metric, target);
        }
        let ratio = ours / reference;
        check(
            metric,
            Some(ratio),
            target,
            Some(ratio <= LATENCY_MAX_RATIO),
            format!(
                "{:.0} vs {:.0} ms ({})",
                ours * 1e3,
                reference * 1e3,
                signed_percent(ratio)
            ),
        )
    };
    out.push(latency(
        "interactive_ttft_p99_vs_uncapped",
        run.tiers[0].ttft_seconds.p99,
        uncapped.tiers[0].ttft_seconds.p99,
    ));
    out.push(latency(
        "interactive_itl_p99_vs_uncapped",
        run.tiers[0].itl_seconds.p99,
        uncapped.tiers[0].itl_seconds.p99,
    ));
    let corr_target = format!("≥ {CORRELATION_MIN}");
    let delay_target = format!("≤ {DELAY_MAX_SECONDS} s");
    match (run.envelope_signal, &run.tracking) {
        (SignalKind::Regulation, Some(t)) => {
            out.push(check(
                "correlation",
                Some(t.correlation),
                corr_target,
                Some(t.correlation >= CORRELATION_MIN),
                format!("{:.3}", t.correlation),
            ));
            out.push(check(
                "delay_seconds",
                Some(t.delay_seconds),
                delay_target,
                Some(t.delay_seconds <= DELAY_MAX_SECONDS),
                format!("{:.1} s", t.delay_seconds),
            ));
        }
        _ => {
            out.push(not_applicable("correlation", corr_target));
            out.push(not_applicable("delay_seconds", delay_target));
        }
    }
    out
}

const HEADERS: [&str; 9] = [
    "scenario",
    "GPU",
    "policy",
    "step-down p50 / p99 (binding/all) — p99 ≤ 1 s",
    "1 s windows above cap — ≤ 0.1 %",
    "tok/J vs cap_limit — ≥ 1.3×",
    "interactive TTFT p99 vs uncapped — ≤ +10 %",
    "interactive ITL p99 vs uncapped — ≤ +10 %",
    "power–signal correlation — ≥ 0.95 / delay — ≤ 2 s",
];

fn md_row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

impl Proof {
    /// Builds the rows from the runs (every scenario × GPU needs all three policies).
    pub fn new(
        command: String,
        runs: Vec<ProofRun>,
        wall_seconds: f64,
    ) -> Result<Self, GatewayError> {
        let find = |sc: &str, gpu: &str, p: ProofPolicy| {
            runs.iter()
                .find(|r| r.scenario == sc && r.gpu == gpu && r.policy == p)
                .map(|r| &r.summary)
                .ok_or_else(|| {
                    GatewayError::Bench(format!(
                        "simulate-proof: no {} run of {sc} on {gpu}",
                        p.name()
                    ))
                })
        };
        let mut rows = Vec::new();
        let (mut passed, mut checked) = (0, 0);
        for r in runs.iter().filter(|r| r.policy != ProofPolicy::Uncapped) {
            let uncapped = find(&r.scenario, &r.gpu, ProofPolicy::Uncapped)?;
            let baseline = find(&r.scenario, &r.gpu, ProofPolicy::CapLimit)?;
            let checks = evaluate(
                &r.summary,
                uncapped,
                baseline,
                r.policy == ProofPolicy::CapLimit,
            );
            if r.policy == ProofPolicy::Adaptive {
                for c in &checks {
                    if let Some(p) = c.pass {
                        checked += 1;
                        passed += usize::from(p);
                    }
                }
            }
            rows.push(ProofRow {
                scenario: r.scenario.clone(),
                gpu: r.gpu.clone(),
                policy: r.policy,
                checks,
            });
        }
        Ok(Self {
            command,
            rows,
            adaptive_passed: passed,
            adaptive_checked: checked,
            wall_seconds,
            runs,
        })
    }

    /// The markdown: the proof table, then the uncapped references.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("Generated by `{}`.\n\n", self.command);
        out.push_str(&md_row(&HEADERS.map(String::from)));
        out.push_str(&md_row(&HEADERS.map(|_| "---".to_string())));
        for r in &self.rows {
            let mut cells = vec![
                r.scenario.clone(),
                r.gpu.clone(),
                r.policy.name().to_string(),
            ];
            cells.extend(r.checks.iter().take(5).map(|c| c.cell.clone()));
            let (corr, delay) = (&r.checks[5], &r.checks[6]);
            cells.push(if corr.value.is_some() {
                format!("{} / {}", corr.cell, delay.cell)
            } else {
                "—".to_string()
            });
            out.push_str(&md_row(&cells));
        }
        out.push_str(&format!(
            "\nadaptive: {} of {} checks pass; {} simulations in {:.0} s wall.\n\n",
            self.adaptive_passed,
            self.adaptive_checked,
            self.runs.len(),
            self.wall_seconds
        ));
        let head = [
            "scenario",
            "GPU",
            "policy",
            "simulated s",
            "avg W",
            "tok/s",
            "tok/J",
            "interactive TTFT p99 ms",
            "interactive ITL p99 ms",
            "refused",
            "wall s",
        ];
        out.push_str(&md_row(&head.map(String::from)));
        out.push_str(&md_row(&head.map(|_| "---".to_string())));
        for r in &self.runs {
            let s = &r.summary;
            out.push_str(&md_row(&[
                r.scenario.clone(),
                r.gpu.clone(),
                r.policy.name().to_string(),
                format!("{:.0}", s.simulated_seconds),
                format!("{:.0}", s.average_power_watts),
                format!("{:.0}", s.output_tokens_per_second),
                format!("{:.3}", s.output_tokens_per_joule),
                format!("{:.0}", s.tiers[0].ttft_seconds.p99 * 1e3),
                format!("{:.1}", s.tiers[0].itl_seconds.p99 * 1e3),
                s.requests_refused.to_string(),
                format!("{:.1}", s.wall_seconds),
            ]));
        }
        out
    }
}

struct Job {
    scenario: Scenario,
    label: String,
    policy: ProofPolicy,
}

/// Runs the proof: loads every scenario on every GPU, runs the three policies (on `jobs`
/// threads, longest first), writes each run's files under `out/proof/`, and builds the table.
pub fn run(config_file: &Path, args: &ProofArgs, command: String) -> Result<Proof, GatewayError> {
    let wall = Instant::now();
    let config_dir = super::config_dir(config_file);
    let controller: ControllerConfig = crate::config::Config::load(config_file)?.controller;
    let files: Vec<PathBuf> = if args.scenarios.is_empty() {
        DEFAULT_SCENARIOS
            .iter()
            .map(|f| config_dir.join("scenarios").join(f))
            .collect()
    } else {
        args.scenarios.clone()
    };
    let mut jobs = Vec::new();
    for file in &files {
        for gpu in &args.gpus {
            let over = Overrides {
                duration_seconds: args.duration_seconds,
                gpu: Some(gpu.clone()),
                ..Overrides::default()
            };
            let s = Scenario::load(file, config_dir, &over)?;
            for policy in ProofPolicy::ALL {
                jobs.push(Job {
                    scenario: policy.apply(&s),
                    label: s.name.clone(),
                    policy,
                });
            }
        }
    }
    // Longest first, so the last thread to finish is not left with a 10 h run.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| {
        jobs[b]
            .scenario
            .duration_seconds
            .total_cmp(&jobs[a].scenario.duration_seconds)
    });
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<ProofRun, GatewayError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let out_dir = args.out.join("proof");
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&j) = order.get(i) else { break };
                let job = &jobs[j];
                let result = run_one(job, &controller, &out_dir);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                match &result {
                    Ok(r) => eprintln!(
                        "[{n}/{}] {} {} {}: {:.0} s simulated in {:.1} s",
                        jobs.len(),
                        r.scenario,
                        r.gpu,
                        r.policy.name(),
                        r.summary.simulated_seconds,
                        r.summary.wall_seconds
                    ),
                    Err(e) => eprintln!("[{n}/{}] {}: {e}", jobs.len(), job.label),
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[j] = Some(result);
            });
        }
    });
    let runs = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(GatewayError::Bench(
                    "simulate-proof: a run did not finish".into(),
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Proof::new(command, runs, wall.elapsed().as_secs_f64())
}

fn run_one(
    job: &Job,
    controller: &ControllerConfig,
    out_dir: &Path,
) -> Result<ProofRun, GatewayError> {
    let s = &job.scenario;
    let run = fleet::run(s, controller)?;
    let summary = Summary::from_run(s, &run);
    let dir = out_dir.join(format!(
        "{}-{}-{}",
        s.name,
        s.hardware.gpu,
        job.policy.name()
    ));
    report::write(&dir, &summary, &report::timeseries_csv(s, &run))?;
    Ok(ProofRun {
        scenario: job.label.clone(),
        gpu: s.hardware.gpu.clone(),
        policy: job.policy,
        summary,
    })
}

/// `gridserve simulate-proof`: runs, prints the table, writes proof.md and proof.json.
/// Returns whether every adaptive check passed.
pub fn run_cli(config_file: &Path, args: &ProofArgs) -> Result<bool, GatewayError> {
    let command = std::iter::once("gridserve".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let proof = run(config_file, args, command)?;
    let md = proof.to_markdown();
    print!("{md}");
    let io =
        |e: std::io::Error| GatewayError::Config(format!("writing {}: {e}", args.out.display()));
    std::fs::create_dir_all(&args.out).map_err(io)?;
    std::fs::write(args.out.join("proof.md"), &md).map_err(io)?;
    let json = serde_json::to_string_pretty(&proof)
        .map_err(|e| GatewayError::Config(format!("encoding the proof: {e}")))?;
    std::fs::write(args.out.join("proof.json"), json + "\n").map_err(io)?;
    println!(
        "wrote {} and {} (runs under {})",
        args.out.join("proof.md").display(),
        args.out.join("proof.json").display(),
        args.out.join("proof").display()
    );
    Ok(proof.adaptive_passed == proof.adaptive_checked)
}
