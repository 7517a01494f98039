//! The power timeline: power and cap on the left axis, output tokens/s on the right, gaps left as gaps.

use plotters::chart::DualCoordChartContext;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::render::{draw_err, Chart};
use super::scale::{finite, from_zero, nonempty, sane};
use super::style::{legend_box, swatch, AXIS_DESC, FONT_FAMILY, TICK_LABEL};
use super::TimelinePoint;

type Xy = Cartesian2d<RangedCoordf64, RangedCoordf64>;

/// Power timeline, with inputs already cleaned: finite times, sorted, NaN/inf readings as None.
pub(super) struct Timeline<'a> {
    title: &'a str,
    pts: Vec<TimelinePoint>,
}

impl<'a> Timeline<'a> {
    pub(super) fn new(title: &'a str, points: &[TimelinePoint]) -> Result<Self, String> {
        let mut pts: Vec<TimelinePoint> = points
            .iter()
            .filter(|p| sane(p.t_s))
            .map(|p| TimelinePoint {
                t_s: p.t_s,
                power_watts: finite(p.power_watts),
                cap_watts: finite(p.cap_watts),
                output_tokens_per_s: finite(p.output_tokens_per_s),
            })
            .collect();
        if pts.is_empty() {
            return Err("power timeline: no points with a finite time".into());
        }
        let has_data = |p: &TimelinePoint| {
            p.power_watts.is_some() || p.cap_watts.is_some() || p.output_tokens_per_s.is_some()
        };
        if !pts.iter().any(has_data) {
            return Err("power timeline: no finite power, cap or tokens/s values".into());
        }
        pts.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        Ok(Self { title, pts })
    }

    /// Splits a series at its gaps, so a missing reading breaks the line rather than
    /// being bridged by a segment that suggests data we don't have.
    fn runs(&self, get: impl Fn(&TimelinePoint) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        for p in &self.pts {
            match get(p) {
                Some(v) => cur.push((p.t_s, v)),
                None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
                None => {}
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// The cap is a setting that holds until the next sample, so it is a step: flat to
    /// the next sample's time, then straight to the new value. Uncapped stretches are gaps.
    fn cap_steps(&self) -> Vec<Vec<(f64, f64)>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        for (i, p) in self.pts.iter().enumerate() {
            match p.cap_watts {
                Some(c) => {
                    cur.push((p.t_s, c));
                    if let Some(next) = self.pts.get(i + 1) {
                        cur.push((next.t_s, c));
                    }
                }
                None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
                None => {}
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// Draws runs as lines; a run of one sample gets a dot since a line through it is invisible.
fn run_lines<'a, DB: DrawingBackend + 'a>(
    runs: &'a [Vec<(f64, f64)>],
    style: ShapeStyle,
) -> impl Iterator<Item = DynElement<'static, DB, (f64, f64)>> + 'a {
    runs.iter().flat_map(move |r| {
        let dot = if r.len() == 1 { 3 } else { 0 };
        LineSeries::new(r.iter().copied(), style).point_size(dot)
    })
}

impl Chart for Timeline<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let power = self.runs(|p| p.power_watts);
        let caps = self.cap_steps();
        let tps = self.runs(|p| p.output_tokens_per_s);
        let first = self.pts[0].t_s;
        let last = self.pts[self.pts.len() - 1].t_s;
        let (t0, t1) = nonempty(first, last);
        let watts = self.pts.iter().flat_map(|p| [p.power_watts, p.cap_watts]);
        // Headroom above the highest reading keeps the legend off the lines.
        let (w0, w1) = from_zero(watts.flatten(), 0.3);
        let (s0, s1) = from_zero(self.pts.iter().filter_map(|p| p.output_tokens_per_s), 0.3);

        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT_FAMILY, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .right_y_label_area_size(70)
            .build_cartesian_2d(t0..t1, w0..w1)
            .map_err(draw_err)?
            .set_secondary_coord(t0..t1, s0..s1);
        chart
            .configure_mesh()
            .axis_desc_style(AXIS_DESC)
            .label_style(TICK_LABEL)
            .x_desc("time (s)")
            .y_desc("power (W)")
            .draw()
            .map_err(draw_err)?;
        chart
            .configure_secondary_axes()
            .axis_desc_style(AXIS_DESC)
            .label_style(TICK_LABEL)
            .y_desc("output tokens/s")
            .draw()
            .map_err(draw_err)?;

        let power_style = BLUE.stroke_width(2);
        if !power.is_empty() {
            chart
                .draw_series(run_lines(&power, power_style))
                .map_err(draw_err)?
                .label("power (W)")
                .legend(swatch(power_style));
        }
        if !caps.is_empty() {
            draw_caps(&mut chart, &caps)?;
        }
        let tps_style = GREEN.mix(0.8).stroke_width(2);
        if !tps.is_empty() {
            chart
                .draw_secondary_series(run_lines(&tps, tps_style))
                .map_err(draw_err)?
                .label("output tokens/s (right axis)")
                .legend(swatch(tps_style));
        }
        legend_box(
            chart.configure_series_labels(),
            SeriesLabelPosition::UpperRight,
        )
    }
}

/// The cap is dashed red so it reads as a limit, not a measurement, even in greyscale.
fn draw_caps<DB: DrawingBackend>(
    chart: &mut DualCoordChartContext<'_, DB, Xy, Xy>,
    caps: &[Vec<(f64, f64)>],
) -> Result<(), String> {
    let style = RED.stroke_width(2);
    let dashed = caps
        .iter()
        .filter(|r| r.len() > 1)
        .flat_map(|r| DashedLineSeries::new(r.clone(), 10, 6, style));
    chart
        .draw_series(dashed)
        .map_err(draw_err)?
        .label("power cap (W)")
        .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 3, style));
    let lone = caps.iter().filter(|r| r.len() == 1).flatten();
    chart
        .draw_series(lone.map(|&c| Circle::new(c, 3, style.filled())))
        .map_err(draw_err)?;
    Ok(())
}
