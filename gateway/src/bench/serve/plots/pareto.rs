//! The Pareto chart: every run of a sweep as a labelled dot, the front as a red line through larger dots.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::render::{draw_err, Chart};
use super::scale::{from_zero, sane};
use super::style::{legend_box, swatch, AXIS_DESC, FONT_FAMILY, TICK_LABEL};
use super::ParetoPoint;

/// Pareto sweep with non-finite runs dropped; `front` is sorted by latency.
pub(super) struct Pareto<'a> {
    title: &'a str,
    latency_label: &'a str,
    all: Vec<&'a ParetoPoint>,
    front: Vec<&'a ParetoPoint>,
}

impl<'a> Pareto<'a> {
    pub(super) fn new(
        title: &'a str,
        latency_label: &'a str,
        points: &'a [ParetoPoint],
    ) -> Result<Self, String> {
        let all: Vec<&ParetoPoint> = points
            .iter()
            .filter(|p| sane(p.tokens_per_joule) && sane(p.p99_latency_ms))
            .collect();
        if all.is_empty() {
            return Err("pareto: no run has finite tokens/J and latency".into());
        }
        let mut front: Vec<&ParetoPoint> = all.iter().copied().filter(|p| p.on_front).collect();
        front.sort_by(|a, b| a.p99_latency_ms.total_cmp(&b.p99_latency_ms));
        Ok(Self {
            title,
            latency_label,
            all,
            front,
        })
    }
}

fn xy(p: &ParetoPoint) -> (f64, f64) {
    (p.p99_latency_ms, p.tokens_per_joule)
}

impl Chart for Pareto<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        // Extra room right and above so the rightmost/topmost labels are not clipped.
        let (x0, x1) = from_zero(self.all.iter().map(|p| p.p99_latency_ms), 0.2);
        let (y0, y1) = from_zero(self.all.iter().map(|p| p.tokens_per_joule), 0.15);
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT_FAMILY, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .axis_desc_style(AXIS_DESC)
            .label_style(TICK_LABEL)
            .x_desc(self.latency_label)
            .y_desc("tokens per joule")
            .draw()
            .map_err(draw_err)?;
        let front_style = RED.stroke_width(2);
        if !self.front.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    self.front.iter().map(|p| xy(p)),
                    front_style,
                ))
                .map_err(draw_err)?
                .label("Pareto front")
                .legend(swatch(front_style));
            let big = self
                .front
                .iter()
                .map(|p| Circle::new(xy(p), 7, RED.filled()));
            chart.draw_series(big).map_err(draw_err)?;
        }
        let run_style = BLUE.filled();
        let font = (FONT_FAMILY, 14).into_font();
        let marks = self.all.iter().map(|p| {
            EmptyElement::at(xy(p))
                + Circle::new((0, 0), 4, run_style)
                + Text::new(p.label.clone(), (8, -16), font.clone())
        });
        chart
            .draw_series(marks)
            .map_err(draw_err)?
            .label("runs")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, run_style));
        legend_box(
            chart.configure_series_labels(),
            SeriesLabelPosition::LowerRight,
        )
    }
}
