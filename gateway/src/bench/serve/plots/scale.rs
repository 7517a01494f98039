//! Input cleaning and axis ranges: which values count as real readings, and ranges plotters can always draw.

/// Larger than any real watts, tokens/s, seconds or milliseconds. Values beyond it are
/// treated like NaN: near f64::MAX the axis span overflows to inf and plotters then
/// walks lines pixel by pixel across ~2^32 pixels, which hangs rather than panics.
const MAX_MAGNITUDE: f64 = 1e15;

pub(super) fn sane(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

pub(super) fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|&x| sane(x))
}

/// Axis range from 0 (or the lowest value if negative) to the highest value plus
/// `headroom` (a fraction of the span, room for the legend/labels). Never empty:
/// plotters divides by the span, so an all-zero series gets 0..1.
pub(super) fn from_zero(values: impl Iterator<Item = f64>, headroom: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = hi - lo;
    if span > 0.0 {
        (lo, hi + span * headroom)
    } else {
        (lo, lo + 1.0)
    }
}

/// Range lo..hi widened around a single value, so one sample still gets an axis.
pub(super) fn nonempty(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let pad = (lo.abs() * 0.1).max(1.0);
        (lo - pad, hi + pad)
    }
}
