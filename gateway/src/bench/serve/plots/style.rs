//! Shared look of every chart: the font family and text sizes, the series palette, legend swatches and the legend box.

use plotters::chart::SeriesLabelStyle;
use plotters::prelude::*;

use super::render::draw_err;

/// plotters' default text styles (axis labels, legend) ask for this family, so
/// registering our font under it covers every piece of text on the chart.
pub(super) const FONT_FAMILY: &str = "sans-serif";

/// plotters' default axis text is ~10 px, hard to read once a chart is scaled into a report.
pub(super) const AXIS_DESC: (&str, u32) = (FONT_FAMILY, 16);
pub(super) const TICK_LABEL: (&str, u32) = (FONT_FAMILY, 13);

/// Tableau-10 minus its pale entries: Palette99's third colour is a yellow that all but
/// vanishes on white. Wraps around past eight series.
pub(super) const SERIES_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A legend swatch: a short horizontal line in the series' style.
pub(super) fn swatch(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

pub(super) fn legend_box<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
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
