//! Output: registers the embedded font and renders any chart to `<stem>.png` and `<stem>.svg`, leaving neither behind on failure.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::style::FONT_FAMILY;

/// Pixel size of both outputs; SVG uses the same so the two files look alike.
pub(super) const SIZE: (u32, u32) = (1000, 600);

/// Each chart draws itself onto any backend, so PNG and SVG share one drawing routine.
pub(super) trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// plotters built with `ab_glyph` has no fonts of its own: every text layout (SVG too,
/// since labels are measured to place them) fails until a font is registered.
pub(super) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT_FAMILY, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "plotters rejected the embedded DejaVu Sans font".to_string())
        })
        .clone()
}

pub(super) fn render_both(stem: &Path, chart: &impl Chart) -> Result<Vec<PathBuf>, String> {
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

pub(super) fn draw_err(e: impl Display) -> String {
    format!("plotting failed: {e}")
}
