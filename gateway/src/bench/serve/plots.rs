//! Benchmark charts (power/cap/throughput timeline, latency CDFs, Pareto sweeps), each written as PNG and SVG with an embedded font so no system fonts are needed.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::chart::{DualCoordChartContext, SeriesLabelStyle};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

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

/// Pixel size of both outputs; SVG uses the same so the two files look alike.
const SIZE: (u32, u32) = (1000, 600);
/// plotters' default text styles (axis labels, legend) ask for this family, so
/// registering our font under it covers every piece of text on the chart.
const FONT_FAMILY: &str = "sans-serif";
/// Above this many samples a CDF is drawn from quantiles: the curve looks the same
/// and the SVG stays small instead of holding one vertex per request.
const MAX_CDF_STEPS: usize = 2000;

/// plotters' default axis text is ~10 px, hard to read once a chart is scaled into a report.
const AXIS_DESC: (&str, u32) = (FONT_FAMILY, 16);
const TICK_LABEL: (&str, u32) = (FONT_FAMILY, 13);

/// Tableau-10 minus its pale entries: Palette99's third colour is a yellow that all but
/// vanishes on white. Wraps around past eight series.
const SERIES_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type Xy = Cartesian2d<RangedCoordf64, RangedCoordf64>;

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

/// Each chart draws itself onto any backend, so PNG and SVG share one drawing routine.
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// plotters built with `ab_glyph` has no fonts of its own: every text layout (SVG too,
/// since labels are measured to place them) fails until a font is registered.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT_FAMILY, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "plotters rejected the embedded DejaVu Sans font".to_string())
        })
        .clone()
}

fn render_both(stem: &Path, chart: &impl Chart) -> Result<Vec<PathBuf>, String> {
    ensure_font()?;
    let png = with_suffix(stem, "png");
    let svg = with_suffix(stem, "svg");
    let png_result = {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        finish(&root, chart, &png)
    };
    let svg_result = png_result.and_then(|()| {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        finish(&root, chart, &svg)
    });
    if let Err(e) = svg_result {
        // The backends write on drop even after a failed draw; don't leave half a chart
        // behind that a later step might mistake for a result.
        let _ = std::fs::remove_file(&png);
        let _ = std::fs::remove_file(&svg);
        return Err(e);
    }
    Ok(vec![png, svg])
}

fn finish<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &impl Chart,
    path: &Path,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(draw_err)?;
    chart.draw(root)?;
    root.present()
        .map_err(|e| format!("cannot write chart {}: {e}", path.display()))
}

/// Appends rather than `with_extension`, which would eat a dotted stem like "run.v2".
fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn draw_err(e: impl Display) -> String {
    format!("plotting failed: {e}")
}

/// Larger than any real watts, tokens/s, seconds or milliseconds. Values beyond it are
/// treated like NaN: near f64::MAX the axis span overflows to inf and plotters then
/// walks lines pixel by pixel across ~2^32 pixels, which hangs rather than panics.
const MAX_MAGNITUDE: f64 = 1e15;

fn sane(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|&x| sane(x))
}

/// Axis range from 0 (or the lowest value if negative) to the highest value plus
/// `headroom` (a fraction of the span, room for the legend/labels). Never empty:
/// plotters divides by the span, so an all-zero series gets 0..1.
fn from_zero(values: impl Iterator<Item = f64>, headroom: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = hi - lo;
    if span > 0.0 {
        (lo, hi + span * headroom)
    } else {
        (lo, lo + 1.0)
    }
}

/// Range lo..hi widened around a single value, so one sample still gets an axis.
fn nonempty(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let pad = (lo.abs() * 0.1).max(1.0);
        (lo - pad, hi + pad)
    }
}

/// A legend swatch: a short horizontal line in the series' style.
fn swatch(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

fn legend_box<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    mut labels: SeriesLabelStyle<'a, '_, DB, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), String> {
    labels
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT_FAMILY, 15))
        .draw()
        .map_err(draw_err)
}

/// Power timeline, with inputs already cleaned: finite times, sorted, NaN/inf readings as None.
struct Timeline<'a> {
    title: &'a str,
    pts: Vec<TimelinePoint>,
}

impl<'a> Timeline<'a> {
    fn new(title: &'a str, points: &[TimelinePoint]) -> Result<Self, String> {
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

/// Latency CDFs with inputs cleaned: per series, finite non-negative values, sorted.
struct Cdfs<'a> {
    title: &'a str,
    metric_label: &'a str,
    series: Vec<(String, Vec<f64>)>,
}

impl<'a> Cdfs<'a> {
    fn new(title: &'a str, metric_label: &'a str, input: &[CdfSeries]) -> Result<Self, String> {
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
fn cdf_steps(sorted: &[f64]) -> Vec<(f64, f64)> {
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

/// Pareto sweep with non-finite runs dropped; `front` is sorted by latency.
struct Pareto<'a> {
    title: &'a str,
    latency_label: &'a str,
    all: Vec<&'a ParetoPoint>,
    front: Vec<&'a ParetoPoint>,
}

impl<'a> Pareto<'a> {
    fn new(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: f64, p: Option<f64>, cap: Option<f64>, tps: Option<f64>) -> TimelinePoint {
        TimelinePoint {
            t_s: t,
            power_watts: p,
            cap_watts: cap,
            output_tokens_per_s: tps,
        }
    }

    /// Checks the files exist, the PNG header says 1000x600 and the SVG holds `texts`.
    fn check_outputs(paths: &[PathBuf], texts: &[&str]) {
        assert_eq!(paths.len(), 2);
        let png = std::fs::read(&paths[0]).expect("png written");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), SIZE);
        let svg = std::fs::read_to_string(&paths[1]).expect("svg written");
        assert!(svg.contains(r#"width="1000""#) && svg.contains(r#"height="600""#));
        for t in texts {
            assert!(svg.contains(t), "svg lacks {t:?}");
        }
    }

    fn timeline_sample() -> Vec<TimelinePoint> {
        (0..60)
            .map(|i| {
                let t = i as f64;
                let cap = if (20..40).contains(&i) {
                    None
                } else {
                    Some(if i < 20 { 300.0 } else { 250.0 })
                };
                let p = if i == 10 {
                    None
                } else {
                    Some(200.0 + 60.0 * (t / 5.0).sin())
                };
                tp(t, p, cap, Some(1500.0 + 10.0 * t))
            })
            .collect()
    }

    #[test]
    fn timeline_renders_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("timeline.run1");
        let paths = power_timeline(&stem, "Power vs time", &timeline_sample()).unwrap();
        assert_eq!(paths[0], dir.path().join("timeline.run1.png"));
        check_outputs(
            &paths,
            &[
                "Power vs time",
                "power (W)",
                "power cap (W)",
                "output tokens/s",
            ],
        );
    }

    #[test]
    fn timeline_edge_cases() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("t");
        assert!(power_timeline(&stem, "x", &[]).is_err());
        assert!(!dir.path().join("t.png").exists(), "no file on error");
        let nan_t = [tp(f64::NAN, Some(1.0), None, None)];
        assert!(power_timeline(&stem, "x", &nan_t).is_err());
        let nothing = [
            tp(0.0, None, None, None),
            tp(1.0, Some(f64::NAN), None, Some(f64::INFINITY)),
        ];
        assert!(power_timeline(&stem, "x", &nothing).is_err());
        // All-None power still draws the throughput line.
        let no_power = [
            tp(0.0, None, None, Some(5.0)),
            tp(1.0, None, None, Some(7.0)),
        ];
        check_outputs(
            &power_timeline(&stem, "no power", &no_power).unwrap(),
            &["no power"],
        );
        let constant: Vec<_> = (0..5)
            .map(|i| tp(i as f64, Some(100.0), Some(100.0), Some(0.0)))
            .collect();
        check_outputs(
            &power_timeline(&stem, "constant", &constant).unwrap(),
            &["constant"],
        );
        let single = [tp(3.0, Some(150.0), Some(200.0), Some(900.0))];
        check_outputs(
            &power_timeline(&stem, "single", &single).unwrap(),
            &["single"],
        );
        let huge = [
            tp(0.0, Some(f64::MAX), Some(-f64::MAX), None),
            tp(f64::MAX, Some(1.0), None, None),
        ];
        // Every value here is beyond MAX_MAGNITUDE, so nothing is left: Err, not a hang.
        assert!(power_timeline(&stem, "huge", &huge).is_err());
        let big = [
            tp(0.0, Some(1e15), Some(-1e15), Some(1e15)),
            tp(1e15, Some(1.0), None, None),
        ];
        check_outputs(&power_timeline(&stem, "big", &big).unwrap(), &["big"]);
    }

    #[test]
    fn cdfs_render_and_skip_empty_series() {
        let dir = tempfile::tempdir().unwrap();
        let series = vec![
            CdfSeries {
                label: "prio-0".into(),
                values_ms: (0..500).map(|i| 20.0 + (i % 97) as f64).collect(),
            },
            CdfSeries {
                label: "prio-1".into(),
                values_ms: (0..5000).map(|i| 40.0 + (i % 331) as f64).collect(),
            },
            CdfSeries {
                label: "empty-tier".into(),
                values_ms: vec![f64::NAN, -3.0],
            },
        ];
        let paths = latency_cdfs(
            &dir.path().join("cdf"),
            "TTFT by tier",
            "TTFT (ms)",
            &series,
        )
        .unwrap();
        check_outputs(
            &paths,
            &[
                "TTFT by tier",
                "prio-0 (n=500)",
                "prio-1 (n=5000)",
                "TTFT (ms)",
            ],
        );
        let svg = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(!svg.contains("empty-tier"));
    }

    #[test]
    fn cdf_edge_cases() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("c");
        assert!(latency_cdfs(&stem, "x", "ms", &[]).is_err());
        let empty = [CdfSeries {
            label: "a".into(),
            values_ms: vec![],
        }];
        assert!(latency_cdfs(&stem, "x", "ms", &empty).is_err());
        let zeros = [CdfSeries {
            label: "z".into(),
            values_ms: vec![0.0; 3],
        }];
        check_outputs(
            &latency_cdfs(&stem, "zeros", "ms", &zeros).unwrap(),
            &["z (n=3)"],
        );
        let one = [CdfSeries {
            label: "one".into(),
            values_ms: vec![12.5],
        }];
        check_outputs(
            &latency_cdfs(&stem, "one", "ms", &one).unwrap(),
            &["one (n=1)"],
        );
    }

    #[test]
    fn cdf_steps_reach_one_and_stay_sorted() {
        for n in [1, 7, MAX_CDF_STEPS, 3 * MAX_CDF_STEPS + 1] {
            let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let s = cdf_steps(&v);
            assert_eq!(s.last().unwrap(), &((n - 1) as f64, 1.0));
            assert!(s.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        }
    }

    fn pp(label: &str, tpj: f64, p99: f64, on_front: bool) -> ParetoPoint {
        ParetoPoint {
            label: label.into(),
            tokens_per_joule: tpj,
            p99_latency_ms: p99,
            on_front,
        }
    }

    #[test]
    fn pareto_renders() {
        let dir = tempfile::tempdir().unwrap();
        let pts = vec![
            pp("cap=200 W", 9.0, 900.0, true),
            pp("cap=250 W", 8.0, 600.0, true),
            pp("cap=300 W", 6.5, 420.0, true),
            pp("cap=350 W", 5.0, 480.0, false),
            pp("cap=400 W", 4.0, 410.0, true),
            pp("broken", f64::NAN, 1.0, true),
        ];
        let paths = pareto(
            &dir.path().join("p"),
            "Energy vs latency",
            "p99 TTFT (ms)",
            &pts,
        )
        .unwrap();
        check_outputs(
            &paths,
            &[
                "Energy vs latency",
                "Pareto front",
                "runs",
                "cap=350 W",
                "p99 TTFT (ms)",
            ],
        );
        assert!(!std::fs::read_to_string(&paths[1])
            .unwrap()
            .contains("broken"));
    }

    #[test]
    fn pareto_edge_cases() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("p");
        assert!(pareto(&stem, "x", "ms", &[]).is_err());
        assert!(pareto(&stem, "x", "ms", &[pp("a", f64::INFINITY, 1.0, true)]).is_err());
        let single = [pp("only", 3.0, 100.0, false)];
        check_outputs(&pareto(&stem, "single", "ms", &single).unwrap(), &["only"]);
        let same = [pp("a", 0.0, 0.0, true), pp("b", 0.0, 0.0, true)];
        check_outputs(&pareto(&stem, "same", "ms", &same).unwrap(), &["same"]);
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("missing-dir").join("chart");
        let err = pareto(&stem, "x", "ms", &[pp("a", 1.0, 1.0, true)]).unwrap_err();
        assert!(err.contains("missing-dir"), "{err}");
    }

    /// Guards the embedded font: without it the ab_glyph build draws no text at all.
    #[test]
    fn embedded_font_draws_text() {
        ensure_font().unwrap();
        let mut buf = vec![255u8; 200 * 50 * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (200, 50)).into_drawing_area();
            root.draw(&Text::new(
                "Hello 123",
                (5, 10),
                (FONT_FAMILY, 20).into_font(),
            ))
            .unwrap();
            root.present().unwrap();
        }
        let inked = buf
            .chunks(3)
            .filter(|px| px.iter().any(|&c| c < 128))
            .count();
        assert!(inked > 100, "only {inked} dark pixels");
    }
}
