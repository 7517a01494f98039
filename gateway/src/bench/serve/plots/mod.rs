//! Benchmark charts (power/cap/throughput timeline, latency CDFs, Pareto sweeps), each written as PNG and SVG with an embedded font so no system fonts are needed.
//!
//! This file owns the public input types and the three entry points; each chart's
//! drawing lives in its own file, and the pieces they share (output, styling, value
//! cleaning) in `render`, `style` and `scale`.

use std::path::{Path, PathBuf};

mod cdf;
mod pareto;
mod render;
mod scale;
mod style;
#[cfg(test)]
mod tests;
mod timeline;

use self::cdf::Cdfs;
use self::pareto::Pareto;
use self::render::render_both;
use self::timeline::Timeline;

/// One instant of a benchmark run (seconds since the run started).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    pub t_s: f64,
    /// Power drawn (the server's 1 s average, or a local sensor), watts.
    pub power_watts: Option<f64>,
    /// The power cap in force (None = no cap / unbounded).
    pub cap_watts: Option<f64>,
    /// Output tokens per second over the preceding window.
    pub output_tokens_per_s: Option<f64>,
}

/// Latencies of one group (e.g. a priority tier), milliseconds, any order.
#[derive(Debug, Clone, PartialEq)]
pub struct CdfSeries {
    pub label: String,
    pub values_ms: Vec<f64>,
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoPoint {
    /// The swept value as shown, e.g. "rate=4" or "cap=300 W".
    pub label: String,
    pub tokens_per_joule: f64,
    pub p99_latency_ms: f64,
    /// On the Pareto front (more tokens/J and less latency are better).
    pub on_front: bool,
}

/// Writes `<stem>.png` and `<stem>.svg`; returns both paths. Errors are human-readable strings.
pub fn power_timeline(
    stem: &Path,
    title: &str,
    points: &[TimelinePoint],
) -> Result<Vec<PathBuf>, String> {
    let chart = Timeline::new(title, points)?;
    render_both(stem, &chart)
}

/// Writes `<stem>.png` and `<stem>.svg`; returns both paths. Errors are human-readable strings.
pub fn latency_cdfs(
    stem: &Path,
    title: &str,
    metric_label: &str,
    series: &[CdfSeries],
) -> Result<Vec<PathBuf>, String> {
    let chart = Cdfs::new(title, metric_label, series)?;
    render_both(stem, &chart)
}

/// Writes `<stem>.png` and `<stem>.svg`; returns both paths. Errors are human-readable strings.
pub fn pareto(
    stem: &Path,
    title: &str,
    latency_label: &str,
    points: &[ParetoPoint],
) -> Result<Vec<PathBuf>, String> {
    let chart = Pareto::new(title, latency_label, points)?;
    render_both(stem, &chart)
}
