//! The workload: a Poisson process with lognormal prompt/output lengths (seeded), or a trace
//! CSV (`arrival_seconds,prompt_tokens,output_tokens[,priority]`), yielded in arrival order.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::Deserialize;

use super::scenario::{bad, positive, resolve, Hardware};
use crate::engine::Priority;
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    rate_per_second: Option<f64>,
    prompt_tokens_median: Option<f64>,
    prompt_tokens_sigma: Option<f64>,
    prompt_tokens_max: Option<usize>,
    output_tokens_median: Option<f64>,
    output_tokens_sigma: Option<f64>,
    output_tokens_max: Option<usize>,
    trace: Option<String>,
    priority_mix: Option<RawPriorityMix>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriorityMix {
    #[serde(default)]
    interactive: f64,
    #[serde(default)]
    standard: f64,
    #[serde(default)]
    flexible: f64,
}

/// One request as it reaches the fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    pub at_seconds: f64,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub priority: Priority,
}

/// A lognormal length clipped to `[1, max]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LengthDist {
    pub median: f64,
    pub sigma: f64,
    pub max: usize,
}

/// Fleet-wide Poisson arrivals.
#[derive(Clone, Debug, PartialEq)]
pub struct PoissonWorkload {
    pub rate_per_second: f64,
    pub prompt: LengthDist,
    pub output: LengthDist,
    /// Cumulative shares of (interactive, standard); the rest is flexible.
    pub priority_cdf: [f64; 2],
}

#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Poisson(PoissonWorkload),
    Trace(Vec<Arrival>),
}

impl Workload {
    pub(super) fn validate(
        raw: &RawWorkload,
        base_dir: &Path,
        hw: &Hardware,
    ) -> Result<Self, GatewayError> {
        let poisson_keys = [
            raw.rate_per_second.is_some(),
            raw.prompt_tokens_median.is_some(),
            raw.prompt_tokens_sigma.is_some(),
            raw.prompt_tokens_max.is_some(),
            raw.output_tokens_median.is_some(),
            raw.output_tokens_sigma.is_some(),
            raw.output_tokens_max.is_some(),
            raw.priority_mix.is_some(),
        ];
        match (&raw.trace, raw.rate_per_second) {
            (Some(_), _) if poisson_keys.contains(&true) => Err(bad(
                "workload.trace",
                "excludes rate_per_second, the length keys and priority_mix",
            )),
            (Some(file), _) => {
                let path = resolve(base_dir, file);
                Ok(Self::Trace(read_trace(&path, hw.max_seq_len)?))
            }
            (None, Some(rate)) => Ok(Self::Poisson(validate_poisson(raw, rate, hw)?)),
            (None, None) => Err(bad(
                "workload",
                "needs either rate_per_second (Poisson) or trace (a CSV file)",
            )),
        }
    }

    /// The arrivals this workload yields with `seed`, in time order.
    pub fn arrivals(&self, seed: u64) -> Arrivals<'_> {
        match self {
            Self::Poisson(p) => Arrivals::Poisson {
                rng: Box::new(StdRng::seed_from_u64(seed)),
                at_seconds: 0.0,
                spec: p,
            },
            Self::Trace(rows) => Arrivals::Trace(rows.iter()),
        }
    }
}

fn validate_poisson(
    raw: &RawWorkload,
    rate: f64,
    hw: &Hardware,
) -> Result<PoissonWorkload, GatewayError> {
    let rate_per_second = positive("workload.rate_per_second", rate)?;
    // Defaults: the Azure LLM inference trace 2023, conversation (p50 in 1020, out 129).
    let output_max = raw
        .output_tokens_max
        .unwrap_or(2048.min(hw.max_seq_len / 2));
    let prompt_max = raw
        .prompt_tokens_max
        .unwrap_or(hw.max_seq_len.saturating_sub(output_max));
    if output_max == 0 || prompt_max == 0 || prompt_max + output_max > hw.max_seq_len {
        return Err(bad(
            "workload.prompt_tokens_max",
            format!(
                "prompt_tokens_max ({prompt_max}) + output_tokens_max ({output_max}) must be \
                 positive and fit hardware.max_seq_len ({})",
                hw.max_seq_len
            ),
        ));
    }
    let dist = |key: &str, median: Option<f64>, dflt: f64, sigma: Option<f64>, max| {
        let median = positive(&format!("workload.{key}_median"), median.unwrap_or(dflt))?;
        let sigma = sigma.unwrap_or(1.0);
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(bad(
                &format!("workload.{key}_sigma"),
                format!("must be >= 0 (got {sigma})"),
            ));
        }
        Ok(LengthDist { median, sigma, max })
    };
    let prompt = dist(
        "prompt_tokens",
        raw.prompt_tokens_median,
        1020.0,
        raw.prompt_tokens_sigma,
        prompt_max,
    )?;
    let output = dist(
        "output_tokens",
        raw.output_tokens_median,
        129.0,
        raw.output_tokens_sigma,
        output_max,
    )?;
    let priority_cdf = match &raw.priority_mix {
        None => [0.0, 1.0],
        Some(m) => {
            let shares = [m.interactive, m.standard, m.flexible];
            let total: f64 = shares.iter().sum();
            if shares.iter().any(|s| !(s.is_finite() && *s >= 0.0)) || total <= 0.0 {
                return Err(bad(
                    "workload.priority_mix",
                    "shares must be >= 0 and not all zero",
                ));
            }
            [shares[0] / total, (shares[0] + shares[1]) / total]
        }
    };
    Ok(PoissonWorkload {
        rate_per_second,
        prompt,
        output,
        priority_cdf,
    })
}

/// Arrivals in time order (endless for Poisson; the fleet stops at the scenario's end).
pub enum Arrivals<'a> {
    Poisson {
        rng: Box<StdRng>,
        at_seconds: f64,
        spec: &'a PoissonWorkload,
    },
    Trace(std::slice::Iter<'a, Arrival>),
}

impl Iterator for Arrivals<'_> {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        match self {
            Self::Trace(rows) => rows.next().copied(),
            Self::Poisson {
                rng,
                at_seconds,
                spec,
            } => {
                let gap = Exp::new(spec.rate_per_second).ok()?.sample(rng);
                *at_seconds += gap;
                let prompt_tokens = sample_length(rng, &spec.prompt);
                let output_tokens = sample_length(rng, &spec.output);
                let u: f64 = rng.random();
                let priority = if u < spec.priority_cdf[0] {
                    Priority::Interactive
                } else if u < spec.priority_cdf[1] {
                    Priority::Standard
                } else {
                    Priority::Flexible
                };
                Some(Arrival {
                    at_seconds: *at_seconds,
                    prompt_tokens,
                    output_tokens,
                    priority,
                })
            }
        }
    }
}

fn sample_length(rng: &mut StdRng, d: &LengthDist) -> usize {
    let x = match LogNormal::new(d.median.ln(), d.sigma) {
        Ok(dist) => dist.sample(rng),
        Err(_) => d.median,
    };
    (x.round() as usize).clamp(1, d.max)
}

/// Reads a workload trace; rows must be in time order and fit `max_seq_len`.
pub fn read_trace(path: &Path, max_seq_len: usize) -> Result<Vec<Arrival>, GatewayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("workload.trace", format!("reading {}: {e}", path.display())))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .map(|(_, l)| l.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let expected = ["arrival_seconds", "prompt_tokens", "output_tokens"];
    if header.len() < 3
        || header[..3] != expected
        || header.get(3).is_some_and(|h| *h != "priority")
    {
        return Err(bad(
            "workload.trace",
            format!(
                "{}: header must be arrival_seconds,prompt_tokens,output_tokens[,priority]",
                path.display()
            ),
        ));
    }
    let mut rows: Vec<Arrival> = Vec::new();
    for (i, line) in lines {
        let row = parse_row(line, max_seq_len).map_err(|why| {
            bad(
                "workload.trace",
                format!("{} line {}: {why}", path.display(), i + 1),
            )
        })?;
        if rows.last().is_some_and(|p| p.at_seconds > row.at_seconds) {
            return Err(bad(
                "workload.trace",
                format!(
                    "{} line {}: arrivals must be in time order",
                    path.display(),
                    i + 1
                ),
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(line: &str, max_seq_len: usize) -> Result<Arrival, String> {
    let cols: Vec<&str> = line.split(',').map(str::trim).collect();
    if !(3..=4).contains(&cols.len()) {
        return Err(format!("expected 3 or 4 columns, got {}", cols.len()));
    }
    let at_seconds: f64 = cols[0]
        .parse()
        .map_err(|e| format!("arrival_seconds: {e}"))?;
    let prompt_tokens: usize = cols[1].parse().map_err(|e| format!("prompt_tokens: {e}"))?;
    let output_tokens: usize = cols[2].parse().map_err(|e| format!("output_tokens: {e}"))?;
    if !(at_seconds.is_finite() && at_seconds >= 0.0) {
        return Err(format!("arrival_seconds must be >= 0 (got {at_seconds})"));
    }
    if prompt_tokens == 0 || output_tokens == 0 || prompt_tokens + output_tokens > max_seq_len {
        return Err(format!(
            "prompt ({prompt_tokens}) and output ({output_tokens}) tokens must be >= 1 and \
             together fit hardware.max_seq_len ({max_seq_len})"
        ));
    }
    let priority = match cols.get(3).copied() {
        None | Some("") | Some("standard") => Priority::Standard,
        Some("interactive") => Priority::Interactive,
        Some("flexible") => Priority::Flexible,
        Some(other) => return Err(format!("unknown priority {other:?}")),
    };
    Ok(Arrival {
        at_seconds,
        prompt_tokens,
        output_tokens,
        priority,
    })
}
