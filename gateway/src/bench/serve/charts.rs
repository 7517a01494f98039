//! The plots of a `bench serve` run (PNG and SVG next to the JSON result): power against the cap
//! over time with output throughput, and latency CDFs per priority tier.

use std::path::{Path, PathBuf};

use super::plots::{self, CdfSeries, TimelinePoint};
use super::result::RunResult;
use super::stats::{token_times, RequestOutcome};
use crate::GatewayError;

/// Output tokens per second, averaged over `window_s` before each of `at_s` (tokens arrive in
/// bursts of one engine step, so a one-second window draws a comb).
fn throughput_at(outcomes: &[RequestOutcome], at_s: &[f64], window_s: f64) -> Vec<f64> {
    let mut times: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.success)
        .flat_map(token_times)
        .collect();
    times.sort_by(f64::total_cmp);
    at_s.iter()
        .map(|&t| {
            let hi = times.partition_point(|&x| x <= t);
            let lo = times.partition_point(|&x| x <= t - window_s);
            (hi - lo) as f64 / window_s
        })
        .collect()
}

/// The timeline: the power feed's samples, or (without any) one point per second.
pub fn timeline(r: &RunResult) -> Vec<TimelinePoint> {
    let at: Vec<f64> = if r.samples.is_empty() {
        (0..=r.duration_s.ceil() as usize)
            .map(|s| s as f64)
            .collect()
    } else {
        r.samples.iter().map(|s| s.t_s).collect()
    };
    let window_s = if r.duration_s >= 20.0 { 5.0 } else { 1.0 };
    let tps = throughput_at(&r.outcomes, &at, window_s);
    at.iter()
        .enumerate()
        .map(|(i, &t_s)| {
            let sample = r.samples.get(i);
            TimelinePoint {
                t_s,
                power_watts: sample.and_then(|s| s.power_watts),
                cap_watts: sample.and_then(|s| s.cap_watts),
                output_tokens_per_s: Some(tps[i]),
            }
        })
        .collect()
}

/// One CDF series per tier (or "all requests"), of `pick` over the successful requests.
fn cdfs(r: &RunResult, pick: fn(&RequestOutcome) -> f64) -> Vec<CdfSeries> {
    let mut tiers: Vec<Option<&'static str>> = r.outcomes.iter().map(|o| o.tier).collect();
    tiers.sort();
    tiers.dedup();
    tiers
        .into_iter()
        .map(|tier| CdfSeries {
            label: tier.unwrap_or("all requests").to_string(),
            values_ms: r
                .outcomes
                .iter()
                .filter(|o| o.success && o.tier == tier)
                .map(|o| pick(o) * 1e3)
                .collect(),
        })
        .collect()
}

/// Writes `<stem>-power`, `<stem>-ttft-cdf` and `<stem>-e2el-cdf` (each .png and .svg); a chart
/// with nothing to draw (no successful request) is skipped.
pub fn write(stem: &Path, r: &RunResult) -> Result<Vec<PathBuf>, GatewayError> {
    let with = |suffix: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let fail = |e: String| GatewayError::Bench(format!("plotting: {e}"));
    let mut files = Vec::new();
    let title = format!("{}: {}, energy from {}", r.label, r.model, r.energy.source);
    files.extend(plots::power_timeline(&with("-power"), &title, &timeline(r)).map_err(fail)?);
    if r.summary.completed > 0 {
        let ttft = cdfs(r, |o| o.ttft_s);
        let e2el = cdfs(r, |o| o.latency_s);
        files.extend(
            plots::latency_cdfs(&with("-ttft-cdf"), &r.label, "TTFT (ms)", &ttft).map_err(fail)?,
        );
        files.extend(
            plots::latency_cdfs(&with("-e2el-cdf"), &r.label, "E2EL (ms)", &e2el).map_err(fail)?,
        );
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_counts_tokens_in_the_second_before() {
        let o = RequestOutcome {
            success: true,
            start_s: 0.0,
            ttft_s: 0.5,
            itl_s: vec![0.25; 4],
            ..Default::default()
        };
        // Tokens at 0.5, 0.75, 1.0, 1.25, 1.5.
        assert_eq!(
            throughput_at(std::slice::from_ref(&o), &[0.4, 1.0, 1.5, 3.0], 1.0),
            vec![0.0, 3.0, 4.0, 0.0]
        );
        // Over 2 s: all five tokens fall in (-0.5, 1.5].
        assert_eq!(throughput_at(&[o], &[1.5], 2.0), vec![2.5]);
    }
}
