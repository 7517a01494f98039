//! Latency CDFs: one empirical-CDF staircase per series, thinned to quantiles for large samples.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::render::{draw_err, Chart};
use super::scale::{from_zero, sane};
use super::style::{legend_box, swatch, AXIS_DESC, FONT_FAMILY, SERIES_COLOURS, TICK_LABEL};
use super::CdfSeries;

/// Above this many samples a CDF is drawn from quantiles: the curve looks the same
/// and the SVG stays small instead of holding one vertex per request.
pub(super) const MAX_CDF_STEPS: usize = 2000;

/// Latency CDFs with inputs cleaned: per series, finite non-negative values, sorted.
pub(super) struct Cdfs<'a> {
    title: &'a str,
    metric_label: &'a str,
    series: Vec<(String, Vec<f64>)>,
}

impl<'a> Cdfs<'a> {
    pub(super) fn new(
        title: &'a str,
        metric_label: &'a str,
        input: &[CdfSeries],
    ) -> Result<Self, String> {
        let series: Vec<(String, Vec<f64>)> = input
            .iter()
            .filter_map(|s| {
                // A negative latency is a clock glitch, not a measurement; the axis starts at 0.
                let mut v: Vec<f64> = s
                    .values_ms
                    .iter()
                    .copied()
                    .filter(|&x| sane(x) && x >= 0.0)
                    .collect();
                v.sort_by(f64::total_cmp);
                (!v.is_empty()).then(|| (format!("{} (n={})", s.label, v.len()), v))
            })
            .collect();
        if series.is_empty() {
            return Err("latency CDFs: no series has a finite, non-negative value".into());
        }
        Ok(Self {
            title,
            metric_label,
            series,
        })
    }
}

/// The empirical CDF as a staircase from (0, 0): each sample lifts the curve by 1/n.
/// Large samples are reduced to MAX_CDF_STEPS quantiles, which draw the same curve.
pub(super) fn cdf_steps(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let steps = n.min(MAX_CDF_STEPS);
    let mut out = Vec::with_capacity(2 * steps + 1);
    out.push((0.0, 0.0));
    let mut prev = 0.0;
    for k in 1..=steps {
        // The k-th of `steps` equal fractions of the sample ends at this sorted index.
        let idx = (k * n).div_ceil(steps) - 1;
        let x = sorted[idx];
        out.push((x, prev));
        prev = k as f64 / steps as f64;
        out.push((x, prev));
    }
    out
}

impl Chart for Cdfs<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let max = self.series.iter().filter_map(|(_, v)| v.last().copied());
        let (x0, x1) = from_zero(max, 0.05);
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT_FAMILY, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, 0.0..1.02)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .axis_desc_style(AXIS_DESC)
            .label_style(TICK_LABEL)
            .x_desc(self.metric_label)
            .y_desc("fraction of requests ≤ x")
            .draw()
            .map_err(draw_err)?;
        for (i, (label, values)) in self.series.iter().enumerate() {
            let style = SERIES_COLOURS[i % SERIES_COLOURS.len()].stroke_width(2);
            chart
                .draw_series(LineSeries::new(cdf_steps(values), style))
                .map_err(draw_err)?
                .label(label)
                .legend(swatch(style));
        }
        // CDFs climb on the left and flatten at the top, so the lower right is free.
        legend_box(
            chart.configure_series_labels(),
            SeriesLabelPosition::LowerRight,
        )
    }
}
