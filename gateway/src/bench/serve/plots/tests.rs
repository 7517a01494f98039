//! Tests of the public entry points (files written, text present, bad input rejected) and of the CDF thinning and embedded font.

use std::path::PathBuf;

use plotters::prelude::*;

use super::cdf::{cdf_steps, MAX_CDF_STEPS};
use super::render::{ensure_font, SIZE};
use super::style::FONT_FAMILY;
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
